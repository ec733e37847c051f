"""Issue 20: Form 106 complete. Each complaint of the issue is a test here: the narrative
(``description`` was refused), corrective measures, the explanation a loss of type "other" needs,
the contact; the notice sent to DEA and the Form 106 filed, which close the deadlines and their
alerts (once each, late ones marked late); the worksheet's "Recorded by" at the time the report was
recorded, not the discovery time; a loss in transit is the supplier's to report (21 CFR
1301.74(c)); and ``verify --deep`` catches a forged follow-up. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import (
    LostVialInput,
    RecordDeaNotice,
    RecordForm106Filing,
    ReportTheftOrLoss,
    StoreDocument,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, LedgerError, NotFound
from ledger.services import alerts as alert_service
from ledger.services.verify import verify
from ledger.storage.store import Ledger, entries_t
from reports.base import compute_data, kind_named, render_data
from reports.fmt import Period
from reports.source import load_snapshot
from tests.clinical.conftest import Ops
from tests.conftest import BACKENDS, CLINIC_TZ, entry_count, migrated_engine

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
TZ = ZoneInfo(CLINIC_TZ)


class Clock:
    """The ledger's clock, moved by the test (``recorded_at`` is read from it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db_url, clock) -> Iterator[Ledger]:
    lg = Ledger(migrated_engine(db_url), clock=clock)
    alert_service.attach_alert_rules(lg)
    yield lg
    lg.dispose()


@pytest.fixture
def ops(ledger) -> Ops:
    return Ops(ledger)


def morning(days: int, hour: int, minute: int = 0) -> datetime:
    """A local clinic time ``days`` days from today (a later day: the clock is moved to it)."""
    d = datetime.now(TZ).date() + timedelta(days=days)
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=TZ)


def report_cmd(vial: str, **kw) -> ReportTheftOrLoss:
    base = dict(discovered_at=datetime.now(UTC) - timedelta(minutes=30), loss_type="night_break_in",
                police_notified=True, losses_past_24_months=0, purchase_value_usd="24.50", lost=(LostVialInput(vial),),
                police_department="Austin PD", police_report_number="APD-26-9",
                narrative="Back door forced overnight; the safe was opened and one vial of ketamine taken.",
                corrective_measures="Door replaced, alarm contact added on the med room, safe code changed.",
                contact_name="Mia Manager", contact_phone="+1 (512) 555-0142")
    base.update(kw)
    return ReportTheftOrLoss(**base)


def refused(ops: Ops, exc_type: type[LedgerError], field: str, fn, *args, **kw) -> LedgerError:
    before = entry_count(ops.ledger)
    with pytest.raises(exc_type) as exc:
        fn(*args, **kw)
    assert exc.value.field == field, (exc.value.field, str(exc.value))
    assert entry_count(ops.ledger) == before
    return exc.value


def reported(ops: Ops, vial: str | None = None, **kw) -> tuple[int, dict]:
    vial = vial or ops.receive(1)[0]
    res = services.report_theft_or_loss(ops.ledger, ops.manager, report_cmd(vial, **kw), witness=ops.pharmacist)
    seq = next(e["seq"] for e in res["entries"] if e["kind"] == "theft_or_loss_reported")
    return seq, res


def entry(ops: Ops, seq: int) -> dict:
    from ledger.integrity.canonical import decode

    with ops.ledger.reading() as c:
        data = c.execute(sa.select(entries_t.c.canonical).where(entries_t.c.seq == seq)).scalar()
    return decode(bytes(data))


def alerts_of(ops: Ops, report_seq: int) -> dict[str, dict]:
    return {a["alert_key"]: a for a in alert_service.list_alerts(ops.ledger, ops.dea)
            if a["alert_key"].endswith(f":{report_seq}") and a["rule"] in ("theft_or_loss", "loss_deadline_overdue")}


def worksheet_text(ops: Ops) -> str:
    with ops.ledger.reading() as conn:
        snap = load_snapshot(conn, ops.dea)
    day = datetime.now(TZ).date()
    # the clinic under test took no initial inventory; the worksheet does not depend on one
    kind = dataclasses.replace(kind_named("form106"), needs_inventory=False)
    data = compute_data(kind, snap, Period(day - timedelta(days=3), day + timedelta(days=60), CLINIC_TZ),
                        generated_at=snap.entries[-1]["recorded_at"], generated_by="Cora Compliance", paper="letter")
    pdf = render_data(data)
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages)


# --- the report carries the whole form -----------------------------------------------------------


