"""The read model reports are built from: a registrant's entries up to one tree size, decoded
from their canonical bytes (never from copied columns), with the Merkle root of exactly those
bytes.

Why recompute the root from the bytes rather than read it from the stored Merkle nodes: the
root printed on a report must bind the very bytes the figures came from. We compute it from the
leaf hashes of what we decoded, and also compare it with the stored nodes, so a ledger whose
nodes and bytes disagree refuses to produce a report (run ``csledger verify``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.storage.store import entries_t, node_reader, tree_size
from reports.errors import ReportError

#: Rows fetched per keyset page: bounds memory of the fetch, not of the snapshot.
PAGE = 2000


@dataclass(frozen=True)
class LedgerState:
    """What a report was built from: the registrant's tree size and Merkle root (hex), and the
    signed checkpoint note for that size when the log has one (issue 4)."""

    registrant: str
    tree_size: int
    root: str
    checkpoint: str | None = None
    verifier_keys: tuple[str, ...] = ()
    witness_keys: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"registrant": self.registrant, "tree_size": self.tree_size, "root": self.root,
                "checkpoint": self.checkpoint, "verifier_keys": list(self.verifier_keys),
                "witness_keys": list(self.witness_keys)}

    def qr_text(self) -> str:
        """What the QR code holds: the signed checkpoint when there is one, else the state in
        the same three-line shape (origin-like line, size, root) so a phone reads it alike."""
        if self.checkpoint:
            return self.checkpoint
        return f"csledger-state/{self.registrant}\n{self.tree_size}\n{self.root}\n"


class EntryStream:
    """A registrant's entries ``0 .. size-1``, read again from the database, page by page, each
    time they are iterated (issue 22: a year of a clinic group's entries decoded into one list
    took about 7 KiB of memory per entry; a report holds none of them now).

    Used while the read transaction it was made in is open (``build_report`` holds it for the
    whole computation), so every pass reads the same entries, the ones ``load_snapshot`` checked
    against the Merkle root. Behaves as a read-only sequence: ``len``, ``[seq]`` and iteration in
    entry order; ``of_kinds`` decodes only the entries of the kinds asked for."""

    def __init__(self, conn: Connection, registrant: str, size: int, first: dict[str, Any]):
        self._conn, self._registrant, self._size, self._first = conn, registrant, size, first

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _, data in _rows(self._conn, self._registrant, self._size):
            yield canon.decode(data)

    def __getitem__(self, seq: int) -> dict[str, Any]:
        if not isinstance(seq, int):
            raise TypeError("entries are looked up by seq")
        if seq < 0:
            seq += self._size
        if not 0 <= seq < self._size:
            raise IndexError(seq)
        if seq == 0:
            return self._first
        data = self._conn.execute(sa.select(entries_t.c.canonical).where(
            entries_t.c.registrant == self._registrant, entries_t.c.seq == seq)).scalar_one()
        return canon.decode(bytes(data))

    def of_kinds(self, *kinds: str) -> Iterator[dict[str, Any]]:
        """The entries of these kinds, in entry order. Canonical bytes carry ``"kind":"NAME"``
        (sorted keys, no spaces), so an entry whose bytes lack every such marker is not decoded;
        what is decoded is still checked by its own ``kind``."""
        marks = [f'"kind":"{k}"'.encode() for k in kinds]
        wanted = set(kinds)
        for _, data in _rows(self._conn, self._registrant, self._size):
            if any(m in data for m in marks):
                e = canon.decode(data)
                if e.get("kind") in wanted:
                    yield e


@dataclass
class Snapshot:
    """A registrant's decoded entries ``0 .. tree_size-1`` and the state they hash to: a list, or
    an ``EntryStream`` that reads them again on each pass (``load_snapshot(..., stream=True)``)."""

    state: LedgerState
    entries: list[dict[str, Any]] | EntryStream = field(default_factory=list)

    @property
    def registrant_entry(self) -> dict[str, Any]:
        return self.entries[0]


def of_kinds(entries: Iterable[dict[str, Any]], *kinds: str) -> Iterator[dict[str, Any]]:
    """The entries of these kinds, in entry order (from an ``EntryStream`` without decoding the
    others)."""
    if isinstance(entries, EntryStream):
        yield from entries.of_kinds(*kinds)
        return
    wanted = set(kinds)
    for e in entries:
        if e["kind"] in wanted:
            yield e


def _rows(conn: Connection, registrant: str, size: int) -> Iterator[tuple[int, bytes]]:
    start = 0
    while start < size:
        rows = conn.execute(
            sa.select(entries_t.c.seq, entries_t.c.canonical)
            .where(entries_t.c.registrant == registrant, entries_t.c.seq >= start, entries_t.c.seq < size)
            .order_by(entries_t.c.seq).limit(PAGE)
        ).all()
        if not rows:
            return
        for seq, data in rows:
            yield int(seq), bytes(data)
        start = int(rows[-1][0]) + 1


def _checkpoint(conn: Connection, registrant: str, size: int) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """The signed checkpoint note for exactly ``size`` with the witnesses' cosignatures gathered
    so far, the log's verifier keys (current first) and the witnesses' verifier keys."""
    from ledger.storage import log

    found = log.signed_checkpoint_with_cosignatures(conn, registrant, size)
    keys = tuple(k.verifier_key for k in log.log_keys(conn, registrant))
    policy = log.witness_policy(conn, registrant)
    witnesses = tuple(w.verifier_key for w in policy.witnesses) if policy else ()
    if found is None:
        return None, keys, witnesses
    return found[1].decode("utf-8"), keys, witnesses


def load_snapshot(conn: Connection, registrant: str, size: int | None = None, *, stream: bool = False) -> Snapshot:
    """Decode the first ``size`` entries (default: all) of ``registrant`` and check their root.

    ``stream``: keep none of them; the snapshot's ``entries`` is an ``EntryStream`` over ``conn``
    (which must stay open while it is used), and memory is flat in the number of entries.

    Raises ``ReportError`` for an unknown registrant, a size beyond the log, a gap, or bytes
    that do not hash to the stored Merkle nodes.
    """
    current = tree_size(conn, registrant)
    if current == 0:
        raise ReportError(f"no registrant with DEA number {registrant} in this ledger", field="registrant")
    if size is None:
        size = current
    if not 1 <= size <= current:
        raise ReportError(f"the ledger of {registrant} has {current} entries; it has no tree size {size}",
                          field="tree_size")
    acc = merkle.RootAccumulator()
    entries: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    n = 0
    for seq, data in _rows(conn, registrant, size):
        if seq != n:
            raise ReportError(f"entry {seq} follows {n - 1}: the ledger has a gap; run csledger verify")
        obj = canon.decode(data)
        if obj.get("registrant") != registrant or obj.get("seq") != seq:
            raise ReportError(f"entry {seq} names another position; run csledger verify")
        acc.push(canon.leaf_hash(data))
        if not stream:
            entries.append(obj)
        elif seq == 0:
            first = obj
        n += 1
    if n != size:
        raise ReportError(f"read {n} of {size} entries; run csledger verify")
    root = acc.root()
    try:
        stored = merkle.root(size, node_reader(conn, registrant))
    except KeyError:
        stored = None
    if stored is not None and stored != root:
        raise ReportError(f"the entries of {registrant} do not hash to the stored Merkle tree at size {size}; "
                          "run csledger verify")
    note, keys, witnesses = _checkpoint(conn, registrant, size)
    state = LedgerState(registrant, size, root.hex(), note, keys, witnesses)
    return Snapshot(state, EntryStream(conn, registrant, size, first) if stream else entries)
