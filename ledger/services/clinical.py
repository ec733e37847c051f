"""Clinic operations: one service function per command (issue 3).

Each service validates every field up front (errors name the field, e.g. ``draws[0].ml``), then
inside ``build`` checks the command against the projections and appends its entries through
``Ledger.execute``: one transaction per command, nothing written when anything is refused.
Who acts, witnesses, counts or approves is always an authenticated ``Principal``; a witness is a
separate principal passed by the caller (the HTTP layer authenticates both), never a typed name.

Patient names and addresses never reach an entry, a log line or an error message: entries carry
the patient id and the commitment from the encrypted registry (``patients``).
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import holidays

from ledger.domain import entries as ev
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    ChangePatientDetails,
    CorrectEntry,
    DestroyStock,
    QuarantineStock,
    RecordWaste,
    RegisterPatient,
    ReleaseQuarantine,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    ReturnStock,
    SetPolicy,
    StartCount,
    StoreDocument,
    SubmitCount,
    TransferStock,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.identifiers import parse_dea_number
from ledger.domain.policy import COUNT_SCHEDULES, DOSAGE_UNITS, WEEKDAYS, Policy, from_row
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.projections import ON_HAND
from ledger.domain.quantities import parse_amount, parse_count, q2
from ledger.integrity.canonical import decode, format_time
from ledger.services.reference import (
    FUTURE_TOLERANCE,
    US_STATES,
    _request,
    address,
    product_copy,
    registrant_tz,
    text,
)
from ledger.storage.patient_keys import KEY_CHECK_NAME, PatientDetails, PatientKeyError, PatientKeys
from ledger.storage.store import CommandContext, Ledger, raw

ZERO = Decimal("0.00")
CLINICIANS = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.MANAGER})
ADMINISTERERS = frozenset({Role.NURSE, Role.PRESCRIBER})
WITNESSES = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.MANAGER, Role.COMPLIANCE_OFFICER})
COUNTERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER})
STOCK_HANDLERS = frozenset({Role.PHARMACIST, Role.MANAGER})
POLICY_SETTERS = frozenset({Role.MANAGER, Role.ADMINISTRATOR})
RESOLVERS = frozenset({Role.MANAGER})
LOSS_REPORTERS = frozenset({Role.MANAGER, Role.COMPLIANCE_OFFICER})
DOCUMENT_KEEPERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER, Role.COMPLIANCE_OFFICER, Role.ADMINISTRATOR})

DISCREPANCY_CATEGORIES = ("documentation_error", "breakage", "spill", "theft_or_loss", "other")
#: Categories whose acceptance writes a loss adjustment (the stock is gone).
LOSS_CATEGORIES = frozenset({"breakage", "spill", "theft_or_loss"})
LOSS_TYPES = ("night_break_in", "armed_robbery", "employee_pilferage", "customer_theft", "lost_in_transit", "other")
DOCUMENT_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/tiff", "text/plain"})
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
#: 21 CFR 1307.11(a)(1)(iv): practitioner transfers stay at or below 5% of units distributed and dispensed.
TRANSFER_LIMIT_PERCENT = Decimal("5")
FORM_106_DAYS = 45


# --- shared checks ---------------------------------------------------------------------------------


def current_policy(ctx: CommandContext) -> Policy:
    """The policy in force for this registrant (defaults when none was set)."""
    return from_row(ctx.view.get("policies", (ctx.registrant,)))


def _aware(value: Any, *, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput("must be a date and time", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput("must carry a time zone (e.g. 2026-11-25T14:30:00-05:00)", field=field)
    if value.year < 2000:
        raise InvalidInput("is before the year 2000", field=field)
    return value


def event_time(ctx: CommandContext, occurred_at: Any, late_reason: str | None, *,
               field: str = "occurred_at") -> tuple[datetime, str | None]:
    """When the event happened: aware, not in the future, and explained when it is recorded
    later than the policy's late-entry limit (21 CFR 1304.21(a): the date recorded is the date of
    the event; downtime on paper is a reason)."""
    occurred = _aware(occurred_at, field=field)
    if occurred > ctx.now + FUTURE_TOLERANCE:
        raise InvalidInput("is in the future; record events when they have happened", field=field)
    reason = text(late_reason, field="late_reason", max_len=500) if late_reason is not None else None
    limit = timedelta(hours=current_policy(ctx).late_entry_limit_hours)
    if ctx.now - occurred > limit and reason is None:
        raise InvalidInput(f"this entry is recorded more than {limit.total_seconds() / 3600:.0f} h after the event; "
                           "a late entry must give its reason", field="late_reason")
    return occurred, reason


def _sign_witness(ctx: CommandContext, actor: Principal, witness: Principal | None, *, field: str = "witness",
                  others: Sequence[Principal] = ()) -> dict:
    """The witness's signature: a different, enrolled, authenticated person."""
    if witness is None:
        raise InvalidInput("a second, authenticated person must witness this", field=field)
    if not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field=field)
    if witness.staff_id == actor.staff_id or any(witness.staff_id == o.staff_id for o in others):
        raise Conflict("the witness must be a different person from whoever acts or witnesses", field=field)
    try:
        return ctx.signature(witness, Meaning.WITNESSED, roles=WITNESSES)
    except (NotFound, Forbidden) as exc:
        raise type(exc)(exc.reason, field=field) from None


def _vial_for_use(ctx: CommandContext, vial_id: Any, *, field: str) -> dict:
    if not isinstance(vial_id, str) or not vial_id or len(vial_id) > 128:
        raise InvalidInput("must be a vial id", field=field)
    v = ctx.view.get("vials", (ctx.registrant, vial_id))
    if v is None:
        raise NotFound(f"no vial {vial_id!r} at {ctx.registrant}", field=field)
    if v["state"] not in ON_HAND:
        raise Conflict(f"vial {vial_id} is {v['state']}; it is not on hand", field=field)
    return v


def _product_of_vial(ctx: CommandContext, v: dict) -> ev.ProductDescription:
    row = ctx.view.get("products", (ctx.registrant, v["ndc_key"]))
    return ev.ProductDescription(
        ndc=row["ndc"], ndc_key=row["ndc_key"], name=row["name"], drug_code=row["drug_code"],
        schedule=row["schedule"], form=row["form"], strength_mg_per_ml=row["strength_mg_per_ml"],
        container_ml=row["container_ml"],
    )


def _vial_ids(values: Any, *, field: str = "vial_ids") -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise InvalidInput("name at least one vial", field=field)
    if len(values) > 500:
        raise InvalidInput("at most 500 vials per command", field=field)
    seen = set()
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v or len(v) > 128:
            raise InvalidInput("must be a vial id", field=f"{field}[{i}]")
        if v in seen:
            raise InvalidInput(f"vial {v} is named twice", field=f"{field}[{i}]")
        seen.add(v)
    return tuple(values)


