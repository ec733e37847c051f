"""Every line of the accountability audit against figures computed by hand (issue 14).

One period is recorded through the real services (``ledger.services``) on both backends: an
initial inventory, a receipt, infusions with witnessed waste (in the same command and later with
``record_waste``), a two-person count that finds a spill (resolved into a loss adjustment), a
Form 41 destruction with two witnesses, a transfer to another practitioner, a return to the
supplier, a Form 106 theft report, two corrections (one removing stock, one adding it back) and a
closing two-person count that is short. Two products, so the figures are also split per NDC.

Every line of ``ledger.services.audit.LINES`` (beginning, receipts, to account for,
administered, wasted, destroyed, transferred/returned, losses, corrections, ending, accounted
for, difference) and the variance is a distinct, non-zero figure for each NDC and in total, in
mL, mg and containers (``test_the_hand_figures_tell_every_line_apart`` checks the table
itself). So moving an amount from one line to another, dropping a line or flipping a sign
changes at least one asserted figure. The expected side is written by hand below (literal
Decimals, the arithmetic in the comments); nothing is taken from the code under test.

The same figures are then read back through every way a person meets the audit: ``GET /audit``,
``csledger audit``, the audit PDF (embedded data and printed text) and ``verify-bundle``'s
offline recomputation.
"""

from __future__ import annotations

import io
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from ledger import services
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    DrawInput,
    InventoryItemInput,
    LostVialInput,
    ReceivedLineInput,
    ReceiveStock,
    RecordWaste,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    ReturnStock,
    StartCount,
    SubmitCount,
    TakeInventory,
    TransferStock,
    WasteInput,
)
from ledger.services import audit
from ledger.services.verify import verify
from ledger.storage.store import Ledger, make_engine, migrate
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import DEA, DEA2, KETAMINE_10, KETAMINE_50

K50, K10 = KETAMINE_50, KETAMINE_10  # 50 mg/mL in 10 mL vials; 10 mg/mL in 20 mL vials
UNITS = ("ml", "mg", "containers")
LINES = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred",
         "losses", "corrections", "ending", "accounted_for", "difference")
OUT_LINES = ("administered", "wasted", "destroyed", "transferred", "losses", "corrections")

# --- the figures, by hand -------------------------------------------------------------------
#
# Ketamine 50 mg/mL, 10 mL vials (mg = mL x 50; containers = mL / 10)
#   beginning     initial inventory: 5 sealed x 10 mL + 1 open vial 4.00 mL        =  54.00 mL
#   receipts      20 vials x 10 mL                                                 = 200.00 mL
#   administered  19 infusions x 10.00 mL + 2.50 mL + 2.70 mL                       = 195.20 mL
#   wasted        1.00 mL (with the infusion) + 0.50 mL (record_waste) + 0.30 mL    =   1.80 mL
#   destroyed     2 sealed vials x 10 mL (Form 41)                                 =  20.00 mL
#   transferred   1 sealed vial x 10 mL to another practitioner                    =  10.00 mL
#   losses        count found 4.50 mL in a vial holding 7.00 mL: spill             =   2.50 mL
#   corrections   0.70 mL removed                                                   =   0.70 mL
#   book at the closing count: 54 + 200 - 198.00 drawn - 20 - 10 - 2.50 - 0.70       =  23.80 mL
#   ending        counted 2 sealed x 10 mL + 3.00 mL open                           =  23.00 mL
#   to account for 54 + 200 = 254.00; accounted for 195.20 + 1.80 + 20 + 10 + 2.50 + 0.70 + 23
#   = 253.20; difference 253.20 - 254 = -0.80 mL (= counted 23.00 - book 23.80);
#   variance -0.80 / 254 x 100 = -0.3149..% -> -0.31 %
#
# Ketamine 10 mg/mL, 20 mL vials (mg = mL x 10; containers = mL / 20)
#   beginning     initial inventory: 2 sealed x 20 mL + 1 open vial 13.00 mL       =  53.00 mL
#   receipts      6 vials x 20 mL                                                  = 120.00 mL
#   administered  7.60 + 18.00 + 6.00                                              =  31.60 mL
#   wasted        0.40 mL (with the infusion) + 1.20 mL (record_waste)             =   1.60 mL
#                 (the 18.00 mL infusion drew 20.00 mL: 0.80 mL is never given nor wasted)
#   destroyed     the open vial's last 5.00 mL (13.00 - 8.00 drawn)                =   5.00 mL
#   transferred   2 sealed vials x 20 mL returned to the supplier                  =  40.00 mL
#   losses        1 sealed vial x 20 mL stolen (Form 106)                          =  20.00 mL
#   corrections   0.60 mL added back (a draw recorded too high)                    =  -0.60 mL
#   book at the closing count: 53 + 120 - 34.00 drawn - 5 - 40 - 20 + 0.60          =  74.60 mL
#   ending        counted 3 sealed x 20 mL + 14.60 mL open (= the book)            =  74.60 mL
#   to account for 173.00; accounted for 31.60 + 1.60 + 5 + 40 + 20 - 0.60 + 74.60 = 172.20;
#   difference -0.80 mL (the 0.80 mL drawn but unreconciled); -0.80 / 173 = -0.4624..% -> -0.46 %

