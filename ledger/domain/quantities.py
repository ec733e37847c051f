"""Exact decimal quantities. No binary floating point anywhere: not in storage, not in hashes.

Scales (fixed per field, so the canonical bytes of an amount never vary):
    mL, mg, kg, mg/mL, mg/kg: 2 decimals ("10.00")
A quantity with more places than its scale is refused, never rounded: rounding would silently
change what a nurse recorded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ledger.domain.errors import InvalidInput

SCALE = 2
_QUANT = Decimal(1).scaleb(-SCALE)
#: Upper bound on any single quantity: 10^9 mL or mg is far beyond any clinic, and the bound keeps
#: absurd inputs (1e309, 10^20) out of the numeric columns.
MAX_QUANTITY = Decimal("999999999.99")


def parse_amount(value: object, *, field: str, allow_zero: bool = False) -> Decimal:
    """Parse a quantity given as a Decimal, int or decimal string into a Decimal of scale 2.

    Floats are refused (they cannot hold 0.1 exactly); so are NaN, infinities, negative numbers,
    ``-0``, more than two decimal places, thousands separators and comma decimals.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidInput("must be an exact decimal string such as \"10.00\", not a float", field=field)
    if isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, Decimal):
        d = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 32:
            raise InvalidInput("must be a decimal number such as \"10.00\"", field=field)
        if not all(c in "0123456789.-+" for c in text):
            raise InvalidInput(f"{value[:40]!r} is not a decimal number (use digits and a point)", field=field)
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise InvalidInput(f"{value[:40]!r} is not a decimal number", field=field) from None
    else:
        raise InvalidInput("must be a decimal number", field=field)
    if not d.is_finite():
        raise InvalidInput("must be a finite number", field=field)
    if d.is_signed() and d.is_zero():
        raise InvalidInput("negative zero is not a quantity", field=field)
    if d < 0:
        raise InvalidInput("must not be negative", field=field)
    if d == 0 and not allow_zero:
        raise InvalidInput("must be greater than zero", field=field)
    if d > MAX_QUANTITY:
        raise InvalidInput(f"must be at most {MAX_QUANTITY}", field=field)
    if d.as_tuple().exponent < -SCALE and d != d.quantize(_QUANT):
        raise InvalidInput(f"has more than {SCALE} decimal places", field=field)
    return d.quantize(_QUANT)


def parse_count(value: object, *, field: str, allow_zero: bool = True) -> int:
    """A whole number of containers."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput("must be a whole number", field=field)
    if isinstance(value, str):
        if not value.strip().isascii() or not value.strip().isdigit():
            raise InvalidInput(f"{value[:40]!r} is not a whole number", field=field)
        value = int(value.strip())
    if value < 0:
        raise InvalidInput("must not be negative", field=field)
    if value == 0 and not allow_zero:
        raise InvalidInput("must be at least 1", field=field)
    if value > 1_000_000:
        raise InvalidInput("must be at most 1000000", field=field)
    return value


def q2(d: Decimal) -> Decimal:
    """Quantize an exact product (e.g. mL x mg/mL) to the fixed scale; exact for our scales."""
    return d.quantize(_QUANT)


def fmt(d: Decimal) -> str:
    """The fixed-scale text of a quantity, as it appears in canonical bytes."""
    return format(q2(d), "f")
