"""Stock leaving the registrant: destruction with two witnesses (DEA Form 41, 21 CFR 1317),
transfers to another registrant (the 5 % rule, 21 CFR 1307.11), returns to a supplier, and theft
or loss (DEA Form 106, 21 CFR 1301.76(b)).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, localcontext

import holidays

from ledger.domain import entries as ev
from ledger.domain import (
    form106,  # issue 20
    trading_partners,
)
from ledger.domain import prescribers as prescriber_rules
from ledger.domain.commands import (
    DestroyStock,
    ReportTheftOrLoss,
    ReturnStock,
    TransferStock,
)
from ledger.domain.errors import Conflict, InvalidInput
from ledger.domain.esketamine import is_device
from ledger.domain.identifiers import parse_dea_number
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import norm, parse_amount, parse_count, parse_volume, q2
from ledger.integrity.canonical import decode, format_time
from ledger.services.administration import CLINICIANS
from ledger.services.common import (
    FUTURE_TOLERANCE,
    ZERO,
    address,
    aware,
    current_policy,
    entry_at,
    event_time,
    product_of_vial,
    registrant_copy,
    registrant_tz,
    request_fields,
    run,
    sign_witness,
    text,
    vial_for_use,
    vial_ids,
)
from ledger.services.documents import stored_documents
from ledger.services.packages import whole_packages  # issue 19
from ledger.storage.store import CommandContext, Ledger

STOCK_HANDLERS = frozenset({Role.PHARMACIST, Role.MANAGER})


LOSS_REPORTERS = frozenset({Role.MANAGER, Role.COMPLIANCE_OFFICER})


LOSS_TYPES = ("night_break_in", "armed_robbery", "employee_pilferage", "customer_theft", "lost_in_transit", "other")


#: 21 CFR 1307.11(a)(1)(iv): practitioner transfers stay at or below 5% of units distributed and dispensed.
TRANSFER_LIMIT_PERCENT = Decimal("5")


FORM_106_DAYS = 45


def destroy_stock(ledger: Ledger, principal: Principal, cmd: DestroyStock, *, witnesses: Sequence[Principal],
                  idempotency_key: str | None = None) -> dict:
    """Destroy vials on site, non-retrievably (Form 41), with two distinct witnesses. A vial's
    remainder at its beyond-use date or expiry leaves this way (it is stock, never waste)."""
    ids = vial_ids(cmd.vial_ids)
    method = text(cmd.method, field="method", max_len=200)
    place = text(cmd.place, field="place", max_len=200)
    reason = text(cmd.reason, field="reason", max_len=500)
    if not isinstance(witnesses, list | tuple) or len(witnesses) < 2:
        raise InvalidInput("destruction needs two authorized employee witnesses (Form 41)", field="witnesses")
    if len({getattr(w, "staff_id", None) for w in witnesses}) != len(witnesses):
        raise Conflict("the two witnesses must be two different people", field="witnesses")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        wsigs = [sign_witness(ctx, principal, w, field=f"witnesses[{i}]") for i, w in enumerate(witnesses)]
        docs = stored_documents(ctx, cmd.documents)
        items = []
        rows = [vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]", packaged_ok=True) for i, vial_id in enumerate(ids)]
        in_package = whole_packages(ctx, rows)  # issue 19: a sealed carton is destroyed whole or opened first
        for vial_id, v in zip(ids, rows, strict=True):
            p = product_of_vial(ctx, v)
            full = v["opened_at"] is None and v["ml_left"] == v["container_ml"]
            items.append(ev.DestroyedItem(vial_id=vial_id, product=p, lot=v["lot"], full_package=full, ml=v["ml_left"],
                                          mg=q2(v["ml_left"] * p.strength_mg_per_ml),
                                          package_id=in_package.get(vial_id)))
        ctx.append(ev.StockDestroyed(registrant_copy=registrant_copy(ctx), items=tuple(items), method=method,
                                     place=place, reason=reason, late_reason=late, documents=docs),
                   signatures=[sig, *wsigs], occurred_at=occurred)
        return {"destroyed_ml": str(norm(sum((i.ml for i in items), ZERO)))}

    return run(ledger, principal, "destroy_stock", cmd, build, idempotency_key,
                {**request_fields(cmd), "witnesses": [getattr(w, "staff_id", None) for w in witnesses]})


def _moved(ctx: CommandContext, ids: Sequence[str], *, sealed_only: bool) -> list[ev.MovedVial]:
    out = []
    rows = []
    for i, vial_id in enumerate(ids):
        f = f"vial_ids[{i}]"
        v = vial_for_use(ctx, vial_id, field=f, packaged_ok=True)
        if sealed_only and (v["opened_at"] is not None or v["state"] != "sealed"):
            raise Conflict(f"vial {vial_id} is {v['state']}; only sealed, released stock is transferred", field=f)
        rows.append(v)
    in_package = whole_packages(ctx, rows)  # issue 19: a sealed carton moves whole, its units with it
    for vial_id, v in zip(ids, rows, strict=True):
        out.append(ev.MovedVial(vial_id=vial_id, product=product_of_vial(ctx, v), lot=v["lot"],
                                expiry=date.fromisoformat(v["expiry"]), ml=v["ml_left"],
                                package_id=in_package.get(vial_id)))
    return out


def _year_units(ctx: CommandContext, year: int, unit: str, tz: zoneinfo.ZoneInfo) -> tuple[Decimal, Decimal]:
    """(units transferred to practitioners, units dispensed) this calendar year, from the entries."""
    start = format_time(datetime(year, 1, 1, tzinfo=tz))
    end = format_time(datetime(year + 1, 1, 1, tzinfo=tz))
    rows = ctx.view.raw.rows(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND kind IN "
                                       "('stock_transferred', 'dose_administered', 'esketamine_session_recorded') "
                                       "AND occurred_at >= :s "
                                       "AND occurred_at < :e", {"r": ctx.registrant, "s": start, "e": end})
    transferred = dispensed = Decimal(0)
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if e["kind"] == "stock_transferred":
            transferred += sum((_units(Decimal(v["ml"]), Decimal(v["product"]["container_ml"]),
                                       _unit_of(v["product"], unit)) for v in e["vials"]), Decimal(0))
        elif e["kind"] == "esketamine_session_recorded":  # issue 19: dispensed in devices, whole
            dispensed += len(e["devices"])
        else:
            cml = Decimal(e["draws"][0]["product"]["container_ml"])
            dispensed += _units(Decimal(e["ml_given"]), cml, unit)
    return transferred, dispensed


def _unit_of(product, unit: str) -> str:
    """The dosage unit counted for ``product`` (issue 19): a nasal-spray device product's is the
    device, whatever the policy says for vials (mL or container)."""
    return "container" if is_device(product) else unit


def _units(ml: Decimal, container_ml: Decimal, unit: str) -> Decimal:
    if unit == "ml":
        return ml
    with localcontext() as c:
        c.prec = 40
        return ml / container_ml


def transfer_stock(ledger: Ledger, principal: Principal, cmd: TransferStock, *, witness: Principal | None = None,
                   idempotency_key: str | None = None) -> dict:
    """Transfer sealed vials to another registered practitioner on an invoice, refused when the
    year's practitioner transfers would pass 5% of the dosage units distributed and dispensed.
    Stock leaves the registrant: ``witness``, a second authenticated person, checks the vials
    packed against the invoice and signs (two people on every record that reduces stock).
    Issue 19: the receiver is a practitioner whose DEA registration, carried by the command, is
    current on the clinic's local day and covers the products' schedules; the entry copies it."""
    ids = vial_ids(cmd.vial_ids)
    receiver = parse_dea_number(cmd.receiver_dea_number, field="receiver_dea_number")
    if prescriber_rules.practitioner_refusal(receiver) is not None:
        # 1307.11(a)(1): practitioner to practitioner. A distributor or reverse distributor takes
        # stock back by a return (Part 1317), recorded as one.
        raise InvalidInput(f"{receiver} is not a practitioner's DEA number (A, B, F, G or M): a transfer under "
                           "21 CFR 1307.11 goes to another practitioner; stock going back to a supplier or a "
                           "reverse distributor is a return", field="receiver_dea_number")
    name = text(cmd.receiver_name, field="receiver_name")
    addr = address(cmd.receiver_address, field="receiver_address")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)
    registration = _carried_registration(cmd.receiver_registration_expires_on, cmd.receiver_schedules,
                                         prefix="receiver", whose="the receiver's")
    if registration is None:
        raise InvalidInput("the receiver's DEA registration expiry is required (YYYY-MM-DD), with its schedules: a "
                           "transfer goes only to a currently registered practitioner (21 CFR 1307.11)",
                           field="receiver_registration_expires_on")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, principal, witness)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        if receiver == ctx.registrant:
            raise Conflict("a registrant cannot transfer to itself", field="receiver_dea_number")
        vials = _moved(ctx, ids, sealed_only=True)
        policy = current_policy(ctx)
        tz = registrant_tz(ctx)
        _check_recipient(name, receiver, registration, occurred.astimezone(tz).date(), vials, prefix="receiver",
                         what="transfer", carried=True)
        t_prior, dispensed = _year_units(ctx, occurred.astimezone(tz).year, policy.dosage_unit, tz)
        t_now = sum((_units(v.ml, v.product.container_ml, _unit_of(v.product, policy.dosage_unit)) for v in vials),
                    Decimal(0))
        transfers = t_prior + t_now
        total = dispensed + transfers
        if transfers * 100 > TRANSFER_LIMIT_PERCENT * total:
            with localcontext() as c:
                c.prec = 28
                pct = (transfers * 100 / total).quantize(Decimal("0.01")) if total else Decimal("100.00")
            raise Conflict(f"this transfer would take the year's practitioner transfers to {pct}% of dosage units "
                           f"distributed and dispensed, past the 5% a practitioner may transfer without a "
                           f"distributor registration (21 CFR 1307.11)", field="vial_ids")
        ctx.append(ev.StockTransferred(receiver_dea_number=receiver, receiver_name=name, receiver_address=addr,
                                       invoice_number=invoice, vials=tuple(vials),
                                       year_transfer_units=q2(transfers), year_total_units=q2(total),
                                       late_reason=late, receiver_registration=registration),
                   signatures=[sig, wsig], occurred_at=occurred)
        return {"transferred_ml": str(norm(sum((v.ml for v in vials), ZERO)))}

    return run(ledger, principal, "transfer_stock", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})


def return_stock(ledger: Ledger, principal: Principal, cmd: ReturnStock, *, witness: Principal | None = None,
                 idempotency_key: str | None = None) -> dict:
    """Return vials to the supplier or hand them to a reverse distributor (Part 1317), on an
    invoice; not counted toward the 5% transfer limit. Signed by a second person (``witness``)
    who checks what leaves against the invoice. Issue 19: checked against the recipient's DEA
    registration (a supplier recorded here under that DEA number: its recorded registration and
    DSCSA status; anyone else: the one the command carries), copied into the entry."""
    ids = vial_ids(cmd.vial_ids)
    if cmd.recipient_type not in ("supplier", "reverse_distributor"):
        raise InvalidInput("must be 'supplier' or 'reverse_distributor'", field="recipient_type")
    name = text(cmd.recipient_name, field="recipient_name")
    addr = address(cmd.recipient_address, field="recipient_address")
    dea = parse_dea_number(cmd.recipient_dea_number, field="recipient_dea_number")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)
    carried = _carried_registration(cmd.recipient_registration_expires_on, cmd.recipient_schedules,
                                    prefix="recipient", whose="the recipient's")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, principal, witness)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        vials = _moved(ctx, ids, sealed_only=False)
        registration, supplier_id, partner = _return_registration(ctx, cmd.recipient_type, dea, carried)
        _check_recipient(name if supplier_id is None else f"{name} (supplier {supplier_id})", dea, registration,
                         occurred.astimezone(registrant_tz(ctx)).date(), vials, prefix="recipient", what="return",
                         carried=supplier_id is None)
        ctx.append(ev.StockReturned(recipient_type=cmd.recipient_type, recipient_name=name, recipient_address=addr,
                                    recipient_dea_number=dea, invoice_number=invoice, vials=tuple(vials),
                                    late_reason=late, recipient_registration=registration, supplier_id=supplier_id,
                                    authorized_trading_partner=partner), signatures=[sig, wsig], occurred_at=occurred)
        return {"returned_ml": str(norm(sum((v.ml for v in vials), ZERO)))}

    return run(ledger, principal, "return_stock", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})


def _carried_registration(expires_on: object, schedules: object, *, prefix: str,
                          whose: str) -> ev.DeaRegistration | None:
    """The registration a transfer or return command carries (``<prefix>_registration_expires_on``,
    ``<prefix>_schedules``), or None when it carries neither."""
    if expires_on is None and schedules is None:
        return None
    if expires_on is None:
        raise InvalidInput(f"{whose} DEA registration expiry is required with its schedules (YYYY-MM-DD)",
                           field=f"{prefix}_registration_expires_on")
    return ev.DeaRegistration(
        expires_on=trading_partners.parse_expiry(expires_on, field=f"{prefix}_registration_expires_on"),
        schedules=trading_partners.parse_schedules(schedules, field=f"{prefix}_schedules"))


def _return_registration(ctx: CommandContext, recipient_type: str, dea: str, carried: ev.DeaRegistration | None
                         ) -> tuple[ev.DeaRegistration, str | None, bool | None]:
    """(registration, supplier_id, authorized trading partner) a return is checked against. A
    supplier recorded here under ``dea`` answers from its record (the latest added, if the number
    is recorded twice): a registration the command carries must agree with it, and one recorded as
    not an authorized trading partner (DSCSA) takes nothing back. Anyone else: what the command
    carries, required."""
    if recipient_type == "supplier":
        rows = sorted(ctx.view.select("suppliers", registrant=ctx.registrant, dea_number=dea),
                      key=lambda r: r["added_seq"])
        if rows:
            sup = rows[-1]
            if sup["registration_expires_on"] is None or sup["authorized_trading_partner"] is None:
                raise Conflict(f"{sup['name']}'s DEA registration is not recorded here: record its expiry and "
                               "schedules and whether it is an authorized trading partner (DSCSA) first "
                               f"(POST /suppliers/{sup['supplier_id']}/registration)", field="recipient_dea_number")
            recorded = ev.DeaRegistration(date.fromisoformat(str(sup["registration_expires_on"])),
                                          tuple(x for x in sup["schedules"].split(",") if x))
            if carried is not None and carried != recorded:
                raise Conflict(f"{sup['name']} ({sup['supplier_id']}) is recorded with a DEA registration expiring "
                               f"{recorded.expires_on.isoformat()}, schedules {', '.join(recorded.schedules)}; the "
                               "return says otherwise: record its renewed registration first, or leave it out",
                               field="recipient_registration_expires_on")
            if not sup["authorized_trading_partner"]:
                raise Conflict(f"{sup['name']} is not an authorized trading partner under DSCSA (21 U.S.C. "
                               "360eee-1(d)(3)): a dispenser returns product only to an authorized trading partner",
                               field="recipient_dea_number")
            return recorded, sup["supplier_id"], True
    if carried is None:
        raise InvalidInput(f"the {recipient_type.replace('_', ' ')}'s DEA registration expiry is required "
                           "(YYYY-MM-DD), with its schedules: stock is returned only to a currently registered "
                           "recipient (21 CFR Part 1317)", field="recipient_registration_expires_on")
    return carried, None, None


def _check_recipient(name: str, dea: str, registration: ev.DeaRegistration, on: date, vials: Sequence[ev.MovedVial],
                     *, prefix: str, what: str, carried: bool) -> None:
    """Refuse stock leaving to a registration expired on ``on`` or not covering its schedules:
    invalid input (422) when the command carried the registration (its own fields say no), a
    conflict with the record (409) when it is a recorded supplier's."""
    refusal = trading_partners.recipient_refusal(name, dea, registration.expires_on, registration.schedules, on,
                                                 {v.product.schedule for v in vials}, what=what)
    if refusal is not None:
        problem, why = refusal
        raise (InvalidInput if carried else Conflict)(
            why, field=f"{prefix}_registration_expires_on" if problem == trading_partners.EXPIRED
            else f"{prefix}_schedules")


