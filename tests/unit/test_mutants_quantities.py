"""Quantities, rule by rule (issue 14: mutation testing, bench/mutation.py): what ``parse_amount``
and ``parse_count`` accept, what they refuse, and the error each refusal gives (its field and
words, which the API and the pages show)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.domain.errors import InvalidInput
from ledger.domain.quantities import MAX_QUANTITY, fmt, parse_amount, parse_count, q2

D = Decimal


def refused(fn, value, **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        fn(value, field="f.ml", **kw)
    assert e.value.field == "f.ml"
    return e.value


@pytest.mark.parametrize("value, expected", [
    ("10", "10.00"), ("10.5", "10.50"), ("0.01", "0.01"), (" 7.25 ", "7.25"), ("+3", "3.00"), ("10.000", "10.00"),
    ("1.50000", "1.50"), (7, "7.00"), (D("2.5"), "2.50"), (D("2.500"), "2.50"), ("999999999.99", "999999999.99"),
    ("1" * 9, "111111111.00"), ("00000000000000000000000000000001", "1.00"),
])
def test_amounts_accepted_at_scale_2(value, expected):
    d = parse_amount(value, field="f")
    assert d == D(expected) and str(d) == expected and d.as_tuple().exponent == -2


@pytest.mark.parametrize("value, reason", [
    (1.5, 'must be an exact decimal string such as "10.00", not a float'),
    (True, 'must be an exact decimal string such as "10.00", not a float'),
    (False, 'must be an exact decimal string such as "10.00", not a float'),
    ("", 'must be a decimal number such as "10.00"'),
    ("   ", 'must be a decimal number such as "10.00"'),
    ("1" * 33, 'must be a decimal number such as "10.00"'),
    ("1,000.00", "'1,000.00' is not a decimal number (use digits and a point)"),
    ("10,5", "'10,5' is not a decimal number (use digits and a point)"),
    ("1e3", "'1e3' is not a decimal number (use digits and a point)"),
    ("NaN", "'NaN' is not a decimal number (use digits and a point)"),
    (" " * 20 + "x" * 30, "'" + " " * 20 + "x" * 20 + "' is not a decimal number (use digits and a point)"),
    ("1X", "'1X' is not a decimal number (use digits and a point)"),
    ("1.2.3", "'1.2.3' is not a decimal number"),
    (" " * 38 + "1..2", "'" + " " * 38 + "1.' is not a decimal number"),
    ("--1", "'--1' is not a decimal number"),
    (None, "must be a decimal number"),
    ([1], "must be a decimal number"),
    (D("NaN"), "must be a finite number"),
    (D("Infinity"), "must be a finite number"),
    (D("-Infinity"), "must be a finite number"),
    ("-0", "negative zero is not a quantity"),
    ("-0.00", "negative zero is not a quantity"),
    (D("-0"), "negative zero is not a quantity"),
    ("-0.01", "must not be negative"),
    (-1, "must not be negative"),
    ("0", "must be greater than zero"),
    ("0.00", "must be greater than zero"),
    (0, "must be greater than zero"),
    ("1000000000", "must be at most 999999999.99"),
    ("999999999.991", "must be at most 999999999.99"),
    ("1.001", "has more than 2 decimal places"),
    ("0.005", "has more than 2 decimal places"),
    (D("2.505"), "has more than 2 decimal places"),
])
def test_amounts_refused_with_their_reason(value, reason):
    assert refused(parse_amount, value).reason == reason


def test_zero_only_where_allowed():
    for zero in ("0", "0.00", 0, D("0")):
        d = parse_amount(zero, field="f", allow_zero=True)
        assert d == 0 and str(d) == "0.00"
    assert refused(parse_amount, "-0", allow_zero=True).reason == "negative zero is not a quantity"
    assert refused(parse_amount, "-1", allow_zero=True).reason == "must not be negative"


def test_the_bounds():
    assert parse_amount(MAX_QUANTITY, field="f") == D("999999999.99")
    assert parse_amount("0.01", field="f") == D("0.01")
    assert parse_amount(str(MAX_QUANTITY), field="f") == MAX_QUANTITY


@pytest.mark.parametrize("value, expected", [
    (0, 0), (1, 1), ("0", 0), ("12", 12), (" 3 ", 3), (1_000_000, 1_000_000), ("1000000", 1_000_000),
])
def test_counts_accepted(value, expected):
    n = parse_count(value, field="f")
    assert n == expected and type(n) is int


@pytest.mark.parametrize("value, reason", [
    (True, "must be a whole number"), (1.0, "must be a whole number"), (None, "must be a whole number"),
    (D("1"), "must be a whole number"),
    ("1.5", "'1.5' is not a whole number"), ("-1", "'-1' is not a whole number"), ("", "'' is not a whole number"),
    ("١٢", "'١٢' is not a whole number"), ("x" * 50, "'" + "x" * 40 + "' is not a whole number"),
    ("+1", "'+1' is not a whole number"),
    (-1, "must not be negative"), (1_000_001, "must be at most 1000000"), ("1000001", "must be at most 1000000"),
])
def test_counts_refused_with_their_reason(value, reason):
    assert refused(parse_count, value).reason == reason


def test_count_zero_only_where_allowed():
    assert parse_count(0, field="f") == 0
    assert refused(parse_count, 0, allow_zero=False).reason == "must be at least 1"
    assert refused(parse_count, "0", allow_zero=False).reason == "must be at least 1"
    assert parse_count(1, field="f", allow_zero=False) == 1


def test_q2_and_fmt():
    assert q2(D("2.5") * D("50.00")) == D("125.00") and str(q2(D("3"))) == "3.00"
    assert fmt(D("10")) == "10.00" and fmt(D("0.1")) == "0.10" and fmt(D("1E+1")) == "10.00"
    assert fmt(D("123456789.5")) == "123456789.50"
