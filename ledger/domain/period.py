"""One period rule for every report, the API, the pages and the command line (issue 20).

A period is whole **local days**, both included, in the registrant's time zone: ``from`` at
local midnight up to (excluded) local midnight after ``to``. In UTC that is ``[start_utc,
end_utc)``, and a day across a DST change is 23 or 25 hours, never a fixed 24.

An accountability audit narrows its days to a **window** between two counts or inventories
(``ledger.services.audit.audit_window``): the window runs after the beginning count (its event
time and ledger entry) up to and including the ending count. A report asked "for the audit's
window" (the logs printed beside the audit) takes exactly the same window, so their totals are
the audit's figures. Entries are placed by ``(event time, seq)``: two entries at the same
instant are ordered by the ledger.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from ledger.domain.errors import InvalidInput
from ledger.integrity.canonical import format_time

#: An entry's place in time: (event time as fixed-width UTC text, seq).
Key = tuple[str, int]


@dataclass(frozen=True)
class Window:
    """The audit window: after ``begin`` (exclusive) up to ``end`` (inclusive), each the
    ``(occurred_at, seq)`` of a count or inventory; ``begin_source``/``end_source`` describe
    those entries (seq, kind, occurred_at, and for an inventory its type)."""

    begin: Key
    end: Key
    begin_source: dict[str, Any]
    end_source: dict[str, Any]
    #: The beginning is the registrant's initial inventory (its first period).
    first_period: bool = False

    def holds(self, occurred_at: str, seq: int) -> bool:
        return self.begin < (occurred_at, seq) <= self.end

    def to_json(self) -> dict[str, Any]:
        return {"begin": dict(self.begin_source), "end": dict(self.end_source), "first_period": self.first_period}


@dataclass(frozen=True)
class Period:
    """Whole local days ``start .. end`` (both included) in the registrant's time zone, and, for
    an audit and the logs printed beside it, the audit's ``window`` between two counts."""

    start: date
    end: date
    tz: str
    window: Window | None = None

    @classmethod
    def from_local_days(cls, from_day: date | str, to_day: date | str, tz: str) -> Period:
        """The period of two local days (dates or ``YYYY-MM-DD``), both included; an inverted
        period, a malformed day or one whose bounds do not exist is ``InvalidInput`` naming
        ``from`` or ``to``."""
        def day(value: date | str, name: str) -> date:
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"the period needs dates as YYYY-MM-DD; {name} is {value!r}", field=name) from None

        s, e = day(from_day, "from"), day(to_day, "to")
        if e < s:
            raise InvalidInput(f"the period is empty: {e.isoformat()} is before {s.isoformat()}", field="to")
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"{tz!r} is not a time zone", field="time_zone") from None
        period = cls(s, e, tz)
        # Its bounds in UTC must exist: the day after 9999-12-31 does not (OverflowError, a 500 page).
        for bound, name, text in (("start_utc", "from", s), ("end_utc", "to", e)):
            try:
                getattr(period, bound)
            except OverflowError:
                raise InvalidInput(f"{text.isoformat()} is out of range; the period must lie within "
                                   "the years 1 to 9999", field=name) from None
        return period

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    @property
    def start_utc(self) -> str:
        """Local midnight starting ``start`` (included), UTC text."""
        return format_time(datetime.combine(self.start, time(0), self.zone))

    @property
    def end_utc(self) -> str:
        """The first instant after the period (exclusive bound): local midnight after ``end``, UTC text."""
        return format_time(datetime.combine(self.end + timedelta(days=1), time(0), self.zone))

    def contains(self, utc_text: str) -> bool:
        """Whether an instant is on one of the period's days (entry times are fixed-width UTC
        text, so string order is time order)."""
        return self.start_utc <= utc_text < self.end_utc

    def holds(self, entry: dict[str, Any]) -> bool:
        """Whether a decoded entry's event belongs to the period: inside the audit window when
        the period has one, else on one of its days."""
        if self.window is not None:
            return self.window.holds(entry["occurred_at"], entry["seq"])
        return self.contains(entry["occurred_at"])

    def with_window(self, window: Window | None) -> Period:
        return replace(self, window=window)

    def label(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()} ({self.tz})"

    def to_json(self) -> dict:
        out: dict[str, Any] = {"from": self.start.isoformat(), "to": self.end.isoformat(), "time_zone": self.tz}
        if self.window is not None:  # only then: reports of days made before rebuild to the same data
            out["window"] = self.window.to_json()
        return out