def next_business_day(d: date) -> date:
    """The business day after ``d``: not a weekend, not a US federal holiday (``holidays``)."""
    us = holidays.country_holidays("US", years=range(d.year, d.year + 2))
    n = d + timedelta(days=1)
    while n.weekday() >= 5 or n in us:
        n += timedelta(days=1)
    return n


def _end_of_local_day(d: date, tz: zoneinfo.ZoneInfo) -> str:
    return format_time(datetime.combine(d + timedelta(days=1), time(0), tz) - timedelta(microseconds=1))


def notice_deadlines(discovered_at: datetime, tz: zoneinfo.ZoneInfo) -> tuple[str, str]:
    """(written notice due, Form 106 due): the end of the business day after discovery, and
    the end of the 45th day (21 CFR 1301.76(b))."""
    local = discovered_at.astimezone(tz).date()
    return (_end_of_local_day(next_business_day(local), tz),
            _end_of_local_day(local + timedelta(days=FORM_106_DAYS), tz))


def form106_fields(cmd: ReportTheftOrLoss) -> dict[str, str | None]:
    """Issue 20: the parts of Form 106 a report must carry besides its quantities: what
    happened (``narrative``), what was done so it does not happen again (``corrective_measures``),
    the explanation of a loss of type "other" (required then, refused otherwise), and the
    registrant's contact for DEA (name and telephone)."""
    out: dict[str, str | None] = {
        "narrative": _required(cmd.narrative, "narrative", 4000,
                               "say what happened: how the loss was discovered and what is known"),
        "corrective_measures": _required(cmd.corrective_measures, "corrective_measures", 2000,
                                         "say what was done so it does not happen again"),
        "other_explanation": None,
    }
    if cmd.loss_type == "other":
        out["other_explanation"] = _required(cmd.other_explanation, "other_explanation", 1000,
                                             "a loss of type 'other' needs its explanation")
    elif cmd.other_explanation is not None:
        raise InvalidInput("only a loss of type 'other' carries an explanation of its type; put the details in "
                           "the narrative", field="other_explanation")
    out["contact_name"] = _required(cmd.contact_name, "contact_name", 200,
                                    "name the person DEA may contact about this report")
    phone = _required(cmd.contact_phone, "contact_phone", 40, "give the contact's telephone number")
    why = form106.phone_refusal(phone)
    if why is not None:
        raise InvalidInput(f"must be {why}", field="contact_phone")
    out["contact_phone"] = phone
    return out


