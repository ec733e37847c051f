"""Commands of the ``csledger`` CLI for the verifiable ledger; registered on ``cli.app`` when
``cli`` is imported: ``keys``, ``witnesses``, ``export``, ``verify-bundle`` and ``witness``."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.main import DbOption, _fail, _open, app, err, out
from ledger.domain.errors import LedgerError

keys_app = typer.Typer(help="The registrant's log signing key (public halves in the database).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")

RegistrantOption = Annotated[str, typer.Option("--registrant", help="DEA number of the registrant.")]


@keys_app.command("show")
def keys_show(registrant: RegistrantOption, db: DbOption = None) -> None:
    """Print the log's verifier keys (current first, retired after) and their fingerprints."""
    from ledger.storage.log import fingerprint_lines, log_keys

    _, ledger = _open(db)
    try:
        with ledger.reading() as conn:
            keys = log_keys(conn, registrant)
            root = _staff_root(conn, registrant)
    finally:
        ledger.dispose()
    if not keys:
        _fail(f"no log key recorded for {registrant}")
    out.print(f"origin {keys[0].origin}", highlight=False)
    for k, line in zip(keys, fingerprint_lines(keys), strict=True):
        out.print(k.verifier_key, highlight=False)
        out.print(f"  {line}; signs tree sizes from {k.first_size}; {k.reason}", highlight=False)
    if root is not None:  # issue 17: pinned with the keys (`verify --pinned-keys`); compare it with init's
        out.print(f"staff-root {registrant} {root[1]}", highlight=False)
        out.print(f"  root staff credential of {root[0]}, enrolled at entry {root[2]}: compare with the line "
                  "`csledger init` printed", highlight=False)


def _staff_root(conn, registrant: str) -> tuple[str, str, int] | None:
    """(staff id, fingerprint, seq) of the registrant's root staff credential, or None."""
    from ledger.storage.authority import authority_at

    a = authority_at(conn, registrant)
    cred = next((c for c in a.credentials.values() if c.enrolled_seq == a.root_seq), None)
    return None if cred is None else (cred.staff_id, cred.fingerprint, cred.enrolled_seq)


@keys_app.command("rotate")
def keys_rotate(
    registrant: RegistrantOption,
    reason: Annotated[str, typer.Option(help="Why: scheduled, lost, suspected stolen, ...")],
    db: DbOption = None,
) -> None:
    """Make a new log key; the old one is retired (its public half kept so old checkpoints verify,
    its private half destroyed). Works when the old key is lost. Tell the witnesses the new key."""
    from ledger.storage.log import fingerprint_lines

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


# --- the registrant's witnesses --------------------------------------------------------------

witnesses_app = typer.Typer(help="Which witnesses cosign the registrant's checkpoints.", no_args_is_help=True)
app.add_typer(witnesses_app, name="witnesses")


@witnesses_app.command("set")
def witnesses_set(
    registrant: RegistrantOption,
    witness: Annotated[list[str], typer.Option(help="'<witness verifier key> <URL prefix>', repeatable.")],
    threshold: Annotated[int, typer.Option(help="Cosignatures a checkpoint needs to count as witnessed.")],
    db: DbOption = None,
) -> None:
    """Record a new witness policy (append-only history) and push the latest checkpoint."""
    from ledger.storage.log import WitnessEntry

    entries = []
    for i, w in enumerate(witness):
        parts = w.split()
        if len(parts) != 2:
            _fail(f"--witness {i + 1}: give '<verifier key> <URL prefix>'")
        entries.append(WitnessEntry(parts[0], parts[1]))
    _, ledger = _open(db)
    try:
        policy = ledger.transparency_log.set_witnesses(registrant, entries, threshold)
        results = ledger.transparency_log.push(registrant)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out.print(f"witness policy v{policy.version} for {registrant}: {policy.threshold} of {len(policy.witnesses)}")
    _print_push(registrant, results)


@witnesses_app.command("push")
def witnesses_push(registrant: RegistrantOption, db: DbOption = None) -> None:
    """Send the latest checkpoint to the witnesses now; exit 1 if the threshold is not met."""
    from ledger.storage.log import cosignature_lines, latest_checkpoint, witness_policy

    _, ledger = _open(db)
    try:
        results = ledger.transparency_log.push(registrant)
        rolled_back = ledger.transparency_log.blocked.get(registrant)
        with ledger.reading() as conn:
            policy = witness_policy(conn, registrant)
            # The checkpoint this push sent, not the latest now: under live load a command may
            # have signed a newer one since, which no witness has seen yet (it goes next push).
            size = results[0].tree_size if results else getattr(latest_checkpoint(conn, registrant), "tree_size", None)
            have = len(cosignature_lines(conn, registrant, size)) if size is not None else 0
    finally:
        ledger.dispose()
    _print_push(registrant, results)
    if rolled_back:
        # Cosignatures stored in the database (e.g. inside a restored backup) count for nothing
        # when a witness has already cosigned a larger or different tree.
        _fail(f"{registrant}: {rolled_back}", 1)
    if policy is None:
        _fail(f"no witness policy for {registrant}; set one with `csledger witnesses set`")
    out.print(f"checkpoint {size if size is not None else '-'}: {have} of {policy.threshold} cosignatures")
    if have < policy.threshold:
        raise typer.Exit(1)


