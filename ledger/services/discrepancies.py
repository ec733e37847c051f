"""Count discrepancies and their resolution: a manager who did not count categorises and
explains a difference, and a second authenticated person (not a counter) signs with them; an
accepted loss comes off the book vial by vial and is put in front of someone who follows alerts up.

A spill or breakage is never asserted after the fact by the resolution itself: it must be the
``breakage_recorded`` entry that two people who saw it signed (``services.breakage``). Counts take
their expected figures from the book when they are submitted, so a breakage recorded before the
count is already in them and explains none of its difference; the one that can explain it
happened before the count and was recorded after it. Its mL are already off the book, so the
resolution takes nothing further for them:

- the breakage took exactly the shortage: nothing is adjusted;
- it took less: the rest (shortage - breakage) comes off the book by a loss adjustment, signed
  by both, like any other accepted loss;
- it took more: refused, the record would then be below what was counted (correct the
  breakage or the count instead).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import ResolveDiscrepancy
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.projections import ON_HAND
from ledger.domain.quantities import norm
from ledger.integrity.canonical import decode
from ledger.services.common import (
    entry_at,
    product_of_vial,
    request_fields,
    run,
    sign_witness,
    text,
)
from ledger.services.packages import sealed_packages  # issue 19
from ledger.storage.store import CommandContext, Ledger

RESOLVERS = frozenset({Role.MANAGER})


DISCREPANCY_CATEGORIES = ("documentation_error", "breakage", "spill", "theft_or_loss", "other")


#: Categories whose acceptance writes a loss adjustment (the stock is gone).
LOSS_CATEGORIES = frozenset({"breakage", "spill", "theft_or_loss"})


def _allocate_loss(ctx: CommandContext, d: dict, loss: Decimal, *, sealed_explained: int = 0) -> list[ev.VialAdjustment]:
    """Which vials a counted loss came out of: missing sealed vials whole first (less those a
    breakage already took off), then opened vials (fullest first), then sealed vials. The book
    per vial never goes below zero."""
    vials = [v for v in ctx.view.select("vials", registrant=ctx.registrant, ndc_key=d["ndc_key"])
             if v["state"] in ON_HAND and v["ml_left"] > 0]
    # Issue 19: a package opened short names the units it did not hold; they, and only they, go.
    missing = _units_missing(ctx, d)
    if missing is not None:
        gone = [v for v in vials if v["vial_id"] in missing]
        if sum((v["ml_left"] for v in gone), Decimal(0)) != loss:
            raise Conflict(f"the units package opening {d['count_seq']} did not find no longer hold the {loss} mL "
                           "this loss takes off the book", field="discrepancy_id")
        return [ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), v["ml_left"], True) for v in gone]
    not_found = _inventory_not_found(ctx, d)  # issue 20: an inventory names the vials it did not find
    if not_found is not None:
        return _inventory_loss(ctx, d, vials, not_found, loss)
    # Units still in a sealed package leave only with the whole package, after the loose vials.
    packages = sorted(sealed_packages(ctx, vials).items(), key=lambda kv: (kv[1][0]["expiry"], kv[0]), reverse=True)
    vials = [v for v in vials if not v.get("packaged")]
    sealed = sorted((v for v in vials if v["opened_at"] is None and v["ml_left"] == v["container_ml"]),
                    key=lambda v: (v["expiry"], v["vial_id"]), reverse=True)
    opened = sorted((v for v in vials if v not in sealed), key=lambda v: (-v["ml_left"], v["vial_id"]))
    out: list[ev.VialAdjustment] = []
    left = loss
    missing_sealed = max(0, d["expected_sealed_containers"] - d["counted_sealed_containers"] - sealed_explained)
    # More sealed units missing than loose sealed vials on the book: the rest were in sealed
    # packages, which go whole (as few as cover the shortfall). Without this a count that found
    # most of a carton's units gone could not be resolved at all.
    taken: set[str] = set()
    for pid, units in packages:
        if missing_sealed - len(sealed) <= 0:
            break
        whole = sum((u["ml_left"] for u in units), Decimal(0))
        if len(units) <= missing_sealed and whole <= left:
            out.extend(ev.VialAdjustment(u["vial_id"], product_of_vial(ctx, u), u["ml_left"], True) for u in units)
            left -= whole
            missing_sealed -= len(units)
            taken.add(pid)
    packages = [(pid, units) for pid, units in packages if pid not in taken]
    for v in sealed[:missing_sealed]:
        if v["ml_left"] <= left:
            out.append(ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), v["ml_left"], True))
            left -= v["ml_left"]
    used = {a.vial_id for a in out}
    # Issue 20: a count that named its opened vials says which were short: each gives its
    # shortfall first; then, as before, opened vials fullest first.
    first: dict[str, Decimal] = {}
    for vid, short in _named_shortfalls(ctx, d).items():
        v = next((o for o in opened if o["vial_id"] == vid), None)
        if v is not None and left > 0:
            first[vid] = take = norm(min(left, short, v["ml_left"]))
            out.append(ev.VialAdjustment(vid, product_of_vial(ctx, v), take, take == v["ml_left"]))
            left -= take
    for v in opened + [v for v in sealed if v["vial_id"] not in used]:
        if left <= 0:
            break
        have = v["ml_left"] - first.get(v["vial_id"], Decimal(0))
        if have <= 0:
            continue
        take = norm(min(left, have))  # the entry's text: "0.50", never "0.500" (issue 19)
        if v["vial_id"] in first:  # one adjustment per vial: the named shortfall and this together
            out = [a for a in out if a.vial_id != v["vial_id"]]
            take = norm(take + first[v["vial_id"]])
            left += first[v["vial_id"]]
        out.append(ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), take, take == v["ml_left"]))
        left -= take
    for _pid, units in packages:
        whole = sum((u["ml_left"] for u in units), Decimal(0))
        if 0 < whole <= left:
            out.extend(ev.VialAdjustment(u["vial_id"], product_of_vial(ctx, u), u["ml_left"], True) for u in units)
            left -= whole
    if left > 0:
        raise Conflict(f"the vials on hand no longer hold the {loss} mL this loss takes off the book; "
                       "count again", field="discrepancy_id")
    return out


def _named_shortfalls(ctx: CommandContext, d: dict) -> dict[str, Decimal]:
    """Issue 20: the opened vials a count named that were short (book - counted), by vial id, in
    the count's order; empty when the count named none (or the discrepancy is not a count's)."""
    e = entry_at(ctx, d["count_seq"], field="discrepancy_id")
    if e["kind"] != "stock_counted":
        return {}
    line = next((ln for ln in e["lines"] if ln.get("discrepancy_id") == d["discrepancy_id"]), {})
    return {v["vial_id"]: Decimal(v["expected_ml"]) - Decimal(v["counted_ml"]) for v in line.get("open_vials") or ()
            if Decimal(v["counted_ml"]) < Decimal(v["expected_ml"])}


def _units_missing(ctx: CommandContext, d: dict) -> set[str] | None:
    """The units a package opening did not find, when the discrepancy is that opening's (issue
    19, ``package_opened``); None for a count's discrepancy."""
    e = entry_at(ctx, d["count_seq"], field="discrepancy_id")
    return set(e["units_missing"]) if e["kind"] == "package_opened" else None


