"""Each registrant's ledger as a transparency log: log keys, signed checkpoints, witnesses.

What lives where
----------------
* **Private log key** (Ed25519, a C2SP signer key string whose name is the origin): a file
  ``<key_dir>/<DEA>-<log id>.key`` created with mode 0600, or a ``PRIVATE+KEY+...`` string in
  ``CSLEDGER_LOG_KEYS`` (whitespace separated, matched by origin). Never in the database: whoever
  can read the database must not be able to sign for the log.
* **Verifier keys** (public): table ``log_keys``, one append-only row per generation. The highest
  generation is current; older ones are retired but kept, so every old checkpoint still verifies.
  A table rather than an entry because rotation must work when the old key is lost and nothing
  can be signed; the key's fingerprint goes out of band (reports, the verifier-key endpoint).
* **Checkpoints**: table ``checkpoints``, one per command, signed in the append transaction by
  :class:`TransparencyLog` (a ``Ledger.before_commit`` hook) after proving the new tree
  consistent with the last signed checkpoint, so the log never signs two inconsistent trees.
* **Witness policy**: table ``witness_policies`` (append-only history, highest version in force):
  the witnesses' cosignature verifier keys, their URLs and the threshold N of M.
* **Cosignatures**: table ``cosignatures``, gathered after commit by :meth:`TransparencyLog.push`
  (HTTP, C2SP tlog-witness ``add-checkpoint``) and served with the checkpoint.

Rollback: :meth:`TransparencyLog.check_rollback` asks every witness what it last cosigned; a
database behind that (restored from an old backup) or forked from it blocks every append of
that registrant in this process until an operator restores the right database.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger.domain.errors import Conflict, IntegrityFailure, InvalidInput, NotFound
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    add_signature_lines,
    open_checkpoint,
    parse_signature_line,
    sign_checkpoint,
    verify_cosignature,
)
from ledger.storage.store import (
    CommandContext,
    Ledger,
    _advisory_key,
    node_reader,
    raw,
    registrants_with_entries,
    utcnow,
)

_log = logging.getLogger("csledger.log")

#: Bytes of an add-checkpoint response we are willing to read from a witness.
_MAX_WITNESS_RESPONSE = 64 * 1024


class LogKeyError(IntegrityFailure):
    """The log key is missing, unreadable, or not the key the database says is current."""


class RollbackDetected(Conflict):
    """The database is behind (or forked from) what a witness already cosigned."""

    type = "rollback-detected"


# --------------------------------------------------------------------------- queries


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


def log_keys(conn: Connection, registrant: str) -> list[LogKeyRow]:
    """All key generations of a registrant's log, current (highest generation) first."""
    rows = raw(conn).rows(conn, "SELECT generation, origin, verifier_key, first_size, created_at, reason "
                                "FROM log_keys WHERE registrant = :r ORDER BY generation DESC", {"r": registrant})
    return [LogKeyRow(**r) for r in rows]


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
    row = raw(conn).one(conn, "SELECT registrant, tree_size, root_hash, note, signed_at FROM checkpoints "
                              "WHERE registrant = :r ORDER BY tree_size DESC LIMIT 1", {"r": registrant})
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


# --------------------------------------------------------------------------- keys on disk