def _documents(ctx: CommandContext, shas: Any, *, field: str = "documents") -> tuple[str, ...]:
    if not isinstance(shas, list | tuple):
        raise InvalidInput("must be a list of SHA-256 hex digests", field=field)
    for i, s in enumerate(shas):
        f = f"{field}[{i}]"
        if not isinstance(s, str) or len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
            raise InvalidInput("must be a SHA-256 hex digest (64 lowercase hex digits)", field=f)
        if ctx.view.get("documents", (ctx.registrant, s)) is None:
            raise NotFound(f"no stored document {s[:12]}...; store it first", field=f)
    return tuple(shas)


def _registrant_copy(ctx: CommandContext) -> ev.RegistrantCopy:
    r = ctx.view.get("registrants", (ctx.registrant,))
    return ev.RegistrantCopy(dea_number=r["dea_number"], name=r["name"],
                             address=ev.Address(r["street"], r["city"], r["state"], r["postal_code"]))


def _entry(ctx: CommandContext, seq: Any, *, field: str) -> dict:
    """A recorded entry of this registrant, decoded from its canonical bytes."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidInput("must be an entry's sequence number", field=field)
    row = ctx.view.raw.one(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                           {"r": ctx.registrant, "s": seq})
    if row is None:
        raise NotFound(f"no entry {seq} at {ctx.registrant}", field=field)
    return decode(bytes(row["canonical"]))


def _run(ledger: Ledger, principal: Principal, name: str, cmd: Any, build, idempotency_key: str | None,
         request: dict | None = None) -> dict:
    return ledger.execute(principal.registrant, name, request if request is not None else _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


# --- policy ----------------------------------------------------------------------------------------


def set_policy(ledger: Ledger, principal: Principal, cmd: SetPolicy, *, idempotency_key: str | None = None) -> dict:
    """Record the whole policy (beyond-use days, late-entry limit, variance threshold, count
    schedule, clinic hours, dosage unit); the latest one is in force."""
    bud = parse_count(cmd.beyond_use_days, field="beyond_use_days", allow_zero=False)
    if bud > 28:
        # USP <797>: 28 days after first puncture unless the manufacturer says otherwise; a
        # policy may be stricter, never longer.
        raise InvalidInput("must be at most 28 days (USP <797>)", field="beyond_use_days")
    late = parse_count(cmd.late_entry_limit_hours, field="late_entry_limit_hours", allow_zero=False)
    if late > 24:
        raise InvalidInput("must be at most 24 hours (21 CFR 1304.21: records are current)", field="late_entry_limit_hours")
    variance = parse_amount(cmd.variance_threshold_percent, field="variance_threshold_percent", allow_zero=True)
    if variance > 100:
        raise InvalidInput("must be a percentage at most 100", field="variance_threshold_percent")
    if cmd.count_schedule not in COUNT_SCHEDULES:
        raise InvalidInput(f"must be one of {', '.join(COUNT_SCHEDULES)}", field="count_schedule")
    if cmd.dosage_unit not in DOSAGE_UNITS:
        raise InvalidInput(f"must be one of {', '.join(DOSAGE_UNITS)}", field="dosage_unit")
    if not isinstance(cmd.clinic_hours, dict):
        raise InvalidInput("must map weekdays (mon..sun) to [open, close]", field="clinic_hours")
    hours: dict[str, tuple[str, str]] = {}
    for day, span in cmd.clinic_hours.items():
        f = f"clinic_hours.{day}"
        if day not in WEEKDAYS:
            raise InvalidInput(f"weekdays are {', '.join(WEEKDAYS)}", field="clinic_hours")
        try:
            opens, closes = (time.fromisoformat(span[0]), time.fromisoformat(span[1]))
            if len(span) != 2 or len(span[0]) != 5 or len(span[1]) != 5:
                raise ValueError
        except (ValueError, TypeError, IndexError):
            raise InvalidInput("must be [\"HH:MM\", \"HH:MM\"]", field=f) from None
        if closes <= opens:
            raise InvalidInput("closing time must be after opening time", field=f)
        hours[day] = (span[0], span[1])
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=POLICY_SETTERS)
        ctx.append(ev.PolicySet(beyond_use_days=bud, late_entry_limit_hours=late, variance_threshold_percent=variance,
                                count_schedule=cmd.count_schedule, clinic_hours=hours, dosage_unit=cmd.dosage_unit,
                                reason=reason), signatures=[sig], occurred_at=ctx.now)
        return {}

    return _run(ledger, principal, "set_policy", cmd, build, idempotency_key)


# --- patients --------------------------------------------------------------------------------------


def _patient_details(name: Any, addr: AddressInput, *, field: str = "") -> PatientDetails:
    """Validate without ever echoing the value (health data)."""
    p = f"{field}." if field else ""
    n = text(name, field=f"{p}name", max_len=200)
    a = addr if isinstance(addr, AddressInput) else None
    if a is None:
        raise InvalidInput("must be a street address", field=f"{p}address")
    state = text(a.state, field=f"{p}address.state", max_len=2).upper()
    if state not in US_STATES:
        raise InvalidInput("is not a US state or territory code", field=f"{p}address.state")
    checked = address(AddressInput(a.street, a.city, state, a.postal_code), field=f"{p}address")
    return PatientDetails(name=n, street=checked.street, city=checked.city, state=checked.state,
                          postal_code=checked.postal_code)


def check_patient_key(conn, keys: PatientKeys, now: datetime) -> None:
    """Store the key-check value at first use; refuse a key that is not the registry's."""
    r = raw(conn)
    row = r.one(conn, "SELECT check_value FROM patient_key_check WHERE name = :n", {"n": KEY_CHECK_NAME})
    if row is None:
        r.run(conn, "INSERT INTO patient_key_check (name, check_value, created_at) VALUES (:n, :v, :t)",
              {"n": KEY_CHECK_NAME, "v": keys.check_value(), "t": format_time(now)})
    elif row["check_value"] != keys.check_value():
        raise PatientKeyError("the patient key is not the key this registry was written with; "
                              "restore the backed-up key (nothing was written)", field="patient_key")


def verify_patient_key(ledger: Ledger, keys: PatientKeys) -> None:
    """At start: fail fast when the configured key is not the registry's key."""
    with ledger.engine.begin() as conn:
        check_patient_key(conn, keys, ledger.clock())


def register_patient(ledger: Ledger, principal: Principal, cmd: RegisterPatient, *, keys: PatientKeys,
                     idempotency_key: str | None = None) -> dict:
    """Add a patient: the encrypted registry row and a ``patient_registered`` entry holding the
    id and the commitment, in one transaction."""
    details = _patient_details(cmd.name, cmd.address)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        check_patient_key(ctx.conn, keys, ctx.now)
        patient_id = f"P{ctx.next_seq}"
        commitment = keys.commitment(ctx.registrant, patient_id, details)
        sealed = keys.seal(ctx.registrant, patient_id, details)
        ctx.view.raw.run(ctx.conn, "INSERT INTO patient_registry (registrant, patient_id, sealed, updated_at) "
                                   "VALUES (:r, :p, :s, :t)",
                         {"r": ctx.registrant, "p": patient_id, "s": sealed, "t": format_time(ctx.now)})
        ctx.append(ev.PatientRegistered(patient_id=patient_id, commitment=commitment,
                                        sealed_sha256=hashlib.sha256(sealed).hexdigest()),
                   signatures=[sig], occurred_at=ctx.now)
        return {"patient_id": patient_id}

    # The idempotency hash must not be a hash of a name: hash a keyed commitment instead.
    request = {"type": "RegisterPatient", "details": keys.commitment(principal.registrant, "request", details)}
    return _run(ledger, principal, "register_patient", cmd, build, idempotency_key, request)


