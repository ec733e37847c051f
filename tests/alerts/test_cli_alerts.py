"""``csledger alerts`` as a subprocess: list, resolve (authenticated; refused for a nurse with
nothing written), the alert PDF and ``verify-report`` on it, scan, and ``verify --deep``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pypdf import PdfReader

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock, TakeInventory
from ledger.services.alerts import attach_alert_rules
from ledger.storage.store import Ledger, make_engine, migrate
from tests.alerts.conftest import AlertClinic
from tests.cli.test_cli import run
from tests.conftest import KETAMINE_50, entry_count

PASSWORD = "Lantern-Harbor-Quietly-42"


def test_cli_list_resolve_report_scan(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    attach_alert_rules(ledger)
    clinic = AlertClinic(ledger)
    now = datetime.now(UTC)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory("initial", "opening_of_business",
                                                                     now - timedelta(hours=5)), witness=clinic.nurse)
    res = services.receive_stock(ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "INV-77", now - timedelta(days=3), (ReceivedLineInput(KETAMINE_50, 2, "L1", "2028-01-31"),),
        late_reason="typed from the paper log after the outage"))
    receipt_seq = res["entries"][0]["seq"]
    env = {"CSLEDGER_DATABASE_URL": url}
    dea = clinic.dea

    p = run(["alerts", "list", "--dea", dea, "--json"], tmp_path, env)
    [alert] = [json.loads(line) for line in p.stdout.splitlines()]
    assert alert["rule"] == "late_entry" and alert["evidence_seqs"] == [receipt_seq]
    aid = alert["alert_id"]

    for user in ("nora", "cole"):
        _set_password(tmp_path, env, dea, user)
    before = entry_count(ledger)
    p = _resolve(tmp_path, env, dea, aid, "nora", check=False)
    assert p.returncode == 2 and "roles" in p.stderr
    assert entry_count(ledger) == before

    p = _resolve(tmp_path, env, dea, aid, "cole")
    assert f"{aid} resolved by Cole Compliance" in p.stdout
    p = run(["alerts", "list", "--dea", dea, "--status", "resolved", "--json"], tmp_path, env)
    [done] = [json.loads(line) for line in p.stdout.splitlines()]
    assert done["resolved_category"] == "documentation_error" and done["resolved_by"] == clinic.compliance.staff_id
    assert "no open alerts" in run(["alerts", "list", "--dea", dea], tmp_path, env).stdout

    day = now.astimezone().date()
    pdf = tmp_path / "alerts.pdf"
    from ledger.services.report_key import certify_report_key

    # Reports are signed (issue 18): the report key, in the CLI's default key folder here.
    certify_report_key(ledger, clinic.admin, tmp_path / "csledger-keys")
    run(["alerts", "report", "--dea", dea, "--from", (day - timedelta(days=7)).isoformat(), "--to",
         (day + timedelta(days=1)).isoformat(), "--out", str(pdf)], tmp_path, env)
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert aid in text and "late_entry" in text and "Cole Compliance" in text
    run(["verify-report", str(pdf)], tmp_path, env)  # exits 0: every figure and page recomputed

    p = run(["alerts", "scan", "--dea", dea, "--no-notify"], tmp_path, env)
    assert f"{dea}: 0 new alert(s)" in p.stdout
    assert "OK" in run(["verify", "--deep"], tmp_path, env).stdout
    ledger.dispose()


def _set_password(cwd, env, dea, user):
    import os
    import subprocess

    from tests.cli.test_cli import CSLEDGER

    p = subprocess.run(CSLEDGER + ["staff", "set-password", "--dea", dea, "--username", user, "--password-stdin"],
                       cwd=cwd, input=PASSWORD + "\n", capture_output=True, text=True, env={**os.environ, **env},
                       timeout=300)
    assert p.returncode == 0, p.stderr


def _resolve(cwd, env, dea, aid, user, check=True):
    import os
    import subprocess

    from tests.cli.test_cli import CSLEDGER

    p = subprocess.run(CSLEDGER + ["alerts", "resolve", "--dea", dea, "--alert", aid, "--username", user,
                                   "--category", "documentation_error", "--explanation",
                                   "Paper log matches invoice INV-77", "--password-stdin"],
                       cwd=cwd, input=PASSWORD + "\n", capture_output=True, text=True, env={**os.environ, **env},
                       timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p
