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
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger.domain.errors import Conflict, IntegrityFailure, InvalidInput, LedgerError, NotFound
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    SIG_COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    Signer,
    open_checkpoint,
    parse_signature_line,
    sign_checkpoint,
    verify_cosignature,
)
from ledger.storage.checkpoint_store import (  # noqa: F401  (re-exported)
    LATEST_CHECKPOINT_SQL,
    LOG_KEYS_SQL,
    LogKeyRow,
    StoredCheckpoint,
    WitnessEntry,
    WitnessPolicyRow,
    checkpoint_at,
    cosignature_lines,
    keys_and_latest_checkpoint,
    latest_checkpoint,
    log_keys,
    memo_reader,
    registrant_log_id,
    registrant_of_origin,
    signed_checkpoint_with_cosignatures,
    witness_policy,
)
from ledger.storage.key_store import KeyStore, LogKeyError, _Pair
from ledger.storage.store import (
    CommandContext,
    Ledger,
    _advisory_key,
    raw,
    registrants_with_entries,
    utcnow,
)
from ledger.storage.witness_pusher import WitnessPusher  # noqa: F401  (re-exported)

_log = logging.getLogger("csledger.log")


#: Bytes of an add-checkpoint response we are willing to read from a witness.
_MAX_WITNESS_RESPONSE = 64 * 1024


class RollbackDetected(Conflict):
    """The database is behind (or forked from) what a witness already cosigned."""

    type = "rollback-detected"


