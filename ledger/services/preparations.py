"""Diluted infusions (issue 19): a bag or syringe-pump syringe prepared from vials, the infusion
from it, and the remainder wasted before a witness.

- ``make_preparation``: the vial draws (product mL off the vials now, as a direct dose's draws;
  stock never below zero, each vial usable), the diluent and its mL, the container and its final
  mL, for one patient's order (a registered, active prescriber; mg/kg x weight). The entry stores
  the mg exactly (sum of mL x strength) and the final mL; the concentration is derived, never
  stored. Its beyond-use time is the start of preparation + 4 hours (USP <797> immediate use).
- ``infuse_preparation``: started (not before the preparation, not after its beyond-use time),
  stopped, the mL infused as the pump reports it (never "bag volume minus remainder": bags are
  overfilled), mg given = mg x mL infused / final mL (``ledger.domain.preparations``).
- ``waste_preparation``: mg - mg given exactly (the whole preparation when never infused), signed
  by a witness (a second authenticated person).

Direct draws (IM, IV push) stay ``administration.administer_dose``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from ledger.domain import entries as ev
from ledger.domain import preparations as rules
from ledger.domain.commands import InfusePreparation, MakePreparation, WastePreparation
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_volume
from ledger.integrity.canonical import format_time, parse_time
from ledger.services.administration import (
    ADMINISTERERS,
    CLINICIANS,
    draw_for_order,
    ordered_mg,
    parse_order,
)
from ledger.services.common import (
    FUTURE_TOLERANCE,
    ZERO,
    aware,
    entry_at,
    event_time,
    product_from_row,
    registrant_tz,
    request_fields,
    run,
    sign_witness,
    text,
)
from ledger.storage.store import CommandContext, Ledger

#: Who prepares a bag or syringe: whoever handles the drug in the medication room.
PREPARERS = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST})
#: Who starts and stops an infusion: those who administer doses.
INFUSERS = ADMINISTERERS
#: Who wastes a preparation's remainder (with a witness): as for a dose's waste.
WASTERS = CLINICIANS


def _preparation(ctx: CommandContext, preparation_id: object) -> dict:
    if not isinstance(preparation_id, str) or not preparation_id or len(preparation_id) > 32:
        raise InvalidInput("must be a preparation id", field="preparation_id")
    row = ctx.view.get("preparations", (ctx.registrant, preparation_id))
    if row is None:
        raise NotFound(f"no preparation {preparation_id!r} at {ctx.registrant}", field="preparation_id")
    return row


def _product_of(ctx: CommandContext, ndc_key: str) -> ev.ProductDescription:
    return product_from_row(ctx.view.get("products", (ctx.registrant, ndc_key)))


def make_preparation(ledger: Ledger, principal: Principal, cmd: MakePreparation,
                     idempotency_key: str | None = None) -> dict:
    """Record a bag or syringe prepared for one patient's infusion; its draws take their mL off
    the vials now (a sealed vial is opened by its first draw, as for a direct dose)."""
    prescriber, weight, per_kg, draws_in = parse_order(cmd, what="preparation")
    drawn = rules.exact(sum((ml for _, ml in draws_in), ZERO))  # one text per value (2 or 3 decimals)
    diluent = text(cmd.diluent, field="diluent", max_len=100)
    diluent_ml = parse_volume(cmd.diluent_ml, field="diluent_ml", allow_zero=True)  # mL parse site
    if cmd.container not in rules.CONTAINERS:
        raise InvalidInput("must be 'bag' or 'syringe'", field="container")
    final_ml = parse_volume(cmd.final_ml, field="final_ml")  # mL parse site
    limit = rules.MAX_SYRINGE_ML if cmd.container == "syringe" else rules.MAX_BAG_ML
    if final_ml > limit:
        raise InvalidInput(f"a {cmd.container} holds at most {limit} mL", field="final_ml")
    if diluent_ml > final_ml:
        raise InvalidInput(f"{diluent_ml} mL of diluent is more than the final volume {final_ml} mL", field="diluent_ml")
    if drawn + diluent_ml > final_ml:
        # The container holds at least the drug and the diluent put into it (a bag's overfill only
        # adds). A final volume recorded smaller would make a partial infusion look whole: the
        # drug left in the container would leave with no waste and no witness (review finding F3).
        raise InvalidInput(f"{drawn} mL drawn and {diluent_ml} mL of diluent make at least "
                           f"{drawn + diluent_ml} mL, more than the final volume {final_ml} mL", field="final_ml")
    started = aware(cmd.started_at, field="started_at")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=PREPARERS)
        occurred, late = event_time(ctx, started, cmd.late_reason, field="started_at")
        patient = ctx.view.get("patients", (ctx.registrant, cmd.patient_id))
        if patient is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}; register the patient first",
                           field="patient_id")
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        draws, _product, registered = draw_for_order(ctx, draws_in, prescriber, local_day,
                                                     one_product="one preparation is drawn from one product")
        mg = rules.mg_of_draws((d.ml, d.product.strength_mg_per_ml) for d in draws)
        prep_id = f"P{ctx.next_seq}"
        bud_at = rules.beyond_use_at(occurred)
        ctx.append(ev.PreparationMade(
            preparation_id=prep_id, patient_id=cmd.patient_id, patient_commitment=patient["commitment"],
            prescriber_dea_number=prescriber, prescriber_name=registered["name"], weight_kg=weight,
            ordered_mg_per_kg=per_kg, ordered_mg=ordered_mg(weight, per_kg),
            draws=tuple(draws), ml_drawn=drawn, mg=mg, diluent=diluent, diluent_ml=diluent_ml,
            container=cmd.container, final_ml=final_ml, started_at=format_time(occurred),
            beyond_use_at=format_time(bud_at), late_reason=late,
        ), signatures=[sig], occurred_at=occurred)
        return {"preparation_id": prep_id, "ml_drawn": str(drawn), "mg": str(mg), "final_ml": str(final_ml),
                "concentration_mg_per_ml": str(rules.concentration(mg, final_ml)),
                "beyond_use_at": format_time(bud_at),
                "opened_vials": [d.vial_id for d in draws if d.opened_vial],
                "beyond_use_dates": {d.vial_id: d.beyond_use_date.isoformat() for d in draws}}

    return run(ledger, principal, "make_preparation", cmd, build, idempotency_key)


def infuse_preparation(ledger: Ledger, principal: Principal, cmd: InfusePreparation,
                       idempotency_key: str | None = None) -> dict:
    """Record the infusion from a preparation: mL infused as the pump reports it; mg given is the
    preparation's mg x mL infused / final mL. Stopping before the final volume is normal (the
    remainder is wasted with ``waste_preparation``)."""
    ml_infused = parse_volume(cmd.ml_infused, field="ml_infused")  # mL parse site
    started = aware(cmd.started_at, field="started_at")
    ended = aware(cmd.ended_at, field="ended_at")
    if ended - started > timedelta(hours=12):
        raise InvalidInput("an infusion longer than 12 hours is not plausible", field="ended_at")
    stop_reason = text(cmd.stop_reason, field="stop_reason", max_len=500) if cmd.stop_reason is not None else None

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=INFUSERS)
        occurred, late = event_time(ctx, started, cmd.late_reason, field="started_at")
        if ended < started:
            raise InvalidInput("must not be before started_at", field="ended_at")
        if ended > ctx.now + FUTURE_TOLERANCE:
            raise InvalidInput("is in the future; record the infusion when it has ended", field="ended_at")
        prep = _preparation(ctx, cmd.preparation_id)
        if prep["status"] != "prepared":
            raise Conflict(f"preparation {prep['preparation_id']} was already {prep['status']}", field="preparation_id")
        refusal = rules.infusion_start_refusal(occurred, parse_time(prep["started_at"]),
                                               parse_time(prep["beyond_use_at"]))
        if refusal is not None:
            raise Conflict(f"preparation {prep['preparation_id']} (started {prep['started_at']}, beyond use "
                           f"{prep['beyond_use_at']}): {refusal}", field="started_at")
        mg, final_ml, ml_drawn = Decimal(prep["mg"]), Decimal(prep["final_ml"]), Decimal(prep["ml_drawn"])
        if ml_infused > final_ml:
            raise Conflict(f"{ml_infused} mL infused is more than the preparation's final volume {final_ml} mL "
                           "(record the volume the pump reports)", field="ml_infused")
        stopped_early = ml_infused < final_ml
        if stop_reason is not None and not stopped_early:
            raise InvalidInput("the whole final volume was infused; there is no early stop to explain", field="stop_reason")
        given = rules.mg_given(mg, ml_infused, final_ml)
        made_entry = entry_at(ctx, prep["seq"], field="preparation_id")  # its order, as the entry holds it
        product = _product_of(ctx, prep["ndc_key"])
        ctx.append(ev.PreparationInfused(
            preparation_id=prep["preparation_id"], preparation_seq=prep["seq"], patient_id=prep["patient_id"],
            product=product, ordered_mg=Decimal(made_entry["ordered_mg"]), vials_drawn=len(made_entry["draws"]),
            mg=mg, ml_drawn=ml_drawn, final_ml=final_ml, ml_infused=ml_infused, mg_given=given,
            product_ml_given=rules.product_ml_given(ml_drawn, given, mg), started_at=format_time(occurred),
            ended_at=format_time(ended), stopped_early=stopped_early, stop_reason=stop_reason, late_reason=late,
        ), signatures=[sig], occurred_at=occurred)
        return {"preparation_id": prep["preparation_id"], "ml_infused": str(ml_infused), "mg_given": str(given),
                "mg_remaining": str(rules.exact(mg - given)), "stopped_early": stopped_early}

    return run(ledger, principal, "infuse_preparation", cmd, build, idempotency_key)


def waste_preparation(ledger: Ledger, principal: Principal, cmd: WastePreparation, *,
                      witness: Principal | None = None, idempotency_key: str | None = None) -> dict:
    """Waste what is left of a preparation before ``witness`` (a different, authenticated person):
    mg - mg given exactly, or the whole preparation when it was never infused (then ``reason``
    says why: past its beyond-use time, cancelled ...)."""
    method = text(cmd.method, field="method", max_len=200)
    remaining = (parse_volume(cmd.ml_remaining, field="ml_remaining", allow_zero=True)  # mL parse site
                 if cmd.ml_remaining is not None else None)
    reason = text(cmd.reason, field="reason", max_len=500) if cmd.reason is not None else None
    if witness is not None and not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=WASTERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        prep = _preparation(ctx, cmd.preparation_id)
        if prep["status"] == "wasted":
            raise Conflict(f"preparation {prep['preparation_id']} was already wasted (entry {prep['wasted_seq']})",
                           field="preparation_id")
        infused = prep["status"] == "infused"
        after = prep["infusion_ended_at"] if infused else prep["started_at"]
        if format_time(occurred) < after:
            raise InvalidInput(f"must not be before {'the infusion ended' if infused else 'the preparation'} "
                               f"({after})", field="occurred_at")
        mg, ml_drawn = Decimal(prep["mg"]), Decimal(prep["ml_drawn"])
        given = Decimal(prep["mg_given"]) if infused else ZERO
        wasted = rules.exact(mg - given)
        if wasted == 0:
            raise Conflict(f"preparation {prep['preparation_id']} was infused whole; nothing is left to waste",
                           field="preparation_id")
        if not infused and reason is None:
            raise InvalidInput("say why a preparation that was never infused is wasted (past its beyond-use time, "
                               "infusion cancelled ...)", field="reason")
        wsig = sign_witness(ctx, principal, witness)
        product_given = Decimal(prep["product_ml_given"]) if infused else ZERO
        product_wasted = rules.exact(ml_drawn - product_given)
        e = ctx.append(ev.PreparationWasted(
            preparation_id=prep["preparation_id"], preparation_seq=prep["seq"],
            product=_product_of(ctx, prep["ndc_key"]), mg=wasted, product_ml=product_wasted,
            infused=infused, method=method, ml_remaining=remaining, reason=reason, late_reason=late,
        ), signatures=[sig, wsig], occurred_at=occurred)
        return {"preparation_id": prep["preparation_id"], "waste_seq": e.seq, "mg_wasted": str(wasted),
                "product_ml_wasted": str(product_wasted), "reconciled": True}

    return run(ledger, principal, "waste_preparation", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})
