"""A count that finds most of a sealed carton gone can be resolved (issue 19): the missing sealed
units beyond the loose sealed vials on the book were in sealed packages, which leave the book
whole. Found through the browser test: a count of 2 sealed vials against 6 loose and 3 sealed
cartons could not be resolved as a loss ("the vials on hand no longer hold ...")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import services
from ledger.domain.commands import (
    CountLineInput,
    ReceivedLineInput,
    ReceiveStock,
    ResolveDiscrepancy,
    StartCount,
    SubmitCount,
)
from ledger.services import stock
from ledger.services.verify import verify
from tests.clinical.conftest import Ops
from tests.conftest import BACKENDS, KETAMINE_50, an_hour_ago

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def test_a_count_short_by_more_than_the_loose_vials_takes_whole_cartons(ops: Ops) -> None:
    loose = ops.receive(2)  # two loose vials of 10 mL
    cartons = services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        ops.supplier_id, "INV-CARTONS", an_hour_ago() - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, None, "LOT-C", "2028-06-30", packages=2),)))
    assert len(cartons["package_ids"]) == 2
    # 22 sealed units on the book (2 loose, 2 cartons of 10); the count finds 1 sealed vial
    session = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))["session_id"]
    res = services.submit_count(ops.ledger, ops.nurse, SubmitCount(
        session, (CountLineInput(KETAMINE_50, 1, 0, "0.00"),), occurred_at=an_hour_ago()), second_counter=ops.nurse2)
    [d] = res["discrepancy_ids"]
    out = services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
        d, "theft_or_loss", "two cartons and a vial not found after a search"), witness=ops.pharmacist)
    assert out["loss_adjustment_seq"]
    on_hand = [v for v in stock.vials(ops.ledger, ops.dea, ndc_key="67457000110") if v["state"] in ("sealed", "open")]
    # both cartons left whole (20 units) with one loose vial; the other loose vial is on the book
    assert [v["vial_id"] for v in on_hand] in ([loose[0]], [loose[1]])
    assert verify(ops.ledger, deep=True).ok
