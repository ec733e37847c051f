"""Stock coming in and stock on the shelf: receipts on invoices (21 CFR 1304.22(c)) and the
initial, biennial and other inventories (21 CFR 1304.11).

Issue 20: every inventory is taken by one person and witnessed by a second, both authenticated.
A biennial or other inventory is compared with the book at that instant, product by product
(``ledger.domain.inventory.compare``); every difference, a vial on the book not found among them,
opens a discrepancy resolved like a count's (``services.discrepancies``).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain import gs1, trading_partners
from ledger.domain.commands import (
    ReceiveStock,
    TakeInventory,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.form106 import transit_shortages  # issue 20
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_count, parse_volume
from ledger.services.common import (
    current_policy,
    event_time,
    expiry_date,
    product_copy,
    product_of_vial,
    registrant_tz,
    request_fields,
    sign_witness,
    text,
)
from ledger.services.documents import stored_documents
from ledger.storage.store import CommandContext, Ledger, has_entry_of_kind

RECEIVERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER})


INVENTORY_TAKERS = frozenset({Role.PHARMACIST, Role.MANAGER, Role.NURSE})

#: Issue 20: the inventory types. "other": an inventory the rules call for besides the initial and
#: the biennial (21 CFR 1304.11(d)/(e): a substance newly controlled, a change of ownership, a
#: state's or the DEA's request), taken like a biennial one, with its reason.
INVENTORY_TYPES = ("initial", "biennial", "other")


def take_inventory(ledger: Ledger, principal: Principal, cmd: TakeInventory, *, idempotency_key: str | None = None,
                   witness: Principal | None = None) -> dict:
    """An initial (possibly empty), biennial or other inventory, taken by ``principal`` and
    witnessed by ``witness``: a different authenticated person, required (issue 20).

    An initial inventory creates the book (every container gets an identity): there is no book
    yet to compare it with. A biennial or other inventory names the vials on the book it found
    and is compared with the book at that instant, product by product; the answer and the entry
    name the discrepancies opened (``discrepancy_ids``)."""
    if cmd.inventory_type not in INVENTORY_TYPES:
        raise InvalidInput("must be 'initial', 'biennial' or 'other'", field="inventory_type")
    reason = getattr(cmd, "reason", None)
    if cmd.inventory_type == "other":
        reason = text(reason, field="reason", max_len=500)
    elif reason is not None:
        raise InvalidInput("only an 'other' inventory gives a reason (a biennial or initial inventory is "
                           "required by its type)", field="reason")
    if cmd.taken_at not in ("opening_of_business", "close_of_business"):
        raise InvalidInput("must be 'opening_of_business' or 'close_of_business'", field="taken_at")
    if cmd.inventory_type == "initial":
        for i, item in enumerate(cmd.items):
            if getattr(item, "vial_id", None) is not None:  # never dropped silently: say it is not used
                raise InvalidInput("an initial inventory gives every container a new identity; vial_id names a vial "
                                   "already on the book (biennial inventories only)", field=f"items[{i}].vial_id")

    def build(ctx: CommandContext) -> dict:
        sigs = [ctx.signature(principal, Meaning.PERFORMED, roles=INVENTORY_TAKERS)]
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        sigs.append(sign_witness(ctx, principal, witness))  # issue 20: required, another person
        prior = [r for r in ctx.view.select("vials", registrant=ctx.registrant)]
        if cmd.inventory_type == "initial" and (prior or _has_initial_inventory(ctx)):
            raise Conflict("this registrant already has stock or an initial inventory; take a biennial inventory", field="inventory_type")
        if cmd.inventory_type != "initial":
            items = _biennial_items(ctx, cmd)
            lines = _compared_with_book(ctx, items)
            ctx.append(ev.InventoryTaken(inventory_type=cmd.inventory_type, taken_at=cmd.taken_at, items=items,
                                         late_reason=late, documents=_inventory_documents(ctx, cmd), lines=lines,
                                         reason=reason),
                       signatures=sigs, occurred_at=occurred)
            return {"vial_ids": [i.vial_id for i in items],
                    "discrepancy_ids": [ln.discrepancy_id for ln in lines if ln.discrepancy_id],
                    "lines": [{"ndc": ln.product.ndc, "name": ln.product.name,
                               "expected_sealed_containers": ln.expected_sealed_containers,
                               "expected_open_containers": ln.expected_open_containers,
                               "expected_ml": str(ln.expected_ml),
                               "found_sealed_containers": ln.found_sealed_containers,
                               "found_open_containers": ln.found_open_containers, "found_ml": str(ln.found_ml),
                               "difference_ml": str(ln.difference_ml), "vials_not_found": list(ln.vials_not_found),
                               "discrepancy_id": ln.discrepancy_id} for ln in lines]}
        items: list[ev.InventoryItem] = []
        n = 0
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        for i, item in enumerate(cmd.items):
            f = f"items[{i}]"
            product = product_copy(ctx, item.ndc, field=f"{f}.ndc")
            _whole_device(product, item, field=f"{f}.sealed")  # issue 19
            lot = text(item.lot, field=f"{f}.lot", max_len=64)
            expiry = expiry_date(item.expiry, field=f"{f}.expiry")
            if item.sealed:
                if item.ml is not None:
                    raise InvalidInput("a sealed container is counted exactly; give no mL estimate", field=f"{f}.ml")
                if item.first_punctured_on is not None or item.first_puncture_estimated:
                    raise InvalidInput("a sealed container was never punctured; give first_punctured_on only for "
                                       "an opened vial", field=f"{f}.first_punctured_on")
                count = parse_count(item.containers, field=f"{f}.containers", allow_zero=False)
                for _ in range(count):
                    n += 1
                    items.append(ev.InventoryItem(
                        vial_id=f"V{ctx.next_seq}-{n}", product=product, lot=lot, expiry=expiry,
                        sealed=True, ml=product.container_ml, estimated=False))
            else:
                if item.containers != 1:
                    raise InvalidInput("give one line per opened vial", field=f"{f}.containers")
                if item.ml is None:
                    raise InvalidInput("an opened vial needs its estimated mL left", field=f"{f}.ml")
                ml = parse_volume(item.ml, field=f"{f}.ml")  # issue 19: syringe resolution
                if ml > product.container_ml:
                    raise InvalidInput(f"{ml} mL is more than the {product.container_ml} mL container holds", field=f"{f}.ml")
                punctured = _first_puncture(item, local_day, field=f"{f}.first_punctured_on")
                n += 1
                items.append(ev.InventoryItem(
                    vial_id=f"V{ctx.next_seq}-{n}", product=product, lot=lot, expiry=expiry,
                    sealed=False, ml=ml, estimated=True, first_punctured_on=punctured,
                    first_puncture_estimated=bool(item.first_puncture_estimated),
                    beyond_use_date=punctured + timedelta(days=current_policy(ctx).beyond_use_days)))
        ctx.append(ev.InventoryTaken(inventory_type=cmd.inventory_type, taken_at=cmd.taken_at,
                                     items=tuple(items), late_reason=late, documents=_inventory_documents(ctx, cmd)),
                   signatures=sigs, occurred_at=occurred)
        # An initial inventory creates the book: nothing to compare it with, no discrepancy.
        return {"vial_ids": [i.vial_id for i in items], "discrepancy_ids": [], "lines": []}

    request = {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)}
    return ledger.execute(principal.registrant, "take_inventory", request, build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _first_puncture(item: Any, local_day: date, *, field: str) -> date:
    """The day an opened vial of an initial inventory was first punctured: required, so its
    beyond-use date (USP <797>: 28 days from first puncture) runs from then and not from its
    first draw in csledger; never after the inventory."""
    if item.first_punctured_on is None:
        raise InvalidInput("when was this opened vial first punctured? Give the day (YYYY-MM-DD); if nobody knows, "
                           "give a careful estimate and set first_puncture_estimated", field=field)
    try:
        day = date.fromisoformat(str(item.first_punctured_on).strip())
    except ValueError:
        raise InvalidInput(f"{str(item.first_punctured_on)[:40]!r} is not a day (YYYY-MM-DD)", field=field) from None
    if day > local_day:
        raise InvalidInput(f"{day} is after the inventory ({local_day}): a vial on the shelf was punctured before it",
                           field=field)
    return day


def _has_initial_inventory(ctx: CommandContext) -> bool:
    return has_entry_of_kind(ctx.conn, "inventory_taken", ctx.registrant)


def supplier_copy(sup: dict) -> ev.SupplierCopy:
    """The ``suppliers`` row as a receipt copies it: with the registration and DSCSA status it was
    checked against (issue 19; ``verify --deep`` replays them, rule ``supplier-registered``)."""
    return ev.SupplierCopy(
        supplier_id=sup["supplier_id"], name=sup["name"],
        address=ev.Address(sup["street"], sup["city"], sup["state"], sup["postal_code"]),
        dea_number=sup["dea_number"],
        registration=ev.DeaRegistration(date.fromisoformat(str(sup["registration_expires_on"])),
                                        tuple(x for x in sup["schedules"].split(",") if x)),
        authorized_trading_partner=bool(sup["authorized_trading_partner"]),
    )


def receive_stock(ledger: Ledger, principal: Principal, cmd: ReceiveStock, *, idempotency_key: str | None = None) -> dict:
    """A receipt on an invoice (Schedule III moves on invoices, not Form 222). Each container
    gets its own identity; the supplier and product are copied into the entry."""
    invoice = text(cmd.invoice_number, field="invoice_number", max_len=64)
    notes = text(cmd.notes, field="notes", max_len=1000, allow_empty=True)
    if not cmd.lines:
        raise InvalidInput("a receipt needs at least one line", field="lines")
    if len(cmd.lines) > 200:
        raise InvalidInput("at most 200 lines per receipt", field="lines")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.RECEIVED, roles=RECEIVERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        sup = ctx.view.get("suppliers", (ctx.registrant, cmd.supplier_id))
        if sup is None:
            raise NotFound(f"no supplier {cmd.supplier_id!r} at {ctx.registrant}; add the supplier first", field="supplier_id")
        if ctx.view.get("invoices", (ctx.registrant, cmd.supplier_id, invoice)) is not None:
            raise Conflict(f"invoice {invoice} from {sup['name']} is already received", field="invoice_number")
        lines: list[ev.ReceivedLine] = []
        n = 0
        seen_ids: set[str] = set()
        # A lot's expiry is a calendar date at the clinic: compare it with the receipt's local
        # day, not the date in whatever offset the client sent (an evening receipt sent in UTC
        # fell on the next day and its lot, expiring that day, was refused as expired).
        local_day = occurred.astimezone(registrant_tz(ctx)).date()
        packages_numbered = [0]  # issue 19: the receipt's running package number
        for i, line in enumerate(cmd.lines):
            f = f"lines[{i}]"
            product = product_copy(ctx, line.ndc, field=f"{f}.ndc")
            if getattr(line, "packages", None) is not None:  # issue 19: a line in packages (cartons, kits)
                lines.append(_line_in_packages(ctx, line, product, local_day, field=f, seen=seen_ids,
                                               number=packages_numbered))
                continue
            containers = parse_count(line.containers, field=f"{f}.containers", allow_zero=False)
            if containers > 1000:
                raise InvalidInput("at most 1000 containers per line", field=f"{f}.containers")
            expiry = expiry_date(line.expiry, field=f"{f}.expiry")
            if expiry < local_day:
                raise InvalidInput(f"lot expired on {expiry}; expired stock cannot be received into use", field=f"{f}.expiry")
            lot = text(line.lot, field=f"{f}.lot", max_len=64)
            # issue 3: DSCSA product identifiers; a serialized vial is identified by GTIN + serial.
            gtin, serials = _product_identifiers(ctx, line, product, lot, expiry, containers, field=f)
            invoiced = None
            if getattr(line, "invoiced_containers", None) is not None:
                invoiced = parse_count(line.invoiced_containers, field=f"{f}.invoiced_containers")
            ids = []
            for k in range(containers):
                if serials:
                    vid = gs1.vial_id(gtin, serials[k])
                    if vid in seen_ids or ctx.view.get("vials", (ctx.registrant, vid)) is not None:
                        raise Conflict(f"a vial with GTIN {gtin} and serial {serials[k]} is already on record "
                                       "(suspect product: quarantine and verify it)", field=f"{f}.serials[{k}]")
                    seen_ids.add(vid)
                    ids.append(vid)
                else:
                    n += 1
                    ids.append(f"V{ctx.next_seq}-{n}")
            lines.append(ev.ReceivedLine(product=product, containers=containers, lot=lot,
                                         expiry=expiry, vial_ids=tuple(ids), gtin=gtin, serials=serials,
                                         invoiced_containers=invoiced,
                                         quarantined=bool(getattr(line, "quarantine", False))))
        # Issue 19: only from a currently registered distributor of these schedules, and an
        # authorized trading partner under DSCSA; the receipt copies what it was checked against.
        refusal = trading_partners.receipt_refusal(sup, local_day, {ln.product.schedule for ln in lines})
        if refusal is not None:
            raise Conflict(refusal, field="supplier_id")
        supplier = supplier_copy(sup)
        dscsa = (text(cmd.dscsa_reference, field="dscsa_reference", max_len=200)
                 if getattr(cmd, "dscsa_reference", None) is not None else None)
        docs = stored_documents(ctx, getattr(cmd, "documents", ()))
        ctx.append(ev.StockReceived(invoice_number=invoice, supplier=supplier, lines=tuple(lines),
                                    late_reason=late, notes=notes, dscsa_reference=dscsa, documents=docs),
                   signatures=[sig], occurred_at=occurred)
        return {"vial_ids": [v for ln in lines for v in ln.vial_ids],
                "package_ids": [p for ln in lines for p in ln.package_ids],  # issue 19
                "invoice_mismatches": [i for i, ln in enumerate(lines)
                                       if (ln.invoiced_containers is not None and ln.invoiced_containers != ln.containers)
                                       or (ln.invoiced_packages is not None and ln.invoiced_packages != ln.packages)],
                "total_ml": str(sum((ln.product.container_ml * ln.containers for ln in lines), Decimal("0.00"))),
                # issue 20: fewer than invoiced is a loss in transit, the supplier's to report
                "in_transit_shortages": transit_shortages(invoice, sup["name"], lines)}

    return ledger.execute(principal.registrant, "receive_stock", request_fields(cmd), build,
                          principal_id=principal.staff_id, idempotency_key=idempotency_key)


def _line_in_packages(ctx: CommandContext, line: Any, product: ev.ProductDescription, local_day: date, *,
                      field: str, seen: set[str], number: list[int]) -> ev.ReceivedLine:
    """Issue 19: a receipt line in packages (``services.packages.package_line``), with the
    checks every line has (expiry, lot, GS1 identifiers of the packages)."""
    from ledger.services.packages import package_line

    expiry = expiry_date(line.expiry, field=f"{field}.expiry")
    if expiry < local_day:
        raise InvalidInput(f"lot expired on {expiry}; expired stock cannot be received into use", field=f"{field}.expiry")
    lot = text(line.lot, field=f"{field}.lot", max_len=64)
    return package_line(ctx, line, product, lot, expiry, field=field, seen=seen, number=number,
                        identifiers=lambda n: _product_identifiers(ctx, line, product, lot, expiry, n, field=field))


def _product_identifiers(ctx: CommandContext, line: Any, product: ev.ProductDescription, lot: str, expiry: date,
                         containers: int, *, field: str) -> tuple[str | None, tuple[str, ...]]:
    """(GTIN, serials) of a receipt line from raw GS1 scans (parsed by ``biip``) or from an
    already-parsed GTIN and serials; each must match the line's product, lot and expiry."""
    scans = tuple(getattr(line, "scans", ()) or ())
    gtin = getattr(line, "gtin", None)
    serials = tuple(getattr(line, "serials", ()) or ())
    if scans:
        if gtin is not None or serials:
            raise InvalidInput("give raw scans or a parsed GTIN with serials, not both", field=f"{field}.scans")
        gtins = set()
        parsed_serials = []
        for k, raw_scan in enumerate(scans):
            pid = gs1.parse_scan(raw_scan, field=f"{field}.scans[{k}]")
            if pid.serial is None:
                raise InvalidInput("the scan carries no serial (21)", field=f"{field}.scans[{k}]")
            if pid.lot is not None and pid.lot != lot:
                raise InvalidInput(f"the carton's lot {pid.lot} is not the line's lot {lot}", field=f"{field}.scans[{k}]")
            if pid.expiry is not None and pid.expiry != expiry:
                raise InvalidInput(f"the carton's expiry {pid.expiry} is not the line's {expiry}", field=f"{field}.scans[{k}]")
            gtins.add(pid.gtin)
            parsed_serials.append(pid.serial)
        if len(gtins) != 1:
            raise InvalidInput("one line holds cartons of one GTIN", field=f"{field}.scans")
        gtin, serials = gtins.pop(), tuple(parsed_serials)
    if gtin is None and not serials:
        return None, ()
    if gtin is None or not isinstance(gtin, str) or len(gtin.zfill(14)) != 14 or not gtin.isdigit():
        raise InvalidInput("must be a GTIN of up to 14 digits", field=f"{field}.gtin")
    gtin = gtin.zfill(14)
    if gs1.gtin_check_digit(gtin[:13]) != int(gtin[13]):
        raise InvalidInput(f"GTIN {gtin} does not check", field=f"{field}.gtin")
    if product.ndc_key not in gs1.ndc_keys_of_gtin(gtin):
        raise InvalidInput(f"GTIN {gtin} is not the GTIN of NDC {product.ndc}", field=f"{field}.gtin")
    for k, s in enumerate(serials):
        gs1.check_serial(s, field=f"{field}.serials[{k}]")
    if len(set(serials)) != len(serials):
        raise InvalidInput("a serial is scanned twice", field=f"{field}.serials")
    if len(serials) != containers:
        raise InvalidInput(f"{containers} containers need {containers} scanned serials, not {len(serials)}",
                           field=f"{field}.containers")
    return gtin, serials


