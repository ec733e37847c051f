"""The stock read models, figure by figure (issue 14: mutation testing, bench/mutation.py): vial
filters and order, on-hand counts by state, what an infusion still has to account for, open
discrepancies with their counters, and what a count session shows its counters. One registrant's
reads never show another's. SQLite."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from ledger import services
from ledger.domain.commands import (
    CountLineInput,
    QuarantineStock,
    ReceivedLineInput,
    ReceiveStock,
    StartCount,
    SubmitCount,
)
from ledger.domain.errors import NotFound
from ledger.services import stock
from tests.clinical.conftest import Ops
from tests.conftest import DEA, DEA2, KETAMINE_10, KETAMINE_50, an_hour_ago

D = Decimal


@pytest.fixture
def two(ledger, monkeypatch) -> tuple[Ops, Ops]:
    """Two registrants in one database (one patient key: the registry is the database's)."""
    import secrets

    with monkeypatch.context() as m:
        m.setattr(secrets, "token_bytes", lambda n=32: bytes(range(n)))
        return Ops(ledger), Ops(ledger, dea=DEA2)


def test_vials_filtered_and_in_order(ops):
    first = ops.receive(2)
    second = services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        ops.supplier_id, "INV-LOT2", an_hour_ago() - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, 1, "LOT-2", "2028-06-30"),)))["vial_ids"]
    small = ops.receive(1, ndc=KETAMINE_10)
    all_ = stock.vials(ops.ledger, DEA)
    assert [v["vial_id"] for v in all_] == [*first, *second, *small]  # by the entry that added them
    assert all_[0]["mg_left"] == D("500.00") and all_[-1]["mg_left"] == D("200.00")
    k10 = all_[-1]["ndc_key"]
    assert k10 != "67457000110" and [v["vial_id"] for v in stock.vials(ops.ledger, DEA, ndc_key=k10)] == small
    assert [v["vial_id"] for v in stock.vials(ops.ledger, DEA, lot="LOT-2")] == second
    ops.dose(first[1], drawn="4.00", given="4.00")
    assert [v["vial_id"] for v in stock.vials(ops.ledger, DEA, state="open")] == [first[1]]
    assert [v["vial_id"] for v in stock.vials(ops.ledger, DEA, state="sealed", ndc_key="67457000110")] == [first[0],
                                                                                                         *second]


def test_vials_of_one_receipt_in_vial_id_order(ops):
    ids = ops.receive(12)
    assert [v["vial_id"] for v in stock.vials(ops.ledger, DEA)] == sorted(ids)


def test_on_hand_by_state(ops):
    vials = ops.receive(5)
    ops.dose(vials[0], drawn="4.00", given="4.00")
    ops.dose(vials[1], drawn="1.00", given="1.00")
    services.quarantine_stock(ops.ledger, ops.manager, QuarantineStock((vials[2], vials[3]), "recall notice"))
    (g,) = stock.stock_by_product(ops.ledger, DEA)
    # 5 x 10 mL - 4 - 1 = 45 mL; two opened, two quarantined, one sealed
    assert g == {"registrant": DEA, "ndc_key": "67457000110", "sealed_containers": 1, "open_containers": 2,
                 "quarantined_containers": 2, "ml": D("45.00"), "mg": D("2250.00")}
    (lot,) = stock.stock_by_lot(ops.ledger, DEA)
    assert lot["lot"] == "LOT-7781" and lot["expiry"] == "2028-06-30" and lot["open_containers"] == 2


def test_by_registrant_keeps_registrants_apart(two):
    a, b = two
    a.receive(2)
    b.receive(3)
    rows = stock.stock_by_registrant(a.ledger)
    assert [(r["registrant"], r["sealed_containers"], r["ml"], r["mg"]) for r in rows] == [
        (DEA, 2, D("20.00"), D("1000.00")), (DEA2, 3, D("30.00"), D("1500.00"))]


def test_unreconciled_administrations_left_to_account_for(two):
    a, b = two
    v = a.receive(1)[0]
    res = a.dose(v, drawn="5.00", given="3.00")
    b.dose(b.receive(1)[0], drawn="2.00", given="1.00")
    from ledger.domain.commands import RecordWaste

    services.record_waste(a.ledger, a.nurse, RecordWaste(res["administration_id"], "0.50", "sink", an_hour_ago()),
                          witness=a.nurse2)
    (row,) = stock.unreconciled_administrations(a.ledger, DEA)
    # 5.00 drawn - 3.00 given - 0.50 wasted = 1.50 still to account for
    assert row["administration_id"] == res["administration_id"] and row["ml_unaccounted"] == D("1.50")