def _required(value: object, field: str, max_len: int, missing: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidInput(f"required on Form 106: {missing}", field=field)
    return text(value, field=field, max_len=max_len)


def report_theft_or_loss(ledger: Ledger, principal: Principal, cmd: ReportTheftOrLoss, *,
                         witness: Principal | None = None, idempotency_key: str | None = None) -> dict:
    """Theft or significant loss with every Form 106 field; vials lost now leave the book here,
    losses already adjusted (``covers_seqs``) are referenced, not moved again. A report that
    takes vials off the book (``lost``) is signed by a second, authenticated person
    (``witness``), not the reporter: two people on every record that reduces stock."""
    discovered = aware(cmd.discovered_at, field="discovered_at")
    if cmd.loss_type not in LOSS_TYPES:
        raise InvalidInput(f"must be one of {', '.join(LOSS_TYPES)}", field="loss_type")
    if cmd.loss_type == form106.IN_TRANSIT:  # issue 20: the supplier's report, not the clinic's clock
        raise InvalidInput(form106.IN_TRANSIT_REFUSAL, field="loss_type")
    form = form106_fields(cmd)
    if not isinstance(cmd.police_notified, bool):
        raise InvalidInput("must be true or false", field="police_notified")
    dept = text(cmd.police_department, field="police_department") if cmd.police_department is not None else None
    report_no = (text(cmd.police_report_number, field="police_report_number", max_len=64)
                 if cmd.police_report_number is not None else None)
    if cmd.police_notified and dept is None:
        raise InvalidInput("name the police department notified", field="police_department")
    past = parse_count(cmd.losses_past_24_months, field="losses_past_24_months")
    value = parse_amount(cmd.purchase_value_usd, field="purchase_value_usd", allow_zero=True)
    if not cmd.lost and not cmd.covers_seqs:
        raise InvalidInput("name the vials lost, or the loss adjustments this report covers", field="lost")
    lost_in = []
    for i, ln in enumerate(cmd.lost):
        ml = parse_volume(ln.ml, field=f"lost[{i}].ml") if ln.ml is not None else None
        lost_in.append((ln.vial_id, ml))

    if witness is not None and not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=LOSS_REPORTERS)
        signatures = [sig]
        if lost_in:
            signatures.append(sign_witness(ctx, principal, witness))
        if discovered > ctx.now + FUTURE_TOLERANCE:
            raise InvalidInput("is in the future", field="discovered_at")
        docs = stored_documents(ctx, cmd.documents)
        lost = []
        rows = [vial_for_use(ctx, vial_id, field=f"lost[{i}].vial_id", packaged_ok=True)
                for i, (vial_id, _) in enumerate(lost_in)]
        whole_packages(ctx, rows, field="lost", suffix=".vial_id")  # issue 19: a sealed carton is lost whole
        for i, ((vial_id, ml), v) in enumerate(zip(lost_in, rows, strict=True)):
            take = v["ml_left"] if ml is None else ml
            if take > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; the book cannot lose {take} mL",
                               field=f"lost[{i}].ml")
            if v.get("packaged") and take != v["ml_left"]:
                raise Conflict(f"vial {vial_id} is in sealed package {v['package_id']}: it is lost whole",
                               field=f"lost[{i}].ml")
            lost.append(ev.VialAdjustment(vial_id, product_of_vial(ctx, v), take, take == v["ml_left"]))
        for i, s in enumerate(cmd.covers_seqs):
            if entry_at(ctx, s, field=f"covers_seqs[{i}]")["kind"] != "loss_adjusted":
                raise Conflict(f"entry {s} is not a loss adjustment", field=f"covers_seqs[{i}]")
        notice_due, form_due = notice_deadlines(discovered, registrant_tz(ctx))
        ctx.append(ev.TheftOrLossReported(
            registrant_copy=registrant_copy(ctx), discovered_at=format_time(discovered), loss_type=cmd.loss_type,
            police_notified=cmd.police_notified, police_department=dept, police_report_number=report_no,
            losses_past_24_months=past, purchase_value_usd=value, lost=tuple(lost),
            covers_seqs=tuple(cmd.covers_seqs), notice_due_at=notice_due, form_106_due_at=form_due, documents=docs,
            **form,
        ), signatures=signatures, occurred_at=discovered)
        return {"notice_due_at": notice_due, "form_106_due_at": form_due}

    return run(ledger, principal, "report_theft_or_loss", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})
