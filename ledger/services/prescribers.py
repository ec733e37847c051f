"""Prescribers (issue 19): who may order a dose here, recorded as reference entries.

A prescriber is an entry ``prescriber_registered``: name, DEA number (a practitioner's), the
registration's state (the clinic's), its schedules (3 or 3N among them) and expiry, the state
licence, and the staff member when the prescriber is enrolled here. A renewal is the same
command again: the later entry for a DEA number supersedes the earlier (the ``prescribers``
projection keeps the latest), and no entry is ever rewritten. ``administration.administer_dose``
refuses a dose whose prescriber is not registered, expired, or lacks the product's schedule
(``ledger.domain.prescribers.order_refusal``, replayed by ``verify --deep``).
"""

from __future__ import annotations

from ledger.domain import entries as ev
from ledger.domain import prescribers as rules
from ledger.domain.commands import RegisterPrescriber
from ledger.domain.errors import InvalidInput, NotFound
from ledger.domain.identifiers import parse_dea_number
from ledger.domain.principal import Meaning, Principal, Role
from ledger.services.common import US_STATES, expiry_date, registrant_tz, run, text
from ledger.services.reference import printed_name
from ledger.storage.store import CommandContext, Ledger

#: Who registers a prescriber (signed ``performed``), as other reference data about people.
PRESCRIBER_REGISTRARS = frozenset({Role.MANAGER, Role.ADMINISTRATOR})


def _state(value: object, *, field: str) -> str:
    state = text(value, field=field, max_len=2).upper()
    if state not in US_STATES:
        raise InvalidInput(f"{state!r} is not a US state or territory code", field=field)
    return state


def _schedules(value: object) -> tuple[str, ...]:
    """The registration's schedules, normalised to ``rules.SCHEDULES`` order (duplicates merged),
    one of them covering Schedule III."""
    held = rules.parse_schedules(value, field="schedules")
    refusal = rules.schedules_refusal(held)
    if refusal is not None:
        raise InvalidInput(refusal, field="schedules")
    return held


def register_prescriber(ledger: Ledger, principal: Principal, cmd: RegisterPrescriber, *,
                        idempotency_key: str | None = None) -> dict:
    """Register a prescriber, or record their renewed registration (same DEA number again)."""
    name = printed_name(cmd.name, field="name")
    dea = parse_dea_number(cmd.dea_number, field="dea_number")
    refusal = rules.practitioner_refusal(dea)
    if refusal is not None:
        raise InvalidInput(refusal, field="dea_number")
    reg_state = _state(cmd.registration_state, field="registration_state")
    schedules = _schedules(cmd.schedules)
    expires = expiry_date(cmd.expires_on, field="expires_on")
    licence = text(cmd.state_license_number, field="state_license_number", max_len=32)
    licence_state = _state(cmd.state_license_state, field="state_license_state")
    staff_id = None if cmd.staff_id is None else text(cmd.staff_id, field="staff_id", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=PRESCRIBER_REGISTRARS)
        clinic_state = ctx.view.get("registrants", (ctx.registrant,))["state"]
        # A DEA registration is per state (21 CFR 1301.12) and the practitioner must be licensed
        # by the state where they practise (1306.03(a)(1)): here, the clinic's.
        if reg_state != clinic_state:
            raise InvalidInput(f"the registration is in {reg_state}; a prescriber at this clinic needs a DEA "
                               f"registration in {clinic_state}, the clinic's state", field="registration_state")
        if licence_state != clinic_state:
            raise InvalidInput(f"the licence is from {licence_state}; a prescriber at this clinic needs a "
                               f"{clinic_state} licence, the clinic's state", field="state_license_state")
        today = ctx.now.astimezone(registrant_tz(ctx)).date()
        if expires < today:
            raise InvalidInput(f"this registration expired on {expires.isoformat()}; record the renewed one",
                               field="expires_on")
        if staff_id is not None:
            authority = ctx.authority()
            if authority.member(staff_id) is None:
                raise NotFound(f"no staff member {staff_id!r} at {ctx.registrant}", field="staff_id")
            if Role.PRESCRIBER.value not in authority.roles(staff_id):
                raise InvalidInput(f"{staff_id} does not hold the prescriber role; leave staff_id out for an "
                                   "external prescriber", field="staff_id")
        previous = ctx.view.get("prescribers", (ctx.registrant, dea))
        entry = ctx.append(ev.PrescriberRegistered(
            dea_number=dea, name=name, registration_state=reg_state, schedules=schedules, expires_on=expires,
            state_license_number=licence, state_license_state=licence_state, staff_id=staff_id,
        ), signatures=[sig], occurred_at=ctx.now)
        return {"dea_number": dea, "name": name, "expires_on": expires.isoformat(), "schedules": list(schedules),
                "supersedes_seq": previous["registered_seq"] if previous else None, "seq": entry.seq}

    return run(ledger, principal, "register_prescriber", cmd, build, idempotency_key)
