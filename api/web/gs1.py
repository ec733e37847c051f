"""GS1 scans typed into a field by a keyboard-wedge barcode scanner (DSCSA product identifier on
the carton: GTIN (01), expiry (17), lot (10), serial (21)), parsed with ``biip``.

Scanners send the FNC1 separator as the ASCII GS character, which some keyboards drop; a scanner
configured to send ``|`` or ``<GS>`` instead works too, and so does the human-readable form with
parentheses, ``(01)00342023113108(17)280630(10)KA2610(21)SN1``.

A US drug's GTIN carries its 10-digit NDC ("03" + NDC10 after the indicator digit); the 10 digits
alone are ambiguous (4-4-2, 5-3-2, 5-4-1), so the NDC is the product *added at this registrant*
whose digits match, or the scan is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import biip

from ledger.domain.errors import InvalidInput, NotFound

GS = "\x1d"
_HRI = re.compile(r"\((\d{2,4})\)")


@dataclass(frozen=True)
class Scan:
    gtin: str
    ndc: str  # as printed on the registrant's product
    ndc_key: str
    lot: str | None
    expiry: str | None  # YYYY-MM-DD
    serial: str | None


def _normalize(raw: str) -> str:
    s = raw.strip()
    for prefix in ("]d2", "]C1", "]Q3", "]e0"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    s = s.replace("<GS>", GS).replace("|", GS)
    if s.startswith("("):
        parts = _HRI.split(s)[1:]  # ai, value, ai, value ...
        s = GS.join(ai + value for ai, value in zip(parts[::2], parts[1::2], strict=False))
    return s


def parse_scan(raw: str, products: list[dict[str, Any]], *, field: str = "scan") -> Scan:
    if not raw or not raw.strip():
        raise InvalidInput("scan the carton's 2D barcode (GS1 DataMatrix)", field=field)
    if len(raw) > 200:
        raise InvalidInput("this is longer than any GS1 product identifier", field=field)
    result = biip.parse(_normalize(raw))
    msg = result.gs1_message
    if msg is None:
        raise InvalidInput("not a GS1 barcode with a GTIN, lot and expiry: "
                           f"{result.gs1_message_error or 'unreadable'}", field=field)
    els = msg.element_strings
    gtin_el = els.get(ai="01")
    if gtin_el is None:
        raise InvalidInput("the scan has no GTIN (01)", field=field)
    if gtin_el.gtin is None:
        raise InvalidInput(f"the GTIN does not check: {gtin_el.gtin_error}", field=field)
    payload = gtin_el.value[1:-1]  # drop the indicator and check digits: "03" + NDC10 for a US drug
    if not payload.startswith("03"):
        raise InvalidInput(f"GTIN {gtin_el.value} is not a US drug (NDC-based) product identifier", field=field)
    ndc10 = payload[2:]
    # the 11-digit key pads one segment of the 10 digits with a 0: 4-4-2, 5-3-2 or 5-4-1
    keys = {"0" + ndc10, ndc10[:5] + "0" + ndc10[5:], ndc10[:9] + "0" + ndc10[9:]}
    match = [p for p in products if p["ndc_key"] in keys]
    if len(match) > 1:
        raise InvalidInput(f"GTIN {gtin_el.value} matches more than one product here "
                           f"({', '.join(p['ndc'] for p in match)}); type the line by hand", field=field)
    if not match:
        raise NotFound(f"GTIN {gtin_el.value} carries NDC digits {ndc10}, which match no product added at this "
                       "location; add the product first", field=field)
    exp = els.get(ai="17")
    lot = els.get(ai="10")
    serial = els.get(ai="21")
    return Scan(gtin=gtin_el.value, ndc=match[0]["ndc"], ndc_key=match[0]["ndc_key"],
                lot=lot.value if lot else None, expiry=exp.date.isoformat() if exp and exp.date else None,
                serial=serial.value if serial else None)
