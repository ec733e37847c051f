"""Clinic operations over HTTP (issue 3's services): policy, patients, infusions with waste,
waste, counts, discrepancies, destruction, transfers, returns, losses, corrections, quarantine.

Witnesses (waste, destruction) and the second counter of a count authenticate on the recording
person's device: each is a ``Witness-Assertion`` token (several comma-separated for a
destruction's two witnesses), bound to the SHA-256 of this very body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status

from api.http.auth import Witness
from api.http.deps import (
    IdempotencyKey,
    LedgerDep,
    OptionalWitnessDep,
    WitnessDep,
    WitnessesDep,
    actor,
)
from api.http.routes_stock import note_stock_read
from api.http.schemas import PROBLEM_RESPONSES
from api.http.schemas_clinical import (
    AdministrationCreate,
    BreakageCreate,
    ClinicalResultPublic,
    CorrectionCreate,
    CountCreate,
    CountSubmissionCreate,
    DeaNoticeCreate,
    DestructionCreate,
    Form106FilingCreate,
    LossReportCreate,
    PatientCreate,
    PatientDetailsChangeCreate,
    PatientPublic,
    PolicyCreate,
    QuarantineCreate,
    ResolutionCreate,
    ReturnCreate,
    TransferCreate,
    WasteRecordCreate,
)
from ledger import services
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    BreakageLineInput,
    ChangePatientDetails,
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    DrawInput,
    LostVialInput,
    OpenVialInput,
    QuarantineStock,
    RecordBreakage,
    RecordDeaNotice,
    RecordForm106Filing,
    RecordWaste,
    RegisterPatient,
    ReleaseQuarantine,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    ReturnStock,
    SetPolicy,
    StartCount,
    SubmitCount,
    TransferStock,
    WasteInput,
)
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["clinic operations"], responses=PROBLEM_RESPONSES)
CREATED = status.HTTP_201_CREATED
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def patient_keys(request: Request):
    """The patient registry key (``CSLEDGER_PATIENT_KEY`` or the key file), loaded once."""
    keys = getattr(request.app.state, "patient_keys", None)
    if keys is None:
        from ledger.storage.patient_keys import PatientKeys

        keys = request.app.state.patient_keys = PatientKeys.from_settings(request.app.state.settings)
    return keys


Keys = Annotated[object, Depends(patient_keys)]


def _addr(a) -> AddressInput:
    return AddressInput(a.street, a.city, a.state, a.postal_code)


def _p(w: Witness | None) -> Principal | None:
    return w.principal if w is not None else None


@router.post("/policies", status_code=CREATED, response_model=ClinicalResultPublic, name="set_policy")
def set_policy(body: PolicyCreate, ledger: LedgerDep, who: Annotated[Principal, actor("set_policy")],
               idempotency_key: IdempotencyKey = None) -> dict:
    """Record the registrant's whole policy (beyond-use days, late-entry limit, variance threshold,
    count schedule, clinic hours, dosage unit)."""
    cmd = SetPolicy(body.beyond_use_days, body.late_entry_limit_hours, body.variance_threshold_percent,
                    body.count_schedule, {k: tuple(v) for k, v in body.clinic_hours.items()}, body.dosage_unit,
                    body.reason, tuple(body.passkey_required_for), body.open_count_tolerance_ml)
    return services.set_policy(ledger, who, cmd, idempotency_key=idempotency_key)


@router.post("/patients", status_code=CREATED, response_model=ClinicalResultPublic, name="register_patient")
def register_patient(body: PatientCreate, ledger: LedgerDep, keys: Keys,
                     who: Annotated[Principal, actor("register_patient")], idempotency_key: IdempotencyKey = None) -> dict:
    """Add a patient: name and address go to the encrypted registry; the entry holds the id and a
    commitment. Answers the ``patient_id`` to use everywhere else."""
    return services.register_patient(ledger, who, RegisterPatient(body.name, _addr(body.address),
                                                                   body.date_of_birth), keys=keys,
                                     idempotency_key=idempotency_key)


@router.post("/patients/{patient_id}/details-changes", status_code=CREATED, response_model=ClinicalResultPublic,
             name="change_patient_details")
def change_patient_details(patient_id: Id, body: PatientDetailsChangeCreate, ledger: LedgerDep, keys: Keys,
                           who: Annotated[Principal, actor("change_patient_details")],
                           idempotency_key: IdempotencyKey = None) -> dict:
    """A new name, address or date of birth for a patient, with the reason (a date of birth left
    out keeps the one registered)."""
    cmd = ChangePatientDetails(patient_id, body.name, _addr(body.address), body.reason, body.date_of_birth)
    return services.change_patient_details(ledger, who, cmd, keys=keys, idempotency_key=idempotency_key)


@router.get("/patients/{patient_id}", response_model=PatientPublic, name="read_patient")
def read_patient(patient_id: Id, ledger: LedgerDep, keys: Keys,
                 who: Annotated[Principal, actor("read_patient")]) -> dict:
    """A patient's name and address, for the roles allowed to see them; every read is written to
    the append-only patient access log (``GET .../patient-access-log``)."""
    return services.read_patient(ledger, who, patient_id, keys=keys)


@router.post("/administrations", status_code=CREATED, response_model=ClinicalResultPublic, name="administer_dose")
def administer_dose(body: AdministrationCreate, ledger: LedgerDep,
                    who: Annotated[Principal, actor("administer_dose")], witness: OptionalWitnessDep,
                    idempotency_key: IdempotencyKey = None) -> dict:
    """Record an infusion (vials drawn, volume given) and, with ``waste``, the remainder wasted in
    the same transaction, witnessed (``Witness-Assertion`` header)."""
    cmd = AdministerDose(
        body.patient_id, body.prescriber_dea_number, body.weight_kg, body.ordered_mg_per_kg,
        tuple(DrawInput(d.vial_id, d.ml) for d in body.draws), body.ml_given, body.started_at, body.ended_at,
        WasteInput(body.waste.ml, body.waste.method) if body.waste else None, body.late_reason,
        tuple(body.documents))
    return services.administer_dose(ledger, who, cmd, witness=_p(witness), idempotency_key=idempotency_key)


@router.post("/wastes", status_code=CREATED, response_model=ClinicalResultPublic, name="record_waste")
def record_waste(body: WasteRecordCreate, ledger: LedgerDep, who: Annotated[Principal, actor("record_waste")],
                 witness: WitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Waste the remainder of an earlier administration, witnessed."""
    cmd = RecordWaste(body.administration_id, body.ml, body.method, body.occurred_at, body.late_reason,
                      tuple(body.documents))
    return services.record_waste(ledger, who, cmd, witness=witness.principal, idempotency_key=idempotency_key)


