"""Who may order a dose: the prescriber rules (issue 19), pure, shared by the service that
records an administration and by ``verify --deep``'s rules replay, so the two cannot drift.

- 21 CFR 1306.03: a controlled substance is ordered only by a practitioner registered with DEA
  (or exempt) and authorised by the state where they practise.
- 21 CFR 1301.13 and DEA's numbering: the first letter of a DEA number is the registrant type;
  practitioners hold A, B, F or G (physicians, dentists, ...), mid-level practitioners M. A
  distributor's or manufacturer's number (``P``, ``R``), a researcher-only or narcotic-treatment
  registration cannot order a dose.
- A registration is per state (21 CFR 1301.12) and lists the schedules it covers: "2", "2N",
  "3", "3N", "4", "5" (N: non-narcotic). Ketamine and esketamine are Schedule III non-narcotic
  (21 CFR 1308.13(c)); a prescriber of them needs schedule 3 or 3N.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from ledger.domain.errors import InvalidInput
from ledger.domain.identifiers import DEA_REGISTRANT_TYPES

#: First letters of practitioner DEA numbers (DEA's registrant types A, B, F, G; M mid-level).
PRACTITIONER_TYPES = frozenset("ABFGM")

#: The schedules a DEA registration lists, in the order entries record them.
SCHEDULES: tuple[str, ...] = ("2", "2N", "3", "3N", "4", "5")

#: What a prescriber of ketamine or esketamine must hold: one of these.
SCHEDULE_III = frozenset({"3", "3N"})

#: A product's schedule (``products.schedule``) -> the registration schedules that cover it.
_COVERING = {"II": {"2"}, "IIN": {"2N"}, "III": SCHEDULE_III, "IIIN": {"3N"}, "IV": {"4"}, "V": {"5"}}


def parse_schedules(value: object, *, field: str) -> tuple[str, ...]:
    """The schedules a DEA registration lists (a prescriber's or a supplier's), as codes in
    ``SCHEDULES`` order, duplicates merged; anything else is refused naming ``field``."""
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise InvalidInput(f"must list the registration's schedules, of {', '.join(SCHEDULES)}", field=field)
    if len(value) > 2 * len(SCHEDULES):
        raise InvalidInput(f"at most {len(SCHEDULES)} schedules", field=field)
    held = set()
    for i, code in enumerate(value):
        if not isinstance(code, str) or code.strip().upper() not in SCHEDULES:
            raise InvalidInput(f"must be one of {', '.join(SCHEDULES)}", field=f"{field}[{i}]")
        held.add(code.strip().upper())
    return tuple(s for s in SCHEDULES if s in held)


def practitioner_refusal(dea_number: str) -> str | None:
    """Why ``dea_number`` (already well formed) cannot be a prescriber's, or None."""
    letter = dea_number[:1]
    if letter in PRACTITIONER_TYPES:
        return None
    what = DEA_REGISTRANT_TYPES.get(letter, "an unknown registrant type")
    return (f"{dea_number} is a {what} registration (type {letter}), not a practitioner's: a prescriber's DEA "
            "number starts with A, B, F or G (practitioner) or M (mid-level practitioner) (21 CFR 1306.03)")


def schedules_refusal(schedules: Iterable[str]) -> str | None:
    """Why a registration with ``schedules`` cannot order ketamine or esketamine, or None."""
    if SCHEDULE_III & set(schedules):
        return None
    return ("must include 3 or 3N: ketamine and esketamine are Schedule III non-narcotic (21 CFR 1308.13(c)); "
            "a registration without Schedule III cannot order them")


def order_refusal(dea_number: str, prescriber: dict | None, on: date, product_schedule: str | None) -> str | None:
    """Why a dose given on the clinic's local day ``on``, of a product of ``product_schedule``,
    may not name ``dea_number`` as its prescriber, or None. ``prescriber`` is the latest
    registration of that number (``name``, ``schedules``, ``expires_on`` as date or ISO text),
    None if it was never registered here."""
    if prescriber is None:
        return (f"{dea_number} is not a registered prescriber here; a manager or administrator registers the "
                "prescriber (DEA registration, schedules, expiry, state licence) first")
    expires = prescriber["expires_on"]
    expires = expires if isinstance(expires, date) else date.fromisoformat(expires)
    if on > expires:
        return (f"{prescriber['name']}'s DEA registration {dea_number} expired on {expires.isoformat()}, before "
                f"this dose ({on.isoformat()}); record the renewed registration first")
    held = set(prescriber["schedules"])
    needed = _COVERING.get(product_schedule or "", SCHEDULE_III)
    if not held & needed:
        return (f"{prescriber['name']}'s DEA registration {dea_number} covers schedules "
                f"{', '.join(s for s in SCHEDULES if s in held) or 'none'}, not "
                f"{' or '.join(s for s in SCHEDULES if s in needed)} (this product is Schedule {product_schedule})")
    return None
