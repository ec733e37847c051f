"""The registrant's policy: the values the rules read, with defaults when none is set.

Pure: the policy in force is the latest ``policy_set`` entry (projected into ``policies``); with
none, ``DEFAULT_POLICY`` applies. Defaults follow clinic practice (docs/compliance.md): USP <797> discards an opened
multiple-dose vial 28 days after first puncture; an entry typed more than 24 h after its event is
a late entry (21 CFR 1304.21(a)); a dosage unit is a container for the 5% transfer rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

COUNT_SCHEDULES = ("daily_opening", "daily_close", "each_shift", "weekly")
DOSAGE_UNITS = ("container", "ml")
#: Where a registrant may require passkeys instead of password keys (issue 17).
PASSKEY_SCOPES = ("witnessing", "destruction")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Issue 20: how far a count of an opened vial may be from the book, in mL per opened container,
#: before it opens a discrepancy. An opened vial's content is an estimate, not a count: it is read
#: against the vial's graduations or drawn into a syringe and read there, and a vial keeps liquid
#: on its walls and in its stopper's well that a draw does not recover. 0.10 mL is ten of a 1 mL
#: syringe's 0.01 mL graduations, the hold-up a multiple-dose vial commonly keeps (and what its
#: overfill is meant to cover), and 5 mg at 50 mg/mL: small against any dose, large against the
#: reading error. Sealed containers are never estimated: they are always counted exactly.
DEFAULT_OPEN_COUNT_TOLERANCE_ML = Decimal("0.10")
#: A tolerance above 1.00 mL per opened vial would hide a dose (0.50 mg/kg x 100 kg at 50 mg/mL).
MAX_OPEN_COUNT_TOLERANCE_ML = Decimal("1.00")


@dataclass(frozen=True)
class Policy:
    beyond_use_days: int = 28
    late_entry_limit_hours: int = 24
    variance_threshold_percent: Decimal = Decimal("1.00")
    count_schedule: str = "daily_opening"
    clinic_hours: dict[str, tuple[str, str]] = field(default_factory=dict)
    dosage_unit: str = "container"
    passkey_required_for: tuple[str, ...] = ()
    #: Issue 20: mL per opened container a count may differ from the book without a discrepancy
    #: (0: every difference opens one).
    open_count_tolerance_ml: Decimal = DEFAULT_OPEN_COUNT_TOLERANCE_ML
    #: Seq of the ``policy_set`` entry, None for the defaults.
    set_seq: int | None = None


DEFAULT_POLICY = Policy()


def from_row(row: dict[str, Any] | None) -> Policy:
    """The policy of a ``policies`` projection row (None: the defaults)."""
    if row is None:
        return DEFAULT_POLICY
    hours = {k: (v[0], v[1]) for k, v in json.loads(row["clinic_hours"]).items()}
    return Policy(
        beyond_use_days=row["beyond_use_days"], late_entry_limit_hours=row["late_entry_limit_hours"],
        variance_threshold_percent=row["variance_threshold_percent"], count_schedule=row["count_schedule"],
        clinic_hours=hours, dosage_unit=row["dosage_unit"], set_seq=row["set_seq"],
        passkey_required_for=tuple(json.loads(row.get("passkey_required_for") or "[]")),
        open_count_tolerance_ml=open_count_tolerance(row),
    )


def open_count_tolerance(policy_set: dict[str, Any] | None) -> Decimal:
    """The opened-container tolerance of a ``policy_set`` entry or ``policies`` row (issue 20):
    one recorded before the tolerance existed (or none at all) has the default."""
    value = (policy_set or {}).get("open_count_tolerance_ml")
    return DEFAULT_OPEN_COUNT_TOLERANCE_ML if value is None else Decimal(value)


def as_dict(p: Policy) -> dict[str, Any]:
    """JSON-ready view (decimals as text) for answers and pages."""
    return {
        "beyond_use_days": p.beyond_use_days, "late_entry_limit_hours": p.late_entry_limit_hours,
        "variance_threshold_percent": format(p.variance_threshold_percent, "f"),
        "count_schedule": p.count_schedule, "clinic_hours": {k: list(v) for k, v in p.clinic_hours.items()},
        "dosage_unit": p.dosage_unit, "passkey_required_for": list(p.passkey_required_for),
        "open_count_tolerance_ml": format(p.open_count_tolerance_ml, "f"),
        "set_seq": p.set_seq, "is_default": p.set_seq is None,
    }
