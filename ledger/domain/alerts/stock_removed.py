"""Alerts on records that take stock off the book without a dose behind them.

A correction that removes stock is the quiet way to record a vial away: it needs a second person
(``services.corrections``) and is always put in front of someone who follows alerts up, with the
evidence (the correction, the corrected entry, every vial and mL, who signed).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger.domain.alerts.candidates import Candidate, signer_by_meaning


def stock_removed_by_correction(entry: dict[str, Any]) -> Candidate | None:
    """An ``entry_corrected`` with any line that removes stock from a vial."""
    if entry["kind"] != "entry_corrected":
        return None
    removed = [ln for ln in entry["lines"] if ln["direction"] == "remove"]
    if not removed:
        return None
    total = sum((Decimal(ln["ml"]) for ln in removed), Decimal("0.00"))
    by_meaning = signer_by_meaning(entry)
    author, approver = by_meaning.get("performed", ""), by_meaning.get("approved", "")
    vials = " ".join(f"{ln['vial_id']}:{ln['ml']}" for ln in removed)
    return Candidate(
        alert_key=f"correction_removed:{entry['seq']}", rule="stock_removed_by_correction", severity="high",
        subjects=tuple(s for s in (author, approver) if s),
        summary=(f"correction (entry {entry['seq']}) of entry {entry['corrects_seq']} ({entry['corrects_kind']}) "
                 f"took {total} mL off the book from {len(removed)} vial(s); recorded by {author or 'unsigned'}, "
                 f"approved by {approver or 'nobody'}: {entry['reason']}"),
        parameters={}, evidence_seqs=(entry["corrects_seq"], entry["seq"]),
        figures={"ml_removed": str(total), "vials": vials, "corrects_seq": str(entry["corrects_seq"]),
                 "corrects_kind": entry["corrects_kind"], "recorded_by": author, "approved_by": approver},
    )
