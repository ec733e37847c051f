"""Formatting of report figures: exact decimals, local times, periods.

Figures are kept in the report data as the canonical decimal strings of the entries
(``"5000.00"``) and formatted only when drawn, so the data embedded in the PDF and the figures
recomputed by ``verify-report`` compare exactly, and no float ever touches a quantity.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.integrity.canonical import format_time, parse_time
from reports.errors import ReportError

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


@dataclass(frozen=True)
class Period:
    """Whole local days ``start .. end`` (both included) in the registrant's time zone."""

    start: date
    end: date
    tz: str

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    @property
    def start_utc(self) -> str:
        return format_time(datetime.combine(self.start, time(0), self.zone))

    @property
    def end_utc(self) -> str:
        """The first instant after the period (exclusive bound), UTC text."""
        return format_time(datetime.combine(self.end + timedelta(days=1), time(0), self.zone))

    def contains(self, utc_text: str) -> bool:
        # Entry times are fixed-width UTC text, so string order is time order.
        return self.start_utc <= utc_text < self.end_utc

    def label(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()} ({self.tz})"

    def to_json(self) -> dict:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "time_zone": self.tz}


def parse_period(start: str, end: str, tz: str) -> Period:
    """Parse ``--from``/``--to`` dates; an inverted period is an error."""
    def day(text: str, name: str) -> date:
        try:
            return date.fromisoformat(text)
        except (TypeError, ValueError):
            raise ReportError(f"the period needs dates as YYYY-MM-DD; {name} is {text!r}", field=name) from None

    s, e = day(start, "from"), day(end, "to")
    if e < s:
        raise ReportError(f"the period is empty: {end} is before {start}", field="to")
    period = Period(s, e, tz)
    # Its bounds in UTC must exist: the day after 9999-12-31 does not (OverflowError, a 500 page).
    for bound, name in (("start_utc", "from"), ("end_utc", "to")):
        try:
            getattr(period, bound)
        except OverflowError:
            raise ReportError(f"{start if name == 'from' else end} is out of range; the period must lie within "
                              "the years 1 to 9999", field=name) from None
    return period


def local(utc_text: str, tz: str, *, seconds: bool = False) -> str:
    """An entry time in the registrant's local time, with the zone's abbreviation."""
    t = parse_time(utc_text).astimezone(zoneinfo.ZoneInfo(tz))
    return t.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")
