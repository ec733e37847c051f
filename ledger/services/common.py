"""Checks shared by every service: field validation (errors name the field), when an event
happened (late and future entries), the policy in force, witness signatures, vial lookups, and
the one way a command runs (``run``: one transaction through ``Ledger.execute``).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import (
    AddressInput,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.identifiers import parse_ndc
from ledger.domain.policy import Policy, from_row
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.projections import ON_HAND
from ledger.integrity.canonical import decode
from ledger.storage.store import CommandContext, Ledger

#: Who may witness (a waste, a count, a destruction): any licensed or responsible role.
WITNESSES = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.MANAGER, Role.COMPLIANCE_OFFICER})

#: Entries typed longer than this after their event must say why (21 CFR 1304.21(a): the date
#: recorded is the date of the event; a late entry is allowed but explained).
LATE_ENTRY_AFTER = timedelta(hours=24)


#: Clock skew tolerated between a tablet and the server before an event counts as "in the future".
FUTURE_TOLERANCE = timedelta(minutes=5)


US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP".split()
)


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
    return product_from_row(row)


def product_from_row(row: dict) -> ev.ProductDescription:
    """The ``products`` row as the description entries copy, unit model included (issue 19)."""
    return ev.ProductDescription(
        ndc=row["ndc"], ndc_key=row["ndc_key"], name=row["name"], drug_code=row["drug_code"],
        schedule=row["schedule"], form=row["form"], strength_mg_per_ml=row["strength_mg_per_ml"],
        container_ml=row["container_ml"], unit_kind=row.get("unit_kind") or "vial",
        unit_ndc=row.get("unit_ndc"), units_per_package=row.get("units_per_package") or 1,
    )


def request_fields(cmd: Any) -> dict[str, Any]:
    """The command as JSON data for the idempotency hash (times as given, even if invalid).

    One pass over the command's dataclasses: the same data ``dataclasses.asdict`` and a second
    pass gave, without asdict's deep copy of every value (most of this function's cost)."""

    def plain(v: Any) -> Any:
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, datetime):
            return v.isoformat()
        if is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, float):  # refused by validation; only hashed here, so keep it exact
            return f"float:{v!r}"
        return f"{type(v).__name__}:{v!r}"[:1000]

    return {"type": type(cmd).__name__, **plain(cmd)}


ZERO = Decimal("0.00")


def current_policy(ctx: CommandContext) -> Policy:
    """The policy in force for this registrant (defaults when none was set)."""
    return from_row(ctx.view.get("policies", (ctx.registrant,)))


def aware(value: Any, *, field: str) -> datetime:
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
    occurred = aware(occurred_at, field=field)
    if occurred > ctx.now + FUTURE_TOLERANCE:
        raise InvalidInput("is in the future; record events when they have happened", field=field)
    reason = text(late_reason, field="late_reason", max_len=500) if late_reason is not None else None
    limit = timedelta(hours=current_policy(ctx).late_entry_limit_hours)
    if ctx.now - occurred > limit and reason is None:
        raise InvalidInput(f"this entry is recorded more than {limit.total_seconds() / 3600:.0f} h after the event; "
                           "a late entry must give its reason", field="late_reason")
    return occurred, reason


def sign_witness(ctx: CommandContext, actor: Principal, witness: Principal | None, *, field: str = "witness",
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
        raise type(exc)(exc.reason, field=field, type_=exc.type) from None


def vial_for_use(ctx: CommandContext, vial_id: Any, *, field: str, packaged_ok: bool = False) -> dict:
    """A vial (unit) on hand. A unit still in its sealed package (issue 19) is refused unless
    the caller moves whole packages (``packaged_ok``; it then calls ``packages.whole_packages``)."""
    if not isinstance(vial_id, str) or not vial_id or len(vial_id) > 128:
        raise InvalidInput("must be a vial id", field=field)
    v = ctx.view.get("vials", (ctx.registrant, vial_id))
    if v is None:
        raise NotFound(f"no vial {vial_id!r} at {ctx.registrant}", field=field)
    if v["state"] not in ON_HAND:
        raise Conflict(f"vial {vial_id} is {v['state']}; it is not on hand", field=field)
    if v.get("packaged") and not packaged_ok:
        raise Conflict(f"vial {vial_id} is still in package {v['package_id']}: open the package (witnessed, "
                       "recording the units found) before using its units", field=field)
    return v


def product_of_vial(ctx: CommandContext, v: dict) -> ev.ProductDescription:
    return product_from_row(ctx.view.get("products", (ctx.registrant, v["ndc_key"])))


def vial_ids(values: Any, *, field: str = "vial_ids") -> tuple[str, ...]:
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


def registrant_copy(ctx: CommandContext) -> ev.RegistrantCopy:
    r = ctx.view.get("registrants", (ctx.registrant,))
    return ev.RegistrantCopy(dea_number=r["dea_number"], name=r["name"],
                             address=ev.Address(r["street"], r["city"], r["state"], r["postal_code"]))


def entry_at(ctx: CommandContext, seq: Any, *, field: str) -> dict:
    """A recorded entry of this registrant, decoded from its canonical bytes."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidInput("must be an entry's sequence number", field=field)
    row = ctx.view.raw.one(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                           {"r": ctx.registrant, "s": seq})
    if row is None:
        raise NotFound(f"no entry {seq} at {ctx.registrant}", field=field)
    return decode(bytes(row["canonical"]))


def run(ledger: Ledger, principal: Principal, name: str, cmd: Any, build, idempotency_key: str | None,
         request: dict | None = None) -> dict:
    return ledger.execute(principal.registrant, name, request if request is not None else request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)