def count(ops, counted, second):
    s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    return services.submit_count(ops.ledger, ops.nurse, SubmitCount(
        s["session_id"], (CountLineInput(KETAMINE_50, counted),), an_hour_ago() + timedelta(minutes=30)),
        second_counter=second)


def test_discrepancies_in_count_order_with_their_counters(two):
    a, b = two
    a.receive(4)
    b.receive(4)
    (d1,) = count(a, 3, a.pharmacist)["discrepancy_ids"]
    (d2,) = count(a, 2, a.nurse2)["discrepancy_ids"]
    count(b, 3, b.pharmacist)
    rows = stock.discrepancies(a.ledger, DEA)
    assert [r["discrepancy_id"] for r in rows] == [d1, d2]
    assert rows[0]["counters"] == [a.nurse.staff_id, a.pharmacist.staff_id]
    assert rows[1]["counters"] == [a.nurse.staff_id, a.nurse2.staff_id]
    services_resolve(a, d1)
    assert [r["discrepancy_id"] for r in stock.discrepancies(a.ledger, DEA)] == [d2]
    assert [r["discrepancy_id"] for r in stock.discrepancies(a.ledger, DEA, status=None)] == [d1, d2]
    assert [r["status"] for r in stock.discrepancies(a.ledger, DEA, status="resolved")] == ["resolved"]


def services_resolve(ops, d):
    from ledger.domain.commands import ResolveDiscrepancy

    services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "not found"),
                                 witness=ops.compliance)


def test_a_blind_count_session_shows_no_book_until_submitted(two):
    a, b = two
    a.receive(3)
    a.receive(1, ndc=KETAMINE_10)
    b.receive(3)
    s = services.start_count(a.ledger, a.nurse, StartCount(ndcs=(KETAMINE_50,)))
    sid = s["session_id"]
    assert stock.count_session(a.ledger, DEA, sid) == {"session_id": sid, "blind": True, "status": "open",
                                                       "ndc_keys": ["67457000110"]}
    with pytest.raises(NotFound) as e:
        stock.count_session(a.ledger, DEA2, sid)  # another registrant's session of the same id: not found
    assert e.value.field == "session_id" and e.value.reason == f"no count session {sid!r} at {DEA2}"
    services.submit_count(a.ledger, a.nurse, SubmitCount(sid, (CountLineInput(KETAMINE_50, 3),),
                                                         an_hour_ago() + timedelta(minutes=30)), second_counter=a.nurse2)
    after = stock.count_session(a.ledger, DEA, sid)
    assert after["status"] == "submitted" and after["blind"] is True
    (g,) = after["on_hand"]  # the counted product only, this registrant's
    assert (g["registrant"], g["ndc_key"], g["sealed_containers"], g["ml"]) == (DEA, "67457000110", 3, D("30.00"))


def test_an_open_count_session_that_is_not_blind_shows_the_book(two):
    a, b = two
    a.receive(2)
    b.receive(5)  # the same number of entries in each: their sessions get the same id
    s = services.start_count(a.ledger, a.nurse, StartCount(ndcs=(KETAMINE_50,), blind=False))
    bs = services.start_count(b.ledger, b.nurse, StartCount(ndcs=(KETAMINE_50,)))
    assert bs["session_id"] == s["session_id"]
    got = stock.count_session(a.ledger, DEA, s["session_id"])
    assert got["status"] == "open" and got["blind"] is False
    assert [(g["registrant"], g["ml"]) for g in got["on_hand"]] == [(DEA, D("20.00"))]
    theirs = stock.count_session(b.ledger, DEA2, s["session_id"])
    assert theirs["blind"] is True and "on_hand" not in theirs
    later = services.start_count(a.ledger, a.nurse, StartCount(ndcs=(KETAMINE_50,)))  # a second session: blind
    assert stock.count_session(a.ledger, DEA, later["session_id"])["blind"] is True
    assert stock.count_session(a.ledger, DEA, s["session_id"])["blind"] is False


def test_policy_in_force(ops):
    p = stock.policy(ops.ledger, DEA)
    assert p["is_default"] is True