def _print_push(registrant: str, results) -> None:
    for r in results:
        (out if r.ok else err).print(f"{registrant} -> {r.witness}: checkpoint {r.tree_size} "
                                     f"{'cosigned' if r.ok else 'NOT cosigned: ' + r.detail}", highlight=False)


# --- the witness program: ``csledger witness`` is an alias of ``csledger-witness`` ---------------

from witness.cli import app as witness_app  # noqa: E402

app.add_typer(witness_app, name="witness")


# --- offline bundles -----------------------------------------------------------------------------


@app.command("export")
def export(
    registrant: RegistrantOption,
    out_path: Annotated[str, typer.Option("--out", help="File to write (a bundle, or a .tlog-proof with --seq).")],
    seq: Annotated[int | None, typer.Option(help="Only this entry: a C2SP tlog-proof an inspector checks alone.")] = None,
    db: DbOption = None,
) -> None:
    """Write the registrant's entries, latest checkpoint, cosignatures and keys to one file,
    checkable with `csledger verify-bundle` and no database (or one entry's proof with --seq)."""
    import os
    from pathlib import Path

    from ledger.services.bundle import export_bundle, export_entry_proof

    _, ledger = _open(db)
    target = Path(out_path)
    tmp = target.with_name(target.name + ".partial")
    try:
        with ledger.reading() as conn:
            if seq is not None:
                tmp.write_bytes(export_entry_proof(conn, registrant, seq))
                what = f"entry {seq}"
            else:
                with open(tmp, "wb") as f:
                    n = export_bundle(conn, registrant, f)
                what = f"{n} entries"
        os.replace(tmp, target)
    except LedgerError as exc:
        tmp.unlink(missing_ok=True)
        _fail(str(exc))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(f"out: cannot write {target}: {exc.strerror or exc}")
    finally:
        ledger.dispose()
    out.print(f"exported {what} of {registrant} to {target}", highlight=False)


