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
from ledger.domain.commands import (
    DestroyStock,
    ReportTheftOrLoss,
    ReturnStock,
    TransferStock,
)
from ledger.domain.errors import Conflict, InvalidInput
from ledger.domain.identifiers import parse_dea_number
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_amount, parse_count, q2
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
        for i, vial_id in enumerate(ids):
            v = vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]")
            p = product_of_vial(ctx, v)
            full = v["opened_at"] is None and v["ml_left"] == v["container_ml"]
            items.append(ev.DestroyedItem(vial_id=vial_id, product=p, lot=v["lot"], full_package=full, ml=v["ml_left"],
                                          mg=q2(v["ml_left"] * p.strength_mg_per_ml)))
        ctx.append(ev.StockDestroyed(registrant_copy=registrant_copy(ctx), items=tuple(items), method=method,
                                     place=place, reason=reason, late_reason=late, documents=docs),
                   signatures=[sig, *wsigs], occurred_at=occurred)
        return {"destroyed_ml": str(sum((i.ml for i in items), ZERO))}

    return run(ledger, principal, "destroy_stock", cmd, build, idempotency_key,
                {**request_fields(cmd), "witnesses": [getattr(w, "staff_id", None) for w in witnesses]})


def _moved(ctx: CommandContext, ids: Sequence[str], *, sealed_only: bool) -> list[ev.MovedVial]:
    out = []
    for i, vial_id in enumerate(ids):
        f = f"vial_ids[{i}]"
        v = vial_for_use(ctx, vial_id, field=f)
        if sealed_only and (v["opened_at"] is not None or v["state"] != "sealed"):
            raise Conflict(f"vial {vial_id} is {v['state']}; only sealed, released stock is transferred", field=f)
        out.append(ev.MovedVial(vial_id=vial_id, product=product_of_vial(ctx, v), lot=v["lot"],
                                expiry=date.fromisoformat(v["expiry"]), ml=v["ml_left"]))
    return out


def _year_units(ctx: CommandContext, year: int, unit: str, tz: zoneinfo.ZoneInfo) -> tuple[Decimal, Decimal]:
    """(units transferred to practitioners, units dispensed) this calendar year, from the entries."""
    start = format_time(datetime(year, 1, 1, tzinfo=tz))
    end = format_time(datetime(year + 1, 1, 1, tzinfo=tz))
    rows = ctx.view.raw.rows(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND kind IN "
                                       "('stock_transferred', 'dose_administered') AND occurred_at >= :s "
                                       "AND occurred_at < :e", {"r": ctx.registrant, "s": start, "e": end})
    transferred = dispensed = Decimal(0)
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if e["kind"] == "stock_transferred":
            transferred += sum((_units(Decimal(v["ml"]), Decimal(v["product"]["container_ml"]), unit) for v in e["vials"]),
                               Decimal(0))
        else:
            cml = Decimal(e["draws"][0]["product"]["container_ml"])
            dispensed += _units(Decimal(e["ml_given"]), cml, unit)
    return transferred, dispensed


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
    packed against the invoice and signs (two people on every record that reduces stock)."""
    ids = vial_ids(cmd.vial_ids)
    receiver = parse_dea_number(cmd.receiver_dea_number, field="receiver_dea_number")
    name = text(cmd.receiver_name, field="receiver_name")
    addr = address(cmd.receiver_address, field="receiver_address")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, principal, witness)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        if receiver == ctx.registrant:
            raise Conflict("a registrant cannot transfer to itself", field="receiver_dea_number")
        vials = _moved(ctx, ids, sealed_only=True)
        policy = current_policy(ctx)
        tz = registrant_tz(ctx)
        t_prior, dispensed = _year_units(ctx, occurred.astimezone(tz).year, policy.dosage_unit, tz)
        t_now = sum((_units(v.ml, v.product.container_ml, policy.dosage_unit) for v in vials), Decimal(0))
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
                                       late_reason=late), signatures=[sig, wsig], occurred_at=occurred)
        return {"transferred_ml": str(sum((v.ml for v in vials), ZERO))}

    return run(ledger, principal, "transfer_stock", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})


def return_stock(ledger: Ledger, principal: Principal, cmd: ReturnStock, *, witness: Principal | None = None,
                 idempotency_key: str | None = None) -> dict:
    """Return vials to the supplier or hand them to a reverse distributor (Part 1317), on an
    invoice; not counted toward the 5% transfer limit. Signed by a second person (``witness``)
    who checks what leaves against the invoice."""
    ids = vial_ids(cmd.vial_ids)
    if cmd.recipient_type not in ("supplier", "reverse_distributor"):
        raise InvalidInput("must be 'supplier' or 'reverse_distributor'", field="recipient_type")
    name = text(cmd.recipient_name, field="recipient_name")
    addr = address(cmd.recipient_address, field="recipient_address")
    dea = parse_dea_number(cmd.recipient_dea_number, field="recipient_dea_number")
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, principal, witness)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        vials = _moved(ctx, ids, sealed_only=False)
        ctx.append(ev.StockReturned(recipient_type=cmd.recipient_type, recipient_name=name, recipient_address=addr,
                                    recipient_dea_number=dea, invoice_number=invoice, vials=tuple(vials),
                                    late_reason=late), signatures=[sig, wsig], occurred_at=occurred)
        return {"returned_ml": str(sum((v.ml for v in vials), ZERO))}

    return run(ledger, principal, "return_stock", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})


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


def report_theft_or_loss(ledger: Ledger, principal: Principal, cmd: ReportTheftOrLoss, *,
                         witness: Principal | None = None, idempotency_key: str | None = None) -> dict:
    """Theft or significant loss with every Form 106 field; vials lost now leave the book here,
    losses already adjusted (``covers_seqs``) are referenced, not moved again. A report that
    takes vials off the book (``lost``) is signed by a second, authenticated person
    (``witness``), not the reporter: two people on every record that reduces stock."""
    discovered = aware(cmd.discovered_at, field="discovered_at")
    if cmd.loss_type not in LOSS_TYPES:
        raise InvalidInput(f"must be one of {', '.join(LOSS_TYPES)}", field="loss_type")
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
        ml = parse_amount(ln.ml, field=f"lost[{i}].ml") if ln.ml is not None else None
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
        for i, (vial_id, ml) in enumerate(lost_in):
            v = vial_for_use(ctx, vial_id, field=f"lost[{i}].vial_id")
            take = v["ml_left"] if ml is None else ml
            if take > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; the book cannot lose {take} mL",
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
        ), signatures=signatures, occurred_at=discovered)
        return {"notice_due_at": notice_due, "form_106_due_at": form_due}

    return run(ledger, principal, "report_theft_or_loss", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})
