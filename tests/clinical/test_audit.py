"""The accountability audit: the worked example of docs/compliance.md through the services on both backends,
and the pure function over entries alone.

Every expected figure here is written by hand (``WORKED_EXAMPLE`` and ``BOOK_ENDED`` below, the
arithmetic in comments), never taken from ``ledger.services.audit`` itself (issue 14). The lines
the worked example leaves at zero (destroyed, transferred, breakage, theft or loss, and the
adjustments after the difference) are asserted to be zero; ``tests/clinical/test_audit_lines.py``
gives every line a distinct non-zero figure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger import services
from ledger.domain.commands import (
    AdministerDose,
    CountLineInput,
    DrawInput,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    StartCount,
    SubmitCount,
    TakeInventory,
    WasteInput,
)
from ledger.services import audit
from ledger.services.verify import verify
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import KETAMINE_50

D = Decimal
ZERO_LINES = {"destroyed": D("0.00"), "transferred": D("0.00"), "breakage": D("0.00"), "theft_or_loss": D("0.00"),
              "adjustments": D("0.00")}
#: The worked example by hand (ketamine 50 mg/mL, 10 mL vials; mg = mL x 50, containers = mL / 10):
#: beginning 4 x 10 + 6.00 = 46.00 mL; receipts 10 x 10 = 100.00; to account for 146.00;
#: administered 22 x 4.70 + 4.60 = 108.00; wasted 22 x 0.30 + 0.40 = 7.00; ending counted 3 x 10
#: = 30.00; accounted for 108 + 7 + 30 = 145.00; difference -1.00 mL; -50 / 7,300 = -0.68 %.
WORKED_EXAMPLE = {
    "ml": {"beginning": D("46.00"), "receipts": D("100.00"), "to_account_for": D("146.00"),
           "administered": D("108.00"), "wasted": D("7.00"), **ZERO_LINES, "ending": D("30.00"),
           "accounted_for": D("145.00"), "difference": D("-1.00"),
           "difference_after_adjustments": D("-1.00")},
    "mg": {"beginning": D("2300.00"), "receipts": D("5000.00"), "to_account_for": D("7300.00"),
           "administered": D("5400.00"), "wasted": D("350.00"), **ZERO_LINES, "ending": D("1500.00"),
           "accounted_for": D("7250.00"), "difference": D("-50.00"),
           "difference_after_adjustments": D("-50.00")},
    "containers": {"beginning": D("4.60"), "receipts": D("10.00"), "to_account_for": D("14.60"),
                   "administered": D("10.80"), "wasted": D("0.70"), **ZERO_LINES, "ending": D("3.00"),
                   "accounted_for": D("14.50"), "difference": D("-0.10"),
                   "difference_after_adjustments": D("-0.10")},
}
#: The same period ended before the count (t0 + 7 h): the ending is the book, 146 - 23 x 5.00 drawn
#: = 31.00 mL, every draw given or wasted, so accounted for 108 + 7 + 31 = 146.00 and no difference.
BOOK_ENDED = {
    "ml": {**WORKED_EXAMPLE["ml"], "ending": D("31.00"), "accounted_for": D("146.00"), "difference": D("0.00"),
           "difference_after_adjustments": D("0.00")},
    "mg": {**WORKED_EXAMPLE["mg"], "ending": D("1550.00"), "accounted_for": D("7300.00"), "difference": D("0.00"),
           "difference_after_adjustments": D("0.00")},
    "containers": {**WORKED_EXAMPLE["containers"], "ending": D("3.10"), "accounted_for": D("14.60"),
                   "difference": D("0.00"), "difference_after_adjustments": D("0.00")},
}


def figures(p: dict) -> dict:
    """A product's (or the total's) lines per unit, as Decimals (reads Decimal strings too)."""
    return {u: {line: D(str(v)) for line, v in p[u].items()} for u in ("ml", "mg", "containers")}


def worked_example(ledger) -> tuple[Ops, datetime, datetime]:
    """docs/compliance.md's worked example: beginning 4 sealed vials + one open vial estimated at 6 mL (2,300 mg), receipts
    10 vials (5,000 mg), administered 5,400 mg, wasted 350 mg, ending 3 sealed vials (1,500 mg)."""
    ops = Ops(ledger)
    t0 = datetime.now(UTC) - timedelta(hours=20)
    inv = services.take_inventory(ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business", t0, (
        InventoryItemInput(KETAMINE_50, "KA1", "2028-01-31", sealed=True, containers=4),
        InventoryItemInput(KETAMINE_50, "KA1", "2028-01-31", sealed=False, ml="6.00",
                           first_punctured_on=(t0 - timedelta(days=1)).date().isoformat()),
    )), witness=ops.nurse)["vial_ids"]
    received = services.receive_stock(ledger, ops.nurse, ReceiveStock(
        ops.supplier_id, "INV-WE-1", t0 + timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, 10, "KA2", "2028-06-30"),)))["vial_ids"]
    order = [inv[4], *inv[:4], *received]  # the open vial first, then sealed ones in turn
    left = {v: Decimal("10.00") for v in order}
    left[inv[4]] = Decimal("6.00")
    for i in range(23):
        need = Decimal("5.00")
        draws = []
        for v in order:
            if need == 0:
                break
            take = min(need, left[v])
            if take > 0:
                draws.append(DrawInput(v, str(take)))
                left[v] -= take
                need -= take
        given, wasted = ("4.60", "0.40") if i == 22 else ("4.70", "0.30")
        at = t0 + timedelta(hours=2, minutes=10 * i)
        services.administer_dose(ledger, ops.nurse, AdministerDose(
            ops.patient_id, PRESCRIBER_DEA, "94.00", "0.50", tuple(draws), given, at, at + timedelta(minutes=5),
            waste=WasteInput(wasted, "syringe to disposal container")), witness=ops.nurse2)
    s = services.start_count(ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    services.submit_count(ledger, ops.nurse, SubmitCount(s["session_id"], (CountLineInput(KETAMINE_50, 3),),
                                                         t0 + timedelta(hours=8)), second_counter=ops.nurse2)
    return ops, t0, datetime.now(UTC)


class AuditContract:
    backend: str

    def test_worked_example(self, ledger):
        """Every line, per unit, equals the hand figures of docs/compliance.md (the zero lines
        included: nothing may leak into destroyed, transferred, breakage, theft or loss or the
        adjustments; with no adjustment the difference after them is the difference). Catches
        administered taken from the draw, the ending taken from the book, the variance over the
        wrong base and the total mg summed from mL."""
        ops, t0, end = worked_example(ledger)
        a = audit.audit(ledger, ops.dea, t0, end)
        (p,) = a["products"]
        assert figures(p) == WORKED_EXAMPLE and figures(a["total"]) == WORKED_EXAMPLE
        mg = p["mg"]
        assert mg["beginning"] == Decimal("2300.00") and p["beginning_basis"] == "counted"
        assert mg["receipts"] == Decimal("5000.00") and mg["to_account_for"] == Decimal("7300.00")
        assert mg["administered"] == Decimal("5400.00") and mg["wasted"] == Decimal("350.00")
        assert mg["ending"] == Decimal("1500.00") and p["ending_basis"] == "counted"
        assert mg["accounted_for"] == Decimal("7250.00")
        assert mg["difference"] == Decimal("-50.00") and p["variance_percent"] == Decimal("-0.68")
        assert p["ml"]["difference"] == Decimal("-1.00") and p["containers"]["ending"] == Decimal("3.00")
        assert p["containers"]["receipts"] == Decimal("10.00")
        assert a["total"]["mg"]["difference"] == Decimal("-50.00") and a["total"]["variance_percent"] == Decimal("-0.68")
        assert not p["flagged"]  # 0.68% is inside the default 1% threshold
        assert audit.audit(ledger, ops.dea, t0, end, variance_threshold=Decimal("0.50"))["products"][0]["flagged"]
        assert verify(ledger, deep=True).ok

    def test_without_a_count_the_ending_is_the_book(self, ledger):
        """Without a count in the period the ending is the book, every line as ``BOOK_ENDED``.
        Catches administered taken from the draw."""
        ops, t0, _ = worked_example(ledger)
        a = audit.audit(ledger, ops.dea, t0, t0 + timedelta(hours=7))
        (p,) = a["products"]
        assert p["ending_basis"] == "book"
        # book: 46 + 100 - 23 x 5 drawn = 31 mL, all drawn given or wasted: no difference
        assert figures(p) == BOOK_ENDED and p["variance_percent"] == Decimal("0.00")


class TestSQLite(AuditContract):
    backend = "sqlite"


class TestPostgres(AuditContract):
    backend = "postgresql"


def test_pure_function_reads_entries_alone(tmp_path):
    """The same figures from decoded entries with no database: what a bundle verifier does.
    Catches administered taken from the draw, the ending from the book, the variance base."""
    from ledger.integrity.canonical import decode
    from ledger.storage.store import Ledger, make_engine, migrate, raw

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    lg = Ledger(engine)
    ops, t0, end = worked_example(lg)
    with lg.reading() as c:
        entries = [decode(bytes(r["canonical"])) for r in raw(c).rows(c, "SELECT canonical FROM entries ORDER BY seq")]
    lg.dispose()
    a = audit.accountability(entries, t0, end)
    (p,) = a["products"]
    assert figures(p) == WORKED_EXAMPLE and p["variance_percent"] == Decimal("-0.68")
    # a kind that moves stock without an audit line is refused, never dropped silently
    from ledger.integrity.canonical import format_time

    bogus = dict(entries[-1], kind="mystery_moved", seq=10_000, occurred_at=format_time(t0 + timedelta(hours=3)))
    from ledger.domain import projections

    orig = projections._clinical_movements

    def fake(e):
        if e["kind"] == "mystery_moved":
            yield "V", "67457000110", Decimal("-1.00")
        else:
            yield from orig(e)

    projections._clinical_movements = fake
    try:
        with pytest.raises(ValueError, match="no audit line"):
            audit.accountability([*entries, bogus], t0, end + timedelta(days=1))
    finally:
        projections._clinical_movements = orig


def test_sources_unreconciled_and_series(tmp_path):
    """The figures a report prints beside the lines: where the beginning and ending came from,
    what was drawn but neither given nor wasted, and (asked for) the book balance across the
    period. Additive: the lines are the hand figures with or without ``series``. Catches
    administered taken from the draw, the ending from the book, the total mg summed from mL."""
    from ledger.storage.store import Ledger, make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    lg = Ledger(engine)
    try:
        ops, t0, end = worked_example(lg)
        plain = audit.audit(lg, ops.dea, t0, end)
        a = audit.audit(lg, ops.dea, t0, end, series=True)
        book = audit.audit(lg, ops.dea, t0, t0 + timedelta(hours=7), series=True)
        spanning = audit.audit(lg, ops.dea, t0 - timedelta(hours=1), end)
        opening = audit.audit(lg, ops.dea, t0 - timedelta(hours=1), t0 + timedelta(hours=7))
    finally:
        lg.dispose()
    (p,) = a["products"]
    assert "series" not in plain["products"][0] and set(p) - set(plain["products"][0]) == {"series"}
    for q in (plain, a):  # each against the hand figures, not one against the other
        assert figures(q["products"][0]) == WORKED_EXAMPLE and figures(q["total"]) == WORKED_EXAMPLE
    assert p["form"] == "injection"
    # the beginning rests on the initial inventory at t0; the period ends at the count
    assert p["beginning_source"]["kind"] == "inventory_taken" and p["beginning_source"]["inventory_type"] == "initial"
    assert p["beginning_source"]["taken_at"] == "opening_of_business"
    assert p["ending_source"]["kind"] == "stock_counted" and p["ending_source"]["occurred_at"] == p["ending_as_of"]
    assert p["unreconciled"] == {"ml": Decimal("0.00"), "mg": Decimal("0.00"), "containers": Decimal("0.00")}
    # book balance: 46 mL at the start, +100 received, -5 mL per infusion down to 31 mL
    series = p["series"]
    assert series[0][1] == Decimal("46.00") and series[1][1] == Decimal("146.00") and series[-1][1] == Decimal("31.00")
    assert len(series) == 1 + 1 + 23  # the start, the receipt, each infusion (one point per entry)
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    # without a count in the period: no ending source, the book
    (pb,) = book["products"]
    assert pb["ending_source"] is None and pb["ending_basis"] == "book" and pb["series"][-1][1] == Decimal("31.00")
    # a period that starts before the initial inventory: the beginning is that inventory, taken inside it
    (ps,) = spanning["products"]
    assert ps["beginning_basis"] == "book" and ps["beginning_source"]["kind"] == "inventory_taken"
    assert figures(ps) == WORKED_EXAMPLE
    # an initial inventory inside the period begins it and is never its ending count: with no
    # count after it, the ending is the book and the receipts and infusions after it are counted
    (po,) = opening["products"]
    assert po["ending_basis"] == "book" and po["ending_source"] is None
    assert po["beginning_source"]["inventory_type"] == "initial"
    assert figures(po) == BOOK_ENDED