EXPECTED = {
    K50: {
        "ml": {"beginning": D("54.00"), "receipts": D("200.00"), "to_account_for": D("254.00"),
               "administered": D("195.20"), "wasted": D("1.80"), "destroyed": D("20.00"),
               "transferred": D("10.00"), "losses": D("2.50"), "corrections": D("0.70"), "ending": D("23.00"),
               "accounted_for": D("253.20"), "difference": D("-0.80")},
        # mL x 50 mg/mL
        "mg": {"beginning": D("2700.00"), "receipts": D("10000.00"), "to_account_for": D("12700.00"),
               "administered": D("9760.00"), "wasted": D("90.00"), "destroyed": D("1000.00"),
               "transferred": D("500.00"), "losses": D("125.00"), "corrections": D("35.00"), "ending": D("1150.00"),
               "accounted_for": D("12660.00"), "difference": D("-40.00")},
        # mL / 10 mL
        "containers": {"beginning": D("5.40"), "receipts": D("20.00"), "to_account_for": D("25.40"),
                       "administered": D("19.52"), "wasted": D("0.18"), "destroyed": D("2.00"),
                       "transferred": D("1.00"), "losses": D("0.25"), "corrections": D("0.07"), "ending": D("2.30"),
                       "accounted_for": D("25.32"), "difference": D("-0.08")},
        "variance_percent": D("-0.31"),
        "unreconciled_ml": D("0.00"),
        "book_at_end_ml": D("23.80"),
    },
    K10: {
        "ml": {"beginning": D("53.00"), "receipts": D("120.00"), "to_account_for": D("173.00"),
               "administered": D("31.60"), "wasted": D("1.60"), "destroyed": D("5.00"),
               "transferred": D("40.00"), "losses": D("20.00"), "corrections": D("-0.60"), "ending": D("74.60"),
               "accounted_for": D("172.20"), "difference": D("-0.80")},
        # mL x 10 mg/mL
        "mg": {"beginning": D("530.00"), "receipts": D("1200.00"), "to_account_for": D("1730.00"),
               "administered": D("316.00"), "wasted": D("16.00"), "destroyed": D("50.00"),
               "transferred": D("400.00"), "losses": D("200.00"), "corrections": D("-6.00"), "ending": D("746.00"),
               "accounted_for": D("1722.00"), "difference": D("-8.00")},
        # mL / 20 mL
        "containers": {"beginning": D("2.65"), "receipts": D("6.00"), "to_account_for": D("8.65"),
                       "administered": D("1.58"), "wasted": D("0.08"), "destroyed": D("0.25"),
                       "transferred": D("2.00"), "losses": D("1.00"), "corrections": D("-0.03"), "ending": D("3.73"),
                       "accounted_for": D("8.61"), "difference": D("-0.04")},
        "variance_percent": D("-0.46"),
        "unreconciled_ml": D("0.80"),
        "book_at_end_ml": D("74.60"),
    },
}
# In total: the two products added line by line; the variance is of mg: -48 / 14,430 x 100
# = -0.3326..% -> -0.33 %.
TOTAL = {
    "ml": {"beginning": D("107.00"), "receipts": D("320.00"), "to_account_for": D("427.00"),
           "administered": D("226.80"), "wasted": D("3.40"), "destroyed": D("25.00"), "transferred": D("50.00"),
           "losses": D("22.50"), "corrections": D("0.10"), "ending": D("97.60"), "accounted_for": D("425.40"),
           "difference": D("-1.60")},
    "mg": {"beginning": D("3230.00"), "receipts": D("11200.00"), "to_account_for": D("14430.00"),
           "administered": D("10076.00"), "wasted": D("106.00"), "destroyed": D("1050.00"),
           "transferred": D("900.00"), "losses": D("325.00"), "corrections": D("29.00"), "ending": D("1896.00"),
           "accounted_for": D("14382.00"), "difference": D("-48.00")},
    "containers": {"beginning": D("8.05"), "receipts": D("26.00"), "to_account_for": D("34.05"),
                   "administered": D("21.10"), "wasted": D("0.26"), "destroyed": D("2.25"), "transferred": D("3.00"),
                   "losses": D("1.25"), "corrections": D("0.04"), "ending": D("6.03"), "accounted_for": D("33.93"),
                   "difference": D("-0.12")},
    "variance_percent": D("-0.33"),
}
NAMES = {K50: "Ketamine HCl injection 50 mg/mL", K10: "Ketamine HCl injection 10 mg/mL"}


