"""Blind counts by two counters, the discrepancies they open, and their resolution.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from ledger.domain import entries as ev
from ledger.domain.commands import (
    StartCount,
    SubmitCount,
)
from ledger.domain.counting import line_tolerance, opens_discrepancy, within_tolerance
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.esketamine import is_device
from ledger.domain.inventory import book_vials
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import norm, parse_count, parse_volume
from ledger.integrity.canonical import format_time, parse_time
from ledger.services.common import (
    ZERO,
    current_policy,
    event_time,
    product_copy,
    request_fields,
    run,
)
from ledger.storage.stock_reads import stock_reads_during
from ledger.storage.store import CommandContext, Ledger

COUNTERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER})

#: How long a count session stays open: long enough to count a safe, short enough that a
#: session cannot be left open to read the book first (reads while open are listed in the count).
COUNT_SESSION_OPEN_FOR = timedelta(minutes=30)


def _on_book(ctx: CommandContext, ndc_key: str) -> list[dict]:
    """The vials of one product a count expects to find: the book an inventory is compared with
    (``ledger.domain.inventory.book_vials``: on hand, less a unit still "in" a package opened
    short, whose shortfall is already that opening's discrepancy; review finding F1)."""
    opened: dict[str, bool] = {}

    def package_opened(pid: str) -> bool:
        if pid not in opened:
            opened[pid] = (ctx.view.get("packages", (ctx.registrant, pid)) or {}).get("opened_seq") is not None
        return opened[pid]

    return book_vials(ctx.view.select("vials", registrant=ctx.registrant, ndc_key=ndc_key), package_opened)


def _is_sealed(v: dict) -> bool:
    return v["opened_at"] is None and v["ml_left"] == v["container_ml"]


def _book(ctx: CommandContext, ndc_key: str) -> tuple[int, int, Decimal]:
    """(sealed containers, opened containers, mL) on hand for one product, from the vials."""
    sealed = opened = 0
    ml = ZERO
    for v in _on_book(ctx, ndc_key):
        if _is_sealed(v):
            sealed += 1
        else:
            opened += 1
        ml += v["ml_left"]
    return sealed, opened, norm(ml)  # the entry's text of it: "9.50", never "9.500"


def _parse_open_vials(ln: object, f: str, open_ml: Decimal) -> tuple[tuple[str, Decimal], ...]:
    """Issue 20: the opened vials a line names one by one, (vial id, mL), checked for shape: each
    named once, their mL adding up to the line's ``open_ml``."""
    named = getattr(ln, "open_vials", ()) or ()
    if not isinstance(named, list | tuple):
        raise InvalidInput("must be a list of opened vials, each with its vial id and mL", field=f"{f}.open_vials")
    out: list[tuple[str, Decimal]] = []
    for j, nv in enumerate(named):
        g = f"{f}.open_vials[{j}]"
        vid = getattr(nv, "vial_id", None)
        if not isinstance(vid, str) or not vid.strip() or len(vid) > 128:
            raise InvalidInput("must be the id of an opened vial", field=f"{g}.vial_id")
        vid = vid.strip()
        if vid in (v for v, _ in out):
            raise InvalidInput(f"vial {vid} is named twice", field=f"{g}.vial_id")
        out.append((vid, parse_volume(getattr(nv, "ml", None), field=f"{g}.ml", allow_zero=True)))
    if out and sum((ml for _, ml in out), ZERO) != open_ml:
        raise InvalidInput(f"the opened vials named hold {norm(sum((ml for _, ml in out), ZERO))} mL, not the "
                           f"{open_ml} mL given for the opened vials", field=f"{f}.open_vials")
    return tuple(out)


def _counted_vials(ctx: CommandContext, p: ev.ProductDescription, f: str, opened: int,
                   named: tuple[tuple[str, Decimal], ...]) -> tuple[ev.CountedVial, ...]:
    """Issue 20: the named opened vials against the book: each must be an opened vial of this
    product on hand, and all the opened vials counted must be named."""
    if not named:
        return ()
    if len(named) != opened:
        raise InvalidInput(f"{len(named)} opened vial(s) named for {opened} opened vial(s) counted: name each one "
                           "or none", field=f"{f}.open_vials")
    book = {v["vial_id"]: v for v in _on_book(ctx, p.ndc_key) if not _is_sealed(v)}
    out = []
    for j, (vid, ml) in enumerate(named):
        v = book.get(vid)
        if v is None:
            raise Conflict(f"vial {vid} is not an opened vial of {p.name} on hand", field=f"{f}.open_vials[{j}].vial_id")
        if ml > v["container_ml"]:
            raise InvalidInput(f"vial {vid} holds at most {v['container_ml']} mL", field=f"{f}.open_vials[{j}].ml")
        out.append(ev.CountedVial(vial_id=vid, expected_ml=norm(v["ml_left"]), counted_ml=ml))
    return tuple(out)


def _sealed_packages(ctx: CommandContext, ndc_key: str) -> int:
    """Sealed packages (cartons) of one product on hand (issue 19): a record beside the units."""
    from ledger.services.packages import sealed_packages

    return len(sealed_packages(ctx, ctx.view.select("vials", registrant=ctx.registrant, ndc_key=ndc_key)))


def start_count(ledger: Ledger, principal: Principal, cmd: StartCount, *, idempotency_key: str | None = None) -> dict:
    """Open a count session. Blind by default: the answer names what to count, never how much
    the book holds."""
    if not isinstance(cmd.ndcs, list | tuple):
        raise InvalidInput("must be a list of NDCs", field="ndcs")
    if not isinstance(cmd.blind, bool):
        raise InvalidInput("must be true or false", field="blind")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.COUNTED, roles=COUNTERS)
        if cmd.ndcs:
            products = [product_copy(ctx, n, field=f"ndcs[{i}]") for i, n in enumerate(cmd.ndcs)]
        else:
            products = [product_copy(ctx, p["ndc"], field="ndcs")
                        for p in sorted(ctx.view.select("products", registrant=ctx.registrant), key=lambda r: r["ndc_key"])]
        if not products:
            raise Conflict("there is no product to count; add a product first", field="ndcs")
        if len({p.ndc_key for p in products}) != len(products):
            raise InvalidInput("a product is named twice", field="ndcs")
        session_id = f"C{ctx.next_seq}"
        ctx.append(ev.CountStarted(session_id=session_id, blind=cmd.blind, products=tuple(products)),
                   signatures=[sig], occurred_at=ctx.now)
        items = []
        for p in products:
            item = {"ndc": p.ndc, "name": p.name, "form": p.form, "strength_mg_per_ml": str(p.strength_mg_per_ml),
                    "container_ml": str(p.container_ml)}
            if not cmd.blind:
                s, o, ml = _book(ctx, p.ndc_key)
                item.update(expected_sealed_containers=s, expected_open_containers=o, expected_ml=str(ml))
            items.append(item)
        return {"session_id": session_id, "blind": cmd.blind, "products": items}

    return run(ledger, principal, "start_count", cmd, build, idempotency_key)


