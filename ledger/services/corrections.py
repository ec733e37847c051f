"""Corrections: a new entry that references the one it corrects; nothing recorded is altered.
"""

from __future__ import annotations

from ledger.domain import entries as ev
from ledger.domain.commands import (
    CorrectEntry,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal
from ledger.domain.quantities import parse_amount
from ledger.services.administration import CLINICIANS
from ledger.services.common import entry_at, product_of_vial, run, text
from ledger.storage.store import CommandContext, Ledger


def correct_entry(ledger: Ledger, principal: Principal, cmd: CorrectEntry, *, idempotency_key: str | None = None) -> dict:
    """A correction references the entry it corrects, says why and carries compensating
    quantities; the corrected entry stays as it was."""
    reason = text(cmd.reason, field="reason", max_len=1000)
    lines_in = []
    for i, ln in enumerate(cmd.lines):
        if ln.direction not in ("add", "remove"):
            raise InvalidInput("must be 'add' or 'remove'", field=f"lines[{i}].direction")
        lines_in.append((ln.vial_id, ln.direction, parse_amount(ln.ml, field=f"lines[{i}].ml")))

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        target = entry_at(ctx, cmd.corrects_seq, field="corrects_seq")
        lines = []
        for i, (vial_id, direction, ml) in enumerate(lines_in):
            f = f"lines[{i}]"
            v = ctx.view.get("vials", (ctx.registrant, vial_id)) if isinstance(vial_id, str) else None
            if v is None:
                raise NotFound(f"no vial {vial_id!r} at {ctx.registrant}", field=f"{f}.vial_id")
            if direction == "remove" and ml > v["ml_left"]:
                raise Conflict(f"vial {vial_id} holds {v['ml_left']} mL; removing {ml} mL would take stock below zero",
                               field=f"{f}.ml")
            if direction == "add" and v["ml_left"] + ml > v["container_ml"]:
                raise Conflict(f"vial {vial_id} cannot hold more than {v['container_ml']} mL", field=f"{f}.ml")
            lines.append(ev.CorrectionLine(vial_id=vial_id, product=product_of_vial(ctx, v), direction=direction, ml=ml))
        ctx.append(ev.EntryCorrected(corrects_seq=target["seq"], corrects_kind=target["kind"], reason=reason,
                                     lines=tuple(lines)), signatures=[sig], occurred_at=ctx.now)
        return {"corrects_seq": target["seq"]}

    return run(ledger, principal, "correct_entry", cmd, build, idempotency_key)
