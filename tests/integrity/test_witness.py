"""The witness program (C2SP tlog-witness) and the log's side: push, cosignatures, rollback."""

from __future__ import annotations

import base64
import shutil

import pytest
from fastapi.testclient import TestClient

from ledger import services
from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    Checkpoint,
    Signer,
    Verifier,
    open_checkpoint,
    sign_checkpoint,
)
from ledger.storage import log as tl
from ledger.storage.log import RollbackDetected, WitnessEntry, attach
from ledger.storage.store import Ledger, make_engine
from tests.conftest import DEA
from tests.contract.test_ledger_contract import receipt
from tests.integrity.conftest import settings_for
from witness.server import Witness, serve_in_thread

ORIGIN = "log.test/AB1234563/0011223344556677"


@pytest.fixture
def log_signer():
    return Signer.generate(ORIGIN)


@pytest.fixture
def witness(tmp_path, log_signer):
    w = Witness.init(tmp_path / "w1", "witness-one.test")
    w.add_log(log_signer.verifier().to_string())
    return w


def request(old: int, proof: list[bytes], note: bytes) -> bytes:
    return ("\n".join([f"old {old}"] + [base64.b64encode(h).decode() for h in proof]) + "\n\n").encode() + note


def signed(signer, tree: merkle.MemoryTree, size: int) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), signer)


def leaves(n, salt=b""):
    return [merkle.leaf_hash(salt + b"entry %d" % i) for i in range(n)]


# --- the witness alone ---------------------------------------------------------------------------


def test_cosigns_a_consistent_history_and_persists_it(witness, log_signer, tmp_path):
    tree = merkle.MemoryTree(leaves(10))
    a = witness.add_checkpoint(request(0, [], signed(log_signer, tree, 4)), now=1700000000)
    assert a.status == 200
    line = a.body.decode()
    from ledger.integrity.checkpoints import verify_cosignature

    assert verify_cosignature(Checkpoint(ORIGIN, 4, tree.root(4)), line, witness.verifier) == 1700000000
    b = witness.add_checkpoint(request(4, tree.consistency_proof(4, 10), signed(log_signer, tree, 10)))
    assert b.status == 200
    again = Witness(tmp_path / "w1")  # a restarted witness process reads the same state
    assert again.state()["logs"][ORIGIN]["size"] == 10
    body, opened = open_checkpoint(again.latest(ORIGIN), [log_signer.verifier(), witness.verifier])
    assert body.size == 10 and len(opened.signatures) == 2


def test_refusals(witness, log_signer):
    tree = merkle.MemoryTree(leaves(10))
    assert witness.add_checkpoint(request(0, [], signed(log_signer, tree, 4))).status == 200
    # wrong old size: 409 with the witness's size
    a = witness.add_checkpoint(request(2, tree.consistency_proof(2, 10), signed(log_signer, tree, 10)))
    assert (a.status, a.content_type, a.body) == (409, "text/x.tlog.size", b"4\n")
    # bad proof: 422
    bad = tree.consistency_proof(4, 10)
    bad[0] = bytes(32)
    assert witness.add_checkpoint(request(4, bad, signed(log_signer, tree, 10))).status == 422
    # old > size: 400
    assert witness.add_checkpoint(request(4, [], signed(log_signer, tree, 3))).status in (400, 409)
    # a fork at the same size: 409
    forked = merkle.MemoryTree(leaves(4, b"forged "))
    assert witness.add_checkpoint(request(4, [], signed(log_signer, forked, 4))).status == 409
    # unknown origin 404, untrusted signer 403
    other = Signer.generate("elsewhere.test/log")
    assert witness.add_checkpoint(request(0, [], sign_checkpoint(Checkpoint("elsewhere.test/log", 1, bytes(32)), other))).status == 404
    rogue = Signer.generate(ORIGIN)
    assert witness.add_checkpoint(request(4, tree.consistency_proof(4, 10), signed(rogue, tree, 10))).status == 403
    # state unchanged by every refusal
    assert witness.state()["logs"][ORIGIN]["size"] == 4


@pytest.mark.parametrize("body", [b"", b"old 1", b"old x\n\nfoo\n", b"old 01\n\n", b"\xff\xfe\n\n",
                                  b"old 0\nnot-base64!\n\nx\n\n", b"old 0\n\nnot a note",
                                  b"old 99999999999999999999\n\nx\n"])
def test_malformed_requests_are_400_and_change_nothing(witness, body):
    a = witness.add_checkpoint(body)
    assert a.status == 400
    assert witness.state()["logs"][ORIGIN]["size"] == 0


# --- the log pushing to witnesses ----------------------------------------------------------------


