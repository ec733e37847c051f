"""Log keys, checkpoints signed in the append transaction, rotation, and ``verify``."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.errors import IntegrityFailure, InvalidInput, NotFound
from ledger.integrity import merkle
from ledger.integrity.checkpoints import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.services.verify import verify
from ledger.storage import log as tl
from ledger.storage.store import node_reader, tree_size
from tests.conftest import DEA, Clinic
from tests.contract.test_ledger_contract import receipt

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


def test_init_creates_a_private_key_file_and_signs_every_command(signed_clinic, tlog, tmp_path):
    lg = signed_clinic.ledger
    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        log_id = tl.registrant_log_id(c, DEA)
        size = tree_size(c, DEA)
        sizes = [r[0] for r in c.execute(sa.text("SELECT tree_size FROM checkpoints WHERE registrant = :r "
                                                 "ORDER BY tree_size"), {"r": DEA})]
        cp = tl.latest_checkpoint(c, DEA)
        root = merkle.root(size, node_reader(c, DEA))
    assert len(keys) == 1 and keys[0].origin == f"clinic.test/{DEA}/{log_id}"
    path = tmp_path / "keys" / f"{DEA}-{log_id}.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("PRIVATE+KEY+clinic.test/")
    # one checkpoint per command (registration writes 3 entries), the last at the tree size
    assert sizes[0] == 3 and sizes[-1] == size and sizes == sorted(set(sizes))
    body, opened = open_checkpoint(cp.note, [keys[0].verifier])
    assert (body.origin, body.size, body.root) == (keys[0].origin, size, root)
    assert opened.signatures[0].name == keys[0].origin  # the key's name is the origin
    # the private key is nowhere in the database
    with lg.reading() as c:
        for table in ("log_keys", "checkpoints"):
            for row in c.execute(sa.text(f"SELECT * FROM {table}")):
                assert "PRIVATE" not in " ".join(str(v) for v in row)


def test_checkpoint_is_in_the_same_transaction(signed_clinic, tlog):
    lg = signed_clinic.ledger

    def boom(ctx):
        raise InvalidInput("late failure")

    lg.before_commit.append(boom)
    with pytest.raises(InvalidInput):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    lg.before_commit.remove(boom)
    with lg.reading() as c:
        assert tl.latest_checkpoint(c, DEA).tree_size == tree_size(c, DEA)


def test_refuses_to_sign_a_tree_inconsistent_with_the_last_checkpoint(signed_clinic, tlog):
    lg = signed_clinic.ledger
    # Someone with SQL access forges a "last checkpoint" of a different tree (validly signed,
    # as if the key had signed a fork): the next append must refuse rather than sign past it.
    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        size = tree_size(c, DEA)
    signer = tlog.keys.load(DEA, keys[0].origin.rsplit("/", 1)[1], keys[0].origin)
    fake_root = bytes(32)
    note = sign_checkpoint(Checkpoint(keys[0].origin, size + 1, fake_root), signer).decode()
    with lg.engine.begin() as c:
        c.execute(sa.text("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                          "VALUES (:r, :s, :h, :n, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "s": size + 1, "h": fake_root.hex(), "n": note})
    tlog._verified.clear()
    with pytest.raises(IntegrityFailure, match="not consistent|not below"):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    with pytest.raises(IntegrityFailure):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic, invoice="X2"))
    with lg.reading() as c:
        assert tree_size(c, DEA) == size  # nothing was appended


def test_rotation_keeps_retired_keys_and_old_checkpoints_verify(signed_clinic, tlog):
    lg = signed_clinic.ledger
    with lg.reading() as c:
        before = tl.latest_checkpoint(c, DEA)
    new, old = tlog.rotate(DEA, reason="scheduled yearly rotation")
    assert old is not None and new.generation == old.generation + 1 and new.verifier_key != old.verifier_key
    services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        after = tl.latest_checkpoint(c, DEA)
        old_cp = tl.checkpoint_at(c, DEA, before.tree_size)
    assert [k.generation for k in keys] == [2, 1]
    _, o = open_checkpoint(after.note, [k.verifier for k in keys])
    assert o.signatures[0].key_id == keys[0].verifier.key_id
    _, o = open_checkpoint(old_cp.note, [k.verifier for k in keys])
    assert o.signatures[0].key_id == keys[1].verifier.key_id
    assert verify(lg).ok


def test_rotation_needs_a_reason_and_a_registrant(signed_clinic, tlog):
    with pytest.raises(InvalidInput):
        tlog.rotate(DEA, reason=" ")
    with pytest.raises(NotFound, match="no registrant"):
        tlog.rotate("FB7654329", reason="x")


def test_missing_key_file_refuses_appends_until_rotation(signed_clinic, tlog, tmp_path):
    lg = signed_clinic.ledger
    for f in (tmp_path / "keys").iterdir():
        f.unlink()
    tlog._signers.clear()  # as after a restart: a running server keeps the key it loaded
    with pytest.raises(tl.LogKeyError, match="missing"):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    tlog.rotate(DEA, reason="key file lost")
    services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    assert verify(lg).ok


def test_verify_checks_the_latest_checkpoint(signed_clinic, tlog):
    lg = signed_clinic.ledger
    rep = verify(lg)
    assert rep.ok and DEA in rep.checkpoints
    # A forged checkpoint row (signed by an unknown key) at a larger size: verify fails.
    from ledger.integrity.checkpoints import Signer

    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        size = tree_size(c, DEA)
        root = merkle.root(size, node_reader(c, DEA))
    rogue = Signer.generate(keys[0].origin)
    note = sign_checkpoint(Checkpoint(keys[0].origin, size, root), rogue).decode()
    services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))  # size + 1 now checkpointed
    with lg.engine.begin() as c:
        c.execute(sa.text("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                          "VALUES (:r, :s, :h, :n, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "s": size + 5, "h": root.hex(), "n": note})
    rep = verify(lg)
    assert not rep.ok and "does not verify" in str(rep.problems[0])


def test_verify_fails_when_checkpoint_root_differs(signed_clinic, tlog):
    lg = signed_clinic.ledger
    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        size = tree_size(c, DEA)
    signer = tlog.keys.load(DEA, keys[0].origin.rsplit("/", 1)[1], keys[0].origin)
    # The real key signs a wrong root at a size the log has not reached: verify says so.
    note = sign_checkpoint(Checkpoint(keys[0].origin, size, bytes(32)), signer).decode()
    services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    with lg.engine.begin() as c:
        c.execute(sa.text("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                          "VALUES (:r, :s, :h, :n, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "s": size + 1000, "h": "00" * 32, "n": note})
    rep = verify(lg)
    assert not rep.ok and "claims size" in str(rep.problems[0])


def test_key_from_environment_is_used_instead_of_a_file(ledger, tmp_path):
    from types import SimpleNamespace

    from ledger.integrity.checkpoints import Signer

    # The registrant's log id is only known at registration, so register with a file key first,
    # then run with the file gone and the key given through CSLEDGER_LOG_KEYS instead.
    log = tl.attach(ledger, SimpleNamespace(key_dir=tmp_path / "k1", origin_prefix="env.test", log_keys=""))
    clinic = Clinic(ledger)
    [f] = list((tmp_path / "k1").iterdir())
    text = f.read_text().strip()
    f.unlink()
    ledger.before_commit.remove(log.sign_checkpoint)
    log2 = tl.attach(ledger, SimpleNamespace(key_dir=tmp_path / "k2", origin_prefix="env.test", log_keys=text))
    services.receive_stock(ledger, clinic.nurse, receipt(clinic))
    assert not (tmp_path / "k2").exists()
    assert Signer.from_string(text).name.startswith("env.test/")
    assert verify(ledger).ok and log2.blocked == {}


def test_verify_deep_checks_every_checkpoint_and_the_key_in_force(signed_clinic, tlog):
    from ledger.integrity.checkpoints import Signer

    lg = signed_clinic.ledger
    tlog.rotate(DEA, reason="scheduled")
    services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic))
    assert verify(lg, deep=True).ok
    # Registration wrote 3 entries in one command, so no checkpoint exists at size 2. One is
    # slipped in, signed by a key that is not the one in force: only the deep pass looks there.
    with lg.reading() as c:
        keys = tl.log_keys(c, DEA)
        root2 = merkle.root(2, node_reader(c, DEA))
    rogue = Signer.generate(keys[0].origin)
    note = sign_checkpoint(Checkpoint(keys[0].origin, 2, root2), rogue).decode()
    with lg.engine.begin() as c:
        c.execute(sa.text("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                          "VALUES (:r, 2, :h, :n, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "h": root2.hex(), "n": note})
    assert verify(lg).ok
    rep = verify(lg, deep=True)
    assert not rep.ok and "checkpoint at size 2" in str(rep.problems[0])
