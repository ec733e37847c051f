"""Who signed an entry, as the new reports of issue 20 print it (transfers, corrections, breakage,
role history): printed names by the meaning they signed with, and the time each signed."""

from __future__ import annotations

from typing import Any


def by_meaning(entry: dict[str, Any], *meanings: str) -> list[str]:
    """Printed names of the signatures with one of ``meanings`` (in signing order)."""
    return [s["printed_name"] for s in entry.get("signatures") or () if s.get("meaning") in meanings]


def others(entry: dict[str, Any], *meanings: str) -> list[str]:
    """Printed names and meanings of the signatures that are none of ``meanings``: nothing a
    signer vouched for is left off the page, whatever meaning a later entry shape adds."""
    return [f"{s['printed_name']} ({s.get('meaning', '?')})" for s in entry.get("signatures") or ()
            if s.get("meaning") not in meanings]


def signed(entry: dict[str, Any]) -> list[dict[str, str]]:
    """Every signature as report data: staff id, printed name, meaning, when (UTC text)."""
    return [{"staff_id": s.get("staff_id", ""), "printed_name": s["printed_name"], "meaning": s.get("meaning", ""),
             "signed_at": s.get("signed_at", "")} for s in entry.get("signatures") or ()]
