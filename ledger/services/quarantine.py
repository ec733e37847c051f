"""Quarantine: stock held back from use (recalls, damage, suspicion) and its release.
"""

from __future__ import annotations

from ledger.domain import entries as ev
from ledger.domain.commands import (
    QuarantineStock,
    ReleaseQuarantine,
)
from ledger.domain.errors import Conflict
from ledger.domain.principal import Meaning, Principal
from ledger.integrity.canonical import decode
from ledger.services.administration import CLINICIANS
from ledger.services.common import run, text, vial_for_use, vial_ids
from ledger.services.disposal import STOCK_HANDLERS
from ledger.services.packages import whole_packages  # issue 19
from ledger.storage.store import CommandContext, Ledger


def quarantine_stock(ledger: Ledger, principal: Principal, cmd: QuarantineStock, *,
                     idempotency_key: str | None = None) -> dict:
    """Set suspect product aside (DSCSA): nothing can be drawn from it until released."""
    ids = vial_ids(cmd.vial_ids)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        rows = []
        for i, vial_id in enumerate(ids):
            v = vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]", packaged_ok=True)
            if v["state"] == "quarantined":
                raise Conflict(f"vial {vial_id} is already in quarantine", field=f"vial_ids[{i}]")
            rows.append(v)
        whole_packages(ctx, rows)  # issue 19: a sealed carton is set aside whole
        ctx.append(ev.StockQuarantined(vial_ids=ids, reason=reason), signatures=[sig], occurred_at=ctx.now)
        return {}

    return run(ledger, principal, "quarantine_stock", cmd, build, idempotency_key)


def _breakage_hold(ctx: CommandContext, vial_id: str) -> int | None:
    """The seq of the breakage entry that holds ``vial_id`` in quarantine, if the latest hold or
    release of the vial is a recoverable breakage (breakages are rare: a scan of their entries)."""
    rows = ctx.view.raw.rows(ctx.conn, "SELECT seq, kind, canonical FROM entries WHERE registrant = :r AND kind IN "
                             "('breakage_recorded', 'quarantine_released', 'stock_quarantined') ORDER BY seq DESC",
                             {"r": ctx.registrant})
    for row in rows:
        e = decode(bytes(row["canonical"]))
        if row["kind"] == "breakage_recorded":
            if any(ln.get("vial_id") == vial_id for ln in e.get("lines", ())):
                return int(row["seq"]) if e.get("recoverable") else None
        elif vial_id in e.get("vial_ids", ()):
            return None
    return None


def release_quarantine(ledger: Ledger, principal: Principal, cmd: ReleaseQuarantine, *,
                       idempotency_key: str | None = None) -> dict:
    """Release product found not suspect; a pharmacist or manager decides."""
    ids = vial_ids(cmd.vial_ids)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.APPROVED, roles=STOCK_HANDLERS)
        rows = []
        for i, vial_id in enumerate(ids):
            v = vial_for_use(ctx, vial_id, field=f"vial_ids[{i}]", packaged_ok=True)
            rows.append(v)
            if v["state"] != "quarantined":
                raise Conflict(f"vial {vial_id} is not in quarantine", field=f"vial_ids[{i}]")
            # A vial set aside by a recoverable breakage or spill was attested broken by two
            # people: it leaves by destruction (Form 41), never back into use by one person. The
            # latest hold or release of the vial decides (not its last entry: a correction after
            # the breakage must not unlock it).
            held_by = _breakage_hold(ctx, vial_id)
            if held_by is not None:
                raise Conflict(f"vial {vial_id} was set aside by a breakage or spill (entry {held_by}); "
                               "destroy it (Form 41) instead of releasing it", field=f"vial_ids[{i}]")
        whole_packages(ctx, rows)  # issue 19: a sealed carton comes back whole
        ctx.append(ev.QuarantineReleased(vial_ids=ids, reason=reason), signatures=[sig], occurred_at=ctx.now)
        return {}

    return run(ledger, principal, "release_quarantine", cmd, build, idempotency_key)
