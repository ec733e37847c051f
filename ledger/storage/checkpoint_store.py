"""Reads of the verifiable log's tables: log keys (public halves, one row per generation),
signed checkpoints and their cosignatures, the witness policy, and the stored Merkle nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    Verifier,
    add_signature_lines,
)
from ledger.storage.store import (
    node_reader,
    prefetched,
    raw,
)


@dataclass(frozen=True)
class LogKeyRow:
    """One generation of a registrant's log key (public half)."""

    generation: int
    origin: str
    verifier_key: str
    first_size: int
    created_at: str
    reason: str

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_string(self.verifier_key)


LOG_KEYS_SQL = ("SELECT generation, origin, verifier_key, first_size, created_at, reason "
                "FROM log_keys WHERE registrant = :r ORDER BY generation DESC")
LATEST_CHECKPOINT_SQL = ("SELECT registrant, tree_size, root_hash, note, signed_at FROM checkpoints "
                         "WHERE registrant = :r ORDER BY tree_size DESC LIMIT 1")


def log_keys(conn: Connection, registrant: str) -> list[LogKeyRow]:
    """All key generations of a registrant's log, current (highest generation) first."""
    return [LogKeyRow(**r) for r in raw(conn).rows(conn, LOG_KEYS_SQL, {"r": registrant})]


def keys_and_latest_checkpoint(conn: Connection, registrant: str) -> tuple[list[LogKeyRow], StoredCheckpoint | None]:
    """``log_keys`` and ``latest_checkpoint`` read together (one round trip on PostgreSQL), or,
    in an append transaction, taken from the reads sent with its head read (``attach`` names
    them in ``Ledger.prefetch``; nothing else in the transaction writes these tables before
    the checkpoint hook does)."""
    keys, cps = prefetched(conn, "log_keys"), prefetched(conn, "latest_checkpoint")
    if keys is None or cps is None:
        keys, cps = raw(conn).batch(conn, [(LOG_KEYS_SQL, {"r": registrant}), (LATEST_CHECKPOINT_SQL, {"r": registrant})])
    return [LogKeyRow(**r) for r in keys], (StoredCheckpoint(**cps[0]) if cps else None)


def registrant_of_origin(conn: Connection, origin: str) -> str | None:
    """The registrant whose log (any key generation) has this checkpoint origin, or None."""
    rows = raw(conn).rows(conn, "SELECT DISTINCT registrant FROM log_keys WHERE origin = :o", {"o": origin})
    return rows[0]["registrant"] if rows else None


@dataclass(frozen=True)
class StoredCheckpoint:
    registrant: str
    tree_size: int
    root_hash: str
    note: str
    signed_at: str


def latest_checkpoint(conn: Connection, registrant: str) -> StoredCheckpoint | None:
    """The last checkpoint the log signed for ``registrant`` (log signature only)."""
    row = raw(conn).one(conn, LATEST_CHECKPOINT_SQL, {"r": registrant})
    return StoredCheckpoint(**row) if row else None


def checkpoint_at(conn: Connection, registrant: str, size: int) -> StoredCheckpoint | None:
    row = raw(conn).one(conn, "SELECT registrant, tree_size, root_hash, note, signed_at FROM checkpoints "
                              "WHERE registrant = :r AND tree_size = :s", {"r": registrant, "s": size})
    return StoredCheckpoint(**row) if row else None


def cosignature_lines(conn: Connection, registrant: str, size: int) -> list[str]:
    rows = raw(conn).rows(conn, "SELECT line FROM cosignatures WHERE registrant = :r AND tree_size = :s "
                                "ORDER BY witness, key_id", {"r": registrant, "s": size})
    return [r["line"] for r in rows]


@dataclass(frozen=True)
class WitnessEntry:
    """One witness of a registrant: its cosignature verifier key and add-checkpoint URL prefix."""

    verifier_key: str
    url: str

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_string(self.verifier_key)

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class WitnessPolicyRow:
    version: int
    threshold: int
    witnesses: tuple[WitnessEntry, ...]


def witness_policy(conn: Connection, registrant: str) -> WitnessPolicyRow | None:
    """The witness policy in force (highest version), or None when none was ever set."""
    row = raw(conn).one(conn, "SELECT version, threshold, witnesses FROM witness_policies WHERE registrant = :r "
                              "ORDER BY version DESC LIMIT 1", {"r": registrant})
    if row is None:
        return None
    ws = tuple(WitnessEntry(w["verifier_key"], w["url"]) for w in json.loads(row["witnesses"]))
    return WitnessPolicyRow(row["version"], row["threshold"], ws)


def registrant_log_id(conn: Connection, registrant: str) -> str | None:
    return raw(conn).scalar(conn, "SELECT log_id FROM registrants WHERE dea_number = :r", {"r": registrant})


def signed_checkpoint_with_cosignatures(conn: Connection, registrant: str,
                                        size: int | None = None) -> tuple[StoredCheckpoint, bytes] | None:
    """The stored checkpoint (latest, or at ``size``) as a note carrying its cosignatures."""
    cp = latest_checkpoint(conn, registrant) if size is None else checkpoint_at(conn, registrant, size)
    if cp is None:
        return None
    lines = cosignature_lines(conn, registrant, cp.tree_size)
    note = add_signature_lines(cp.note, lines) if lines else cp.note.encode()
    return cp, note


def memo_reader(conn: Connection, registrant: str) -> merkle.NodeReader:
    """``node_reader`` with a per-call cache: root and proof of one command share their reads."""
    get = node_reader(conn, registrant)
    cache: dict[tuple[int, int], bytes] = {}

    def read(level: int, index: int) -> bytes:
        key = (level, index)
        h = cache.get(key)
        if h is None:
            h = cache[key] = get(level, index)
        return h

    return read
