"""Diluted infusions (issue 19): a bag or syringe prepared from vials, infused (stopped early or
not), its remainder wasted before a witness; on SQLite and PostgreSQL.

The preparation stores its exact mg and final mL, never a rounded concentration: mg given = mg x
mL infused / final mL (half-even to 0.01 mg), mg wasted = mg - mg given, so mg drawn = given +
wasted exactly. Each refusal has a test (past the 4-hour beyond-use time, before the preparation,
witness = performer, more than the final volume, more than a vial holds, an unregistered or
distributor prescriber); entries forced in by hand that break the rules fail ``verify --deep``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import (
    DrawInput,
    InfusePreparation,
    InventoryItemInput,
    MakePreparation,
    TakeInventory,
    WastePreparation,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.integrity.canonical import decode, format_time
from ledger.services import audit
from ledger.services.verify import verify
from reports.base import build_report
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import BACKENDS, DEA, KETAMINE_50, clinic_today, entry_count
from tests.integrity.test_rules_replay import force, sig

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

DISTRIBUTOR = "RP1234563"
UNREGISTERED = "AB7654329"


def now() -> datetime:
    return datetime.now(UTC)


def prepare(ops: Ops, vial_id: str, ml: str = "0.70", *, at: datetime | None = None, by=None, **kw) -> dict:
    """A 100 mL saline bag with ``ml`` of 50 mg/mL ketamine (0.70 mL = 35 mg: 0.5 mg/kg x 70 kg)."""
    fields = dict(patient_id=ops.patient_id, prescriber_dea_number=PRESCRIBER_DEA, weight_kg="70.00",
                  ordered_mg_per_kg="0.50", draws=(DrawInput(vial_id, ml),), diluent="0.9% sodium chloride",
                  diluent_ml="100.00", container="bag", final_ml="100.70",
                  started_at=at or now() - timedelta(hours=2))
    fields.update(kw)
    return services.make_preparation(ops.ledger, by or ops.nurse, MakePreparation(**fields))


def infuse(ops: Ops, prep_id: str, ml: str = "70.00", *, start: datetime | None = None, minutes: int = 40,
           by=None, **kw) -> dict:
    start = start or now() - timedelta(hours=1, minutes=30)
    return services.infuse_preparation(ops.ledger, by or ops.nurse, InfusePreparation(
        prep_id, ml, start, start + timedelta(minutes=minutes), **kw))


def waste(ops: Ops, prep_id: str, *, witness=None, by=None, at: datetime | None = None, **kw) -> dict:
    return services.waste_preparation(ops.ledger, by or ops.nurse, WastePreparation(
        prep_id, "bag emptied into drug disposal container", at or now() - timedelta(minutes=30), **kw),
        witness=witness if witness is not None else ops.nurse2)


def last_entries(ops: Ops, n: int) -> list[dict]:
    from ledger.storage.store import raw

    with ops.ledger.reading() as c:
        rows = raw(c).rows(c, "SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq DESC LIMIT :n",
                           {"r": ops.dea, "n": n})
    return [decode(bytes(r["canonical"])) for r in reversed(rows)]


def vial(ops: Ops, vial_id: str) -> dict:
    from ledger.storage.store import SqlStateView

    with ops.ledger.reading() as c:
        return SqlStateView(c).get("vials", (ops.dea, vial_id))


def test_a_bag_stopped_early_balances_to_the_last_digit(ops):
    vids = ops.receive(2)
    t0 = now() - timedelta(hours=3)
    made = prepare(ops, vids[0])
    assert made["mg"] == "35.00" and made["final_ml"] == "100.70" and made["ml_drawn"] == "0.70"
    assert made["concentration_mg_per_ml"] == "0.3475"  # shown (35 / 100.70 = 0.34756...), never stored
    assert made["opened_vials"] == [vids[0]]
    assert vial(ops, vids[0])["ml_left"] == Decimal("9.30")  # the draw took the mL at preparation time
    (entry,) = last_entries(ops, 1)
    assert entry["kind"] == "preparation_made" and "concentration" not in str(sorted(entry))
    assert (entry["prescriber_dea_number"], entry["prescriber_name"]) == (PRESCRIBER_DEA, "Dr. Alex Prescriber")
    assert entry["diluent"] == "0.9% sodium chloride" and entry["container"] == "bag"
    assert entry["beyond_use_at"] == format_time(datetime.fromisoformat(
        entry["started_at"].replace("Z", "+00:00")) + timedelta(hours=4))
    assert entry["draws"][0]["opened_vial"] is True and entry["draws"][0]["lot"] == "LOT-7781"

    given = infuse(ops, made["preparation_id"], "70.00", stop_reason="patient asked to stop")
    # 35 mg x 70 / 100.70 = 24.3297... -> 24.33 mg (half-even); 10.67 mg left
    assert (given["mg_given"], given["mg_remaining"], given["stopped_early"]) == ("24.33", "10.67", True)
    (inf,) = last_entries(ops, 1)
    assert inf["product_ml_given"] == "0.487"  # 0.70 x 24.33 / 35 = 0.4866 -> 0.487 (syringe resolution)
    wasted = waste(ops, made["preparation_id"], ml_remaining="30.70")
    assert (wasted["mg_wasted"], wasted["product_ml_wasted"]) == ("10.67", "0.213")
    (w,) = last_entries(ops, 1)
    assert [s["meaning"] for s in w["signatures"]] == ["performed", "witnessed"]
    assert Decimal(inf["mg_given"]) + Decimal(w["mg"]) == Decimal(entry["mg"])
    assert Decimal(inf["product_ml_given"]) + Decimal(w["product_ml"]) == Decimal(entry["ml_drawn"])

    a = audit.audit(ops.ledger, ops.dea, t0, now())
    (p,) = [x for x in a["products"] if x["ndc_key"] == entry["draws"][0]["product"]["ndc_key"]]
    assert p["ml"]["administered"] == Decimal("0.487") and p["ml"]["wasted"] == Decimal("0.213")
    assert p["unreconciled"]["ml"] == 0 and p["ml"]["difference"] == 0
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(x) for x in report.problems]


def test_the_logs_show_the_preparation_given_and_wasted(ops):
    vids = services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory(
        "initial", "opening_of_business", now() - timedelta(hours=3),
        (InventoryItemInput(KETAMINE_50, "KA2611", "2028-06-30", sealed=True, containers=1),)), witness=ops.nurse)["vial_ids"]
    made = prepare(ops, vids[0])
    infuse(ops, made["preparation_id"], "70.00")
    waste(ops, made["preparation_id"])
    today = clinic_today()
    span = ((today - timedelta(days=1)).isoformat(), today.isoformat())
    _pdf, data = build_report(ops.ledger, "administrations", DEA, *span)
    (row,) = data["figures"]["rows"]
    assert row["preparation_id"] == made["preparation_id"] and row["mg_given"] == "24.33"
    assert row["mg_wasted"] == "10.67" and row["mg_drawn"] == "35.00" and row["unreconciled_ml"] == "0.00"
    _pdf, data = build_report(ops.ledger, "waste", DEA, *span)
    (w,) = data["figures"]["wastes"]
    assert w["mg"] == "10.67" and w["preparation_id"] == made["preparation_id"]
    assert data["figures"]["total"]["wasted_mg"] == "10.67"
    _pdf, data = build_report(ops.ledger, "vial", DEA, *span, params={"vial": vids[0]})
    drawn = [r for r in data["figures"]["events"] if r["what"] == "drawn into a preparation"]
    assert len(drawn) == 1 and drawn[0]["ml"] == "-0.70" and data["figures"]["ml_left"] == "9.30"


def test_a_preparation_used_past_four_hours_is_refused_and_wasted_whole(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0], at=now() - timedelta(hours=5))
    before = entry_count(ops.ledger)
    with pytest.raises(Conflict) as exc:
        infuse(ops, made["preparation_id"], start=now() - timedelta(minutes=50))
    assert exc.value.field == "started_at" and "4 hours" in exc.value.reason
    assert entry_count(ops.ledger) == before
    with pytest.raises(InvalidInput) as exc:  # never infused: say why it is wasted
        waste(ops, made["preparation_id"])
    assert exc.value.field == "reason"
    out = waste(ops, made["preparation_id"], reason="past its beyond-use time")
    assert out["mg_wasted"] == "35.00" and out["product_ml_wasted"] == "0.70"
    assert verify(ops.ledger, deep=True).ok


def test_an_infusion_before_its_preparation_is_refused(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0], at=now() - timedelta(hours=1))
    with pytest.raises(Conflict) as exc:
        infuse(ops, made["preparation_id"], start=now() - timedelta(hours=2))
    assert exc.value.field == "started_at" and "before its preparation" in exc.value.reason


def test_the_witness_must_be_someone_else(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0])
    infuse(ops, made["preparation_id"])
    before = entry_count(ops.ledger)
    with pytest.raises(Conflict) as exc:
        waste(ops, made["preparation_id"], witness=ops.nurse)
    assert exc.value.field == "witness"
    with pytest.raises(InvalidInput):
        services.waste_preparation(ops.ledger, ops.nurse, WastePreparation(
            made["preparation_id"], "drain", now()), witness=None)
    assert entry_count(ops.ledger) == before


def test_infusing_more_than_the_final_volume_is_refused(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0])
    with pytest.raises(Conflict) as exc:
        infuse(ops, made["preparation_id"], "100.80")  # the overfill is not in the record: the pump's figure is
    assert exc.value.field == "ml_infused" and "final volume 100.70" in exc.value.reason
    whole = infuse(ops, made["preparation_id"], "100.70")
    assert (whole["mg_given"], whole["mg_remaining"], whole["stopped_early"]) == ("35.00", "0.00", False)
    with pytest.raises(Conflict):  # nothing left: no waste entry
        waste(ops, made["preparation_id"])
    with pytest.raises(Conflict):  # one infusion per preparation
        infuse(ops, made["preparation_id"], "1.00")
    assert verify(ops.ledger, deep=True).ok


def test_drawing_more_than_a_vial_holds_is_refused(ops):
    vids = ops.receive(1)
    before = entry_count(ops.ledger)
    with pytest.raises(Conflict) as exc:
        prepare(ops, vids[0], "10.01", final_ml="120.00")
    assert exc.value.field == "draws[0].ml" and "below zero" in exc.value.reason
    with pytest.raises(InvalidInput) as exc:
        prepare(ops, vids[0], "5.00", diluent_ml="0.00", final_ml="4.00")
    assert exc.value.field == "final_ml"
    # review finding F3: the final volume holds at least drug + diluent (a smaller one would make a
    # partial infusion look whole, the drug left in the container leaving without a witness)
    with pytest.raises(InvalidInput) as exc:
        prepare(ops, vids[0], "5.00", diluent_ml="10.00", final_ml="10.00")
    assert exc.value.field == "final_ml" and "15.00 mL" in exc.value.reason
    with pytest.raises(InvalidInput) as exc:
        prepare(ops, vids[0], "5.00", container="syringe", final_ml="100.00")
    assert exc.value.field == "final_ml" and "60.00" in exc.value.reason
    assert entry_count(ops.ledger) == before
    assert vial(ops, vids[0])["ml_left"] == Decimal("10.00")


@pytest.mark.parametrize("number, says", [(UNREGISTERED, "not a registered prescriber"),
                                          (DISTRIBUTOR, "not a practitioner")])
def test_an_unregistered_or_distributor_prescriber_is_refused(ops, number, says):
    vids = ops.receive(1)
    before = entry_count(ops.ledger)
    with pytest.raises(InvalidInput) as exc:
        prepare(ops, vids[0], prescriber_dea_number=number)
    assert exc.value.field == "prescriber_dea_number" and says in exc.value.reason
    assert entry_count(ops.ledger) == before


def test_roles_and_state(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0], by=ops.pharmacist)  # a pharmacist prepares
    from ledger.domain.errors import Forbidden

    with pytest.raises(Forbidden):  # an auditor records nothing
        prepare(ops, vids[0], by=ops.auditor)
    with pytest.raises(Forbidden):  # a pharmacist does not run the infusion
        infuse(ops, made["preparation_id"], by=ops.pharmacist)
    with pytest.raises(NotFound):
        infuse(ops, "P999999")
    infuse(ops, made["preparation_id"], by=ops.prescriber)
    waste(ops, made["preparation_id"])
    with pytest.raises(Conflict):
        waste(ops, made["preparation_id"])
    with pytest.raises(Conflict):
        infuse(ops, made["preparation_id"])


# --- entries forced in by hand ------------------------------------------------------------------


def _made(ops: Ops) -> tuple[dict, dict]:
    """A preparation infused through the services; its made and infused entries."""
    vids = ops.receive(1)
    made = prepare(ops, vids[0])
    infuse(ops, made["preparation_id"])
    return tuple(last_entries(ops, 2))


def test_a_waste_witnessed_by_its_performer_fails_verify_deep(ops):
    made, _inf = _made(ops)
    assert verify(ops.ledger, deep=True).ok

    def make(ctx):
        product = services.common.product_of_vial(ctx, ctx.view.get("vials", (DEA, made["draws"][0]["vial_id"])))
        return ev.PreparationWasted(preparation_id=made["preparation_id"], preparation_seq=made["seq"], product=product,
                                    mg=Decimal("10.67"), product_ml=Decimal("0.213"), infused=True, method="drain"), \
            [sig(ops.nurse, "performed", ctx.now), sig(ops.nurse, "witnessed", ctx.now)]
    seq = force(ops.ledger, make)
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule two-people:" in str(problem), str(problem)


def test_a_waste_that_does_not_balance_fails_verify_deep(ops):
    made, _inf = _made(ops)

    def make(ctx):
        product = services.common.product_of_vial(ctx, ctx.view.get("vials", (DEA, made["draws"][0]["vial_id"])))
        return ev.PreparationWasted(preparation_id=made["preparation_id"], preparation_seq=made["seq"], product=product,
                                    mg=Decimal("9.67"), product_ml=Decimal("0.21"), infused=True, method="drain"), \
            [sig(ops.nurse, "performed", ctx.now), sig(ops.nurse2, "witnessed", ctx.now)]
    seq = force(ops.ledger, make)
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule preparation-mg:" in str(problem), str(problem)


def test_an_infusion_past_the_beyond_use_time_fails_verify_deep(ops):
    vids = ops.receive(1)
    made = prepare(ops, vids[0], at=now() - timedelta(hours=5))
    (entry,) = last_entries(ops, 1)

    def make(ctx):
        product = services.common.product_of_vial(ctx, ctx.view.get("vials", (DEA, vids[0])))
        start = now() - timedelta(minutes=30)
        return ev.PreparationInfused(
            preparation_id=made["preparation_id"], preparation_seq=entry["seq"], patient_id=entry["patient_id"],
            product=product, ordered_mg=Decimal("35.00"), vials_drawn=1, mg=Decimal("35.00"), ml_drawn=Decimal("0.70"),
            final_ml=Decimal("100.70"), ml_infused=Decimal("70.00"), mg_given=Decimal("24.33"),
            product_ml_given=Decimal("0.487"), started_at=format_time(start), ended_at=format_time(start),
            stopped_early=True), [sig(ops.nurse, "performed", ctx.now)]
    seq = force(ops.ledger, make)
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule preparation-beyond-use:" in str(problem), str(problem)


def test_a_preparation_whose_mg_is_not_its_draws_fails_verify_deep(ops):
    vids = ops.receive(1)
    prepare(ops, vids[0])
    (entry,) = last_entries(ops, 1)

    def make(ctx):
        v = ctx.view.get("vials", (DEA, vids[0]))
        product = services.common.product_of_vial(ctx, v)
        draw = ev.Draw(vial_id=vids[0], product=product, lot=v["lot"], expiry=datetime.fromisoformat(v["expiry"]).date(),
                       ml=Decimal("1.00"), opened_vial=False, beyond_use_date=datetime.fromisoformat(
                           v["beyond_use_date"]).date())
        started = ctx.now - timedelta(minutes=5)
        return ev.PreparationMade(
            preparation_id="PFORGED", patient_id=entry["patient_id"], patient_commitment=entry["patient_commitment"],
            prescriber_dea_number=PRESCRIBER_DEA, prescriber_name="Dr. Alex Prescriber", weight_kg=Decimal("70.00"),
            ordered_mg_per_kg=Decimal("0.50"), ordered_mg=Decimal("35.00"), draws=(draw,), ml_drawn=Decimal("1.00"),
            mg=Decimal("40.00"), diluent="0.9% sodium chloride", diluent_ml=Decimal("100.00"), container="bag",
            final_ml=Decimal("101.00"), started_at=format_time(ctx.now), beyond_use_at=format_time(
                ctx.now + timedelta(hours=4))), [sig(ops.nurse, "performed", started)]
    seq = force(ops.ledger, make)
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule preparation-mg:" in str(problem), str(problem)



def test_a_final_volume_below_drug_and_diluent_fails_verify_deep(ops):
    """Review finding F3, the replay's side: 1.00 mL of drug and 100 mL of diluent recorded as a
    100.50 mL bag, appended without the service, is named by ``verify --deep``."""
    vids = ops.receive(1)
    prepare(ops, vids[0])
    (entry,) = last_entries(ops, 1)

    def make(ctx):
        v = ctx.view.get("vials", (DEA, vids[0]))
        product = services.common.product_of_vial(ctx, v)
        draw = ev.Draw(vial_id=vids[0], product=product, lot=v["lot"], expiry=datetime.fromisoformat(v["expiry"]).date(),
                       ml=Decimal("1.00"), opened_vial=False, beyond_use_date=datetime.fromisoformat(
                           v["beyond_use_date"]).date())
        return ev.PreparationMade(
            preparation_id="PSMALL", patient_id=entry["patient_id"], patient_commitment=entry["patient_commitment"],
            prescriber_dea_number=PRESCRIBER_DEA, prescriber_name="Dr. Alex Prescriber", weight_kg=Decimal("70.00"),
            ordered_mg_per_kg=Decimal("0.50"), ordered_mg=Decimal("35.00"), draws=(draw,), ml_drawn=Decimal("1.00"),
            mg=Decimal("50.00"), diluent="0.9% sodium chloride", diluent_ml=Decimal("100.00"), container="bag",
            final_ml=Decimal("100.50"), started_at=format_time(ctx.now), beyond_use_at=format_time(
                ctx.now + timedelta(hours=4))), [sig(ops.nurse, "performed", ctx.now - timedelta(minutes=5))]
    seq = force(ops.ledger, make)
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule preparation-mg:" in str(problem), str(problem)


def test_dose_above_order_allows_the_measuring_resolution_of_the_draws(ops):
    from ledger.domain.alerts import AlertPolicy, per_entry_rules

    vids = ops.receive(2)
    # 0.5 mg/kg x 70.60 kg = 35.30 mg; 0.71 mL = 35.50 mg given whole: within half a graduation (0.25 mg)
    made = prepare(ops, vids[0], "0.71", weight_kg="70.60", final_ml="100.71")
    infuse(ops, made["preparation_id"], "100.71")
    (inf,) = last_entries(ops, 1)
    assert inf["mg_given"] == "35.50"
    assert not [c for c in per_entry_rules(inf, AlertPolicy(), "America/Chicago") if c.rule == "dose_above_order"]
    # 1.00 mL = 50 mg for a 35 mg order: above it
    made = prepare(ops, vids[1], "1.00", final_ml="101.00")
    infuse(ops, made["preparation_id"], "101.00")
    (inf,) = last_entries(ops, 1)
    (c,) = [c for c in per_entry_rules(inf, AlertPolicy(), "America/Chicago") if c.rule == "dose_above_order"]
    assert c.figures["mg_given"] == "50.00" and c.figures["allowance_mg"] == "0.25"


def test_a_preparation_left_unwasted_raises_an_alert(ops):
    from ledger.domain.alerts import AlertPolicy
    from ledger.domain.alerts.preparations import unreconciled_preparations
    from ledger.services.alerts import clinical_wastes

    vids = ops.receive(2)
    stopped = prepare(ops, vids[0])
    infuse(ops, stopped["preparation_id"], "50.00")
    never = prepare(ops, vids[1], at=now() - timedelta(hours=7))
    entries = last_entries(ops, 3)
    found = {c.alert_key: c for c in unreconciled_preparations(entries, now(), AlertPolicy())}
    assert set(found) == {f"unreconciled:{never['preparation_id']}"}  # the stopped one ended < 2 h ago
    later = {c.alert_key for c in unreconciled_preparations(entries, now() + timedelta(hours=3), AlertPolicy())}
    assert later == {f"unreconciled:{stopped['preparation_id']}", f"unreconciled:{never['preparation_id']}"}
    waste(ops, stopped["preparation_id"])
    waste(ops, never["preparation_id"], reason="past its beyond-use time")
    entries = last_entries(ops, 5)
    assert unreconciled_preparations(entries, now() + timedelta(hours=3), AlertPolicy()) == []
    assert {w.seq for w in clinical_wastes(entries)} == {e["seq"] for e in entries if e["kind"] == "preparation_made"}


def test_a_signed_clinic_signs_each_step_and_verifies(ledger, tmp_path):
    """With staff credentials (issue 17) each command's statement covers the entry it writes, and
    the preparation's draws are vials its signed command names."""
    from tests.integrity.test_staff_signatures_verify import signed_clinic

    chain = signed_clinic(ledger, tmp_path)
    ops = chain.ops
    made = prepare(ops, chain.vials[2], by=chain.nurse)
    infuse(ops, made["preparation_id"], "50.00", by=chain.nurse)
    waste(ops, made["preparation_id"], by=chain.nurse, witness=chain.nurse2)
    kinds = [e["kind"] for e in last_entries(ops, 3)]
    assert kinds == ["preparation_made", "preparation_infused", "preparation_wasted"]
    assert all(s.get("statement") for e in last_entries(ops, 3) for s in e["signatures"])
    report = verify(ledger, deep=True, patient_keys=ops.keys)
    assert report.ok, [str(p) for p in report.problems]