class KeyStore:
    """Private log keys: files under ``key_dir`` (mode 0600) or signer strings from settings."""

    def __init__(self, key_dir: Path, env_keys: str = ""):
        self.key_dir = Path(key_dir)
        self._env: dict[str, Signer] = {}
        for text in env_keys.split():
            try:
                s = Signer.from_string(text)
            except NoteError as exc:
                raise LogKeyError(f"CSLEDGER_LOG_KEYS holds a malformed signer key ({exc})") from None
            self._env[s.name] = s

    def path(self, registrant: str, log_id: str) -> Path:
        return self.key_dir / f"{registrant}-{log_id}.key"

    @staticmethod
    def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        # Created 0600 from the first byte: no window where another user could read it.
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, (text + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def create(self, registrant: str, log_id: str, origin: str) -> Signer:
        """Make a new log key for a registrant; refuse to overwrite an existing one."""
        signer = Signer.generate(origin, SIG_ED25519)
        try:
            self._write_private(self.path(registrant, log_id), signer.to_string(), exclusive=True)
        except FileExistsError:
            raise LogKeyError(f"a log key for {registrant} already exists at {self.path(registrant, log_id)}") from None
        return signer

    def load(self, registrant: str, log_id: str, origin: str) -> Signer | None:
        """The private key for ``origin``, from the environment or the key file; None if absent."""
        if origin in self._env:
            return self._env[origin]
        path = self.path(registrant, log_id)
        pending = path.with_suffix(".key.next")
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise LogKeyError(f"cannot read the log key {path}: {exc}") from None
        if text is None and not pending.exists():
            return None
        signers = []
        for t in ([text] if text else []) + ([pending.read_text().strip()] if pending.exists() else []):
            try:
                signers.append(Signer.from_string(t))
            except NoteError as exc:
                raise LogKeyError(f"the log key file of {registrant} is malformed ({exc})") from None
        for s in signers:
            if s.name != origin:
                raise LogKeyError(f"the log key of {registrant} is named {s.name!r}, not the origin {origin!r}")
        # With a rotation interrupted between database commit and file rename, both files
        # exist; the caller picks the one whose verifier key is current (see TransparencyLog).
        return signers[-1] if len(signers) == 1 else _Pair(signers[0], signers[1])  # type: ignore[return-value]

    def stage_rotation(self, registrant: str, log_id: str, origin: str) -> Signer:
        """Write a new key beside the current one (``.key.next``) before the database knows it."""
        signer = Signer.generate(origin, SIG_ED25519)
        path = self.path(registrant, log_id).with_suffix(".key.next")
        self._write_private(path, signer.to_string(), exclusive=False)
        return signer

    def finish_rotation(self, registrant: str, log_id: str) -> None:
        """Move the new key over the old one: the retired private key is destroyed."""
        path = self.path(registrant, log_id)
        os.replace(path.with_suffix(".key.next"), path)


@dataclass(frozen=True)
class _Pair:
    """Old and staged key while a rotation is half done; resolved against ``log_keys``."""

    current_file: Signer
    staged: Signer


# --------------------------------------------------------------------------- the log


@dataclass
class PushResult:
    """What one witness said to one push."""

    witness: str
    ok: bool
    tree_size: int
    detail: str


class TransparencyLog:
    """Signs each command's checkpoint in its transaction and talks to the witnesses.

    Attach with :func:`attach`; production entry points (CLI, server, demo) always do.
    """

    def __init__(self, ledger: Ledger, key_dir: Path, *, origin_prefix: str, env_keys: str = "",
                 http_timeout: float = 5.0):
        if not origin_prefix or any(c.isspace() or c == "+" for c in origin_prefix):
            raise InvalidInput("must be non-empty, without spaces or '+'", field="origin_prefix")
        self.ledger = ledger
        self.keys = KeyStore(key_dir, env_keys)
        self.origin_prefix = origin_prefix.rstrip("/")
        self.http_timeout = http_timeout
        #: Registrants whose appends are refused, with the reason (rollback or fork detected).
        self.blocked: dict[str, str] = {}
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[int, str]] = {}  # last checkpoint whose signature we checked
        self._signers: dict[str, tuple[str, Signer]] = {}  # registrant -> (current verifier key, signer)

    # -- signing, inside the append transaction ------------------------------------------

    def origin_for(self, registrant: str, log_id: str) -> str:
        return f"{self.origin_prefix}/{registrant}/{log_id}"

    def _signer(self, conn: Connection, registrant: str, size: int, now: str) -> tuple[Signer, list[LogKeyRow]]:
        keys = log_keys(conn, registrant)
        cached = self._signers.get(registrant)
        if keys and cached is not None and cached[0] == keys[0].verifier_key:
            # Reading and parsing the key file costs more than the rest of signing; the
            # database still decides which key is current (a rotation elsewhere is seen).
            return cached[1], keys
        signer, keys = self._load_signer(conn, registrant, keys, now)
        self._signers[registrant] = (keys[0].verifier_key, signer)
        return signer, keys

    def _load_signer(self, conn: Connection, registrant: str, keys: list[LogKeyRow],
                     now: str) -> tuple[Signer, list[LogKeyRow]]:
        log_id = registrant_log_id(conn, registrant)
        if log_id is None:
            raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
        if not keys:
            # First checkpoint of this log (``init``, or a log older than migration 0002):
            # make its key now, inside the transaction that records the verifier key.
            origin = self.origin_for(registrant, log_id)
            signer = self.keys.load(registrant, log_id, origin)
            if signer is None:
                signer = self.keys.create(registrant, log_id, origin)
            elif isinstance(signer, _Pair):
                signer = signer.current_file
            row = LogKeyRow(1, origin, signer.verifier().to_string(), 1, now, "created with the log")
            _insert_key(conn, registrant, row)
            return signer, [row]
        current = keys[0]
        signer = self.keys.load(registrant, log_id, current.origin)
        if signer is None:
            raise LogKeyError(
                f"the log key of {registrant} is missing ({self.keys.path(registrant, log_id)}); nothing can be "
                "recorded until it is restored, or replaced with `csledger keys rotate` (see docs/threat-model.md)")
        if isinstance(signer, _Pair):
            signer = next((s for s in (signer.staged, signer.current_file)
                           if s.verifier().to_string() == current.verifier_key), signer.current_file)
        if signer.verifier().to_string() != current.verifier_key:
            raise LogKeyError(f"the log key file of {registrant} is not the current key "
                              f"{current.verifier.key_id_hex} recorded in log_keys")
        return signer, keys

    def sign_checkpoint(self, ctx: CommandContext) -> None:
        """``Ledger.before_commit`` hook: prove the new tree consistent with the last signed
        checkpoint, then sign and store the new checkpoint, all in the command's transaction."""
        reason = self.blocked.get(ctx.registrant)
        if reason is not None:
            raise RollbackDetected(reason, field="registrant")
        conn, reg = ctx.conn, ctx.registrant
        size = ctx.next_seq
        now = canon.format_time(ctx.now)
        signer, keys = self._signer(conn, reg, size, now)
        get = memo_reader(conn, reg)
        new_root = merkle.root(size, get)
        last = latest_checkpoint(conn, reg)
        if last is not None:
            old = self._open_stored(reg, last, keys)
            if old.size >= size:
                raise IntegrityFailure(f"the last signed checkpoint has size {old.size}, not below the new size {size}",
                                       registrant=reg, seq=None)
            try:
                proof = merkle.consistency_proof(old.size, size, get)
                merkle.verify_consistency(old.size, size, proof, old.root, new_root)
            except (merkle.ProofError, KeyError) as exc:
                # Refusing here is the point: the log never signs a tree that does not extend
                # what it signed before, whatever the database now says.
                raise IntegrityFailure(f"the new tree is not consistent with the checkpoint at size {old.size} "
                                       f"({exc}); refusing to sign", registrant=reg, seq=None) from None
        note = sign_checkpoint(Checkpoint(keys[0].origin, size, new_root), signer).decode()
        raw(conn).run(conn, "INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                            "VALUES (:r, :s, :h, :n, :t)", {"r": reg, "s": size, "h": new_root.hex(), "n": note, "t": now})
        self._verified[reg] = (size, note)

    def _open_stored(self, reg: str, cp: StoredCheckpoint, keys: list[LogKeyRow]) -> Checkpoint:
        """Parse a stored checkpoint, checking its log signature unless we signed it ourselves."""
        if self._verified.get(reg) == (cp.tree_size, cp.note):
            return Checkpoint.parse(cp.note.split("\n\n", 1)[0] + "\n")
        try:
            body, _ = open_checkpoint(cp.note, [k.verifier for k in keys])
        except NoteError as exc:
            raise IntegrityFailure(f"the stored checkpoint at size {cp.tree_size} does not verify ({exc})",
                                   registrant=reg, seq=None) from None
        if body.size != cp.tree_size or body.root.hex() != cp.root_hash:
            raise IntegrityFailure(f"the stored checkpoint at size {cp.tree_size} disagrees with its own columns",
                                   registrant=reg, seq=None)
        self._verified[reg] = (cp.tree_size, cp.note)
        return body

    # -- key rotation ---------------------------------------------------------------------

    def rotate(self, registrant: str, *, reason: str) -> tuple[LogKeyRow, LogKeyRow | None]:
        """Make a new log key; the old one is retired (public half kept, private half destroyed).

        Works when the old private key is lost or stolen: nothing is signed with it. The next
        command's checkpoint is the first signed with the new key. Returns (new, retired).
        """
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("say why the key is rotated (scheduled, lost, suspected stolen, ...)", field="reason")
        with self.ledger.engine.connect() as conn, conn.begin():
            if self.ledger.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(registrant)})
            log_id = registrant_log_id(conn, registrant)
            if log_id is None:
                raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
            keys = log_keys(conn, registrant)
            origin = keys[0].origin if keys else self.origin_for(registrant, log_id)
            last = latest_checkpoint(conn, registrant)
            signer = self.keys.stage_rotation(registrant, log_id, origin)
            row = LogKeyRow((keys[0].generation + 1) if keys else 1, origin, signer.verifier().to_string(),
                            (last.tree_size + 1) if last else 1, canon.format_time(utcnow()), reason)
            _insert_key(conn, registrant, row)
        # After the commit: until this rename, ``KeyStore.load`` sees both files and the signing
        # hook picks the one log_keys names as current, so a crash here loses nothing.
        self.keys.finish_rotation(registrant, log_id)
        return row, (keys[0] if keys else None)

    # -- witnesses ------------------------------------------------------------------------

    def set_witnesses(self, registrant: str, witnesses: Iterable[WitnessEntry], threshold: int) -> WitnessPolicyRow:
        """Record a new witness policy (append-only; the previous versions stay)."""
        ws = list(witnesses)
        seen = set()
        for i, w in enumerate(ws):
            try:
                v = w.verifier
            except NoteError as exc:
                raise InvalidInput(f"not a witness verifier key ({exc})", field=f"witnesses[{i}].verifier_key") from None
            if v.sig_type != SIG_COSIGNATURE_V1:
                raise InvalidInput("a witness key must be a cosignature/v1 (type 0x04) key",
                                   field=f"witnesses[{i}].verifier_key")
            if not w.url.startswith(("http://", "https://")):
                raise InvalidInput("must be an http:// or https:// URL prefix", field=f"witnesses[{i}].url")
            if (v.name, v.key_id) in seen:
                raise InvalidInput("the same witness key is named twice", field=f"witnesses[{i}].verifier_key")
            seen.add((v.name, v.key_id))
        if not isinstance(threshold, int) or not (0 <= threshold <= len(ws)) or (ws and threshold < 1):
            raise InvalidInput(f"must be between 1 and the number of witnesses ({len(ws)})", field="threshold")
        with self.ledger.engine.connect() as conn, conn.begin():
            if registrant_log_id(conn, registrant) is None:
                raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
            cur = witness_policy(conn, registrant)
            version = (cur.version + 1) if cur else 1
            raw(conn).run(conn, "INSERT INTO witness_policies (registrant, version, threshold, witnesses, set_at) "
                                "VALUES (:r, :v, :t, :w, :s)",
                          {"r": registrant, "v": version, "t": threshold,
                           "w": json.dumps([{"verifier_key": w.verifier_key, "url": w.url} for w in ws]),
                           "s": canon.format_time(utcnow())})
        return WitnessPolicyRow(version, threshold, tuple(ws))

    def _post(self, url: str, body: bytes) -> tuple[int, str, bytes]:
        req = urllib.request.Request(url.rstrip("/") + "/add-checkpoint", data=body, method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout) as resp:  # noqa: S310 - configured URL
                return resp.status, resp.headers.get("Content-Type", ""), resp.read(_MAX_WITNESS_RESPONSE)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read(_MAX_WITNESS_RESPONSE)

    @staticmethod
    def _request_body(old: int, proof: list[bytes], note: str) -> bytes:
        lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
        return ("\n".join(lines) + "\n\n").encode() + note.encode()

    def _proof(self, registrant: str, old: int, size: int) -> list[bytes]:
        if old == 0 or old == size:
            return []
        with self.ledger.reading() as conn:
            return merkle.consistency_proof(old, size, memo_reader(conn, registrant))

    def push(self, registrant: str, *, probe: bool = False) -> list[PushResult]:
        """Send the latest checkpoint to every witness of the policy; store the cosignatures.

        Each witness answers 409 with its own size when our guess of it is wrong; we then retry
        once from that size. A witness ahead of the database means a rollback: the registrant
        is blocked. With ``probe`` (at start) the first guess is 0, which learns every
        witness's size without trusting the database's record of it.
        """
        with self.ledger.reading() as conn:
            policy = witness_policy(conn, registrant)
            cp = latest_checkpoint(conn, registrant)
            known = {r["witness"]: r["s"] for r in raw(conn).rows(
                conn, "SELECT witness, MAX(tree_size) AS s FROM cosignatures WHERE registrant = :r GROUP BY witness",
                {"r": registrant})}
        if policy is None or cp is None or not policy.witnesses:
            return []
        results = []
        for w in policy.witnesses:
            try:
                results.append(self._push_one(registrant, cp, w, 0 if probe else min(known.get(w.name, 0), cp.tree_size)))
            except Exception as exc:  # a witness being down must never break the log
                results.append(PushResult(w.name, False, cp.tree_size, f"{type(exc).__name__}: {exc}"))
        return results

    def _push_one(self, registrant: str, cp: StoredCheckpoint, w: WitnessEntry, old: int) -> PushResult:
        forked = False
        for _attempt in range(3):
            status, ctype, body = self._post(w.url, self._request_body(old, self._proof(registrant, old, cp.tree_size), cp.note))
            if status == 200:
                return self._store_cosignatures(registrant, cp, w, body)
            if status == 409 and ctype.startswith("text/x.tlog.size"):
                try:
                    theirs = int(body.decode().strip())
                except ValueError:
                    return PushResult(w.name, False, cp.tree_size, f"witness answered 409 with a malformed size {body[:40]!r}")
                if theirs > cp.tree_size:
                    reason = (f"witness {w.name} already cosigned tree size {theirs} but this database's log ends at "
                              f"{cp.tree_size}: the database was restored from an older copy or rolled back. Appends "
                              "are refused until an operator restores the latest database (docs/threat-model.md).")
                    self.blocked[registrant] = reason
                    return PushResult(w.name, False, cp.tree_size, reason)
                if theirs == old:
                    forked = True  # the sizes agree, so the roots do not: a fork
                    break
                old = theirs  # our guess of the witness's size was wrong; retry from its size
                continue
            if status == 422:
                forked = True  # the witness could not verify our consistency proof from its size
                break
            return PushResult(w.name, False, cp.tree_size, f"witness answered HTTP {status}: {body[:200].decode(errors='replace')}")
        if not forked:
            return PushResult(w.name, False, cp.tree_size, "witness size kept changing; will retry with the next checkpoint")
        reason = (f"witness {w.name} refused checkpoint {cp.tree_size}: it is not consistent with what the witness "
                  f"cosigned at size {old}. This log's history differs from the one witnessed; appends are refused "
                  "until an operator resolves it (docs/threat-model.md).")
        self.blocked[registrant] = reason
        return PushResult(w.name, False, cp.tree_size, reason)

    def _store_cosignatures(self, registrant: str, cp: StoredCheckpoint, w: WitnessEntry, body: bytes) -> PushResult:
        verifier = w.verifier
        good = []
        for text in body.decode("utf-8", errors="replace").splitlines():
            if not text:
                continue
            try:
                sig = parse_signature_line(text)
                if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
                    continue  # the spec: ignore cosignatures from keys we do not know
                verify_cosignature(cp.note.split("\n\n", 1)[0] + "\n", text, verifier)
            except NoteError:
                continue
            good.append(sig.line().rstrip("\n"))
        if not good:
            return PushResult(w.name, False, cp.tree_size, "witness answered 200 without a valid cosignature from its key")
        with self.ledger.engine.connect() as conn, conn.begin():
            for line in good:
                raw(conn).run(conn, "INSERT INTO cosignatures (registrant, tree_size, witness, key_id, line, received_at) "
                                    "VALUES (:r, :s, :w, :k, :l, :t) ON CONFLICT DO NOTHING",
                              {"r": registrant, "s": cp.tree_size, "w": verifier.name, "k": verifier.key_id_hex,
                               "l": line, "t": canon.format_time(utcnow())})
        return PushResult(w.name, True, cp.tree_size, "cosigned")

    def start_pusher(self) -> WitnessPusher:
        """Push every new checkpoint to the witnesses from a background thread (the server)."""
        pusher = WitnessPusher(self).start()
        self.ledger.before_commit.append(pusher.notify)
        self.pusher = pusher
        return pusher

    def registrants(self) -> list[str]:
        with self.ledger.reading() as conn:
            return registrants_with_entries(conn)

    def check_rollback(self) -> dict[str, list[PushResult]]:
        """At start: probe every witness of every registrant; block registrants the witnesses
        have seen further (or differently) than this database."""
        out = {}
        for reg in self.registrants():
            out[reg] = self.push(reg, probe=True)
        return out

    def push_all(self) -> dict[str, list[PushResult]]:
        return {reg: self.push(reg) for reg in self.registrants()}


