"""Property tests over random preparations and partial infusions (issue 19):

- the arithmetic (``ledger.domain.preparations``), over random draws of every strength, volumes
  to syringe resolution (3 decimals) and any dilution: mg given + mg wasted = mg drawn exactly,
  mg given never above mg drawn and within half a cent of the exact share, and the product mL
  split summing back to the mL drawn exactly;
- through the services on a fresh SQLite database built by the migrations: random bags and
  syringes drawn from a few vials (some draws refused: more than a vial holds), random partial
  infusions (some refused: above the final volume, past the beyond-use time), the remainders
  wasted: stock never negative, and equal to what a model of the commands says; each
  preparation's mg drawn = given + wasted exactly; the audit's drawn mL = administered + wasted;
  ``verify --deep`` passes.

The expected side never comes from the code under test: the model tracks each vial's mL and
each preparation's mg from the commands alone (mL x strength, mg x mL / final mL).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import services
from ledger.domain import preparations as rules
from ledger.domain.commands import DrawInput, InfusePreparation, MakePreparation, WastePreparation
from ledger.domain.errors import LedgerError
from ledger.services import audit, stock
from ledger.services.verify import verify
from ledger.storage.store import Ledger
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import entry_count, migrated_sqlite

STRENGTHS = [Decimal("10.00"), Decimal("50.00"), Decimal("100.00")]
#: Volumes to syringe resolution (0.005 mL steps) and to 2 decimals.
volume3 = st.integers(min_value=1, max_value=2000).map(lambda n: Decimal(n * 5).scaleb(-3))
volume2 = st.integers(min_value=1, max_value=1000).map(lambda n: Decimal(n).scaleb(-2))


@settings(max_examples=500, deadline=None)
@given(draws=st.lists(st.tuples(st.one_of(volume2, volume3), st.sampled_from(STRENGTHS)), min_size=1, max_size=4),
       diluent=st.integers(0, 25000).map(lambda n: Decimal(n).scaleb(-2)),
       share=st.fractions(min_value=0, max_value=1))
def test_the_arithmetic_balances_exactly(draws, diluent, share):
    mg = rules.mg_of_draws(draws)
    assert mg == sum((ml * s for ml, s in draws), Decimal(0))  # exact: never rounded
    drawn = sum((ml for ml, _ in draws), Decimal(0))
    final = drawn + diluent
    # the pump's figure: a share of the final volume, to 0.01 mL, at least 0.01 mL
    infused = max(Decimal("0.01"), (final * share.numerator / share.denominator).quantize(Decimal("0.01")))
    if infused > final:
        infused = final
    given_mg = rules.mg_given(mg, infused, final)
    wasted = rules.exact(mg - given_mg)
    assert given_mg + wasted == mg and wasted >= 0
    assert given_mg <= mg
    assert abs(given_mg - mg * infused / final) <= Decimal("0.005") + Decimal("1e-20") or given_mg == mg
    product_given = rules.product_ml_given(drawn, given_mg, mg)
    assert Decimal(0) <= product_given <= drawn
    assert product_given + (drawn - product_given) == drawn
    if infused == final:
        assert given_mg == mg.quantize(Decimal("0.01"), ROUND_HALF_EVEN) or given_mg <= mg


step = st.one_of(
    # a preparation: which vial (index), product mL drawn, diluent mL, bag or syringe, hours ago it started
    st.tuples(st.just("prepare"), st.integers(0, 5), st.integers(1, 700).map(lambda n: Decimal(n).scaleb(-2)),
              st.sampled_from([Decimal("0.00"), Decimal("20.00"), Decimal("50.00"), Decimal("100.00")]),
              st.sampled_from(["bag", "syringe"]), st.sampled_from([1, 2, 5])),
    # an infusion of the n-th open preparation: the share of its final volume (percent, may be > 100)
    st.tuples(st.just("infuse"), st.integers(0, 5), st.integers(1, 110)),
    # the waste of the n-th preparation not yet wasted
    st.tuples(st.just("waste"), st.integers(0, 5)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=2, max_size=10))
def test_random_preparations_and_partial_infusions_keep_the_invariants(steps):
    with tempfile.TemporaryDirectory() as d:
        engine = migrated_sqlite(Path(d) / "p.db")
        lg = Ledger(engine)
        try:
            start = datetime.now(UTC) - timedelta(days=1)
            ops = Ops(lg)
            vials = ops.receive(3)  # 50 mg/mL, 10 mL each
            left = dict.fromkeys(vials, Decimal("10.00"))
            preps: dict[str, dict] = {}  # id -> the model's figures
            now = datetime.now(UTC)
            for s in steps:
                before = entry_count(lg)
                try:
                    _run(ops, s, vials, left, preps, now)
                except LedgerError:
                    assert entry_count(lg) == before  # a refusal writes nothing
                for v in stock.vials(lg, ops.dea):
                    assert Decimal(0) <= v["ml_left"] == left[v["vial_id"]], (v, left)
            for p in preps.values():
                if p["wasted"] is not None:
                    assert (p["given"] or Decimal(0)) + p["wasted"] == p["mg"]  # mg drawn = given + wasted exactly
            report = verify(lg, deep=True)
            assert report.ok, [str(x) for x in report.problems]
            a = audit.audit(lg, ops.dea, start, datetime.now(UTC) + timedelta(seconds=1))
            (prod,) = a["products"]
            # the model's product-mL split: given = mL drawn x mg given / mg (0.001 mL, half-even)
            step = Decimal("0.001")
            given_ml = {k: (p["ml"] * p["given"] / p["mg"]).quantize(step, ROUND_HALF_EVEN) if p["given"] is not None
                        else Decimal(0) for k, p in preps.items()}
            wasted_ml = {k: p["ml"] - given_ml[k] for k, p in preps.items() if p["wasted"] is not None}
            drawn = sum((p["ml"] for p in preps.values()), Decimal(0))
            assert prod["ml"]["administered"] == sum(given_ml.values(), Decimal(0))
            assert prod["ml"]["wasted"] == sum(wasted_ml.values(), Decimal(0))
            assert prod["ml"]["administered"] + prod["ml"]["wasted"] + prod["unreconciled"]["ml"] == drawn
            assert prod["ml"]["difference"] == -prod["unreconciled"]["ml"]  # only what is not yet wasted
        finally:
            lg.dispose()


def _run(ops: Ops, s: tuple, vials: list[str], left: dict, preps: dict, now: datetime) -> None:
    kind = s[0]
    if kind == "prepare":
        _, i, ml, diluent, container, hours = s
        vial = vials[i % len(vials)]
        final = ml + diluent
        res = services.make_preparation(ops.ledger, ops.nurse, MakePreparation(
            ops.patient_id, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(vial, str(ml)),), "0.9% sodium chloride",
            str(diluent), container, str(final), now - timedelta(hours=hours)))
        # accepted: the model's own checks say it could be
        assert ml <= left[vial] and (container == "bag" or final <= 60)
        left[vial] -= ml
        preps[res["preparation_id"]] = {"ml": ml, "mg": ml * Decimal("50.00"), "final": final, "given": None,
                                        "wasted": None, "hours": hours}
        assert Decimal(res["mg"]) == ml * Decimal("50.00")
    elif kind == "infuse":
        open_ = [k for k, p in preps.items() if p["given"] is None and p["wasted"] is None]
        if not open_:
            return
        pid = open_[s[1] % len(open_)]
        p = preps[pid]
        ml = (p["final"] * s[2] / 100).quantize(Decimal("0.01"))
        if ml <= 0:
            return
        start = now - timedelta(minutes=30)
        res = services.infuse_preparation(ops.ledger, ops.nurse, InfusePreparation(
            pid, str(ml), start, start + timedelta(minutes=20)))
        assert ml <= p["final"] and p["hours"] < 4  # accepted only within the final volume and 4 hours
        p["given"] = (p["mg"] * ml / p["final"]).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        assert Decimal(res["mg_given"]) == p["given"]
    else:
        open_ = [k for k, p in preps.items() if p["wasted"] is None]
        if not open_:
            return
        pid = open_[s[1] % len(open_)]
        p = preps[pid]
        res = services.waste_preparation(ops.ledger, ops.nurse, WastePreparation(
            pid, "drug disposal container", now - timedelta(minutes=5),
            reason=None if p["given"] is not None else "infusion cancelled"), witness=ops.nurse2)
        p["wasted"] = p["mg"] - (p["given"] or Decimal(0))
        assert Decimal(res["mg_wasted"]) == p["wasted"] > 0
