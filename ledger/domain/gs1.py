"""GS1 DataMatrix product identifiers (DSCSA): GTIN (01), serial (21), lot (10), expiry (17).

Parsing is ``biip``'s (a maintained GS1 library); this module only maps its answer onto what a
receipt needs and ties the GTIN to the product's NDC. A US drug's GTIN-14 is an indicator digit,
"03", the 10-digit NDC and a check digit; the 10 digits pad to the 11-digit key in one of three
ways (4-4-2, 5-3-2, 5-4-1), so a GTIN matches a product whose key is one of those three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import biip

from ledger.domain.errors import InvalidInput

GS = "\x1d"  # FNC1 / group separator between variable-length element strings
_SERIAL = re.compile(r"^[A-Za-z0-9._-]{1,20}$")


@dataclass(frozen=True)
class ProductIdentifier:
    gtin: str
    serial: str | None
    lot: str | None
    expiry: date | None


def gtin_check_digit(first13: str) -> int:
    """GS1 mod-10 check digit over the first 13 digits of a GTIN-14."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(first13))
    return (10 - total % 10) % 10


def gtin_for_ndc10(ndc10: str, indicator: str = "0") -> str:
    """The GTIN-14 of a package whose 10-digit NDC (no hyphens) is ``ndc10``."""
    body = indicator + "03" + ndc10
    return body + str(gtin_check_digit(body))


def ndc_keys_of_gtin(gtin: str) -> set[str]:
    """The 11-digit NDC keys a US drug GTIN-14 can stand for (empty if it is not NDC-based)."""
    if len(gtin) != 14 or not gtin.isdigit() or gtin[1:3] != "03":
        return set()
    n = gtin[3:13]
    return {"0" + n, n[:5] + "0" + n[5:], n[:9] + "0" + n[9:]}


def datamatrix(gtin: str, serial: str, lot: str, expiry: date) -> str:
    """The element string a carton's DataMatrix carries (used by the demo and the tests)."""
    return f"01{gtin}21{serial}{GS}10{lot}{GS}17{expiry:%y%m%d}"


def check_serial(serial: str, *, field: str) -> str:
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
        raise InvalidInput("a serial is 1-20 letters, digits, '.', '_' or '-'", field=field)
    return serial


def parse_scan(raw: str, *, field: str) -> ProductIdentifier:
    """One scanned carton; refuses anything that is not a GS1 message with a valid GTIN."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 200:
        raise InvalidInput("must be the text of one GS1 DataMatrix scan", field=field)
    text = raw.strip()
    for prefix in ("]d2", "]C1", "]Q3"):  # symbology identifiers some scanners send
        if text.startswith(prefix):
            text = text[3:]
    result = biip.parse(text)
    msg = result.gs1_message
    if msg is None:
        raise InvalidInput(f"not a GS1 barcode: {result.gs1_message_error or 'unreadable'}", field=field)
    by_ai = {e.ai.ai: e for e in msg.element_strings}
    g = by_ai.get("01")
    if g is None:
        raise InvalidInput("the scan has no GTIN (01)", field=field)
    if g.gtin is None:
        raise InvalidInput(f"the GTIN does not check: {g.gtin_error}", field=field)
    serial = by_ai["21"].value if "21" in by_ai else None
    if serial is not None:
        check_serial(serial, field=field)
    lot = by_ai["10"].value if "10" in by_ai else None
    expiry = by_ai["17"].date if "17" in by_ai else None
    return ProductIdentifier(gtin=g.value.zfill(14), serial=serial, lot=lot, expiry=expiry)


def vial_id(gtin: str, serial: str) -> str:
    """A serialized vial's identity: its GTIN and serial, in GS1's human-readable form."""
    return f"(01){gtin}(21){serial}"