@router.post("/counts", status_code=CREATED, response_model=ClinicalResultPublic, name="start_count")
def start_count(body: CountCreate, ledger: LedgerDep, who: Annotated[Principal, actor("start_count")],
                idempotency_key: IdempotencyKey = None) -> dict:
    """Open a count session (blind by default: the expected quantities stay hidden until submitted)."""
    return services.start_count(ledger, who, StartCount(tuple(body.ndcs), body.blind), idempotency_key=idempotency_key)


@router.post("/counts/{session_id}/submissions", status_code=CREATED, response_model=ClinicalResultPublic,
             name="submit_count")
def submit_count(session_id: Id, body: CountSubmissionCreate, ledger: LedgerDep,
                 who: Annotated[Principal, actor("submit_count")], second: WitnessDep,
                 idempotency_key: IdempotencyKey = None) -> dict:
    """Submit a two-person count; the second counter signs on this device (``Witness-Assertion``).
    Differences become discrepancies to resolve, except an opened vial's within the policy's
    tolerance (recorded, no discrepancy); ``open_vials`` may name the opened vials one by one."""
    cmd = SubmitCount(session_id, tuple(CountLineInput(ln.ndc, ln.sealed_containers, ln.open_containers, ln.open_ml,
                                                           ln.sealed_packages,
                                                           tuple(OpenVialInput(v.vial_id, v.ml) for v in ln.open_vials))
                                        for ln in body.lines), body.occurred_at, body.late_reason)
    return services.submit_count(ledger, who, cmd, second_counter=second.principal, idempotency_key=idempotency_key)


