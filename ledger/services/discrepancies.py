"""Count discrepancies and their resolution: a manager who did not count categorises and
explains a difference; an accepted loss comes off the book vial by vial.
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
from ledger.services.common import entry_at, product_of_vial, run, text
from ledger.storage.store import CommandContext, Ledger

RESOLVERS = frozenset({Role.MANAGER})


DISCREPANCY_CATEGORIES = ("documentation_error", "breakage", "spill", "theft_or_loss", "other")


#: Categories whose acceptance writes a loss adjustment (the stock is gone).
LOSS_CATEGORIES = frozenset({"breakage", "spill", "theft_or_loss"})


def _allocate_loss(ctx: CommandContext, d: dict, loss: Decimal) -> list[ev.VialAdjustment]:
    """Which vials a counted loss came out of: missing sealed vials whole first, then opened
    vials (fullest first), then sealed vials. The book per vial never goes below zero."""
    vials = [v for v in ctx.view.select("vials", registrant=ctx.registrant, ndc_key=d["ndc_key"])
             if v["state"] in ON_HAND and v["ml_left"] > 0]
    sealed = sorted((v for v in vials if v["opened_at"] is None and v["ml_left"] == v["container_ml"]),
                    key=lambda v: (v["expiry"], v["vial_id"]), reverse=True)
    opened = sorted((v for v in vials if v not in sealed), key=lambda v: (-v["ml_left"], v["vial_id"]))
    out: list[ev.VialAdjustment] = []
    left = loss
    missing_sealed = max(0, d["expected_sealed_containers"] - d["counted_sealed_containers"])
    for v in sealed[:missing_sealed]:
        if v["ml_left"] <= left:
            out.append(ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), v["ml_left"], True))
            left -= v["ml_left"]
    used = {a.vial_id for a in out}
    for v in opened + [v for v in sealed if v["vial_id"] not in used]:
        if left <= 0:
            break
        take = min(left, v["ml_left"])
        out.append(ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), take, take == v["ml_left"]))
        left -= take
    if left > 0:
        raise Conflict(f"the vials on hand no longer hold the {loss} mL this loss takes off the book; "
                       "count again", field="discrepancy_id")
    return out


def resolve_discrepancy(ledger: Ledger, principal: Principal, cmd: ResolveDiscrepancy, *,
                        idempotency_key: str | None = None) -> dict:
    """A manager who did not count categorises and explains a difference. A documentation error
    names the late entry that was missing; breakage, spill or theft/loss writes a loss adjustment;
    until then the book stays as computed and the count stands beside it."""
    if cmd.category not in DISCREPANCY_CATEGORIES:
        raise InvalidInput(f"must be one of {', '.join(DISCREPANCY_CATEGORIES)}", field="category")
    explanation = text(cmd.explanation, field="explanation", max_len=2000)
    if cmd.category == "documentation_error" and cmd.fixed_by_seq is None:
        raise InvalidInput("a documentation error is fixed by the late entry that was missing; give its seq",
                           field="fixed_by_seq")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=RESOLVERS)
        d = ctx.view.get("discrepancies", (ctx.registrant, cmd.discrepancy_id))
        if d is None:
            raise NotFound(f"no discrepancy {cmd.discrepancy_id!r} at {ctx.registrant}", field="discrepancy_id")
        if d["status"] != "open":
            raise Conflict(f"discrepancy {cmd.discrepancy_id} is already resolved", field="discrepancy_id")
        if principal.staff_id in json.loads(d["counters"]):
            raise Forbidden("the manager approving a discrepancy must not be one of its counters", field="principal")
        fixed = None
        if cmd.fixed_by_seq is not None:
            e = entry_at(ctx, cmd.fixed_by_seq, field="fixed_by_seq")
            if e["seq"] <= d["count_seq"]:
                raise Conflict("the fixing entry must be recorded after the count it explains", field="fixed_by_seq")
            fixed = e["seq"]
        loss = -d["difference_ml"]
        if cmd.category in LOSS_CATEGORIES and loss <= 0:
            raise Conflict(f"the count found {d['difference_ml']} mL against the book: that is not a loss",
                           field="category")
        ctx.append(ev.DiscrepancyResolved(discrepancy_id=cmd.discrepancy_id, count_seq=d["count_seq"],
                                          category=cmd.category, explanation=explanation, fixed_by_seq=fixed),
                   signatures=[sig], occurred_at=ctx.now)
        out: dict[str, Any] = {"discrepancy_id": cmd.discrepancy_id}
        if cmd.category in LOSS_CATEGORIES:
            adjustments = _allocate_loss(ctx, d, loss)
            a = ctx.append(ev.LossAdjusted(discrepancy_id=cmd.discrepancy_id, category=cmd.category,
                                           adjustments=tuple(adjustments)), signatures=[sig], occurred_at=ctx.now)
            out["loss_adjustment_seq"] = a.seq
        return out

    return run(ledger, principal, "resolve_discrepancy", cmd, build, idempotency_key)