# --- the period, through the services ------------------------------------------------------


@dataclass
class Recorded:
    ops: Ops
    start: datetime
    end: datetime
    t0: datetime


def record_period(ledger: Ledger) -> Recorded:
    """Record the period whose audit is computed by hand above (times relative to t0, 20 h ago)."""
    ops = Ops(ledger)
    t0 = datetime.now(UTC) - timedelta(hours=20)

    def at(hours: float) -> datetime:
        return t0 + timedelta(hours=hours)

    def dose(draws: list[tuple[str, str]], given: str, when: datetime, waste: str | None = None) -> dict:
        return services.administer_dose(ledger, ops.nurse, AdministerDose(
            ops.patient_id, PRESCRIBER_DEA, "80.00", "0.50", tuple(DrawInput(v, ml) for v, ml in draws), given,
            when, when + timedelta(minutes=40),
            waste=WasteInput(waste, "syringe into drug disposal container") if waste else None), witness=ops.nurse2)

    def waste_later(res: dict, ml: str, when: datetime) -> None:
        services.record_waste(ledger, ops.nurse, RecordWaste(res["administration_id"], ml,
                                                              "syringe into drug disposal container", when),
                              witness=ops.nurse2)

    # t0: the initial inventory (before the period starts at t0 + 10 min: the beginning is counted)
    inv = services.take_inventory(ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business", t0, (
        InventoryItemInput(K50, "KA1", "2028-01-31", sealed=True, containers=5),
        InventoryItemInput(K50, "KA1", "2028-01-31", sealed=False, ml="4.00"),
        InventoryItemInput(K10, "KB1", "2028-01-31", sealed=True, containers=2),
        InventoryItemInput(K10, "KB1", "2028-01-31", sealed=False, ml="13.00"),
    )))["vial_ids"]
    i50, open50, j1, open10 = inv[:5], inv[5], inv[6], inv[8]  # inv[7]: the sealed 10 mg/mL vial kept
    rec = services.receive_stock(ledger, ops.nurse, ReceiveStock(ops.supplier_id, "INV-L-1", at(1), (
        ReceivedLineInput(K50, 20, "KA2", "2028-06-30"),
        ReceivedLineInput(K10, 6, "KB2", "2028-06-30"),
    )))["vial_ids"]
    r50, q10 = rec[:20], rec[20:]

    # 50 mg/mL: 19 infusions of one whole vial each (the 5 inventoried sealed vials, then 14 received)
    for i, v in enumerate([*i50, *r50[:14]]):
        dose([(v, "10.00")], "10.00", at(2) + timedelta(minutes=5 * i))
    # the open vial's 4.00 mL: 2.50 given, 1.00 wasted at once, 0.50 wasted later
    d20 = dose([(open50, "4.00")], "2.50", at(4), waste="1.00")
    waste_later(d20, "0.50", at(4.75))
    # a received vial opened: 3.00 drawn, 2.70 given, 0.30 wasted (7.00 mL left in it)
    d21 = dose([(r50[14], "3.00")], "2.70", at(5), waste="0.30")
    # 10 mg/mL: 8.00 drawn from the open vial (7.60 given, 0.40 wasted); a whole vial (18.00 given,
    # 1.20 wasted later, 0.80 never accounted for); 6.00 drawn from a received vial, all given
    dose([(open10, "8.00")], "7.60", at(5.5), waste="0.40")
    k2 = dose([(j1, "20.00")], "18.00", at(5.75))
    waste_later(k2, "1.20", at(6.5))
    k3 = dose([(q10[3], "6.00")], "6.00", at(6.25))

    # a count of the 50 mg/mL at t0 + 7 h: book 5 sealed (50 mL) + 7.00 mL open; found 4.50 mL open
    s1 = services.start_count(ledger, ops.nurse, StartCount(ndcs=(K50,)))
    c1 = services.submit_count(ledger, ops.nurse, SubmitCount(s1["session_id"], (CountLineInput(K50, 5, 1, "4.50"),),
                                                              at(7)), second_counter=ops.nurse2)
    (spill,) = c1["discrepancy_ids"]

    # Form 41: two sealed 50 mg/mL vials and the 10 mg/mL open vial's remaining 5.00 mL, two witnesses
    services.destroy_stock(ledger, ops.pharmacist, DestroyStock(
        (r50[15], r50[16], open10), "chemical digestion", "medication room", "expired and excess stock", at(8)),
        witnesses=(ops.nurse, ops.nurse2))
    # a sealed 50 mg/mL vial to another practitioner (within the 5 % rule: 21.10 containers dispensed)
    services.transfer_stock(ledger, ops.pharmacist, TransferStock(
        (r50[17],), DEA2, "Harbor Ketamine Partners", AddressInput("9 Bay St", "Austin", "TX", "78702"), "TR-1",
        at(8.5)))
    # two sealed 10 mg/mL vials back to the supplier
    services.return_stock(ledger, ops.pharmacist, ReturnStock(
        (q10[0], q10[1]), "supplier", "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"),
        "PB1234563", "RET-1", at(9)))
    # Form 106: a sealed 10 mg/mL vial stolen
    services.report_theft_or_loss(ledger, ops.compliance, ReportTheftOrLoss(
        at(10), "night_break_in", True, 0, "12.50", lost=(LostVialInput(q10[2]),),
        police_department="Austin Police Department", police_report_number="APD-1"))

    # now: the spill is approved (2.50 mL off the open 50 mg/mL vial), then two corrections
    services.resolve_discrepancy(ledger, ops.manager, ResolveDiscrepancy(spill, "spill", "vial knocked over"))
    services.correct_entry(ledger, ops.nurse, CorrectEntry(d21["entries"][0]["seq"], "the draw left 0.70 mL less",
                                                           (CorrectionLineInput(r50[14], "remove", "0.70"),)))
    services.correct_entry(ledger, ops.nurse, CorrectEntry(k3["entries"][0]["seq"], "the draw was 0.60 mL less",
                                                           (CorrectionLineInput(q10[3], "add", "0.60"),)))

    # the closing count of both products: 50 mg/mL short by 0.80 mL, 10 mg/mL as the book
    s2 = services.start_count(ledger, ops.nurse, StartCount())
    c2 = services.submit_count(ledger, ops.nurse, SubmitCount(s2["session_id"], (
        CountLineInput(K50, 2, 1, "3.00"), CountLineInput(K10, 3, 1, "14.60")), datetime.now(UTC)),
        second_counter=ops.nurse2)
    assert len(c2["discrepancy_ids"]) == 1  # the 50 mg/mL only
    return Recorded(ops, t0 + timedelta(minutes=10), datetime.now(UTC) + timedelta(seconds=1), t0)


