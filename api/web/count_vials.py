"""Issue 20: the count page's opened vials, typed one by one (optional).

Counters type each opened vial as its label shows it, with the mL they estimate in it, one per
line: ``V14-1 2.45``, or the end of a serialized vial's id (``0042:03 2.45``). A short id is the
vial of the counted product on hand whose id ends with it, when exactly one does. The page never
lists the vials (a blind count shows no book); what was typed is resolved only when the count is
submitted, and the service then checks each vial (opened, on hand, of that product).
"""

from __future__ import annotations

import re
from typing import Any

from api.web.forms import Errors
from ledger.domain.commands import OpenVialInput
from ledger.domain.projections import ON_HAND

#: A line of the box: the vial's id (no spaces) and the mL, separated by spaces, a comma or a colon
#: followed by a space ("V14-1 2.45", "V14-1, 2.45", "V14-1: 2.45").
_LINE = re.compile(r"^\s*(\S+?)[,:]?\s+([0-9]+(?:\.[0-9]+)?)\s*(?:ml|mL|ML)?\s*$")
MAX_VIALS = 50


def resolve(typed: str, vials: list[dict[str, Any]]) -> str | None:
    """The vial id ``typed`` names among ``vials`` (the product's on hand): the exact id, else the
    one id ending with it (case-insensitive); None when none or several do."""
    ids = [v["vial_id"] for v in vials]
    if typed in ids:
        return typed
    end = typed.casefold()
    found = [i for i in ids if i.casefold().endswith(end)]
    return found[0] if len(found) == 1 else None


def parse_open_vials(text: str, vials: list[dict[str, Any]], name: str, errors: Errors) -> tuple[OpenVialInput, ...]:
    """The box ``name`` as the service's ``open_vials``; a line it cannot read or a vial it cannot
    name is an error on the box (nothing is guessed)."""
    rows = [ln for ln in (text or "").splitlines() if ln.strip()]
    if len(rows) > MAX_VIALS:
        errors.add(name, f"at most {MAX_VIALS} opened vials per product")
        return ()
    on_hand = [v for v in vials if v["state"] in ON_HAND]
    out = []
    for k, row in enumerate(rows, 1):
        m = _LINE.match(row)
        if m is None:
            errors.add(name, f"line {k}: type the vial's id and the mL in it, e.g. V14-1 2.45")
            return ()
        vid = resolve(m.group(1), on_hand)
        if vid is None:
            ends = sum(1 for v in on_hand if v["vial_id"].casefold().endswith(m.group(1).casefold()))
            errors.add(name, f"line {k}: {m.group(1)!r} " + (
                f"is the end of {ends} vials' ids; type more of it" if ends else
                "is not a vial of this product on hand; check the label"))
            return ()
        out.append(OpenVialInput(vid, m.group(2)))
    return tuple(out)


def input_of(name: str) -> str:
    """A service error about a named vial (``lines-0-open_vials-1-vial_id``) belongs to its box."""
    m = re.match(r"^(lines-\d+-open_vials)", name)
    return m.group(1) if m else name


def from_form(ledger: Any, dea: str, ndc: str, text: str, name: str, errors: Errors) -> tuple[OpenVialInput, ...]:
    """The opened vials typed for the product ``ndc`` (empty box: none, and nothing is read)."""
    if not (text or "").strip():
        return ()
    from api.http import queries as api_queries
    from ledger.services import stock

    key = next((p["ndc_key"] for p in api_queries.products(ledger, dea) if p["ndc"] == ndc), None)
    if key is None:
        return ()  # the service names the unknown product on its own line
    return parse_open_vials(text, stock.vials(ledger, dea, ndc_key=key), name, errors)
