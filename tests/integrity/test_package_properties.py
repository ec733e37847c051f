"""Property tests over random receipts in cartons, openings (some short, some refused), draws,
whole-carton returns and resolutions (issue 19, package hierarchy), through the services on a
fresh SQLite database built by the migrations:

- a carton's units are counted once: every unit is one ``vials`` row, named once; the book's
  units and mL equal a model of the commands; a count that counts each sealed carton as a carton
  (its units exact) and every loose unit finds no difference, even while a carton opened short
  has its discrepancy open (its missing units are that discrepancy's, not the count's);
- stock never negative: no unit's mL below zero, and equal to the model's;
- every refusal writes nothing; ``verify --deep`` (the rules replayed) passes.

The expected side comes from the model (units per carton, mL drawn), never from the code.
"""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger import services
from ledger.domain.commands import (
    AddressInput,
    CountLineInput,
    OpenPackage,
    ReceivedLineInput,
    ReceiveStock,
    ResolveDiscrepancy,
    ReturnStock,
    StartCount,
    SubmitCount,
)
from ledger.domain.errors import LedgerError
from ledger.services import stock
from ledger.services.verify import verify
from ledger.storage.store import Ledger
from tests.clinical.conftest import Ops
from tests.conftest import (
    KETAMINE_50,
    RECIPIENT_REGISTRATION,
    an_hour_ago,
    entry_count,
    migrated_sqlite,
)

PER = 10  # KETAMINE_50 (67457-0001-10): a carton of 10 vials of 10 mL (csledger's NDC reference)
FULL = Decimal("10.00")
ADDR = AddressInput("9 Oak Ave", "Austin", "TX", "78702")

step = st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 3)),
    st.tuples(st.just("open"), st.integers(0, 8), st.integers(0, PER + 2)),  # more than packed: refused
    st.tuples(st.just("draw"), st.integers(0, 80), st.integers(1, 1100).map(lambda n: Decimal(n).scaleb(-2))),
    # a whole carton, or half (refused while it is sealed)
    st.tuples(st.just("return"), st.integers(0, 8), st.booleans()),
    st.tuples(st.just("resolve"), st.integers(0, 8)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=2, max_size=12))
@example(steps=[("receive", 3), ("open", 0, 8), ("draw", 3, Decimal("4.50")), ("draw", 9, Decimal("1.00")),
                ("return", 1, False), ("return", 1, True), ("open", 0, 10), ("open", 2, 11)])  # one short, unresolved
@example(steps=[("receive", 2), ("open", 1, 7), ("resolve", 0), ("draw", 12, Decimal("10.00")),
                ("open", 0, 10), ("draw", 0, Decimal("0.35"))])  # a shortfall resolved, vials drawn empty
def test_a_cartons_units_are_counted_once_and_stock_never_goes_negative(steps):
    with tempfile.TemporaryDirectory() as d:
        engine = migrated_sqlite(Path(d) / "p.db")
        lg = Ledger(engine)
        try:
            ops = Ops(lg)
            model = Model()
            for s in steps:
                before = entry_count(lg)
                try:
                    model.run(ops, s)
                except LedgerError:
                    assert entry_count(lg) == before, s  # a refusal writes nothing
                model.check(ops)
            model.count(ops)
            report = verify(lg, deep=True)
            assert report.ok, [str(x) for x in report.problems]
        finally:
            lg.dispose()