def submit_count(ledger: Ledger, principal: Principal, cmd: SubmitCount, *, second_counter: Principal,
                 idempotency_key: str | None = None) -> dict:
    """Two counters submit what they found; the expected quantity is taken now, and a
    difference opens a discrepancy (the book is not changed), except an opened vial's within the
    policy's tolerance (issue 20: recorded on the line, no discrepancy). A line may name its
    opened vials one by one (``open_vials``), so a loss can be taken out of the vial that was short."""
    if not isinstance(cmd.session_id, str) or not cmd.session_id:
        raise InvalidInput("must be a count session id", field="session_id")
    if not isinstance(cmd.lines, list | tuple) or not cmd.lines:
        raise InvalidInput("give one line per product counted", field="lines")
    parsed = []
    for i, ln in enumerate(cmd.lines):
        f = f"lines[{i}]"
        sealed = parse_count(ln.sealed_containers, field=f"{f}.sealed_containers")
        opened = parse_count(ln.open_containers, field=f"{f}.open_containers")
        # Issue 19: an opened vial is measured to syringe resolution (0.005 mL), like a draw.
        open_ml = parse_volume(ln.open_ml, field=f"{f}.open_ml", allow_zero=True)
        if opened == 0 and open_ml != 0:
            raise InvalidInput("mL in opened vials needs the number of opened vials", field=f"{f}.open_containers")
        # Issue 19: sealed cartons may be counted as cartons, their units exact.
        packages = parse_count(getattr(ln, "sealed_packages", 0), field=f"{f}.sealed_packages")
        parsed.append((ln.ndc, sealed, opened, open_ml, packages, _parse_open_vials(ln, f, open_ml)))

    def build(ctx: CommandContext) -> dict:
        sig1 = ctx.signature(principal, Meaning.COUNTED, roles=COUNTERS)
        if not isinstance(second_counter, Principal):
            raise InvalidInput("a second, authenticated counter is required", field="second_counter")
        if second_counter.staff_id == principal.staff_id:
            raise Conflict("a count needs two different people", field="second_counter")
        try:
            sig2 = ctx.signature(second_counter, Meaning.COUNTED, roles=COUNTERS)
        except (NotFound, Forbidden) as exc:
            raise type(exc)(exc.reason, field="second_counter", type_=exc.type) from None
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        s = ctx.view.get("count_sessions", (ctx.registrant, cmd.session_id))
        if s is None:
            raise NotFound(f"no count session {cmd.session_id!r} at {ctx.registrant}", field="session_id")
        if s["status"] != "open":
            raise Conflict(f"count session {cmd.session_id} was already submitted", field="session_id")
        opened_at = ctx.view.raw.scalar(ctx.conn, "SELECT recorded_at FROM entries WHERE registrant = :r AND seq = :s",
                                        {"r": ctx.registrant, "s": s["started_seq"]})
        if ctx.now - parse_time(opened_at) > COUNT_SESSION_OPEN_FOR:
            raise Conflict(f"count session {cmd.session_id} was opened at {opened_at} and closed after "
                           f"{COUNT_SESSION_OPEN_FOR.total_seconds() / 60:.0f} minutes; start a new count",
                           field="session_id")
        # Blind means blind: any read of the book by either counter while the session was open
        # goes into the entry, and the count then confirms nothing (every line opens a discrepancy).
        reads = ()
        if s["blind"]:
            reads = tuple(ev.BookRead(r["staff_id"], r["read_at"], r["what"]) for r in stock_reads_during(
                ctx.conn, ctx.registrant, sorted({principal.staff_id, second_counter.staff_id}), opened_at,
                format_time(ctx.now)))
        scope = json.loads(s["ndc_keys"])
        lines: list[ev.CountedLine] = []
        seen: set[str] = set()
        # Issue 20: the policy's tolerance for opened containers, recorded in the entry so the
        # report and ``verify --deep`` read the figure this count was held to.
        per_container = current_policy(ctx).open_count_tolerance_ml
        for i, (ndc, sealed, opened, open_ml, packages, named) in enumerate(parsed):
            f = f"lines[{i}]"
            p = product_copy(ctx, ndc, field=f"{f}.ndc")
            sealed += packages * p.units_per_package  # issue 19: a sealed package's units, exact
            if p.ndc_key not in scope:
                raise InvalidInput(f"NDC {p.ndc} is not in this count session", field=f"{f}.ndc")
            if p.ndc_key in seen:
                raise InvalidInput(f"NDC {p.ndc} is counted twice", field=f"{f}.ndc")
            seen.add(p.ndc_key)
            if opened and is_device(p):  # issue 19: devices are counted whole; a used one is not on hand
                raise InvalidInput(f"{p.name} is counted in nasal-spray devices, each whole: a device is single use, "
                                   "so an opened one is not on hand (count the sealed devices only)",
                                   field=f"{f}.open_containers")
            if open_ml > opened * p.container_ml:
                raise InvalidInput(f"{opened} opened vial(s) cannot hold {open_ml} mL", field=f"{f}.open_ml")
            counted = norm(sealed * p.container_ml + open_ml)  # exact: never rounded to 0.01
            es, eo, eml = _book(ctx, p.ndc_key)
            diff = counted - eml
            vials = _counted_vials(ctx, p, f, opened, named)
            # Issue 20: an opened vial's mL are estimated, within the policy's tolerance; sealed
            # containers, and the number of containers, are exact (``ledger.domain.counting``).
            tolerance = line_tolerance(per_container, sealed=sealed, opened=opened, expected_sealed=es,
                                       expected_opened=eo, book_read=bool(reads))
            disc = (f"D{ctx.next_seq}-{i}" if opens_discrepancy(diff, tolerance, sealed_differs=sealed != es,
                                                                 book_read=bool(reads)) else None)
            lines.append(ev.CountedLine(product=p, sealed_containers=sealed, open_containers=opened, open_ml=open_ml,
                                        counted_ml=counted, expected_sealed_containers=es, expected_open_containers=eo,
                                        expected_ml=eml, difference_ml=norm(diff), discrepancy_id=disc,
                                        sealed_packages=packages,
                                        expected_sealed_packages=_sealed_packages(ctx, p.ndc_key),
                                        tolerance_ml=tolerance,
                                        within_tolerance=disc is None and within_tolerance(diff, tolerance),
                                        open_vials=vials))
        missing = [k for k in scope if k not in seen]
        if missing:
            raise InvalidInput(f"the session also counts NDC key(s) {', '.join(missing)}; give a line for each",
                               field="lines")
        # bool(): the SQLite driver answers 0/1, and the entry's JSON must say true/false on both
        ctx.append(ev.StockCounted(session_id=cmd.session_id, blind=bool(s["blind"]), lines=tuple(lines),
                                   late_reason=late, book_reads=reads, open_count_tolerance_ml=per_container),
                   signatures=[sig1, sig2], occurred_at=occurred)
        return {"session_id": cmd.session_id, "open_count_tolerance_ml": str(per_container), "lines": [
            {"ndc": ln.product.ndc, "counted_ml": str(ln.counted_ml), "expected_ml": str(ln.expected_ml),
             "difference_ml": str(ln.difference_ml), "discrepancy_id": ln.discrepancy_id,
             "tolerance_ml": str(ln.tolerance_ml), "within_tolerance": ln.within_tolerance,
             "open_vials": [{"vial_id": v.vial_id, "expected_ml": str(v.expected_ml), "counted_ml": str(v.counted_ml)}
                            for v in ln.open_vials]} for ln in lines],
            "discrepancy_ids": [ln.discrepancy_id for ln in lines if ln.discrepancy_id],
            "within_tolerance": [ln.product.ndc for ln in lines if ln.within_tolerance],
            "book_read_during_count": [{"staff_id": r.staff_id, "read_at": r.read_at, "what": r.what} for r in reads]}

    return run(ledger, principal, "submit_count", cmd, build, idempotency_key,
                {**request_fields(cmd), "second_counter": getattr(second_counter, "staff_id", None)})
