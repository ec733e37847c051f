"""Every line of the accountability audit against figures computed by hand (issues 14 and 15).

One period is recorded through the real services (``ledger.services``) on both backends: an
initial inventory, a receipt, infusions with witnessed waste (in the same command, balanced, and
later with ``record_waste``), a two-person count of both products that finds each short, a spill
recorded after that count (it happened before it) that explains the 50 mg/mL shortage, the
10 mg/mL shortage accepted as theft or loss (a loss adjustment signed by two people), a Form 41
destruction with two witnesses, a transfer to another practitioner, a return to the supplier, a
recoverable breakage set aside and then destroyed, a spill of each product recorded at the time,
a Form 106 theft report, two corrections (one removing stock with an approver, one adding it back)
and a closing two-person count. Two products, so the figures are also split per NDC.

Every line of ``ledger.services.audit.LINES`` (beginning, receipts, to account for,
administered, wasted, destroyed, transferred/returned, breakage at the time, theft or loss,
ending, accounted for, the difference BEFORE adjustments, the adjustments after it and the
difference after them) and both variances are distinct, non-zero figures for each NDC and in
total, in mL, mg and containers (``test_the_hand_figures_tell_every_line_apart`` checks the table
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
    BreakageLineInput,
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    DrawInput,
    InventoryItemInput,
    LostVialInput,
    ReceivedLineInput,
    ReceiveStock,
    RecordBreakage,
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
from tests.conftest import DEA, DEA2, KETAMINE_10, KETAMINE_50, RECEIVER_REGISTRATION

K50, K10 = KETAMINE_50, KETAMINE_10  # 50 mg/mL in 10 mL vials; 10 mg/mL in 20 mL vials
UNITS = ("ml", "mg", "containers")
LINES = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred",
         "breakage", "theft_or_loss", "ending", "accounted_for", "difference", "adjustments",
         "difference_after_adjustments")
OUT_LINES = ("administered", "wasted", "destroyed", "transferred", "breakage", "theft_or_loss")

# --- the figures, by hand -------------------------------------------------------------------
#
# Ketamine 50 mg/mL, 10 mL vials (mg = mL x 50; containers = mL / 10)
#   beginning     initial inventory: 5 sealed x 10 mL + 1 open vial 4.00 mL        =  54.00 mL
#   receipts      21 vials x 10 mL                                                 = 210.00 mL
#   administered  19 infusions x 10.00 mL + 2.50 mL + 2.70 mL                       = 195.20 mL
#   wasted        1.00 + 0.50 mL (both record_waste, after an infusion recorded
#                 without waste) + 0.30 mL (with its infusion, 3.00 = 2.70 + 0.30)  =   1.80 mL
#   destroyed     2 sealed vials x 10 mL + the recoverable broken vial's 10 mL     =  30.00 mL
#   transferred   1 sealed vial x 10 mL to another practitioner                    =  10.00 mL
#   breakage      a spill recorded at the time: 1.20 mL from the open vial         =   1.20 mL
#   theft_or_loss Form 106: 0.90 mL taken from the open vial                       =   0.90 mL
#   ending        closing count: 2 sealed x 10 mL + 0.90 mL open                   =  20.90 mL
#   to account for 54 + 210 = 264.00; accounted for 195.20 + 1.80 + 30 + 10 + 1.20 + 0.90 + 20.90
#   = 260.00; difference (before adjustments) 260.00 - 264.00 = -4.00 mL;
#   variance -4.00 / 264 x 100 = -1.5151..% -> -1.52 %
#   adjustments   the spill of 2.50 mL recorded after the first count (it happened before it,
#                 so that count could not see it) + 0.70 mL removed by a correction  =   3.20 mL
#   difference after adjustments -4.00 + 3.20 = -0.80 mL; -0.80 / 264 = -0.3030..% -> -0.30 %
#   check by the book at the closing count: 54 + 210 - 197.00 drawn (190 + 4 + 3) - 30 - 10
#   - 1.20 - 0.90 - 2.50 - 0.70 = 21.70 mL (2 sealed + 1.70 in the open vial); counted 20.90,
#   so counted - book = -0.80 (after) and -0.80 - 3.20 = -4.00 (before)
#
# Ketamine 10 mg/mL, 20 mL vials (mg = mL x 10; containers = mL / 20)
#   beginning     initial inventory: 2 sealed x 20 mL + 1 open vial 13.00 mL       =  53.00 mL
#   receipts      6 vials x 20 mL                                                  = 120.00 mL
#   administered  7.60 + 18.00 + 6.00                                              =  31.60 mL
#   wasted        0.40 mL (with the infusion) + 1.20 mL (record_waste)             =   1.60 mL
#                 (the 18.00 mL infusion drew 20.00 mL: 0.80 mL is never given nor wasted)
#   destroyed     the open vial's last 5.00 mL (13.00 - 8.00 drawn)                =   5.00 mL
#   transferred   2 sealed vials x 20 mL returned to the supplier                  =  40.00 mL
#   breakage      a spill recorded at the time: 1.40 mL from an opened vial        =   1.40 mL
#   theft_or_loss 1 sealed vial x 20 mL stolen (Form 106)                          =  20.00 mL
#   ending        closing count: 3 sealed x 20 mL + 12.20 mL open                  =  72.20 mL
#   to account for 173.00; accounted for 31.60 + 1.60 + 5 + 40 + 1.40 + 20 + 72.20 = 171.80;
#   difference (before adjustments) -1.20 mL; -1.20 / 173 = -0.6936..% -> -0.69 %
#   adjustments   the first count's 1.00 mL shortage accepted as theft or loss (loss adjustment)
#                 - 0.60 mL added back by a correction (a draw recorded too high)  =   0.40 mL
#   difference after adjustments -1.20 + 0.40 = -0.80 mL (the unreconciled 0.80 mL);
#   -0.80 / 173 = -0.4624..% -> -0.46 %
#   check by the book at the closing count: 53 + 120 - 34.00 drawn - 5 - 40 - 1.40 - 20 - 1.00
#   + 0.60 = 72.20 mL = counted
#
# Containers are mL / container, each rounded half-even to 0.01 (1.40 / 20 = 0.07; 72.20 / 20 =
# 3.61; 0.40 / 20 = 0.02; -1.20 / 20 = -0.06; -0.80 / 20 = -0.04; 171.80 / 20 = 8.59).

EXPECTED = {
    K50: {
        "ml": {"beginning": D("54.00"), "receipts": D("210.00"), "to_account_for": D("264.00"),
               "administered": D("195.20"), "wasted": D("1.80"), "destroyed": D("30.00"),
               "transferred": D("10.00"), "breakage": D("1.20"), "theft_or_loss": D("0.90"), "ending": D("20.90"),
               "accounted_for": D("260.00"), "difference": D("-4.00"), "adjustments": D("3.20"),
               "difference_after_adjustments": D("-0.80")},
        # mL x 50 mg/mL
        "mg": {"beginning": D("2700.00"), "receipts": D("10500.00"), "to_account_for": D("13200.00"),
               "administered": D("9760.00"), "wasted": D("90.00"), "destroyed": D("1500.00"),
               "transferred": D("500.00"), "breakage": D("60.00"), "theft_or_loss": D("45.00"),
               "ending": D("1045.00"), "accounted_for": D("13000.00"), "difference": D("-200.00"),
               "adjustments": D("160.00"), "difference_after_adjustments": D("-40.00")},
        # mL / 10 mL
        "containers": {"beginning": D("5.40"), "receipts": D("21.00"), "to_account_for": D("26.40"),
                       "administered": D("19.52"), "wasted": D("0.18"), "destroyed": D("3.00"),
                       "transferred": D("1.00"), "breakage": D("0.12"), "theft_or_loss": D("0.09"),
                       "ending": D("2.09"), "accounted_for": D("26.00"), "difference": D("-0.40"),
                       "adjustments": D("0.32"), "difference_after_adjustments": D("-0.08")},
        "variance_percent": D("-1.52"),
        "variance_after_adjustments_percent": D("-0.30"),
        "unreconciled_ml": D("0.00"),
        "book_at_end_ml": D("21.70"),
    },
    K10: {
        "ml": {"beginning": D("53.00"), "receipts": D("120.00"), "to_account_for": D("173.00"),
               "administered": D("31.60"), "wasted": D("1.60"), "destroyed": D("5.00"),
               "transferred": D("40.00"), "breakage": D("1.40"), "theft_or_loss": D("20.00"), "ending": D("72.20"),
               "accounted_for": D("171.80"), "difference": D("-1.20"), "adjustments": D("0.40"),
               "difference_after_adjustments": D("-0.80")},
        # mL x 10 mg/mL
        "mg": {"beginning": D("530.00"), "receipts": D("1200.00"), "to_account_for": D("1730.00"),
               "administered": D("316.00"), "wasted": D("16.00"), "destroyed": D("50.00"),
               "transferred": D("400.00"), "breakage": D("14.00"), "theft_or_loss": D("200.00"),
               "ending": D("722.00"), "accounted_for": D("1718.00"), "difference": D("-12.00"),
               "adjustments": D("4.00"), "difference_after_adjustments": D("-8.00")},
        # mL / 20 mL
        "containers": {"beginning": D("2.65"), "receipts": D("6.00"), "to_account_for": D("8.65"),
                       "administered": D("1.58"), "wasted": D("0.08"), "destroyed": D("0.25"),
                       "transferred": D("2.00"), "breakage": D("0.07"), "theft_or_loss": D("1.00"),
                       "ending": D("3.61"), "accounted_for": D("8.59"), "difference": D("-0.06"),
                       "adjustments": D("0.02"), "difference_after_adjustments": D("-0.04")},
        "variance_percent": D("-0.69"),
        "variance_after_adjustments_percent": D("-0.46"),
        "unreconciled_ml": D("0.80"),
        "book_at_end_ml": D("72.20"),
    },
}
# In total: the two products added line by line; the variances are of mg: before adjustments
# -212 / 14,930 x 100 = -1.4199..% -> -1.42 %; after -48 / 14,930 x 100 = -0.3215..% -> -0.32 %.
TOTAL = {
    "ml": {"beginning": D("107.00"), "receipts": D("330.00"), "to_account_for": D("437.00"),
           "administered": D("226.80"), "wasted": D("3.40"), "destroyed": D("35.00"), "transferred": D("50.00"),
           "breakage": D("2.60"), "theft_or_loss": D("20.90"), "ending": D("93.10"), "accounted_for": D("431.80"),
           "difference": D("-5.20"), "adjustments": D("3.60"), "difference_after_adjustments": D("-1.60")},
    "mg": {"beginning": D("3230.00"), "receipts": D("11700.00"), "to_account_for": D("14930.00"),
           "administered": D("10076.00"), "wasted": D("106.00"), "destroyed": D("1550.00"),
           "transferred": D("900.00"), "breakage": D("74.00"), "theft_or_loss": D("245.00"), "ending": D("1767.00"),
           "accounted_for": D("14718.00"), "difference": D("-212.00"), "adjustments": D("164.00"),
           "difference_after_adjustments": D("-48.00")},
    "containers": {"beginning": D("8.05"), "receipts": D("27.00"), "to_account_for": D("35.05"),
                   "administered": D("21.10"), "wasted": D("0.26"), "destroyed": D("3.25"), "transferred": D("3.00"),
                   "breakage": D("0.19"), "theft_or_loss": D("1.09"), "ending": D("5.70"), "accounted_for": D("34.59"),
                   "difference": D("-0.46"), "adjustments": D("0.34"), "difference_after_adjustments": D("-0.12")},
    "variance_percent": D("-1.42"),
    "variance_after_adjustments_percent": D("-0.32"),
}
NAMES = {K50: "Ketamine HCl injection 50 mg/mL", K10: "Ketamine HCl injection 10 mg/mL"}
#: Each product's adjustments after the difference, by hand: (kind, mL off the book, who signed
#: with what meaning, by username). The late spill is signed by its recorder and its witness;
#: the removing correction by its author and approver; the loss adjustment by the approving
#: manager and the second person; the correction that adds back by its author alone.
ADJUSTMENTS = {
    K50: [("breakage_recorded", D("2.50"), {("nora", "performed"), ("ned", "witnessed")}),
          ("entry_corrected", D("0.70"), {("nora", "performed"), ("pia", "approved")})],
    K10: [("loss_adjusted", D("1.00"), {("mia", "approved"), ("pia", "witnessed")}),
          ("entry_corrected", D("-0.60"), {("nora", "performed")})],
}

#: Issue 20: the rest of Form 106, required on every theft or loss report.
FORM_106 = {"narrative": "a vial is missing from the safe at opening", "corrective_measures": "safe code changed",
            "contact_name": "Mia Manager", "contact_phone": "512-555-0142"}


# --- the period, through the services ------------------------------------------------------


@dataclass
class Recorded:
    ops: Ops
    start: datetime
    end: datetime
    t0: datetime
    seqs: dict[str, int]


def record_period(ledger: Ledger) -> Recorded:
    """Record the period whose audit is computed by hand above (times relative to t0, 20 h ago)."""
    ops = Ops(ledger)
    t0 = datetime.now(UTC) - timedelta(hours=20)
    seqs: dict[str, int] = {}

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

    def breakage(what: str, vial: str, ml: str | None, when: datetime, recoverable: bool = False) -> int:
        return services.record_breakage(ledger, ops.nurse, RecordBreakage(
            what, f"{what} seen by both", recoverable, (BreakageLineInput(vial, ml),), when),
            witness=ops.nurse2)["breakage_seq"]

    # t0: the initial inventory (before the period starts at t0 + 10 min: the beginning is counted)
    inv = services.take_inventory(ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business", t0, (
        InventoryItemInput(K50, "KA1", "2028-01-31", sealed=True, containers=5),
        InventoryItemInput(K50, "KA1", "2028-01-31", sealed=False, ml="4.00",
                           first_punctured_on=(t0 - timedelta(days=1)).date().isoformat()),
        InventoryItemInput(K10, "KB1", "2028-01-31", sealed=True, containers=2),
        InventoryItemInput(K10, "KB1", "2028-01-31", sealed=False, ml="13.00",
                           first_punctured_on=(t0 - timedelta(days=1)).date().isoformat()),
    )), witness=ops.nurse)["vial_ids"]
    i50, open50, j1, open10 = inv[:5], inv[5], inv[6], inv[8]  # inv[7]: the sealed 10 mg/mL vial kept
    rec = services.receive_stock(ledger, ops.nurse, ReceiveStock(ops.supplier_id, "INV-L-1", at(1), (
        ReceivedLineInput(K50, 21, "KA2", "2028-06-30"),
        ReceivedLineInput(K10, 6, "KB2", "2028-06-30"),
    )))["vial_ids"]
    r50, q10 = rec[:21], rec[21:]

    # 50 mg/mL: 19 infusions of one whole vial each (the 5 inventoried sealed vials, then 14 received)
    for i, v in enumerate([*i50, *r50[:14]]):
        dose([(v, "10.00")], "10.00", at(2) + timedelta(minutes=5 * i))
    # the open vial's 4.00 mL: 2.50 given; the infusion is recorded without its waste (waste given
    # with the dose must account for the whole draw), then 1.00 and 0.50 wasted later, witnessed
    d20 = dose([(open50, "4.00")], "2.50", at(4))
    waste_later(d20, "1.00", at(4.25))
    waste_later(d20, "0.50", at(4.75))
    # a received vial opened: 3.00 drawn = 2.70 given + 0.30 wasted at once (7.00 mL left in it)
    d21 = dose([(r50[14], "3.00")], "2.70", at(5), waste="0.30")
    # 10 mg/mL: 8.00 drawn from the open vial (7.60 given, 0.40 wasted); a whole vial (18.00 given,
    # 1.20 wasted later, 0.80 never accounted for); 6.00 drawn from a received vial, all given
    dose([(open10, "8.00")], "7.60", at(5.5), waste="0.40")
    k2 = dose([(j1, "20.00")], "18.00", at(5.75))
    waste_later(k2, "1.20", at(6.5))
    k3 = dose([(q10[3], "6.00")], "6.00", at(6.25))

    # a count of both products at t0 + 7 h. 50 mg/mL: book 6 sealed (60.00) + 7.00 mL open =
    # 67.00; found 4.50 mL open: -2.50. 10 mg/mL: book 6 sealed (120.00) + 5.00 + 14.00 open =
    # 139.00; found 18.00 mL open: -1.00
    s1 = services.start_count(ledger, ops.nurse, StartCount(ndcs=(K50, K10)))
    c1 = services.submit_count(ledger, ops.nurse, SubmitCount(s1["session_id"], (
        CountLineInput(K50, 6, 1, "4.50"), CountLineInput(K10, 6, 2, "18.00")), at(7)), second_counter=ops.nurse2)
    seqs["count1"] = c1["entries"][0]["seq"]
    spill50, short10 = c1["discrepancy_ids"]
    # the 50 mg/mL shortage: a spill at t0 + 6 h 30 min, recorded (by the two who saw it) after the
    # count, which could not see it; the resolution points at it and adjusts nothing further
    seqs["late_spill"] = breakage("spill", r50[14], "2.50", at(6.5))
    services.resolve_discrepancy(ledger, ops.manager, ResolveDiscrepancy(
        spill50, "spill", "the vial knocked over before the count", breakage_seq=seqs["late_spill"]),
        witness=ops.pharmacist)

    # Form 41: two sealed 50 mg/mL vials and the 10 mg/mL open vial's remaining 5.00 mL, two witnesses
    services.destroy_stock(ledger, ops.pharmacist, DestroyStock(
        (r50[15], r50[16], open10), "chemical digestion", "medication room", "expired and excess stock", at(8)),
        witnesses=(ops.nurse, ops.nurse2))
    # a sealed 50 mg/mL vial to another practitioner (within the 5 % rule: 21.10 containers dispensed)
    services.transfer_stock(ledger, ops.pharmacist, TransferStock(
        (r50[17],), DEA2, "Harbor Ketamine Partners", AddressInput("9 Bay St", "Austin", "TX", "78702"), "TR-1",
        at(8.5), **RECEIVER_REGISTRATION), witness=ops.nurse)
    # two sealed 10 mg/mL vials back to the supplier
    services.return_stock(ledger, ops.pharmacist, ReturnStock(
        (q10[0], q10[1]), "supplier", "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"),
        "PB1234563", "RET-1", at(9)), witness=ops.nurse)
    # a sealed 50 mg/mL vial cracked, contents recoverable: set aside (nothing leaves the book),
    # then destroyed before two witnesses (10.00 mL on the destroyed line)
    breakage("breakage", r50[18], None, at(9.4), recoverable=True)
    # spills recorded at the time: 1.20 mL of the open 50 mg/mL vial, 1.40 mL of the opened 10 mg/mL one
    breakage("spill", r50[14], "1.20", at(9.5))
    breakage("spill", q10[3], "1.40", at(9.75))
    services.destroy_stock(ledger, ops.pharmacist, DestroyStock(
        (r50[18],), "chemical digestion", "medication room", "recovered from a cracked vial", at(9.8)),
        witnesses=(ops.nurse, ops.nurse2))
    # Form 106: a sealed 10 mg/mL vial stolen and 0.90 mL taken from the open 50 mg/mL vial
    services.report_theft_or_loss(ledger, ops.compliance, ReportTheftOrLoss(
        at(10), "night_break_in", True, 0, "12.50", lost=(LostVialInput(q10[2]), LostVialInput(r50[14], "0.90")),
        police_department="Austin Police Department", police_report_number="APD-1",
        **FORM_106), witness=ops.manager)

    # now: the 10 mg/mL shortage accepted as theft or loss (1.00 mL off the opened vial, signed
    # by the manager and a second person), then two corrections
    services.resolve_discrepancy(ledger, ops.manager, ResolveDiscrepancy(short10, "theft_or_loss",
                                                                         "not found after a search"),
                                 witness=ops.pharmacist)
    services.correct_entry(ledger, ops.nurse, CorrectEntry(d21["entries"][0]["seq"], "the draw left 0.70 mL less",
                                                           (CorrectionLineInput(r50[14], "remove", "0.70"),)),
                           approver=ops.pharmacist)
    services.correct_entry(ledger, ops.nurse, CorrectEntry(k3["entries"][0]["seq"], "the draw was 0.60 mL less",
                                                           (CorrectionLineInput(q10[3], "add", "0.60"),)))

    # the closing count of both products: 50 mg/mL short by 0.80 mL (book 21.70), 10 mg/mL as
    # the book (3 sealed + 14.00 - 1.40 - 1.00 + 0.60 = 12.20 mL open)
    s2 = services.start_count(ledger, ops.nurse, StartCount())
    c2 = services.submit_count(ledger, ops.nurse, SubmitCount(s2["session_id"], (
        CountLineInput(K50, 2, 1, "0.90"), CountLineInput(K10, 3, 1, "12.20")), datetime.now(UTC)),
        second_counter=ops.nurse2)
    assert len(c2["discrepancy_ids"]) == 1  # the 50 mg/mL only
    return Recorded(ops, t0 + timedelta(minutes=10), datetime.now(UTC) + timedelta(seconds=1), t0, seqs)


def lines_of(p: dict, unit: str) -> dict:
    return {line: D(str(p[unit][line])) for line in LINES}


def adjustments_of(p: dict, usernames: dict[str, str]) -> list[tuple[str, D, set[tuple[str, str]]]]:
    """A product's adjustment entries as (kind, mL, {(username, meaning)}), in their order."""
    return [(a["kind"], D(str(a["ml"])), {(usernames[s["staff_id"]], s["meaning"]) for s in a["signatures"]})
            for a in p["adjustment_entries"]]


