"""At the infusion chair: a dose drawn from vials, given, and what was left wasted in front of a
witness (21 CFR 1304.22(c)); waste recorded later with its own witness.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from ledger.domain import entries as ev
from ledger.domain import prescribers as prescriber_rules
from ledger.domain.commands import (
    AdministerDose,
    RecordWaste,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.esketamine import is_device
from ledger.domain.identifiers import parse_dea_number
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import norm, parse_amount, parse_volume, q2
from ledger.integrity.canonical import format_time
from ledger.services.common import (
    FUTURE_TOLERANCE,
    ZERO,
    aware,
    current_policy,
    event_time,
    product_from_row,
    product_of_vial,
    registrant_tz,
    request_fields,
    run,
    sign_witness,
    text,
    vial_for_use,
)
from ledger.services.documents import stored_documents
from ledger.storage.store import CommandContext, Ledger

CLINICIANS = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.MANAGER})


ADMINISTERERS = frozenset({Role.NURSE, Role.PRESCRIBER})




def _usable(ctx: CommandContext, v: dict, on: date, *, field: str) -> None:
    """Refuse stock that may not be drawn from: quarantined, expired lot, past beyond-use date."""
    if v["state"] == "quarantined":
        raise Conflict(f"vial {v['vial_id']} is in quarantine; nothing may be drawn from it", field=field)
    product = ctx.view.get("products", (ctx.registrant, v["ndc_key"]))
    if product is not None and is_device(product):  # issue 19: a device is used whole, in a session
        raise InvalidInput(f"{v['vial_id']} is a nasal-spray device of {product['name']}: nothing is drawn from it; "
                           "record an esketamine session (POST .../esketamine-sessions)", field=field)
    if on > date.fromisoformat(v["expiry"]):
        raise Conflict(f"vial {v['vial_id']} is from a lot that expired on {v['expiry']}", field=field)
    if v["beyond_use_date"] is not None and on > date.fromisoformat(v["beyond_use_date"]):
        raise Conflict(f"vial {v['vial_id']} is past its beyond-use date {v['beyond_use_date']}; "
                       "destroy the remainder (Form 41)", field=field)


def parse_patient_and_prescriber(cmd) -> str:
    """A command's patient id (well formed) and its prescriber's DEA number, a practitioner's
    (checked before any read); returns the DEA number."""
    if not isinstance(cmd.patient_id, str) or not cmd.patient_id or len(cmd.patient_id) > 32:
        raise InvalidInput("must be a patient id", field="patient_id")
    prescriber = parse_dea_number(cmd.prescriber_dea_number, field="prescriber_dea_number")
    refusal = prescriber_rules.practitioner_refusal(prescriber)
    if refusal is not None:  # a distributor's or other non-practitioner number orders nothing
        raise InvalidInput(refusal, field="prescriber_dea_number")
    return prescriber


def registered_prescriber(ctx: CommandContext, prescriber: str, local_day: date, schedule: str) -> dict:
    """The prescriber's registration, inside the command: registered here, current on
    ``local_day`` and covering ``schedule`` (21 CFR 1306.03), or refused naming
    ``prescriber_dea_number``."""
    registered = ctx.view.get("prescribers", (ctx.registrant, prescriber))
    if registered is not None:
        registered = {**registered, "schedules": json.loads(registered["schedules"])}
    refusal = prescriber_rules.order_refusal(prescriber, registered, local_day, schedule)
    if refusal is not None:
        raise InvalidInput(refusal, field="prescriber_dea_number")
    return registered


def parse_order(cmd, *, what: str) -> tuple[str, Decimal, Decimal, list[tuple[str, Decimal]]]:
    """The order and vial draws a direct dose or a preparation carries, checked before any read:
    (prescriber DEA number, weight kg, mg/kg, [(vial id, mL)]). ``what`` ("dose",
    "preparation") names the record in the messages."""
    prescriber = parse_patient_and_prescriber(cmd)
    weight = parse_amount(cmd.weight_kg, field="weight_kg")
    if weight > 500:
        raise InvalidInput("must be at most 500 kg", field="weight_kg")
    per_kg = parse_amount(cmd.ordered_mg_per_kg, field="ordered_mg_per_kg")
    if per_kg > 10:
        raise InvalidInput("must be at most 10 mg/kg", field="ordered_mg_per_kg")
    if not isinstance(cmd.draws, list | tuple) or not cmd.draws:
        raise InvalidInput("name the vial(s) drawn from", field="draws")
    if len(cmd.draws) > 20:
        raise InvalidInput(f"at most 20 vials per {what}", field="draws")
    draws_in: list[tuple[str, Decimal]] = []
    for i, d in enumerate(cmd.draws):
        vial_id = getattr(d, "vial_id", None)
        if not isinstance(vial_id, str) or not vial_id or len(vial_id) > 128:
            raise InvalidInput("must be a vial id", field=f"draws[{i}].vial_id")
        if any(vial_id == x for x, _ in draws_in):
            raise InvalidInput(f"vial {vial_id} is drawn from twice; give one line per vial", field=f"draws[{i}].vial_id")
        draws_in.append((vial_id, parse_volume(getattr(d, "ml", None), field=f"draws[{i}].ml")))
    return prescriber, weight, per_kg, draws_in


def ordered_mg(weight: Decimal, per_kg: Decimal) -> Decimal:
    """The dose ordered: kg x mg/kg, half-up to 0.01 mg (as since issue 3: existing entries were
    computed so; mg from mL is half-even, ``quantities.q2``)."""
    return (weight * per_kg).quantize(Decimal("0.01"), ROUND_HALF_UP)


def draw_for_order(ctx: CommandContext, draws_in: list[tuple[str, Decimal]], prescriber: str, local_day: date, *,
                   one_product: str) -> tuple[list[ev.Draw], ev.ProductDescription, dict]:
    """Inside the command: each draw from a usable vial that holds it (a sealed vial is opened by
    its first draw, its beyond-use date from the policy), all of one product (``one_product``
    says so when not), for an order of a prescriber registered, current on ``local_day`` and
    covering the product's schedule (21 CFR 1306.03). Returns (draws, product, prescriber row)."""
    policy = current_policy(ctx)
    draws: list[ev.Draw] = []
    product = None
    for i, (vial_id, ml) in enumerate(draws_in):
        f = f"draws[{i}]"
        v = vial_for_use(ctx, vial_id, field=f"{f}.vial_id")
        _usable(ctx, v, local_day, field=f"{f}.vial_id")
        p = product_of_vial(ctx, v)
        if product is None:
            product = p
        elif p.ndc_key != product.ndc_key:
            raise InvalidInput(one_product, field=f"{f}.vial_id")
        if ml > v["ml_left"]:
            raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; drawing {ml} mL would take stock below zero",
                           field=f"{f}.ml")
        opening = v["opened_at"] is None
        bud = local_day + timedelta(days=policy.beyond_use_days) if opening else date.fromisoformat(v["beyond_use_date"])
        draws.append(ev.Draw(vial_id=vial_id, product=p, lot=v["lot"], expiry=date.fromisoformat(v["expiry"]),
                             ml=ml, opened_vial=opening, beyond_use_date=bud))
    return draws, product, registered_prescriber(ctx, prescriber, local_day, product.schedule)