def change_patient_details(ledger: Ledger, principal: Principal, cmd: ChangePatientDetails, *, keys: PatientKeys,
                           idempotency_key: str | None = None) -> dict:
    """A new name or address: the registry row is re-sealed and the new commitment recorded."""
    details = _patient_details(cmd.name, cmd.address)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        check_patient_key(ctx.conn, keys, ctx.now)
        if ctx.view.get("patients", (ctx.registrant, cmd.patient_id)) is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}", field="patient_id")
        sealed = keys.seal(ctx.registrant, cmd.patient_id, details)
        ctx.view.raw.run(ctx.conn, "UPDATE patient_registry SET sealed = :s, updated_at = :t "
                                   "WHERE registrant = :r AND patient_id = :p",
                         {"r": ctx.registrant, "p": cmd.patient_id, "t": format_time(ctx.now), "s": sealed})
        ctx.append(ev.PatientDetailsChanged(patient_id=cmd.patient_id,
                                            commitment=keys.commitment(ctx.registrant, cmd.patient_id, details),
                                            reason=reason, sealed_sha256=hashlib.sha256(sealed).hexdigest()),
                   signatures=[sig], occurred_at=ctx.now)
        return {"patient_id": cmd.patient_id}

    request = {"type": "ChangePatientDetails", "patient_id": cmd.patient_id, "reason": reason,
               "details": keys.commitment(principal.registrant, "request", details)}
    return _run(ledger, principal, "change_patient_details", cmd, build, idempotency_key, request)


def read_patient(ledger: Ledger, principal: Principal, patient_id: str, *, keys: PatientKeys) -> dict:
    """Name and address for the administration record, for an enrolled clinician; every read is
    written to the access log, and a registry row that no longer matches its commitment says so."""
    import sqlalchemy as sa

    with ledger.engine.begin() as conn:
        check_patient_key(conn, keys, ledger.clock())
        r = raw(conn)
        staff_roles = {x["role"] for x in r.rows(conn, "SELECT role FROM staff_roles WHERE registrant = :r AND staff_id = :s",
                                                   {"r": principal.registrant, "s": principal.staff_id})}
        if not staff_roles & (CLINICIANS | {Role.COMPLIANCE_OFFICER, Role.AUDITOR}):
            raise Forbidden("reading a patient's name and address needs a clinical, compliance or auditor role",
                            field="principal")
        row = r.one(conn, "SELECT sealed FROM patient_registry WHERE registrant = :r AND patient_id = :p",
                    {"r": principal.registrant, "p": patient_id})
        committed = r.one(conn, "SELECT commitment FROM patients WHERE registrant = :r AND patient_id = :p",
                          {"r": principal.registrant, "p": patient_id})
        if row is None or committed is None:
            raise NotFound(f"no patient {patient_id!r} at {principal.registrant}", field="patient_id")
        details = keys.open(principal.registrant, patient_id, bytes(row["sealed"]))
        conn.execute(sa.text("INSERT INTO patient_access_log (registrant, staff_id, patient_id, action, accessed_at) "
                             "VALUES (:r, :s, :p, 'read', :t)"),
                     {"r": principal.registrant, "s": principal.staff_id, "p": patient_id,
                      "t": format_time(ledger.clock())})
    matches = keys.commitment(principal.registrant, patient_id, details) == committed["commitment"]
    return {"patient_id": patient_id, "name": details.name,
            "address": {"street": details.street, "city": details.city, "state": details.state,
                        "postal_code": details.postal_code},
            "matches_commitment": matches}


def check_registry(ledger: Ledger, registrant: str, *, keys: PatientKeys) -> list[str]:
    """Patient ids whose registry row was changed without a ``patient_details_changed`` entry
    (or cannot be decrypted): the registry no longer matches the commitment in the ledger."""
    bad = []
    with ledger.reading() as conn:
        r = raw(conn)
        rows = r.rows(conn, "SELECT g.patient_id, g.sealed, p.commitment FROM patient_registry g "
                            "LEFT JOIN patients p ON p.registrant = g.registrant AND p.patient_id = g.patient_id "
                            "WHERE g.registrant = :r ORDER BY g.patient_id", {"r": registrant})
    for row in rows:
        if keys.registry_row_problem(registrant, row["patient_id"], row["sealed"], row["commitment"]) is not None:
            bad.append(row["patient_id"])
    return bad


# --- administration and waste ----------------------------------------------------------------------


def _usable(ctx: CommandContext, v: dict, on: date, *, field: str) -> None:
    """Refuse stock that may not be drawn from: quarantined, expired lot, past beyond-use date."""
    if v["state"] == "quarantined":
        raise Conflict(f"vial {v['vial_id']} is in quarantine; nothing may be drawn from it", field=field)
    if on > date.fromisoformat(v["expiry"]):
        raise Conflict(f"vial {v['vial_id']} is from a lot that expired on {v['expiry']}", field=field)
    if v["beyond_use_date"] is not None and on > date.fromisoformat(v["beyond_use_date"]):
        raise Conflict(f"vial {v['vial_id']} is past its beyond-use date {v['beyond_use_date']}; "
                       "destroy the remainder (Form 41)", field=field)