def _biennial_items(ctx: CommandContext, cmd: TakeInventory) -> tuple[ev.InventoryItem, ...]:
    """A biennial inventory (issue 3) counts the vials on the book, each named: sealed ones
    exactly, opened ones as an estimate in mL. It records what was on hand; it moves nothing."""
    from ledger.domain.projections import ON_HAND

    items = []
    seen = set()
    for i, item in enumerate(cmd.items):
        f = f"items[{i}]"
        if not isinstance(item.vial_id, str) or not item.vial_id:
            raise InvalidInput("a biennial inventory names each vial on hand", field=f"{f}.vial_id")
        if item.vial_id in seen:
            raise InvalidInput(f"vial {item.vial_id} is listed twice", field=f"{f}.vial_id")
        seen.add(item.vial_id)
        if getattr(item, "first_punctured_on", None) is not None or getattr(item, "first_puncture_estimated", False):
            # never dropped silently: the book already holds when a vial on it was opened
            raise InvalidInput("a biennial inventory names vials already on the book, whose opening is recorded; "
                               "first_punctured_on belongs to an initial inventory", field=f"{f}.first_punctured_on")
        v = ctx.view.get("vials", (ctx.registrant, item.vial_id))
        if v is None or v["state"] not in ON_HAND:
            raise NotFound(f"vial {item.vial_id} is not on hand at {ctx.registrant}", field=f"{f}.vial_id")
        product = product_copy(ctx, item.ndc, field=f"{f}.ndc")
        _whole_device(product, item, field=f"{f}.sealed")  # issue 19
        if product.ndc_key != v["ndc_key"]:
            raise InvalidInput(f"vial {item.vial_id} is NDC key {v['ndc_key']}, not {product.ndc}", field=f"{f}.ndc")
        if item.sealed:
            if item.ml is not None:
                raise InvalidInput("a sealed container is counted exactly; give no mL estimate", field=f"{f}.ml")
            ml = product.container_ml
        else:
            if item.ml is None:
                raise InvalidInput("an opened vial needs its estimated mL left", field=f"{f}.ml")
            ml = parse_volume(item.ml, field=f"{f}.ml", allow_zero=True)  # issue 19: syringe resolution
            if ml > product.container_ml:
                raise InvalidInput(f"{ml} mL is more than the {product.container_ml} mL container holds", field=f"{f}.ml")
        items.append(ev.InventoryItem(vial_id=item.vial_id, product=product, lot=v["lot"],
                                      expiry=date.fromisoformat(v["expiry"]), sealed=item.sealed, ml=ml,
                                      estimated=not item.sealed))
    return tuple(items)