def usernames_of(ops: Ops) -> dict[str, str]:
    return {p.staff_id: u for u, p in (("nora", ops.nurse), ("ned", ops.nurse2), ("pia", ops.pharmacist),
                                       ("mia", ops.manager), ("cora", ops.compliance))}


def assert_figures(a: dict) -> None:
    """Every figure of an audit answer (Decimals or Decimal strings) against the hand table."""
    by_ndc = {p["ndc"]: p for p in a["products"]}
    assert set(by_ndc) == {K50, K10}
    for ndc, want in EXPECTED.items():
        p = by_ndc[ndc]
        for unit in UNITS:
            assert lines_of(p, unit) == want[unit], (ndc, unit)
        assert D(str(p["variance_percent"])) == want["variance_percent"], ndc
        assert D(str(p["variance_after_adjustments_percent"])) == want["variance_after_adjustments_percent"], ndc
        assert [(x["kind"], D(str(x["ml"]))) for x in p["adjustment_entries"]] == [
            (k, ml) for k, ml, _ in ADJUSTMENTS[ndc]], ndc
        assert not any(x["in_counted_beginning"] for x in p["adjustment_entries"])
    for unit in UNITS:
        assert lines_of(a["total"], unit) == TOTAL[unit], ("total", unit)
    assert D(str(a["total"]["variance_percent"])) == TOTAL["variance_percent"]
    assert D(str(a["total"]["variance_after_adjustments_percent"])) == TOTAL["variance_after_adjustments_percent"]