def administer_dose(ledger: Ledger, principal: Principal, cmd: AdministerDose, *, witness: Principal | None = None,
                    idempotency_key: str | None = None) -> dict:
    """Record one infusion; a sealed vial is opened by its first draw (beyond-use date from the
    policy). With ``cmd.waste`` the remainder is wasted in the same transaction, signed by
    ``witness`` (a different authenticated person)."""
    prescriber, weight, per_kg, draws_in = parse_order(cmd, what="dose")
    drawn = norm(sum((ml for _, ml in draws_in), ZERO))  # 0.135 + 0.365 is "0.50", never "0.500"
    given = parse_volume(cmd.ml_given, field="ml_given", allow_zero=True)
    if given > drawn:
        raise InvalidInput(f"{given} mL given is more than the {drawn} mL drawn", field="ml_given")
    started = aware(cmd.started_at, field="started_at")
    ended = aware(cmd.ended_at, field="ended_at")
    if ended - started > timedelta(hours=12):
        raise InvalidInput("an infusion longer than 12 hours is not plausible", field="ended_at")
    waste_ml = waste_method = None
    if cmd.waste is not None:
        waste_ml = parse_volume(cmd.waste.ml, field="waste.ml")
        waste_method = text(cmd.waste.method, field="waste.method", max_len=200)
        # Waste recorded with the dose closes the dose: every mL drawn is either given or wasted
        # before the witness, or the difference would leave the record unexplained (a
        # half-reconciled dose is how drawn-but-unwasted drug goes missing).
        if given + waste_ml != drawn:
            gap = drawn - given - waste_ml
            raise InvalidInput(
                f"drawn {drawn} mL must equal given {given} mL + wasted {waste_ml} mL; "
                + (f"{gap} mL is unaccounted for" if gap > 0 else f"that is {-gap} mL more than was drawn")
                + " (check ml_given, waste.ml and draws[].ml; to waste later, leave waste out)",
                field="waste.ml")
        if witness is None:
            raise InvalidInput("waste needs a second, authenticated person as witness", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=ADMINISTERERS)
        occurred, late = event_time(ctx, started, cmd.late_reason, field="started_at")
        # After the start's own checks, so a start in the future is named as such, not as an end
        # before it.
        if ended < started:
            raise InvalidInput("must not be before started_at", field="ended_at")
        if ended > ctx.now + FUTURE_TOLERANCE:
            raise InvalidInput("is in the future; record the infusion when it has ended", field="ended_at")
        patient = ctx.view.get("patients", (ctx.registrant, cmd.patient_id))
        if patient is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}; register the patient first",
                           field="patient_id")
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        draws, product, registered = draw_for_order(
            ctx, draws_in, prescriber, local_day,
            one_product="one dose is drawn from one product; record a second dose for another")
        # The sheet it is recorded from (a backfill), checked stored here as receipts check theirs.
        docs = stored_documents(ctx, cmd.documents)
        waste_sig = sign_witness(ctx, principal, witness) if waste_ml is not None else None
        admin_id = f"A{ctx.next_seq}"
        ordered = ordered_mg(weight, per_kg)
        a = ctx.append(ev.DoseAdministered(
            administration_id=admin_id, patient_id=cmd.patient_id, patient_commitment=patient["commitment"],
            prescriber_dea_number=prescriber, weight_kg=weight, ordered_mg_per_kg=per_kg, ordered_mg=ordered,
            draws=tuple(draws), ml_drawn=drawn, ml_given=given, mg_given=q2(given * product.strength_mg_per_ml),
            started_at=format_time(started), ended_at=format_time(ended), late_reason=late,
            prescriber_name=registered["name"], documents=docs,
        ), signatures=[sig], occurred_at=occurred)
        out = {"administration_id": admin_id, "ml_drawn": str(drawn), "ml_given": str(given),
               "opened_vials": [d.vial_id for d in draws if d.opened_vial],
               "beyond_use_dates": {d.vial_id: d.beyond_use_date.isoformat() for d in draws}}
        if waste_ml is not None:
            ctx.append(ev.DoseWasted(administration_id=admin_id, administration_seq=a.seq, product=product, ml=waste_ml,
                                     mg=q2(waste_ml * product.strength_mg_per_ml), method=waste_method,
                                     late_reason=late, documents=docs),
                       signatures=[sig, waste_sig], occurred_at=ended)
        out["reconciled"] = drawn == given + (waste_ml or ZERO)
        return out

    return run(ledger, principal, "administer_dose", cmd, build, idempotency_key,
                {**_request(cmd), "witness": witness.staff_id if witness else None})


