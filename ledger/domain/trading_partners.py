"""Who the clinic may receive controlled substances from (issue 19), pure, shared by the receipt
service and its tests.

- 21 CFR 1301.11 and 1307.11(a): a registrant obtains controlled substances only from a person
  registered with DEA to distribute them, in the schedules concerned; a registration expires
  (21 CFR 1301.13) and must be current on the day of the receipt.
- DSCSA, 21 U.S.C. 360eee-1(b)(3): a dispenser accepts prescription drugs only from authorized
  trading partners (a licensed wholesale distributor, a registered manufacturer or repackager).

A supplier records its registration (schedules, expiry) and its trading-partner status when it
is added, or later in a ``supplier_registration_recorded`` entry (suppliers added before issue 19
have none until then, and receipts from them wait for it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from ledger.domain.errors import InvalidInput
from ledger.domain.prescribers import SCHEDULES, parse_schedules  # noqa: F401  (re-exported)

#: A product's schedule -> the registration schedules that cover distributing it.
COVERING = {"II": {"2"}, "IIN": {"2N"}, "III": {"3", "3N"}, "IIIN": {"3N"}, "IV": {"4"}, "V": {"5"}}


def parse_expiry(value: object, *, field: str) -> date:
    """A registration's expiry day (YYYY-MM-DD)."""
    if not isinstance(value, str):
        raise InvalidInput("must be the registration's expiry day, YYYY-MM-DD", field=field)
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{value[:40]!r} is not a day (YYYY-MM-DD)", field=field) from None


def receipt_refusal(supplier: dict, on: date, product_schedules: Iterable[str]) -> str | None:
    """Why stock of ``product_schedules`` may not be received from ``supplier`` on the clinic's
    local day ``on``, or None. ``supplier`` is its projection row: ``name``,
    ``registration_expires_on`` (ISO text or None), ``schedules`` (comma-joined codes),
    ``authorized_trading_partner`` (bool or None)."""
    name = supplier.get("name", "the supplier")
    expires = supplier.get("registration_expires_on")
    if expires is None or supplier.get("authorized_trading_partner") is None:
        return (f"{name}'s DEA registration is not recorded here: record its expiry and schedules and whether it is "
                f"an authorized trading partner (DSCSA) first (POST /suppliers/{supplier.get('supplier_id')}/registration)")
    if date.fromisoformat(str(expires)) < on:
        return (f"{name}'s DEA registration expired on {expires}: controlled substances are received only from a "
                "currently registered distributor (21 CFR 1301.11); record its renewed registration first")
    if not supplier["authorized_trading_partner"]:
        return (f"{name} is not an authorized trading partner under DSCSA (21 U.S.C. 360eee-1(b)(3)): a dispenser "
                "accepts product only from licensed distributors, manufacturers and repackagers")
    held = {s for s in str(supplier.get("schedules") or "").split(",") if s}
    for schedule in sorted(set(product_schedules)):
        if not COVERING.get(schedule, {schedule}) & held:
            return (f"{name}'s registration covers schedules {', '.join(s for s in SCHEDULES if s in held) or 'none'}, "
                    f"not Schedule {schedule}: it may not distribute this product")
    return None


# --- recipients of transfers and returns (issue 19) ------------------------------------------
# Stock leaves the clinic only to a registrant allowed to receive it:
# - a transfer goes to another practitioner registered to dispense (21 CFR 1307.11(a)(1); the 5 %
#   rule is the transfer service's);
# - a return goes to the supplier (a registered distributor) or to a reverse distributor
#   registered to accept controlled substances for destruction (21 CFR Part 1317, 1317.10);
# in both, a registration current on the day (21 CFR 1301.13) covering the product's schedule
# (21 CFR 1301.13(e): a registration names the schedules its holder may handle).

#: What a refusal is about, so the caller names the field: the expiry or the schedules.
EXPIRED, SCHEDULES_NOT_COVERED = "expired", "schedules"


def recipient_refusal(name: str, dea_number: str, expires_on: date | str, schedules: Iterable[str], on: date,
                      product_schedules: Iterable[str], *, what: str) -> tuple[str, str] | None:
    """Why stock of ``product_schedules`` may not leave to a recipient whose registration
    ``dea_number`` expires on ``expires_on`` and lists ``schedules``, on the clinic's local day
    ``on``: ``(EXPIRED | SCHEDULES_NOT_COVERED, text)``, or None. ``what`` is "transfer" or
    "return" (the rule cited). Shared by the services and ``verify --deep``'s rules replay."""
    expires = expires_on if isinstance(expires_on, date) else date.fromisoformat(str(expires_on))
    rule = ("21 CFR 1307.11: a practitioner transfers only to another currently registered practitioner"
            if what == "transfer" else
            "21 CFR 1301.11, Part 1317: stock is returned only to a currently registered distributor or reverse "
            "distributor")
    if expires < on:
        return EXPIRED, (f"{name}'s DEA registration {dea_number} expired on {expires.isoformat()}, before this {what} "
                         f"({on.isoformat()}) ({rule}); record its renewed registration")
    held = {s for s in schedules if s}
    for schedule in sorted(set(product_schedules)):
        if not COVERING.get(schedule, {schedule}) & held:
            return SCHEDULES_NOT_COVERED, (
                f"{name}'s DEA registration {dea_number} covers schedules "
                f"{', '.join(s for s in SCHEDULES if s in held) or 'none'}, not Schedule {schedule}: it may not "
                f"receive this product ({rule})")
    return None
