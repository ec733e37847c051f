"""Formatting of report figures: exact decimals, local times, periods.

Figures are kept in the report data as the canonical decimal strings of the entries
(``"5000.00"``) and formatted only when drawn, so the data embedded in the PDF and the figures
recomputed by ``verify-report`` compare exactly, and no float ever touches a quantity.
"""

from __future__ import annotations

import zoneinfo
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.domain.errors import InvalidInput
from ledger.domain.period import Period, Window
from ledger.integrity.canonical import parse_time
from reports.errors import ReportError

__all__ = ["Period", "Window", "amount", "count", "dec", "local", "num", "parse_period", "volume"]

CENT = Decimal("0.01")
#: Volumes are recorded to syringe resolution (issue 19): "0.365" mL.
MILLI = Decimal("0.001")


def dec(value: str | Decimal | int) -> Decimal:
    """An exact amount from an entry's decimal string (never a float)."""
    if isinstance(value, float):
        raise TypeError("floats are not report figures; use Decimal")
    return Decimal(value)


def amount(value: Decimal) -> str:
    """The canonical figure string at scale 2 (what the report data stores)."""
    return format(dec(value).quantize(CENT), "f")


def volume(value: str | Decimal) -> str:
    """A volume's canonical figure string by the 2-or-3 rule (``ledger.domain.quantities.norm``):
    2 places when exact to 0.01 (so exactly what ``amount`` gave for every volume recorded before
    issue 19, and reports of that data rebuild byte for byte), else 3 ("0.365")."""
    d = dec(value)
    two = d.quantize(CENT)
    return format(two if two == d else d.quantize(MILLI, ROUND_HALF_EVEN), "f")


def num(value: str | Decimal, unit: str = "") -> str:
    """A figure as printed: thousands separators, 2 places, then the unit; a volume (``unit``
    "mL") with a third decimal prints it (syringe resolution, issue 19)."""
    d = dec(value)
    q = d.quantize(CENT)
    if unit == "mL" and q != d:
        q = d.quantize(MILLI, ROUND_HALF_EVEN)
    text = f"{q:,}"
    return f"{text} {unit}" if unit else text


def count(value: int, unit: str = "") -> str:
    text = f"{value:,}"
    return f"{text} {unit}" if unit else text


def parse_period(start: str, end: str, tz: str) -> Period:
    """Parse ``--from``/``--to`` dates (``Period.from_local_days``, the one period rule of
    issue 20); an inverted or malformed period is a ``ReportError`` naming the field."""
    try:
        return Period.from_local_days(start, end, tz)
    except InvalidInput as exc:
        raise ReportError(exc.reason, field=exc.field) from None


def local(utc_text: str, tz: str, *, seconds: bool = False) -> str:
    """An entry time in the registrant's local time, with the zone's abbreviation."""
    t = parse_time(utc_text).astimezone(zoneinfo.ZoneInfo(tz))
    return t.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")
