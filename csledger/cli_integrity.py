"""Commands of the ``csledger`` CLI for the verifiable ledger; registered on ``cli.app`` when
``cli`` is imported: ``keys``, ``witnesses``, ``export``, ``verify-bundle`` and ``witness``."""

from __future__ import annotations

from typing import Annotated

import typer

from .cli import DbOption, _fail, _open, app, err, out
from .ledger.errors import LedgerError

keys_app = typer.Typer(help="The registrant's log signing key (public halves in the database).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")

RegistrantOption = Annotated[str, typer.Option("--registrant", help="DEA number of the registrant.")]


@keys_app.command("show")
def keys_show(registrant: RegistrantOption, db: DbOption = None) -> None:
    """Print the log's verifier keys (current first, retired after) and their fingerprints."""
    from .ledger.log import fingerprint_lines, log_keys

    _, ledger = _open(db)
    try:
        with ledger.reading() as conn:
            keys = log_keys(conn, registrant)
    finally:
        ledger.dispose()
    if not keys:
        _fail(f"no log key recorded for {registrant}")
    out.print(f"origin {keys[0].origin}", highlight=False)
    for k, line in zip(keys, fingerprint_lines(keys), strict=True):
        out.print(k.verifier_key, highlight=False)
        out.print(f"  {line}; signs tree sizes from {k.first_size}; {k.reason}", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    registrant: RegistrantOption,
    reason: Annotated[str, typer.Option(help="Why: scheduled, lost, suspected stolen, ...")],
    db: DbOption = None,
) -> None:
    """Make a new log key; the old one is retired (its public half kept so old checkpoints verify,
    its private half destroyed). Works when the old key is lost. Tell the witnesses the new key."""
    from .ledger.log import fingerprint_lines

    _, ledger = _open(db)
    try:
        new, old = ledger.transparency_log.rotate(registrant, reason=reason)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out.print(f"new log key for {registrant}: {new.verifier_key}", highlight=False)
    out.print("  " + fingerprint_lines([new])[0], highlight=False)
    if old is not None:
        err.print(f"retired {old.verifier.key_id_hex} ({old.verifier.fingerprint}); give each witness operator the new "
                  "key: csledger witness add-log --vkey <the key above>", highlight=False)