def lines_of(p: dict, unit: str) -> dict:
    return {line: D(str(p[unit][line])) for line in LINES}


def assert_figures(a: dict) -> None:
    """Every figure of an audit answer (Decimals or Decimal strings) against the hand table."""
    by_ndc = {p["ndc"]: p for p in a["products"]}
    assert set(by_ndc) == {K50, K10}
    for ndc, want in EXPECTED.items():
        p = by_ndc[ndc]
        for unit in UNITS:
            assert lines_of(p, unit) == want[unit], (ndc, unit)
        assert D(str(p["variance_percent"])) == want["variance_percent"], ndc
    for unit in UNITS:
        assert lines_of(a["total"], unit) == TOTAL[unit], ("total", unit)
    assert D(str(a["total"]["variance_percent"])) == TOTAL["variance_percent"]


# --- the table itself ------------------------------------------------------------------------


def test_the_hand_figures_tell_every_line_apart():
    """The hand table is consistent (the audit's identities hold in it) and, per NDC and in total
    and per unit, every line is non-zero and differs from every other line: so a test comparing
    the audit with this table fails when an amount lands on the wrong line, a line is dropped
    (it becomes 0) or a sign flips (corrections and the difference are signed)."""
    tables = [(ndc, want) for ndc, want in EXPECTED.items()] + [("total", TOTAL)]
    for name, want in tables:
        for unit in UNITS:
            t = want[unit]
            assert all(v != 0 for v in t.values()), (name, unit)
            assert len(set(t.values())) == len(LINES), (name, unit)
            assert len({abs(v) for v in t.values()}) == len(LINES), (name, unit)  # a flipped sign is caught too
            assert t["to_account_for"] == t["beginning"] + t["receipts"], (name, unit)
            assert t["accounted_for"] == sum((t[x] for x in OUT_LINES), D("0.00")) + t["ending"], (name, unit)
            assert t["difference"] == t["accounted_for"] - t["to_account_for"], (name, unit)
    for ndc, strength, container in ((K50, D("50"), D("10")), (K10, D("10"), D("20"))):
        for line in LINES:
            assert EXPECTED[ndc]["mg"][line] == EXPECTED[ndc]["ml"][line] * strength
            assert EXPECTED[ndc]["containers"][line] == EXPECTED[ndc]["ml"][line] / container
    for unit in UNITS:
        for line in LINES:
            assert TOTAL[unit][line] == EXPECTED[K50][unit][line] + EXPECTED[K10][unit][line]
    variances = [EXPECTED[K50]["variance_percent"], EXPECTED[K10]["variance_percent"], TOTAL["variance_percent"]]
    assert len(set(variances)) == 3 and all(v != 0 for v in variances)