@router.post("/discrepancies/{discrepancy_id}/resolutions", status_code=CREATED, response_model=ClinicalResultPublic,
             name="resolve_discrepancy")
def resolve_discrepancy(discrepancy_id: Id, body: ResolutionCreate, ledger: LedgerDep,
                        who: Annotated[Principal, actor("resolve_discrepancy")], second: OptionalWitnessDep,
                        idempotency_key: IdempotencyKey = None) -> dict:
    """Explain, categorize and approve a count discrepancy, with a second person who is neither
    the manager nor a counter (``Witness-Assertion``). A spill or breakage names the breakage
    recorded when it happened (``breakage_seq``); theft or loss takes the loss off the book."""
    cmd = ResolveDiscrepancy(discrepancy_id, body.category, body.explanation, body.fixed_by_seq, body.breakage_seq)
    return services.resolve_discrepancy(ledger, who, cmd, witness=_p(second), idempotency_key=idempotency_key)


@router.post("/breakages", status_code=CREATED, response_model=ClinicalResultPublic, name="record_breakage")
def record_breakage(body: BreakageCreate, ledger: LedgerDep, who: Annotated[Principal, actor("record_breakage")],
                    witness: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Record a breakage or spill when it happens, with a second person who saw it
    (``Witness-Assertion``). Not recoverable: the mL leave the book now. Recoverable: the vials
    are set aside (never drawn from) until destroyed (Form 41)."""
    cmd = RecordBreakage(body.what, body.description, body.recoverable,
                         tuple(BreakageLineInput(ln.vial_id, ln.ml) for ln in body.lines), body.occurred_at,
                         body.late_reason)
    return services.record_breakage(ledger, who, cmd, witness=_p(witness), idempotency_key=idempotency_key)


@router.post("/destructions", status_code=CREATED, response_model=ClinicalResultPublic, name="destroy_stock")
def destroy_stock(body: DestructionCreate, ledger: LedgerDep, who: Annotated[Principal, actor("destroy_stock")],
                  witnesses: WitnessesDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Destroy vials non-retrievably (Form 41) before two witnesses: two comma-separated
    ``Witness-Assertion`` tokens."""
    cmd = DestroyStock(tuple(body.vial_ids), body.method, body.place, body.reason, body.occurred_at, body.late_reason,
                       tuple(body.documents))
    return services.destroy_stock(ledger, who, cmd, witnesses=[w.principal for w in witnesses],
                                  idempotency_key=idempotency_key)


@router.post("/transfers", status_code=CREATED, response_model=ClinicalResultPublic, name="transfer_stock")
def transfer_stock(body: TransferCreate, ledger: LedgerDep, who: Annotated[Principal, actor("transfer_stock")],
                   witness: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Transfer vials to another registered practitioner (21 CFR 1307.11, within the 5% limit),
    with a second person who checks them against the invoice (``Witness-Assertion``). The
    receiver's DEA registration (expiry, schedules) is required: a transfer to an expired
    registration or one without Schedule III is refused (issue 19)."""
    cmd = TransferStock(tuple(body.vial_ids), body.receiver_dea_number, body.receiver_name, _addr(body.receiver_address),
                        body.invoice_number, body.occurred_at, body.late_reason, body.receiver_registration_expires_on,
                        tuple(body.receiver_schedules) if body.receiver_schedules is not None else None)
    return services.transfer_stock(ledger, who, cmd, witness=_p(witness), idempotency_key=idempotency_key)


@router.post("/returns", status_code=CREATED, response_model=ClinicalResultPublic, name="return_stock")
def return_stock(body: ReturnCreate, ledger: LedgerDep, who: Annotated[Principal, actor("return_stock")],
                 witness: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Return vials to the supplier or a reverse distributor, on an invoice, with a second person
    who checks them (``Witness-Assertion``). Checked against the recipient's DEA registration
    (a recorded supplier's as recorded; a reverse distributor's as given): expired, or not
    covering Schedule III, is refused (issue 19)."""
    cmd = ReturnStock(tuple(body.vial_ids), body.recipient_type, body.recipient_name, _addr(body.recipient_address),
                      body.recipient_dea_number, body.invoice_number, body.occurred_at, body.late_reason,
                      body.recipient_registration_expires_on,
                      tuple(body.recipient_schedules) if body.recipient_schedules is not None else None)
    return services.return_stock(ledger, who, cmd, witness=_p(witness), idempotency_key=idempotency_key)


@router.post("/loss-reports", status_code=CREATED, response_model=ClinicalResultPublic, name="report_theft_or_loss")
def report_theft_or_loss(body: LossReportCreate, ledger: LedgerDep,
                         who: Annotated[Principal, actor("report_theft_or_loss")], witness: OptionalWitnessDep,
                         idempotency_key: IdempotencyKey = None) -> dict:
    """Report a theft or significant loss (DEA Form 106 data); answers the notice deadlines.
    Vials taken off the book (``lost``) need a second person (``Witness-Assertion``)."""
    cmd = ReportTheftOrLoss(body.discovered_at, body.loss_type, body.police_notified, body.losses_past_24_months,
                            body.purchase_value_usd, tuple(LostVialInput(v.vial_id, v.ml) for v in body.lost),
                            tuple(body.covers_seqs), body.police_department, body.police_report_number,
                            tuple(body.documents), narrative=body.narrative,
                            corrective_measures=body.corrective_measures, other_explanation=body.other_explanation,
                            contact_name=body.contact_name, contact_phone=body.contact_phone)
    return services.report_theft_or_loss(ledger, who, cmd, witness=_p(witness), idempotency_key=idempotency_key)


@router.post("/dea-notices", status_code=CREATED, response_model=ClinicalResultPublic, name="record_dea_notice")
def record_dea_notice(body: DeaNoticeCreate, ledger: LedgerDep, who: Annotated[Principal, actor("record_dea_notice")],
                      idempotency_key: IdempotencyKey = None) -> dict:
    """Issue 20: the written notice of theft/loss report ``loss_report_seq`` went to DEA (when,
    how, to whom). Once per report; a late one is recorded and marked late. Clears the report's
    notice deadline alerts."""
    cmd = RecordDeaNotice(body.loss_report_seq, body.sent_at, body.method, body.recipient, body.document_sha256)
    return services.record_dea_notice(ledger, who, cmd, idempotency_key=idempotency_key)


@router.post("/form-106-filings", status_code=CREATED, response_model=ClinicalResultPublic,
             name="record_form_106_filing")
def record_form_106_filing(body: Form106FilingCreate, ledger: LedgerDep,
                           who: Annotated[Principal, actor("record_form_106_filing")],
                           idempotency_key: IdempotencyKey = None) -> dict:
    """Issue 20: DEA Form 106 for theft/loss report ``loss_report_seq`` was filed, with DEA's
    confirmation number. Once per report; a late one is recorded and marked late. Clears the
    report's Form 106 deadline alerts (and the theft/loss alert once the notice is recorded too)."""
    cmd = RecordForm106Filing(body.loss_report_seq, body.filed_at, body.confirmation_number, body.document_sha256)
    return services.record_form_106_filing(ledger, who, cmd, idempotency_key=idempotency_key)


@router.post("/corrections", status_code=CREATED, response_model=ClinicalResultPublic, name="correct_entry")
def correct_entry(body: CorrectionCreate, ledger: LedgerDep, who: Annotated[Principal, actor("correct_entry")],
                  approver: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Correct an earlier entry by a later, signed one that names it and says why (never an edit).
    Lines may only touch the vials the corrected entry moved; a line that removes stock needs a
    second person, a manager or pharmacist, who approves on this device (``Witness-Assertion``)."""
    cmd = CorrectEntry(body.corrects_seq, body.reason,
                       tuple(CorrectionLineInput(ln.vial_id, ln.direction, ln.ml) for ln in body.lines))
    return services.correct_entry(ledger, who, cmd, approver=_p(approver), idempotency_key=idempotency_key)


@router.post("/quarantines", status_code=CREATED, response_model=ClinicalResultPublic, name="quarantine_stock")
def quarantine_stock(body: QuarantineCreate, ledger: LedgerDep, who: Annotated[Principal, actor("quarantine_stock")],
                     idempotency_key: IdempotencyKey = None) -> dict:
    """Put suspect vials in quarantine: nothing may be drawn from them."""
    return services.quarantine_stock(ledger, who, QuarantineStock(tuple(body.vial_ids), body.reason),
                                     idempotency_key=idempotency_key)


@router.post("/quarantine-releases", status_code=CREATED, response_model=ClinicalResultPublic,
             name="release_quarantine")
def release_quarantine(body: QuarantineCreate, ledger: LedgerDep,
                       who: Annotated[Principal, actor("release_quarantine")],
                       idempotency_key: IdempotencyKey = None) -> dict:
    """Release vials from quarantine, with the reason."""
    return services.release_quarantine(ledger, who, ReleaseQuarantine(tuple(body.vial_ids), body.reason),
                                       idempotency_key=idempotency_key)


# --- reads -----------------------------------------------------------------------------------


def _json_safe(value):
    """Decimals as fixed-scale strings (never floats), everything else as JSON already is."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@router.get("/policy", response_model=dict[str, Any], name="get_policy")
def get_policy(ledger: LedgerDep, who: Annotated[Principal, actor("get_policy")]) -> dict:
    """The policy in force (``is_default`` when none was ever set)."""
    from ledger.services import stock

    return _json_safe(stock.policy(ledger, who.registrant))


@router.get("/counts/{session_id}", response_model=dict[str, Any], name="get_count")
def get_count(session_id: Id, ledger: LedgerDep, who: Annotated[Principal, actor("get_count")]) -> dict:
    """A count session as its counters may see it: blind and open, nothing about the book."""
    from ledger.services import stock

    return _json_safe(stock.count_session(ledger, who.registrant, session_id))


@router.get("/discrepancies", response_model=list[dict[str, Any]], name="list_discrepancies")
def list_discrepancies(ledger: LedgerDep, who: Annotated[Principal, actor("list_discrepancies")],
                       status_: Annotated[Literal["open", "resolved", "all"], Query(alias="status")] = "open") -> list:
    """Count discrepancies (open by default), with who counted."""
    from ledger.services import stock

    return _json_safe(stock.discrepancies(ledger, who.registrant, status=None if status_ == "all" else status_))


@router.get("/audit", response_model=dict[str, Any], name="get_audit")
def get_audit(request: Request, ledger: LedgerDep, who: Annotated[Principal, actor("get_audit")],
              from_day: Annotated[str, Query(alias="from", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                                             description="First day, inclusive (registrant's local time).")],
              to_day: Annotated[str, Query(alias="to", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                                           description="Last day, inclusive (registrant's local time).")],
              start: Annotated[str | None, Query(include_in_schema=False)] = None,
              end: Annotated[str | None, Query(include_in_schema=False)] = None) -> dict:
    """The DEA-style accountability audit of two inclusive local days, per NDC and in total, in
    mL, mg and containers, over its window between two counts or inventories (issue 20: the
    first on the ``from`` day, else the latest before it; the latest on or before ``to``): ``window`` names them,
    ``asked`` the days, ``offers`` the counts nearest each day. No count to end at: 422
    ``audit-window-unavailable`` with the ``offers``."""
    from ledger.domain.errors import InvalidInput
    from ledger.services import audit

    for old, name in ((start, "start"), (end, "end")):
        if old is not None:  # never silently reinterpreted as days
            raise InvalidInput("the audit no longer takes start/end date-times; give from and to as local days "
                               "YYYY-MM-DD (both included)", field=name)
    today = ledger.clock().astimezone(_zone(ledger, who.registrant)).date().isoformat()
    if from_day > today:
        raise InvalidInput("is in the future; an audit covers days that have begun", field="from")
    note_stock_read(request, ledger, who, "GET /audit")  # the audit's ending figures may be the book
    return _json_safe(audit.audit_days(ledger, who.registrant, from_day, to_day))


def _zone(ledger, registrant: str):
    """The registrant's time zone (the audit's days are theirs)."""
    import zoneinfo

    from ledger.storage.store import registrant_row

    with ledger.reading() as conn:
        row = registrant_row(conn, registrant)
    return zoneinfo.ZoneInfo(row["time_zone"] if row is not None else "UTC")
