"""Use cases: one function per command. Each takes the ledger, the authenticated principal,
the command and an optional idempotency key; validates every field (naming the bad one);
appends its entries through ``Ledger.execute`` in one transaction; returns the response.

Nothing here commits by hand, opens a transaction of its own, or trusts a typed name.
"""

from __future__ import annotations

import re
import secrets
import zoneinfo
from dataclasses import asdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain import gs1
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    EnrollStaff,
    GrantRole,
    ReceiveStock,
    RegisterRegistrant,
    RevokeRole,
    TakeInventory,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.identifiers import parse_dea_number, parse_ndc
from ledger.domain.principal import AuthMethod, Meaning, Principal, Role
from ledger.domain.quantities import parse_amount, parse_count
from ledger.integrity.canonical import format_time
from ledger.storage.store import CommandContext, Ledger, has_entry_of_kind

#: Entries typed longer than this after their event must say why (21 CFR 1304.21(a): the date
#: recorded is the date of the event; a late entry is allowed but explained).
LATE_ENTRY_AFTER = timedelta(hours=24)
#: Clock skew tolerated between a tablet and the server before an event counts as "in the future".
FUTURE_TOLERANCE = timedelta(minutes=5)

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP".split()
)
STAFF_ADMIN = frozenset({Role.ADMINISTRATOR, Role.MANAGER})
REFERENCE_DATA = frozenset({Role.ADMINISTRATOR, Role.MANAGER, Role.PHARMACIST})
RECEIVERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER})
INVENTORY_TAKERS = frozenset({Role.PHARMACIST, Role.MANAGER, Role.NURSE})
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


# --- field validation ---------------------------------------------------------------------------


def text(value: Any, *, field: str, max_len: int = 200, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput("must be text", field=field)
    if len(value) > max_len * 4:
        raise InvalidInput(f"must be at most {max_len} characters", field=field)
    value = " ".join(value.split())
    if not value and not allow_empty:
        raise InvalidInput("must not be empty", field=field)
    if len(value) > max_len:
        raise InvalidInput(f"must be at most {max_len} characters", field=field)
    if not value.isprintable():
        raise InvalidInput("must not contain control characters", field=field)
    return value


def address(a: AddressInput, *, field: str) -> ev.Address:
    state = text(a.state, field=f"{field}.state", max_len=2).upper()
    if state not in US_STATES:
        raise InvalidInput(f"{state!r} is not a US state or territory code", field=f"{field}.state")
    postal = text(a.postal_code, field=f"{field}.postal_code", max_len=10)
    if not re.fullmatch(r"\d{5}(-\d{4})?", postal):
        raise InvalidInput("must be a ZIP code: 5 digits or ZIP+4", field=f"{field}.postal_code")
    return ev.Address(
        street=text(a.street, field=f"{field}.street"),
        city=text(a.city, field=f"{field}.city", max_len=100),
        state=state,
        postal_code=postal,
    )


def expiry_date(value: str, *, field: str) -> date:
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("must be a date YYYY-MM-DD", field=field) from None


def event_time(ctx: CommandContext, occurred_at: Any, late_reason: str | None, *, field: str = "occurred_at") -> tuple[datetime, str | None]:
    """The time the event happened: aware, not in the future, and explained when late."""
    if not isinstance(occurred_at, datetime):
        raise InvalidInput("must be a date and time", field=field)
    if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        raise InvalidInput("must carry a time zone (e.g. 2026-11-25T14:30:00-05:00)", field=field)
    if occurred_at.year < 2000:
        raise InvalidInput("is before the year 2000", field=field)
    if occurred_at > ctx.now + FUTURE_TOLERANCE:
        raise InvalidInput("is in the future; record events when they have happened", field=field)
    reason = text(late_reason, field="late_reason", max_len=500) if late_reason is not None else None
    # issue 3: the registrant's policy may set a shorter late-entry limit than the default
    policy = ctx.view.get("policies", (ctx.registrant,))
    limit = timedelta(hours=policy["late_entry_limit_hours"]) if policy else LATE_ENTRY_AFTER
    if ctx.now - occurred_at > limit and reason is None:
        raise InvalidInput(
            f"this entry is recorded more than {limit.total_seconds() / 3600:.0f} h after the event; "
            "a late entry must give its reason",
            field="late_reason",
        )
    return occurred_at, reason


def role(value: str, *, field: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"{value[:40]!r} is not a role; one of {', '.join(r.value for r in Role)}", field=field) from None


def registrant_tz(ctx: CommandContext) -> zoneinfo.ZoneInfo:
    """The registrant's time zone: its calendar days are the clinic's (expiry, counts, years)."""
    return zoneinfo.ZoneInfo(ctx.view.get("registrants", (ctx.registrant,))["time_zone"])


def product_copy(ctx: CommandContext, ndc_text: str, *, field: str) -> ev.ProductDescription:
    """The product as added to this registrant, copied so the entry reads alone."""
    ndc = parse_ndc(ndc_text, field=field)
    row = ctx.view.get("products", (ctx.registrant, ndc.key))
    if row is None:
        raise NotFound(f"no product with NDC {ndc_text} at {ctx.registrant}; add the product first", field=field)
    return ev.ProductDescription(
        ndc=row["ndc"], ndc_key=row["ndc_key"], name=row["name"], drug_code=row["drug_code"],
        schedule=row["schedule"], form=row["form"], strength_mg_per_ml=row["strength_mg_per_ml"],
        container_ml=row["container_ml"],
    )


def _request(cmd: Any) -> dict[str, Any]:
    """The command as JSON data for the idempotency hash (times as given, even if invalid)."""

    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, float):  # refused by validation; only hashed here, so keep it exact
            return f"float:{v!r}"
        if v is None or isinstance(v, bool | int | str):
            return v
        return f"{type(v).__name__}:{v!r}"[:1000]

    return {"type": type(cmd).__name__, **plain(asdict(cmd))}