def administer_dose(ledger: Ledger, principal: Principal, cmd: AdministerDose, *, witness: Principal | None = None,
                    idempotency_key: str | None = None) -> dict:
    """Record one infusion; a sealed vial is opened by its first draw (beyond-use date from the
    policy). With ``cmd.waste`` the remainder is wasted in the same transaction, signed by
    ``witness`` (a different authenticated person)."""
    if not isinstance(cmd.patient_id, str) or not cmd.patient_id or len(cmd.patient_id) > 32:
        raise InvalidInput("must be a patient id", field="patient_id")
    prescriber = parse_dea_number(cmd.prescriber_dea_number, field="prescriber_dea_number")
    weight = parse_amount(cmd.weight_kg, field="weight_kg")
    if weight > 500:
        raise InvalidInput("must be at most 500 kg", field="weight_kg")
    per_kg = parse_amount(cmd.ordered_mg_per_kg, field="ordered_mg_per_kg")
    if per_kg > 10:
        raise InvalidInput("must be at most 10 mg/kg", field="ordered_mg_per_kg")
    if not isinstance(cmd.draws, list | tuple) or not cmd.draws:
        raise InvalidInput("name the vial(s) drawn from", field="draws")
    if len(cmd.draws) > 20:
        raise InvalidInput("at most 20 vials per dose", field="draws")
    draws_in = []
    for i, d in enumerate(cmd.draws):
        if not isinstance(d.vial_id, str) or not d.vial_id or len(d.vial_id) > 128:
            raise InvalidInput("must be a vial id", field=f"draws[{i}].vial_id")
        if any(d.vial_id == x[0] for x in draws_in):
            raise InvalidInput(f"vial {d.vial_id} is drawn from twice; give one line per vial", field=f"draws[{i}].vial_id")
        draws_in.append((d.vial_id, parse_amount(d.ml, field=f"draws[{i}].ml")))
    drawn = sum((ml for _, ml in draws_in), ZERO)
    given = parse_amount(cmd.ml_given, field="ml_given", allow_zero=True)
    if given > drawn:
        raise InvalidInput(f"{given} mL given is more than the {drawn} mL drawn", field="ml_given")
    started = _aware(cmd.started_at, field="started_at")
    ended = _aware(cmd.ended_at, field="ended_at")
    if ended < started:
        raise InvalidInput("must not be before started_at", field="ended_at")
    if ended - started > timedelta(hours=12):
        raise InvalidInput("an infusion longer than 12 hours is not plausible", field="ended_at")
    waste_ml = waste_method = None
    if cmd.waste is not None:
        waste_ml = parse_amount(cmd.waste.ml, field="waste.ml")
        waste_method = text(cmd.waste.method, field="waste.method", max_len=200)
        if given + waste_ml > drawn:
            raise InvalidInput(f"given {given} mL + wasted {waste_ml} mL is more than the {drawn} mL drawn",
                               field="waste.ml")
        if witness is None:
            raise InvalidInput("waste needs a second, authenticated person as witness", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=ADMINISTERERS)
        occurred, late = event_time(ctx, started, cmd.late_reason, field="started_at")
        if ended > ctx.now + FUTURE_TOLERANCE:
            raise InvalidInput("is in the future; record the infusion when it has ended", field="ended_at")
        patient = ctx.view.get("patients", (ctx.registrant, cmd.patient_id))
        if patient is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}; register the patient first",
                           field="patient_id")
        policy = current_policy(ctx)
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        draws: list[ev.Draw] = []
        product = None
        for i, (vial_id, ml) in enumerate(draws_in):
            f = f"draws[{i}]"
            v = _vial_for_use(ctx, vial_id, field=f"{f}.vial_id")
            _usable(ctx, v, local_day, field=f"{f}.vial_id")
            p = _product_of_vial(ctx, v)
            if product is None:
                product = p
            elif p.ndc_key != product.ndc_key:
                raise InvalidInput("one dose is drawn from one product; record a second dose for another",
                                   field=f"{f}.vial_id")
            if ml > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; drawing {ml} mL would take stock below zero",
                               field=f"{f}.ml")
            opening = v["opened_at"] is None
            bud = local_day + timedelta(days=policy.beyond_use_days) if opening else date.fromisoformat(v["beyond_use_date"])
            draws.append(ev.Draw(vial_id=vial_id, product=p, lot=v["lot"], expiry=date.fromisoformat(v["expiry"]),
                                 ml=ml, opened_vial=opening, beyond_use_date=bud))
        waste_sig = _sign_witness(ctx, principal, witness) if waste_ml is not None else None
        admin_id = f"A{ctx.next_seq}"
        ordered = (weight * per_kg).quantize(Decimal("0.01"), ROUND_HALF_UP)
        a = ctx.append(ev.DoseAdministered(
            administration_id=admin_id, patient_id=cmd.patient_id, patient_commitment=patient["commitment"],
            prescriber_dea_number=prescriber, weight_kg=weight, ordered_mg_per_kg=per_kg, ordered_mg=ordered,
            draws=tuple(draws), ml_drawn=drawn, ml_given=given, mg_given=q2(given * product.strength_mg_per_ml),
            started_at=format_time(started), ended_at=format_time(ended), late_reason=late,
        ), signatures=[sig], occurred_at=occurred)
        out = {"administration_id": admin_id, "ml_drawn": str(drawn), "ml_given": str(given),
               "opened_vials": [d.vial_id for d in draws if d.opened_vial],
               "beyond_use_dates": {d.vial_id: d.beyond_use_date.isoformat() for d in draws}}
        if waste_ml is not None:
            ctx.append(ev.DoseWasted(administration_id=admin_id, administration_seq=a.seq, product=product, ml=waste_ml,
                                     mg=q2(waste_ml * product.strength_mg_per_ml), method=waste_method,
                                     late_reason=late),
                       signatures=[sig, waste_sig], occurred_at=ended)
        out["reconciled"] = drawn == given + (waste_ml or ZERO)
        return out

    return _run(ledger, principal, "administer_dose", cmd, build, idempotency_key,
                {**_request(cmd), "witness": witness.staff_id if witness else None})


def record_waste(ledger: Ledger, principal: Principal, cmd: RecordWaste, *, witness: Principal,
                 idempotency_key: str | None = None) -> dict:
    """Waste the remainder of an earlier administration, witnessed by a different person."""
    if not isinstance(cmd.administration_id, str) or not cmd.administration_id:
        raise InvalidInput("must be an administration id", field="administration_id")
    ml = parse_amount(cmd.ml, field="ml")
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
        wsig = _sign_witness(ctx, principal, witness)
        p = ctx.view.get("products", (ctx.registrant, a["ndc_key"]))
        product = ev.ProductDescription(ndc=p["ndc"], ndc_key=p["ndc_key"], name=p["name"], drug_code=p["drug_code"],
                                        schedule=p["schedule"], form=p["form"],
                                        strength_mg_per_ml=p["strength_mg_per_ml"], container_ml=p["container_ml"])
        ctx.append(ev.DoseWasted(administration_id=a["administration_id"], administration_seq=a["seq"],
                                 product=product, ml=ml, mg=q2(ml * a["strength_mg_per_ml"]), method=method,
                                 late_reason=late), signatures=[sig, wsig], occurred_at=occurred)
        return {"administration_id": a["administration_id"], "reconciled": ml == remainder}

    return _run(ledger, principal, "record_waste", cmd, build, idempotency_key,
                {**_request(cmd), "witness": witness.staff_id if witness else None})


# --- counts and discrepancies ----------------------------------------------------------------------


def _book(ctx: CommandContext, ndc_key: str) -> tuple[int, int, Decimal]:
    """(sealed containers, opened containers, mL) on hand for one product, from the vials."""
    sealed = opened = 0
    ml = ZERO
    for v in ctx.view.select("vials", registrant=ctx.registrant, ndc_key=ndc_key):
        if v["state"] not in ON_HAND:
            continue
        if v["opened_at"] is None and v["ml_left"] == v["container_ml"]:
            sealed += 1
        else:
            opened += 1
        ml += v["ml_left"]
    return sealed, opened, ml


