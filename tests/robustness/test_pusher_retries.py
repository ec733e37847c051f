"""The witness pusher (``ledger/storage/witness_pusher.py``, the thread ``csledger serve``
starts) gets each new checkpoint cosigned by itself, through a witness that is down for a while
and through a database blip: nothing here pushes by hand, and nothing is appended after the
command whose checkpoint must be cosigned (an append would notify the pusher again).

- The witness is down when the command commits, and comes back (same URL) a moment later.
- The database goes away while the pusher is about to push, and comes back: PostgreSQL, a
  cluster of the test's own stopped and started; SQLite, the file made unreadable (see
  ``tests/robustness/test_outage_database.py`` for how).

Marked ``slow`` (about a minute: the failing case waits out its deadline); ``.ci/run`` runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.loadtest import free_port
from ledger import services
from ledger.storage import log as tl
from ledger.storage.log import TransparencyLog, WitnessEntry, attach
from ledger.storage.store import Ledger, make_engine, migrate
from tests.conftest import BACKENDS, Clinic, fresh_database_url
from tests.contract.test_ledger_contract import receipt
from tests.robustness.test_outage_database import _own_cluster
from witness.server import Witness, serve_in_thread

# serial: a database stopped within the pusher's 3 s delay and a 15 s cosigning deadline, so
# .ci/run runs these alone on the cores (its second pass)
pytestmark = [pytest.mark.slow, pytest.mark.serial]

#: Long enough for the pusher's back-off (at most 5 s between tries) to come round twice.
COSIGN_WITHIN = 15.0


class Setup(SimpleNamespace):
    ledger: Ledger
    log: TransparencyLog
    clinic: Clinic
    witness: Witness
    port: int


def set_up(url: str, tmp_path: Path) -> Setup:
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    log = attach(ledger, SimpleNamespace(key_dir=tmp_path / "keys", origin_prefix="pusher.test", log_keys=""))
    clinic = Clinic(ledger)
    witness = Witness.init(tmp_path / "witness", "witness.pusher.test")
    with ledger.reading() as c:
        witness.add_log(tl.log_keys(c, clinic.dea)[0].verifier_key)
    port = free_port()
    log.set_witnesses(clinic.dea, [WitnessEntry(witness.verifier.to_string(), f"http://127.0.0.1:{port}")], threshold=1)
    return Setup(ledger=ledger, log=log, clinic=clinic, witness=witness, port=port)


def latest_size(s: Setup) -> int:
    with s.ledger.reading() as c:
        return tl.latest_checkpoint(c, s.clinic.dea).tree_size


def wait_for_cosignature(s: Setup, size: int, within: float) -> float | None:
    """Seconds until the ledger holds a cosignature of the checkpoint at ``size``, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        try:
            with s.ledger.reading() as c:
                if tl.cosignature_lines(c, s.clinic.dea, size):
                    return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the database may still be coming back
            pass
        time.sleep(0.1)
    return None


@pytest.fixture
def serving():
    servers = []

    def start(s: Setup):
        server, _ = serve_in_thread(s.witness, port=s.port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path) -> Iterator[str]:
    yield from fresh_database_url(request.param, tmp_path)


def test_pusher_retries_until_a_witness_that_was_down_cosigns(db, tmp_path, serving):
    """The witness is down when the command commits, then comes back: the pusher must cosign the
    checkpoint on its own. Written while the pusher still ignored a push answered ``ok=False``
    (it retried only when ``push`` raised): then this failed on both backends; it passes since
    ``WitnessPusher._run`` treats a push with a refused witness as a failure to retry."""
    s = set_up(db, tmp_path)
    pusher = s.log.start_pusher()
    try:
        services.receive_stock(s.ledger, s.clinic.nurse, receipt(s.clinic, invoice="WITNESS-DOWN"))
        size = latest_size(s)
        time.sleep(1.0)  # the pusher tries (0.2 s after the commit) and finds nobody there
        with s.ledger.reading() as c:
            assert not tl.cosignature_lines(c, s.clinic.dea, size)
        serving(s)  # the witness is back, at the same URL
        took = wait_for_cosignature(s, size, COSIGN_WITHIN)
    finally:
        pusher.stop()
        s.ledger.dispose()
    assert took is not None, f"checkpoint {size} not cosigned {COSIGN_WITHIN:.0f} s after the witness came back"
    assert s.witness.state()["logs"][next(iter(s.witness.state()["logs"]))]["size"] == size


@pytest.mark.parametrize("backend", BACKENDS)
def test_pusher_retries_through_a_database_blip(backend, tmp_path, serving, caplog):
    """Deliberate break tried (reverted at once): ``WitnessPusher._run`` dropping a registrant
    whose push raised (``again[reg], failed = size, True`` replaced by ``failed = True``): the
    warning was logged but the checkpoint was never cosigned; failed on both backends ("checkpoint
    N not cosigned 15 s after the database came back")."""
    caplog.set_level(logging.WARNING, logger="csledger.log")
    if backend == "postgresql":
        cluster = _own_cluster()
        url = cluster.create_database("pusher")

        def down() -> None:
            cluster.stop()

        def up() -> None:
            cluster.start()
    else:
        cluster = None
        path = tmp_path / "ledger.db"
        url = f"sqlite:///{path}"
        aside = tmp_path / "aside"
        aside.mkdir()

        def down() -> None:
            s.ledger.engine.dispose()
            for f in tmp_path.glob("ledger.db*"):
                f.rename(aside / f.name)
            path.mkdir()

        def up() -> None:
            path.rmdir()
            for f in aside.iterdir():
                f.rename(tmp_path / f.name)

    try:
        s = set_up(url, tmp_path)
        serving(s)  # the witness is up all along
        pusher = s.log.start_pusher()
        pusher.delay = 3.0  # time to take the database away between the commit and the push
        try:
            services.receive_stock(s.ledger, s.clinic.nurse, receipt(s.clinic, invoice="DB-BLIP"))
            size = latest_size(s)
            t0 = time.monotonic()
            down()
            assert time.monotonic() - t0 < pusher.delay, "the database went away too late to catch the push"
            deadline = time.monotonic() + 20
            while not any("witness push for" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the pusher never met the outage"
                time.sleep(0.1)
            up()
            took = wait_for_cosignature(s, size, COSIGN_WITHIN)
        finally:
            pusher.stop()
            s.ledger.dispose()
        assert took is not None, f"checkpoint {size} not cosigned {COSIGN_WITHIN:.0f} s after the database came back"
        assert s.witness.state()["logs"][next(iter(s.witness.state()["logs"]))]["size"] == size
        print(f"\n{backend}: cosigned {took:.1f} s after the database came back")
    finally:
        if cluster is not None:
            cluster.remove()
