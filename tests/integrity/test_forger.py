"""The forger holds the log's signing key: rewrites history, re-hashes, re-signs. The witness
(a separate process with its own key and state) refuses to cosign, and ``verify-bundle`` against
the witness's last cosigned checkpoint fails."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.integrity.checkpoints import Checkpoint, Signer, sign_checkpoint
from ledger.services.bundle import export_bundle, verify_bundle
from ledger.storage import log as tl
from ledger.storage.log import WitnessEntry, attach
from ledger.storage.store import Ledger, make_engine, migrate
from tests.conftest import DEA, Clinic
from tests.contract.test_ledger_contract import receipt
from tests.integrity.conftest import settings_for

CSLEDGER = [sys.executable, "-m", "api.cli"]


def cli(*args, check=True):
    p = subprocess.run(CSLEDGER + list(args), capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def witness_process(tmp_path):
    """``csledger witness serve`` in its own process, with its own folder."""
    wdir = tmp_path / "witness-compliance-officer"
    vkey = cli("witness", "init", "--dir", str(wdir), "--name", "compliance-officer.clinic.test").stdout.split()[0]
    port = free_port()
    proc = subprocess.Popen(CSLEDGER + ["witness", "serve", "--dir", str(wdir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    yield wdir, vkey, url
    proc.terminate()
    proc.wait(timeout=10)


def forge(real: Ledger, key_text: str, url: str, forged_url: str, witness_vkey: str, change_seq: int) -> Ledger:
    """Rewrite the real log into a new database: one entry altered, every later hash redone,
    one more entry appended, and the new history signed with the stolen log key."""
    with real.reading() as c:
        rows = [dict(r) for r in c.execute(sa.text("SELECT * FROM entries WHERE registrant = :r ORDER BY seq"),
                                           {"r": DEA}).mappings()]
        keyrow = tl.log_keys(c, DEA)[0]
    objs = [canon.decode(bytes(r["canonical"])) for r in rows]
    objs[change_seq]["invoice_number"] = "FORGED-" + objs[change_seq]["invoice_number"]
    objs.append(dict(objs[-1], seq=len(objs), invoice_number="FORGED-EXTRA"))
    engine = make_engine(forged_url)
    migrate(engine)
    tree = merkle.MemoryTree()
    prev = canon.ZERO_HASH
    with engine.begin() as c:
        for i, o in enumerate(objs):
            o["prev"] = prev
            data = canon.canonical_bytes(o)
            leaf = canon.leaf_hash(data)
            tree.append(leaf)
            src = rows[min(i, len(rows) - 1)]
            c.execute(sa.text("INSERT INTO entries (registrant, seq, kind, schema_version, occurred_at, recorded_at, "
                              "prev_hash, leaf_hash, canonical, command_id) VALUES (:r, :s, :k, :v, :o, :rec, :p, :l, :c, :cmd)"),
                      {"r": DEA, "s": i, "k": o["kind"], "v": o["schema_version"], "o": o["occurred_at"],
                       "rec": o["recorded_at"], "p": prev, "l": leaf.hex(), "c": data, "cmd": src["command_id"]})
            prev = leaf.hex()
        for (lv, idx), h in tree.nodes.items():
            c.execute(sa.text("INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES (:r, :l, :i, :h)"),
                      {"r": DEA, "l": lv, "i": idx, "h": h})
        signer = Signer.from_string(key_text)
        note = sign_checkpoint(Checkpoint(keyrow.origin, tree.size, tree.root()), signer).decode()
        c.execute(sa.text("INSERT INTO log_keys (registrant, generation, origin, verifier_key, first_size, created_at, reason) "
                          "VALUES (:r, 1, :o, :v, 1, '2026-01-01T00:00:00.000000Z', 'stolen')"),
                  {"r": DEA, "o": keyrow.origin, "v": keyrow.verifier_key})
        c.execute(sa.text("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                          "VALUES (:r, :s, :h, :n, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "s": tree.size, "h": tree.root().hex(), "n": note})
        c.execute(sa.text("INSERT INTO witness_policies (registrant, version, threshold, witnesses, set_at) "
                          "VALUES (:r, 1, 1, :w, '2026-01-01T00:00:00.000000Z')"),
                  {"r": DEA, "w": json.dumps([{"verifier_key": witness_vkey, "url": url}])})
    return Ledger(engine)


def test_forger_with_the_signing_key_is_caught_by_the_witness(tmp_path, witness_process):
    wdir, wvkey, url = witness_process
    engine = make_engine(f"sqlite:///{tmp_path / 'real.db'}")
    migrate(engine)
    real = Ledger(engine)
    log = attach(real, settings_for(tmp_path))
    clinic = Clinic(real)
    for i in range(3):
        services.receive_stock(real, clinic.nurse, receipt(clinic, invoice=f"INV-{i}"))
    with real.reading() as c:
        keyrow = tl.log_keys(c, DEA)[0]
        size = tl.latest_checkpoint(c, DEA).tree_size
    cli("witness", "add-log", "--dir", str(wdir), "--vkey", keyrow.verifier_key)
    log.set_witnesses(DEA, [WitnessEntry(wvkey, url)], threshold=1)
    assert all(r.ok for r in log.push(DEA))
    witnessed = tmp_path / "witnessed.checkpoint"
    witnessed.write_text(cli("witness", "latest", "--dir", str(wdir), "--origin", keyrow.origin).stdout)

    # The forger copies the key file and rewrites the receipt at seq `size - 2`.
    [key_file] = list((tmp_path / "keys").iterdir())
    forged = forge(real, key_file.read_text().strip(), url, f"sqlite:///{tmp_path / 'forged.db'}", wvkey, size - 2)

    # 1. The witness refuses to cosign the rewritten history, whatever old size is claimed.
    flog = tl.TransparencyLog(forged, tmp_path / "keys", origin_prefix="clinic.test")
    [r] = flog.push(DEA)
    assert not r.ok and "not consistent" in r.detail and DEA in flog.blocked
    with forged.reading() as c:
        fcp = tl.latest_checkpoint(c, DEA)
        for old in range(0, fcp.tree_size):
            proof = merkle.consistency_proof(old, fcp.tree_size, tl.memo_reader(c, DEA)) if old else []
            body = ("\n".join([f"old {old}"] + [base64.b64encode(h).decode() for h in proof]) + "\n\n" + fcp.note).encode()
            req = urllib.request.Request(url + "/add-checkpoint", data=body, method="POST")
            try:
                status = urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status in (409, 422), (old, status)
    state = json.loads((wdir / "state.json").read_text())
    assert state["logs"][keyrow.origin]["size"] == size  # the witness's state did not move

    # 2. The forged bundle is well signed by the real key (the signature alone proves nothing)...
    buf = io.BytesIO()
    with forged.reading() as c:
        export_bundle(c, DEA, buf)
    (tmp_path / "forged.bundle").write_bytes(buf.getvalue())
    assert verify_bundle(io.BytesIO(buf.getvalue()), trusted_log_keys=[keyrow.verifier_key], trusted_witness_keys=[],
                         threshold=0).ok
    # ...but held against the witness's last cosigned checkpoint it fails, and says why.
    p = cli("verify-bundle", str(tmp_path / "forged.bundle"), "--log-key", keyrow.verifier_key,
            "--witness-key", wvkey, "--threshold", "0", "--checkpoint", str(witnessed), check=False)
    assert p.returncode == 1 and "history was rewritten" in p.stderr, p.stderr
    # and it carries no cosignature, so a 1-of-1 witness policy fails too
    p = cli("verify-bundle", str(tmp_path / "forged.bundle"), "--log-key", keyrow.verifier_key,
            "--witness-key", wvkey, "--threshold", "1", check=False)
    assert p.returncode == 1 and "witnessed by 0 of the 1" in p.stderr

    # The real log's bundle passes the same checks.
    buf = io.BytesIO()
    with real.reading() as c:
        export_bundle(c, DEA, buf)
    (tmp_path / "real.bundle").write_bytes(buf.getvalue())
    p = cli("verify-bundle", str(tmp_path / "real.bundle"), "--log-key", keyrow.verifier_key,
            "--witness-key", wvkey, "--threshold", "1", "--checkpoint", str(witnessed))
    assert "bundle OK" in p.stdout and "witnessed by 1 of 1" in p.stdout
    real.dispose()
    forged.dispose()
    assert os.stat(key_file).st_mode & 0o077 == 0
