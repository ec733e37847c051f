"""Alert use cases: the in-transaction hook, the scan, acknowledge/resolve, listing.

Where each rule runs:
- **In the transaction of the triggering entry** (``attach_alert_rules``): the per-entry rules
  of ``alerts.per_entry_rules`` (late entry, outside clinic hours, ...). They read only the new
  entries and the policy, so they add one short read per command under the registrant's lock;
  ``witness_enrolled_by_actor`` reads, for an entry with two signers or more, their enrolment
  entries (by the seq the staff projection points at).
  The hook runs *before* the checkpoint hook, so the alerts it appends are inside the signed
  tree of the same command.
- **In ``csledger alerts scan``**: everything, including weeks-long statistics. The entries are
  read in a read-only transaction (no lock); only the raising of new alerts is a (short)
  command, which re-checks inside the lock that each alert key is still new.

Every alert is an ``alert_raised`` entry; closing one is an ``alert_acknowledged`` or
``alert_resolved`` entry by a manager or compliance officer who is not a person it is about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger.domain import alerts as rules
from ledger.domain import entries as ev
from ledger.domain import form106  # issue 20
from ledger.domain.alerts import preparations as preparation_alerts  # issue 19
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, LedgerError, NotFound
from ledger.domain.principal import Meaning, Principal
from ledger.domain.quantities import norm
from ledger.integrity import canonical as canon
from ledger.services.common import text
from ledger.services.reference import enrolment_reader
from ledger.storage.store import CommandContext, Ledger, entries_t, raw, utcnow
from ledger.storage.tables import Alert, AlertNotification

alerts_t = Alert.__table__
notifications_t = AlertNotification.__table__
REGISTRATION_RECORDERS = frozenset({"administrator", "manager", "compliance_officer"})


class _NothingNew(LedgerError):
    """Raised inside a build to roll back a command that found nothing to record."""


# --- reading ------------------------------------------------------------------------------------


def load_entries(conn: Connection, registrant: str) -> list[dict[str, Any]]:
    """Every entry of ``registrant``, decoded from its canonical bytes, in seq order (keyset
    pages, so a long log is not one huge result)."""
    out: list[dict[str, Any]] = []
    last = -1
    while True:
        rows = conn.execute(
            sa.select(entries_t.c.seq, entries_t.c.canonical)
            .where(entries_t.c.registrant == registrant, entries_t.c.seq > last)
            .order_by(entries_t.c.seq).limit(2000)).all()
        out.extend(canon.decode(bytes(r.canonical)) for r in rows)
        if len(rows) < 2000:
            return out
        last = rows[-1].seq


def time_zone(conn: Connection, registrant: str) -> str:
    tz = raw(conn).scalar(conn, "SELECT time_zone FROM registrants WHERE dea_number = :r", {"r": registrant})
    if tz is None:
        raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
    return tz


def _alert_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in ("subjects", "parameters", "evidence_seqs", "figures", "deadlines"):
        out[k] = json.loads(out[k])
    return out


def list_alerts(ledger: Ledger, registrant: str, *, status: str | None = None, rule: str | None = None,
                severity: str | None = None, subject: str | None = None,
                raised_from: str | None = None, raised_to: str | None = None) -> list[dict[str, Any]]:
    """Alerts of a registrant, newest first. ``status`` is ``open`` (open or acknowledged: not
    yet resolved), ``acknowledged``, ``resolved`` or None for all; times are UTC entry text."""
    q = sa.select(alerts_t).where(alerts_t.c.registrant == registrant)
    if status == "open":
        q = q.where(alerts_t.c.status != "resolved")
    elif status is not None:
        q = q.where(alerts_t.c.status == status)
    if rule is not None:
        q = q.where(alerts_t.c.rule == rule)
    if severity is not None:
        q = q.where(alerts_t.c.severity == severity)
    if raised_from is not None:
        q = q.where(alerts_t.c.raised_at >= raised_from)
    if raised_to is not None:
        q = q.where(alerts_t.c.raised_at < raised_to)
    with ledger.reading() as conn:
        rows = [_alert_row(dict(r)) for r in conn.execute(q.order_by(alerts_t.c.raised_seq.desc())).mappings()]
        if rule in (None, "count_discrepancy"):
            views = _discrepancy_views(conn, registrant)
            if status == "open":
                views = [v for v in views if v["status"] != "resolved"]
            elif status is not None:
                views = [v for v in views if v["status"] == status]
            views = [v for v in views if (severity is None or v["severity"] == severity)
                     and (raised_from is None or v["raised_at"] >= raised_from)
                     and (raised_to is None or v["raised_at"] < raised_to)]
            rows = sorted(rows + views, key=lambda r: r["raised_seq"], reverse=True)
    if subject is not None:
        rows = [r for r in rows if subject in r["subjects"]]
    return rows


def _discrepancy_views(conn: Connection, registrant: str) -> list[dict[str, Any]]:
    """Count discrepancies (clinic operations' projection) as alert rows: a view, never a copy."""
    if not sa.inspect(conn).has_table("discrepancies"):
        return []
    rows = conn.execute(sa.text(
        "SELECT d.*, e.recorded_at AS counted_recorded_at FROM discrepancies d JOIN entries e "
        "ON e.registrant = d.registrant AND e.seq = d.count_seq WHERE d.registrant = :r"), {"r": registrant}).mappings()
    out = []
    for r in rows:
        v = rules.discrepancy_view(registrant, r["discrepancy_id"], r["count_seq"], r["counted_recorded_at"], r["ndc_key"],
                                   norm(Decimal(r["expected_ml"])), norm(Decimal(r["counted_ml"])),
                                   norm(Decimal(r["difference_ml"])),
                                   json.loads(r["counters"]))
        if r["status"] == "resolved":
            v.update(status="resolved", resolved_seq=r["resolved_seq"], resolved_category=r["category"])
            v["evidence_seqs"].append(r["resolved_seq"])
        out.append(v)
    return out


# --- raising ------------------------------------------------------------------------------------


def _is_new(ctx: CommandContext, c: rules.Candidate) -> bool:
    """Not raised before under the same key, and (for ongoing conditions) no alert of the same
    group still unresolved: one open alert per clinician trend or witness pair."""
    if ctx.view.select("alerts", registrant=ctx.registrant, alert_key=c.alert_key):
        return False
    if c.group is not None:
        r = ctx.view.raw
        prefix = c.group + ":"
        open_keys = r.rows(ctx.conn, "SELECT alert_key FROM alerts WHERE registrant = :r AND rule = :rule "
                                     "AND status <> 'resolved'", {"r": ctx.registrant, "rule": c.rule})
        if any(k["alert_key"].startswith(prefix) for k in open_keys):
            return False
    return True


def _append(ctx: CommandContext, candidates: Sequence[rules.Candidate], raised_by: str) -> list[str]:
    ids = []
    seen: set[str] = set()
    for c in candidates:
        if c.alert_key in seen or not _is_new(ctx, c):
            continue
        seen.add(c.alert_key)
        alert_id = f"AL{ctx.next_seq}"
        ctx.append(ev.AlertRaised(
            alert_id=alert_id, alert_key=c.alert_key, rule=c.rule, severity=c.severity, subjects=c.subjects,
            summary=c.summary, parameters=dict(c.parameters), evidence_seqs=tuple(c.evidence_seqs),
            figures=dict(c.figures), deadlines=dict(c.deadlines), raised_by=raised_by,
        ), signatures=[], occurred_at=ctx.now)
        ids.append(alert_id)
    return ids


def clear_count_overdue(ctx: CommandContext, count_seq: int) -> list[str]:
    """Clear the open overdue-count alerts of the registrant raised before count (or inventory)
    ``count_seq``: it shows the stock counted again. Returns the cleared alert ids."""
    rows = ctx.view.raw.rows(ctx.conn, "SELECT alert_id FROM alerts WHERE registrant = :r AND rule = "
                                       "'count_overdue' AND status <> 'resolved' AND raised_seq < :s "
                                       "ORDER BY raised_seq", {"r": ctx.registrant, "s": count_seq})
    for row in rows:
        ctx.append(ev.AlertCleared(alert_id=row["alert_id"], evidence_seq=count_seq,
                                   explanation=f"cleared by the count recorded as entry {count_seq}"),
                   signatures=[], occurred_at=ctx.now)
    return [row["alert_id"] for row in rows]


def clear_loss_alerts(ctx: CommandContext, report_seq: int, evidence_seq: int, *, notice: bool,
                      filing: bool) -> list[str]:
    """Issue 20: clear the open alerts of theft/loss report ``report_seq`` that its follow-up
    ``evidence_seq`` (a ``dea_notice_sent`` or ``form_106_filed``) answers: the overdue-notice
    alert once the notice is recorded, the overdue-Form-106 alert once the filing is, and the
    theft/loss alert itself (both deadlines) once both are. Returns the cleared alert ids."""
    keys = ([f"dea_notice_overdue:{report_seq}"] if notice else []) + \
        ([f"form_106_overdue:{report_seq}"] if filing else []) + \
        ([f"loss_reported:{report_seq}"] if notice and filing else [])
    cleared = []
    for key in keys:
        row = ctx.view.raw.one(ctx.conn, "SELECT alert_id FROM alerts WHERE registrant = :r AND alert_key = :k "
                                         "AND status <> 'resolved'", {"r": ctx.registrant, "k": key})
        if row is None:
            continue
        what = "notice to DEA" if key.startswith("dea_notice") else "Form 106 filing" \
            if key.startswith("form_106") else "notice to DEA and Form 106 filing"
        ctx.append(ev.AlertCleared(alert_id=row["alert_id"], evidence_seq=evidence_seq,
                                   explanation=f"cleared by the {what} of report {report_seq} recorded as entry "
                                               f"{evidence_seq}"),
                   signatures=[], occurred_at=ctx.now)
        cleared.append(row["alert_id"])
    return cleared


def _policy_and_time_zone(ctx: CommandContext, has_policies: bool,
                          fixed: rules.AlertPolicy | None) -> tuple[rules.AlertPolicy, str]:
    """The policy in force and the registrant's time zone, from the command's view (its rows are
    read once per command, and reflect what the command itself changed)."""
    reg = ctx.view.get("registrants", (ctx.registrant,))
    if reg is None:
        raise NotFound(f"no registrant with DEA number {ctx.registrant}", field="registrant")
    if fixed is not None or not has_policies:
        return fixed or rules.AlertPolicy(), reg["time_zone"]
    row = ctx.view.get("policies", (ctx.registrant,))
    if row is None:
        return rules.AlertPolicy(), reg["time_zone"]
    clinic_hours = row["clinic_hours"]
    return rules.policy_from_entries([{"kind": "policy_set", "late_entry_limit_hours": row["late_entry_limit_hours"],
                                       "count_schedule": row["count_schedule"],
                                       "clinic_hours": json.loads(clinic_hours) if isinstance(clinic_hours, str)
                                       else clinic_hours}]), reg["time_zone"]


def alert_hook(policy: rules.AlertPolicy | None = None) -> Callable[[CommandContext], None]:
    """The ``before_commit`` hook: per-entry rules over the command's new entries. ``policy``
    fixes the thresholds (tests); by default the registrant's latest ``policy_set`` is read."""

    schema: dict[str, bool] = {}

    def hook(ctx: CommandContext) -> None:
        new = [a for a in ctx.appended if a.kind not in rules.NON_EVENT_KINDS]
        if not new:
            return  # reference data and alert bookkeeping: nothing to look at, no extra reads
        r = ctx.view.raw
        if "policies" not in schema:  # once per process: is clinic operations' schema there?
            schema["policies"] = sa.inspect(ctx.conn).has_table("policies")
        pol, tz = _policy_and_time_zone(ctx, schema["policies"], policy)
        found: list[rules.Candidate] = []
        enrolment_of = enrolment_reader(ctx)
        for a in new:
            data = ctx.written.get(a.seq)  # the bytes this command hashed, not a re-read
            if data is None:
                data = r.scalar(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                                {"r": ctx.registrant, "s": a.seq})
            entry = canon.decode(bytes(data))
            found.extend(rules.per_entry_rules(entry, pol, tz))
            found.extend(rules.witness_enrolled_by_actor(entry, enrolment_of))
        if found:
            _append(ctx, found, "in_transaction")
        counted = [a.seq for a in new if a.kind in rules.COUNT_KINDS]
        if counted:
            clear_count_overdue(ctx, counted[-1])

    hook.csledger_alerts = True  # type: ignore[attr-defined]
    return hook


def attach_alert_rules(ledger: Ledger, *, policy: rules.AlertPolicy | None = None) -> None:
    """Run the cheap alert rules in every command's transaction. Call it where the ledger is
    opened for production use (``cli._open``, the API app), before or after ``log.attach``:
    the hook is put first so its alert entries are inside the checkpoint of the same command."""
    if any(getattr(h, "csledger_alerts", False) for h in ledger.before_commit):
        return
    ledger.before_commit.insert(0, alert_hook(policy))


def raise_alerts(ledger: Ledger, registrant: str, candidates: Sequence[rules.Candidate], *,
                 raised_by: str = "scan") -> list[str]:
    """Append an ``alert_raised`` entry for each candidate whose key is new; returns their ids
    (empty, with nothing written, when every candidate was already raised)."""
    if not candidates:
        return []

    def build(ctx: CommandContext) -> dict:
        ids = _append(ctx, candidates, raised_by)
        if not ids:
            raise _NothingNew("no new alerts")
        return {"alert_ids": ids}

    try:
        res = ledger.execute(registrant, "raise_alerts", {"keys": [c.alert_key for c in candidates]}, build,
                             principal_id=None)
    except _NothingNew:
        return []
    return res["alert_ids"]


# --- the scan -----------------------------------------------------------------------------------


@dataclass
class ScanResult:
    registrant: str
    candidates: int = 0
    raised: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # overdue-count alerts a later count cleared
    notified: list[tuple[str, str]] = field(default_factory=list)  # (alert_id, channel)
    failures: list[str] = field(default_factory=list)


def _drawn_mg(a: dict[str, Any]) -> Decimal:
    return sum((Decimal(d["ml"]) * Decimal(d["product"]["strength_mg_per_ml"]) for d in a["draws"]), Decimal(0))


def clinical_wastes(entries: Sequence[dict[str, Any]]) -> list[rules.Waste]:
    """The statistics' view of each reconciled administration (drawn = given + wasted): who
    gave it, who witnessed its waste, when, mg drawn and wasted. Unreconciled ones are left
    out (their waste is not known yet; ``unreconciled_administration`` covers them)."""
    out = []
    for a, ws in rules.administrations(entries):
        wasted_ml = sum((Decimal(w["ml"]) for w in ws), Decimal(0))
        if Decimal(a["ml_drawn"]) != Decimal(a["ml_given"]) + wasted_ml:
            continue
        who = rules.performer(a)
        if who is None:
            continue
        wit = next((rules.witness(w) for w in ws if rules.witness(w)), None)
        at = canon.parse_time(ws[-1]["occurred_at"] if ws else a["occurred_at"])
        out.append(rules.Waste(seq=a["seq"], staff_id=who, witness_id=wit, at=at, drawn_mg=_drawn_mg(a),
                               wasted_mg=sum((Decimal(w["mg"]) for w in ws), Decimal(0)),
                               waste_seqs=tuple(w["seq"] for w in ws)))
    return sorted(out + preparation_alerts.preparation_wastes(entries), key=lambda w: w.seq)  # issue 19: bags too


def clinical_draws(entries: Sequence[dict[str, Any]]) -> list[rules.Activity]:
    """Draws (mg drawn per administration, by whom, when) from the clinical entries."""
    out = []
    for a, _ in rules.administrations(entries):
        who = rules.performer(a)
        if who is not None:
            out.append(rules.Activity(a["seq"], who, canon.parse_time(a["occurred_at"]), _drawn_mg(a)))
    return sorted(out + preparation_alerts.preparation_draws(entries), key=lambda a: a.seq)  # issue 19: bags too


def _reported_discrepancies(entries: Sequence[dict[str, Any]]) -> set[str]:
    """Discrepancies whose loss adjustment a ``theft_or_loss_reported`` entry covers."""
    covered = {s for e in entries if e["kind"] == "theft_or_loss_reported" for s in e.get("covers_seqs", ())}
    return {e["discrepancy_id"] for e in entries if e["kind"] == "loss_adjusted" and e["seq"] in covered}


def evaluate(entries: Sequence[dict[str, Any]], now: datetime, tz: str,
             policy: rules.AlertPolicy | None = None, vials: Sequence[dict[str, Any]] = ()) -> list[rules.Candidate]:
    """Every rule over a registrant's whole log, as of ``now`` (pure: what the scan raises
    before de-duplication against the alerts already raised). ``vials``: the vial projection
    rows (stock on hand past its dates)."""
    pol = policy or rules.policy_from_entries(entries)
    out: list[rules.Candidate] = []
    reported = _reported_discrepancies(entries)
    enrolled = {e["staff_id"]: e for e in entries if e["kind"] == "staff_enrolled"}
    followed = form106.follow_ups(entries)  # issue 20: notices sent and Form 106 filed, per report
    for e in entries:
        out.extend(rules.witness_enrolled_by_actor(e, enrolled.get))
        if e["kind"] == "discrepancy_resolved" and e["discrepancy_id"] in reported:
            continue  # its loss is already in a theft/loss report: that report's alert carries the deadlines
        if e["kind"] == "theft_or_loss_reported" and len(followed.get(e["seq"], ())) == 2:
            continue  # issue 20: notice sent and Form 106 filed: its deadlines are met, nothing to raise
        out.extend(rules.per_entry_rules(e, pol, tz))
    out.extend(rules.loss_deadlines_overdue(entries, now, tz))  # issue 20
    for c in (rules.biennial_inventory(entries, now, tz, pol), rules.registration_expiry(entries, now, tz, pol),
              rules.count_overdue(entries, now, tz, pol), rules.loss_pattern(entries, now, pol)):
        if c is not None:
            out.append(c)
    out.extend(rules.outside_hours_by_day(entries, now, pol, tz))
    out.extend(rules.unreconciled(entries, now, pol))
    out.extend(preparation_alerts.unreconciled_preparations(entries, now, pol))  # issue 19
    out.extend(rules.expired_stock(vials, now, tz))
    wastes = clinical_wastes(entries)
    if wastes:
        out.extend(rules.waste_trend(wastes, now, pol, "share"))
        out.extend(rules.waste_trend(wastes, now, pol, "mg"))
        out.extend(rules.witness_pairs(wastes, rules.presence_by_day(entries, tz), tz, pol))
        ends = rules.day_ends(entries, tz)
        out.extend(rules.last_hour([rules.Activity(w.seq, w.staff_id, w.at, w.wasted_mg) for w in wastes],
                                   ends, tz, pol, "waste"))
        out.extend(rules.last_hour(clinical_draws(entries), ends, tz, pol, "draws"))
    return out


def _clear_after_counts(ledger: Ledger, registrant: str) -> list[str]:
    """Clear open overdue-count alerts raised before the registrant's latest count (a count
    recorded while the in-transaction hook was not attached, e.g. by a script)."""
    with ledger.reading() as conn:
        last = conn.execute(sa.text("SELECT max(seq) FROM entries WHERE registrant = :r AND kind IN "
                                    "('stock_counted', 'inventory_taken')"), {"r": registrant}).scalar()
        stale = last is not None and conn.execute(sa.text(
            "SELECT count(*) FROM alerts WHERE registrant = :r AND rule = 'count_overdue' AND status <> 'resolved' "
            "AND raised_seq < :s"), {"r": registrant, "s": last}).scalar()
    if not stale:
        return []

    def build(ctx: CommandContext) -> dict:
        return {"alert_ids": clear_count_overdue(ctx, last)}

    return ledger.execute(registrant, "clear_alerts", {"count_seq": last}, build, principal_id=None)["alert_ids"]


def scan(ledger: Ledger, registrant: str, *, now: datetime | None = None,
         policy: rules.AlertPolicy | None = None, notifier: Any | None = None) -> ScanResult:
    """Run every rule over the registrant's log and raise what is new, then send the deadline
    notifications not yet sent. The rules run outside any lock; only the raising is a command."""
    now = now or utcnow()
    with ledger.reading() as conn:
        entries = load_entries(conn, registrant)
        if not entries:
            raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
        tz = time_zone(conn, registrant)
        known = set(conn.execute(sa.select(alerts_t.c.alert_key).where(alerts_t.c.registrant == registrant)).scalars())
        # Plain SQL, no column types: PostgreSQL's NUMERIC(18, 3) gives "10.000", put back in the
        # entries' form (the 2-or-3 rule, issue 19) before it reaches an alert's figures.
        vials = [{k: norm(v) if isinstance(v, Decimal) else v for k, v in r.items()}
                 for r in conn.execute(sa.text("SELECT * FROM vials WHERE registrant = :r"), {"r": registrant}).mappings()]
    found = [c for c in evaluate(entries, now, tz, policy, vials) if c.alert_key not in known]
    result = ScanResult(registrant, candidates=len(found))
    result.raised = raise_alerts(ledger, registrant, found)
    result.cleared = _clear_after_counts(ledger, registrant)
    if notifier is not None:
        notify_deadlines(ledger, registrant, notifier, result)
    return result


def notify_deadlines(ledger: Ledger, registrant: str, notifier: Any, result: ScanResult | None = None) -> ScanResult:
    """Send each unresolved alert that has deadlines on every configured channel it has not
    gone out on yet; record each success (a failure is retried by the next scan)."""
    result = result or ScanResult(registrant)
    with ledger.reading() as conn:
        alerts = [_alert_row(dict(r)) for r in conn.execute(
            sa.select(alerts_t).where(alerts_t.c.registrant == registrant, alerts_t.c.status != "resolved",
                                      alerts_t.c.deadlines != "{}").order_by(alerts_t.c.raised_seq)).mappings()]
        sent = {(r.alert_id, r.channel) for r in conn.execute(
            sa.select(notifications_t.c.alert_id, notifications_t.c.channel)
            .where(notifications_t.c.registrant == registrant))}
        reg = dict(conn.execute(sa.text("SELECT dea_number, name, time_zone FROM registrants WHERE dea_number = :r"),
                                {"r": registrant}).mappings().one())
    for a in alerts:
        for channel in notifier.channels():
            if (a["alert_id"], channel) in sent:
                continue
            try:
                detail = notifier.send(channel, reg, a)
            except Exception as exc:  # a mail server or webhook down must not stop the scan
                result.failures.append(f"{a['alert_id']} {channel}: {type(exc).__name__}: {exc}")
                continue
            with ledger.engine.begin() as conn:
                conn.execute(notifications_t.insert().values(
                    registrant=registrant, alert_id=a["alert_id"], channel=channel,
                    sent_at=canon.format_time(utcnow()), detail=str(detail)[:500]))
            result.notified.append((a["alert_id"], channel))
    return result


# --- closing --------------------------------------------------------------------------------------


def _close(ledger: Ledger, principal: Principal, alert_id: str, category: str, explanation: str,
           kind: str, idempotency_key: str | None) -> dict:
    if isinstance(alert_id, str) and re.fullmatch(r"D\d+-\d+", alert_id):
        raise Conflict(f"{alert_id} is a count discrepancy: it closes when the discrepancy is resolved (category, "
                       "explanation, by a manager who did not count), not here", field="alert_id")
    if not isinstance(alert_id, str) or not alert_id.startswith("AL") or not alert_id[2:].isdigit():
        raise InvalidInput("an alert id looks like AL123", field="alert_id")
    if category not in rules.CATEGORIES:
        raise InvalidInput(f"one of {', '.join(rules.CATEGORIES)}", field="category")
    expl = text(explanation, field="explanation", max_len=2000)
    if len(expl) < 10:
        raise InvalidInput("say what was found and done (at least 10 characters)", field="explanation")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=rules.CLOSERS)
        row = ctx.view.get("alerts", (ctx.registrant, alert_id))
        if row is None:
            raise NotFound(f"no alert {alert_id} at {ctx.registrant}", field="alert_id")
        if principal.staff_id in json.loads(row["subjects"]):
            raise Forbidden(f"alert {alert_id} is about {principal.staff_id}; another manager or compliance "
                            "officer must close it", field="principal")
        if row["status"] == "resolved":
            raise Conflict(f"alert {alert_id} is already resolved (entry {row['resolved_seq']})", field="alert_id")
        if kind == "alert_acknowledged":
            if row["status"] == "acknowledged":
                raise Conflict(f"alert {alert_id} is already acknowledged (entry {row['acknowledged_seq']})",
                               field="alert_id")
            event = ev.AlertAcknowledged(alert_id=alert_id, category=category, explanation=expl)
        else:
            event = ev.AlertResolved(alert_id=alert_id, category=category, explanation=expl)
        ctx.append(event, signatures=[sig], occurred_at=ctx.now)
        return {"alert_id": alert_id}

    return ledger.execute(principal.registrant, kind, {"alert_id": alert_id, "category": category,
                                                       "explanation": expl}, build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def acknowledge_alert(ledger: Ledger, principal: Principal, alert_id: str, category: str, explanation: str, *,
                      idempotency_key: str | None = None) -> dict:
    """Record that a manager or compliance officer (not a person the alert is about) has taken
    the alert up; it stays open until resolved."""
    return _close(ledger, principal, alert_id, category, explanation, "alert_acknowledged", idempotency_key)


def resolve_alert(ledger: Ledger, principal: Principal, alert_id: str, category: str, explanation: str, *,
                  idempotency_key: str | None = None) -> dict:
    """Close the alert with its category and explanation (same rules as acknowledging)."""
    return _close(ledger, principal, alert_id, category, explanation, "alert_resolved", idempotency_key)


def record_registration_expiry(ledger: Ledger, principal: Principal, expires_on: str, *,
                               idempotency_key: str | None = None) -> dict:
    """Record the expiry date of the registrant's DEA registration (again at each renewal)."""
    try:
        if not isinstance(expires_on, str) or len(expires_on) != 10:
            raise ValueError
        day = date.fromisoformat(expires_on)
    except ValueError:
        raise InvalidInput("must be a date YYYY-MM-DD", field="expires_on") from None

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=REGISTRATION_RECORDERS)
        ctx.append(ev.RegistrationExpiryRecorded(expires_on=day), signatures=[sig], occurred_at=ctx.now)
        return {"expires_on": day.isoformat()}

    return ledger.execute(principal.registrant, "record_registration_expiry", {"expires_on": expires_on}, build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


__all__ = [
    "ScanResult", "acknowledge_alert", "alert_hook", "attach_alert_rules", "evaluate", "list_alerts",
    "load_entries", "notify_deadlines", "raise_alerts", "record_registration_expiry", "resolve_alert", "scan",
]