def _insert_key(conn: Connection, registrant: str, row: LogKeyRow) -> None:
    raw(conn).run(conn, "INSERT INTO log_keys (registrant, generation, origin, verifier_key, first_size, created_at, reason) "
                        "VALUES (:r, :g, :o, :v, :f, :c, :why)",
                  {"r": registrant, "g": row.generation, "o": row.origin, "v": row.verifier_key, "f": row.first_size,
                   "c": row.created_at, "why": row.reason})


class WitnessPusher:
    """Background thread: after commits, push the latest checkpoints to the witnesses.

    Pushing inside the append transaction would hold the registrant's lock across HTTP calls;
    instead the signing hook marks the registrant dirty and this thread pushes the latest
    checkpoint a moment later (coalescing bursts: only the newest checkpoint is sent).
    """

    def __init__(self, log: TransparencyLog, *, delay: float = 0.2, catch_up_tries: int = 50):
        self.log, self.delay, self.catch_up_tries = log, delay, catch_up_tries
        self._dirty: dict[str, int] = {}  # registrant -> the tree size its last command commits
        self._pushed: dict[str, int] = {}  # registrant -> the committed size when last pushed
        self._rounds: dict[str, int] = {}  # registrant -> rounds its size was not yet committed
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="witness-pusher", daemon=True)

    def start(self) -> WitnessPusher:
        self._thread.start()
        return self

    def notify(self, ctx: CommandContext) -> None:
        """A ``before_commit`` hook that only marks the registrant dirty, with the tree size its
        checkpoint has once the command commits."""
        with self._cv:
            self._dirty[ctx.registrant] = max(ctx.next_seq, self._dirty.get(ctx.registrant, 0))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def _committed_size(self, registrant: str) -> int:
        with self.log.ledger.reading() as conn:
            cp = latest_checkpoint(conn, registrant)
        return cp.tree_size if cp is not None else 0

    def _run(self) -> None:
        import time

        while True:
            with self._cv:
                while not self._dirty and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
            time.sleep(self.delay)
            with self._cv:
                dirty, self._dirty = self._dirty, {}
            again: dict[str, int] = {}
            failed = False
            for reg, size in dirty.items():
                try:
                    # The hook runs before the commit: when the commit lands later than
                    # ``delay`` (a loaded machine), the latest committed checkpoint is still the
                    # previous one and the new one would wait for the next append. Push what is
                    # new, and come back for the rest for a while (a command that rolled back
                    # never reaches its size).
                    committed = self._committed_size(reg)
                    behind = committed < size and self._rounds.get(reg, 0) + 1 < self.catch_up_tries
                    if committed > self._pushed.get(reg, 0) or not behind:
                        self.log.push(reg)
                        self._pushed[reg] = committed
                    if behind:
                        self._rounds[reg] = self._rounds.get(reg, 0) + 1
                        again[reg] = size
                    else:
                        self._rounds.pop(reg, None)
                except Exception as exc:  # noqa: BLE001 - the thread must outlive a database outage
                    # The database restarting must not end witnessing for the rest of the
                    # server's life: keep the registrant dirty and try again after a pause.
                    _log.warning("witness push for %s failed (%s); retrying", reg, type(exc).__name__)
                    again[reg], failed = size, True
            if again:
                with self._cv:
                    for reg, size in again.items():
                        self._dirty[reg] = max(size, self._dirty.get(reg, 0))
                    if failed:
                        self._cv.wait(timeout=min(5.0, 10 * self.delay))