@app.command("verify-bundle")
def verify_bundle_cmd(
    path: Annotated[str, typer.Argument(help="A bundle from `csledger export` or a .tlog-proof.")],
    log_key: Annotated[list[str] | None, typer.Option(help="The log's verifier key, obtained out of band (repeatable).")] = None,
    witness_key: Annotated[list[str] | None, typer.Option(help="A witness's verifier key, out of band (repeatable).")] = None,
    threshold: Annotated[int | None, typer.Option(help="Cosignatures required (default: the bundle's policy).")] = None,
    checkpoint: Annotated[list[str] | None, typer.Option(help="A checkpoint file obtained elsewhere (e.g. `csledger witness latest`) "
                                                              "that this history must extend (repeatable).")] = None,
    audit_from: Annotated[str | None, typer.Option(help="Also recompute the accountability audit of these local days "
                                                        "(YYYY-MM-DD, the registrant's time zone, both days included; "
                                                        "it runs between the counts nearest them, as `csledger audit`).")] = None,
    audit_to: Annotated[str | None, typer.Option(help="The audit's last local day (YYYY-MM-DD; default: today).")] = None,
    staff_root: Annotated[str | None, typer.Option(
        "--staff-root", help="The root staff credential's fingerprint (sha256:..., as `csledger init` printed it), "
                             "obtained out of band: the bundle's chain of credentials must start from it.")] = None,
) -> None:
    """Check a bundle offline: leaf hashes, chain links, root against the signed checkpoint,
    signatures and cosignatures, stock replay. Exits 1 and names the line of the first problem."""
    from pathlib import Path

    from ledger.services.bundle import is_entry_proof, verify_bundle, verify_entry_proof

    try:
        head = Path(path).open("rb").read(64)
        againsts = [Path(c).read_bytes() for c in checkpoint or []]
    except OSError as exc:
        _fail(f"cannot read: {exc}")
    period = None
    if audit_from is not None or audit_to is not None:
        # One period rule (issue 20): inclusive local days in the registrant's time zone, the same
        # as `csledger audit`, the pages and GET .../audit; the audit then runs between the counts
        # nearest them. A time of day is refused, never reinterpreted.
        import re
        from datetime import date

        days = []
        for name, value in (("--audit-from", audit_from), ("--audit-to", audit_to)):
            if value is None:
                days.append(None)
                continue
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                _fail(f"{name}: {value[:40]!r} is not a local day; give YYYY-MM-DD (the registrant's time zone, "
                      "both days included: the audit runs between the counts nearest them)")
            try:
                days.append(date.fromisoformat(value.strip()))
            except ValueError as exc:
                _fail(f"{name}: {exc}")
        if days[0] is None:
            _fail("--audit-to needs --audit-from (the audit's first local day)")
        period = (days[0], days[1])
    if is_entry_proof(head):
        rep = verify_entry_proof(Path(path).read_bytes(), trusted_log_keys=log_key or [],
                                 trusted_witness_keys=witness_key or [], threshold=threshold or 0)
    else:
        rep = verify_bundle(path, trusted_log_keys=log_key, trusted_witness_keys=witness_key, threshold=threshold,
                            against=againsts, audit_between=period, trusted_staff_root=staff_root)
    for n in rep.notes:
        err.print(f"[yellow]note[/] {n}", highlight=False)
    if not rep.ok:
        err.print(f"[bold red]FAIL[/] {rep.problem}", highlight=False)
        raise typer.Exit(1)
    if rep.entry is not None:
        out.print(f"entry {rep.entry['seq']} ({rep.entry['kind']}) of {rep.registrant} is in the log {rep.origin} "
                  f"at tree size {rep.tree_size}; {rep.cosignatures} cosignature(s)", highlight=False)
        out.print_json(data=rep.entry)
        return
    out.print(f"bundle OK: {rep.registrant}, {rep.tree_size} entries, root {rep.root}", highlight=False)
    out.print(f"signed by the log key{' (pinned)' if rep.keys_trusted else ' (from the bundle)'}; witnessed by "
              f"{rep.cosignatures} of {rep.threshold} required: {', '.join(rep.witnesses) or 'none'}", highlight=False)
    for ndc, s in rep.stock.items():
        out.print(f"stock {ndc}: {s['containers']} container(s), {s['ml']} mL", highlight=False)
    if rep.audit is not None:
        asked = rep.audit.get("asked") or {}
        out.print(f"accountability audit {rep.audit['start']} .. {rep.audit['end']} (recomputed from the bundle):",
                  highlight=False)
        if asked:
            w = rep.audit.get("window") or {}
            out.print(f"  days asked {asked['from']} to {asked['to']} ({asked['time_zone']}); window from entry "
                      f"{(w.get('begin') or {}).get('seq')} to entry {(w.get('end') or {}).get('seq')}", highlight=False)
        for p in rep.audit["products"]:
            ml = p["ml"]
            out.print(f"  {p['ndc']} {p['name']}: to account for {ml['to_account_for']} mL, accounted for "
                      f"{ml['accounted_for']} mL, difference {ml['difference']} mL ({p['variance_percent']} %)"
                      f"{' FLAGGED' if p['flagged'] else ''}", highlight=False)


# --- trust from outside the database (issue 16): `verify --pinned-keys` ------------------------


def pinned_keys_for_verify(path):
    """``verify``'s pinned keys (``--pinned-keys``, else ``CSLEDGER_PINNED_KEYS_FILE``), or None.
    A file that cannot be read, or holds anything but verifier keys, ends the command (exit 2)."""
    if path is None:
        return None
    from ledger.services.trust import load_pinned_keys

    try:
        return load_pinned_keys(path)
    except LedgerError as exc:
        _fail(str(exc))


def check_pinned_for_verify(ledger, pinned, report) -> None:
    """Hold each registrant that passed ``verify`` against the pinned keys; add what fails to
    ``report.problems``. No pinned keys: nothing to do."""
    if pinned is None:
        return
    from ledger.services.trust import check_pinned

    failed = {p.registrant for p in report.problems}
    passed = {reg: n for reg, n in report.registrants.items() if reg not in failed}
    report.problems.extend(check_pinned(ledger, pinned, passed, report.roots, staff=report.staff))


def trust_line(pinned, report) -> str:
    """The last line of a passing ``verify``: whose keys the result rests on."""
    if pinned is not None:
        rooted = sorted(reg for reg, s in report.staff.items() if s.root_fingerprint is not None)
        staff = ""
        if rooted:  # issue 17: the staff credentials rest on the root credential's fingerprint
            unpinned = [reg for reg in rooted if pinned.staff_root(reg) is None]
            staff = ("; the root staff credential is pinned too" if not unpinned else
                     f"; the root staff credential of {', '.join(unpinned)} is not pinned (add the 'staff-root "
                     "sha256:...' line `csledger init` printed)")
        return (f"trust: every checkpoint is signed by a key pinned in {pinned.source} ({len(pinned.keys)} key(s)), "
                f"the latest covering every entry{staff}")
    held = ("; the entries up to each --checkpoint are held against that file, the rest are not"
            if report.held else "")
    return ("self-attested: the log keys came from this database itself, so a history re-signed with a key "
            f"written into it would pass too{held}; pass --pinned-keys FILE (the output of `csledger keys show`, "
            "kept outside the database) to verify against keys you trust")
