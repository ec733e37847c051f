"""Canonical bytes: the fast encoder equals the rfc8785 package; no floats reach the hash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import entries as ev
from ledger.integrity.canonical import (
    canonical_bytes,
    decode,
    format_time,
    parse_time,
    to_json_value,
)

KEY = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
SAFE_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)  # any char but lone surrogates
JSON = st.recursive(
    st.none() | st.booleans() | SAFE_INT | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEY, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400)
@given(st.dictionaries(KEY, JSON, max_size=8))
def test_fast_encoder_equals_rfc8785(obj):
    assert canonical_bytes(obj) == rfc8785.dumps(obj)


@pytest.mark.parametrize("s", ["\x00\x1f\x7f", "\u2028\u2029", "é漢字", "😀 \U0001F9EA", '"\\/\b\f\n\r\t'])
def test_string_escapes_equal_rfc8785(s):
    assert canonical_bytes({"v": s}) == rfc8785.dumps({"v": s})


def test_lone_surrogate_is_refused():
    with pytest.raises(Exception):  # noqa: B017 - rfc8785 raises its own error type
        canonical_bytes({"v": "\ud800"})


def test_entry_round_trip_is_byte_identical():
    product = ev.ProductDescription("42023-0113-10", "42023011310", "Ketamine", "7285", "III", "injection",
                                    Decimal("50.00"), Decimal("10.00"))
    item = ev.InventoryItem("V1-1", product, "LOT", date(2028, 1, 31), False, Decimal("6.00"), True)
    obj = {"registrant": "AB1234563", "seq": 7, "kind": "inventory_taken",
           **to_json_value(ev.InventoryTaken("initial", "opening_of_business", (item,)))}
    data = canonical_bytes(obj)
    assert data == rfc8785.dumps(obj)
    assert canonical_bytes(decode(data)) == data
    assert b'"ml":"6.00"' in data and b'"strength_mg_per_ml":"50.00"' in data


def test_floats_never_reach_an_entry():
    with pytest.raises(TypeError):
        to_json_value({"ml": 1.5})
    with pytest.raises(ValueError):
        decode(b'{"ml":1.5}')
    with pytest.raises(TypeError):
        to_json_value(Decimal("NaN"))


def test_times_are_utc_microseconds():
    t = datetime(2026, 11, 25, 9, 30, tzinfo=timezone(timedelta(hours=-6)))
    assert format_time(t) == "2026-11-25T15:30:00.000000Z"
    assert parse_time(format_time(t)) == t.astimezone(UTC)
    with pytest.raises(ValueError):
        format_time(datetime(2026, 1, 1))