def attach(ledger: Ledger, settings: Any) -> TransparencyLog:
    """Make ``ledger`` sign a checkpoint in every append transaction (production entry points).

    ``settings`` needs ``key_dir`` and ``origin_prefix`` (and optionally ``log_keys``). The
    server also calls :meth:`TransparencyLog.check_rollback` and :meth:`TransparencyLog.start_pusher`.
    """
    log = TransparencyLog(ledger, Path(settings.key_dir), origin_prefix=settings.origin_prefix,
                          env_keys=getattr(settings, "log_keys", "") or "")
    ledger.before_commit.append(log.sign_checkpoint)
    ledger.transparency_log = log  # type: ignore[attr-defined]
    return log


def fingerprint_lines(keys: Iterable[LogKeyRow]) -> list[str]:
    """Human-comparable lines for reports: key ID, fingerprint, state."""
    out = []
    for i, k in enumerate(keys):
        v = k.verifier
        out.append(f"{v.key_id_hex} {v.fingerprint} {'current' if i == 0 else 'retired'} (generation {k.generation})")
    return out


__all__ = [
    "KeyStore", "LogKeyError", "LogKeyRow", "PushResult", "RollbackDetected", "StoredCheckpoint", "TransparencyLog",
    "WitnessEntry", "WitnessPolicyRow", "WitnessPusher", "attach", "checkpoint_at", "cosignature_lines",
    "fingerprint_lines", "latest_checkpoint", "log_keys", "memo_reader", "signed_checkpoint_with_cosignatures",
    "witness_policy",
]
