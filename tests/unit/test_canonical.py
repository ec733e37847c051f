"""Canonical bytes: the fast encoder equals the rfc8785 package; no floats reach the hash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import rfc8785
from hypothesis import example, given, settings
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


# Non-ASCII keys. RFC 8785 sorts keys by their UTF-16 code units; Python's ``sort_keys`` by code
# points. The two orders agree unless two keys first differ where one has an astral character
# (U+10000 and up, a surrogate pair D800-DBFF in UTF-16) and the other a character in
# U+E000-U+FFFF: by code point the BMP one sorts first, by UTF-16 code unit the astral one.
ANY_CHAR = st.characters(blacklist_categories=("Cs",))  # every code point but lone surrogates
ASTRAL = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, blacklist_categories=("Cs",))
HIGH_BMP = st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF, blacklist_categories=("Cs",))
NON_ASCII_CHAR = st.one_of(st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), ASTRAL, HIGH_BMP,
                           st.characters(min_codepoint=0x20, max_codepoint=0x7E))
UNICODE_KEY = st.text(alphabet=NON_ASCII_CHAR, min_size=1, max_size=6)
UNICODE_TEXT = st.text(alphabet=st.one_of(ANY_CHAR, ASTRAL), max_size=20)
#: Keys whose characters avoid U+E000-U+FFFF: code-point and UTF-16 order agree on them.
SAFE_KEY = st.text(alphabet=st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0xD7FF, blacklist_categories=("Cs",)),
                                      ASTRAL), min_size=1, max_size=6)


def unicode_json(keys):
    return st.recursive(
        st.none() | st.booleans() | SAFE_INT | UNICODE_TEXT,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
        max_leaves=25,
    )


@settings(max_examples=300)
@given(st.dictionaries(KEY, unicode_json(KEY), max_size=6))
def test_fast_encoder_equals_rfc8785_on_non_ascii_values(obj):
    """Values anywhere in Unicode (controls, U+2028, astral characters) encode as rfc8785 does."""
    assert canonical_bytes(obj) == rfc8785.dumps(obj)


@settings(max_examples=300)
@given(st.dictionaries(SAFE_KEY, unicode_json(SAFE_KEY), min_size=1, max_size=6))
def test_fast_encoder_equals_rfc8785_on_non_ascii_keys_outside_e000_ffff(obj):
    """Non-ASCII and astral keys sort as RFC 8785 says while no key holds U+E000-U+FFFF."""
    assert canonical_bytes(obj) == rfc8785.dumps(obj)


@settings(max_examples=300)
@example({"\ue000": 1, "\U00010000": 2})
@given(st.dictionaries(UNICODE_KEY, unicode_json(UNICODE_KEY), min_size=1, max_size=6))
def test_fast_encoder_equals_rfc8785_on_any_keys(obj):
    """Any keys, astral ones and U+E000-U+FFFF included, as the architecture's contract says
    ("the C encoder ... is proven byte-equal to the rfc8785 package")."""
    assert canonical_bytes(obj) == rfc8785.dumps(obj)


@pytest.mark.parametrize("s", ["\x00\x1f\x7f", "\u2028\u2029", "é漢字", "😀 \U0001F9EA", '"\\/\b\f\n\r\t'])
def test_string_escapes_equal_rfc8785(s):
    assert canonical_bytes({"v": s}) == rfc8785.dumps({"v": s})


def test_lone_surrogate_is_refused():
    """Exact types, not ``Exception``: a value falls back to rfc8785, which raises its
    ``CanonicalizationError``; a key fails in rfc8785's UTF-16 key sort (``UnicodeEncodeError``).

    Deliberate break tried (reverted at once): the fallback in ``canonical_bytes``
    (``ledger/integrity/canonical.py``) calling ``rfc8785.dump(obj)`` (a typo) instead of
    ``rfc8785.dumps(obj)``: this test failed with ``TypeError: dump() missing 1 required
    positional argument``; the old ``pytest.raises(Exception)`` version passed.
    """
    with pytest.raises(rfc8785.CanonicalizationError) as value:
        canonical_bytes({"v": "\ud800"})
    assert value.type is rfc8785.CanonicalizationError  # not a subclass such as FloatDomainError
    with pytest.raises(UnicodeEncodeError):
        canonical_bytes({"\udc00": "v"})


def test_entry_round_trip_is_byte_identical():
    product = ev.ProductDescription("67457-0001-10", "67457000110", "Ketamine", "7285", "III", "injection",
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