class Model:
    """What the commands imply: each unit's mL and whether it is still sealed in its carton."""

    def __init__(self):
        self.ml: dict[str, Decimal] = {}  # unit -> mL on the book
        self.carton: dict[str, str] = {}  # unit -> its carton
        self.cartons: dict[str, dict] = {}  # carton -> units, opened, missing units, discrepancy, gone
        self.invoices = itertools.count(1)

    def units_of(self, pid: str) -> list[str]:
        return self.cartons[pid]["units"]

    def run(self, ops: Ops, s: tuple) -> None:
        kind = s[0]
        if kind == "receive":
            res = services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
                ops.supplier_id, f"INV-PROP-{next(self.invoices)}", datetime.now(UTC) - timedelta(hours=2),
                (ReceivedLineInput(KETAMINE_50, None, "LOT-P", "2028-06-30", packages=s[1]),)))
            assert len(res["package_ids"]) == s[1] and len(res["vial_ids"]) == s[1] * PER
            for k, pid in enumerate(res["package_ids"]):
                units = res["vial_ids"][k * PER:(k + 1) * PER]
                self.cartons[pid] = {"units": units, "opened": False, "missing": [], "disc": None, "gone": False}
                for u in units:
                    assert u not in self.ml, "a unit named twice"
                    self.ml[u], self.carton[u] = FULL, pid
            return
        pids = list(self.cartons)
        if not pids:
            return
        if kind == "open":
            pid, found = pids[s[1] % len(pids)], s[2]
            c = self.cartons[pid]
            res = services.open_package(ops.ledger, ops.nurse, OpenPackage(pid, found, an_hour_ago()),
                                        witness=ops.nurse2)
            assert not c["opened"] and not c["gone"] and found <= PER  # accepted only then
            c.update(opened=True, missing=c["units"][found:], disc=res["discrepancy_id"])
            assert (res["discrepancy_id"] is not None) == (found < PER)
        elif kind == "draw":
            units = sorted(self.ml)
            u, ml = units[s[1] % len(units)], s[2]
            c = self.cartons[self.carton[u]]
            ops.dose(u, drawn=str(ml), given=str(ml))
            assert c["opened"] and u not in c["missing"] and ml <= self.ml[u]  # accepted only then
            self.ml[u] -= ml
        elif kind == "return":
            pid = pids[s[1] % len(pids)]
            units = self.units_of(pid) if s[2] else self.units_of(pid)[:PER // 2]
            services.return_stock(ops.ledger, ops.pharmacist, ReturnStock(
                tuple(units), "reverse_distributor", "Safe Returns Inc", ADDR, "RB1234563",
                f"RD-{next(self.invoices)}", an_hour_ago(), **RECIPIENT_REGISTRATION), witness=ops.nurse)
            c = self.cartons[pid]
            if c["opened"]:  # its units found are loose: they go one by one
                assert all(u not in c["missing"] and self.ml[u] > 0 for u in units)
            else:  # a sealed carton goes whole
                assert s[2] and not c["gone"]
                c["gone"] = True
            for u in units:
                self.ml[u] = Decimal(0)
        else:
            open_ = [p for p in pids if self.cartons[p]["disc"] and not self.cartons[p].get("resolved")]
            if not open_:
                return
            c = self.cartons[open_[s[1] % len(open_)]]
            out = services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
                c["disc"], "theft_or_loss", "carton short"), witness=ops.pharmacist)
            assert Decimal(out["adjusted_ml"]) == FULL * len(c["missing"])
            c["resolved"] = True
            for u in c["missing"]:
                self.ml[u] = Decimal(0)

    def check(self, ops: Ops) -> None:
        rows = stock.vials(ops.ledger, ops.dea)
        ids = [v["vial_id"] for v in rows]
        assert len(ids) == len(set(ids)) and set(ids) == set(self.ml)  # each unit once
        for v in rows:
            assert Decimal(0) <= v["ml_left"] == self.ml[v["vial_id"]], (v, self.ml[v["vial_id"]])
            c = self.cartons[self.carton[v["vial_id"]]]
            in_carton = not c["opened"] or v["vial_id"] in c["missing"]
            assert bool(v["packaged"]) == in_carton, v

    def count(self, ops: Ops) -> None:
        """Count the shelf: sealed cartons as cartons, loose units one by one."""
        sealed_cartons = [p for p, c in self.cartons.items() if not c["opened"] and not c["gone"]]
        loose = [u for u, ml in self.ml.items() if ml > 0 and (self.cartons[self.carton[u]]["opened"]
                                                            and u not in self.cartons[self.carton[u]]["missing"])]
        if not sealed_cartons and not loose and not any(self.ml.values()):
            return
        sealed_loose = [u for u in loose if self.ml[u] == FULL]
        opened = [u for u in loose if self.ml[u] != FULL]
        s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
        out = services.submit_count(ops.ledger, ops.nurse, SubmitCount(s["session_id"], (CountLineInput(
            KETAMINE_50, len(sealed_loose), len(opened), str(sum((self.ml[u] for u in opened), Decimal("0.00"))),
            sealed_packages=len(sealed_cartons)),), an_hour_ago()), second_counter=ops.nurse2)
        # the units a short carton's opening did not find are that opening's discrepancy, not
        # the count's (review finding F1): the count finds no difference either way
        assert out["discrepancy_ids"] == [], (out, self.cartons)