# --- the table itself ------------------------------------------------------------------------


def test_the_hand_figures_tell_every_line_apart():
    """The hand table is consistent (the audit's identities hold in it) and, per NDC and in total
    and per unit, every line is non-zero and differs from every other line: so a test comparing
    the audit with this table fails when an amount lands on the wrong line, a line is dropped
    (it becomes 0) or a sign flips (the differences and adjustments are signed)."""
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
            assert t["difference_after_adjustments"] == t["difference"] + t["adjustments"], (name, unit)
    for ndc, strength, container in ((K50, D("50"), D("10")), (K10, D("10"), D("20"))):
        for line in LINES:
            assert EXPECTED[ndc]["mg"][line] == EXPECTED[ndc]["ml"][line] * strength
            assert EXPECTED[ndc]["containers"][line] == (EXPECTED[ndc]["ml"][line] / container).quantize(D("0.01"))
        assert sum((ml for _, ml, _ in ADJUSTMENTS[ndc]), D("0.00")) == EXPECTED[ndc]["ml"]["adjustments"]
    for unit in UNITS:
        for line in LINES:
            assert TOTAL[unit][line] == EXPECTED[K50][unit][line] + EXPECTED[K10][unit][line]
    variances = [w[v] for w in (EXPECTED[K50], EXPECTED[K10], TOTAL)
                 for v in ("variance_percent", "variance_after_adjustments_percent")]
    assert len(set(variances)) == 6 and all(v != 0 for v in variances)


