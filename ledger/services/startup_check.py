"""The server checks before it writes.

At start (``csledger serve``), each registrant's chain is checked against its latest signed
checkpoint, cheaply: the checkpoint's signature (against the pinned keys when
``CSLEDGER_PINNED_KEYS_FILE`` is set, else the recorded log keys), the root of the stored Merkle
nodes at its size, the last signed entry's bytes by an inclusion proof to that root, and every
entry after it (the tail: normally none, since each command signs its own checkpoint): its leaf
hash, its link to the previous entry and the Merkle nodes it completed. A tail that passes is
still refused: every append signs its checkpoint in its own transaction, so entries after the
last checkpoint were written outside the ledger, and the next append would sign over them. A log
with no checkpoint and no log key (older than the signing) is checked from seq 0 and accepted.
O(log n) reads plus the tail; the full replay stays ``verify --deep``'s job.

A registrant whose chain fails is refused every append (503 ``chain-unverified``, through the
``TransparencyLog.unverified`` guard that runs before any entry is kept); reads still work and
``/healthz`` lists it with the reason. Appending to a chain that does not verify would sign a
checkpoint over whatever was slipped into it, so nothing is appended, not even an alert.

Every ``verify_interval_minutes`` (0: off) a background thread runs the fast ``verify`` and the
start-up check over every chain. A failure is logged (``csledger.chain``, ERROR) and refuses the registrant at once.
The alert goes into the registrant's own chain once that chain verifies again (the operator
restored or repaired the database): ``chain_unverified`` (critical) records when it failed, why,
and when appends resumed. An alert in the broken chain itself would be an append to it, and an
alert in another registrant's chain would put one clinic's incident in another's records.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from ledger.domain.alerts import Candidate
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.integrity.checkpoints import NoteError, open_checkpoint
from ledger.services.trust import PinnedKeys, check_pinned, load_pinned_keys, open_with_pinned
from ledger.storage.log import TransparencyLog, latest_checkpoint, log_keys
from ledger.storage.store import (
    Ledger,
    node_reader,
    raw,
    registrants_with_entries,
    tree_size,
    utcnow,
)

_log = logging.getLogger("csledger.chain")

BATCH = 2000

#: The rule name of the alert recorded once a refused chain verifies again.
ALERT_RULE = "chain_unverified"


def check_tail(conn: Connection, reg: str, pinned: PinnedKeys | None = None) -> str | None:
    """The start-up check of one chain (see the module docstring); the first failure, or None."""
    n = tree_size(conn, reg)
    cp = latest_checkpoint(conn, reg)
    get = node_reader(conn, reg)
    r = raw(conn)
    start, prev = 0, canon.ZERO_HASH
    if cp is None and pinned is not None and n > 0:
        return f"no signed checkpoint: none of the {n} entries is signed by a pinned key ({pinned.source})"
    if cp is None and n > 0 and log_keys(conn, reg):
        return (f"a log key is recorded but no signed checkpoint: the checkpoints were deleted, so nothing vouches "
                f"for the {n} entries")
    if cp is not None:
        keys = log_keys(conn, reg)
        try:
            if pinned is not None:
                body, _ = open_with_pinned(cp.note, pinned)
            else:
                body, _ = open_checkpoint(cp.note, [k.verifier for k in keys])
        except NoteError as exc:
            against = f"the pinned keys ({pinned.source})" if pinned is not None else "the recorded log keys"
            return f"the latest checkpoint (size {cp.tree_size}) does not verify against {against}: {exc}"
        if body.size != cp.tree_size or body.root.hex() != cp.root_hash:
            return f"the latest checkpoint (size {cp.tree_size}) disagrees with its own row"
        if keys and body.origin != keys[0].origin:
            return f"the latest checkpoint names origin {body.origin!r}, not the log's {keys[0].origin!r}"
        if n < body.size:
            return (f"the latest checkpoint was signed at size {body.size} but the log holds {n} entries: "
                    "entries were removed or an older backup restored")
        try:
            if merkle.root(body.size, get) != body.root:
                return (f"the root of the stored Merkle nodes at size {body.size} differs from the signed "
                        "checkpoint's root: a Merkle node was changed")
        except KeyError as exc:
            return f"stored Merkle node {exc.args[0]} is missing"
        last = body.size - 1
        row = r.one(conn, "SELECT leaf_hash, canonical FROM entries WHERE registrant = :r AND seq = :s",
                    {"r": reg, "s": last})
        if row is None:
            return f"entry {last}, the last one the checkpoint at size {body.size} signed, is missing"
        leaf = hashlib.sha256(b"\x00" + bytes(row["canonical"])).digest()
        if leaf.hex() != row["leaf_hash"]:
            return f"seq {last}: canonical bytes do not hash to the stored leaf hash"
        try:
            merkle.verify_inclusion(leaf, last, body.size, merkle.inclusion_proof(last, body.size, get), body.root)
        except (merkle.ProofError, KeyError) as exc:
            return f"seq {last}: the entry is not the one the checkpoint at size {body.size} signed ({exc})"
        start, prev = body.size, row["leaf_hash"]
    # The tail after the checkpoint. The left siblings it reads are the perfect nodes of the
    # checked prefix (the ones its signed root was just folded from) or nodes recomputed here.
    made: dict[tuple[int, int], bytes] = {}

    def sibling(level: int, index: int) -> bytes:
        h = made.get((level, index))
        return h if h is not None else get(level, index)

    expected = start
    while expected < n:
        rows = r.rows(conn, f"SELECT seq, prev_hash, leaf_hash, canonical FROM entries WHERE registrant = :r "
                            f"AND seq >= :s ORDER BY seq LIMIT {BATCH}", {"r": reg, "s": expected})
        if not rows:
            break
        for row in rows:
            seq = row["seq"]
            if seq != expected:
                return f"entry missing: found seq {seq} where {expected} was expected"
            leaf = hashlib.sha256(b"\x00" + bytes(row["canonical"])).digest()
            if leaf.hex() != row["leaf_hash"]:
                return (f"seq {seq}: canonical bytes do not hash to the stored leaf hash (an entry after the "
                        f"last signed checkpoint at size {start} was written outside the ledger)")
            if row["prev_hash"] != prev:
                return f"seq {seq}: chain broken: prev_hash is not the previous entry's leaf hash"
            try:
                for level, index, h in merkle.nodes_created_by_append(seq, leaf, sibling):
                    made[(level, index)] = h
                    if get(level, index) != h:
                        return f"seq {seq}: stored Merkle node (level {level}, index {index}) differs from its recomputation"
            except KeyError as exc:
                return (f"seq {seq}: stored Merkle node {exc.args[0]} is missing (an entry after the last signed "
                        f"checkpoint at size {start} was written outside the ledger)")
            prev = row["leaf_hash"]
            expected += 1
    if cp is not None and n > start:
        # Well formed, yet unsigned: every append signs its checkpoint in its own transaction, so
        # these entries were written outside the ledger. Signing over them would vouch for them.
        return (f"entries {start}..{n - 1} come after the last signed checkpoint (size {start}): each append signs "
                "its checkpoint in its own transaction, so they were written outside the ledger")
    return None


def check_chains(ledger: Ledger, pinned: PinnedKeys | None = None) -> dict[str, str]:
    """:func:`check_tail` for every registrant: ``{registrant: reason}`` of those that fail. A
    check that cannot complete counts as a failure (fail closed)."""
    found: dict[str, str] = {}
    with ledger.reading() as conn:
        registrants = registrants_with_entries(conn)
    for reg in registrants:
        try:
            with ledger.reading() as conn:
                why = check_tail(conn, reg, pinned)
        except Exception as exc:  # any surprise in stored data refuses, never lets appends through
            why = f"the check could not complete ({type(exc).__name__}: {exc})"
        if why is not None:
            found[reg] = why
    return found


class ChainGuard:
    """Refuses appends to chains that fail a check, and lifts the refusal when they pass again.

    ``startup`` runs :func:`check_chains`; ``verify_once`` the fast ``verify``, the pinned keys
    (when set) and :func:`check_chains`; ``start`` runs ``verify_once`` every ``interval_seconds`` in a daemon thread.
    """

    def __init__(self, ledger: Ledger, log: TransparencyLog, *, pinned: PinnedKeys | None = None,
                 interval_seconds: float = 0, clock: Callable[[], Any] = utcnow):
        self.ledger, self.log, self.pinned = ledger, log, pinned
        self.interval = interval_seconds
        self.clock = clock
        #: registrant -> (when it first failed, why), while refused by this guard.
        self.failed: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refuse(self, reg: str, why: str) -> None:
        if reg not in self.failed:
            self.failed[reg] = (canon.format_time(self.clock()), why)
            _log.error("chain of %s failed verification; appends refused: %s", reg, why)
        self.log.unverified[reg] = why

    def startup(self) -> dict[str, str]:
        """The start-up check; refuses each failing registrant. Returns ``{registrant: reason}``
        (each reason as ``/healthz`` and the 503 give it)."""
        found = {reg: f"start-up check: {why}" for reg, why in check_chains(self.ledger, self.pinned).items()}
        for reg, why in found.items():
            self._refuse(reg, why)
        return found

    def verify_once(self) -> dict[str, str]:
        """Fast-verify every chain; refuse the failing ones, restore (and alert) the repaired ones."""
        from ledger.services.verify import verify
        from ledger.storage.store import reference_cache

        # A reference row edited (or repaired) by hand behind the entries is read afresh from
        # here on: the cache holds one at most one interval (docs/threat-model.md).
        reference_cache(self.ledger.engine).clear()
        report = verify(self.ledger)
        # The tail check too: a well-formed entry slipped in after the last checkpoint passes the
        # fast verify (the checkpoint is a consistent prefix) and would be signed by the next append.
        found: dict[str, str] = dict(check_chains(self.ledger, self.pinned))
        for p in report.problems:
            if p.registrant is None:
                _log.error("periodic verify: %s", p)
            else:
                found.setdefault(p.registrant, str(p))
        if self.pinned is not None:
            clean = {r: s for r, s in report.registrants.items() if r not in found}
            for p in check_pinned(self.ledger, self.pinned, clean, report.roots, staff=report.staff):  # + staff root
                found.setdefault(p.registrant, str(p))
        for reg, why in found.items():
            self._refuse(reg, f"periodic verify: {why}")
        for reg in [r for r in self.failed if r not in found and r in report.registrants]:
            self._recovered(reg)
        return found

    def _recovered(self, reg: str) -> None:
        from ledger.services.alerts import raise_alerts

        failed_at, why = self.failed.pop(reg)
        self.log.unverified.pop(reg, None)  # first: the alert below is itself an append
        now = canon.format_time(self.clock())
        _log.warning("chain of %s verifies again; appends resumed (it failed at %s: %s)", reg, failed_at, why)
        try:
            raise_alerts(self.ledger, reg, [Candidate(
                alert_key=f"{ALERT_RULE}:{failed_at}", rule=ALERT_RULE, severity="critical", subjects=(),
                summary=(f"The chain failed verification at {failed_at} and appends were refused until it "
                         f"verified again at {now}: {why}"),
                parameters={}, evidence_seqs=(),
                figures={"failed_at": failed_at, "verified_again_at": now, "reason": why[:2000]},
            )], raised_by="chain_check")
        except Exception:  # the alert is lost, not the refusal's lifting; the log keeps the record
            _log.exception("could not record the chain_unverified alert of %s", reg)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.verify_once()
            except Exception:  # a database outage must not end the thread
                _log.exception("periodic verify could not run")

    def start(self) -> ChainGuard:
        """Start the periodic verify (no thread when the interval is 0)."""
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="csledger-chain-check", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def start_chain_checks(ledger: Ledger, settings: Any, *, say: Callable[[str], None] = print) -> ChainGuard:
    """For ``csledger serve``: run the start-up check (printing each refused registrant through
    ``say``), then start the periodic verify. Needs :func:`ledger.storage.log.attach` first."""
    path = getattr(settings, "pinned_keys_file", None)
    pinned = load_pinned_keys(path) if path else None
    guard = ChainGuard(ledger, ledger.transparency_log, pinned=pinned,  # type: ignore[attr-defined]
                       interval_seconds=60 * getattr(settings, "verify_interval_minutes", 0))
    for reg, why in guard.startup().items():
        say(f"{reg}: appends refused: {why}")
    ledger.chain_guard = guard  # type: ignore[attr-defined]
    return guard.start()