class ChainUnverified(LedgerError):
    """The registrant's chain failed verification (``serve``'s start-up check or its periodic
    verify): appends are refused until it verifies again; reads still work. A 503: the server's
    data, not the request, is at fault (issue 16)."""

    status = 503
    type = "chain-unverified"
    #: A 5xx whose detail the client is shown (the app hides the detail of other 5xx).
    expose = True


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
        #: Registrants whose chain failed verification, with the reason (issue 16): appends refused.
        self.unverified: dict[str, str] = {}
        self._lock = threading.Lock()
        #: Per registrant, the last checkpoint whose signature we checked (or signed): its size,
        #: note and parsed body (parsing our own note again was a tenth of signing the next).
        self._verified: dict[str, tuple[int, str, Checkpoint]] = {}
        self._signers: dict[str, tuple[str, Signer]] = {}  # registrant -> (current verifier key, signer)

    # -- signing, inside the append transaction ------------------------------------------

    def origin_for(self, registrant: str, log_id: str) -> str:
        return f"{self.origin_prefix}/{registrant}/{log_id}"

    def _signer(self, conn: Connection, registrant: str, size: int, now: str,
                keys: list[LogKeyRow] | None = None) -> tuple[Signer, list[LogKeyRow]]:
        keys = log_keys(conn, registrant) if keys is None else keys
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

    def refuse_unverified(self, ctx: CommandContext, _appended: Any = None, _leaf: Any = None) -> None:
        """``Ledger.after_append`` hook, run first: no entry joins a chain that failed
        verification (it would be signed over whatever was slipped in); the transaction rolls back."""
        reason = self.unverified.get(ctx.registrant)
        if reason is not None:
            raise ChainUnverified(f"{ctx.registrant}: appends are refused until its chain verifies again; nothing "
                                  f"was recorded. {reason}", field="registrant")

    def refused(self) -> dict[str, dict[str, str]]:
        """Registrants whose appends are refused, with the problem type and the reason (``/healthz``)."""
        out = {reg: {"problem": RollbackDetected.type, "reason": why} for reg, why in dict(self.blocked).items()}
        out.update({reg: {"problem": ChainUnverified.type, "reason": why} for reg, why in dict(self.unverified).items()})
        return dict(sorted(out.items()))

    def sign_checkpoint(self, ctx: CommandContext) -> None:
        """``Ledger.before_commit`` hook: prove the new tree consistent with the last signed
        checkpoint, then sign and store the new checkpoint, all in the command's transaction."""
        reason = self.blocked.get(ctx.registrant)
        if reason is not None:
            raise RollbackDetected(reason, field="registrant")
        conn, reg = ctx.conn, ctx.registrant
        size = ctx.next_seq
        now = canon.format_time(ctx.now)
        stored_keys, last = keys_and_latest_checkpoint(conn, reg)
        signer, keys = self._signer(conn, reg, size, now, stored_keys)
        get = ctx.node_reader()
        new_root = merkle.root(size, get)
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
        body = Checkpoint(keys[0].origin, size, new_root)
        note = sign_checkpoint(body, signer).decode()
        raw(conn).run(conn, "INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                            "VALUES (:r, :s, :h, :n, :t)", {"r": reg, "s": size, "h": new_root.hex(), "n": note, "t": now})
        self._verified[reg] = (size, note, body)

    #: Once per group commit (``Ledger.execute``), with its last command: the commands committed
    #: together share one checkpoint, signed over the tree they leave.
    sign_checkpoint.once_per_commit = True  # type: ignore[attr-defined]

    def _open_stored(self, reg: str, cp: StoredCheckpoint, keys: list[LogKeyRow]) -> Checkpoint:
        """Parse a stored checkpoint, checking its log signature unless we signed it ourselves."""
        seen = self._verified.get(reg)
        if seen is not None and seen[:2] == (cp.tree_size, cp.note):
            return seen[2]
        try:
            body, _ = open_checkpoint(cp.note, [k.verifier for k in keys])
        except NoteError as exc:
            raise IntegrityFailure(f"the stored checkpoint at size {cp.tree_size} does not verify ({exc})",
                                   registrant=reg, seq=None) from None
        if body.size != cp.tree_size or body.root.hex() != cp.root_hash:
            raise IntegrityFailure(f"the stored checkpoint at size {cp.tree_size} disagrees with its own columns",
                                   registrant=reg, seq=None)
        self._verified[reg] = (cp.tree_size, cp.note, body)
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


def attach(ledger: Ledger, settings: Any) -> TransparencyLog:
    """Make ``ledger`` sign a checkpoint in every append transaction (production entry points).

    ``settings`` needs ``key_dir`` and ``origin_prefix`` (and optionally ``log_keys``). The
    server also calls :meth:`TransparencyLog.check_rollback` and :meth:`TransparencyLog.start_pusher`.
    """
    log = TransparencyLog(ledger, Path(settings.key_dir), origin_prefix=settings.origin_prefix,
                          env_keys=getattr(settings, "log_keys", "") or "")
    ledger.before_commit.append(log.sign_checkpoint)
    # What the checkpoint hook reads first, sent with the transaction's head read instead.
    ledger.prefetch.update({"log_keys": LOG_KEYS_SQL, "latest_checkpoint": LATEST_CHECKPOINT_SQL})
    ledger.after_append.insert(0, log.refuse_unverified)  # before the entry's Merkle nodes are written
    ledger.transparency_log = log  # type: ignore[attr-defined]
    # The registrant report keys (issue 18) live beside the log keys; reports sign with them.
    ledger.report_key_dir = Path(settings.key_dir)  # type: ignore[attr-defined]
    return log


def fingerprint_lines(keys: Iterable[LogKeyRow]) -> list[str]:
    """Human-comparable lines for reports: key ID, fingerprint, state."""
    out = []
    for i, k in enumerate(keys):
        v = k.verifier
        out.append(f"{v.key_id_hex} {v.fingerprint} {'current' if i == 0 else 'retired'} (generation {k.generation})")
    return out


__all__ = [
    "ChainUnverified", "KeyStore", "LogKeyError", "LogKeyRow", "PushResult", "RollbackDetected", "StoredCheckpoint", "TransparencyLog",
    "WitnessEntry", "WitnessPolicyRow", "WitnessPusher", "attach", "checkpoint_at", "cosignature_lines",
    "fingerprint_lines", "latest_checkpoint", "log_keys", "memo_reader", "registrant_log_id", "registrant_of_origin", "signed_checkpoint_with_cosignatures",
    "witness_policy",
]