# --- reference data ------------------------------------------------------------------------------


def register_registrant(ledger: Ledger, cmd: RegisterRegistrant, *, idempotency_key: str | None = None) -> dict:
    """Start a registrant's log: seq 0 registers the location, then its first administrator is
    enrolled and granted the role. Only the console (``csledger init``) and the demo call this;
    the operator's signature is marked ``console_bootstrap``."""
    dea = parse_dea_number(cmd.dea_number)
    name = text(cmd.name, field="name")
    addr = address(cmd.address, field="address")
    tz = text(cmd.time_zone, field="time_zone", max_len=64)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{tz!r} is not an IANA time zone (e.g. America/New_York)", field="time_zone") from None
    admin_name = text(cmd.admin_printed_name, field="admin_printed_name", max_len=100)
    admin_user = _username(cmd.admin_username, field="admin_username")

    def build(ctx: CommandContext) -> dict:
        admin_id = f"S{ctx.next_seq + 1}"
        bootstrap = Principal(dea, admin_id, admin_name, AuthMethod.CONSOLE_BOOTSTRAP)
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

    return ledger.execute(dea, "register_registrant", _request(cmd), build, principal_id=None,
                          idempotency_key=idempotency_key, creates_registrant=True)


def _username(value: str, *, field: str) -> str:
    u = text(value, field=field, max_len=64).lower()
    if not _USERNAME.fullmatch(u):
        raise InvalidInput("must be 2-64 characters: letters, digits, '.', '_' or '-'", field=field)
    return u