def _inventory_not_found(ctx: CommandContext, d: dict) -> list[str] | None:
    """Issue 20: the vials on the book an inventory did not find, when the discrepancy is that
    inventory's line; None for any other discrepancy."""
    e = entry_at(ctx, d["count_seq"], field="discrepancy_id")
    if e["kind"] != "inventory_taken":
        return None
    line = next(ln for ln in e.get("lines") or () if ln["discrepancy_id"] == d["discrepancy_id"])
    return list(line["vials_not_found"])


def _inventory_loss(ctx: CommandContext, d: dict, vials: list[dict], not_found: list[str],
                    loss: Decimal) -> list[ev.VialAdjustment]:
    """Issue 20: an inventory's accepted loss takes exactly the vials it did not find, whole;
    what remains of the loss (opened vials found with less than the book) comes from the other
    vials of the product, opened ones fullest first. Refused when a vial not found has since
    been used or left the book (it was there after all), or when those vials hold more than the
    loss (other vials were found fuller than the book: that part is not a loss)."""
    on_hand = {v["vial_id"]: v for v in vials}
    gone = [on_hand.get(vid) for vid in not_found]
    if any(v is None or v["last_seq"] > d["count_seq"] for v in gone):
        raise Conflict(f"a vial inventory {d['count_seq']} did not find is no longer on the book as it was; "
                       "count again", field="discrepancy_id")
    whole = sum((v["ml_left"] for v in gone), Decimal(0))
    if whole > loss:
        raise Conflict(f"the vials inventory {d['count_seq']} did not find hold {norm(whole)} mL, more than the "
                       f"{loss} mL this loss takes: other vials were found fuller than the book; resolve it as "
                       "'other' or 'documentation_error' and record the loss of those vials apart", field="discrepancy_id")
    out = [ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), v["ml_left"], True) for v in gone]
    left = loss - whole
    rest = sorted((v for v in vials if v["vial_id"] not in not_found and not v.get("packaged")),
                  key=lambda v: (v["opened_at"] is None, -v["ml_left"], v["vial_id"]))
    for v in rest:
        if left <= 0:
            break
        take = norm(min(left, v["ml_left"]))
        out.append(ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), take, take == v["ml_left"]))
        left -= take
    if left > 0:
        raise Conflict(f"the vials on hand no longer hold the {loss} mL this loss takes off the book; "
                       "count again", field="discrepancy_id")
    return out


