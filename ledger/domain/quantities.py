"""Exact decimal quantities. No binary floating point anywhere: not in storage, not in hashes.

Scales (fixed per field, so the canonical bytes of an amount never vary):
    mg, kg, mg/mL, mg/kg, %: 2 decimals ("10.00"), ``parse_amount``
    mL (a volume a nurse or pharmacist measures): syringe resolution, up to 3 decimals,
        ``parse_volume`` (issue 19). A 1 mL syringe is graduated in 0.01 mL and read to half a
        graduation (0.005 mL), so 0.5 mg/kg x 73 kg = 36.5 mg is drawn as 0.365 mL of 100 mg/mL.
A quantity with more places than its scale is refused, never rounded: rounding would silently
change what a nurse recorded.

The 2-or-3 rule (``norm``): a volume's text is 2 decimals when it is exact to 0.01 ("10.00",
"0.37") and 3 otherwise ("0.365"). Every volume recorded before issue 19 had 2 decimals and
keeps exactly its canonical bytes; a 3-decimal text appears only where the third decimal is not
zero, so one value has one text. Storage writes and reads every quantity column by the same rule
(``ledger.storage.tables.ExactDecimal``), so a value read back equals, digit for digit, the text
the entry holds, on SQLite (text) and PostgreSQL (NUMERIC(18, 3) since migration 0013).

Derived figures:
- mg from mL x mg/mL (``mg_of``, ``q2``): rounded half-even to 0.01 mg. That is what
  ``q2`` always did (the default decimal context rounds half-even), so entries recorded with
  2-decimal volumes mean what they meant; with 2-decimal mL and mg/mL the product has 4 decimals
  and was already rounded the same way.
- ``ordered_mg`` of a dose (weight kg x ordered mg/kg) is rounded half-up to 0.01 mg (the
  administration service, unchanged since issue 3: it is the figure the order reads, and
  existing entries were computed that way).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from ledger.domain.errors import InvalidInput

SCALE = 2
_QUANT = Decimal(1).scaleb(-SCALE)
#: Volumes (mL): syringe resolution, half a 0.01 mL graduation (issue 19).
VOLUME_SCALE = 3
_QUANT_VOLUME = Decimal(1).scaleb(-VOLUME_SCALE)
#: Upper bound on any single quantity: 10^9 mL or mg is far beyond any clinic, and the bound keeps
#: absurd inputs (1e309, 10^20) out of the numeric columns.
MAX_QUANTITY = Decimal("999999999.99")


def parse_amount(value: object, *, field: str, allow_zero: bool = False) -> Decimal:
    """Parse a quantity given as a Decimal, int or decimal string into a Decimal of scale 2.

    Floats are refused (they cannot hold 0.1 exactly); so are NaN, infinities, negative numbers,
    ``-0``, more than two decimal places, thousands separators and comma decimals.
    """
    d = _parse(value, field=field, allow_zero=allow_zero, scale=SCALE)
    return d.quantize(_QUANT)


def parse_volume(value: object, *, field: str, allow_zero: bool = False) -> Decimal:
    """Parse a volume in mL (a draw, a dose given, waste, a counted open vial, a spill, a
    preparation's volumes) to syringe resolution: up to 3 decimal places, by the 2-or-3 rule
    (``norm``): "10" -> 10.00, "0.37" -> 0.37, "0.365" -> 0.365, "0.3650" -> 0.365.

    Refused like ``parse_amount`` (floats, NaN, negatives, ``-0``, separators), and a fourth
    decimal place that is not zero is refused naming ``field``, never rounded.
    """
    return norm(_parse(value, field=field, allow_zero=allow_zero, scale=VOLUME_SCALE))


def _parse(value: object, *, field: str, allow_zero: bool, scale: int) -> Decimal:
    """The checks both scales share; returns the exact value, at most ``scale`` places."""
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
    quant = Decimal(1).scaleb(-scale)
    if d.as_tuple().exponent < -scale and d != d.quantize(quant):
        raise InvalidInput(f"has more than {scale} decimal places", field=field)
    return d


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
    """Quantize a figure to 0.01, half-even (e.g. mg from mL x mg/mL: the product of a 2- or
    3-decimal volume and a 2-decimal strength has 4 or 5 places). Half-even is what this always
    did (the default decimal context), now said explicitly."""
    return d.quantize(_QUANT, ROUND_HALF_EVEN)


def mg_of(ml: Decimal, strength_mg_per_ml: Decimal) -> Decimal:
    """The mg in ``ml`` of a product of ``strength_mg_per_ml``, rounded half-even to 0.01 mg
    (0.365 mL x 100.00 mg/mL = 36.50 mg; 0.005 mL x 50.00 mg/mL = 0.25 mg)."""
    return q2(ml * strength_mg_per_ml)


def norm(d: Decimal) -> Decimal:
    """The one form of a stored or recorded quantity (the 2-or-3 rule): scale 2 when ``d`` is
    exact to 0.01, else scale 3. ``ValueError`` if it is not exact to 0.001: no quantity the
    ledger records has more places, and rounding here would change a recorded figure."""
    if not d.is_finite():
        raise ValueError(f"quantity {d} is not finite")
    two = d.quantize(_QUANT)
    if two == d:
        return two
    three = d.quantize(_QUANT_VOLUME)
    if three != d:
        raise ValueError(f"quantity {d} has more than {VOLUME_SCALE} decimal places")
    return three


def fmt_volume(d: Decimal) -> str:
    """The text of a volume in canonical bytes and in responses: "10.00", "0.37", "0.365"."""
    return format(norm(d), "f")


def fmt(d: Decimal) -> str:
    """The fixed-scale text of a quantity, as it appears in canonical bytes."""
    return format(q2(d), "f")