def start_count(ledger: Ledger, principal: Principal, cmd: StartCount, *, idempotency_key: str | None = None) -> dict:
    """Open a count session. Blind by default: the answer names what to count, never how much
    the book holds."""
    if not isinstance(cmd.ndcs, list | tuple):
        raise InvalidInput("must be a list of NDCs", field="ndcs")
    if not isinstance(cmd.blind, bool):
        raise InvalidInput("must be true or false", field="blind")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.COUNTED, roles=COUNTERS)
        if cmd.ndcs:
            products = [product_copy(ctx, n, field=f"ndcs[{i}]") for i, n in enumerate(cmd.ndcs)]
        else:
            products = [product_copy(ctx, p["ndc"], field="ndcs")
                        for p in sorted(ctx.view.select("products", registrant=ctx.registrant), key=lambda r: r["ndc_key"])]
        if not products:
            raise Conflict("there is no product to count; add a product first", field="ndcs")
        if len({p.ndc_key for p in products}) != len(products):
            raise InvalidInput("a product is named twice", field="ndcs")
        session_id = f"C{ctx.next_seq}"
        ctx.append(ev.CountStarted(session_id=session_id, blind=cmd.blind, products=tuple(products)),
                   signatures=[sig], occurred_at=ctx.now)
        items = []
        for p in products:
            item = {"ndc": p.ndc, "name": p.name, "form": p.form, "strength_mg_per_ml": str(p.strength_mg_per_ml),
                    "container_ml": str(p.container_ml)}
            if not cmd.blind:
                s, o, ml = _book(ctx, p.ndc_key)
                item.update(expected_sealed_containers=s, expected_open_containers=o, expected_ml=str(ml))
            items.append(item)
        return {"session_id": session_id, "blind": cmd.blind, "products": items}

    return _run(ledger, principal, "start_count", cmd, build, idempotency_key)


def submit_count(ledger: Ledger, principal: Principal, cmd: SubmitCount, *, second_counter: Principal,
                 idempotency_key: str | None = None) -> dict:
    """Two counters submit what they found; the expected quantity is taken now, and every
    difference opens a discrepancy (the book is not changed)."""
    if not isinstance(cmd.session_id, str) or not cmd.session_id:
        raise InvalidInput("must be a count session id", field="session_id")
    if not isinstance(cmd.lines, list | tuple) or not cmd.lines:
        raise InvalidInput("give one line per product counted", field="lines")
    parsed = []
    for i, ln in enumerate(cmd.lines):
        f = f"lines[{i}]"
        sealed = parse_count(ln.sealed_containers, field=f"{f}.sealed_containers")
        opened = parse_count(ln.open_containers, field=f"{f}.open_containers")
        open_ml = parse_amount(ln.open_ml, field=f"{f}.open_ml", allow_zero=True)
        if opened == 0 and open_ml != 0:
            raise InvalidInput("mL in opened vials needs the number of opened vials", field=f"{f}.open_containers")
        parsed.append((ln.ndc, sealed, opened, open_ml))

    def build(ctx: CommandContext) -> dict:
        sig1 = ctx.signature(principal, Meaning.COUNTED, roles=COUNTERS)
        if not isinstance(second_counter, Principal):
            raise InvalidInput("a second, authenticated counter is required", field="second_counter")
        if second_counter.staff_id == principal.staff_id:
            raise Conflict("a count needs two different people", field="second_counter")
        try:
            sig2 = ctx.signature(second_counter, Meaning.COUNTED, roles=COUNTERS)
        except (NotFound, Forbidden) as exc:
            raise type(exc)(exc.reason, field="second_counter") from None
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        s = ctx.view.get("count_sessions", (ctx.registrant, cmd.session_id))
        if s is None:
            raise NotFound(f"no count session {cmd.session_id!r} at {ctx.registrant}", field="session_id")
        if s["status"] != "open":
            raise Conflict(f"count session {cmd.session_id} was already submitted", field="session_id")
        scope = json.loads(s["ndc_keys"])
        lines: list[ev.CountedLine] = []
        seen: set[str] = set()
        for i, (ndc, sealed, opened, open_ml) in enumerate(parsed):
            f = f"lines[{i}]"
            p = product_copy(ctx, ndc, field=f"{f}.ndc")
            if p.ndc_key not in scope:
                raise InvalidInput(f"NDC {p.ndc} is not in this count session", field=f"{f}.ndc")
            if p.ndc_key in seen:
                raise InvalidInput(f"NDC {p.ndc} is counted twice", field=f"{f}.ndc")
            seen.add(p.ndc_key)
            if open_ml > opened * p.container_ml:
                raise InvalidInput(f"{opened} opened vial(s) cannot hold {open_ml} mL", field=f"{f}.open_ml")
            counted = q2(sealed * p.container_ml + open_ml)
            es, eo, eml = _book(ctx, p.ndc_key)
            diff = counted - eml
            disc = f"D{ctx.next_seq}-{i}" if (diff != 0 or sealed != es) else None
            lines.append(ev.CountedLine(product=p, sealed_containers=sealed, open_containers=opened, open_ml=open_ml,
                                        counted_ml=counted, expected_sealed_containers=es, expected_open_containers=eo,
                                        expected_ml=eml, difference_ml=q2(diff), discrepancy_id=disc))
        missing = [k for k in scope if k not in seen]
        if missing:
            raise InvalidInput(f"the session also counts NDC key(s) {', '.join(missing)}; give a line for each",
                               field="lines")
        # bool(): the SQLite driver answers 0/1, and the entry's JSON must say true/false on both
        ctx.append(ev.StockCounted(session_id=cmd.session_id, blind=bool(s["blind"]), lines=tuple(lines),
                                   late_reason=late), signatures=[sig1, sig2], occurred_at=occurred)
        return {"session_id": cmd.session_id, "lines": [
            {"ndc": ln.product.ndc, "counted_ml": str(ln.counted_ml), "expected_ml": str(ln.expected_ml),
             "difference_ml": str(ln.difference_ml), "discrepancy_id": ln.discrepancy_id} for ln in lines],
            "discrepancy_ids": [ln.discrepancy_id for ln in lines if ln.discrepancy_id]}

    return _run(ledger, principal, "submit_count", cmd, build, idempotency_key,
                {**_request(cmd), "second_counter": getattr(second_counter, "staff_id", None)})


def _allocate_loss(ctx: CommandContext, d: dict, loss: Decimal) -> list[ev.VialAdjustment]:
    """Which vials a counted loss came out of: missing sealed vials whole first, then opened
    vials (fullest first), then sealed vials. The book per vial never goes below zero."""
    vials = [v for v in ctx.view.select("vials", registrant=ctx.registrant, ndc_key=d["ndc_key"])
             if v["state"] in ON_HAND and v["ml_left"] > 0]
    sealed = sorted((v for v in vials if v["opened_at"] is None and v["ml_left"] == v["container_ml"]),
                    key=lambda v: (v["expiry"], v["vial_id"]), reverse=True)
    opened = sorted((v for v in vials if v not in sealed), key=lambda v: (-v["ml_left"], v["vial_id"]))
    out: list[ev.VialAdjustment] = []
    left = loss
    missing_sealed = max(0, d["expected_sealed_containers"] - d["counted_sealed_containers"])
    for v in sealed[:missing_sealed]:
        if v["ml_left"] <= left:
            out.append(ev.VialAdjustment(v["vial_id"], _product_of_vial(ctx, v), v["ml_left"], True))
            left -= v["ml_left"]
    used = {a.vial_id for a in out}
    for v in opened + [v for v in sealed if v["vial_id"] not in used]:
        if left <= 0:
            break
        take = min(left, v["ml_left"])
        out.append(ev.VialAdjustment(v["vial_id"], _product_of_vial(ctx, v), take, take == v["ml_left"]))
        left -= take
    if left > 0:
        raise Conflict(f"the vials on hand no longer hold the {loss} mL this loss takes off the book; "
                       "count again", field="discrepancy_id")
    return out