@pytest.fixture
def two_witnesses(tmp_path):
    ws, servers = [], []
    for i in (1, 2):
        w = Witness.init(tmp_path / f"wit{i}", f"witness-{i}.test")
        server, url = serve_in_thread(w)
        ws.append((w, url))
        servers.append(server)
    yield ws
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_push_collects_threshold_cosignatures_served_with_the_checkpoint(signed_clinic, tlog, two_witnesses, tmp_path):
    lg = signed_clinic.ledger
    with lg.reading() as c:
        vkey = tl.log_keys(c, DEA)[0].verifier_key
    for w, _ in two_witnesses:
        w.add_log(vkey)
    tlog.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url) for w, url in two_witnesses], threshold=2)
    assert all(r.ok for r in tlog.push(DEA))
    for i in range(3):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic, invoice=f"I{i}"))
        assert all(r.ok for r in tlog.push(DEA)), tlog.push(DEA)
    from api.http.app import create_app
    from ledger.settings import Settings

    with TestClient(create_app(lg, Settings(database_url="sqlite:///x.db", key_dir=tmp_path / "keys"))) as client:
        r = client.get(f"/v1/registrants/{DEA}/checkpoint")
    assert r.headers["csledger-witnessed"] == "2/2"
    vs = [Verifier.from_string(vkey)] + [w.verifier for w, _ in two_witnesses]
    body, opened = open_checkpoint(r.text, vs)
    assert len(opened.signatures) == 3 and all(s.verified for s in opened.signatures)


def test_a_witness_being_down_does_not_break_appends(signed_clinic, tlog, tmp_path):
    dead = Witness.init(tmp_path / "dead", "dead.test")
    tlog.set_witnesses(DEA, [WitnessEntry(dead.verifier.to_string(), "http://127.0.0.1:9")], threshold=1)
    [r] = tlog.push(DEA)
    assert not r.ok and DEA not in tlog.blocked
    services.receive_stock(signed_clinic.ledger, signed_clinic.nurse, receipt(signed_clinic))


def test_invalid_witness_policies_are_refused(signed_clinic, tlog):
    from ledger.domain.errors import InvalidInput

    w = Signer.generate("w.test", 0x04).verifier().to_string()
    logkey = Signer.generate("w.test").verifier().to_string()
    for ws, t in [([WitnessEntry(w, "http://x")], 2), ([WitnessEntry(w, "http://x")], 0),
                  ([WitnessEntry(logkey, "http://x")], 1), ([WitnessEntry(w, "ftp://x")], 1),
                  ([WitnessEntry("garbage", "http://x")], 1), ([WitnessEntry(w, "http://x")] * 2, 1)]:
        with pytest.raises(InvalidInput):
            tlog.set_witnesses(DEA, ws, t)


def test_restored_old_backup_is_detected_and_appends_are_refused(tmp_path, two_witnesses):
    from ledger.storage.store import migrate
    from tests.conftest import Clinic

    db = tmp_path / "clinic.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    lg = Ledger(engine)
    log = attach(lg, settings_for(tmp_path))
    clinic = Clinic(lg)
    (w, url), _ = two_witnesses
    with lg.reading() as c:
        w.add_log(tl.log_keys(c, DEA)[0].verifier_key)
    log.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
    services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="A"))
    assert all(r.ok for r in log.push(DEA))
    lg.dispose()
    shutil.copy(db, tmp_path / "backup.db")  # last night's backup
    for f in ("-wal", "-shm"):
        if (tmp_path / f"clinic.db{f}").exists():
            shutil.copy(tmp_path / f"clinic.db{f}", tmp_path / f"backup.db{f}")
    lg = Ledger(make_engine(f"sqlite:///{db}"))
    log = attach(lg, settings_for(tmp_path))
    services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="B"))
    services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="C"))
    assert all(r.ok for r in log.push(DEA))  # the witness has now seen today's entries
    lg.dispose()

    # The server restarts on the restored backup: the witness is ahead, appends are refused.
    old = Ledger(make_engine(f"sqlite:///{tmp_path / 'backup.db'}"))
    log = attach(old, settings_for(tmp_path))
    results = log.check_rollback()
    assert DEA in log.blocked and "restored" in log.blocked[DEA], results
    clinic.ledger = old
    with pytest.raises(RollbackDetected):
        services.receive_stock(old, clinic.nurse, receipt(clinic, invoice="D"))
    old.dispose()

    # On the right database the same check passes and appends go on.
    lg = Ledger(make_engine(f"sqlite:///{db}"))
    log = attach(lg, settings_for(tmp_path))
    log.check_rollback()
    assert log.blocked == {}
    services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="D"))
    lg.dispose()


@pytest.mark.parametrize("commit_lag", [0.0, 0.6])
def test_background_pusher_cosigns_new_checkpoints(signed_clinic, tlog, two_witnesses, commit_lag):
    """``commit_lag``: the commit lands that long after the pusher is told (a loaded machine);
    the pusher once pushed the previous checkpoint after its 0.2 s delay and never the new one."""
    import time

    lg = signed_clinic.ledger
    (w, url), _ = two_witnesses
    with lg.reading() as c:
        w.add_log(tl.log_keys(c, DEA)[0].verifier_key)
    tlog.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
    pusher = tlog.start_pusher()
    lg.before_commit.append(lambda ctx: time.sleep(commit_lag))  # after the pusher's hook
    try:
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic, invoice="BG-1"))
        with lg.reading() as c:
            size = tl.latest_checkpoint(c, DEA).tree_size
        deadline = time.time() + 10
        while time.time() < deadline:
            with lg.reading() as c:
                if tl.cosignature_lines(c, DEA, size):
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the pusher did not collect a cosignature")
    finally:
        pusher.stop()
    assert w.state()["logs"][next(iter(w.state()["logs"]))]["size"] == size
