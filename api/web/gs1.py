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


_VIAL_GS1 = re.compile(r"^\(01\)\d{14}\(21\)(.+)$")
#: Characters of a carton's serial kept in a short label (more when two vials would read alike).
SERIAL_TAIL = 6


def _label_parts(vial_id: str) -> tuple[str, str, str]:
    """(what, serial or id, position): a vial of a serialized carton, ``(01)<GTIN>(21)<serial>:NN``
    -> ("carton", serial, "NN"); a serialized vial -> ("serial", serial, ""); a vial of an
    unserialized pack ``P93-1:04`` -> ("pack", "P93-1", "04"); others (``V34-1``) -> ("", id, "")."""
    m = _VIAL_GS1.match(vial_id)
    if m:
        serial = m.group(1)
        if ":" in serial:
            carton, pos = serial.rsplit(":", 1)
            return "carton", carton, pos
        return "serial", serial, ""
    if ":" in vial_id:
        pack, pos = vial_id.rsplit(":", 1)
        return "pack", pack, pos
    return "", vial_id, ""


def _label(vial_id: str, tail: int) -> str:
    what, serial, pos = _label_parts(vial_id)
    if what in ("carton", "serial"):
        cut = serial if len(serial) <= tail else "…" + serial[-tail:]
        return f"{what} {cut}" + (f" · vial {pos}" if pos else "")
    if what == "pack":
        return f"pack {serial} · vial {pos}"
    return f"vial {serial}"


def short_vial_labels(vials: list[dict[str, Any]]) -> dict[str, str]:
    """Short names for the vials of a pick list (issue 21), by vial id: the tail of the carton's
    serial (what is printed on the carton, last ``SERIAL_TAIL`` characters) and the vial's place
    in it, e.g. "carton …00C001 · vial 08", instead of the whole GS1 id. Where two vials of the
    list would read alike, both keep more of the serial, up to all of it, so a label names one vial."""
    ids = [v["vial_id"] for v in vials]
    tails = dict.fromkeys(ids, SERIAL_TAIL)
    while True:
        labels = {i: _label(i, tails[i]) for i in ids}
        seen: dict[str, list[str]] = {}
        for i, text in labels.items():
            seen.setdefault(text, []).append(i)
        alike = [i for same in seen.values() if len(same) > 1 for i in same
                 if len(_label_parts(i)[1]) > tails[i]]
        if not alike:
            return labels
        for i in alike:
            tails[i] += 4