#: Categories that name the breakage recorded at the time (``breakage_seq``).
BREAKAGE_CATEGORIES = frozenset({"breakage", "spill"})


def _breakage(ctx: CommandContext, d: dict, count: dict, category: str, seq: Any) -> tuple[dict, Decimal, int]:
    """The breakage a spill or breakage resolution points at, checked: (entry, mL of the
    discrepancy's product it took off the book, sealed vials of that product it took whole)."""
    f = "breakage_seq"
    e = entry_at(ctx, seq, field=f)
    if e["kind"] != "breakage_recorded":
        raise Conflict(f"entry {e['seq']} is a {e['kind']}, not a breakage or spill recorded at the time", field=f)
    if e["what"] != category:
        raise Conflict(f"entry {e['seq']} records a {e['what']}, not a {category}", field=f)
    if e["recoverable"]:
        raise Conflict(f"entry {e['seq']} set recoverable stock aside: it is still on the book and counted, so it "
                       "cannot explain a shortage", field=f)
    if e["occurred_at"] > count["occurred_at"]:
        raise Conflict(f"the {category} of entry {e['seq']} happened after the count (entry {count['seq']}) was "
                       "taken; it cannot explain what the count found", field=f)
    if e["seq"] < count["seq"]:
        raise Conflict(f"entry {e['seq']} was recorded before the count (entry {count['seq']}) was submitted: its mL "
                       "were already off the book in the count's expected figures, so it explains none of "
                       "this difference", field=f)
    mine = [a for a in e["lines"] if a["product"]["ndc_key"] == d["ndc_key"]]
    if not mine:
        raise Conflict(f"entry {e['seq']} names no vial of the product this discrepancy is about", field=f)
    for row in ctx.view.raw.rows(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND kind = "
                                           "'discrepancy_resolved'", {"r": ctx.registrant}):
        other = decode(bytes(row["canonical"]))
        if other.get("breakage_seq") == e["seq"]:
            raise Conflict(f"entry {e['seq']} already explains discrepancy {other['discrepancy_id']}", field=f)
    ml = sum((Decimal(a["ml"]) for a in mine), Decimal("0.00"))
    sealed = sum(1 for a in mine if a["whole_vial"] and Decimal(a["ml"]) == Decimal(a["product"]["container_ml"]))
    return e, ml, sealed