# --- the service, on both backends -----------------------------------------------------------


class AuditLinesContract:
    backend: str

    def test_every_line_by_hand(self, ledger):
        """``audit.audit`` over the recorded period equals the hand table on every line, per NDC
        and in total, in mL, mg and containers, the variances and each adjustment with who
        signed it. Catches, among others: destructions reported under transferred; returns or
        transfers dropped or moved to another line; breakage recorded after a count counted as
        at the time (the shortage would vanish from the difference); loss adjustments or
        corrections counted before the difference, dropped or with the wrong sign; a recoverable
        breakage taken off the book twice; waste counted from the draw; the ending taken from the
        book instead of the count; variance of the wrong base."""
        rec = record_period(ledger)
        a = audit.audit(ledger, rec.ops.dea, rec.start, rec.end)
        assert_figures(a)
        by_ndc = {p["ndc"]: p for p in a["products"]}
        names = usernames_of(rec.ops)
        for ndc, want in EXPECTED.items():
            p = by_ndc[ndc]
            assert p["name"] == NAMES[ndc]
            assert p["beginning_basis"] == "counted" and p["ending_basis"] == "counted"
            assert p["unreconciled"]["ml"] == want["unreconciled_ml"]
            assert p["book_at_end_ml"] == want["book_at_end_ml"]
            assert adjustments_of(p, names) == ADJUSTMENTS[ndc]
        # the late spill names the count it came after; the loss adjustment its count and resolution
        late = by_ndc[K50]["adjustment_entries"][0]
        assert late["seq"] == rec.seqs["late_spill"] and late["after_counts"] == [rec.seqs["count1"]]
        loss = by_ndc[K10]["adjustment_entries"][0]
        assert loss["count_seq"] == rec.seqs["count1"] and loss["category"] == "theft_or_loss"
        # flagged on the difference BEFORE adjustments at the default 1 %: 50 mg/mL (-1.52 %) and
        # the total (-1.42 %), not 10 mg/mL (-0.69 %), though after adjustments all are inside it
        assert {p["ndc"]: p["flagged"] for p in a["products"]} == {K50: True, K10: False}
        assert a["total"]["flagged"] is True
        # at 1.45 %: only the 50 mg/mL
        strict = audit.audit(ledger, rec.ops.dea, rec.start, rec.end, variance_threshold=D("1.45"))
        assert {p["ndc"]: p["flagged"] for p in strict["products"]} == {K50: True, K10: False}
        assert strict["total"]["flagged"] is False
        assert verify(ledger, deep=True).ok

    def test_the_lines_follow_the_period(self, ledger):
        """A period ending at t0 + 8 h 15 min, before the transfer, return, breakage at the time,
        theft, loss adjustment and corrections, has none of them: no line is filled from outside
        its period. By hand: the count at t0 + 7 h ends both products' periods, so the
        destruction at t0 + 8 h is not in it either.
        50 mg/mL: ending 64.50 mL counted (6 x 10 + 4.50); 195.20 + 1.80 + 64.50 = 261.50
        accounted for against 264.00: difference -2.50 before adjustments; the spill that
        happened at t0 + 6 h 30 min but was recorded after the count is the one adjustment, 2.50,
        so the difference after it is 0.00.
        10 mg/mL: ending 138.00 mL counted (6 x 20 + 18.00); 31.60 + 1.60 + 138.00 = 171.20
        against 173.00: difference -1.80 (the 1.00 mL shortage and the 0.80 mL unreconciled draw);
        no adjustment in the period (the loss adjustment came after the count).
        Catches a line summed over all entries instead of the period, activity after a closing
        count leaking into it, and a late breakage on the breakage line."""
        rec = record_period(ledger)
        a = audit.audit(ledger, rec.ops.dea, rec.start, rec.t0 + timedelta(hours=8, minutes=15))
        by_ndc = {p["ndc"]: p["ml"] for p in a["products"]}
        zero = D("0.00")
        assert by_ndc[K50] == {
            "beginning": D("54.00"), "receipts": D("210.00"), "to_account_for": D("264.00"),
            "administered": D("195.20"), "wasted": D("1.80"), "destroyed": zero, "transferred": zero,
            "breakage": zero, "theft_or_loss": zero, "ending": D("64.50"), "accounted_for": D("261.50"),
            "difference": D("-2.50"), "adjustments": D("2.50"), "difference_after_adjustments": zero}
        assert by_ndc[K10] == {
            "beginning": D("53.00"), "receipts": D("120.00"), "to_account_for": D("173.00"),
            "administered": D("31.60"), "wasted": D("1.60"), "destroyed": zero, "transferred": zero,
            "breakage": zero, "theft_or_loss": zero, "ending": D("138.00"), "accounted_for": D("171.20"),
            "difference": D("-1.80"), "adjustments": zero, "difference_after_adjustments": D("-1.80")}


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
    """``GET /audit`` (an auditor's login) answers the hand figures as decimal strings, and each
    adjustment with who signed it. Catches any of the line breaks listed in
    ``test_every_line_by_hand`` through the HTTP API."""
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
        # issue 20: local days; the window runs from the initial inventory to the closing count
        r = api.client.get(api.url("/audit"), headers=api.headers("ari"), params={
            "from": recorded["first"], "to": recorded["last"]})
        assert r.status_code == 200, r.text
    finally:
        ledger.dispose()
    a = r.json()
    for p in a["products"]:
        for unit in UNITS:
            assert all(isinstance(v, str) for v in p[unit].values())  # decimal strings, never floats
        assert all(isinstance(x["ml"], str) and isinstance(x["mg"], str) for x in p["adjustment_entries"])
    assert_figures(a)
    names = usernames_of(recorded["rec"].ops)
    for p in a["products"]:
        assert adjustments_of(p, names) == ADJUSTMENTS[p["ndc"]]
    # the lines issues 14 and 15 were about, spelled out
    k50 = next(p for p in a["products"] if p["ndc"] == K50)
    assert (k50["mg"]["destroyed"], k50["mg"]["transferred"], k50["mg"]["breakage"], k50["mg"]["theft_or_loss"],
            k50["mg"]["difference"], k50["mg"]["adjustments"]) == (
        "1500.00", "500.00", "60.00", "45.00", "-200.00", "160.00")


