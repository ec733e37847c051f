"""The background thread that pushes new checkpoints to the witnesses after commits (never
inside the append transaction, which would hold the registrant's lock across HTTP calls).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ledger.storage.checkpoint_store import latest_checkpoint
from ledger.storage.store import (
    CommandContext,
)

if TYPE_CHECKING:  # an annotation only: the log starts the pusher
    from ledger.storage.log import TransparencyLog

_log = logging.getLogger("csledger.log")


class _NotCosigned(Exception):
    """A push reached the pusher's end without every witness cosigning (one was down, or refused)."""


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
        self._failures: dict[str, int] = {}  # registrant -> failed pushes in a row (the back-off)
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

    #: Once per group commit (``Ledger.execute``), with its last command: one checkpoint per commit.
    notify.once_per_commit = True  # type: ignore[attr-defined]

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
                        # push() catches a witness being down and answers ok=False: that is a
                        # failure to retry too, or the checkpoint would wait for the next append.
                        refused = [r for r in self.log.push(reg) if not r.ok]
                        if refused:
                            raise _NotCosigned("; ".join(f"{r.witness}: {r.detail}" for r in refused))
                        self._pushed[reg] = committed
                        self._failures.pop(reg, None)
                    if behind:
                        self._rounds[reg] = self._rounds.get(reg, 0) + 1
                        again[reg] = size
                    else:
                        self._rounds.pop(reg, None)
                except Exception as exc:  # noqa: BLE001 - the thread must outlive a database outage
                    # The database restarting, or a witness being down, must not end witnessing
                    # for the rest of the server's life: keep the registrant dirty and try again
                    # after a pause that doubles with each failure in a row (at most 5 s).
                    self._failures[reg] = self._failures.get(reg, 0) + 1
                    detail = str(exc) if isinstance(exc, _NotCosigned) else type(exc).__name__
                    _log.warning("witness push for %s failed (%s); retrying", reg, detail[:300])
                    again[reg], failed = size, True
            if again:
                with self._cv:
                    for reg, size in again.items():
                        self._dirty[reg] = max(size, self._dirty.get(reg, 0))
                    if failed:
                        streak = max((self._failures.get(reg, 0) for reg in again), default=1)
                        self._cv.wait(timeout=min(5.0, 10 * self.delay * 2 ** min(streak - 1, 8)))