# --- the service, on both backends -----------------------------------------------------------


class AuditLinesContract:
    backend: str

    def test_every_line_by_hand(self, ledger):
        """``audit.audit`` over the recorded period equals the hand table on every line, per NDC
        and in total, in mL, mg and containers, and the variances. Catches, among others:
        destructions reported under transferred; returns or transfers dropped or moved to
        another line; losses (adjusted or Form 106) with the wrong sign or dropped; the
        corrections line dropped or its sign flipped; waste counted from the draw; the ending
        taken from the book instead of the count; variance of the wrong base."""
        rec = record_period(ledger)
        a = audit.audit(ledger, rec.ops.dea, rec.start, rec.end)
        assert_figures(a)
        by_ndc = {p["ndc"]: p for p in a["products"]}
        for ndc, want in EXPECTED.items():
            p = by_ndc[ndc]
            assert p["name"] == NAMES[ndc]
            assert p["beginning_basis"] == "counted" and p["ending_basis"] == "counted"
            assert p["unreconciled"]["ml"] == want["unreconciled_ml"]
            assert p["book_at_end_ml"] == want["book_at_end_ml"]
            assert not p["flagged"]  # 0.31 % and 0.46 % are inside the default 1 %
        # the K10 0.80 mL drawn but neither given nor wasted, in mg and containers: 8.00 mg, 0.04
        assert by_ndc[K10]["unreconciled"] == {"ml": D("0.80"), "mg": D("8.00"), "containers": D("0.04")}
        # at a 0.40 % threshold only the 10 mg/mL (-0.46 %) is flagged; the total (-0.33 %) is not
        strict = audit.audit(ledger, rec.ops.dea, rec.start, rec.end, variance_threshold=D("0.40"))
        assert {p["ndc"]: p["flagged"] for p in strict["products"]} == {K50: False, K10: True}
        assert strict["total"]["flagged"] is False
        assert verify(ledger, deep=True).ok

    def test_the_lines_follow_the_period(self, ledger):
        """A period ending at t0 + 8 h 15 min, before the transfer, return, theft, spill approval
        and corrections, has none of them: no line is filled from outside its period. By hand,
        50 mg/mL: the count at t0 + 7 h ends its period (ending 54.50 mL counted = 5 x 10 + 4.50
        against a book of 57.00), so the destruction at t0 + 8 h is not in it either. 10 mg/mL
        (that count did not cover it, so the ending is the book at t0 + 8 h 15 min): destroyed
        5.00 mL at t0 + 8 h; nothing transferred, lost or corrected; ending 53 + 120 - 34 drawn - 5
        = 134.00 mL; difference -0.80 mL (the unreconciled draw). Catches a line summed over all
        entries instead of the period, and activity after a closing count leaking into it."""
        rec = record_period(ledger)
        a = audit.audit(ledger, rec.ops.dea, rec.start, rec.t0 + timedelta(hours=8, minutes=15))
        by_ndc = {p["ndc"]: p["ml"] for p in a["products"]}
        assert by_ndc[K50] == {
            "beginning": D("54.00"), "receipts": D("200.00"), "to_account_for": D("254.00"),
            "administered": D("195.20"), "wasted": D("1.80"), "destroyed": D("0.00"), "transferred": D("0.00"),
            "losses": D("0.00"), "corrections": D("0.00"), "ending": D("54.50"),
            # 195.20 + 1.80 + 54.50 = 251.50; 251.50 - 254 = -2.50 (the spill, not yet approved)
            "accounted_for": D("251.50"), "difference": D("-2.50")}
        assert by_ndc[K10] == {
            "beginning": D("53.00"), "receipts": D("120.00"), "to_account_for": D("173.00"),
            "administered": D("31.60"), "wasted": D("1.60"), "destroyed": D("5.00"), "transferred": D("0.00"),
            "losses": D("0.00"), "corrections": D("0.00"), "ending": D("134.00"),
            # 31.60 + 1.60 + 5 + 134 = 172.20
            "accounted_for": D("172.20"), "difference": D("-0.80")}


