"""Corrections: a new entry that references the one it corrects; nothing recorded is altered.

A correction is also a way stock could be recorded away, so it is held to the rules of the
records it stands in for: it may only move stock in the vials the corrected entry moved, by no
more than that entry moved (across every correction of it), and taking stock off the book needs a
second authenticated person who approves it (two people on every record that reduces stock).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import (
    CorrectEntry,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_volume
from ledger.integrity.canonical import decode
from ledger.services.administration import CLINICIANS
from ledger.services.common import entry_at, product_of_vial, request_fields, run, text
from ledger.storage.store import CommandContext, Ledger

#: Who may approve a correction that takes stock off the book: those answerable for the stock.
CORRECTION_APPROVERS = frozenset({Role.MANAGER, Role.PHARMACIST})


def _vial_amounts(node: Any, out: dict[str, Decimal]) -> None:
    """Every vial an entry names, with the largest amount in mL it records for that vial (an
    administration's draw, a destroyed or moved vial, a received container's volume)."""
    if isinstance(node, dict):
        if isinstance(node.get("vial_id"), str):
            ml = node.get("ml")
            amount = Decimal(ml) if isinstance(ml, str) else Decimal("0.00")
            out[node["vial_id"]] = max(out.get(node["vial_id"], amount), amount)
        if isinstance(node.get("vial_ids"), list) and all(isinstance(v, str) for v in node["vial_ids"]):
            product = node.get("product") if isinstance(node.get("product"), dict) else {}
            full = Decimal(product.get("container_ml", "0.00"))
            for v in node["vial_ids"]:
                out[v] = max(out.get(v, full), full)
        for k, v in node.items():
            if k not in ("vial_id", "vial_ids"):
                _vial_amounts(v, out)
    elif isinstance(node, list):
        for v in node:
            _vial_amounts(v, out)


def vials_touched(ctx: CommandContext, entry: dict[str, Any]) -> dict[str, Decimal]:
    """The vials ``entry`` moved stock in, each with the mL it recorded for that vial.

    A waste names no vial (the drug left the vials when it was drawn), so correcting a waste moves
    no vial stock; a correction of a correction may touch what that correction touched."""
    out: dict[str, Decimal] = {}
    body = {k: v for k, v in entry.items() if k not in ev.ENVELOPE_FIELDS}
    _vial_amounts(body, out)
    return out


def _earlier_corrections(ctx: CommandContext, corrects_seq: int) -> Iterator[dict[str, Any]]:
    rows = ctx.view.raw.rows(ctx.conn, "SELECT canonical FROM entries WHERE registrant = :r AND kind = 'entry_corrected'",
                            {"r": ctx.registrant})
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if e["corrects_seq"] == corrects_seq:
            yield e


def correct_entry(ledger: Ledger, principal: Principal, cmd: CorrectEntry, *, approver: Principal | None = None,
                  idempotency_key: str | None = None) -> dict:
    """A correction references the entry it corrects, says why and carries compensating
    quantities; the corrected entry stays as it was.

    Each line must name a vial the corrected entry moved stock in, and the mL corrected per vial
    and direction (with every earlier correction of the same entry) may not exceed what that
    entry recorded for the vial. A line that removes stock needs ``approver``: a second
    authenticated person (manager or pharmacist), not the author, whose signature means
    "approved"."""
    reason = text(cmd.reason, field="reason", max_len=1000)
    if not isinstance(cmd.lines, list | tuple):
        raise InvalidInput("must be a list of correction lines", field="lines")
    lines_in = []
    for i, ln in enumerate(cmd.lines):
        if ln.direction not in ("add", "remove"):
            raise InvalidInput("must be 'add' or 'remove'", field=f"lines[{i}].direction")
        if not isinstance(ln.vial_id, str) or not ln.vial_id or len(ln.vial_id) > 128:
            raise InvalidInput("must be a vial id", field=f"lines[{i}].vial_id")
        if any(ln.vial_id == v and ln.direction == d for v, d, _ in lines_in):
            raise InvalidInput(f"vial {ln.vial_id} is corrected twice in one direction; give one line",
                               field=f"lines[{i}].vial_id")
        lines_in.append((ln.vial_id, ln.direction, parse_volume(ln.ml, field=f"lines[{i}].ml")))
    removes = any(d == "remove" for _, d, _ in lines_in)
    if approver is not None and not isinstance(approver, Principal):
        raise InvalidInput("must be an authenticated staff member", field="approver")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        signatures = [sig]
        if removes:
            if approver is None:
                raise InvalidInput("a correction that takes stock off the book needs a second, authenticated "
                                   "person to approve it (a manager or pharmacist, Witness-Assertion)",
                                   field="approver")
            if approver.staff_id == principal.staff_id:
                raise Conflict("the approver must be a different person from whoever records the correction",
                               field="approver")
            try:
                signatures.append(ctx.signature(approver, Meaning.APPROVED, roles=CORRECTION_APPROVERS))
            except (NotFound, Forbidden) as exc:
                raise type(exc)(exc.reason, field="approver", type_=exc.type) from None
        target = entry_at(ctx, cmd.corrects_seq, field="corrects_seq")
        touched = vials_touched(ctx, target)
        already: dict[tuple[str, str], Decimal] = defaultdict(lambda: Decimal("0.00"))
        if lines_in:
            for e in _earlier_corrections(ctx, target["seq"]):
                for ln in e["lines"]:
                    already[(ln["vial_id"], ln["direction"])] += Decimal(ln["ml"])
        lines = []
        for i, (vial_id, direction, ml) in enumerate(lines_in):
            f = f"lines[{i}]"
            v = ctx.view.get("vials", (ctx.registrant, vial_id))
            if v is None:
                raise NotFound(f"no vial {vial_id!r} at {ctx.registrant}", field=f"{f}.vial_id")
            if vial_id not in touched:
                raise Conflict(f"entry {target['seq']} ({target['kind']}) did not move stock in vial {vial_id}; "
                               "a correction may only touch what the corrected entry touched", field=f"{f}.vial_id")
            room = touched[vial_id] - already[(vial_id, direction)]
            if ml > room:
                raise Conflict(f"entry {target['seq']} recorded {touched[vial_id]} mL for vial {vial_id}"
                               + (f" and earlier corrections already {direction} {already[(vial_id, direction)]} mL"
                                  if already[(vial_id, direction)] else "")
                               + f"; a correction cannot {direction} {ml} mL", field=f"{f}.ml")
            if direction == "remove" and v.get("packaged"):
                # Review 19: a unit still in its package (sealed, or not found when it was opened)
                # leaves the book only with its whole package or by its discrepancy's loss
                # adjustment; the rules replay refuses a correction that takes it (``package-sealed``).
                raise Conflict(f"vial {vial_id} is in package {v['package_id']}, not opened or not found when it was "
                               "opened: a correction cannot take it off the book (open the package before a "
                               "witness, or resolve its discrepancy)", field=f"{f}.vial_id")
            if direction == "remove" and ml > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; removing {ml} mL would take stock below zero",
                               field=f"{f}.ml")
            if direction == "add" and v["ml_left"] + ml > v["container_ml"]:
                raise Conflict(f"vial {vial_id} cannot hold more than {v['container_ml']} mL", field=f"{f}.ml")
            lines.append(ev.CorrectionLine(vial_id=vial_id, product=product_of_vial(ctx, v), direction=direction, ml=ml))
        ctx.append(ev.EntryCorrected(corrects_seq=target["seq"], corrects_kind=target["kind"], reason=reason,
                                     lines=tuple(lines)), signatures=signatures, occurred_at=ctx.now)
        return {"corrects_seq": target["seq"]}

    return run(ledger, principal, "correct_entry", cmd, build, idempotency_key,
               {**request_fields(cmd), "approver": getattr(approver, "staff_id", None)})
