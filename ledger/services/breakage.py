"""Breakage and spills, recorded when they happen by two people who saw them (issue 15).

A vial dropped, a syringe knocked over: the drug is gone (not recoverable) or can be collected
(recoverable, e.g. a cracked vial whose contents are intact). Either way the record is made at
the time by the person who recorded it and a second, authenticated person who saw it, so a
count's shortage found later cannot be explained away by one person's word.

- Not recoverable: the mL named per vial leave the book with the entry. A broken vial leaves
  whole (its mL left); a spill may take part of a vial.
- Recoverable: the vials (whole) stay on hand, set aside like suspect product (never drawn from)
  until they are destroyed before two witnesses (Form 41, ``disposal.destroy_stock``), which takes
  them off the book.

An event is "at the time" for a count when it was recorded before the count was submitted: the
count's expected figures then already include it. One recorded after a count that was taken after
the event names that count in ``after_counts``: it explains the count's difference after the fact,
and the audit lists it after the difference, with the adjustments (``ledger.services.audit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import RecordBreakage
from ledger.domain.errors import Conflict, InvalidInput
from ledger.domain.esketamine import is_device
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import norm, parse_volume
from ledger.integrity.canonical import decode, format_time
from ledger.services.common import (
    event_time,
    product_of_vial,
    request_fields,
    run,
    sign_witness,
    text,
    vial_for_use,
)
from ledger.storage.store import CommandContext, Ledger

#: Who records a breakage: whoever handles the drug at the chair or in the medication room.
RECORDERS = frozenset({Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST, Role.MANAGER})

WHAT = ("breakage", "spill")


def counts_after(ctx: CommandContext, occurred_at: str, ndc_keys: Sequence[str]) -> tuple[int, ...]:
    """Seqs of the counts already recorded whose count was taken at or after ``occurred_at`` and
    that covered one of ``ndc_keys`` (a two-person count of the product, or an inventory): counts
    whose expected figures did not include an event of that time recorded now."""
    rows = ctx.view.raw.rows(ctx.conn, "SELECT seq, canonical FROM entries WHERE registrant = :r AND kind IN "
                                       "('stock_counted', 'inventory_taken') AND occurred_at >= :t ORDER BY seq",
                             {"r": ctx.registrant, "t": occurred_at})
    keys = set(ndc_keys)
    out = []
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if e["kind"] == "inventory_taken" or any(ln["product"]["ndc_key"] in keys for ln in e["lines"]):
            out.append(row["seq"])
    return tuple(out)


def record_breakage(ledger: Ledger, principal: Principal, cmd: RecordBreakage, *, witness: Principal | None = None,
                    idempotency_key: str | None = None) -> dict:
    """Record a breakage or spill at the time, signed by the recorder and ``witness`` (a second,
    authenticated person who saw it). Each line names a vial and the mL lost from it (``None``:
    all it holds). A broken vial, and any recoverable vial, is taken whole."""
    if cmd.what not in WHAT:
        raise InvalidInput("must be 'breakage' or 'spill'", field="what")
    description = text(cmd.description, field="description", max_len=1000)
    if not isinstance(cmd.recoverable, bool):
        raise InvalidInput("must be true or false", field="recoverable")
    if not isinstance(cmd.lines, list | tuple) or not cmd.lines:
        raise InvalidInput("name at least one vial", field="lines")
    if len(cmd.lines) > 50:
        raise InvalidInput("at most 50 vials per record", field="lines")
    lines_in: list[tuple[Any, Decimal | None]] = []
    for i, ln in enumerate(cmd.lines):
        ml = parse_volume(ln.ml, field=f"lines[{i}].ml") if ln.ml is not None else None
        if any(ln.vial_id == v for v, _ in lines_in):
            raise InvalidInput(f"vial {ln.vial_id} is named twice; give one line", field=f"lines[{i}].vial_id")
        lines_in.append((ln.vial_id, ml))
    if witness is not None and not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=RECORDERS)
        wsig = sign_witness(ctx, principal, witness)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        lines = []
        for i, (vial_id, ml) in enumerate(lines_in):
            f = f"lines[{i}]"
            v = vial_for_use(ctx, vial_id, field=f"{f}.vial_id")
            # issue 19: a nasal-spray device is on hand whole or not at all
            whole = cmd.recoverable or cmd.what == "breakage" or is_device(product_of_vial(ctx, v))
            if ml is None:
                ml = v["ml_left"]
            if ml > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL on the book; {ml} mL cannot be lost from it",
                               field=f"{f}.ml")
            if whole and ml != v["ml_left"]:
                why = ("recoverable stock is set aside whole until it is destroyed" if cmd.recoverable
                       else "a broken vial leaves the book whole (record what could be collected as recoverable)")
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL on the book; {why}: give {v['ml_left']} "
                               "or leave ml out", field=f"{f}.ml")
            if ml <= 0:
                raise Conflict(f"vial {vial_id} is empty on the book", field=f"{f}.ml")
            lines.append(ev.VialAdjustment(vial_id, product_of_vial(ctx, v), ml, ml == v["ml_left"]))
        after = counts_after(ctx, format_time(occurred), sorted({a.product.ndc_key for a in lines}))
        e = ctx.append(ev.BreakageRecorded(what=cmd.what, description=description, recoverable=cmd.recoverable,
                                           lines=tuple(lines), after_counts=after, late_reason=late),
                       signatures=[sig, wsig], occurred_at=occurred)
        total = norm(sum((a.ml for a in lines), Decimal("0.00")))
        return {"breakage_seq": e.seq, ("held_ml" if cmd.recoverable else "lost_ml"): str(total),
                "after_counts": list(after)}

    return run(ledger, principal, "record_breakage", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})
