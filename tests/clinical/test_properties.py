"""Property-based tests over random valid (and some invalid) command sequences:

- stock never goes negative (and no vial holds more than its container);
- projections equal their rebuild from the entries (``verify --deep``);
- for a period ending in a count, the audit difference equals counted minus book at that count.

Each example runs on a fresh SQLite database built by the migrations.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import services
from ledger.domain.commands import (
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    QuarantineStock,
    ReleaseQuarantine,
    ResolveDiscrepancy,
    StartCount,
    SubmitCount,
)
from ledger.domain.errors import LedgerError
from ledger.services import audit, stock
from ledger.services.verify import verify
from ledger.storage.store import Ledger, make_engine, migrate
from tests.clinical.conftest import Ops
from tests.conftest import KETAMINE_10, KETAMINE_50, entry_count

ml_amount = st.integers(min_value=1, max_value=1200).map(lambda n: Decimal(n).scaleb(-2))
step = st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 4), st.sampled_from([KETAMINE_50, KETAMINE_10])),
    st.tuples(st.just("dose"), st.integers(0, 50), ml_amount, st.integers(0, 100)),
    st.tuples(st.just("dose_unwasted"), st.integers(0, 50), ml_amount),
    st.tuples(st.just("count"), st.integers(-1, 1), ml_amount),
    st.tuples(st.just("destroy"), st.integers(0, 50)),
    st.tuples(st.just("quarantine"), st.integers(0, 50)),
    st.tuples(st.just("correct"), st.integers(0, 50), st.sampled_from(["add", "remove"]), ml_amount),
)


def _on_hand(ops: Ops) -> list[dict]:
    return [v for v in stock.vials(ops.ledger, ops.dea) if v["state"] in ("sealed", "open", "quarantined")]


def _pick(rows: list[dict], i: int) -> dict | None:
    return rows[i % len(rows)] if rows else None


def _run(ops: Ops, s: tuple) -> None:
    kind = s[0]
    vials = _on_hand(ops)
    if kind == "receive":
        ops.receive(s[1], ndc=s[2])
    elif kind in ("dose", "dose_unwasted"):
        v = _pick([x for x in vials if x["state"] != "quarantined"], s[1])
        if v is None:
            return
        drawn = s[2]
        if kind == "dose":
            given = (drawn * s[3] / 100).quantize(Decimal("0.01"))
            waste = drawn - given
            ops.dose(v["vial_id"], drawn=str(drawn), given=str(given), waste=str(waste) if waste else None,
                     witness=ops.nurse2, at=datetime.now(UTC) - timedelta(minutes=45))
        else:
            res = ops.dose(v["vial_id"], drawn=str(drawn), given=str(drawn), at=datetime.now(UTC) - timedelta(minutes=45))
            assert res["reconciled"]
    elif kind == "count":
        sess = services.start_count(ops.ledger, ops.nurse, StartCount())
        lines = []
        for g in stock.stock_by_product(ops.ledger, ops.dea):
            sealed = g["sealed_containers"] + g["quarantined_containers"]
            lines.append((g["ndc_key"], sealed, g["open_containers"], g["ml"]))
        from ledger.domain.projections import ON_HAND  # noqa: F401 (documenting where states come from)

        by_key = {k: (sl, op, ml) for k, sl, op, ml in lines}
        cmd_lines = []
        for ndc in (KETAMINE_50, KETAMINE_10):
            key = "42023011310" if ndc == KETAMINE_50 else "00409205105"
            sl, op, _ = by_key.get(key, (0, 0, Decimal(0)))
            # count the book's open mL (with quarantined/sealed as sealed) then shift sealed by s[1]
            open_ml = sum((v["ml_left"] for v in vials if v["ndc_key"] == key and not (
                v["opened_at"] is None and v["ml_left"] == v["container_ml"])), Decimal("0.00"))
            cmd_lines.append(CountLineInput(ndc, max(0, sl + s[1]), op, str(open_ml) if op else "0.00"))
        try:
            res = services.submit_count(ops.ledger, ops.nurse, SubmitCount(sess["session_id"], tuple(cmd_lines),
                                                                           datetime.now(UTC)), second_counter=ops.nurse2)
        except LedgerError:
            return
        for ln in res["lines"]:
            if ln["discrepancy_id"]:
                cat = "breakage" if Decimal(ln["difference_ml"]) < 0 else "other"
                services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(ln["discrepancy_id"], cat, "found"))
    elif kind == "destroy":
        v = _pick(vials, s[1])
        if v is not None:
            services.destroy_stock(ops.ledger, ops.pharmacist, DestroyStock((v["vial_id"],), "digestion", "med room",
                                                                             "expired", datetime.now(UTC)),
                                   witnesses=(ops.nurse, ops.nurse2))
    elif kind == "quarantine":
        v = _pick(vials, s[1])
        if v is None:
            return
        if v["state"] == "quarantined":
            services.release_quarantine(ops.ledger, ops.pharmacist, ReleaseQuarantine((v["vial_id"],), "ok"))
        else:
            services.quarantine_stock(ops.ledger, ops.nurse, QuarantineStock((v["vial_id"],), "suspect"))
    elif kind == "correct":
        v = _pick(vials, s[1])
        if v is not None:
            services.correct_entry(ops.ledger, ops.nurse, CorrectEntry(v["added_seq"], "recount",
                                                                       (CorrectionLineInput(v["vial_id"], s[2], str(s[3])),)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=3, max_size=14), final=st.tuples(st.integers(-2, 1), ml_amount))
def test_random_sequences_keep_the_invariants(steps, final):
    with tempfile.TemporaryDirectory() as d:
        engine = make_engine(f"sqlite:///{Path(d) / 'p.db'}")
        migrate(engine)
        lg = Ledger(engine)
        try:
            start = datetime.now(UTC) - timedelta(days=1)
            ops = Ops(lg)
            ops.receive(3)
            for s in steps:
                before = entry_count(lg)
                try:
                    _run(ops, s)
                except LedgerError:
                    # a refusal (stock would go negative, quarantine, ...) writes nothing; a count
                    # is refused before its resolutions run
                    assert entry_count(lg) == before or s[0] == "count"
                for v in stock.vials(lg, ops.dea):
                    assert Decimal(0) <= v["ml_left"] <= v["container_ml"], v
            report = verify(lg, deep=True)
            assert report.ok, report.problems
            # end the period with a count (sealed shifted by final[0]) and check the audit identity
            sess = services.start_count(lg, ops.nurse, StartCount())
            lines = []
            for ndc, key in ((KETAMINE_50, "42023011310"), (KETAMINE_10, "00409205105")):
                g = next((x for x in stock.stock_by_product(lg, ops.dea) if x["ndc_key"] == key), None)
                sealed = (g["sealed_containers"] + g["quarantined_containers"]) if g else 0
                lines.append(CountLineInput(ndc, max(0, sealed + final[0])))
            res = services.submit_count(lg, ops.nurse, SubmitCount(sess["session_id"], tuple(lines), datetime.now(UTC)),
                                        second_counter=ops.nurse2)
            a = audit.audit(lg, ops.dea, start, datetime.now(UTC) + timedelta(seconds=1))
            by_ndc = {p["ndc"]: p for p in a["products"]}
            for ln in res["lines"]:
                p = by_ndc.get(ln["ndc"])
                diff = Decimal(ln["counted_ml"]) - Decimal(ln["expected_ml"])
                if p is None:
                    assert diff == 0
                    continue
                assert p["ending_basis"] == "counted"
                assert p["ml"]["difference"] == diff, (p["ml"], ln)
            assert verify(lg, deep=True).ok
        finally:
            lg.dispose()
