"""Esketamine (Spravato) treatment sessions (issue 19): devices used whole, a flat dose, the
patient's self-administration under direct observation and the REMS monitoring after it.

One command, ``record_esketamine_session``, appends one ``esketamine_session_recorded`` entry
signed by the healthcare provider who directly observed the self-administration (a nurse,
prescriber or pharmacist). The rules (dose, observation) are ``ledger.domain.esketamine``'s,
which ``verify --deep`` replays; this service adds what needs the book: the devices are on hand,
sealed, whole, of one nasal-spray product, the patient is registered and the prescriber is a
registered one whose registration covers the day and the schedule.
"""

from __future__ import annotations

from datetime import date

from ledger.domain import entries as ev
from ledger.domain import esketamine as rules
from ledger.domain.commands import RecordEsketamineSession
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_amount, q2
from ledger.integrity.canonical import format_time
from ledger.services.administration import parse_patient_and_prescriber, registered_prescriber
from ledger.services.common import (
    FUTURE_TOLERANCE,
    ZERO,
    aware,
    event_time,
    product_of_vial,
    registrant_tz,
    run,
    vial_ids,
)
from ledger.storage.store import CommandContext, Ledger

#: Who records a session: the healthcare provider who directly observed it.
SESSION_RECORDERS = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST})

#: No session uses more devices than this (84 mg is 3); more is refused before the book is read.
MAX_DEVICES = 6


def _device(ctx: CommandContext, device_id: str, on: date, *, field: str) -> dict:
    """The device's ``vials`` row, refused unless it can be used now: on hand, sealed, whole,
    released (not quarantined), its lot not expired."""
    v = ctx.view.get("vials", (ctx.registrant, device_id))
    if v is None:
        raise NotFound(f"no device {device_id!r} at {ctx.registrant}", field=field)
    if v["state"] == "empty":
        raise Conflict(f"device {device_id} was already used (entry {v['last_seq']}); a nasal-spray device is "
                       "single use", field=field)
    if v["state"] == "quarantined":
        raise Conflict(f"device {device_id} is in quarantine; it may not be used", field=field)
    if v["state"] != "sealed":
        raise Conflict(f"device {device_id} is {v['state']}; it is not on hand", field=field)
    if v.get("packaged"):
        # Review 19: a device still sealed in its kit is used only after the kit's witnessed
        # opening (``package_opened``), as every other unit (``common.vial_for_use``); the rules
        # replay refuses it (``package-sealed``), so accepting it here broke ``verify --deep``.
        raise Conflict(f"device {device_id} is still in kit {v['package_id']}: open the kit before a witness "
                       "(recording the devices found) before using its devices", field=field)
    if v["opened_at"] is not None or v["ml_left"] != v["container_ml"]:
        raise Conflict(f"device {device_id} is not whole on the book ({v['ml_left']} of {v['container_ml']} mL); "
                       "a device is used whole", field=field)
    if on > date.fromisoformat(v["expiry"]):
        raise Conflict(f"device {device_id} is from a lot that expired on {v['expiry']}", field=field)
    return v


def record_esketamine_session(ledger: Ledger, principal: Principal, cmd: RecordEsketamineSession, *,
                              idempotency_key: str | None = None) -> dict:
    """Record an esketamine nasal-spray session, signed by ``principal``, who directly observed
    the patient's self-administration and records the REMS observation. The devices leave the
    book whole; refused: a dose other than 56 or 84 mg or other than the devices used, devices
    of a non-device product or of two products, a device used, quarantined or not on hand, an
    observation under 2 hours or ending before it starts, an unregistered prescriber."""
    prescriber = parse_patient_and_prescriber(cmd)
    ids = vial_ids(cmd.device_ids, field="device_ids")
    if len(ids) > MAX_DEVICES:
        raise InvalidInput(f"at most {MAX_DEVICES} devices per session (84 mg is 3)", field="device_ids")
    dose = parse_amount(cmd.dose_mg, field="dose_mg")
    administered = aware(cmd.administered_at, field="administered_at")
    started = aware(cmd.observation_started_at, field="observation_started_at")
    ended = aware(cmd.observation_ended_at, field="observation_ended_at")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=SESSION_RECORDERS)
        occurred, late = event_time(ctx, administered, cmd.late_reason, field="administered_at")
        for when, f in ((started, "observation_started_at"), (ended, "observation_ended_at")):
            if when > ctx.now + FUTURE_TOLERANCE:
                raise InvalidInput("is in the future; record the session when the observation has ended", field=f)
        wrong = rules.observation_refusal(administered, started, ended)
        if wrong is not None:
            raise InvalidInput(wrong[1], field=wrong[0])
        patient = ctx.view.get("patients", (ctx.registrant, cmd.patient_id))
        if patient is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}; register the patient first",
                           field="patient_id")
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        product = None
        devices: list[ev.DeviceUsed] = []
        for i, device_id in enumerate(ids):
            f = f"device_ids[{i}]"
            v = ctx.view.get("vials", (ctx.registrant, device_id))
            p = product_of_vial(ctx, v) if v is not None else None
            if p is not None and not rules.is_device(p):
                raise InvalidInput(f"{device_id} is a {p.unit_kind} of {p.name} (NDC {p.ndc}), not a nasal-spray "
                                   "device; record an infusion as an administration", field=f)
            if p is not None and product is not None and p.ndc_key != product.ndc_key:
                raise InvalidInput(f"{device_id} is {p.name} (NDC {p.ndc}); a session uses devices of one product "
                                   f"({product.name}, NDC {product.ndc})", field=f)
            v = _device(ctx, device_id, local_day, field=f)
            product = product or p
            devices.append(ev.DeviceUsed(vial_id=device_id, lot=v["lot"], expiry=date.fromisoformat(v["expiry"]),
                                         ml=v["ml_left"], mg=rules.mg_per_device(p.strength_mg_per_ml, v["ml_left"])))
        per_device = rules.mg_per_device(product.strength_mg_per_ml, product.container_ml)
        wrong = rules.dose_refusal(len(devices), per_device, dose)
        if wrong is not None:
            raise InvalidInput(wrong[1], field=wrong[0])
        # 21 CFR 1306.03: the administration's own rule for the prescriber
        registered = registered_prescriber(ctx, prescriber, local_day, product.schedule)
        session_id = f"E{ctx.next_seq}"
        ml_used = sum((d.ml for d in devices), ZERO)
        ctx.append(ev.EsketamineSessionRecorded(
            session_id=session_id, patient_id=cmd.patient_id, patient_commitment=patient["commitment"],
            prescriber_dea_number=prescriber, prescriber_name=registered["name"], product=product,
            devices=tuple(devices), mg_per_device=per_device, dose_mg=dose, ml_used=q2(ml_used),
            administered_at=format_time(administered), observation_started_at=format_time(started),
            observation_ended_at=format_time(ended), directly_observed_by=principal.staff_id,
            directly_observed_by_name=sig["printed_name"], late_reason=late,
        ), signatures=[sig], occurred_at=occurred)
        return {"session_id": session_id, "dose_mg": str(dose), "devices": [d.vial_id for d in devices],
                "mg_per_device": str(per_device),
                "observed_minutes": int((ended - max(started, administered)).total_seconds() // 60)}

    return run(ledger, principal, "record_esketamine_session", cmd, build, idempotency_key)
