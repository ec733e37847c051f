"""Faster ways to the same bytes (issue 22): each hot-path rewrite against the plain version it
replaced, which stays here as the reference. A difference would change idempotency hashes or
the canonical bytes of entries, so every case compares exactly."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.integrity import canonical
from ledger.integrity.canonical import format_time, parse_time, to_json_value
from ledger.services.common import request_fields

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _request_fields_reference(cmd: Any) -> dict[str, Any]:
    """``request_fields`` as it was: ``asdict``, then one conversion pass."""

    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, float):
            return f"float:{v!r}"
        if v is None or isinstance(v, bool | int | str):
            return v
        return f"{type(v).__name__}:{v!r}"[:1000]

    return {"type": type(cmd).__name__, **plain(asdict(cmd))}


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    ONE = 1


@dataclass(frozen=True)
class _Inner:
    when: Any
    amount: Any


@dataclass(frozen=True)
class _Odd:
    """Every kind of value a caller can put in a command's fields, valid or not."""

    inner: _Inner
    items: Any
    mapping: Any
    colour: Any
    level: Any
    nothing: Any = None


def test_request_fields_is_the_same_data_as_before():
    at = datetime(2026, 12, 7, 10, 30, tzinfo=timezone(timedelta(hours=-6)))
    receipt = ReceiveStock(supplier_id="S-1", invoice_number="INV-1", occurred_at=at,
                           lines=(ReceivedLineInput("67457-0001-10", 2, "LOT-1", "2030-01-31"),), notes="n")
    odd = _Odd(_Inner(date(2026, 1, 2), Decimal("1.50")), [1.5, True, ("a", None)], {"k": [at, b"raw"]},
               _Colour.RED, _Level.ONE)
    for cmd in (receipt, odd):
        assert request_fields(cmd) == _request_fields_reference(cmd)
        # the same JSON types too (a tuple where there was a list would hash the same, but keep them)
        assert repr(request_fields(cmd)) == repr(_request_fields_reference(cmd))


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))])))
def test_format_time_is_strftimes_text(t: datetime):
    assert format_time(t) == t.astimezone(UTC).strftime(_FORMAT)
    assert parse_time(format_time(t)) == t


def test_format_time_before_the_year_1000_keeps_strftimes_text():
    t = datetime(999, 3, 4, 5, 6, 7, 8, tzinfo=UTC)
    assert format_time(t) == t.strftime(_FORMAT)


_TIME_CHARS = st.sampled_from("0123456789-Tt:.Z +１٣x")


# Shapes ``datetime.fromisoformat`` reads and ``strptime`` with the entry format refused:
@example("2026-12-07 10:00:00.123456Z")
@example("20261207T100000.1234567890Z")
@example("2026-12-07T10:00:00,123456Z")
@example("2026-W49-1T10:00:00.123456Z")
# Shapes ``strptime`` read that are not the entry format (now refused: stricter, never written):
@example("2026-12-07t10:00:00.123456Z")
@example("2026-12- 7T10:00:00.123456Z")
@example("0999-01-01T00:00:00.000000Z")
@given(st.lists(_TIME_CHARS, min_size=27, max_size=27).map("".join)
       | st.datetimes(min_value=datetime(1, 1, 1)).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
def test_parse_time_accepts_exactly_the_entry_format_strptime_accepted(text: str):
    """What ``strptime`` read and ``format_time`` writes back the same is read the same; anything
    else is refused (``strptime`` also read a lowercase ``t``, padded days, non-ASCII digits)."""
    try:
        parsed = datetime.strptime(text, _FORMAT).replace(tzinfo=UTC) if len(text) == 27 and text.endswith("Z") else None
    except ValueError:
        parsed = None
    # (a year below 1000 is written unpadded by ``format_time``, as strftime did; read padded)
    entry_format = parsed is not None and parsed.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z" == text
    expected = parsed if entry_format else None
    try:
        got = parse_time(text)
    except ValueError:
        got = None
    assert got == expected, text


def test_to_json_value_of_a_string_enum_and_a_dataclass_is_as_before():
    odd = _Odd(_Inner(datetime(2026, 1, 2, tzinfo=UTC), Decimal("1.50")), ("a", 1), {"k": (True, None)},
               _Colour.RED, _Level.ONE)
    want = {"inner": {"when": "2026-01-02T00:00:00.000000Z", "amount": "1.50"}, "items": ["a", 1],
            "mapping": {"k": [True, None]}, "colour": "red", "level": 1, "nothing": None}
    for _ in range(2):  # the second time through the per-type field cache
        got = to_json_value(odd)
        assert got == want
        assert canonical.canonical_bytes(got) == canonical.canonical_bytes(want)
