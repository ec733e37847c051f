"""Issue 20: a month at a small clinic, played entirely over HTTP, with hand-computed figures,
every report checked against the others for the same period.

The clinic (America/Chicago) stocks one product, ketamine 50 mg/mL in 10 mL vials. The month
lies just ahead of the real clock (day 1 is tomorrow, local): the server's and the ledger's clock
(``api.clock``) are moved to each event, which is recorded a few minutes after it happened.

    day  1 08:00  initial inventory, witnessed: 2 sealed vials I1, I2               book 20.00 mL
    day  2 07:45  full count at opening: 2 sealed, 20.00 mL     <- the audit's BEGINNING
    day  2 09:30  receipt of 5 vials R1..R5 on an invoice of 5                     book 70.00
    day  3        infusion 1: I1 drawn 1.00 = 0.80 given (80 kg x 0.50 mg/kg = 40 mg) + 0.20 wasted
    day  5        infusion 2: I1 drawn 1.50 = 1.40 given (70 kg x 1.00 = 70 mg)     + 0.10 wasted
    day  8        infusion 3: I1 drawn 2.00 = 1.60 given (80 kg x 1.00 = 80 mg)     + 0.40 wasted
    day  9 07:45  count: 6 sealed + I1 read 5.45 mL, book 5.50: -0.05, within the 0.10 mL tolerance
    day 10        spill of 1.00 mL from I1 (not recoverable), witnessed                I1 4.50
    day 11        infusion 4: I1 drawn 1.20 = 1.00 given (100 kg x 0.50 = 50 mg)    + 0.20 wasted
    day 12        return of the sealed vial R5 to the supplier (10.00 mL)
    day 15 07:45  count: 5 sealed + I1 read 2.30 mL, book 3.30: -1.00 -> a discrepancy;
                  the manager resolves it as a loss (1.00 mL off the book: an adjustment), the
                  loss is reported (Form 106 fields), the DEA notice sent the same day
    day 17        infusion 5: I1 drawn 2.00 = 1.80 given (90 kg x 1.00 = 90 mg)     + 0.20 wasted
    day 19        infusion 6: I2 drawn 1.50 = 1.20 given (60 kg x 1.00 = 60 mg)     + 0.30 wasted
    day 20        Form 106 filed
    day 24 17:30  closing count: 4 sealed + I1 0.30 + I2 8.50 = 48.80 mL  <- the audit's END
    day 25        infusion 7, after the last count: I2 drawn 1.00 = 0.80 given (40 mg) + 0.20 wasted

One deviation from issue 20's wording: the receipt comes after the opening count of day 2 (not
before it), so the audit's receipts line is not zero and is checked too.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from ledger.services.verify import verify
from ledger.storage.log import attach
from ledger.storage.store import utcnow
from reports.fmt import num
from reports.verify import verify_report
from tests.api.conftest import build_api
from tests.api.test_clinical import ADDRESS, witnessed
from tests.conftest import BACKENDS, CLINIC_TZ, KETAMINE_50, clinic_today
from tests.reports.report_keys import CLI_KEY_DIR, certify

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

ZONE = ZoneInfo(CLINIC_TZ)
#: Day 1 of the month: tomorrow at the clinic, so every event is ahead of the real clock.
DAY1 = clinic_today() + timedelta(days=1)
EXPIRY = (DAY1 + timedelta(days=730)).isoformat()
SUPPLIER_ADDRESS = {"street": "5 Depot Rd", "city": "Houston", "state": "TX", "postal_code": "77002"}
FORM_106 = {"narrative": "The opening count of day 15 found the opened vial 1.00 mL short of the book; a search of "
                         "the med room and the sharps bins found nothing.",
            "corrective_measures": "Safe code changed; opened vials now counted at every shift change.",
            "other_explanation": "unexplained shortage found at a two-person count",
            "contact_name": "Morgan Manager", "contact_phone": "512-555-0142"}


def day(n: int) -> str:
    """Day ``n`` of the month as YYYY-MM-DD (local)."""
    return (DAY1 + timedelta(days=n - 1)).isoformat()


def at(n: int, hh: int, mm: int = 0) -> datetime:
    """Local time ``hh:mm`` on day ``n``, aware."""
    return datetime.combine(DAY1 + timedelta(days=n - 1), time(hh, mm), ZONE)


def stamp(n: int, hh: int, mm: int = 0) -> str:
    """Local time ``hh:mm`` on day ``n`` as the reports print it (with the zone's abbreviation)."""
    return at(n, hh, mm).strftime("%Y-%m-%d %H:%M %Z")


def pdf_text(content: bytes) -> str:
    """A PDF's text, whitespace collapsed."""
    return " ".join(" ".join((p.extract_text() or "").split()) for p in PdfReader(io.BytesIO(content)).pages)


class Month:
    """The clinic's month over HTTP: each call moves the clock, then sends the command."""

    def __init__(self, api):
        self.api = api

    def now(self, when: datetime) -> None:
        """Move the server's (and the ledger's) clock to ``when``; logins idle since are gone."""
        self.api.clock.offset = when.astimezone(UTC) - utcnow()
        self.api.tokens.clear()

    def post(self, who: str, path: str, body: dict, *witnesses: str) -> dict:
        api = self.api
        if witnesses:
            r, _ = witnessed(api, who, path, body, *witnesses, key=api.key()["Idempotency-Key"])
        else:
            r = api.client.post(api.url(path), json=body, headers=api.headers(who, **api.key()))
        assert r.status_code == 201, (path, r.text)
        return r.json()

    def count(self, n: int, hh: int, mm: int, sealed: int, opened: int, ml: str, open_vials=()) -> dict:
        """A blind two-person count (Nora, Ned) at ``hh:mm`` on day ``n``."""
        self.now(at(n, hh, mm) + timedelta(minutes=1))
        s = self.post("nora", "/counts", {"ndcs": [KETAMINE_50], "blind": True})
        line = {"ndc": KETAMINE_50, "sealed_containers": sealed, "open_containers": opened, "open_ml": ml,
                "open_vials": [{"vial_id": v, "ml": m} for v, m in open_vials]}
        return self.post("nora", f"/counts/{s['session_id']}/submissions",
                         {"lines": [line], "occurred_at": at(n, hh, mm).isoformat()}, "ned")

    def infusion(self, n: int, patient: str, vial: str, weight: str, per_kg: str, drawn: str, given: str,
                 wasted: str) -> dict:
        """An infusion at 10:00-10:40 on day ``n``, its remainder wasted before Ned."""
        self.now(at(n, 10, 45))
        return self.post("nora", "/administrations", {
            "patient_id": patient, "prescriber_dea_number": "FB7654329", "weight_kg": weight,
            "ordered_mg_per_kg": per_kg, "draws": [{"vial_id": vial, "ml": drawn}], "ml_given": given,
            "started_at": at(n, 10).isoformat(), "ended_at": at(n, 10, 40).isoformat(),
            "waste": {"ml": wasted, "method": "syringe expelled into the disposal container"}}, "ned")


def seq_of(res: dict, kind: str) -> int:
    """The seq of the one entry of ``kind`` a command recorded."""
    (seq,) = [e["seq"] for e in res["entries"] if e["kind"] == kind]
    return seq


@pytest.fixture
def api(ledger, tmp_path):
    """The HTTP API over a clinic whose report key is certified (reports are signed with it)."""
    api = build_api(ledger)
    attach(ledger, type("S", (), {"key_dir": tmp_path / CLI_KEY_DIR, "origin_prefix": "csledger.local",
                                  "log_keys": ""})())
    certify(ledger, api.clinic.admin, tmp_path / CLI_KEY_DIR)
    ledger.clock = api.clock  # the ledger records at the server's (moved) time
    return api


def test_a_month_at_a_small_clinic_every_report_agrees(api):
    """The month of the module docstring, then the audit of days 2 to 25 and every report of the
    same days, each figure by hand and each report against the audit and the others."""
    m = Month(api)

    # --- day 1: the initial inventory, witnessed; day 2: the opening count, then the receipt ---
    m.now(at(1, 8, 5))
    inv = m.post("pia", "/inventories", {
        "inventory_type": "initial", "taken_at": "opening_of_business", "occurred_at": at(1, 8).isoformat(),
        "items": [{"ndc": KETAMINE_50, "lot": "KA1", "expiry": EXPIRY, "sealed": True, "containers": 2}]}, "ned")
    assert inv["discrepancy_ids"] == [] and inv["lines"] == []  # an initial inventory creates the book
    i1, i2 = inv["vial_ids"]
    patient = m.post("nora", "/patients", {"name": "Jordan Example", "address": ADDRESS})["patient_id"]
    opening = m.count(2, 7, 45, sealed=2, opened=0, ml="0.00")  # 2 x 10.00 = 20.00 mL = the book
    assert opening["discrepancy_ids"] == []
    m.now(at(2, 9, 35))
    received = m.post("nora", "/receipts", {
        "supplier_id": api.clinic.supplier_id, "invoice_number": "INV-2001", "occurred_at": at(2, 9, 30).isoformat(),
        "lines": [{"ndc": KETAMINE_50, "containers": 5, "invoiced_containers": 5, "lot": "KA2", "expiry": EXPIRY}]})
    *_, r5 = received["vial_ids"]

    # --- days 3 to 11: infusions, a count within tolerance, a spill ---
    m.infusion(3, patient, i1, "80.00", "0.50", "1.00", "0.80", "0.20")  # I1 10.00 - 1.00 = 9.00
    m.infusion(5, patient, i1, "70.00", "1.00", "1.50", "1.40", "0.10")  # I1 9.00 - 1.50 = 7.50
    m.infusion(8, patient, i1, "80.00", "1.00", "2.00", "1.60", "0.40")  # I1 7.50 - 2.00 = 5.50
    within = m.count(9, 7, 45, sealed=6, opened=1, ml="5.45")  # book 5.50: -0.05, within 0.10 per opened vial
    assert within["discrepancy_ids"] == [] and within["within_tolerance"] == [KETAMINE_50], within
    (wline,) = within["lines"]
    assert (D(wline["difference_ml"]), D(wline["tolerance_ml"]), wline["within_tolerance"]) == (
        D("-0.05"), D("0.10"), True)
    m.now(at(10, 14, 5))
    m.post("nora", "/breakages", {
        "what": "spill", "description": "syringe knocked off the tray while drawing up", "recoverable": False,
        "lines": [{"vial_id": i1, "ml": "1.00"}], "occurred_at": at(10, 14).isoformat()}, "ned")  # I1 4.50
    m.infusion(11, patient, i1, "100.00", "0.50", "1.20", "1.00", "0.20")  # I1 4.50 - 1.20 = 3.30

    # --- day 12: one sealed vial back to the supplier ---
    m.now(at(12, 11, 5))
    m.post("pia", "/returns", {
        "vial_ids": [r5], "recipient_type": "supplier", "recipient_name": "Gulf Medical Supply",
        "recipient_address": SUPPLIER_ADDRESS, "recipient_dea_number": "PB1234563", "invoice_number": "RA-2012",
        "occurred_at": at(12, 11).isoformat()}, "ned")

    # --- day 15: a count finds I1 1.00 mL short; resolved as a loss, reported, notice sent ---
    short = m.count(15, 7, 45, sealed=5, opened=1, ml="2.30", open_vials=[(i1, "2.30")])  # book 3.30: -1.00
    (disc,) = short["discrepancy_ids"]
    m.now(at(15, 9))
    resolved = m.post("morgan", f"/discrepancies/{disc}/resolutions", {
        "category": "theft_or_loss", "explanation": "not found after a search of the med room"}, "pia")
    adjusted = seq_of(resolved, "loss_adjusted")  # I1 3.30 - 1.00 = 2.30
    m.now(at(15, 9, 30))
    loss = m.post("morgan", "/loss-reports", {
        "discovered_at": at(15, 7, 45).isoformat(), "loss_type": "other", "police_notified": False,
        "losses_past_24_months": 0, "purchase_value_usd": "2.40", "covers_seqs": [adjusted], **FORM_106})
    loss_seq = seq_of(loss, "theft_or_loss_reported")
    m.now(at(15, 15, 5))
    m.post("morgan", "/dea-notices", {"loss_report_seq": loss_seq, "sent_at": at(15, 15).isoformat(),
                                      "method": "email", "recipient": "DEA Houston Division, Austin Resident Office"})

    # --- days 17 to 24: two more infusions, the Form 106 filed, the closing count ---
    m.infusion(17, patient, i1, "90.00", "1.00", "2.00", "1.80", "0.20")  # I1 2.30 - 2.00 = 0.30
    m.infusion(19, patient, i2, "60.00", "1.00", "1.50", "1.20", "0.30")  # I2 10.00 - 1.50 = 8.50
    m.now(at(20, 11, 5))
    m.post("casey", "/form-106-filings", {"loss_report_seq": loss_seq, "filed_at": at(20, 11).isoformat(),
                                          "confirmation_number": "106-2026-0042187"})
    # 4 sealed (R1..R4) + I1 0.30 + I2 8.50 = 48.80 mL, exactly the book
    closing = m.count(24, 17, 30, sealed=4, opened=2, ml="8.80", open_vials=[(i1, "0.30"), (i2, "8.50")])
    assert closing["discrepancy_ids"] == [] and closing["within_tolerance"] == []

    # --- day 25: one more infusion, after the last count ---
    m.infusion(25, patient, i2, "80.00", "0.50", "1.00", "0.80", "0.20")  # I2 8.50 - 1.00 = 7.50
    m.now(at(26, 12))

    # === the audit of days 2 to 25: from the opening count of day 2 to the closing count of day 24 ===
    days = {"from": day(2), "to": day(25)}
    a = api.client.get(api.url("/audit"), params=days, headers=api.headers("casey"))
    assert a.status_code == 200, a.text
    audit = a.json()
    assert audit["asked"] == {"from": day(2), "to": day(25), "time_zone": CLINIC_TZ}
    assert audit["window"]["begin"]["seq"] == seq_of(opening, "stock_counted")
    assert audit["window"]["end"]["seq"] == seq_of(closing, "stock_counted")
    assert audit["offers"]["from"] and audit["offers"]["to"]
    (p,) = audit["products"]
    assert p["ndc"] == KETAMINE_50 and (p["beginning_basis"], p["ending_basis"]) == ("counted", "counted")
    lines = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred",
             "breakage", "theft_or_loss", "ending", "accounted_for", "difference", "adjustments",
             "difference_after_adjustments")
    expected_ml = {
        "beginning": "20.00",  # the day-2 count: 2 sealed vials
        "receipts": "50.00",  # 5 x 10.00
        "to_account_for": "70.00",  # 20.00 + 50.00
        "administered": "7.80",  # 0.80 + 1.40 + 1.60 + 1.00 + 1.80 + 1.20 (not day 25's 0.80)
        "wasted": "1.40",  # 0.20 + 0.10 + 0.40 + 0.20 + 0.20 + 0.30 (not day 25's 0.20)
        "destroyed": "0.00",
        "transferred": "10.00",  # the return of R5
        "breakage": "1.00",  # the spill of day 10, recorded at the time
        "theft_or_loss": "0.00",  # the report covers the loss adjustment; it takes nothing itself
        "ending": "48.80",  # the closing count: 4 x 10.00 + 0.30 + 8.50
        "accounted_for": "69.00",  # 7.80 + 1.40 + 10.00 + 1.00 + 48.80
        "difference": "-1.00",  # 69.00 - 70.00: the shortage of day 15, before adjustments
        "adjustments": "1.00",  # the loss adjusted when the discrepancy was resolved
        "difference_after_adjustments": "0.00",  # -1.00 + 1.00
    }
    assert {x: D(p["ml"][x]) for x in lines} == {x: D(v) for x, v in expected_ml.items()}
    expected_mg = {  # each mL figure x 50 mg/mL
        "beginning": "1000.00", "receipts": "2500.00", "to_account_for": "3500.00", "administered": "390.00",
        "wasted": "70.00", "destroyed": "0.00", "transferred": "500.00", "breakage": "50.00",
        "theft_or_loss": "0.00", "ending": "2440.00", "accounted_for": "3450.00", "difference": "-50.00",
        "adjustments": "50.00", "difference_after_adjustments": "0.00"}
    assert {x: D(p["mg"][x]) for x in lines} == {x: D(v) for x, v in expected_mg.items()}
    assert D(p["unreconciled"]["ml"]) == 0  # drawn 9.20 = 7.80 given + 1.40 wasted
    assert [i["seq"] for i in p["adjustment_entries"]] == [adjusted]

    # === every report over /v1 for the same days; each one verifies ===
    def report(kind: str, **extra) -> str:
        r = api.client.get(api.url(f"/reports/{kind}"), params={**days, **extra}, headers=api.headers("casey"))
        assert r.status_code == 200, (kind, extra, r.text[:400])
        assert r.headers["content-type"] == "application/pdf"
        check = verify_report(api.ledger, r.content)
        assert check.ok, (kind, extra, check.problems)
        assert "signed by the report key certified in entry" in check.summary
        return pdf_text(r.content)

    # The logs made for the audit window total exactly the audit's administered and wasted;
    # made for the days, they hold day 25's infusion too: exactly 0.80 mL (40 mg) given, 0.20 wasted more.
    adm_window, adm_days = report("administrations", window="audit"), report("administrations")
    assert "6 administration(s): 390.00 mg given (7.80 mL), 1.40 mL wasted; 0 UNRECONCILED" in adm_window
    assert "7 administration(s): 430.00 mg given (8.60 mL), 1.60 mL wasted; 0 UNRECONCILED" in adm_days
    # ... and the window's log prints the audit's own figures
    assert f"{num(p['mg']['administered'], 'mg')} given ({num(p['ml']['administered'], 'mL')})" in adm_window
    waste_window, waste_days = report("waste", window="audit"), report("waste")
    assert "wasted 70.00 mg (1.40 mL); destroyed 0.00 mg (0.00 mL)" in waste_window
    assert "wasted 80.00 mg (1.60 mL); destroyed 0.00 mg (0.00 mL)" in waste_days
    assert f"wasted {num(p['mg']['wasted'], 'mg')} ({num(p['ml']['wasted'], 'mL')})" in waste_window
    for text in (adm_window, waste_window):
        assert f"entry {audit['window']['begin']['seq']} to the count of {stamp(24, 17, 30)}" in text

    assert f"{day(25)} 10:00" in adm_days and f"{day(25)} 10:00" not in adm_window

    # The audit's PDF prints the same figures as its JSON, over the same window.
    audit_pdf = report("audit")
    assert (f"{day(2)} to {day(25)} ({CLINIC_TZ}); every figure is of the audit window from the count of "
            f"{stamp(2, 7, 45)}, entry {audit['window']['begin']['seq']} to the count of {stamp(24, 17, 30)}, entry "
            f"{audit['window']['end']['seq']}") in audit_pdf
    for printed in ("Beginning inventory (counted) 1,000.00 mg 20.00 mL 2", "Receipts 2,500.00 mg 50.00 mL 5",
                    "Administered (given) 390.00 mg 7.80 mL", "Wasted (with the administration, witnessed) 70.00 mg 1.40 mL",
                    "Transferred and returned 500.00 mg 10.00 mL 1",
                    "Breakage and spills recorded at the time (two people) 50.00 mg 1.00 mL",
                    "Ending inventory (counted) 2,440.00 mg 48.80 mL 4 + 8.80 mL",
                    "Difference (before adjustments) -50.00 mg -1.00 mL",
                    "Difference after adjustments 0.00 mg 0.00 mL"):
        assert printed in audit_pdf, printed

    # Receiving: the invoice of 5, 5 received (columns: container, invoiced, received, mL, mg).
    receiving = report("receiving")
    assert "INV-2001 Gulf Medical Supply" in receiving
    assert "10.00 mL 5 5 50.00 mL 2,500.00 mg KA2" in receiving
    # Transfers and returns: the sealed vial back to the supplier on its invoice.
    transfers = report("transfers")
    assert "Return to supplier 1 10.00 mL 500.00 mg" in transfers
    assert "RA-2012" in transfers and f"{r5} 10.00 mL 500.00 mg Pia Pharmacist (performed) Ned Nurse (witnessed)" \
        in transfers
    # Counts: the within-tolerance line, and the shortage resolved as a loss, 1.00 mL taken off the book.
    counts = report("counts")
    assert "4 count(s) in the period; 1 discrepancy(ies), 0 OPEN" in counts
    assert "6 sealed, 1 opened 65.45 mL -0.05 mL WITHIN TOLERANCE (\u00b10.10 mL): no discrepancy" in counts
    assert (f"{disc} {stamp(15, 7, 45)} (entry {seq_of(short, 'stock_counted')}) 67457-0001-10 Ketamine HCl "
            "injection 50 mg/mL 53.30 mL 52.30 mL -1.00 mL -50.00 mg theft or loss: not found after a search of the "
            f"med room Morgan Manager {stamp(15, 9, 0)} 1.00 mL") in counts
    # Form 106 worksheet: the narrative, who recorded it and when (not the discovery), the notice, the filing.
    form106 = report("form106")
    assert FORM_106["narrative"] in form106 and FORM_106["corrective_measures"] in form106
    assert f"Date of loss (discovered) {stamp(15, 7, 45)}" in form106
    assert f"Recorded by Morgan Manager at {stamp(15, 9, 30)}" in form106
    assert (f"sent {stamp(15, 15, 0)} by email to DEA Houston Division, Austin Resident Office, on time"
            in form106)
    assert f"filed {stamp(20, 11, 0)}, DEA confirmation 106-2026-0042187, on time" in form106
    assert f"Covers loss adjustments entry {adjusted}" in form106 and f"1.00 mL 50.00 mg {i1}" in form106

    # The discrepancy shows up resolved, nothing left open.
    all_disc = api.client.get(api.url("/discrepancies"), params={"status": "all"}, headers=api.headers("casey")).json()
    assert [(d["discrepancy_id"], d["status"]) for d in all_disc] == [(disc, "resolved")], all_disc
    assert api.client.get(api.url("/discrepancies"), headers=api.headers("casey")).json() == []

    result = verify(api.ledger, deep=True)
    assert result.ok, result
