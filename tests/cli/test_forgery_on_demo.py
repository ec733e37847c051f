"""Issue 17's forgery, as the issue performed it: on a copy of a demo database, someone holding
the server's log key file appends a Form 41 destruction of two sealed vials "performed by Pia,
witnessed by Nora and Ned" and signs the new checkpoint with that key. Before staff signatures
every checker accepted it; now each refuses it, naming the entry and the person: ``verify``,
``verify --deep``, ``verify --pinned-keys`` (log keys and the staff root pinned) and
``verify-bundle`` of an exported bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa

from ledger.integrity import canonical as canon
from ledger.storage.log import attach
from ledger.storage.store import Ledger
from tests.cli.test_cli import CSLEDGER
from tests.integrity.test_staff_signatures_verify import RawEvent

DEA = "AB1234563"


def run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(cwd / "keys")}
    for var in ("CSLEDGER_PINNED_KEYS_FILE", "CSLEDGER_PATIENT_KEY", "CSLEDGER_DATABASE_URL"):
        env.pop(var, None)
    return subprocess.run(CSLEDGER + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)


def entries(ledger: Ledger) -> list[dict]:
    with ledger.reading() as c:
        return [canon.decode(bytes(b)) for b in c.execute(sa.text(
            "SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq"), {"r": DEA}).scalars()]


def test_the_issues_forgery_with_the_real_log_key_fails_every_checker(tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    p = run(["demo", "--db", f"sqlite:///{made / 'demo.db'}"], made)
    assert p.returncode == 0, p.stdout + p.stderr
    pinned = run(["keys", "show", "--registrant", DEA, "--db", f"sqlite:///{made / 'demo.db'}"], made)
    assert pinned.returncode == 0 and "staff-root" in pinned.stdout, pinned.stdout + pinned.stderr
    # The attacker's copy: the database and the server's key folder (the log key file).
    work = tmp_path / "copy"
    shutil.copytree(made, work)
    (work / "pinned.txt").write_text(pinned.stdout)
    db = f"sqlite:///{work / 'demo.db'}"
    ledger = Ledger.open(db)
    try:
        attach(ledger, SimpleNamespace(key_dir=work / "keys", origin_prefix="clinic.test", log_keys=""))
        es = entries(ledger)
        staff = {e["username"]: (e["staff_id"], e["printed_name"]) for e in es if e["kind"] == "staff_enrolled"}
        real = next(e for e in reversed(es) if e["kind"] == "stock_destroyed")
        with ledger.reading() as c:
            sealed = [r[0] for r in c.execute(sa.text(
                "SELECT vial_id FROM vials WHERE registrant = :r AND state = 'sealed' ORDER BY vial_id LIMIT 2"),
                {"r": DEA})]
        assert len(sealed) == 2
        body = {k: v for k, v in real.items() if k not in ("seq", "prev", "recorded_at", "occurred_at", "signatures")}
        body["items"] = [dict(real["items"][0], vial_id=v) for v in sealed]

        def sig(user: str, meaning: str) -> dict:
            sid, name = staff[user]
            return {"staff_id": sid, "printed_name": name, "meaning": meaning, "auth_method": "password",
                    "signed_at": canon.format_time(ledger.clock())}

        out = {}

        def build(ctx):
            out["seq"] = ctx.append(RawEvent("stock_destroyed", body), occurred_at=ctx.now, signatures=[
                sig("pia", "performed"), sig("nora", "witnessed"), sig("ned", "witnessed")]).seq
            return {}

        ledger.execute(DEA, "forged_by_hand", {}, build, principal_id=None)  # checkpoint signed with the log key
    finally:
        ledger.dispose()
    seq, pia = out["seq"], f"{staff['pia'][0]} (Pia Pharmacist)"
    for args in (["verify"], ["verify", "--deep"], ["verify", "--pinned-keys", work / "pinned.txt"]):
        p = run([*args, "--registrant", DEA, "--db", db], work)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert f"{DEA} seq {seq}: stock_destroyed in the name of {pia}" in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr
    bundle = work / "clinic.bundle"
    p = run(["export", "--registrant", DEA, "--out", bundle, "--db", db], work)
    assert p.returncode == 0, p.stdout + p.stderr
    root = next(line.split()[-1] for line in pinned.stdout.splitlines() if line.startswith("staff-root"))
    p = run(["verify-bundle", bundle, "--staff-root", root], work)
    assert p.returncode == 1 and f"(seq {seq})" in p.stderr and "Pia Pharmacist" in p.stderr, p.stdout + p.stderr
    # The same checkers pass on the untouched demo: the refusals are the forgery's doing.
    p = run(["verify", "--registrant", DEA, "--pinned-keys", work / "pinned.txt", "--db", f"sqlite:///{made / 'demo.db'}"],
            made)
    assert p.returncode == 0, p.stdout + p.stderr
