"""Trust from outside the database: the log's verifier keys pinned by the person verifying.

Every key ``verify`` otherwise uses comes from the database's own ``log_keys`` table, so a
writer who rewrites the history, signs it with a key of their own and writes that key into
``log_keys`` makes the database agree with itself. A pinned key file (the lines
``csledger keys show`` or ``GET .../verifier-key`` print, saved somewhere the database writer
cannot reach) breaks that circle: every stored checkpoint must be signed by a pinned key, and
the latest must cover every entry.

The file format is forgiving of what those commands print: each line whose first word is a C2SP
verifier key (``<name>+<hex8 key ID>+<base64>``) pins that key; blank lines, ``#`` comments,
``origin ...`` lines and indented lines (fingerprints) are ignored; anything else is refused
with its line number, so a typo never pins nothing silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection

from ledger.domain.errors import IntegrityFailure, InvalidInput
from ledger.integrity.checkpoints import (
    SIG_ED25519,
    NoteError,
    Verifier,
    open_checkpoint,
    parse_checkpoint,
    split_note,
)
from ledger.storage.store import raw

BATCH = 2000


@dataclass(frozen=True)
class PinnedKeys:
    """Log verifier keys trusted because they came from outside the database."""

    source: str
    keys: tuple[Verifier, ...]

    def for_origin(self, origin: str) -> list[Verifier]:
        """The pinned keys of one log (a log key's name is its checkpoint origin)."""
        return [k for k in self.keys if k.name == origin]

    def describe(self) -> str:
        return ", ".join(f"{k.name}+{k.key_id_hex}" for k in self.keys)


def parse_pinned_keys(text: str, source: str) -> PinnedKeys:
    """Parse a pinned key file (see the module docstring); ``InvalidInput`` names the line."""
    keys: list[Verifier] = []
    if "\n\n\u2014 " in text:
        raise InvalidInput(f"{source} is a signed checkpoint, not a list of verifier keys; pass a witness's "
                           "cosigned checkpoint with --checkpoint", field="pinned_keys")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#") or line[:1].isspace() or line.startswith("origin "):
            continue
        word = line.split()[0]
        try:
            v = Verifier.from_string(word)
        except NoteError as exc:
            raise InvalidInput(f"{source} line {n}: not a verifier key ({exc})", field="pinned_keys") from None
        if v.sig_type != SIG_ED25519:
            raise InvalidInput(f"{source} line {n}: {v.name}+{v.key_id_hex} is a witness (cosignature) key, not a "
                               "log key; hold the history against a witness with --checkpoint", field="pinned_keys")
        if v not in keys:
            keys.append(v)
    if not keys:
        raise InvalidInput(f"{source} holds no verifier key (save the output of `csledger keys show`)",
                           field="pinned_keys")
    return PinnedKeys(source, tuple(keys))


def load_pinned_keys(path: Path | str) -> PinnedKeys:
    """Read and parse a pinned key file; an unreadable file is ``InvalidInput`` (field pinned_keys)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})",
                           field="pinned_keys") from None
    return parse_pinned_keys(text, str(path))


def open_with_pinned(note: str, pinned: PinnedKeys):
    """Open a checkpoint note with the pinned keys of its own origin only; ``NoteError`` if none signed it."""
    body = parse_checkpoint(split_note(note)[0])
    keys = pinned.for_origin(body.origin)
    if not keys:
        raise NoteError(f"no key pinned in {pinned.source} is named {body.origin!r} (pinned: {pinned.describe()})")
    return open_checkpoint(note, keys)


def check_registrant(conn: Connection, reg: str, size: int, root_hex: str | None,
                     pinned: PinnedKeys) -> IntegrityFailure | None:
    """Every stored checkpoint of ``reg`` must be signed by a pinned key and agree with its row;
    the latest must cover all ``size`` entries with the root ``root_hex`` (the root ``verify``
    recomputed from the entries). Returns the first problem, or None."""

    def fail(reason: str) -> IntegrityFailure:
        return IntegrityFailure(reason, registrant=reg)

    last = 0
    latest = None
    while True:
        rows = raw(conn).rows(conn, f"SELECT tree_size, root_hash, note FROM checkpoints WHERE registrant = :r "
                                    f"AND tree_size > :l ORDER BY tree_size LIMIT {BATCH}", {"r": reg, "l": last})
        for row in rows:
            n = row["tree_size"]
            try:
                body, _ = open_with_pinned(row["note"], pinned)
            except NoteError as exc:
                return fail(f"checkpoint at size {n} is not signed by a pinned key ({exc}): the log keys recorded "
                            "in this database were replaced, or the history was re-signed")
            if body.size != n or body.root.hex() != row["root_hash"]:
                return fail(f"checkpoint at size {n} disagrees with its row (signed size {body.size})")
            latest = body
        if len(rows) < BATCH:
            break
        last = rows[-1]["tree_size"]
    if latest is None:
        if size == 0:
            return None
        return fail(f"no signed checkpoint: none of the {size} entries is signed by a pinned key")
    if latest.size < size:
        return fail(f"entries {latest.size}..{size - 1} are covered by no checkpoint signed by a pinned key")
    if latest.size > size:
        return fail(f"a checkpoint of size {latest.size} was signed by a pinned key, but the log holds only "
                    f"{size} entries: entries were removed or an older backup restored")
    if root_hex is not None and latest.root.hex() != root_hex:
        return fail(f"the checkpoint at size {size} signed by a pinned key commits to root "
                    f"{latest.root.hex()[:16]}..., the entries' root is {root_hex[:16]}...: history was rewritten")
    return None


def check_pinned(ledger, pinned: PinnedKeys, sizes: dict[str, int],
                 roots: dict[str, str]) -> list[IntegrityFailure]:
    """:func:`check_registrant` for each verified registrant (``sizes``/``roots`` from ``verify``)."""
    problems = []
    with ledger.reading() as conn:
        for reg, size in sorted(sizes.items()):
            p = check_registrant(conn, reg, size, roots.get(reg), pinned)
            if p is not None:
                problems.append(p)
    return problems


__all__ = ["PinnedKeys", "check_pinned", "check_registrant", "load_pinned_keys", "open_with_pinned",
           "parse_pinned_keys"]