def _compared_with_book(ctx: CommandContext, items: tuple[ev.InventoryItem, ...]) -> tuple[ev.InventoryLine, ...]:
    """Issue 20: the inventory against the book at this instant, product by product (the one
    comparison ``verify --deep`` runs again)."""
    from ledger.domain import inventory

    def opened(pid: str) -> bool:
        return (ctx.view.get("packages", (ctx.registrant, pid)) or {}).get("opened_seq") is not None

    book = inventory.book_vials(ctx.view.select("vials", registrant=ctx.registrant), opened)
    listed = [inventory.Listed(i.vial_id, i.product.ndc_key, i.sealed, i.ml) for i in items]
    try:
        compared = inventory.compare(ctx.next_seq, book, listed)
    except inventory.NotOnBook as exc:
        k = next(n for n, i in enumerate(items) if i.vial_id == exc.vial_id)
        raise Conflict(f"vial {exc.vial_id} was not found when its package was opened; it is under that opening's "
                       "discrepancy until a manager resolves it", field=f"items[{k}].vial_id") from None
    # A unit still in its sealed package (issue 19) is counted with the package, whole: found
    # sealed with every other unit of it, or not found with them (a loss then takes the package
    # whole, as ``verify --deep`` requires); what is inside is known only when it is opened.
    listed_ids = {i.vial_id: n for n, i in enumerate(items)}
    packages: dict[str, list[str]] = {}
    for v in book:
        if v.get("packaged") and v.get("package_id"):
            packages.setdefault(v["package_id"], []).append(v["vial_id"])
    for pid, units in sorted(packages.items()):
        found = [u for u in units if u in listed_ids]
        if found and (len(found) != len(units) or not all(items[listed_ids[u]].sealed for u in found)):
            k = listed_ids[found[0]]
            raise InvalidInput(f"vial {found[0]} is in sealed package {pid}: a sealed package is counted whole, "
                               f"all its {len(units)} units found sealed or none (open it before a witness to "
                               "count what is inside)", field=f"items[{k}].vial_id")
    products = {i.product.ndc_key: i.product for i in items}
    for v in book:
        if v["ndc_key"] not in products:
            products[v["ndc_key"]] = product_of_vial(ctx, v)
    return tuple(ev.InventoryLine(
        product=products[c["ndc_key"]], expected_sealed_containers=c["expected_sealed_containers"],
        expected_open_containers=c["expected_open_containers"], expected_ml=c["expected_ml"],
        found_sealed_containers=c["found_sealed_containers"], found_open_containers=c["found_open_containers"],
        found_ml=c["found_ml"], difference_ml=c["difference_ml"], vials_not_found=c["vials_not_found"],
        discrepancy_id=c["discrepancy_id"]) for c in compared)


def _inventory_documents(ctx: CommandContext, cmd: TakeInventory) -> tuple[str, ...]:
    """SHA-256 of stored documents (the signed printed inventory), checked to exist (issue 3)."""
    return stored_documents(ctx, getattr(cmd, "documents", ()))


# --- esketamine devices (issue 19, esketamine part) ---------------------------------------------


def _whole_device(product: ev.ProductDescription, item, *, field: str) -> None:
    """A nasal-spray device is single use and leaves the book whole with the session that used
    it: an inventory counts devices, whole, and an opened device is never on hand."""
    from ledger.domain.esketamine import is_device

    if is_device(product) and not item.sealed:
        raise InvalidInput(f"{product.name} is counted in nasal-spray devices, each whole: a device is single use, "
                           "so an opened one is not on hand (count the sealed devices only)", field=field)
