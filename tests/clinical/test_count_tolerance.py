"""Issue 20: counts of opened vials have a tolerance, sealed containers none.

An opened vial's mL are estimated (read against its graduations, drawn into a syringe), so the
registrant's policy sets ``open_count_tolerance_ml`` (default 0.10 mL per opened container): a
difference within it is recorded on the line and opens no discrepancy; beyond it, or any sealed
difference, opens one as before. Within-tolerance shortages still feed the pattern-of-small-losses
alert. A count may name its opened vials one by one, so an accepted loss comes out of the vial
that was short. ``verify --deep`` replays the rule: a forged "within tolerance" line fails it.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain import alerts as rules
from ledger.domain import entries as ev
from ledger.domain.commands import (
    CountLineInput,
    OpenVialInput,
    ResolveDiscrepancy,
    SetPolicy,
    StartCount,
    SubmitCount,
)
from ledger.domain.errors import Conflict, InvalidInput
from ledger.integrity.canonical import decode
from ledger.services import stock
from ledger.services.common import product_copy
from ledger.services.verify import verify
from ledger.storage.store import entries_t
from tests.api.conftest import api  # noqa: F401  (the fixture)
from tests.clinical.conftest import Ops
from tests.clinical.test_clinical_contract import last_entries, refused
from tests.conftest import BACKENDS, DEA, KETAMINE_50, an_hour_ago
from tests.integrity.test_rules_replay import force, sig

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def opened_at(ops: Ops, left: str = "2.50") -> str:
    """One 10 mL vial of ketamine 50 mg/mL, drawn down to ``left`` mL: an opened vial on the book."""
    (vid,) = ops.receive(1)
    ops.dose(vid, drawn=str(Decimal("10.00") - Decimal(left)), given=str(Decimal("10.00") - Decimal(left)))
    return vid


def count(ops: Ops, sealed: int = 0, opened: int = 1, open_ml: str = "2.45", vials=(), counter=None) -> dict:
    s = services.start_count(ops.ledger, counter or ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    line = CountLineInput(KETAMINE_50, sealed, opened, open_ml, open_vials=tuple(OpenVialInput(v, ml) for v, ml in vials))
    return services.submit_count(ops.ledger, counter or ops.nurse, SubmitCount(s["session_id"], (line,), an_hour_ago()),
                                 second_counter=ops.nurse2)


def set_tolerance(ops: Ops, value: str) -> None:
    services.set_policy(ops.ledger, ops.manager, SetPolicy(open_count_tolerance_ml=value, reason="count tolerance"))


def all_entries(ledger) -> list[dict]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).order_by(entries_t.c.seq)).scalars().all()
    return [decode(bytes(r)) for r in rows]


# --- the rule -----------------------------------------------------------------------------------


def test_the_issue_case_245_against_250_is_recorded_without_a_discrepancy(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    res = count(ops, open_ml="2.45")
    assert res["discrepancy_ids"] == [] and res["within_tolerance"] == [KETAMINE_50]
    assert res["open_count_tolerance_ml"] == "0.10"
    (e,) = last_entries(ledger)
    (ln,) = e["lines"]
    assert (ln["expected_ml"], ln["counted_ml"], ln["difference_ml"]) == ("2.50", "2.45", "-0.05")
    assert (ln["tolerance_ml"], ln["within_tolerance"], ln["discrepancy_id"]) == ("0.10", True, None)
    assert e["open_count_tolerance_ml"] == "0.10"
    assert stock.discrepancies(ledger, DEA) == []
    assert verify(ledger, deep=True).ok


def test_a_shortage_beyond_the_tolerance_opens_a_discrepancy(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    res = count(ops, open_ml="2.20")
    (d,) = res["discrepancy_ids"]
    (ln,) = last_entries(ledger)[0]["lines"]
    assert (ln["difference_ml"], ln["tolerance_ml"], ln["within_tolerance"]) == ("-0.30", "0.10", False)
    assert [r["discrepancy_id"] for r in stock.discrepancies(ledger, DEA)] == [d]
    # an overage beyond it too; one within it is recorded like a shortage within it
    assert count(ops, open_ml="2.65")["discrepancy_ids"] != []
    assert count(ops, open_ml="2.60")["discrepancy_ids"] == []
    assert verify(ledger, deep=True).ok


def test_the_tolerance_is_per_opened_vial(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    opened_at(ops, "4.00")
    res = count(ops, opened=2, open_ml="6.35")  # 0.15 short over two opened vials: within 0.20
    assert res["discrepancy_ids"] == []
    assert last_entries(ledger)[0]["lines"][0]["tolerance_ml"] == "0.20"
    assert count(ops, opened=2, open_ml="6.25")["discrepancy_ids"] != []  # 0.25 short: beyond 0.20


def test_sealed_containers_are_always_exact(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    ops.receive(2)  # two sealed vials: the book is 2 sealed, 1 opened, 22.50 mL
    set_tolerance(ops, "1.00")
    # a sealed vial counted as opened (10.00 mL in it): 0.05 mL short, but the containers differ
    res = count(ops, sealed=1, opened=2, open_ml="12.45")
    assert len(res["discrepancy_ids"]) == 1
    (ln,) = last_entries(ledger)[0]["lines"]
    assert (ln["tolerance_ml"], ln["within_tolerance"]) == ("0.00", False)
    # a sealed vial missing: 10 mL short, a discrepancy whatever the tolerance
    assert len(count(ops, sealed=1, opened=1, open_ml="2.50")["discrepancy_ids"]) == 1
    # the containers the book's, the opened mL within 1.00: none
    assert count(ops, sealed=2, opened=1, open_ml="1.70")["discrepancy_ids"] == []
    assert verify(ledger, deep=True).ok


def test_an_opened_vial_missing_or_extra_is_not_a_measuring_error(ledger):
    ops = Ops(ledger)
    opened_at(ops, "0.05")
    opened_at(ops, "2.50")
    # the nearly empty vial was not found: 0.05 mL short, but an opened container is missing
    assert len(count(ops, opened=1, open_ml="2.50")["discrepancy_ids"]) == 1


def test_a_blind_count_whose_book_was_read_is_exact(ledger):
    """A count taken after looking confirms nothing: every line opens a discrepancy, even one
    within the tolerance (the tolerance is for estimating, not for reading the book)."""
    from ledger.integrity.canonical import format_time
    from ledger.storage.stock_reads import record_stock_read

    ops = Ops(ledger)
    opened_at(ops, "2.50")
    s = services.start_count(ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    record_stock_read(ledger.engine, DEA, ops.nurse2.staff_id, "GET /stock", format_time(ledger.clock()))
    res = services.submit_count(ledger, ops.nurse, SubmitCount(s["session_id"], (
        CountLineInput(KETAMINE_50, 0, 1, "2.45"),), an_hour_ago()), second_counter=ops.nurse2)
    assert len(res["discrepancy_ids"]) == 1 and res["book_read_during_count"]
    (ln,) = last_entries(ledger)[0]["lines"]
    assert (ln["tolerance_ml"], ln["within_tolerance"]) == ("0.00", False)
    assert verify(ledger, deep=True).ok


def test_tolerance_zero_counts_opened_vials_exactly(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    set_tolerance(ops, "0")
    assert stock.policy(ledger, DEA)["open_count_tolerance_ml"] == "0.00"
    res = count(ops, open_ml="2.45")
    assert len(res["discrepancy_ids"]) == 1
    (ln,) = last_entries(ledger)[0]["lines"]
    assert (ln["tolerance_ml"], ln["within_tolerance"], ln["difference_ml"]) == ("0.00", False, "-0.05")
    assert count(ops, open_ml="2.50")["discrepancy_ids"] == []
    assert verify(ledger, deep=True).ok


def test_the_policy_sets_the_tolerance_within_its_range(ledger):
    ops = Ops(ledger)
    assert stock.policy(ledger, DEA)["open_count_tolerance_ml"] == "0.10"  # the default, never set
    for bad in ("1.01", "-0.10", "0.0001", "a lot", 0.1):
        refused(ops, InvalidInput, "open_count_tolerance_ml", services.set_policy, ledger, ops.manager,
                SetPolicy(open_count_tolerance_ml=bad))
    set_tolerance(ops, "0.25")
    assert stock.policy(ledger, DEA)["open_count_tolerance_ml"] == "0.25"
    assert last_entries(ledger)[0]["open_count_tolerance_ml"] == "0.25"
    opened_at(ops, "2.50")
    assert count(ops, open_ml="2.30")["discrepancy_ids"] == []  # 0.20 short, within 0.25
    assert last_entries(ledger)[0]["open_count_tolerance_ml"] == "0.25"
    set_tolerance(ops, "1.00")  # the maximum
    assert verify(ledger, deep=True).ok


# --- named vials --------------------------------------------------------------------------------


def test_a_count_may_name_its_opened_vials(ledger):
    ops = Ops(ledger)
    a = opened_at(ops, "5.00")
    b = opened_at(ops, "3.00")
    res = count(ops, opened=2, open_ml="7.95", vials=((a, "5.00"), (b, "2.95")))
    assert res["discrepancy_ids"] == []
    (ln,) = last_entries(ledger)[0]["lines"]
    assert ln["open_vials"] == [{"vial_id": a, "expected_ml": "5.00", "counted_ml": "5.00"},
                                {"vial_id": b, "expected_ml": "3.00", "counted_ml": "2.95"}]
    assert verify(ledger, deep=True).ok


def test_named_vials_are_checked(ledger):
    ops = Ops(ledger)
    a = opened_at(ops, "5.00")
    b = opened_at(ops, "3.00")
    (sealed,) = ops.receive(1)

    def refused_count(exc, field, open_ml, vials, sealed_n=1, opened=2):
        s = services.start_count(ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
        line = CountLineInput(KETAMINE_50, sealed_n, opened, open_ml,
                              open_vials=tuple(OpenVialInput(v, ml) for v, ml in vials))
        refused(ops, exc, field, services.submit_count, ledger, ops.nurse,
                SubmitCount(s["session_id"], (line,), an_hour_ago()), second_counter=ops.nurse2)

    refused_count(InvalidInput, "lines[0].open_vials[1].vial_id", "8.00", ((a, "5.00"), (a, "3.00")))
    refused_count(InvalidInput, "lines[0].open_vials", "8.00", ((a, "5.00"), (b, "2.00")))  # 7.00, not 8.00
    refused_count(InvalidInput, "lines[0].open_vials", "5.00", ((a, "5.00"),))  # 2 opened, 1 named
    refused_count(Conflict, "lines[0].open_vials[1].vial_id", "8.00", ((a, "5.00"), (sealed, "3.00")))  # sealed
    refused_count(Conflict, "lines[0].open_vials[1].vial_id", "8.00", ((a, "5.00"), ("V999-1", "3.00")))
    refused_count(InvalidInput, "lines[0].open_vials[0].ml", "8.00", ((a, "-5.00"), (b, "13.00")))
    refused_count(InvalidInput, "lines[0].open_vials[1].ml", "18.00", ((a, "5.00"), (b, "13.00")))  # > 10 mL vial
    refused_count(InvalidInput, "lines[0].open_vials[0].vial_id", "8.00", ((" ", "5.00"), (b, "3.00")))


def test_an_accepted_loss_comes_out_of_the_named_vial_that_was_short(ledger):
    ops = Ops(ledger)
    a = opened_at(ops, "5.00")
    b = opened_at(ops, "3.00")
    # b is 0.50 short; without names the loss would come out of the fullest opened vial, a
    (d,) = count(ops, opened=2, open_ml="7.50", vials=((a, "5.00"), (b, "2.50")))["discrepancy_ids"]
    services.resolve_discrepancy(ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "b found short"),
                                 witness=ops.pharmacist)
    adj = last_entries(ledger)[0]
    assert adj["kind"] == "loss_adjusted"
    assert [(x["vial_id"], x["ml"], x["whole_vial"]) for x in adj["adjustments"]] == [(b, "0.50", False)]
    left = {v["vial_id"]: v["ml_left"] for v in stock.vials(ledger, DEA)}
    assert (left[a], left[b]) == (Decimal("5.00"), Decimal("2.50"))
    assert verify(ledger, deep=True).ok


def test_a_named_shortfall_and_a_missing_sealed_vial_together(ledger):
    ops = Ops(ledger)
    a = opened_at(ops, "5.00")
    b = opened_at(ops, "3.00")
    ops.receive(1)  # sealed, and not found
    (d,) = count(ops, sealed=0, opened=2, open_ml="7.80", vials=((a, "5.00"), (b, "2.80")))["discrepancy_ids"]
    services.resolve_discrepancy(ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "vial gone, b short"),
                                 witness=ops.pharmacist)
    adj = last_entries(ledger)[0]["adjustments"]
    assert sorted((x["ml"], x["whole_vial"]) for x in adj) == [("0.20", False), ("10.00", True)]
    assert next(x for x in adj if x["ml"] == "0.20")["vial_id"] == b
    assert verify(ledger, deep=True).ok


# --- the pattern of small losses ------------------------------------------------------------------


def test_within_tolerance_shortages_feed_the_loss_pattern(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    for ml in ("2.45", "2.40"):  # the gap grows by 0.05 mL at each count: two new shortfalls
        assert count(ops, open_ml=ml)["discrepancy_ids"] == []
    now = datetime.now(UTC)
    assert rules.loss_pattern(all_entries(ledger), now, rules.AlertPolicy()) is None  # two: not yet a pattern
    (d,) = count(ops, open_ml="2.20")["discrepancy_ids"]  # and one beyond it
    c = rules.loss_pattern(all_entries(ledger), now, rules.AlertPolicy())
    assert c is not None and c.rule == "loss_pattern" and c.severity == "high"
    seqs = [e["seq"] for e in all_entries(ledger) if e["kind"] == "stock_counted"]
    assert c.figures["shortages"] == "3" and c.figures["total_ml"] == "-0.40"
    assert c.figures["discrepancies"] == d
    assert c.figures["within_tolerance"] == f"{seqs[0]}/1 {seqs[1]}/1" and c.figures["within_tolerance_ml"] == "-0.10"
    assert "2 of them within the opened-vial tolerance" in c.summary
    assert c.evidence_seqs == tuple(seqs)


def test_the_same_gap_found_at_every_daily_count_is_one_shortfall(ledger):
    """A within-tolerance shortage leaves the book as it was, so each later count finds it
    again; counted each time, daily counts of one honestly estimated vial would raise the
    high-severity pattern within three days (the flooding the tolerance is there to stop)."""
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    for _ in range(5):
        assert count(ops, open_ml="2.45")["discrepancy_ids"] == []
    assert rules.loss_pattern(all_entries(ledger), datetime.now(UTC), rules.AlertPolicy()) is None
    assert count(ops, open_ml="2.40")["discrepancy_ids"] == []  # the gap grows: a second shortfall
    assert rules.loss_pattern(all_entries(ledger), datetime.now(UTC), rules.AlertPolicy()) is None
    assert len(count(ops, open_ml="2.35")["discrepancy_ids"]) == 1  # beyond the tolerance: the third
    c = rules.loss_pattern(all_entries(ledger), datetime.now(UTC), rules.AlertPolicy())
    assert c is not None and c.figures["shortages"] == "3" and c.figures["within_tolerance_ml"] == "-0.10"


def test_an_overage_within_tolerance_is_not_a_shortage(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    for _ in range(3):
        assert count(ops, open_ml="2.55")["discrepancy_ids"] == []
    assert rules.loss_pattern(all_entries(ledger), datetime.now(UTC), rules.AlertPolicy()) is None


# --- verify --deep ----------------------------------------------------------------------------


def _forged_count(ops: Ops, *, counted: str, within: bool, tolerance: str = "0.10", per: str | None = "0.10",
                  disc: bool = False):
    s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))

    def make(ctx):
        p = product_copy(ctx, KETAMINE_50, field="ndc")
        diff = Decimal(counted) - Decimal("2.50")
        line = ev.CountedLine(product=p, sealed_containers=0, open_containers=1, open_ml=Decimal(counted),
                              counted_ml=Decimal(counted), expected_sealed_containers=0, expected_open_containers=1,
                              expected_ml=Decimal("2.50"), difference_ml=diff,
                              discrepancy_id=f"D{ctx.next_seq}-0" if disc else None,
                              tolerance_ml=Decimal(tolerance), within_tolerance=within)
        at = an_hour_ago()
        return ev.StockCounted(session_id=s["session_id"], blind=True, lines=(line,),
                               open_count_tolerance_ml=None if per is None else Decimal(per)), [
            sig(ops.nurse, "counted", at), sig(ops.nurse2, "counted", at)]

    return force(ops.ledger, make)


@pytest.mark.parametrize("forged, says", [
    (dict(counted="2.20", within=True), "is marked within tolerance, but its difference -0.30 mL"),
    (dict(counted="2.20", within=False), "differs by -0.30 mL (tolerance 0.10 mL) and opens no discrepancy"),
    (dict(counted="2.20", within=True, tolerance="0.50", per="0.50"), "policy in force was 0.10 mL"),
    (dict(counted="2.20", within=True, tolerance="0.50"), "records a tolerance of 0.50 mL; the policy gives it 0.10"),
    # the count's policy figure stripped: the line is held to 0 mL, as counts before the tolerance were
    (dict(counted="2.45", within=True, per=None), "records a tolerance of 0.10 mL; the policy gives it 0.00 mL"),
], ids=["marked-within", "no-discrepancy", "policy-figure", "line-figure", "no-policy-figure"])
def test_a_forged_within_tolerance_line_fails_verify_deep(ledger, forged, says):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    assert verify(ledger, deep=True).ok
    seq = _forged_count(ops, **forged)
    assert verify(ledger).ok  # the chain and the tree agree: only the replay sees it
    (problem,) = verify(ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule count-tolerance:" in str(problem) and says in str(problem), str(problem)


def test_an_honest_forged_shape_passes(ledger):
    """The forger's entry built exactly as the service would (a control for the test above)."""
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    _forged_count(ops, counted="2.45", within=True)
    _forged_count(ops, counted="2.20", within=False, tolerance="0.10", disc=True)
    assert verify(ledger, deep=True).ok