def resolve_discrepancy(ledger: Ledger, principal: Principal, cmd: ResolveDiscrepancy, *,
                        idempotency_key: str | None = None) -> dict:
    """A manager who did not count categorises and explains a difference. A documentation error
    names the late entry that was missing; breakage, spill or theft/loss writes a loss adjustment;
    until then the book stays as computed and the count stands beside it."""
    if cmd.category not in DISCREPANCY_CATEGORIES:
        raise InvalidInput(f"must be one of {', '.join(DISCREPANCY_CATEGORIES)}", field="category")
    explanation = text(cmd.explanation, field="explanation", max_len=2000)
    if cmd.category == "documentation_error" and cmd.fixed_by_seq is None:
        raise InvalidInput("a documentation error is fixed by the late entry that was missing; give its seq",
                           field="fixed_by_seq")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=RESOLVERS)
        d = ctx.view.get("discrepancies", (ctx.registrant, cmd.discrepancy_id))
        if d is None:
            raise NotFound(f"no discrepancy {cmd.discrepancy_id!r} at {ctx.registrant}", field="discrepancy_id")
        if d["status"] != "open":
            raise Conflict(f"discrepancy {cmd.discrepancy_id} is already resolved", field="discrepancy_id")
        if principal.staff_id in json.loads(d["counters"]):
            raise Forbidden("the manager approving a discrepancy must not be one of its counters", field="principal")
        fixed = None
        if cmd.fixed_by_seq is not None:
            e = _entry(ctx, cmd.fixed_by_seq, field="fixed_by_seq")
            if e["seq"] <= d["count_seq"]:
                raise Conflict("the fixing entry must be recorded after the count it explains", field="fixed_by_seq")
            fixed = e["seq"]
        loss = -d["difference_ml"]
        if cmd.category in LOSS_CATEGORIES and loss <= 0:
            raise Conflict(f"the count found {d['difference_ml']} mL against the book: that is not a loss",
                           field="category")
        ctx.append(ev.DiscrepancyResolved(discrepancy_id=cmd.discrepancy_id, count_seq=d["count_seq"],
                                          category=cmd.category, explanation=explanation, fixed_by_seq=fixed),
                   signatures=[sig], occurred_at=ctx.now)
        out: dict[str, Any] = {"discrepancy_id": cmd.discrepancy_id}
        if cmd.category in LOSS_CATEGORIES:
            adjustments = _allocate_loss(ctx, d, loss)
            a = ctx.append(ev.LossAdjusted(discrepancy_id=cmd.discrepancy_id, category=cmd.category,
                                           adjustments=tuple(adjustments)), signatures=[sig], occurred_at=ctx.now)
            out["loss_adjustment_seq"] = a.seq
        return out

    return _run(ledger, principal, "resolve_discrepancy", cmd, build, idempotency_key)


# --- stock leaving: destruction, transfer, return, theft or loss ------------------------------------


def destroy_stock(ledger: Ledger, principal: Principal, cmd: DestroyStock, *, witnesses: Sequence[Principal],
                  idempotency_key: str | None = None) -> dict:
    """Destroy vials on site, non-retrievably (Form 41), with two distinct witnesses. A vial's
    remainder at its beyond-use date or expiry leaves this way (it is stock, never waste)."""
    ids = _vial_ids(cmd.vial_ids)
    method = text(cmd.method, field="method", max_len=200)
    place = text(cmd.place, field="place", max_len=200)
    reason = text(cmd.reason, field="reason", max_len=500)
    if not isinstance(witnesses, list | tuple) or len(witnesses) < 2:
        raise InvalidInput("destruction needs two authorized employee witnesses (Form 41)", field="witnesses")
    if len({getattr(w, "staff_id", None) for w in witnesses}) != len(witnesses):
        raise Conflict("the two witnesses must be two different people", field="witnesses")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        wsigs = [_sign_witness(ctx, principal, w, field=f"witnesses[{i}]") for i, w in enumerate(witnesses)]
        docs = _documents(ctx, cmd.documents)
        items = []
        for i, vial_id in enumerate(ids):
            v = _vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]")
            p = _product_of_vial(ctx, v)
            full = v["opened_at"] is None and v["ml_left"] == v["container_ml"]
            items.append(ev.DestroyedItem(vial_id=vial_id, product=p, lot=v["lot"], full_package=full, ml=v["ml_left"],
                                          mg=q2(v["ml_left"] * p.strength_mg_per_ml)))
        ctx.append(ev.StockDestroyed(registrant_copy=_registrant_copy(ctx), items=tuple(items), method=method,
                                     place=place, reason=reason, late_reason=late, documents=docs),
                   signatures=[sig, *wsigs], occurred_at=occurred)
        return {"destroyed_ml": str(sum((i.ml for i in items), ZERO))}

    return _run(ledger, principal, "destroy_stock", cmd, build, idempotency_key,
                {**_request(cmd), "witnesses": [getattr(w, "staff_id", None) for w in witnesses]})


def _moved(ctx: CommandContext, ids: Sequence[str], *, sealed_only: bool) -> list[ev.MovedVial]:
    out = []
    for i, vial_id in enumerate(ids):
        f = f"vial_ids[{i}]"
        v = _vial_for_use(ctx, vial_id, field=f)
        if sealed_only and (v["opened_at"] is not None or v["state"] != "sealed"):
            raise Conflict(f"vial {vial_id} is {v['state']}; only sealed, released stock is transferred", field=f)
        out.append(ev.MovedVial(vial_id=vial_id, product=_product_of_vial(ctx, v), lot=v["lot"],
                                expiry=date.fromisoformat(v["expiry"]), ml=v["ml_left"]))
    return out


def _year_units(ctx: CommandContext, year: int, unit: str, tz: zoneinfo.ZoneInfo) -> tuple[Decimal, Decimal]:
    """(units transferred to practitioners, units dispensed) this calendar year, from the entries."""
    start = format_time(datetime(year, 1, 1, tzinfo=tz))
    end = format_time(datetime(year + 1, 1, 1, tzinfo=tz))
    rows = ctx.view.raw.rows(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND kind IN "
                                       "('stock_transferred', 'dose_administered') AND occurred_at >= :s "
                                       "AND occurred_at < :e", {"r": ctx.registrant, "s": start, "e": end})
    transferred = dispensed = Decimal(0)
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if e["kind"] == "stock_transferred":
            transferred += sum((_units(Decimal(v["ml"]), Decimal(v["product"]["container_ml"]), unit) for v in e["vials"]),
                               Decimal(0))
        else:
            cml = Decimal(e["draws"][0]["product"]["container_ml"])
            dispensed += _units(Decimal(e["ml_given"]), cml, unit)
    return transferred, dispensed


