"""Bulk decryption of patient names writes one patient-access-log row per report (issue 16).

The administration log prints every patient's name and address, decrypted from the registry
with the patient key. Made from the command line (``csledger report administrations`` as a
subprocess), checked with ``csledger verify-report`` (which decrypts them again), or downloaded
from the web reports page, each report appends exactly one row naming its reader (the staff
member signed in, or ``cli:<operating-system user>`` for the command line, which has no login),
the report (kind and period) and every patient it included; the compliance officer reads it on
``GET /patient-access-log``. Without the key nothing is decrypted and nothing is logged. On
SQLite and PostgreSQL.
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import TakeInventory
from ledger.storage.log import attach
from ledger.storage.patient_access import REPORT_PATIENT
from tests.api.conftest import PATIENT_KEY, build_api
from tests.api.test_clinical import ADDRESS, infusion, witnessed
from tests.cli.test_cli import run
from tests.conftest import BACKENDS, DEA, KETAMINE_50, clinic_today
from tests.reports.report_keys import CLI_KEY_DIR, certify

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
UI = f"/ui/{DEA}/"
NAMES = ("Jordan Example", "Riley Sample")


@pytest.fixture
def floor(ledger, db_url, tmp_path):
    """Two patients, each given one infusion (with witnessed waste), recorded over HTTP; the
    report key certified (issue 18) where in-process builds and ``csledger`` run in ``tmp_path``
    find it."""
    api = build_api(ledger)
    # Checkpoints signed in every command, with the log key where `csledger` run in tmp_path finds
    # it: reports embed a signed checkpoint and the ledger exports as an offline bundle.
    attach(ledger, SimpleNamespace(key_dir=tmp_path / CLI_KEY_DIR, origin_prefix="csledger.local", log_keys=""))
    certify(ledger, api.clinic.admin, tmp_path / CLI_KEY_DIR)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    services.take_inventory(ledger, api.clinic.nurse, TakeInventory(
        "initial", "close_of_business", datetime.now(UTC) - timedelta(hours=3)), witness=api.clinic.pharmacist)
    rec = api.client.post(api.url("/receipts"), headers=api.headers("nora"), json={
        "supplier_id": api.clinic.supplier_id, "invoice_number": "INV-R1",
        "occurred_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "lines": [{"ndc": KETAMINE_50, "containers": 2, "lot": "KA2611", "expiry": "2028-06-30"}]})
    assert rec.status_code == 201, rec.text
    patients = []
    for name, vial in zip(NAMES, rec.json()["vial_ids"], strict=True):
        p = api.client.post(api.url("/patients"), json={"name": name, "address": ADDRESS}, headers=api.headers("nora"))
        assert p.status_code == 201, p.text
        patients.append(p.json()["patient_id"])
        r, _ = witnessed(api, "nora", "/administrations", infusion(patients[-1], vial), "ned")
        assert r.status_code == 201, r.text
    api.patients = sorted(patients)
    api.db = db_url
    api.period = ((clinic_today() - timedelta(days=2)).isoformat(), clinic_today().isoformat())
    return api


def report_rows(api) -> list[dict]:
    """The access log as the compliance officer reads it, report rows only."""
    items = api.client.get(api.url("/patient-access-log"), headers=api.headers("casey")).json()["items"]
    return [x for x in items if x["patient_id"] == REPORT_PATIENT]


def cli_report(api, tmp_path, name: str, key: bool = True):
    env = {"CSLEDGER_PATIENT_KEY": PATIENT_KEY if key else ""}
    out = tmp_path / name
    run(["report", "administrations", "--registrant", DEA, "--from", api.period[0], "--to", api.period[1],
         "--out", str(out), "--db", api.db], tmp_path, env)
    return out, env


def text(pdf) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(pdf).pages)


def test_cli_report_and_verify_report_each_log_one_row_with_every_patient(floor, tmp_path):
    api = floor
    assert report_rows(api) == []
    pdf, env = cli_report(api, tmp_path, "admin.pdf")
    assert all(n in text(pdf) for n in NAMES)  # the names were decrypted into the report
    rows = report_rows(api)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["staff_id"] == f"cli:{getpass.getuser()}"
    assert row["action"] == "report" and row["patient_ids"] == api.patients
    assert re.search(rf"administrations .*{api.period[0]} to {api.period[1]}", row["report"]), row["report"]
    # verify-report decrypts them again to check them against the entries: one more row.
    run(["verify-report", str(pdf), "--db", api.db], tmp_path, env)
    rows = report_rows(api)
    assert len(rows) == 2 and rows[1]["action"] == "verify-report" and rows[1]["patient_ids"] == api.patients


def test_without_the_key_nothing_is_decrypted_and_nothing_logged(floor, tmp_path):
    pdf, _ = cli_report(floor, tmp_path, "ids-only.pdf", key=False)
    assert not any(n in text(pdf) for n in NAMES)
    assert report_rows(floor) == []


def test_web_report_download_logs_one_row_naming_the_signed_in_reader(floor, monkeypatch):
    import io

    from tests.web.test_pages_http import csrf_of, login

    web = floor
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)  # the server's key, as ``csledger serve`` has it
    assert login(web, "casey").status_code == 303
    page = web.client.get(UI + "reports")
    r = web.client.post(UI + "reports", data={"csrf_token": csrf_of(page.text), "kind": "administrations",
                                               "start": web.period[0], "end": web.period[1], "paper": "letter"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text[:300]
    assert all(n in text(io.BytesIO(r.content)) for n in NAMES)
    rows = report_rows(web)
    casey = web.auth.store.staff_by_username(DEA, "casey")
    assert [(x["staff_id"], x["action"], x["patient_ids"]) for x in rows] == [(casey.staff_id, "report", web.patients)]
    assert "administrations" in rows[0]["report"]