def test_a_count_under_an_older_tolerance_replays_with_the_policy_of_its_seq(ledger):
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    set_tolerance(ops, "0.50")
    assert count(ops, open_ml="2.10")["discrepancy_ids"] == []  # 0.40 within 0.50 then
    set_tolerance(ops, "0.10")
    assert len(count(ops, open_ml="2.10")["discrepancy_ids"]) == 1  # beyond 0.10 now
    assert verify(ledger, deep=True).ok


def _old(cls, drop: tuple[str, ...], kind: str | None = None):
    """``cls`` as it was before issue 20: a dataclass without the fields ``drop`` names."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls) if f.name not in drop]
    ns = {"kind": kind} if kind else {}
    return dataclasses.make_dataclass(f"Old{cls.__name__}", fields, bases=(ev.Event,) if kind else (), frozen=True,
                                      namespace=ns)


OldLine = _old(ev.CountedLine, ("tolerance_ml", "within_tolerance", "open_vials"))
OldCount = _old(ev.StockCounted, ("open_count_tolerance_ml",), kind="stock_counted")


def test_a_count_recorded_before_the_tolerance_still_verifies(ledger):
    """An entry as written before issue 20 (none of the tolerance fields) reads, replays (held to
    0 mL: every difference had a discrepancy then) and verifies."""
    ops = Ops(ledger)
    opened_at(ops, "2.50")
    s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))

    def make(ctx):
        p = product_copy(ctx, KETAMINE_50, field="ndc")
        line = OldLine(product=p, sealed_containers=0, open_containers=1, open_ml=Decimal("2.45"),
                       counted_ml=Decimal("2.45"), expected_sealed_containers=0, expected_open_containers=1,
                       expected_ml=Decimal("2.50"), difference_ml=Decimal("-0.05"), discrepancy_id=f"D{ctx.next_seq}-0")
        at = an_hour_ago()
        return OldCount(session_id=s["session_id"], blind=True, lines=(line,)), [
            sig(ops.nurse, "counted", at), sig(ops.nurse2, "counted", at)]

    force(ops.ledger, make)
    e = last_entries(ledger)[0]
    assert "open_count_tolerance_ml" not in e and "tolerance_ml" not in e["lines"][0]
    assert verify(ledger, deep=True).ok
    assert len(stock.discrepancies(ledger, DEA)) == 1
    # the pattern rule reads it too (a discrepancy shortage, as before)
    assert rules.loss_pattern(all_entries(ledger), datetime.now(UTC), rules.AlertPolicy()) is None


# --- over HTTP ------------------------------------------------------------------------------------


def test_over_http_policy_and_a_count_naming_its_opened_vial(api):  # noqa: F811
    from tests.api.test_clinical import witnessed
    from tests.api.test_spills import opening, post

    vials, _ = opening(api)  # 3 sealed vials, 1.00 mL drawn from the first: 2 sealed, 1 opened at 9.00 mL
    bad = post(api, "morgan", "/policies", {"open_count_tolerance_ml": "1.50", "reason": "too loose"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "open_count_tolerance_ml", bad.text
    ok = post(api, "morgan", "/policies", {"open_count_tolerance_ml": "0.20", "reason": "count tolerance"})
    assert ok.status_code == 201, ok.text
    got = api.client.get(api.url("/policy"), headers=api.headers("morgan"))
    assert got.json()["open_count_tolerance_ml"] == "0.20"

    def submit(open_vials, open_ml):
        s = post(api, "nora", "/counts", {"ndcs": [KETAMINE_50], "blind": True})
        body = {"lines": [{"ndc": KETAMINE_50, "sealed_containers": 2, "open_containers": 1, "open_ml": open_ml,
                           "open_vials": open_vials}], "occurred_at": datetime.now(UTC).isoformat()}
        r, _ = witnessed(api, "nora", f"/counts/{s.json()['session_id']}/submissions", body, "ned")
        return r

    r = submit([{"vial_id": vials[0], "ml": "8.85"}], "8.85")
    assert r.status_code == 201, r.text
    (ln,) = r.json()["lines"]
    assert (ln["difference_ml"], ln["tolerance_ml"], ln["within_tolerance"], ln["discrepancy_id"]) == (
        "-0.15", "0.20", True, None)
    assert ln["open_vials"] == [{"vial_id": vials[0], "expected_ml": "9.00", "counted_ml": "8.85"}]
    assert r.json()["within_tolerance"] == [KETAMINE_50] and r.json()["discrepancy_ids"] == []
    r = submit([{"vial_id": vials[1], "ml": "8.85"}], "8.85")  # a sealed vial named as the opened one
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "lines[0].open_vials[0].vial_id", r.text
    r = submit([{"vial_id": vials[0], "ml": "8.85", "extra": 1}], "8.85")
    assert r.status_code == 422, r.text
    r = submit([{"vial_id": vials[0], "ml": "8.50"}], "8.50")  # 0.50 short: beyond 0.20
    assert r.status_code == 201 and len(r.json()["discrepancy_ids"]) == 1, r.text


# --- the count report -----------------------------------------------------------------------------


def test_the_count_report_shows_the_tolerance_and_marks_lines_within_it(ledger, tmp_path):
    """Drawn from entries as the service records them (pure); page 1 saved as a PNG to look at."""
    from reports.base import compute_data, kind_named, render_data
    from tests.reports.handmade_entries import K50, entry
    from tests.reports.test_clinical_reports import pdf_text, with_counts_and_losses
    from tests.reports.test_clinical_reports import sig as rsig

    snap = with_counts_and_losses()
    gs1 = "(01)00367457000110(21)SN20260911A0042:03"
    line = {"product": K50, "sealed_containers": 2, "open_containers": 2, "open_ml": "6.35", "counted_ml": "26.35",
            "expected_sealed_containers": 2, "expected_open_containers": 2, "expected_ml": "26.50",
            "difference_ml": "-0.15", "discrepancy_id": None, "tolerance_ml": "0.20", "within_tolerance": True,
            "open_vials": [{"vial_id": gs1, "expected_ml": "2.50", "counted_ml": "2.35"},
                           {"vial_id": "V14-2", "expected_ml": "4.00", "counted_ml": "4.00"}]}
    snap.entries.append(entry(14, "stock_counted", "2026-09-20T13:00:00.000000Z", session_id="C13", blind=True,
                              lines=[line], open_count_tolerance_ml="0.10",
                              signatures=[rsig("Nora Nurse", "counted"), rsig("Ned Nurse", "counted")]))
    snap.entries.sort(key=lambda e: e["occurred_at"])
    data, pages = pdf_text("counts", snap)
    assert kind_named("counts").layout == 2  # drawn differently from the same data than before issue 20
    f = data["figures"]
    assert f["within_tolerance"] == 1
    c = next(c for c in f["counts"] if c["seq"] == 14)
    assert c["open_count_tolerance_ml"] == "0.10" and c["lines"][0]["within_tolerance"] is True
    text = " ".join(pages)
    for must in ("tolerance 0.10 mL per opened vial", "exact (no tolerance)", "WITHIN TOLERANCE", "0.20 mL",
                 "no discrepancy", "V14-2: 4.00 mL (book 4.00 mL)", "1 line(s) in the period", "-0.15 mL",
                 "serial SN20260911A0042:03: 2.35 mL (book 2.50 mL)"):
        assert must in text, must
    assert [d["id"] for d in f["discrepancies"]] == ["D1", "D2"]  # a within-tolerance line is no discrepancy
    from tests.reports.test_clinical_reports import PERIOD

    pdf = render_data(compute_data(kind_named("counts"), snap, PERIOD, generated_at="2026-10-01T14:00:00.000000Z",
                                   generated_by="Casey Compliance", paper="letter"))
    out = tmp_path / "counts.pdf"
    out.write_bytes(pdf)
    png = os.environ.get("CSLEDGER_SAVE_REPORT_PNG")
    if png:  # for a person to look at: pdftoppm -png -r 60 -f 1 -l 1
        import shutil
        import subprocess

        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(out), png], check=True)
        shutil.copy(out, png + ".pdf")


# --- the count page -------------------------------------------------------------------------------


def test_the_count_page_takes_opened_vials_one_by_one_and_says_what_each_line_did(ledger):
    import re
    import zoneinfo

    from api.web.settings import WebSettings
    from ledger.domain.commands import InventoryItemInput, TakeInventory
    from tests.api.conftest import PASSWORD, build_api
    from tests.web.test_pages_http import UI, csrf_of, login

    web = build_api(ledger)
    web.client.app.state.web_settings = WebSettings(cookie_secure=False)
    inv = services.take_inventory(ledger, web.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=1), items=(
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=2),
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=False, ml="2.50",
                               first_punctured_on=(datetime.now(UTC) - timedelta(days=1)).date().isoformat()))),
        witness=web.clinic.nurse)
    opened = inv["vial_ids"][-1]
    login(web, "nora")

    def new_session(key: str):
        start = web.client.get(UI + "counts/new")
        r = web.client.post(UI + "counts/new", data={"csrf_token": csrf_of(start.text), "form_key": key},
                            follow_redirects=False)
        return r.headers["location"]

    url = new_session("s1")
    page = web.client.get(url)
    assert page.status_code == 200
    assert 'name="lines-0-open_vials"' in page.text and "up to 0.10 mL per opened vial" in page.text
    assert "2.50" not in page.text and opened not in page.text  # still blind: no vial and no mL of the book
    when = web.clock().astimezone(zoneinfo.ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")
    form = {"csrf_token": csrf_of(page.text), "form_key": "count-t1", "line_count": "2",
            "lines-0-ndc": KETAMINE_50, "lines-0-sealed_containers": "2", "lines-0-open_containers": "1",
            "lines-0-open_ml": "2.45", "lines-0-open_vials": "nope 2.45",
            "lines-1-ndc": "52584-0037-10", "lines-1-sealed_containers": "0", "lines-1-open_containers": "0",
            "lines-1-open_ml": "", "occurred_at": when, "counter2_username": "ned", "counter2_password": PASSWORD}
    r = web.client.post(url, data=form)  # a vial id that is no vial: the error on the box, what was typed kept
    assert r.status_code == 422 and 'id="f-lines-0-open_vials-error"' in r.text and "nope 2.45</textarea>" in r.text
    r = web.client.post(url, data={**form, "lines-0-open_vials": f"{opened} 2.40"})  # 2.40, not the 2.45 total
    assert r.status_code == 422 and 'id="f-lines-0-open_vials-error"' in r.text, r.text
    r = web.client.post(url, data={**form, "lines-0-open_vials": f"{inv['vial_ids'][0]} 2.45"})  # a sealed vial
    assert r.status_code == 409 and 'id="f-lines-0-open_vials-error"' in r.text and "not an opened vial" in r.text
    short = opened[-4:]  # the end of its id, as a counter reads it off the label
    r = web.client.post(url, data={**form, "lines-0-open_vials": f"{short} 2.45"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    text = re.sub(r"\s+", " ", entry.text)
    assert "Count result" in text and "within tolerance</strong> (up to 0.10 mL): recorded, no discrepancy" in text
    assert f"{opened}: counted 2.45 mL, book 2.50 mL" in text
    assert "matches the book" in text  # the 10 mg/mL line, nothing on hand and none counted
    # a shortage beyond the tolerance says so too
    url = new_session("s2")
    page = web.client.get(url)
    r = web.client.post(url, data={**form, "csrf_token": csrf_of(page.text), "form_key": "count-t2",
                                   "lines-0-open_ml": "2.00", "lines-0-open_vials": ""}, follow_redirects=False)
    assert r.status_code == 303, r.text
    text = re.sub(r"\s+", " ", web.client.get(r.headers["location"]).text)
    assert re.search(r"opened discrepancy D\d+-0</strong>", text), text