def _cli_tables(stdout: str) -> dict[str, dict[str, list[str]]]:
    """``csledger audit``'s rich tables: {title: {first cell: [the next three cells]}}."""
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
        if label in ("line", "entry") or current is None:
            continue
        current[label] = values
    return tables


def test_cli_audit_by_hand(recorded):
    """``csledger audit`` prints, per NDC and in total, each line with its hand figures in mg,
    mL and containers, both variances, and each product's adjustments with their mL. Catches the
    line breaks of ``test_every_line_by_hand`` (and labels printed against another line's
    figures) in the command line's output."""
    from tests.cli.test_cli import run

    p = run(["audit", "--registrant", DEA, "--from", recorded["first"], "--to", recorded["last"],
             "--db", recorded["url"]], recorded["dir"], recorded["env"])
    tables = _cli_tables(p.stdout)
    want_tables = {f"{K50} {NAMES[K50]}": EXPECTED[K50], f"{K10} {NAMES[K10]}": EXPECTED[K10], "TOTAL": TOTAL}
    adjustment_tables = {f"{ndc} adjustments after the difference": ndc for ndc in (K50, K10)}
    assert set(tables) == set(want_tables) | set(adjustment_tables), p.stdout
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
        assert rows["variance %"][0] == str(want["variance_percent"]) + (" FLAGGED" if title != K10 + " " + NAMES[K10]
                                                                          else ""), (title, rows)
        assert rows["variance after adjustments %"][0] == str(want["variance_after_adjustments_percent"])
    for title, ndc in adjustment_tables.items():
        # entry | what | mL | mg | signed by: the mL column of each adjustment, in order
        got = [D(values[1]) for values in tables[title].values() if values[1]]
        assert got == [ml for _, ml, _ in ADJUSTMENTS[ndc]], (title, tables[title])