def test_narrative_corrective_measures_contact_are_recorded(ops):
    seq, _ = reported(ops)
    e = entry(ops, seq)
    assert e["narrative"].startswith("Back door forced overnight")
    assert e["corrective_measures"].startswith("Door replaced")
    assert (e["contact_name"], e["contact_phone"], e["other_explanation"]) == ("Mia Manager", "+1 (512) 555-0142",
                                                                                None)
    assert verify(ops.ledger, deep=True).ok


@pytest.mark.parametrize("field", ["narrative", "corrective_measures", "contact_name", "contact_phone"])
def test_each_new_part_is_required(ops, field):
    vial = ops.receive(1)[0]
    for missing in (None, "   "):
        err = refused(ops, InvalidInput, field, services.report_theft_or_loss, ops.ledger, ops.manager,
                      report_cmd(vial, **{field: missing}), witness=ops.pharmacist)
        assert "Form 106" in err.reason


@pytest.mark.parametrize("phone", ["call me", "555-12", "+1 512 555 0142 0000 1111 2222", "512-555-O142"])
def test_contact_phone_is_a_phone_number(ops, phone):
    vial = ops.receive(1)[0]
    refused(ops, InvalidInput, "contact_phone", services.report_theft_or_loss, ops.ledger, ops.manager,
            report_cmd(vial, contact_phone=phone), witness=ops.pharmacist)


def test_phone_written_as_people_write_it_is_accepted(ops):
    for phone in ("512.555.0142", "(512) 555-0142", "+44 20 7946 0958"):
        seq, _ = reported(ops, contact_phone=phone)
        assert entry(ops, seq)["contact_phone"] == phone


def test_other_needs_its_explanation_and_only_other_has_one(ops):
    vial = ops.receive(1)[0]
    err = refused(ops, InvalidInput, "other_explanation", services.report_theft_or_loss, ops.ledger, ops.manager,
                  report_cmd(vial, loss_type="other"), witness=ops.pharmacist)
    assert "other" in err.reason
    refused(ops, InvalidInput, "other_explanation", services.report_theft_or_loss, ops.ledger, ops.manager,
            report_cmd(vial, other_explanation="a vial dropped behind the safe"), witness=ops.pharmacist)
    seq, _ = reported(ops, loss_type="other", other_explanation="vial missing after a power cut; not found")
    assert entry(ops, seq)["other_explanation"] == "vial missing after a power cut; not found"


def test_loss_in_transit_is_the_suppliers_to_report(ops):
    vial = ops.receive(1)[0]
    err = refused(ops, InvalidInput, "loss_type", services.report_theft_or_loss, ops.ledger, ops.manager,
                  report_cmd(vial, loss_type="lost_in_transit"), witness=ops.pharmacist)
    assert "21 CFR 1301.74(c)" in err.reason and "supplier" in err.reason and "invoice" in err.reason


def test_a_shortage_at_receipt_is_recorded_against_invoice_and_supplier(ops, ledger):
    """Fewer arrived than invoiced: the receipt is the record; its answer says whose report it is,
    and an alert keeps it in front of someone until the supplier's notice is kept."""
    from ledger.domain.commands import ReceivedLineInput, ReceiveStock

    res = services.receive_stock(ledger, ops.nurse, ReceiveStock(
        supplier_id=ops.supplier_id, invoice_number="INV-SHORT-1", occurred_at=datetime.now(UTC) - timedelta(hours=1),
        lines=(ReceivedLineInput("67457-0001-10", 3, "LOT-7781", "2028-06-30", invoiced_containers=5),)))
    [short] = res["in_transit_shortages"]
    assert short["note"] == ("2 containers short on invoice INV-SHORT-1 from Gulf Medical Supply: the supplier "
                             "reports a loss in transit (21 CFR 1301.74(c)); keep their notice")
    [alert] = alert_service.list_alerts(ledger, ops.dea, rule="shortage_at_receipt")
    assert "INV-SHORT-1" in alert["summary"] and "1301.74(c)" in alert["summary"]
    exact = services.receive_stock(ledger, ops.nurse, ReceiveStock(
        supplier_id=ops.supplier_id, invoice_number="INV-OK-1", occurred_at=datetime.now(UTC) - timedelta(hours=1),
        lines=(ReceivedLineInput("67457-0001-10", 2, "LOT-7781", "2028-06-30", invoiced_containers=2),)))
    assert exact["in_transit_shortages"] == []
    assert len(alert_service.list_alerts(ledger, ops.dea, rule="shortage_at_receipt")) == 1