def _units(ml: Decimal, container_ml: Decimal, unit: str) -> Decimal:
    if unit == "ml":
        return ml
    with localcontext() as c:
        c.prec = 40
        return ml / container_ml


def transfer_stock(ledger: Ledger, principal: Principal, cmd: TransferStock, *, idempotency_key: str | None = None) -> dict:
    """Transfer sealed vials to another registered practitioner on an invoice, refused when the
    year's practitioner transfers would pass 5% of the dosage units distributed and dispensed."""
    ids = _vial_ids(cmd.vial_ids)
    receiver = parse_dea_number(cmd.receiver_dea_number, field="receiver_dea_number")
    name = text(cmd.receiver_name, field="receiver_name")
    addr = address(cmd.receiver_address, field="receiver_address")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        if receiver == ctx.registrant:
            raise Conflict("a registrant cannot transfer to itself", field="receiver_dea_number")
        vials = _moved(ctx, ids, sealed_only=True)
        policy = current_policy(ctx)
        tz = registrant_tz(ctx)
        t_prior, dispensed = _year_units(ctx, occurred.astimezone(tz).year, policy.dosage_unit, tz)
        t_now = sum((_units(v.ml, v.product.container_ml, policy.dosage_unit) for v in vials), Decimal(0))
        transfers = t_prior + t_now
        total = dispensed + transfers
        if transfers * 100 > TRANSFER_LIMIT_PERCENT * total:
            with localcontext() as c:
                c.prec = 28
                pct = (transfers * 100 / total).quantize(Decimal("0.01")) if total else Decimal("100.00")
            raise Conflict(f"this transfer would take the year's practitioner transfers to {pct}% of dosage units "
                           f"distributed and dispensed, past the 5% a practitioner may transfer without a "
                           f"distributor registration (21 CFR 1307.11)", field="vial_ids")
        ctx.append(ev.StockTransferred(receiver_dea_number=receiver, receiver_name=name, receiver_address=addr,
                                       invoice_number=invoice, vials=tuple(vials),
                                       year_transfer_units=q2(transfers), year_total_units=q2(total),
                                       late_reason=late), signatures=[sig], occurred_at=occurred)
        return {"transferred_ml": str(sum((v.ml for v in vials), ZERO))}

    return _run(ledger, principal, "transfer_stock", cmd, build, idempotency_key)


def return_stock(ledger: Ledger, principal: Principal, cmd: ReturnStock, *, idempotency_key: str | None = None) -> dict:
    """Return vials to the supplier or hand them to a reverse distributor (Part 1317), on an
    invoice; not counted toward the 5% transfer limit."""
    ids = _vial_ids(cmd.vial_ids)
    if cmd.recipient_type not in ("supplier", "reverse_distributor"):
        raise InvalidInput("must be 'supplier' or 'reverse_distributor'", field="recipient_type")
    name = text(cmd.recipient_name, field="recipient_name")
    addr = address(cmd.recipient_address, field="recipient_address")
    dea = parse_dea_number(cmd.recipient_dea_number, field="recipient_dea_number")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        vials = _moved(ctx, ids, sealed_only=False)
        ctx.append(ev.StockReturned(recipient_type=cmd.recipient_type, recipient_name=name, recipient_address=addr,
                                    recipient_dea_number=dea, invoice_number=invoice, vials=tuple(vials),
                                    late_reason=late), signatures=[sig], occurred_at=occurred)
        return {"returned_ml": str(sum((v.ml for v in vials), ZERO))}

    return _run(ledger, principal, "return_stock", cmd, build, idempotency_key)


def next_business_day(d: date) -> date:
    """The business day after ``d``: not a weekend, not a US federal holiday (``holidays``)."""
    us = holidays.country_holidays("US", years=range(d.year, d.year + 2))
    n = d + timedelta(days=1)
    while n.weekday() >= 5 or n in us:
        n += timedelta(days=1)
    return n


def _end_of_local_day(d: date, tz: zoneinfo.ZoneInfo) -> str:
    return format_time(datetime.combine(d + timedelta(days=1), time(0), tz) - timedelta(microseconds=1))


def notice_deadlines(discovered_at: datetime, tz: zoneinfo.ZoneInfo) -> tuple[str, str]:
    """(written notice due, Form 106 due): the end of the business day after discovery, and
    the end of the 45th day (21 CFR 1301.76(b))."""
    local = discovered_at.astimezone(tz).date()
    return (_end_of_local_day(next_business_day(local), tz),
            _end_of_local_day(local + timedelta(days=FORM_106_DAYS), tz))


def report_theft_or_loss(ledger: Ledger, principal: Principal, cmd: ReportTheftOrLoss, *,
                         idempotency_key: str | None = None) -> dict:
    """Theft or significant loss with every Form 106 field; vials lost now leave the book here,
    losses already adjusted (``covers_seqs``) are referenced, not moved again."""
    discovered = _aware(cmd.discovered_at, field="discovered_at")
    if cmd.loss_type not in LOSS_TYPES:
        raise InvalidInput(f"must be one of {', '.join(LOSS_TYPES)}", field="loss_type")
    if not isinstance(cmd.police_notified, bool):
        raise InvalidInput("must be true or false", field="police_notified")
    dept = text(cmd.police_department, field="police_department") if cmd.police_department is not None else None
    report_no = (text(cmd.police_report_number, field="police_report_number", max_len=64)
                 if cmd.police_report_number is not None else None)
    if cmd.police_notified and dept is None:
        raise InvalidInput("name the police department notified", field="police_department")
    past = parse_count(cmd.losses_past_24_months, field="losses_past_24_months")
    value = parse_amount(cmd.purchase_value_usd, field="purchase_value_usd", allow_zero=True)
    if not cmd.lost and not cmd.covers_seqs:
        raise InvalidInput("name the vials lost, or the loss adjustments this report covers", field="lost")
    lost_in = []
    for i, ln in enumerate(cmd.lost):
        ml = parse_amount(ln.ml, field=f"lost[{i}].ml") if ln.ml is not None else None
        lost_in.append((ln.vial_id, ml))

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=LOSS_REPORTERS)
        if discovered > ctx.now + FUTURE_TOLERANCE:
            raise InvalidInput("is in the future", field="discovered_at")
        docs = _documents(ctx, cmd.documents)
        lost = []
        for i, (vial_id, ml) in enumerate(lost_in):
            v = _vial_for_use(ctx, vial_id, field=f"lost[{i}].vial_id")
            take = v["ml_left"] if ml is None else ml
            if take > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; the book cannot lose {take} mL",
                               field=f"lost[{i}].ml")
            lost.append(ev.VialAdjustment(vial_id, _product_of_vial(ctx, v), take, take == v["ml_left"]))
        for i, s in enumerate(cmd.covers_seqs):
            if _entry(ctx, s, field=f"covers_seqs[{i}]")["kind"] != "loss_adjusted":
                raise Conflict(f"entry {s} is not a loss adjustment", field=f"covers_seqs[{i}]")
        notice_due, form_due = notice_deadlines(discovered, registrant_tz(ctx))
        ctx.append(ev.TheftOrLossReported(
            registrant_copy=_registrant_copy(ctx), discovered_at=format_time(discovered), loss_type=cmd.loss_type,
            police_notified=cmd.police_notified, police_department=dept, police_report_number=report_no,
            losses_past_24_months=past, purchase_value_usd=value, lost=tuple(lost),
            covers_seqs=tuple(cmd.covers_seqs), notice_due_at=notice_due, form_106_due_at=form_due, documents=docs,
        ), signatures=[sig], occurred_at=discovered)
        return {"notice_due_at": notice_due, "form_106_due_at": form_due}

    return _run(ledger, principal, "report_theft_or_loss", cmd, build, idempotency_key)


