"""Alert on a blind count whose counters read the book while it was open.

A count that copies the book hides every loss it should find; the entry lists the reads, and
this puts them in front of whoever follows alerts up.
"""

from __future__ import annotations

from typing import Any

from ledger.domain.alerts.candidates import Candidate


def book_read_during_blind_count(entry: dict[str, Any]) -> Candidate | None:
    """A ``stock_counted`` entry that lists reads of the book by its counters."""
    if entry["kind"] != "stock_counted" or not entry.get("book_reads"):
        return None
    reads = entry["book_reads"]
    readers = tuple(sorted({r["staff_id"] for r in reads}))
    discrepancies = [ln["discrepancy_id"] for ln in entry["lines"] if ln["discrepancy_id"]]
    return Candidate(
        alert_key=f"blind_count_read:{entry['seq']}", rule="book_read_during_blind_count", severity="high",
        subjects=readers,
        summary=(f"blind count {entry['session_id']} (entry {entry['seq']}): {', '.join(readers)} read the stock "
                 f"figures {len(reads)} time(s) while counting; its discrepancies "
                 f"{', '.join(discrepancies)} must be resolved and the count taken again blind"),
        parameters={}, evidence_seqs=(entry["seq"],),
        figures={"session_id": entry["session_id"], "reads": str(len(reads)),
                 "first_read_at": reads[0]["read_at"], "what": " | ".join(sorted({r["what"] for r in reads})),
                 "discrepancy_ids": " ".join(discrepancies)},
    )