class TestSQLite(AuditLinesContract):
    backend = "sqlite"


class TestPostgres(AuditLinesContract):
    backend = "postgresql"


# --- the same figures through every interface (SQLite, recorded once) ------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The period recorded once on SQLite with checkpoint signing attached (so a bundle can be
    exported), plus the arguments the interfaces need."""
    from ledger.storage.log import attach
    from tests.integrity.conftest import settings_for

    tmp = tmp_path_factory.mktemp("audit_lines")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    attach(ledger, settings_for(tmp))
    try:
        rec = record_period(ledger)
    finally:
        ledger.dispose()
    zone = zoneinfo.ZoneInfo("America/Chicago")
    env = {"CSLEDGER_KEY_DIR": str(tmp / "keys"), "CSLEDGER_ORIGIN_PREFIX": "clinic.test", "COLUMNS": "200",
           "PYTHONIOENCODING": "utf-8"}
    # whole local days from the day of the inventory to today: the initial inventory then falls
    # inside the period and begins it (same figures, basis "book"); the closing count ends it
    first = rec.t0.astimezone(zone).date()
    last = datetime.now(UTC).astimezone(zone).date()
    return {"url": url, "dir": tmp, "rec": rec, "env": env, "first": first.isoformat(), "last": last.isoformat()}


def test_get_audit_json_by_hand(recorded):
    """``GET /audit`` (an auditor's login) answers the hand figures as decimal strings. Catches
    any of the line breaks listed in ``test_every_line_by_hand`` through the HTTP API."""
    from fastapi.testclient import TestClient

    from api.http.app import create_app
    from api.http.auth import fast_test_hasher
    from ledger.settings import Settings
    from tests.api.conftest import PATIENT_KEY, Api, Clock

    ledger = Ledger(make_engine(recorded["url"]))
    try:
        clock = Clock()
        app = create_app(ledger, Settings(patient_key=PATIENT_KEY), clock=clock, password_hasher=fast_test_hasher())
        api = Api(TestClient(app, raise_server_exceptions=False), recorded["rec"].ops, clock)
        api.set_password("ari")  # Ops' auditor
        rec = recorded["rec"]
        r = api.client.get(api.url("/audit"), headers=api.headers("ari"), params={
            "start": rec.start.isoformat(), "end": rec.end.isoformat()})
        assert r.status_code == 200, r.text
    finally:
        ledger.dispose()
    a = r.json()
    for p in a["products"]:
        for unit in UNITS:
            assert all(isinstance(v, str) for v in p[unit].values())  # decimal strings, never floats
    assert_figures(a)
    # the line that issue 14 was about, spelled out
    k50 = next(p for p in a["products"] if p["ndc"] == K50)
    assert (k50["mg"]["destroyed"], k50["mg"]["transferred"], k50["mg"]["losses"], k50["mg"]["corrections"]) == (
        "1000.00", "500.00", "125.00", "35.00")


def _cli_tables(stdout: str) -> dict[str, dict[str, list[str]]]:
    """``csledger audit``'s rich tables: {title: {line label: [mg, mL, containers]}}."""
    tables: dict[str, dict[str, list[str]]] = {}
    title, current = None, None
    for raw_line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", raw_line)]
        if len(cells) < 6:  # not a table row (a title, a border)
            text = raw_line.strip()
            if re.search(r"\w", text):  # borders have no letters or digits
                title, current = text, {}
                tables[title] = current
            continue
        label, values = cells[1], cells[2:5]
        if label == "line" or current is None:
            continue
        current[label] = values
    return tables


def test_cli_audit_by_hand(recorded):
    """``csledger audit`` prints, per NDC and in total, each line with its hand figures in mg,
    mL and containers. Catches the line breaks of ``test_every_line_by_hand`` (and labels
    printed against another line's figures) in the command line's output."""
    from tests.cli.test_cli import run

    p = run(["audit", "--registrant", DEA, "--from", recorded["first"], "--to", recorded["last"],
             "--db", recorded["url"]], recorded["dir"], recorded["env"])
    tables = _cli_tables(p.stdout)
    want_tables = {f"{K50} {NAMES[K50]}": EXPECTED[K50], f"{K10} {NAMES[K10]}": EXPECTED[K10], "TOTAL": TOTAL}
    assert set(tables) == set(want_tables), p.stdout
    for title, want in want_tables.items():
        rows = tables[title]
        got = {}
        for label, (mg, ml, containers) in rows.items():
            if label.startswith("variance"):
                continue
            line = label.split(" (")[0].replace(" ", "_")
            got[line] = {"mg": D(mg), "ml": D(ml), "containers": D(containers)}
        assert set(got) == set(LINES), (title, rows)
        for line in LINES:
            assert got[line] == {u: want[u][line] for u in ("mg", "ml", "containers")}, (title, line)
        (variance,) = [v for k, v in rows.items() if k.startswith("variance")]
        assert variance[0] == str(want["variance_percent"]), (title, variance)


def test_pdf_by_hand(recorded):
    """``csledger report audit``: the PDF's embedded figures and its printed rows (label, mg, mL,
    containers on one row) are the hand figures. Catches the line breaks of
    ``test_every_line_by_hand`` in the report a DEA investigator is handed."""
    from pypdf import PdfReader

    from reports.verify import read_report_data
    from tests.cli.test_cli import run

    pdf = recorded["dir"] / "audit_lines.pdf"
    run(["report", "audit", "--registrant", DEA, "--from", recorded["first"], "--to", recorded["last"],
         "--out", str(pdf), "--db", recorded["url"]], recorded["dir"], recorded["env"])
    data, _ = read_report_data(pdf.read_bytes())
    assert_figures(data["figures"])
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(pdf).pages)
    labels = {"beginning": "Beginning inventory", "receipts": "Receipts", "to_account_for": "Total to account for",
              "administered": "Administered (given)", "wasted": "Wasted (with the administration, witnessed)",
              "destroyed": "Destroyed (Form 41)", "transferred": "Transferred and returned",
              "losses": "Reported losses (adjusted and Form 106)", "corrections": "Corrections (net out of stock)",
              "ending": "Ending inventory (counted)", "accounted_for": "Total accounted for",
              "difference": "Difference"}

    def fmt(v: D, unit: str = "") -> str:
        s = f"{v:,}"
        return f"{s} {unit}" if unit else s

    for want in (EXPECTED[K50], EXPECTED[K10]):
        for line, label in labels.items():
            row = f"{label} {fmt(want['mg'][line], 'mg')} {fmt(want['ml'][line], 'mL')} {fmt(want['containers'][line])}"
            assert row in text, row
        assert f"Variance {fmt(want['variance_percent'], '%')}" in text
    for line in ("destroyed", "transferred", "losses", "corrections"):  # the total table's rows
        row = (f"{labels[line]} {fmt(TOTAL['mg'][line], 'mg')} {fmt(TOTAL['ml'][line], 'mL')} "
               f"{fmt(TOTAL['containers'][line])}")
        assert row in text, row
    assert f"Variance (of mg) {fmt(TOTAL['variance_percent'], '%')}" in text


