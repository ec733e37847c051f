"""Alerts on losses taken off the book after a count, and on breakage (issue 15).

A loss adjustment is how a count's shortage leaves the book: two people sign it, and someone who
follows alerts up always sees it, with the evidence (the count, the resolution, the adjustment,
every vial and mL, who signed). A breakage recorded after a count that was taken after it (the
count could not have seen it) explains that count's difference after the fact: it is raised
higher than one recorded at the time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger.domain.alerts.candidates import Candidate, signer_by_meaning
from ledger.domain.form106 import IN_TRANSIT_RULE, transit_shortages  # issue 20


def stock_off_by_loss_adjustment(entry: dict[str, Any]) -> Candidate | None:
    """Every ``loss_adjusted`` entry: stock a count found missing, taken off the book."""
    if entry["kind"] != "loss_adjusted":
        return None
    total = sum((Decimal(a["ml"]) for a in entry["adjustments"]), Decimal("0.00"))
    who = signer_by_meaning(entry)
    approver, second = who.get("approved", ""), who.get("witnessed", "")
    count_seq, resolution_seq = entry.get("count_seq"), entry.get("resolution_seq")
    evidence = tuple(s for s in (count_seq, resolution_seq, entry["seq"]) if s is not None)
    return Candidate(
        alert_key=f"loss_adjusted:{entry['seq']}", rule="stock_off_book_by_loss_adjustment", severity="high",
        subjects=tuple(s for s in (approver, second) if s),
        summary=(f"{total} mL taken off the book (entry {entry['seq']}) for discrepancy {entry['discrepancy_id']} "
                 f"of count entry {count_seq}, resolved as {entry['category'].replace('_', ' ')} (entry "
                 f"{resolution_seq}); approved by {approver or 'nobody'}, second person {second or 'nobody'}"),
        parameters={}, evidence_seqs=evidence,
        figures={"ml_off_book": str(total), "category": entry["category"],
                 "discrepancy_id": entry["discrepancy_id"], "count_seq": str(count_seq),
                 "resolution_seq": str(resolution_seq),
                 "vials": " ".join(f"{a['vial_id']}:{a['ml']}" for a in entry["adjustments"]),
                 "approved_by": approver, "second_person": second},
    )


def breakage_recorded(entry: dict[str, Any]) -> Candidate | None:
    """Every breakage or spill: low when recorded at the time; high when recorded after a count
    that was taken after it (it then explains that count's difference after the fact)."""
    if entry["kind"] != "breakage_recorded":
        return None
    total = sum((Decimal(a["ml"]) for a in entry["lines"]), Decimal("0.00"))
    who = signer_by_meaning(entry)
    recorder, witness = who.get("performed", ""), who.get("witnessed", "")
    after = tuple(entry.get("after_counts", ()))
    fate = "set aside for destruction" if entry["recoverable"] else "off the book"
    summary = (f"{entry['what']} (entry {entry['seq']}): {total} mL {fate}, recorded by {recorder or 'nobody'}, "
               f"seen by {witness or 'nobody'}: {entry['description']}")
    if after:
        summary += (f"; recorded after count entr{'y' if len(after) == 1 else 'ies'} "
                    f"{', '.join(str(s) for s in after)}, taken after it")
    return Candidate(
        alert_key=f"breakage:{entry['seq']}", rule="breakage_after_count" if after else "breakage_recorded",
        severity="high" if after else "low", subjects=tuple(s for s in (recorder, witness) if s),
        summary=summary, parameters={}, evidence_seqs=(*after, entry["seq"]),
        figures={"what": entry["what"], "ml": str(total), "recoverable": "true" if entry["recoverable"] else "false",
                 "vials": " ".join(f"{a['vial_id']}:{a['ml']}" for a in entry["lines"]),
                 "after_counts": " ".join(str(s) for s in after), "recorded_by": recorder, "witnessed_by": witness},
    )


def shortage_at_receipt(entry: dict[str, Any]) -> Candidate | None:
    """Issue 20: a receipt where fewer containers (or packages) arrived than the invoice says
    were shipped. A loss in transit is the supplier's to report (21 CFR 1301.74(c)); the clinic
    keeps the supplier's notice with the receipt, so someone follows it up."""
    if entry["kind"] != "stock_received":
        return None
    supplier = (entry.get("supplier") or {}).get("name", "the supplier")
    short = transit_shortages(entry["invoice_number"], supplier, entry.get("lines") or ())
    if not short:
        return None
    return Candidate(
        alert_key=f"shortage_at_receipt:{entry['seq']}", rule="shortage_at_receipt", severity="medium",
        subjects=(), summary=f"receipt entry {entry['seq']}: " + "; ".join(s["note"] for s in short),
        parameters={"rule": IN_TRANSIT_RULE}, evidence_seqs=(entry["seq"],),
        figures={"invoice_number": entry["invoice_number"], "supplier": supplier,
                 "short": " ".join(f"line {s['line']}:{s['short']} {s['unit']}" for s in short)},
    )
