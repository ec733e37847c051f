"""Esketamine (Spravato) treatment sessions (issue 19): the rules, pure, shared by the service
that records a session and by ``verify --deep``'s rules replay, so the two cannot drift.

Spravato is a nasal-spray device of 28 mg esketamine (csledger's unit model: 140.00 mg/mL x
0.20 mL), single use, supplied in kits of 2 or 3 devices. Its label and its REMS (Risk
Evaluation and Mitigation Strategy) say:

- the dose is flat: 56 mg (2 devices) or 84 mg (3 devices); there is no mg/kg order;
- the patient self-administers each device under the direct observation of a healthcare
  provider, in a certified healthcare setting (never taken home);
- the patient is monitored by a healthcare provider for at least 2 hours after administration,
  until safe to leave.

A device is taken whole: it leaves the book with the session, so an opened or partly used
device is never on hand (the dosage unit of a device product is the device, for counts,
inventories and the 5 % transfer rule, 21 CFR 1307.11).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

#: ``ProductDescription.unit_kind`` of a nasal-spray device product (the packages' unit model).
DEVICE_UNIT_KIND = "nasal_spray_device"

#: The label's doses: 2 or 3 devices of 28 mg.
DOSES_MG: tuple[Decimal, ...] = (Decimal("56.00"), Decimal("84.00"))

#: Spravato REMS: monitored for at least 2 hours after administration.
MIN_OBSERVATION = timedelta(hours=2)

#: A kit of 3 is used over about 10 minutes (5 minutes between devices); ``administered_at`` is
#: the first device, so the observation may start that much later without leaving a gap.
OBSERVATION_START_TOLERANCE = timedelta(minutes=15)

#: Longer than this is not one session (a typo in a date).
MAX_OBSERVATION = timedelta(hours=12)

CENT = Decimal("0.01")


def is_device(product: dict | object) -> bool:
    """Whether a product (a ``ProductDescription`` or its decoded dict) is a nasal-spray device."""
    kind = product.get("unit_kind") if isinstance(product, dict) else getattr(product, "unit_kind", None)
    return kind == DEVICE_UNIT_KIND


def mg_per_device(strength_mg_per_ml: Decimal, container_ml: Decimal) -> Decimal:
    """mg in one device: strength x device volume, rounded half-even to 0.01 mg (exact for
    Spravato: 140.00 x 0.20 = 28.00)."""
    return (Decimal(strength_mg_per_ml) * Decimal(container_ml)).quantize(CENT, ROUND_HALF_EVEN)


def dose_refusal(devices: int, per_device: Decimal, dose_mg: Decimal) -> tuple[str, str] | None:
    """(field, why) when ``devices`` devices of ``per_device`` mg cannot be a dose of
    ``dose_mg``, or None. The dose must be one of the label's (56 or 84 mg) and equal the
    devices used, whole."""
    if dose_mg not in DOSES_MG:
        return ("dose_mg", f"{dose_mg} mg is not an esketamine nasal-spray dose: the label's doses are "
                           f"{' or '.join(f'{d} mg' for d in DOSES_MG)} (2 or 3 devices of 28 mg)")
    if per_device <= 0:
        return ("device_ids", "the product holds no mg per device")
    used = (per_device * devices).quantize(CENT)
    if used != dose_mg:
        return ("device_ids", f"{devices} device(s) of {per_device} mg is {used} mg, not the {dose_mg} mg dose; "
                              "a device is single use and taken whole: name every device used, and only those")
    return None


def observation_refusal(administered_at: datetime, started_at: datetime, ended_at: datetime) -> tuple[str, str] | None:
    """(field, why) when the observation does not meet the REMS, or None: it ends after it
    starts, starts no later than ``OBSERVATION_START_TOLERANCE`` after the (first device's)
    administration, and lasts at least 2 hours, counted both from its start and from the
    administration."""
    if ended_at < started_at:
        return ("observation_ended_at", "must not be before observation_started_at")
    if started_at > administered_at + OBSERVATION_START_TOLERANCE:
        late = int((started_at - administered_at).total_seconds() // 60)
        return ("observation_started_at", f"starts {late} min after administration: the patient is observed from "
                                          "self-administration on (Spravato REMS)")
    observed = ended_at - max(started_at, administered_at)
    if observed < MIN_OBSERVATION:
        minutes = int(observed.total_seconds() // 60)
        return ("observation_ended_at", f"the patient was monitored {minutes} min after administration; the "
                                        "Spravato REMS requires at least 2 hours, until the patient is safe to leave")
    if ended_at - started_at > MAX_OBSERVATION:
        return ("observation_ended_at", "an observation longer than 12 hours is not one session; check the dates")
    return None