def test_bundle_audit_by_hand(recorded):
    """``verify_bundle(..., audit_between=...)`` (what ``csledger verify-bundle --audit-from``
    prints) recomputes the hand figures offline from the exported entries alone. Catches the
    line breaks of ``test_every_line_by_hand`` in an inspector's offline check."""
    from ledger.services.bundle import export_bundle, verify_bundle
    from ledger.storage import log as tl

    ledger = Ledger(make_engine(recorded["url"]))
    try:
        buf = io.BytesIO()
        with ledger.reading() as c:
            export_bundle(c, DEA, buf)
            keys = [k.verifier_key for k in tl.log_keys(c, DEA)]
    finally:
        ledger.dispose()
    rec = recorded["rec"]
    rep = verify_bundle(io.BytesIO(buf.getvalue()), trusted_log_keys=keys, audit_between=(rec.start, rec.end))
    assert rep.ok, rep.problem
    assert_figures(rep.audit)



def test_a_period_beginning_at_a_count_accounts_for_its_spill_once(ledger):
    """The period after the spill count (t0 + 7 h, end]: the 50 mg/mL beginning is that count,
    54.50 mL (5 x 10 + 4.50), which the 2.50 mL spill had already left. By hand: 54.50 - 20.00
    destroyed - 10.00 transferred - 0.70 corrected = 23.80 mL should be on hand; 23.00 was counted,
    so the difference is -0.80 mL (-40.00 mg), as over the whole period. Today the audit also puts
    the 2.50 mL approved at the end of the period on the losses line and answers +1.70 mL.
    (Either a book beginning of 57.00 with the 2.50 mL loss, or a counted beginning without it,
    gives -0.80: only the difference is asserted.) Found as a product defect with issue 14 and
    fixed in ``accountability``: a loss adjusted for a discrepancy of the count the beginning
    rests on is not a loss of the period (the count already found it gone)."""
    rec = record_period(ledger)
    a = audit.audit(ledger, rec.ops.dea, rec.t0 + timedelta(hours=7), rec.end)
    p = next(p for p in a["products"] if p["ndc"] == K50)
    assert (p["ml"]["difference"], p["mg"]["difference"]) == (D("-0.80"), D("-40.00")), p["ml"]