def add_product(ledger: Ledger, principal: Principal, cmd: AddProduct, *, idempotency_key: str | None = None) -> dict:
    ndc = parse_ndc(cmd.ndc)
    name = text(cmd.name, field="name")
    drug_code = text(cmd.drug_code, field="drug_code", max_len=4)
    if not re.fullmatch(r"\d{4}", drug_code):
        raise InvalidInput("must be the 4-digit DEA controlled-substance code (7285 for ketamine)", field="drug_code")
    schedule = text(cmd.schedule, field="schedule", max_len=4).upper()
    if schedule not in {"II", "IIN", "III", "IIIN", "IV", "V"}:
        raise InvalidInput("must be a DEA schedule: II, IIN, III, IIIN, IV or V", field="schedule")
    form = text(cmd.form, field="form", max_len=64).lower()
    strength = parse_amount(cmd.strength_mg_per_ml, field="strength_mg_per_ml")
    container = parse_amount(cmd.container_ml, field="container_ml")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REFERENCE_DATA)
        if ctx.view.get("products", (ctx.registrant, ndc.key)) is not None:
            raise Conflict(f"a product with NDC {ndc.printed} (key {ndc.key}) is already added", field="ndc")
        ctx.append(ev.ProductAdded(product=ev.ProductDescription(
            ndc=ndc.printed, ndc_key=ndc.key, name=name, drug_code=drug_code, schedule=schedule,
            form=form, strength_mg_per_ml=strength, container_ml=container,
        )), signatures=[sig], occurred_at=ctx.now)
        return {"ndc_key": ndc.key}

    return ledger.execute(principal.registrant, "add_product", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def add_supplier(ledger: Ledger, principal: Principal, cmd: AddSupplier, *, idempotency_key: str | None = None) -> dict:
    name = text(cmd.name, field="name")
    addr = address(cmd.address, field="address")
    dea = parse_dea_number(cmd.dea_number)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REFERENCE_DATA)
        supplier_id = f"SUP{ctx.next_seq}"
        ctx.append(ev.SupplierAdded(supplier_id=supplier_id, name=name, address=addr, dea_number=dea),
                   signatures=[sig], occurred_at=ctx.now)
        return {"supplier_id": supplier_id}

    return ledger.execute(principal.registrant, "add_supplier", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def enroll_staff(ledger: Ledger, principal: Principal, cmd: EnrollStaff, *, idempotency_key: str | None = None) -> dict:
    printed = text(cmd.printed_name, field="printed_name", max_len=100)
    username = _username(cmd.username, field="username")
    roles = [role(r, field="roles") for r in cmd.roles]

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STAFF_ADMIN)
        if any(s["username"] == username for s in ctx.view.select("staff", registrant=ctx.registrant)):
            raise Conflict(f"username {username!r} is taken at {ctx.registrant}", field="username")
        staff_id = f"S{ctx.next_seq}"
        ctx.append(ev.StaffEnrolled(staff_id=staff_id, printed_name=printed, username=username),
                   signatures=[sig], occurred_at=ctx.now)
        for r in dict.fromkeys(roles):
            _check_can_grant(ctx, principal, r)
            ctx.append(ev.RoleGranted(staff_id=staff_id, role=r.value), signatures=[sig], occurred_at=ctx.now)
        return {"staff_id": staff_id}

    return ledger.execute(principal.registrant, "enroll_staff", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _check_can_grant(ctx: CommandContext, principal: Principal, r: Role) -> None:
    if r == Role.ADMINISTRATOR and ctx.view.get("staff_roles", (ctx.registrant, principal.staff_id, Role.ADMINISTRATOR.value)) is None:
        raise Forbidden("only an administrator may grant or revoke the administrator role", field="role")


def grant_role(ledger: Ledger, principal: Principal, cmd: GrantRole, *, idempotency_key: str | None = None) -> dict:
    r = role(cmd.role)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STAFF_ADMIN)
        if ctx.view.get("staff", (ctx.registrant, cmd.staff_id)) is None:
            raise NotFound(f"no staff member {cmd.staff_id!r} at {ctx.registrant}", field="staff_id")
        _check_can_grant(ctx, principal, r)
        if ctx.view.get("staff_roles", (ctx.registrant, cmd.staff_id, r.value)) is not None:
            raise Conflict(f"{cmd.staff_id} already holds the role {r.value}", field="role")
        ctx.append(ev.RoleGranted(staff_id=cmd.staff_id, role=r.value), signatures=[sig], occurred_at=ctx.now)
        return {}

    return ledger.execute(principal.registrant, "grant_role", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def revoke_role(ledger: Ledger, principal: Principal, cmd: RevokeRole, *, idempotency_key: str | None = None) -> dict:
    r = role(cmd.role)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STAFF_ADMIN)
        if ctx.view.get("staff_roles", (ctx.registrant, cmd.staff_id, r.value)) is None:
            raise NotFound(f"{cmd.staff_id!r} does not hold the role {r.value}", field="role")
        _check_can_grant(ctx, principal, r)
        if r == Role.ADMINISTRATOR and len(
            [x for x in ctx.view.select("staff_roles", registrant=ctx.registrant, role=r.value)]
        ) == 1:
            raise Conflict("this is the registrant's last administrator; grant the role to someone else first", field="role")
        ctx.append(ev.RoleRevoked(staff_id=cmd.staff_id, role=r.value, reason=reason),
                   signatures=[sig], occurred_at=ctx.now)
        return {}

    return ledger.execute(principal.registrant, "revoke_role", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


# --- stock ---------------------------------------------------------------------------------------


def take_inventory(ledger: Ledger, principal: Principal, cmd: TakeInventory, *, idempotency_key: str | None = None,
                   witness: Principal | None = None) -> dict:
    """An initial (possibly empty) or biennial inventory; every container gets an identity.
    ``witness`` (issue 3), a different authenticated person, signs it as witnessed."""
    if cmd.inventory_type not in ("initial", "biennial"):
        raise InvalidInput("must be 'initial' or 'biennial'", field="inventory_type")
    if cmd.taken_at not in ("opening_of_business", "close_of_business"):
        raise InvalidInput("must be 'opening_of_business' or 'close_of_business'", field="taken_at")

    def build(ctx: CommandContext) -> dict:
        sigs = [ctx.signature(principal, Meaning.PERFORMED, roles=INVENTORY_TAKERS)]
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        if witness is not None:
            from ledger.services.clinical import _sign_witness

            sigs.append(_sign_witness(ctx, principal, witness))
        prior = [r for r in ctx.view.select("vials", registrant=ctx.registrant)]
        if cmd.inventory_type == "initial" and (prior or _has_initial_inventory(ctx)):
            raise Conflict("this registrant already has stock or an initial inventory; take a biennial inventory", field="inventory_type")
        if cmd.inventory_type == "biennial":
            items = _biennial_items(ctx, cmd)
            ctx.append(ev.InventoryTaken(inventory_type="biennial", taken_at=cmd.taken_at, items=items, late_reason=late,
                                         documents=_inventory_documents(ctx, cmd)),
                       signatures=sigs, occurred_at=occurred)
            return {"vial_ids": [i.vial_id for i in items]}
        items: list[ev.InventoryItem] = []
        n = 0
        for i, item in enumerate(cmd.items):
            f = f"items[{i}]"
            product = product_copy(ctx, item.ndc, field=f"{f}.ndc")
            lot = text(item.lot, field=f"{f}.lot", max_len=64)
            expiry = expiry_date(item.expiry, field=f"{f}.expiry")
            if item.sealed:
                if item.ml is not None:
                    raise InvalidInput("a sealed container is counted exactly; give no mL estimate", field=f"{f}.ml")
                count = parse_count(item.containers, field=f"{f}.containers", allow_zero=False)
                for _ in range(count):
                    n += 1
                    items.append(ev.InventoryItem(
                        vial_id=f"V{ctx.next_seq}-{n}", product=product, lot=lot, expiry=expiry,
                        sealed=True, ml=product.container_ml, estimated=False))
            else:
                if item.containers != 1:
                    raise InvalidInput("give one line per opened vial", field=f"{f}.containers")
                if item.ml is None:
                    raise InvalidInput("an opened vial needs its estimated mL left", field=f"{f}.ml")
                ml = parse_amount(item.ml, field=f"{f}.ml")
                if ml > product.container_ml:
                    raise InvalidInput(f"{ml} mL is more than the {product.container_ml} mL container holds", field=f"{f}.ml")
                n += 1
                items.append(ev.InventoryItem(
                    vial_id=f"V{ctx.next_seq}-{n}", product=product, lot=lot, expiry=expiry,
                    sealed=False, ml=ml, estimated=True))
        ctx.append(ev.InventoryTaken(inventory_type=cmd.inventory_type, taken_at=cmd.taken_at,
                                     items=tuple(items), late_reason=late, documents=_inventory_documents(ctx, cmd)),
                   signatures=sigs, occurred_at=occurred)
        return {"vial_ids": [i.vial_id for i in items]}

    request = _request(cmd) if witness is None else {**_request(cmd), "witness": witness.staff_id}
    return ledger.execute(principal.registrant, "take_inventory", request, build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _has_initial_inventory(ctx: CommandContext) -> bool:
    return has_entry_of_kind(ctx.conn, "inventory_taken", ctx.registrant)


def receive_stock(ledger: Ledger, principal: Principal, cmd: ReceiveStock, *, idempotency_key: str | None = None) -> dict:
    """A receipt on an invoice (Schedule III moves on invoices, not Form 222). Each container
    gets its own identity; the supplier and product are copied into the entry."""
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)
    notes = text(cmd.notes, field="notes", max_len=1000, allow_empty=True)
    if not cmd.lines:
        raise InvalidInput("a receipt needs at least one line", field="lines")
    if len(cmd.lines) > 200:
        raise InvalidInput("at most 200 lines per receipt", field="lines")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.RECEIVED, roles=RECEIVERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        sup = ctx.view.get("suppliers", (ctx.registrant, cmd.supplier_id))
        if sup is None:
            raise NotFound(f"no supplier {cmd.supplier_id!r} at {ctx.registrant}; add the supplier first", field="supplier_id")
        if ctx.view.get("invoices", (ctx.registrant, cmd.supplier_id, invoice)) is not None:
            raise Conflict(f"invoice {invoice} from {sup['name']} is already received", field="invoice_number")
        lines: list[ev.ReceivedLine] = []
        n = 0
        seen_ids: set[str] = set()
        # A lot's expiry is a calendar date at the clinic: compare it with the receipt's local
        # day, not the date in whatever offset the client sent (an evening receipt sent in UTC
        # fell on the next day and its lot, expiring that day, was refused as expired).
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        for i, line in enumerate(cmd.lines):
            f = f"lines[{i}]"
            product = product_copy(ctx, line.ndc, field=f"{f}.ndc")
            containers = parse_count(line.containers, field=f"{f}.containers", allow_zero=False)
            if containers > 1000:
                raise InvalidInput("at most 1000 containers per line", field=f"{f}.containers")
            expiry = expiry_date(line.expiry, field=f"{f}.expiry")
            if expiry < local_day:
                raise InvalidInput(f"lot expired on {expiry}; expired stock cannot be received into use", field=f"{f}.expiry")
            lot = text(line.lot, field=f"{f}.lot", max_len=64)
            # issue 3: DSCSA product identifiers; a serialized vial is identified by GTIN + serial.
            gtin, serials = _product_identifiers(ctx, line, product, lot, expiry, containers, field=f)
            invoiced = None
            if getattr(line, "invoiced_containers", None) is not None:
                invoiced = parse_count(line.invoiced_containers, field=f"{f}.invoiced_containers")
            ids = []
            for k in range(containers):
                if serials:
                    vid = gs1.vial_id(gtin, serials[k])
                    if vid in seen_ids or ctx.view.get("vials", (ctx.registrant, vid)) is not None:
                        raise Conflict(f"a vial with GTIN {gtin} and serial {serials[k]} is already on record "
                                       "(suspect product: quarantine and verify it)", field=f"{f}.serials[{k}]")
                    seen_ids.add(vid)
                    ids.append(vid)
                else:
                    n += 1
                    ids.append(f"V{ctx.next_seq}-{n}")
            lines.append(ev.ReceivedLine(product=product, containers=containers, lot=lot,
                                         expiry=expiry, vial_ids=tuple(ids), gtin=gtin, serials=serials,
                                         invoiced_containers=invoiced,
                                         quarantined=bool(getattr(line, "quarantine", False))))
        supplier = ev.SupplierCopy(
            supplier_id=sup["supplier_id"], name=sup["name"],
            address=ev.Address(sup["street"], sup["city"], sup["state"], sup["postal_code"]),
            dea_number=sup["dea_number"],
        )
        dscsa = (text(cmd.dscsa_reference, field="dscsa_reference", max_len=200)
                 if getattr(cmd, "dscsa_reference", None) is not None else None)
        from ledger.services.clinical import (
            _documents,  # issue 3: documents are checked where they are stored
        )

        docs = _documents(ctx, getattr(cmd, "documents", ()))
        ctx.append(ev.StockReceived(invoice_number=invoice, supplier=supplier, lines=tuple(lines),
                                    late_reason=late, notes=notes, dscsa_reference=dscsa, documents=docs),
                   signatures=[sig], occurred_at=occurred)
        return {"vial_ids": [v for ln in lines for v in ln.vial_ids],
                "invoice_mismatches": [i for i, ln in enumerate(lines)
                                       if ln.invoiced_containers is not None and ln.invoiced_containers != ln.containers],
                "total_ml": str(sum((ln.product.container_ml * ln.containers for ln in lines), Decimal("0.00")))}

    return ledger.execute(principal.registrant, "receive_stock", _request(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _product_identifiers(ctx: CommandContext, line: Any, product: ev.ProductDescription, lot: str, expiry: date,
                         containers: int, *, field: str) -> tuple[str | None, tuple[str, ...]]:
    """(GTIN, serials) of a receipt line from raw GS1 scans (parsed by ``biip``) or from an
    already-parsed GTIN and serials; each must match the line's product, lot and expiry."""
    scans = tuple(getattr(line, "scans", ()) or ())
    gtin = getattr(line, "gtin", None)
    serials = tuple(getattr(line, "serials", ()) or ())
    if scans:
        if gtin is not None or serials:
            raise InvalidInput("give raw scans or a parsed GTIN with serials, not both", field=f"{field}.scans")
        gtins = set()
        parsed_serials = []
        for k, raw_scan in enumerate(scans):
            pid = gs1.parse_scan(raw_scan, field=f"{field}.scans[{k}]")
            if pid.serial is None:
                raise InvalidInput("the scan carries no serial (21)", field=f"{field}.scans[{k}]")
            if pid.lot is not None and pid.lot != lot:
                raise InvalidInput(f"the carton's lot {pid.lot} is not the line's lot {lot}", field=f"{field}.scans[{k}]")
            if pid.expiry is not None and pid.expiry != expiry:
                raise InvalidInput(f"the carton's expiry {pid.expiry} is not the line's {expiry}", field=f"{field}.scans[{k}]")
            gtins.add(pid.gtin)
            parsed_serials.append(pid.serial)
        if len(gtins) != 1:
            raise InvalidInput("one line holds cartons of one GTIN", field=f"{field}.scans")
        gtin, serials = gtins.pop(), tuple(parsed_serials)
    if gtin is None and not serials:
        return None, ()
    if gtin is None or not isinstance(gtin, str) or len(gtin.zfill(14)) != 14 or not gtin.isdigit():
        raise InvalidInput("must be a GTIN of up to 14 digits", field=f"{field}.gtin")
    gtin = gtin.zfill(14)
    if gs1.gtin_check_digit(gtin[:13]) != int(gtin[13]):
        raise InvalidInput(f"GTIN {gtin} does not check", field=f"{field}.gtin")
    if product.ndc_key not in gs1.ndc_keys_of_gtin(gtin):
        raise InvalidInput(f"GTIN {gtin} is not the GTIN of NDC {product.ndc}", field=f"{field}.gtin")
    for k, s in enumerate(serials):
        gs1.check_serial(s, field=f"{field}.serials[{k}]")
    if len(set(serials)) != len(serials):
        raise InvalidInput("a serial is scanned twice", field=f"{field}.serials")
    if len(serials) != containers:
        raise InvalidInput(f"{containers} containers need {containers} scanned serials, not {len(serials)}",
                           field=f"{field}.containers")
    return gtin, serials


def _biennial_items(ctx: CommandContext, cmd: TakeInventory) -> tuple[ev.InventoryItem, ...]:
    """A biennial inventory (issue 3) counts the vials on the book, each named: sealed ones
    exactly, opened ones as an estimate in mL. It records what was on hand; it moves nothing."""
    from ledger.domain.projections import ON_HAND

    items = []
    seen = set()
    for i, item in enumerate(cmd.items):
        f = f"items[{i}]"
        if not isinstance(item.vial_id, str) or not item.vial_id:
            raise InvalidInput("a biennial inventory names each vial on hand", field=f"{f}.vial_id")
        if item.vial_id in seen:
            raise InvalidInput(f"vial {item.vial_id} is listed twice", field=f"{f}.vial_id")
        seen.add(item.vial_id)
        v = ctx.view.get("vials", (ctx.registrant, item.vial_id))
        if v is None or v["state"] not in ON_HAND:
            raise NotFound(f"vial {item.vial_id} is not on hand at {ctx.registrant}", field=f"{f}.vial_id")
        product = product_copy(ctx, item.ndc, field=f"{f}.ndc")
        if product.ndc_key != v["ndc_key"]:
            raise InvalidInput(f"vial {item.vial_id} is NDC key {v['ndc_key']}, not {product.ndc}", field=f"{f}.ndc")
        if item.sealed:
            if item.ml is not None:
                raise InvalidInput("a sealed container is counted exactly; give no mL estimate", field=f"{f}.ml")
            ml = product.container_ml
        else:
            if item.ml is None:
                raise InvalidInput("an opened vial needs its estimated mL left", field=f"{f}.ml")
            ml = parse_amount(item.ml, field=f"{f}.ml", allow_zero=True)
            if ml > product.container_ml:
                raise InvalidInput(f"{ml} mL is more than the {product.container_ml} mL container holds", field=f"{f}.ml")
        items.append(ev.InventoryItem(vial_id=item.vial_id, product=product, lot=v["lot"],
                                      expiry=date.fromisoformat(v["expiry"]), sealed=item.sealed, ml=ml,
                                      estimated=not item.sealed))
    return tuple(items)


def _inventory_documents(ctx: CommandContext, cmd: TakeInventory) -> tuple[str, ...]:
    """SHA-256 of stored documents (the signed printed inventory), checked to exist (issue 3)."""
    from ledger.services.clinical import _documents

    return _documents(ctx, getattr(cmd, "documents", ()))