# --- notice sent, Form 106 filed -----------------------------------------------------------------


def test_notice_and_filing_close_the_deadlines_and_their_alerts(ops, clock):
    seq, _ = reported(ops)
    assert set(alerts_of(ops, seq)) == {f"loss_reported:{seq}"}
    # the notice's deadline passes unrecorded: the scan raises an overdue alert
    clock.now = clock.now + timedelta(days=4)
    alert_service.scan(ops.ledger, ops.dea, now=clock.now)
    assert set(alerts_of(ops, seq)) == {f"loss_reported:{seq}", f"dea_notice_overdue:{seq}"}
    sent = clock.now - timedelta(hours=1)
    res = services.record_dea_notice(ops.ledger, ops.compliance, RecordDeaNotice(
        seq, sent, "email", "DEA Houston Division, Austin Resident Office"))
    notice = next(e for e in res["entries"] if e["kind"] == "dea_notice_sent")
    assert res["late"] is True and [e["kind"] for e in res["entries"]] == ["dea_notice_sent", "alert_cleared"]
    e = entry(ops, notice["seq"])
    assert e["late"] is True and e["loss_report_seq"] == seq and e["method"] == "email"
    assert e["signatures"][0]["printed_name"] == "Cora Compliance"
    a = alerts_of(ops, seq)
    assert a[f"dea_notice_overdue:{seq}"]["status"] == "resolved"
    assert a[f"loss_reported:{seq}"]["status"] == "open"  # Form 106 still due
    # later scans raise nothing more for the notice
    clock.now = clock.now + timedelta(days=1)
    assert not alert_service.scan(ops.ledger, ops.dea, now=clock.now).raised
    filed = services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(
        seq, clock.now - timedelta(minutes=5), "106-2026-0042187"))
    assert filed["late"] is False
    a = alerts_of(ops, seq)
    assert a[f"loss_reported:{seq}"]["status"] == "resolved"
    assert f"entry {filed['entries'][0]['seq']}" in a[f"loss_reported:{seq}"]["resolved_explanation"]
    # past the Form 106 deadline: no overdue alert, it was filed
    clock.now = clock.now + timedelta(days=50)
    assert not alert_service.scan(ops.ledger, ops.dea, now=clock.now).raised
    assert {k for k, x in alerts_of(ops, seq).items() if x["status"] != "resolved"} == set()
    assert verify(ops.ledger, deep=True).ok


def test_form_106_overdue_alert_clears_when_filed(ops, clock):
    seq, _ = reported(ops)
    services.record_dea_notice(ops.ledger, ops.manager, RecordDeaNotice(seq, clock.now, "online", "DEA Diversion"))
    assert not entry(ops, entry_count(ops.ledger) - 1)["late"]
    clock.now = clock.now + timedelta(days=47)
    alert_service.scan(ops.ledger, ops.dea, now=clock.now)
    assert alerts_of(ops, seq)[f"form_106_overdue:{seq}"]["status"] == "open"
    res = services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(seq, clock.now, "106-77"))
    assert res["late"] is True
    assert sorted(res["alerts_cleared"]) == sorted(
        alerts_of(ops, seq)[k]["alert_id"] for k in (f"form_106_overdue:{seq}", f"loss_reported:{seq}"))
    assert all(a["status"] == "resolved" for a in alerts_of(ops, seq).values())
    assert verify(ops.ledger, deep=True).ok


def test_second_notice_or_filing_is_refused(ops, clock):
    seq, _ = reported(ops)
    services.record_dea_notice(ops.ledger, ops.manager, RecordDeaNotice(seq, clock.now, "fax", "DEA Houston"))
    err = refused(ops, Conflict, "loss_report_seq", services.record_dea_notice, ops.ledger, ops.compliance,
                  RecordDeaNotice(seq, clock.now, "email", "DEA Houston"))
    assert "already recorded" in err.reason
    services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(seq, clock.now, "106-1"))
    refused(ops, Conflict, "loss_report_seq", services.record_form_106_filing, ops.ledger, ops.compliance,
            RecordForm106Filing(seq, clock.now, "106-2"))


def test_follow_up_names_a_real_loss_report(ops, clock):
    seq, _ = reported(ops)
    refused(ops, NotFound, "loss_report_seq", services.record_form_106_filing, ops.ledger, ops.manager,
            RecordForm106Filing(seq + 1000, clock.now, "106-1"))
    err = refused(ops, Conflict, "loss_report_seq", services.record_form_106_filing, ops.ledger, ops.manager,
                  RecordForm106Filing(1, clock.now, "106-1"))
    assert "not a theft or loss report" in err.reason
    refused(ops, NotFound, "loss_report_seq", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq + 1000, clock.now, "email", "DEA"))
    refused(ops, InvalidInput, "loss_report_seq", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(-1, clock.now, "email", "DEA"))


