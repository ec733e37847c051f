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

Staff root (issue 17): a line ``staff-root sha256:<64 hex>`` (what ``csledger init`` prints) pins
the fingerprint of the registrant's root staff credential, the one every other credential is
enrolled from; ``staff-root <DEA number> sha256:<hex>`` names the registrant when the file's keys
are of several. Whoever holds the log key could otherwise enrol a root of their own in a chain
that had none yet and sign as anybody from it on; ``verify`` fails when the chain's root is not
the pinned one (or the chain has none).
"""

from __future__ import annotations

import re
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

_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class PinnedKeys:
    """Log verifier keys trusted because they came from outside the database."""

    source: str
    keys: tuple[Verifier, ...]
    #: Pinned root staff credential fingerprints: (registrant, "sha256:<hex>") (issue 17).
    staff_roots: tuple[tuple[str, str], ...] = ()

    def staff_root(self, registrant: str) -> str | None:
        """The root credential fingerprint pinned for ``registrant``, or None."""
        return next((fp for reg, fp in self.staff_roots if reg == registrant), None)

    def for_origin(self, origin: str) -> list[Verifier]:
        """The pinned keys of one log (a log key's name is its checkpoint origin)."""
        return [k for k in self.keys if k.name == origin]

    def describe(self) -> str:
        return ", ".join(f"{k.name}+{k.key_id_hex}" for k in self.keys)


def parse_pinned_keys(text: str, source: str) -> PinnedKeys:
    """Parse a pinned key file (see the module docstring); ``InvalidInput`` names the line."""
    keys: list[Verifier] = []
    roots: list[tuple[int, str | None, str]] = []  # (line, registrant named or None, fingerprint)
    if "\n\n\u2014 " in text:
        raise InvalidInput(f"{source} is a signed checkpoint, not a list of verifier keys; pass a witness's "
                           "cosigned checkpoint with --checkpoint", field="pinned_keys")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#") or line[:1].isspace() or line.startswith("origin "):
            continue
        word = line.split()[0]
        if word == "staff-root":
            roots.append(_staff_root_line(line, n, source))
            continue
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
    return PinnedKeys(source, tuple(keys), _staff_roots(roots, keys, source))


def _staff_root_line(line: str, n: int, source: str) -> tuple[int, str | None, str]:
    words = line.split()
    if len(words) not in (2, 3) or not _FINGERPRINT.fullmatch(words[-1]):
        raise InvalidInput(f"{source} line {n}: a staff root is 'staff-root [DEA number] sha256:<64 hex digits>' "
                           "(as `csledger init` prints it)", field="pinned_keys")
    return n, (words[1] if len(words) == 3 else None), words[-1]


def _staff_roots(roots: list[tuple[int, str | None, str]], keys: list[Verifier],
                 source: str) -> tuple[tuple[str, str], ...]:
    """Each staff-root line with its registrant: the one it names, else the only registrant whose
    log keys the file pins (a log key's name is ``<prefix>/<registrant>/<log id>``)."""
    registrants = sorted({k.name.split("/")[-2] for k in keys if k.name.count("/") >= 2})
    out: dict[str, str] = {}
    for n, reg, fp in roots:
        if reg is None:
            if len(registrants) != 1:
                raise InvalidInput(f"{source} line {n}: the keys here are of {len(registrants)} registrants; name "
                                   "the registrant: 'staff-root <DEA number> sha256:...'", field="pinned_keys")
            reg = registrants[0]
        if out.setdefault(reg, fp) != fp:
            raise InvalidInput(f"{source} line {n}: a different staff root is already pinned for {reg}",
                               field="pinned_keys")
    return tuple(sorted(out.items()))


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


def check_staff_root(reg: str, root_fingerprint: str | None, root_seq: int | None,
                     pinned: PinnedKeys) -> IntegrityFailure | None:
    """The chain's root staff credential (``verify``'s finding) against the one pinned for ``reg``;
    None when it agrees or none is pinned for it."""
    want = pinned.staff_root(reg)
    if want is None or want == root_fingerprint:
        return None
    if root_fingerprint is None:
        return IntegrityFailure(f"the staff root {want} is pinned in {pinned.source}, but the chain enrols no staff "
                                "credential: the credential entries were removed, or this is another ledger",
                                registrant=reg)
    return IntegrityFailure(f"the chain's root staff credential (entry {root_seq}) is {root_fingerprint}, not the "
                            f"one pinned in {pinned.source} ({want}): a root enrolled by someone else, e.g. the "
                            "holder of the log key", registrant=reg, seq=root_seq)


def check_pinned(ledger, pinned: PinnedKeys, sizes: dict[str, int],
                 roots: dict[str, str], staff: dict | None = None) -> list[IntegrityFailure]:
    """:func:`check_registrant` for each verified registrant (``sizes``/``roots`` from ``verify``),
    and, with ``staff`` (``VerifyReport.staff``: summaries with ``root_fingerprint`` and
    ``root_seq``), :func:`check_staff_root`."""
    problems = []
    with ledger.reading() as conn:
        for reg, size in sorted(sizes.items()):
            p = check_registrant(conn, reg, size, roots.get(reg), pinned)
            if p is None and staff is not None:
                s = staff.get(reg)
                p = check_staff_root(reg, getattr(s, "root_fingerprint", None), getattr(s, "root_seq", None), pinned)
            if p is not None:
                problems.append(p)
    return problems


__all__ = ["PinnedKeys", "check_pinned", "check_registrant", "check_staff_root", "load_pinned_keys",
           "open_with_pinned", "parse_pinned_keys"]

