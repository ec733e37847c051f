"""The follow-up of a theft or loss report (issue 20): the written notice sent to the DEA field
office (due within one business day of discovery) and DEA Form 106 filed (within 45 days, with
the confirmation number DEA's online system gives). Each names its report and is recorded once;
it closes that deadline: the report's deadline alerts clear (``alert_cleared`` citing it) and no
overdue alert is raised for it afterwards. A late one is recorded all the same, marked late.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.domain import entries as ev
from ledger.domain import form106
from ledger.domain.commands import RecordDeaNotice, RecordForm106Filing
from ledger.domain.errors import Conflict, InvalidInput
from ledger.domain.principal import Meaning, Principal
from ledger.integrity.canonical import decode, format_time, parse_time
from ledger.services.alerts import clear_loss_alerts
from ledger.services.common import FUTURE_TOLERANCE, aware, entry_at, request_fields, run, text
from ledger.services.disposal import LOSS_REPORTERS
from ledger.services.documents import stored_document
from ledger.storage.store import CommandContext, Ledger

#: Who records that the notice went and the form was filed: the people who report losses
#: (manager, compliance officer). They answer to DEA for the report, so they sign its follow-up.
FOLLOW_UP_SIGNERS = LOSS_REPORTERS


def _report(ctx: CommandContext, seq: Any) -> dict:
    """The ``theft_or_loss_reported`` entry ``seq`` names (404 when there is none, 409 when it
    is another kind of entry)."""
    e = entry_at(ctx, seq, field="loss_report_seq")
    if e["kind"] != "theft_or_loss_reported":
        raise Conflict(f"entry {seq} is a {e['kind'].replace('_', ' ')}, not a theft or loss report",
                       field="loss_report_seq")
    return e


def _earlier(ctx: CommandContext, kind: str, report_seq: int) -> int | None:
    """The seq of the ``kind`` entry already recorded for ``report_seq``, or None. Few such
    entries exist (one per report), so reading them under the lock is cheap."""
    rows = ctx.view.raw.rows(ctx.conn, "SELECT seq, canonical FROM entries WHERE registrant = :r AND kind = :k "
                                       "ORDER BY seq", {"r": ctx.registrant, "k": kind})
    for row in rows:
        if decode(bytes(row["canonical"]))["loss_report_seq"] == report_seq:
            return row["seq"]
    return None


def _when(ctx: CommandContext, value: Any, report: dict, *, field: str) -> datetime:
    at = aware(value, field=field)
    if at > ctx.now + FUTURE_TOLERANCE:
        raise InvalidInput("is in the future", field=field)
    if at < parse_time(report["discovered_at"]):
        raise InvalidInput(f"is before the loss was discovered ({report['discovered_at']} UTC)", field=field)
    return at


def _document(ctx: CommandContext, sha: Any) -> str | None:
    """A stored document's SHA-256 (a copy of the notice, DEA's confirmation), or None."""
    return None if sha is None else stored_document(ctx, sha, field="document_sha256")


def record_dea_notice(ledger: Ledger, principal: Principal, cmd: RecordDeaNotice, *,
                      idempotency_key: str | None = None) -> dict:
    """Record that the written notice of report ``cmd.loss_report_seq`` went to DEA: when, how,
    to whom, optionally a stored copy. Once per report; clears its notice deadline alerts."""
    if cmd.method not in form106.NOTICE_METHODS:
        raise InvalidInput(f"must be one of {', '.join(form106.NOTICE_METHODS)}", field="method")
    recipient = text(cmd.recipient, field="recipient", max_len=300)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=FOLLOW_UP_SIGNERS)
        report = _report(ctx, cmd.loss_report_seq)
        sent = _when(ctx, cmd.sent_at, report, field="sent_at")
        done = _earlier(ctx, "dea_notice_sent", cmd.loss_report_seq)
        if done is not None:
            raise Conflict(f"the notice of report {cmd.loss_report_seq} is already recorded (entry {done})",
                           field="loss_report_seq")
        doc = _document(ctx, cmd.document_sha256)
        due = report["notice_due_at"]
        late = sent > parse_time(due)
        seq = ctx.append(ev.DeaNoticeSent(
            loss_report_seq=cmd.loss_report_seq, sent_at=format_time(sent), method=cmd.method, recipient=recipient,
            due_at=due, late=late, document_sha256=doc), signatures=[sig], occurred_at=sent).seq
        filed = _earlier(ctx, "form_106_filed", cmd.loss_report_seq) is not None
        cleared = clear_loss_alerts(ctx, cmd.loss_report_seq, seq, notice=True, filing=filed)
        return {"loss_report_seq": cmd.loss_report_seq, "due_at": due, "late": late, "alerts_cleared": cleared}

    return run(ledger, principal, "record_dea_notice", cmd, build, idempotency_key, request_fields(cmd))


def record_form_106_filing(ledger: Ledger, principal: Principal, cmd: RecordForm106Filing, *,
                           idempotency_key: str | None = None) -> dict:
    """Record that Form 106 for report ``cmd.loss_report_seq`` was filed, with DEA's
    confirmation number. Once per report; clears its Form 106 deadline alerts (and the theft/loss
    alert itself when the notice is recorded too)."""
    confirmation = text(cmd.confirmation_number, field="confirmation_number", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=FOLLOW_UP_SIGNERS)
        report = _report(ctx, cmd.loss_report_seq)
        filed = _when(ctx, cmd.filed_at, report, field="filed_at")
        done = _earlier(ctx, "form_106_filed", cmd.loss_report_seq)
        if done is not None:
            raise Conflict(f"Form 106 for report {cmd.loss_report_seq} is already recorded as filed (entry {done})",
                           field="loss_report_seq")
        doc = _document(ctx, cmd.document_sha256)
        due = report["form_106_due_at"]
        late = filed > parse_time(due)
        seq = ctx.append(ev.Form106Filed(
            loss_report_seq=cmd.loss_report_seq, filed_at=format_time(filed), confirmation_number=confirmation,
            due_at=due, late=late, document_sha256=doc), signatures=[sig], occurred_at=filed).seq
        noticed = _earlier(ctx, "dea_notice_sent", cmd.loss_report_seq) is not None
        cleared = clear_loss_alerts(ctx, cmd.loss_report_seq, seq, notice=noticed, filing=True)
        return {"loss_report_seq": cmd.loss_report_seq, "due_at": due, "late": late, "alerts_cleared": cleared}

    return run(ledger, principal, "record_form_106_filing", cmd, build, idempotency_key, request_fields(cmd))


__all__ = ["FOLLOW_UP_SIGNERS", "record_dea_notice", "record_form_106_filing"]