def test_follow_up_times_methods_signers(ops, clock):
    seq, _ = reported(ops)
    discovered = datetime.fromisoformat(entry(ops, seq)["discovered_at"])
    refused(ops, InvalidInput, "sent_at", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, clock.now + timedelta(hours=1), "email", "DEA"))
    refused(ops, InvalidInput, "sent_at", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, discovered - timedelta(minutes=1), "email", "DEA"))
    refused(ops, InvalidInput, "sent_at", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, datetime(2026, 12, 1, 9, 0), "email", "DEA"))  # no time zone
    refused(ops, InvalidInput, "method", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, clock.now, "carrier pigeon", "DEA"))
    refused(ops, InvalidInput, "recipient", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, clock.now, "email", " "))
    refused(ops, InvalidInput, "document_sha256", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, clock.now, "email", "DEA", "XYZ"))
    refused(ops, NotFound, "document_sha256", services.record_dea_notice, ops.ledger, ops.manager,
            RecordDeaNotice(seq, clock.now, "email", "DEA", "0" * 64))
    refused(ops, Forbidden, "principal", services.record_dea_notice, ops.ledger, ops.nurse,
            RecordDeaNotice(seq, clock.now, "email", "DEA"))
    refused(ops, Forbidden, "principal", services.record_form_106_filing, ops.ledger, ops.pharmacist,
            RecordForm106Filing(seq, clock.now, "106-1"))
    refused(ops, InvalidInput, "filed_at", services.record_form_106_filing, ops.ledger, ops.manager,
            RecordForm106Filing(seq, discovered - timedelta(days=1), "106-1"))
    refused(ops, InvalidInput, "confirmation_number", services.record_form_106_filing, ops.ledger, ops.manager,
            RecordForm106Filing(seq, clock.now, ""))
    # DEA's confirmation, stored, is cited by its SHA-256
    doc = services.store_document(ops.ledger, ops.manager, StoreDocument(b"%PDF-1.4 confirmation", "application/pdf",
                                                                         "Form 106 confirmation"))["sha256"]
    res = services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(seq, clock.now, "106-9", doc))
    assert entry(ops, res["entries"][0]["seq"])["document_sha256"] == doc


# --- the worksheet -------------------------------------------------------------------------------


def test_worksheet_recorded_at_the_time_it_was_recorded_not_discovered(ops, clock):
    """Discovered 08:30, recorded 09:00: the worksheet says 09:00 for the recording."""
    vial = ops.receive(1)[0]
    clock.now = morning(1, 9, 0).astimezone(UTC)
    seq, _ = reported(ops, vial, discovered_at=morning(1, 8, 30))
    text = worksheet_text(ops)
    day = morning(1, 0).date().isoformat()
    zone = morning(1, 9).strftime("%Z")
    assert f"Date of loss (discovered) {day} 08:30 {zone}" in text
    assert f"Recorded by Mia Manager, Pia Pharmacist at {day} 09:00 {zone}" in text
    for must in ("Back door forced overnight", "Door replaced, alarm contact added", "Mia Manager, +1 (512) 555-0142",
                 "not yet sent, due", "not yet filed, due"):
        assert must in text, must
    assert "(type 'other')" not in text  # only a loss of type "other" prints its explanation


def test_worksheet_prints_notice_and_filing_with_late_marked(ops, clock):
    vial = ops.receive(1)[0]
    clock.now = morning(1, 9, 0).astimezone(UTC)
    seq, _ = reported(ops, vial, discovered_at=morning(1, 8, 30), loss_type="other",
                      other_explanation="vial missing after a power cut; not found")
    clock.now = morning(6, 10, 0).astimezone(UTC)  # past the one-business-day notice
    services.record_dea_notice(ops.ledger, ops.compliance, RecordDeaNotice(
        seq, morning(6, 9, 15), "letter", "DEA Houston Division, 1433 W Loop S, Houston TX"))
    clock.now = morning(7, 16, 0).astimezone(UTC)
    services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(seq, morning(7, 15, 40),
                                                                                 "106-2026-0042187"))
    text = worksheet_text(ops)
    d6, d7 = morning(6, 0).date().isoformat(), morning(7, 0).date().isoformat()
    z6, z7 = morning(6, 9).strftime("%Z"), morning(7, 9).strftime("%Z")
    assert f"sent {d6} 09:15 {z6} by letter to DEA Houston Division, 1433 W Loop S, Houston TX, LATE (due" in text
    assert "recorded by Cora Compliance" in text
    assert f"filed {d7} 15:40 {z7}, DEA confirmation 106-2026-0042187, on time" in text
    assert "Explanation (type 'other') vial missing after a power cut; not found" in text