def record_waste(ledger: Ledger, principal: Principal, cmd: RecordWaste, *, witness: Principal,
                 idempotency_key: str | None = None) -> dict:
    """Waste the remainder of an earlier administration, witnessed by a different person."""
    if not isinstance(cmd.administration_id, str) or not cmd.administration_id:
        raise InvalidInput("must be an administration id", field="administration_id")
    ml = parse_volume(cmd.ml, field="ml")
    method = text(cmd.method, field="method", max_len=200)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        a = ctx.view.get("administrations", (ctx.registrant, cmd.administration_id))
        if a is None:
            raise NotFound(f"no administration {cmd.administration_id!r} at {ctx.registrant}", field="administration_id")
        remainder = a["ml_drawn"] - a["ml_given"] - a["ml_wasted"]
        if ml > remainder:
            raise Conflict(f"only {remainder} mL of this dose is unaccounted for; {ml} mL cannot be wasted", field="ml")
        docs = stored_documents(ctx, cmd.documents)
        wsig = sign_witness(ctx, principal, witness)
        p = ctx.view.get("products", (ctx.registrant, a["ndc_key"]))
        product = product_from_row(p)
        ctx.append(ev.DoseWasted(administration_id=a["administration_id"], administration_seq=a["seq"],
                                 product=product, ml=ml, mg=q2(ml * a["strength_mg_per_ml"]), method=method,
                                 late_reason=late, documents=docs), signatures=[sig, wsig], occurred_at=occurred)
        return {"administration_id": a["administration_id"], "reconciled": ml == remainder}

    return run(ledger, principal, "record_waste", cmd, build, idempotency_key,
                {**_request(cmd), "witness": witness.staff_id if witness else None})


def _request(cmd: AdministerDose | RecordWaste) -> dict:
    """The command for the idempotency hash; without documents when it cites none, so a request
    stored before the field existed (issue 21) still matches its retry."""
    fields = request_fields(cmd)
    if not fields.get("documents"):
        fields.pop("documents", None)
    return fields