def resolve_discrepancy(ledger: Ledger, principal: Principal, cmd: ResolveDiscrepancy, *,
                        witness: Principal | None = None, idempotency_key: str | None = None) -> dict:
    """A manager who did not count categorises and explains a difference, with ``witness``: a
    second, authenticated person, neither the manager nor a counter, who signs the resolution and
    any loss adjustment with them. A documentation error names the late entry that was missing;
    a spill or breakage names the breakage recorded at the time (``breakage_seq``, see the module
    docstring); theft or loss writes a loss adjustment; until then the book stays as computed and
    the count stands beside it."""
    if cmd.category not in DISCREPANCY_CATEGORIES:
        raise InvalidInput(f"must be one of {', '.join(DISCREPANCY_CATEGORIES)}", field="category")
    explanation = text(cmd.explanation, field="explanation", max_len=2000)
    if cmd.category == "documentation_error" and cmd.fixed_by_seq is None:
        raise InvalidInput("a documentation error is fixed by the late entry that was missing; give its seq",
                           field="fixed_by_seq")
    if cmd.category in BREAKAGE_CATEGORIES and cmd.breakage_seq is None:
        raise InvalidInput(f"a {cmd.category} explains a difference only as the breakage or spill recorded when it "
                           "happened, signed by two people who saw it; give that entry's seq", field="breakage_seq")
    if cmd.category not in BREAKAGE_CATEGORIES and cmd.breakage_seq is not None:
        raise InvalidInput("only a spill or breakage resolution names a breakage record", field="breakage_seq")
    if witness is not None and not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=RESOLVERS)
        d = ctx.view.get("discrepancies", (ctx.registrant, cmd.discrepancy_id))
        if d is None:
            raise NotFound(f"no discrepancy {cmd.discrepancy_id!r} at {ctx.registrant}", field="discrepancy_id")
        if d["status"] != "open":
            raise Conflict(f"discrepancy {cmd.discrepancy_id} is already resolved", field="discrepancy_id")
        counters = json.loads(d["counters"])
        if principal.staff_id in counters:
            raise Forbidden("the manager approving a discrepancy must not be one of its counters", field="principal")
        wsig = sign_witness(ctx, principal, witness)
        if witness.staff_id in counters:
            raise Conflict("the second person on a resolution must not be one of the counters whose count it "
                           "resolves", field="witness")
        fixed = None
        if cmd.fixed_by_seq is not None:
            e = entry_at(ctx, cmd.fixed_by_seq, field="fixed_by_seq")
            if e["seq"] <= d["count_seq"]:
                raise Conflict("the fixing entry must be recorded after the count it explains", field="fixed_by_seq")
            if e["kind"] == "breakage_recorded":
                raise Conflict("a breakage or spill explains a difference only as a breakage or spill resolution "
                               "(breakage_seq)", field="fixed_by_seq")
            fixed = e["seq"]
        loss = -d["difference_ml"]
        if cmd.category in LOSS_CATEGORIES and loss <= 0:
            raise Conflict(f"the count found {d['difference_ml']} mL against the book: that is not a loss",
                           field="category")
        to_adjust, sealed_explained, breakage_seq = (loss if cmd.category in LOSS_CATEGORIES else Decimal(0)), 0, None
        if cmd.category in BREAKAGE_CATEGORIES:
            count = entry_at(ctx, d["count_seq"], field="discrepancy_id")
            b, explained, sealed_explained = _breakage(ctx, d, count, cmd.category, cmd.breakage_seq)
            if explained > loss:
                raise Conflict(f"the {cmd.category} of entry {b['seq']} took {explained} mL off the book, more than "
                               f"the {loss} mL this count found missing; correct the {cmd.category} or the count "
                               "instead", field="breakage_seq")
            to_adjust, breakage_seq = loss - explained, b["seq"]
        signatures = [sig, wsig]
        r = ctx.append(ev.DiscrepancyResolved(discrepancy_id=cmd.discrepancy_id, count_seq=d["count_seq"],
                                              category=cmd.category, explanation=explanation, fixed_by_seq=fixed,
                                              breakage_seq=breakage_seq, adjusts_stock=to_adjust > 0),
                       signatures=signatures, occurred_at=ctx.now)
        out: dict[str, Any] = {"discrepancy_id": cmd.discrepancy_id}
        if to_adjust > 0:
            adjustments = _allocate_loss(ctx, d, to_adjust, sealed_explained=sealed_explained)
            a = ctx.append(ev.LossAdjusted(discrepancy_id=cmd.discrepancy_id, category=cmd.category,
                                           adjustments=tuple(adjustments), count_seq=d["count_seq"],
                                           resolution_seq=r.seq), signatures=signatures, occurred_at=ctx.now)
            out["loss_adjustment_seq"] = a.seq
            out["adjusted_ml"] = str(norm(to_adjust))
        return out

    return run(ledger, principal, "resolve_discrepancy", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})