def test_worksheet_of_a_report_recorded_before_issue_20_still_prints(ops):
    """An old entry (no narrative, no contact) reads and prints: its new rows say so."""
    vial = ops.receive(1)[0]

    def build(ctx):
        from ledger.services.common import registrant_copy

        ctx.append(ev.TheftOrLossReported(
            registrant_copy=registrant_copy(ctx), discovered_at="2026-12-01T14:00:00.000000Z", loss_type="other",
            police_notified=False, police_department=None, police_report_number=None, losses_past_24_months=0,
            purchase_value_usd="1.00", lost=(), covers_seqs=(), notice_due_at="2026-12-03T05:59:59.999999Z",
            form_106_due_at="2027-01-16T05:59:59.999999Z"), signatures=[], occurred_at=ctx.now)
        return {}

    del vial
    ops.ledger.execute(ops.dea, "old_report", {}, build, principal_id=None)
    text = worksheet_text(ops)
    assert "not recorded (reported before issue 20)" in text


# --- verify --deep -------------------------------------------------------------------------------


def _forge(ops: Ops, event, signer=None) -> None:
    """Append ``event`` as whoever holds the database would: well hashed, signed (or not) by hand."""

    def build(ctx):
        sigs = [ctx.signature(signer, ev_meaning())] if signer is not None else []
        ctx.append(event, signatures=sigs, occurred_at=ctx.now)
        return {}

    ops.ledger.execute(ops.dea, "forged", {}, build, principal_id=None)


def ev_meaning():
    from ledger.domain.principal import Meaning

    return Meaning.PERFORMED


def test_replay_catches_a_notice_citing_a_non_loss_entry(ops, clock):
    reported(ops)
    _forge(ops, ev.DeaNoticeSent(loss_report_seq=1, sent_at="2026-12-07T15:00:00.000000Z", method="email",
                                 recipient="DEA", due_at="2026-12-08T05:59:59.999999Z", late=False), ops.manager)
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "loss-follow-up" in str(report.problems)


def test_replay_catches_a_second_filing(ops, clock):
    seq, _ = reported(ops)
    services.record_form_106_filing(ops.ledger, ops.manager, RecordForm106Filing(seq, clock.now, "106-1"))
    _forge(ops, ev.Form106Filed(loss_report_seq=seq, filed_at="2026-12-07T15:00:00.000000Z", confirmation_number="x",
                                due_at="2027-01-01T05:59:59.999999Z", late=False), ops.manager)
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "loss-follow-up" in str(report.problems)


def test_replay_catches_a_theft_alert_cleared_by_the_notice_alone(ops, clock):
    """The theft/loss alert closes only when both the notice and the filing are recorded: one
    forged ``alert_cleared`` citing the notice alone is named by ``verify --deep``."""
    seq, _ = reported(ops)
    res = services.record_dea_notice(ops.ledger, ops.manager, RecordDeaNotice(seq, clock.now, "email", "DEA"))
    alert = alerts_of(ops, seq)[f"loss_reported:{seq}"]
    assert alert["status"] == "open"
    _forge(ops, ev.AlertCleared(alert_id=alert["alert_id"], evidence_seq=res["entries"][0]["seq"], explanation="x"))
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "alert-cleared-by-count" in str(report.problems)


def test_replay_holds_the_follow_up_signer_to_the_loss_reporters(ops, clock):
    seq, _ = reported(ops)
    _forge(ops, ev.DeaNoticeSent(loss_report_seq=seq, sent_at="2026-12-07T15:00:00.000000Z", method="email",
                                 recipient="DEA", due_at="2026-12-08T05:59:59.999999Z", late=False), ops.nurse)
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "signer-held-role" in str(report.problems)


def test_positional_callers_still_build_the_command(db_url):
    """The new fields are keyword fields at the end: older positional calls still construct."""
    cmd = ReportTheftOrLoss(datetime.now(UTC), "other", False, 0, "1.00")
    assert dataclasses.replace(cmd, narrative="x").narrative == "x"
