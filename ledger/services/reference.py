"""Reference data: the registrant (seq 0), its products, suppliers, staff, roles and policy.
Each is an entry; the tables that list them are projections of those entries.
"""

from __future__ import annotations

import re
import secrets
import zoneinfo
from collections.abc import Callable
from datetime import time

from ledger.domain import entries as ev
from ledger.domain import names, ndc_reference, trading_partners
from ledger.domain.commands import (
    AddProduct,
    AddSupplier,
    EnrollStaff,
    GrantRole,
    RecordSupplierRegistration,
    RegisterRegistrant,
    RevokeRole,
    SetPolicy,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.identifiers import parse_dea_number, parse_ndc
from ledger.domain.policy import (
    COUNT_SCHEDULES,
    DOSAGE_UNITS,
    MAX_OPEN_COUNT_TOLERANCE_ML,
    PASSKEY_SCOPES,
    WEEKDAYS,
)
from ledger.domain.principal import AuthMethod, Meaning, Principal, Role
from ledger.domain.quantities import parse_amount, parse_count, parse_volume
from ledger.integrity import canonical as canon
from ledger.integrity.canonical import format_time
from ledger.services.common import address, request_fields, role, run, text
from ledger.storage.store import CommandContext, Ledger

#: Who enrols staff and grants roles; two of them, neither the grantee, sign each such entry
#: (compare 21 CFR 1311.125: setting who may sign controlled-substance prescriptions takes two
#: individuals; the same two-person control over who may sign this ledger's records).
STAFF_ADMIN = frozenset({Role.ADMINISTRATOR, Role.MANAGER})


REFERENCE_DATA = frozenset({Role.ADMINISTRATOR, Role.MANAGER, Role.PHARMACIST})


_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def register_registrant(ledger: Ledger, cmd: RegisterRegistrant, *, idempotency_key: str | None = None,
                        bootstrap_method: AuthMethod = AuthMethod.CONSOLE_BOOTSTRAP) -> dict:
    """Start a registrant's log: seq 0 registers the location, then its first administrator is
    enrolled and granted the role. Only the console (``csledger init``) and the demo call this;
    the operator's signature is marked ``console_bootstrap``, or ``demo_seed`` when the demo
    registers it (``bootstrap_method``: the mark that tells its simulated history apart)."""
    if bootstrap_method not in (AuthMethod.CONSOLE_BOOTSTRAP, AuthMethod.DEMO_SEED):
        raise InvalidInput("a registrant is registered from the console or by the demo", field="bootstrap_method")
    dea = parse_dea_number(cmd.dea_number)
    name = text(cmd.name, field="name")
    addr = address(cmd.address, field="address")
    tz = text(cmd.time_zone, field="time_zone", max_len=64)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{tz!r} is not an IANA time zone (e.g. America/New_York)", field="time_zone") from None
    admin_name = printed_name(cmd.admin_printed_name, field="admin_printed_name")
    admin_user = _username(cmd.admin_username, field="admin_username")

    def build(ctx: CommandContext) -> dict:
        admin_id = f"S{ctx.next_seq + 1}"
        bootstrap = Principal(dea, admin_id, admin_name, bootstrap_method)
        sig = {
            "staff_id": bootstrap.staff_id, "printed_name": admin_name, "meaning": Meaning.PERFORMED.value,
            "signed_at": format_time(ctx.now), "auth_method": bootstrap.auth_method.value,
        }
        ctx.append(
            ev.RegistrantRegistered(dea_number=dea, name=name, address=addr, time_zone=tz,
                                    log_id=secrets.token_hex(8)),
            signatures=[sig], occurred_at=ctx.now,
        )
        ctx.append(ev.StaffEnrolled(staff_id=admin_id, printed_name=admin_name, username=admin_user),
                   signatures=[sig], occurred_at=ctx.now)
        ctx.append(ev.RoleGranted(staff_id=admin_id, role=Role.ADMINISTRATOR.value),
                   signatures=[sig], occurred_at=ctx.now)
        return {"admin_staff_id": admin_id}

    return ledger.execute(dea, "register_registrant", request_fields(cmd), build, principal_id=None,
                          idempotency_key=idempotency_key, creates_registrant=True)


def _username(value: str, *, field: str) -> str:
    u = text(value, field=field, max_len=64).lower()
    if not _USERNAME.fullmatch(u):
        raise InvalidInput("must be 2-64 characters: letters, digits, '.', '_' or '-'", field=field)
    return u


def printed_name(value: str, *, field: str = "printed_name") -> str:
    """A printed name as signatures will show it: text in one script (``names.mixed_scripts``)."""
    name = text(value, field=field, max_len=100)
    mixed = names.mixed_scripts(name)
    if mixed is not None:
        raise InvalidInput(f"mixes the scripts {' and '.join(sorted(s.title() for s in mixed))}; write the name "
                           "in one script, as it is printed", field=field)
    return name


def _distinct_names(ctx: CommandContext, printed: str, username: str) -> None:
    """Refuse a printed name or username that looks like an existing staff member's (former
    staff included: their names are on old signatures). Same name with a visible suffix is fine."""
    staff = ctx.view.select("staff", registrant=ctx.registrant)
    if any(s["username"] == username for s in staff):
        raise Conflict(f"username {username!r} is taken at {ctx.registrant}", field="username")
    existing = [(s["staff_id"], s["printed_name"]) for s in staff]
    same = names.look_alike(printed, existing)
    if same is not None:
        raise Conflict(f"looks like {same.name!r} ({same.staff_id}); add a distinguishing suffix such as "
                       f"{names.suffixed(printed, existing)!r}", field="printed_name")
    same = names.look_alike(username, [(s["staff_id"], s["username"]) for s in staff])
    if same is not None:
        raise Conflict(f"looks like the username {same.name!r} ({same.staff_id}); choose another", field="username")


def _second_person(ctx: CommandContext, principal: Principal, approver: Principal | None, *,
                   grantee: str | None, what: str) -> dict:
    """The approver's signature (``approved``) on an enrolment or role grant: a second manager
    or administrator, neither the one acting nor the grantee, roles checked in this transaction.

    Without an approver the command may go ahead only where nobody else could approve: no one
    but the actor (and the grantee) holds manager or administrator at the registrant. The actor
    then signs ``approved`` as well, so the entry shows it was done alone, and for 90 days any
    entry signed by both the actor and the person enrolled raises ``witness_enrolled_by_actor``.
    """
    if approver is None:
        # Authority from the role entries (issue 16), never the staff_roles projection: deleting
        # the other managers' rows must not let one manager act alone.
        holders = set(ctx.authority().holders(STAFF_ADMIN))
        others = sorted(holders - {principal.staff_id, grantee})
        if others:
            who = ", ".join(f"{ctx.view.get('staff', (ctx.registrant, o))['printed_name']} ({o})" for o in others[:5])
            raise InvalidInput(f"{what} needs a second manager or administrator to approve (one of: {who})",
                               field="approver")
        return ctx.signature(principal, Meaning.APPROVED, roles=STAFF_ADMIN)
    if not isinstance(approver, Principal):
        raise InvalidInput("must be an authenticated staff member", field="approver")
    if approver.staff_id == principal.staff_id:
        raise Conflict("the approver must be a second person, not the one acting", field="approver")
    if grantee is not None and approver.staff_id == grantee:
        raise Conflict("the approver may not be the person who receives the role", field="approver")
    try:
        return ctx.signature(approver, Meaning.APPROVED, roles=STAFF_ADMIN)
    except (NotFound, Forbidden) as exc:
        raise type(exc)(exc.reason, field="approver", type_=exc.type) from None


#: Why a Schedule II product is refused (issue 19): its records are kept apart and ordered on
#: DEA Form 222 or through CSOS, neither of which csledger does.
SCHEDULE_II_REFUSED = ("csledger keeps Schedule III-V records only; Schedule II records need DEA Form 222/CSOS "
                       "and must be kept separately (21 CFR 1304.04(f))")


def add_product(ledger: Ledger, principal: Principal, cmd: AddProduct, *, idempotency_key: str | None = None) -> dict:
    """Add a product (entry ``product_added``). Its figures are checked against csledger's NDC
    reference (``ledger.domain.ndc_reference``) before anything is written: an NDC in the table
    with other figures is refused naming them; an NDC not in the table is added with a warning in
    the answer (``warnings``). Schedule II is refused."""
    ndc = parse_ndc(cmd.ndc)
    name = text(cmd.name, field="name")
    drug_code = text(cmd.drug_code, field="drug_code", max_len=4)
    if not re.fullmatch(r"\d{4}", drug_code):
        raise InvalidInput("must be the 4-digit DEA controlled-substance code (7285 for ketamine)", field="drug_code")
    schedule = text(cmd.schedule, field="schedule", max_len=4).upper()
    if schedule in {"II", "IIN"}:
        raise InvalidInput(SCHEDULE_II_REFUSED, field="schedule")
    if schedule not in {"III", "IIIN", "IV", "V"}:
        raise InvalidInput("must be a DEA schedule that csledger records: III, IIIN, IV or V", field="schedule")
    form = text(cmd.form, field="form", max_len=64).lower()
    strength = parse_amount(cmd.strength_mg_per_ml, field="strength_mg_per_ml")
    container = parse_amount(cmd.container_ml, field="container_ml")
    unit_kind, unit_ndc, units = _unit_model(ndc, cmd)
    # Checked before the entry is written; entries already written are never judged again.
    wrong = ndc_reference.refusal({"ndc": ndc.printed, "ndc_key": ndc.key, "name": name, "form": form,
                                   "drug_code": drug_code, "schedule": schedule,
                                   "strength_mg_per_ml": strength, "container_ml": container,
                                   "unit_kind": unit_kind, "unit_ndc": unit_ndc, "units_per_package": units})
    if wrong is not None:
        raise InvalidInput(wrong.text, field=wrong.field)
    unknown = ndc_reference.unknown_ndc_warning(ndc.printed)
    warnings = [unknown] if unknown else []

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REFERENCE_DATA)
        if ctx.view.get("products", (ctx.registrant, ndc.key)) is not None:
            raise Conflict(f"a product with NDC {ndc.printed} (key {ndc.key}) is already added", field="ndc")
        ctx.append(ev.ProductAdded(product=ev.ProductDescription(
            ndc=ndc.printed, ndc_key=ndc.key, name=name, drug_code=drug_code, schedule=schedule,
            form=form, strength_mg_per_ml=strength, container_ml=container,
            unit_kind=unit_kind, unit_ndc=unit_ndc, units_per_package=units,
        )), signatures=[sig], occurred_at=ctx.now)
        return {"ndc_key": ndc.key, "warnings": warnings}

    return ledger.execute(principal.registrant, "add_product", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


#: Most units one package may hold (issue 19): cartons of 10 or 25 vials, kits of 2 or 3 devices.
MAX_UNITS_PER_PACKAGE = 1000


def _unit_model(ndc, cmd: AddProduct) -> tuple[str, str | None, int]:
    """A product's unit model (issue 19: what a unit is, the unit's own NDC, units per package).
    Each figure the caller omits is taken from csledger's NDC reference when it holds the NDC
    (a vial, one per package, when it does not); figures given are checked here for form and
    by ``ndc_reference.refusal`` against the reference."""
    row = ndc_reference.lookup(ndc.key)
    # Added by the unit's own NDC (a vial's): the product is one unit, its own "package".
    is_unit = row is not None and row.unit_ndc is not None and parse_ndc(row.unit_ndc).key_12 == ndc.key_12
    kind = getattr(cmd, "unit_kind", None)
    if kind is None:
        kind = row.unit_kind.replace(" ", "_") if row is not None else "vial"
    elif not isinstance(kind, str) or kind not in ev.UNIT_KINDS:
        raise InvalidInput(f"must be one of {', '.join(ev.UNIT_KINDS)}", field="unit_kind")
    units = getattr(cmd, "units_per_package", None)
    if units is None:
        units = 1 if row is None or is_unit else row.units_per_package
    elif isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS_PER_PACKAGE:
        raise InvalidInput(f"must be a whole number of units from 1 to {MAX_UNITS_PER_PACKAGE}", field="units_per_package")
    given = getattr(cmd, "unit_ndc", None)
    if given is None:
        unit_ndc = row.unit_ndc if row is not None else None
    else:
        unit = parse_ndc(given, field="unit_ndc")
        # 21 CFR 207.35: one product (labeler and product code), its packages told apart by the
        # package code; a unit NDC of another product names another drug.
        if (unit.labeler, unit.product) != (ndc.labeler, ndc.product):
            raise InvalidInput(f"unit NDC {unit.printed} is not a package of the same product as NDC {ndc.printed} "
                               "(labeler and product code differ)", field="unit_ndc")
        if unit.key == ndc.key and units > 1:
            raise InvalidInput(f"NDC {ndc.printed} names a package of {units} units; the unit's own NDC is another",
                               field="unit_ndc")
        unit_ndc = unit.printed
    return kind, unit_ndc, units


def add_supplier(ledger: Ledger, principal: Principal, cmd: AddSupplier, *, idempotency_key: str | None = None) -> dict:
    """Add a supplier with its address, DEA number, and (issue 19) its DEA registration's expiry
    and schedules and its DSCSA authorized-trading-partner status, which receipts are checked
    against (``ledger.domain.trading_partners``)."""
    name = text(cmd.name, field="name")
    addr = address(cmd.address, field="address")
    dea = parse_dea_number(cmd.dea_number)
    registration, partner = _supplier_registration(cmd.registration_expires_on, cmd.schedules,
                                                   cmd.authorized_trading_partner)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REFERENCE_DATA)
        supplier_id = f"SUP{ctx.next_seq}"
        ctx.append(ev.SupplierAdded(supplier_id=supplier_id, name=name, address=addr, dea_number=dea,
                                    registration=registration, authorized_trading_partner=partner),
                   signatures=[sig], occurred_at=ctx.now)
        return {"supplier_id": supplier_id}

    return ledger.execute(principal.registrant, "add_supplier", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _supplier_registration(expires_on: object, schedules: object, partner: object) -> tuple[ev.DeaRegistration, bool]:
    if expires_on is None:
        raise InvalidInput("a supplier's DEA registration expiry is required (YYYY-MM-DD): receipts are checked "
                           "against it", field="registration_expires_on")
    if partner is None or not isinstance(partner, bool):
        raise InvalidInput("say whether the supplier is an authorized trading partner under DSCSA (true or false)",
                           field="authorized_trading_partner")
    return ev.DeaRegistration(expires_on=trading_partners.parse_expiry(expires_on, field="registration_expires_on"),
                              schedules=trading_partners.parse_schedules(schedules, field="schedules")), partner


def record_supplier_registration(ledger: Ledger, principal: Principal, cmd: RecordSupplierRegistration, *,
                                 idempotency_key: str | None = None) -> dict:
    """A supplier's renewed DEA registration and DSCSA status (or the first one recorded for a
    supplier added before issue 19): a new entry that supersedes what was recorded, never an edit."""
    registration, partner = _supplier_registration(cmd.registration_expires_on, cmd.schedules,
                                                   cmd.authorized_trading_partner)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REFERENCE_DATA)
        if ctx.view.get("suppliers", (ctx.registrant, cmd.supplier_id)) is None:
            raise NotFound(f"no supplier {str(cmd.supplier_id)[:64]!r} at {ctx.registrant}", field="supplier_id")
        ctx.append(ev.SupplierRegistrationRecorded(supplier_id=cmd.supplier_id, registration=registration,
                                                   authorized_trading_partner=partner),
                   signatures=[sig], occurred_at=ctx.now)
        return {"supplier_id": cmd.supplier_id}

    return ledger.execute(principal.registrant, "record_supplier_registration", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def enroll_staff(ledger: Ledger, principal: Principal, cmd: EnrollStaff, *, approver: Principal | None = None,
                 idempotency_key: str | None = None) -> dict:
    """Enrol a staff member with their first roles: performed by a manager or administrator and
    approved by a second one (``approver``), unless the actor is the registrant's only one."""
    printed = printed_name(cmd.printed_name)
    username = _username(cmd.username, field="username")
    roles = [role(r, field="roles") for r in cmd.roles]

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STAFF_ADMIN)
        _distinct_names(ctx, printed, username)
        for r in dict.fromkeys(roles):
            _check_can_grant(ctx, principal, r)
        second = _second_person(ctx, principal, approver, grantee=None, what="enrolling staff")
        staff_id = f"S{ctx.next_seq}"
        sigs = [sig, second]
        ctx.append(ev.StaffEnrolled(staff_id=staff_id, printed_name=printed, username=username),
                   signatures=sigs, occurred_at=ctx.now)
        for r in dict.fromkeys(roles):
            ctx.append(ev.RoleGranted(staff_id=staff_id, role=r.value), signatures=sigs, occurred_at=ctx.now)
        return {"staff_id": staff_id, "approved_by": second["staff_id"],
                "enrolled_alone": second["staff_id"] == principal.staff_id}

    return ledger.execute(principal.registrant, "enroll_staff", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def enrolment_reader(ctx: CommandContext) -> Callable[[str], dict | None]:
    """``staff_id`` -> that person's ``staff_enrolled`` entry, decoded from the chain (the staff
    projection only says at which seq); cached for the command. For the enrolment alert rule."""
    cache: dict[str, dict | None] = {}

    def read(staff_id: str) -> dict | None:
        if staff_id not in cache:
            row = ctx.view.get("staff", (ctx.registrant, staff_id))
            data = None if row is None else ctx.view.raw.scalar(
                ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                {"r": ctx.registrant, "s": row["enrolled_seq"]})
            cache[staff_id] = None if data is None else canon.decode(bytes(data))
        return cache[staff_id]

    return read


def _check_can_grant(ctx: CommandContext, principal: Principal, r: Role) -> None:
    if r == Role.ADMINISTRATOR and Role.ADMINISTRATOR.value not in ctx.authority().roles(principal.staff_id):
        raise Forbidden("only an administrator may grant or revoke the administrator role", field="role")


def grant_role(ledger: Ledger, principal: Principal, cmd: GrantRole, *, approver: Principal | None = None,
               idempotency_key: str | None = None) -> dict:
    """Grant a role to someone else, approved by a second manager or administrator who is not
    the grantee (``approver``), unless nobody else could approve."""
    r = role(cmd.role)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STAFF_ADMIN)
        if ctx.view.get("staff", (ctx.registrant, cmd.staff_id)) is None:
            raise NotFound(f"no staff member {cmd.staff_id!r} at {ctx.registrant}", field="staff_id")
        if cmd.staff_id == principal.staff_id:
            raise Forbidden("no one grants a role to themself; another manager or administrator must",
                            field="staff_id")
        _check_can_grant(ctx, principal, r)
        if r.value in ctx.authority().roles(cmd.staff_id):
            raise Conflict(f"{cmd.staff_id} already holds the role {r.value}", field="role")
        second = _second_person(ctx, principal, approver, grantee=cmd.staff_id, what="granting a role")
        ctx.append(ev.RoleGranted(staff_id=cmd.staff_id, role=r.value), signatures=[sig, second],
                   occurred_at=ctx.now)
        return {"approved_by": second["staff_id"], "granted_alone": second["staff_id"] == principal.staff_id}

    return ledger.execute(principal.registrant, "grant_role", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def revoke_role(ledger: Ledger, principal: Principal, cmd: RevokeRole, *, approver: Principal | None = None,
                idempotency_key: str | None = None) -> dict:
    """Revoke a role. A manager or administrator role is revoked with a second manager or
    administrator's approval (``approver``), unless nobody else could approve."""
    r = role(cmd.role)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STAFF_ADMIN)
        if ctx.view.get("staff", (ctx.registrant, cmd.staff_id)) is None:
            raise NotFound(f"no staff member {str(cmd.staff_id)[:40]!r} at {ctx.registrant}", field="staff_id")
        if r.value not in ctx.authority().roles(cmd.staff_id):
            raise NotFound(f"{cmd.staff_id!r} does not hold the role {r.value}", field="role")
        _check_can_grant(ctx, principal, r)
        if r == Role.ADMINISTRATOR and len(ctx.authority().holders({r.value})) == 1:
            raise Conflict("this is the registrant's last administrator; grant the role to someone else first", field="role")
        signatures = [sig]
        if r.value in STAFF_ADMIN:
            # Revoking a manager or administrator is how one of them could become the only one,
            # free to enrol and grant alone: it needs a second one, as enrolment does.
            signatures.append(_second_person(ctx, principal, approver, grantee=cmd.staff_id,
                                             what="revoking a manager or administrator role"))
        ctx.append(ev.RoleRevoked(staff_id=cmd.staff_id, role=r.value, reason=reason),
                   signatures=signatures, occurred_at=ctx.now)
        return {"approved_by": signatures[-1]["staff_id"]}

    return ledger.execute(principal.registrant, "revoke_role", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


POLICY_SETTERS = frozenset({Role.MANAGER, Role.ADMINISTRATOR})


def set_policy(ledger: Ledger, principal: Principal, cmd: SetPolicy, *, idempotency_key: str | None = None) -> dict:
    """Record the whole policy (beyond-use days, late-entry limit, variance threshold, count
    schedule, clinic hours, dosage unit, the count tolerance for opened vials); the latest one is
    in force."""
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
    scopes = tuple(cmd.passkey_required_for or ())
    for scope in scopes:
        if scope not in PASSKEY_SCOPES:
            raise InvalidInput(f"must list only {', '.join(PASSKEY_SCOPES)}", field="passkey_required_for")
    scopes = tuple(sorted(set(scopes)))
    # Issue 20: a volume like any counted mL (to 0.001 mL); 0 means opened vials are counted exactly.
    tolerance = parse_volume(cmd.open_count_tolerance_ml, field="open_count_tolerance_ml", allow_zero=True)
    if tolerance > MAX_OPEN_COUNT_TOLERANCE_ML:
        raise InvalidInput(f"must be at most {MAX_OPEN_COUNT_TOLERANCE_ML} mL per opened vial (more would hide a dose)",
                           field="open_count_tolerance_ml")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=POLICY_SETTERS)
        ctx.append(ev.PolicySet(beyond_use_days=bud, late_entry_limit_hours=late, variance_threshold_percent=variance,
                                count_schedule=cmd.count_schedule, clinic_hours=hours, dosage_unit=cmd.dosage_unit,
                                reason=reason, passkey_required_for=scopes, open_count_tolerance_ml=tolerance),
                   signatures=[sig], occurred_at=ctx.now)
        return {}

    return run(ledger, principal, "set_policy", cmd, build, idempotency_key)
