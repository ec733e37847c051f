"""The reports issue 20 adds, on a small clinic recorded through the services (SQLite and
PostgreSQL): transfers and returns, corrections, breakage and spills, role history and the
patient-access log, and the receiving log's invoiced column. Each is built and signed as
``csledger report`` builds it, its text read back and its figures checked by hand, and
``verify-report`` must accept it (online, and offline against a bundle where it can). Page 1 of
each is rendered to PNG in /tmp/reports-png/ for a person to look at.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from ledger import services
from ledger.domain import gs1
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    BreakageLineInput,
    CorrectEntry,
    CorrectionLineInput,
    DrawInput,
    GrantRole,
    ReceivedLineInput,
    ReceiveStock,
    RecordBreakage,
    RegisterPatient,
    ReturnStock,
    RevokeRole,
    TakeInventory,
    TransferStock,
)
from ledger.settings import Settings
from ledger.storage.log import attach
from ledger.storage.patient_access import log_report_access
from ledger.storage.patient_keys import PatientKeys
from reports.base import build_report
from reports.errors import ReportError
from reports.verify import verify_report, verify_report_offline
from tests.api.conftest import PATIENT_KEY
from tests.conftest import (
    BACKENDS,
    DEA,
    DEA2,
    KETAMINE_10,
    KETAMINE_50,
    RECEIVER_REGISTRATION,
    RECIPIENT_REGISTRATION,
    Clinic,
    clinic_today,
)
from tests.reports.report_keys import CLI_KEY_DIR, bundle_of, certify

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
PNG_DIR = Path("/tmp/reports-png")
OTHER = AddressInput("12 Elm St", "Austin", "TX", "78702")
DEPOT = AddressInput("5 Depot Rd", "Houston", "TX", "77002")
RD = AddressInput("9 Incinerator Ln", "Dallas", "TX", "75201")


@pytest.fixture
def small_clinic(ledger, db_url, tmp_path):
    """A day at a small clinic, every event in the last hours: an initial inventory; 30 vials of
    50 mg/mL received against an invoice of 31, and 2 of 10 mg/mL as invoiced; 20 vials drawn
    for one patient (so a transfer stays under the 5% rule); one vial transferred to another
    practitioner, one returned to the supplier, one to a reverse distributor; a vial broken (not
    recoverable) and one spilled but recoverable; two corrections (one adding back, one taking
    off with a manager's approval); a role granted and revoked; and patient names read twice."""
    c = Clinic(ledger)
    return record_day(ledger, c, c.enroll("Morgan Manager", "morgan", "manager"), db_url, tmp_path)


def record_day(ledger, c: Clinic, morgan, db_url: str, tmp_path: Path) -> SimpleNamespace:
    """The day of ``small_clinic`` at clinic ``c`` (``morgan``: a manager to approve), with the
    report key certified and checkpoints signed (reports embed one; bundles export)."""
    attach(ledger, SimpleNamespace(key_dir=tmp_path / CLI_KEY_DIR, origin_prefix="csledger.local", log_keys=""))
    certify(ledger, c.admin, tmp_path / CLI_KEY_DIR)
    now = datetime.now(UTC)
    at = lambda h: now - timedelta(hours=h)  # noqa: E731
    services.take_inventory(ledger, c.nurse, TakeInventory("initial", "close_of_business", at(6)), witness=c.pharmacist)
    v = services.receive_stock(ledger, c.nurse, ReceiveStock(c.supplier_id, "INV-7731", at(5), (
        ReceivedLineInput(KETAMINE_50, 30, "KA2611", "2028-06-30", invoiced_containers=31),)))["vial_ids"]
    k10 = services.receive_stock(ledger, c.nurse, ReceiveStock(c.supplier_id, "INV-7732", at(5), (
        ReceivedLineInput(KETAMINE_10, 2, "KB2611", "2028-03-31", invoiced_containers=2),)))["vial_ids"]
    # a serialized vial (DSCSA): its identity is the long GS1 form "(01)<GTIN>(21)<serial>"
    gs1_vial = services.receive_stock(ledger, c.nurse, ReceiveStock(c.supplier_id, "INV-7733", at(5), (
        ReceivedLineInput(KETAMINE_10, 1, "KB2611", "2028-03-31", gtin=gs1.gtin_for_ndc10("5258403710"),
                          serials=("SN00004471902257",)),)))["vial_ids"][0]
    keys = PatientKeys.from_settings(Settings(patient_key=PATIENT_KEY))
    patient = services.register_patient(ledger, c.nurse, RegisterPatient("Jordan Example", OTHER),
                                        keys=keys)["patient_id"]
    adm = services.administer_dose(ledger, c.nurse, AdministerDose(
        patient, DEA2, "80.00", "0.50", tuple(DrawInput(x, "10.00") for x in v[:20]), "200.00", at(4), at(4)))
    adm_seq = adm["entries"][0]["seq"]
    services.transfer_stock(ledger, c.pharmacist, TransferStock(
        (v[20],), "FB7654329", "Riverside Pain Clinic", OTHER, "T-0091", at(3), **RECEIVER_REGISTRATION),
        witness=c.nurse2)
    services.return_stock(ledger, c.pharmacist, ReturnStock(
        (v[21], k10[0]), "supplier", "Gulf Medical Supply", DEPOT, "PB1234563", "RA-5520", at(3)), witness=c.nurse2)
    services.return_stock(ledger, c.pharmacist, ReturnStock(
        (v[22], gs1_vial), "reverse_distributor", "Lone Star Returns", RD, "RL1234563", "RD-0007", at(3),
        **RECIPIENT_REGISTRATION), witness=c.nurse2)
    services.record_breakage(ledger, c.nurse, RecordBreakage(
        "breakage", "vial slipped from the tray and shattered on the floor", False, (BreakageLineInput(v[23]),), at(2)),
        witness=c.nurse2)
    services.record_breakage(ledger, c.nurse, RecordBreakage(
        "spill", "vial cracked in its carton; contents held in the carton", True, (BreakageLineInput(v[24]),), at(2)),
        witness=c.nurse2)
    services.correct_entry(ledger, c.nurse, CorrectEntry(adm_seq, "drew 9.50 mL from the first vial, not 10.00", (
        CorrectionLineInput(v[0], "add", "0.50"),)))
    services.correct_entry(ledger, c.nurse, CorrectEntry(
        adm_seq, "first vial: 0.25 mL of the 0.50 added back was drawn after all", (
            CorrectionLineInput(v[0], "remove", "0.25"),)), approver=morgan)
    services.grant_role(ledger, c.admin, GrantRole(c.nurse.staff_id, "pharmacist"), approver=morgan)
    services.revoke_role(ledger, c.admin, RevokeRole(c.nurse.staff_id, "pharmacist", "covering shift ended"))
    services.read_patient(ledger, c.nurse, patient, keys=keys)
    log_report_access(ledger.engine, DEA, c.auditor.staff_id, action="report",
                      report="administrations 2026-12-01 to 2026-12-07 (America/Chicago), ledger tree size 40",
                      patient_ids=[patient], now=(now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"))
    period = ((clinic_today() - timedelta(days=1)).isoformat(), clinic_today().isoformat())
    return SimpleNamespace(ledger=ledger, clinic=c, vials=v, k10=k10, gs1_vial=gs1_vial, patient=patient, adm_seq=adm_seq,
                           period=period, db=db_url, morgan=morgan)


def build(floor, kind: str) -> tuple[bytes, dict, str]:
    pdf, data = build_report(floor.ledger, kind, DEA, *floor.period, generated_by="Casey Compliance (S12)")
    text = " ".join(" ".join((p.extract_text() or "").split()) for p in PdfReader(io.BytesIO(pdf)).pages)
    return pdf, data, text


def verified(floor, pdf: bytes) -> None:
    """``verify-report`` accepts ``pdf`` online, and offline against a bundle exported now, naming
    nothing (what ``report_keys.check`` asserts, each check run once: a check rebuilds the report)."""
    result = verify_report(floor.ledger, pdf)
    assert result.ok, result.problems
    offline = verify_report_offline(pdf, bundle_of(floor.ledger, DEA))
    assert offline.ok, offline.problems
    assert offline.problems == result.problems == []


def png(pdf: bytes, name: str, backend: str) -> Path | None:
    """Page 1 as PNG in /tmp/reports-png/ (for a person to look at); skipped without pdftoppm."""
    if shutil.which("pdftoppm") is None:
        return None
    PNG_DIR.mkdir(exist_ok=True)
    src = PNG_DIR / f"{name}-{backend}.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile", str(src),
                    str(PNG_DIR / f"{name}-{backend}")], check=True)
    return PNG_DIR / f"{name}-{backend}.png"


def backend(floor) -> str:
    return floor.ledger.dialect


def test_transfers_and_returns(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "transfers")
    rows = data["figures"]["rows"]
    assert [(r["type"], r["vial_id"], r["ml"], r["mg"]) for r in rows] == [
        ("transfer", f.vials[20], "10.00", "500.00"), ("supplier", f.vials[21], "10.00", "500.00"),
        ("supplier", f.k10[0], "20.00", "200.00"), ("reverse_distributor", f.vials[22], "10.00", "500.00"),
        ("reverse_distributor", f.gs1_vial, "20.00", "200.00")]
    assert f.gs1_vial.startswith("(01)") and "(21)SN00004471902257" in f.gs1_vial
    assert rows[0]["recipient"]["registration"] == {"expires_on": "2031-06-30", "schedules": ["3", "3N", "4", "5"]}
    assert rows[0]["performed_by"] == ["Pia Pharmacist"] and rows[0]["witnessed_by"] == ["Ned Nurse"]
    by = {(b["ndc"], b["type"]): (b["containers"], b["ml"], b["mg"]) for b in data["figures"]["by_ndc"]}
    assert by == {(KETAMINE_50, "transfer"): (1, "10.00", "500.00"), (KETAMINE_50, "supplier"): (1, "10.00", "500.00"),
                  (KETAMINE_50, "reverse_distributor"): (1, "10.00", "500.00"),
                  (KETAMINE_10, "supplier"): (1, "20.00", "200.00"),
                  (KETAMINE_10, "reverse_distributor"): (1, "20.00", "200.00")}
    assert data["figures"]["total"] == {"entries": 3, "containers": 5, "mg": "1900.00"}
    for must in ("Transfers and returns", "Transfer to a practitioner", "Return to supplier",
                 "To a reverse distributor", "Riverside Pain Clinic", "12 Elm St, Austin, TX 78702", "DEA FB7654329",
                 "Lone Star Returns", "DEA RL1234563", "T-0091", "RA-5520", "RD-0007",
                 "Registration checked: expires 2031-06-30, schedules 3, 3N, 4, 5",
                 "DSCSA authorized trading partner: yes", "Pia Pharmacist (performed)", "Ned Nurse (witnessed)",
                 "KA2611", "exp 2028-06-30", "1,900.00 mg", "5% rule: 1.00 of",
                 # the GS1 identity breaks only between its GTIN and its serial
                 f.gs1_vial.replace("(21)", " (21)")):
        assert must in text, must
    verified(f, pdf)
    png(pdf, "transfers", backend(f))


def test_corrections(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "corrections")
    rows = data["figures"]["rows"]
    assert [(r["corrects_seq"], r["corrects_kind"], [(x["vial_id"], x["direction"], x["ml"]) for x in r["lines"]],
             r["recorded_by"], r["approved_by"]) for r in rows] == [
        (f.adm_seq, "dose_administered", [(f.vials[0], "add", "0.50")], ["Nora Nurse"], []),
        (f.adm_seq, "dose_administered", [(f.vials[0], "remove", "0.25")], ["Nora Nurse"], ["Morgan Manager"])]
    assert data["figures"]["by_ndc"] == [{"ndc": KETAMINE_50, "drug": "Ketamine HCl injection 50 mg/mL", "lines": 2,
                                          "added_ml": "0.50", "removed_ml": "0.25"}]
    for must in ("Corrections", f"entry {f.adm_seq} dose_administered", "drew 9.50 mL from the first vial",
                 "back into the container: 0.50 mL", "out of the container: 0.25 mL", "Morgan Manager",
                 "2 corrections, 2 with quantities"):
        assert must in text, must
    verified(f, pdf)
    png(pdf, "corrections", backend(f))


def test_breakage_and_spills(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "breakage")
    rows = data["figures"]["rows"]
    assert [(r["what"], r["recoverable"], r["ml"], r["mg"], r["recorded_by"], r["witnessed_by"]) for r in rows] == [
        ("breakage", False, "10.00", "500.00", ["Nora Nurse"], ["Ned Nurse"]),
        ("spill", True, "10.00", "500.00", ["Nora Nurse"], ["Ned Nurse"])]
    assert data["figures"]["by_ndc"][0] | {} == {"ndc": KETAMINE_50, "drug": "Ketamine HCl injection 50 mg/mL",
                                                 "containers": 2, "lost_ml": "10.00", "set_aside_ml": "10.00",
                                                 "mg": "1000.00"}
    for must in ("Breakage and spills", "shattered on the floor", "Not recoverable: off the book",
                 "Recoverable: set aside (quarantined) for destruction", f"{f.vials[23]} ({KETAMINE_50}): 10.00 mL",
                 "Nora Nurse (recorded)", "Ned Nurse (witnessed)", "1,000.00 mg"):
        assert must in text, must
    verified(f, pdf)
    png(pdf, "breakage", backend(f))


def test_role_history(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "roles")
    events = [(e["kind"], e["printed_name"], e["performed_by"], e["approved_by"]) for e in data["figures"]["events"]]
    # Everything in the test clinic happened today, so in the period: enrolments and grants too.
    assert ("role_granted", "Nora Nurse", ["Avery Admin"], ["Morgan Manager"]) in events
    assert events[-1][:3] == ("role_revoked", "Nora Nurse", ["Avery Admin"])
    nora = next(h for h in data["figures"]["holders"] if h["printed_name"] == "Nora Nurse")
    assert [r["role"] for r in nora["roles"]] == ["nurse"]  # pharmacist granted, then revoked
    morgan = next(h for h in data["figures"]["holders"] if h["printed_name"] == "Morgan Manager")
    assert [(r["role"], r["granted_by"], r["approved_by"]) for r in morgan["roles"]] == [
        ("manager", ["Avery Admin"], ["Avery Admin"])]
    for must in ("Role history", "role granted: pharmacist", "role revoked: pharmacist; reason: covering shift ended",
                 "enrolled, username nora", "Role holders at the end of", "nurse: since", "granted by Avery Admin"):
        assert must in text, must
    verified(f, pdf)
    png(pdf, "roles", backend(f))


def test_patient_access_log(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "patient_access")
    log = data["annotations"]["access_log"]
    assert [(r["staff_id"], r["action"], r["patient_ids"] or [r["patient_id"]]) for r in log["rows"]] == [
        (f.clinic.nurse.staff_id, "read", [f.patient]), (f.clinic.auditor.staff_id, "report", [f.patient])]
    assert "Jordan Example" not in text  # ids only, never names
    for must in ("Patient-access log", "Nora Nurse", "Ari Auditor", f.patient, "one patient's record",
                 "administrations 2026-12-01 to 2026-12-07", "not part of the hash-chained ledger",
                 "2 reads by 2 readers, of 1 patients"):
        assert must in text, must
    result = verify_report(f.ledger, pdf)
    assert result.ok, result.problems
    assert "patient-access log rows up to" in result.summary
    # Offline the rows cannot be checked (a bundle carries entries only): it passes and says so.
    offline = verify_report_offline(pdf, bundle_of(f.ledger, DEA))
    assert offline.ok, offline.problems
    assert "NOT checked offline" in offline.summary
    png(pdf, "patient_access", backend(f))
    # A row the report printed, changed in the database behind the triggers' back, is named.
    import sqlalchemy as sa

    with pytest.raises(sa.exc.DBAPIError), f.ledger.engine.begin() as conn:  # the triggers refuse it
        conn.execute(sa.text("UPDATE patient_access_log SET staff_id = 'S999'"))
    with f.ledger.engine.begin() as conn:
        if f.ledger.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS patient_access_log_no_update")
        else:
            conn.exec_driver_sql("ALTER TABLE patient_access_log DISABLE TRIGGER USER")
        conn.execute(sa.text("UPDATE patient_access_log SET staff_id = 'S999' WHERE id = :i"),
                     {"i": log["rows"][0]["id"]})
    bad = verify_report(f.ledger, pdf)
    assert not bad.ok and any(f"patient-access log row {log['rows'][0]['id']}: the report says" in p
                              for p in bad.problems), bad.problems


def test_receiving_log_shows_invoiced_beside_received(small_clinic):
    f = small_clinic
    pdf, data, text = build(f, "receiving")
    rows = data["figures"]["rows"]
    assert [(r["invoice"], r["invoiced_containers"], r["containers"]) for r in rows] == [
        ("INV-7731", 31, 30), ("INV-7732", 2, 2), ("INV-7733", None, 1)]
    assert "Invoiced" in text and text.count("MISMATCH") == 1
    assert "30 MISMATCH 1 short" in text
    verified(f, pdf)
    png(pdf, "receiving", backend(f))


def test_empty_period_is_the_reports_own_error(small_clinic):
    f = small_clinic
    later = ((clinic_today() + timedelta(days=1)).isoformat(), (clinic_today() + timedelta(days=2)).isoformat())
    for kind in ("transfers", "corrections", "breakage", "patient_access"):
        with pytest.raises(ReportError, match="nothing to report") as err:
            build_report(f.ledger, kind, DEA, *later)
        assert err.value.field == "from/to"
    # Before the initial inventory, stock reports refuse; the access log and the role history
    # do not wait for it (staff and patient reads come before any stock).
    with pytest.raises(ReportError, match="before the first inventory"):
        build_report(f.ledger, "transfers", DEA, "2026-01-01", "2026-01-02")
    with pytest.raises(ReportError, match="no staff is enrolled"):
        build_report(f.ledger, "roles", DEA, "2026-01-01", "2026-01-02")


def test_role_history_names_credentials_and_holders_at_the_end(db_url):
    """Pure (entries made by hand, ``db_url`` only for the module's parametrization): signing
    credentials enrolled, replaced and revoked show in the changes and, in force at the end, beside
    the holder; a role revoked after the period's end still counts as held at its end."""
    from datetime import date

    from reports.base import compute_data, kind_named, render_data
    from reports.fmt import Period
    from reports.source import LedgerState, Snapshot
    from tests.reports.handmade_entries import entry

    def sig(name: str, sid: str, meaning: str) -> dict:
        return {"staff_id": sid, "printed_name": name, "meaning": meaning, "signed_at": "2026-09-01T15:00:00.000000Z",
                "auth_method": "password"}

    admin, mo = sig("Avery Admin", "S1", "performed"), sig("Morgan Manager", "S2", "approved")
    t = "2026-09-0{}T15:00:00.000000Z".format
    entries = [
        entry(0, "registrant_registered", t(1), dea_number=DEA, name="Calm", time_zone="America/Chicago", log_id="x",
              address={"street": "1 A St", "city": "Austin", "state": "TX", "postal_code": "78701"}),
        entry(1, "staff_enrolled", t(1), staff_id="S3", printed_name="Nora Nurse", username="nora",
              signatures=[admin, mo]),
        entry(2, "role_granted", t(1), staff_id="S3", role="nurse", signatures=[admin, mo]),
        entry(3, "staff_credential_enrolled", t(2), staff_id="S3", credential_id="pk-1", method="passkey",
              public_key="x", fingerprint="sha256:ab12", signatures=[sig("Nora Nurse", "S3", "performed"), mo]),
        entry(4, "staff_credential_enrolled", t(3), staff_id="S3", credential_id="pk-2", method="passkey",
              public_key="y", fingerprint="sha256:cd34", replaces="pk-1",
              signatures=[sig("Nora Nurse", "S3", "performed"), mo]),
        entry(5, "role_granted", t(4), staff_id="S3", role="pharmacist", signatures=[admin, mo]),
        entry(6, "role_revoked", "2026-10-02T15:00:00.000000Z", staff_id="S3", role="pharmacist", reason="left",
              signatures=[sig("Avery Admin", "S1", "approved")]),
    ]
    snap = Snapshot(LedgerState(DEA, len(entries), "00" * 32), entries)
    data = compute_data(kind_named("roles"), snap, Period(date(2026, 9, 2), date(2026, 9, 30), "America/Chicago"),
                        generated_at="2026-10-05T14:00:00.000000Z", generated_by="Casey Compliance", paper="letter")
    f = data["figures"]
    assert [e["seq"] for e in f["events"]] == [3, 4, 5]  # in the period only
    nora = f["holders"][0]
    assert [r["role"] for r in nora["roles"]] == ["nurse", "pharmacist"]  # revoked only after the period
    assert [c["credential_id"] for c in nora["credentials"]] == ["pk-2"]  # pk-1 replaced
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(render_data(data))).pages)
    for must in ("signing credential enrolled: passkey pk-2, sha256:cd34, replacing pk-1", "Morgan Manager",
                 "passkey pk-2, since 2026-09-03 10:00 CDT", "pharmacist: since 2026-09-04 10:00 CDT (entry 5)"):
        assert must in text, must
