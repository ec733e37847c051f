"""Alert rules: few, specific, explained by the entries and numbers that raised them.

Pure functions over decoded entries (the dicts of the canonical bytes) and plain records; no
SQLAlchemy. ``ledger.services.alerts`` runs them: the cheap per-entry rules inside the transaction of
the entry that triggers them, the weeks-long statistics in ``csledger alerts scan`` outside any
registrant's lock.

Every rule returns ``Candidate`` objects: severity, rule name and parameters, evidence (entry
seqs and figures as exact decimal strings) and, for deadlines, named due times. A candidate's
``alert_key`` is unique per finding, so raising is idempotent; ``group`` names the ongoing
condition (a clinician's waste trend, a witness pair) so a statistical rule raises nothing new
while an alert of the same group is still open.

Patient names never reach an alert: evidence is entry seqs, staff ids and figures.

Statistics use ``Decimal`` throughout (EWMA, mean, standard deviation via ``Decimal.sqrt``), so
no binary float enters a figure that is hashed into an ``alert_raised`` entry.

Modules: ``candidates`` (the Candidate, the alert projection, the thresholds, helpers over
entries), ``per_entry``, ``enrolment`` (signatures shared with someone one enrolled alone),
``state``, ``deadlines``, ``statistics``; this package re-exports them.
"""

from __future__ import annotations

from ledger.domain.alerts.candidates import (
    ALERT_ENTRY_KINDS,
    CATEGORIES,
    CLOSERS,
    NON_EVENT_KINDS,
    Q2,
    Q4,
    SEVERITIES,
    AlertPolicy,
    Candidate,
    apply_alert_entry,
    end_of_local_day,
    local_time,
    policy_from_entries,
    signers,
)
from ledger.domain.alerts.deadlines import (
    biennial_inventory,
    business_days_after,
    loss_deadlines,
    loss_deadlines_overdue,
    registration_expiry,
)
from ledger.domain.alerts.enrolment import alone_enrolment, witness_enrolled_by_actor
from ledger.domain.alerts.per_entry import (
    HANDLING_KINDS,
    dose_above_order,
    late_entry,
    loss_reported,
    outside_clinic_hours,
    outside_hours_by_day,
    per_entry_rules,
    performer,
    quarantined,
    suspected_loss,
    witness,
)
from ledger.domain.alerts.state import (
    COUNT_KINDS,
    ON_HAND,
    administrations,
    count_overdue,
    discrepancy_alerts,
    discrepancy_view,
    expired_stock,
    loss_pattern,
    unreconciled,
)
from ledger.domain.alerts.statistics import (
    Activity,
    Waste,
    day_ends,
    last_hour,
    now_utc,
    presence_by_day,
    waste_trend,
    witness_pairs,
)

__all__ = [
    "ALERT_ENTRY_KINDS",
    "Activity",
    "AlertPolicy",
    "CATEGORIES",
    "CLOSERS",
    "Candidate",
    "HANDLING_KINDS",
    "NON_EVENT_KINDS",
    "ON_HAND",
    "Q2",
    "Q4",
    "SEVERITIES",
    "Waste",
    "administrations",
    "alone_enrolment",
    "apply_alert_entry",
    "biennial_inventory",
    "business_days_after",
    "count_overdue",
    "COUNT_KINDS",
    "day_ends",
    "discrepancy_alerts",
    "discrepancy_view",
    "dose_above_order",
    "end_of_local_day",
    "expired_stock",
    "last_hour",
    "late_entry",
    "local_time",
    "loss_deadlines",
    "loss_deadlines_overdue",
    "loss_pattern",
    "loss_reported",
    "now_utc",
    "outside_clinic_hours",
    "outside_hours_by_day",
    "per_entry_rules",
    "performer",
    "policy_from_entries",
    "presence_by_day",
    "quarantined",
    "registration_expiry",
    "signers",
    "suspected_loss",
    "unreconciled",
    "waste_trend",
    "witness",
    "witness_enrolled_by_actor",
    "witness_pairs",
]