PDF_LABELS = {
    "receipts": "Receipts", "to_account_for": "Total to account for",
    "administered": "Administered (given)", "wasted": "Wasted (with the administration, witnessed)",
    "destroyed": "Destroyed (Form 41)", "transferred": "Transferred and returned",
    "breakage": "Breakage and spills recorded at the time (two people)",
    "beginning": "Beginning inventory (counted)",
    "theft_or_loss": "Theft or loss (Form 106)", "ending": "Ending inventory (counted)",
    "accounted_for": "Total accounted for", "difference": "Difference (before adjustments)",
    "adjustments": "Adjustments after the difference (net out of stock, listed below)",
    "difference_after_adjustments": "Difference after adjustments"}


def _fmt(v: D, unit: str = "") -> str:
    s = f"{v:,}"
    return f"{s} {unit}" if unit else s


#: Container size per NDC (50 mg/mL: 10 mL vials; 10 mg/mL: 20 mL vials).
SIZES = {K50: D("10.00"), K10: D("20.00")}


def _containers(ml: D, size: D) -> str:
    """Issue 20: the PDF prints whole containers and the rest in mL, never a fraction: 54.00 mL
    of 10 mL vials is "5 + 4.00 mL", -2.50 is "-(0 + 2.50 mL)"."""
    whole, rest = int(abs(ml) // size), abs(ml) % size
    text = f"{whole:,}" + (f" + {_fmt(rest.quantize(D('0.01')), 'mL')}" if rest else "")
    return text if ml >= 0 else (f"-({text})" if rest else f"-{text}")


def test_pdf_by_hand(recorded):
    """``csledger report audit``: the PDF's embedded figures and its printed rows (label, mg, mL,
    containers on one row) are the hand figures, the difference printed before the adjustments
    and each adjustment listed after it with who signed it. Catches the line breaks of
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
    for ndc, want in ((K50, EXPECTED[K50]), (K10, EXPECTED[K10])):
        for line, label in PDF_LABELS.items():
            row = (f"{label} {_fmt(want['mg'][line], 'mg')} {_fmt(want['ml'][line], 'mL')} "
                   f"{_containers(want['ml'][line], SIZES[ndc])}")
            assert row in text, row
        assert f"Variance (before adjustments) {_fmt(want['variance_percent'], '%')}" in text
        assert f"Variance after adjustments {_fmt(want['variance_after_adjustments_percent'], '%')}" in text
    # the difference comes before the adjustments, on each product's table
    assert text.index(PDF_LABELS["difference"]) < text.index(PDF_LABELS["adjustments"])
    # the total of 10 mg/mL and 50 mg/mL adds mg only: their mL and containers do not add up (issue 20)
    assert ("Total, all products (in mg: mL and containers of different strengths, sizes or units do not add up)"
            in text)
    for line in ("destroyed", "transferred", "breakage", "theft_or_loss", "difference", "adjustments"):
        row = f"{PDF_LABELS[line]} {_fmt(TOTAL['mg'][line], 'mg')} - -"
        assert row in text, row
    assert f"Variance (of mg, before adjustments) {_fmt(TOTAL['variance_percent'], '%')}" in text
    # each product's adjustments, listed with their figures and signers
    for ndc in (K50, K10):
        assert f"{ndc}: adjustments after the difference, each with who signed it" in text
    for figure in ("2.50 mL 125.00 mg", "0.70 mL 35.00 mg", "1.00 mL 10.00 mg", "-0.60 mL -6.00 mg"):
        assert figure in text, figure
    for signer in ("approved: Mia Manager", "second person: Pia Pharmacist", "approved: Pia Pharmacist",
                   "second person: Ned Nurse"):
        assert signer in text, signer


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


def test_a_period_beginning_at_a_count_accounts_for_its_losses_once(ledger):
    """The period after the first count (t0 + 7 h, end]: each beginning is that count, which had
    already found the shortages.
    50 mg/mL: beginning 64.50 mL counted; out 30.00 destroyed + 10.00 transferred + 1.20 spilled
    + 0.90 stolen; ending 20.90: accounted for 63.00, difference 63.00 - 64.50 = -1.50 before
    adjustments; the spill recorded after the count happened before the period (not in it); the
    0.70 mL correction is the one adjustment: -1.50 + 0.70 = -0.80 after.
    10 mg/mL: beginning 138.00 counted; out 5.00 + 40.00 + 1.40 + 20.00; ending 72.20: accounted
    for 138.60, difference +0.60; adjustments: the 1.00 mL loss adjusted for that count's
    discrepancy is listed but not summed (the counted beginning already found it gone) and the
    correction put 0.60 back: -0.60, so 0.00 after. Found as a product defect with issue 14 (the
    loss counted twice); kept through issue 15's adjustments."""
    rec = record_period(ledger)
    a = audit.audit(ledger, rec.ops.dea, rec.t0 + timedelta(hours=7), rec.end)
    by_ndc = {p["ndc"]: p for p in a["products"]}
    p50, p10 = by_ndc[K50], by_ndc[K10]
    assert (p50["beginning_basis"], p10["beginning_basis"]) == ("counted", "counted")
    assert [p50["ml"][x] for x in ("beginning", "accounted_for", "difference", "adjustments",
                                   "difference_after_adjustments")] == [
        D("64.50"), D("63.00"), D("-1.50"), D("0.70"), D("-0.80")]
    assert [p10["ml"][x] for x in ("beginning", "accounted_for", "difference", "adjustments",
                                   "difference_after_adjustments")] == [
        D("138.00"), D("138.60"), D("0.60"), D("-0.60"), D("0.00")]
    assert [(x["kind"], x["ml"], x["in_counted_beginning"]) for x in p10["adjustment_entries"]] == [
        ("loss_adjusted", D("1.00"), True), ("entry_corrected", D("-0.60"), False)]