# --- corrections, quarantine, documents -----------------------------------------------------------


def correct_entry(ledger: Ledger, principal: Principal, cmd: CorrectEntry, *, idempotency_key: str | None = None) -> dict:
    """A correction references the entry it corrects, says why and carries compensating
    quantities; the corrected entry stays as it was."""
    reason = text(cmd.reason, field="reason", max_len=1000)
    lines_in = []
    for i, ln in enumerate(cmd.lines):
        if ln.direction not in ("add", "remove"):
            raise InvalidInput("must be 'add' or 'remove'", field=f"lines[{i}].direction")
        lines_in.append((ln.vial_id, ln.direction, parse_amount(ln.ml, field=f"lines[{i}].ml")))

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        target = _entry(ctx, cmd.corrects_seq, field="corrects_seq")
        lines = []
        for i, (vial_id, direction, ml) in enumerate(lines_in):
            f = f"lines[{i}]"
            v = ctx.view.get("vials", (ctx.registrant, vial_id)) if isinstance(vial_id, str) else None
            if v is None:
                raise NotFound(f"no vial {vial_id!r} at {ctx.registrant}", field=f"{f}.vial_id")
            if direction == "remove" and ml > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; removing {ml} mL would take stock below zero",
                               field=f"{f}.ml")
            if direction == "add" and v["ml_left"] + ml > v["container_ml"]:
                raise Conflict(f"vial {vial_id} cannot hold more than {v['container_ml']} mL", field=f"{f}.ml")
            lines.append(ev.CorrectionLine(vial_id=vial_id, product=_product_of_vial(ctx, v), direction=direction, ml=ml))
        ctx.append(ev.EntryCorrected(corrects_seq=target["seq"], corrects_kind=target["kind"], reason=reason,
                                     lines=tuple(lines)), signatures=[sig], occurred_at=ctx.now)
        return {"corrects_seq": target["seq"]}

    return _run(ledger, principal, "correct_entry", cmd, build, idempotency_key)


def quarantine_stock(ledger: Ledger, principal: Principal, cmd: QuarantineStock, *,
                     idempotency_key: str | None = None) -> dict:
    """Set suspect product aside (DSCSA): nothing can be drawn from it until released."""
    ids = _vial_ids(cmd.vial_ids)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        for i, vial_id in enumerate(ids):
            v = _vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]")
            if v["state"] == "quarantined":
                raise Conflict(f"vial {vial_id} is already in quarantine", field=f"vial_ids[{i}]")
        ctx.append(ev.StockQuarantined(vial_ids=ids, reason=reason), signatures=[sig], occurred_at=ctx.now)
        return {}

    return _run(ledger, principal, "quarantine_stock", cmd, build, idempotency_key)


def release_quarantine(ledger: Ledger, principal: Principal, cmd: ReleaseQuarantine, *,
                       idempotency_key: str | None = None) -> dict:
    """Release product found not suspect; a pharmacist or manager decides."""
    ids = _vial_ids(cmd.vial_ids)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STOCK_HANDLERS)
        for i, vial_id in enumerate(ids):
            v = _vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]")
            if v["state"] != "quarantined":
                raise Conflict(f"vial {vial_id} is not in quarantine", field=f"vial_ids[{i}]")
        ctx.append(ev.QuarantineReleased(vial_ids=ids, reason=reason), signatures=[sig], occurred_at=ctx.now)
        return {}

    return _run(ledger, principal, "release_quarantine", cmd, build, idempotency_key)


def store_document(ledger: Ledger, principal: Principal, cmd: StoreDocument, *, idempotency_key: str | None = None) -> dict:
    """Keep a document (invoice scan, police report, Form 106 confirmation, signed inventory)
    content-addressed: the bytes once by SHA-256, the entry holding the digest."""
    if not isinstance(cmd.content, bytes) or not cmd.content:
        raise InvalidInput("must be the document's bytes", field="content")
    if len(cmd.content) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"must be at most {MAX_DOCUMENT_BYTES} bytes", field="content")
    if cmd.media_type not in DOCUMENT_TYPES:
        raise InvalidInput(f"must be one of {', '.join(sorted(DOCUMENT_TYPES))}", field="media_type")
    title = text(cmd.title, field="title", max_len=200)
    sha = hashlib.sha256(cmd.content).hexdigest()

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=DOCUMENT_KEEPERS)
        if ctx.view.get("documents", (ctx.registrant, sha)) is not None:
            raise Conflict(f"this document is already stored ({sha[:12]}...)", field="content")
        ctx.view.raw.run(ctx.conn, "INSERT INTO document_blobs (sha256, content, size_bytes) VALUES (:h, :c, :n) "
                                   "ON CONFLICT (sha256) DO NOTHING", {"h": sha, "c": cmd.content, "n": len(cmd.content)})
        ctx.append(ev.DocumentStored(sha256=sha, media_type=cmd.media_type, title=title, size_bytes=len(cmd.content)),
                   signatures=[sig], occurred_at=ctx.now)
        return {"sha256": sha}

    request = {"type": "StoreDocument", "sha256": sha, "media_type": cmd.media_type, "title": title}
    return _run(ledger, principal, "store_document", cmd, build, idempotency_key, request)


def read_document(ledger: Ledger, registrant: str, sha256: str) -> bytes:
    """A stored document's bytes, checked against their digest."""
    with ledger.reading() as conn:
        r = raw(conn)
        if r.one(conn, "SELECT sha256 FROM documents WHERE registrant = :r AND sha256 = :h",
                 {"r": registrant, "h": sha256}) is None:
            raise NotFound(f"no document {sha256[:12]}... at {registrant}", field="sha256")
        row = r.one(conn, "SELECT content FROM document_blobs WHERE sha256 = :h", {"h": sha256})
    content = bytes(row["content"])
    if hashlib.sha256(content).hexdigest() != sha256:
        from ledger.domain.errors import IntegrityFailure

        raise IntegrityFailure(f"document {sha256[:12]}... does not hash to its digest")
    return content


__all__ = [
    "administer_dose", "change_patient_details", "check_registry", "correct_entry", "destroy_stock",
    "read_document", "read_patient", "record_waste", "register_patient", "release_quarantine", "report_theft_or_loss",
    "resolve_discrepancy", "return_stock", "set_policy", "start_count", "store_document", "submit_count",
    "transfer_stock", "verify_patient_key", "quarantine_stock",
]
