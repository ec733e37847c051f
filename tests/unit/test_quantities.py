"""Volumes at syringe resolution (issue 19): ``parse_volume`` and the 2-or-3 rule.

A volume's text is 2 decimals when it is exact to 0.01 and 3 otherwise, so every volume recorded
before (2 decimals) keeps its canonical bytes, and one value has one text everywhere: entries,
storage (``ExactDecimal``, ``RawSql``), projections rebuilt in memory, reports.
"""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from ledger.domain import entries as ev
from ledger.domain.errors import InvalidInput
from ledger.domain.projections import MemoryStateView
from ledger.domain.quantities import fmt_volume, mg_of, norm, parse_amount, parse_volume, q2
from ledger.integrity import canonical as canon
from ledger.storage.store import RawSql
from ledger.storage.tables import ExactDecimal
from reports.fmt import amount, num, volume

D = Decimal


@pytest.mark.parametrize("value, text", [
    ("10", "10.00"), ("10.5", "10.50"), ("0.37", "0.37"), ("0.370", "0.37"), ("0.365", "0.365"),
    ("0.3650", "0.365"), (" 0.005 ", "0.005"), (D("9.635"), "9.635"), (D("9.500"), "9.50"), (7, "7.00"),
    ("999999999.99", "999999999.99"),
])
def test_two_decimals_when_exact_to_a_hundredth_else_three(value, text):
    v = parse_volume(value, field="draws[0].ml")
    assert str(v) == text and canon.to_json_value(v) == text and fmt_volume(v) == text


def test_zero_only_where_allowed():
    assert str(parse_volume("0", field="ml_given", allow_zero=True)) == "0.00"
    with pytest.raises(InvalidInput) as e:
        parse_volume("0.000", field="waste.ml")
    assert (e.value.field, e.value.reason) == ("waste.ml", "must be greater than zero")


@pytest.mark.parametrize("value", ["0.3655", "0.0001", D("9.6351"), "1.0005"])
def test_a_fourth_decimal_is_refused_naming_the_field(value):
    with pytest.raises(InvalidInput) as e:
        parse_volume(value, field="lines[2].open_ml")
    assert e.value.field == "lines[2].open_ml" and e.value.reason == "has more than 3 decimal places"


@pytest.mark.parametrize("value, reason", [
    (0.365, 'must be an exact decimal string such as "10.00", not a float'),
    ("-0.005", "must not be negative"), ("-0.000", "negative zero is not a quantity"),
    ("0,365", "'0,365' is not a decimal number (use digits and a point)"), ("NaN", "'NaN' is not a decimal number (use digits and a point)"),
    ("1000000000", "must be at most 999999999.99"),
])
def test_refused_like_any_amount(value, reason):
    with pytest.raises(InvalidInput) as e:
        parse_volume(value, field="ml")
    assert e.value.reason == reason


def test_mg_stays_at_two_decimals():
    with pytest.raises(InvalidInput) as e:
        parse_amount("36.505", field="weight_kg")
    assert e.value.reason == "has more than 2 decimal places"


def test_every_two_decimal_volume_keeps_its_old_text():
    """What ``parse_amount`` (the old mL parser) gave, ``parse_volume`` gives, for any input
    of at most two decimals: the canonical bytes of existing entries cannot change."""
    rnd = random.Random(19)
    samples = ["0.01", "10", "10.0", "10.00", "0.10", "3.5", "999999999.99", "1.000"]
    samples += [f"{rnd.randrange(0, 10**6)}.{rnd.randrange(0, 100):02d}" for _ in range(2000)]
    samples += [str(rnd.randrange(1, 10**5)) for _ in range(200)]
    for s in samples:
        if D(s) == 0:
            continue
        old, new = parse_amount(s, field="f"), parse_volume(s, field="f")
        assert canon.to_json_value(new) == canon.to_json_value(old) == format(old, "f"), s


def test_canonical_bytes_of_an_old_entry_are_unchanged():
    """A waste entry as it was recorded before issue 19, its figures parsed by today's parsers."""
    product = ev.ProductDescription(ndc="67457-0001-10", ndc_key="67457000110", name="Ketamine HCl injection 50 mg/mL",
                                    drug_code="7285", schedule="III", form="injection",
                                    strength_mg_per_ml=parse_amount("50", field="s"),
                                    container_ml=parse_amount("10", field="c"))
    ml = parse_volume("0.2", field="waste.ml")
    event = ev.DoseWasted(administration_id="A12", administration_seq=12, product=product, ml=ml,
                          mg=mg_of(ml, product.strength_mg_per_ml), method="sharps container")
    body = canon.to_json_value(event)
    assert body["ml"] == "0.20" and body["mg"] == "10.00"
    assert b'"ml":"0.20"' in canon.canonical_bytes(body)
    assert body["product"]["strength_mg_per_ml"] == "50.00" and body["product"]["container_ml"] == "10.00"
    draw = ev.Draw(vial_id="V5-1", product=product, lot="L", expiry=date(2028, 6, 30), ml=parse_volume("3.5", field="d"),
                   opened_vial=True, beyond_use_date=date(2026, 12, 30))
    assert canon.to_json_value(draw)["ml"] == "3.50"


def test_mg_from_ml_is_rounded_half_even_to_the_hundredth():
    assert mg_of(D("0.365"), D("100.00")) == D("36.50") and str(mg_of(D("0.365"), D("100.00"))) == "36.50"
    assert str(mg_of(D("0.635"), D("100.00"))) == "63.50"
    assert str(mg_of(D("0.005"), D("50.00"))) == "0.25"
    assert str(mg_of(D("0.001"), D("12.25"))) == "0.01"  # 0.01225 -> 0.01
    assert str(q2(D("0.125"))) == "0.12" and str(q2(D("0.135"))) == "0.14"  # half-even, as always


def test_norm_is_the_one_form_and_refuses_what_it_would_round():
    assert str(norm(D("9.500"))) == "9.50" and str(norm(D("9.635"))) == "9.635" and str(norm(D("10"))) == "10.00"
    assert str(norm(D("-0.135"))) == "-0.135" and str(norm(D("-2.000"))) == "-2.00"
    with pytest.raises(ValueError):
        norm(D("0.0005"))


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_storage_writes_and_reads_by_the_rule(dialect):
    t = ExactDecimal()
    as_text = dialect.name == "sqlite"
    for value, stored in (("10.00", "10.00"), ("9.635", "9.635"), ("9.500", "9.50"), ("0.005", "0.005")):
        b = t.process_bind_param(D(value), dialect)
        assert (b if as_text else format(b, "f")) == stored
    # PostgreSQL's NUMERIC(18, 3) gives 10.000 back: read as the entry wrote it.
    assert str(t.process_result_value(D("10.000"), dialect)) == "10.00"
    assert str(t.process_result_value(D("9.635"), dialect)) == "9.635"
    with pytest.raises(ValueError):
        t.process_bind_param(D("9.6351"), dialect)  # never rounded into storage
    raw = RawSql(dialect.name).bind({"ml": D("9.635"), "left": D("9.500"), "n": 3})
    assert raw["n"] == 3 and str(raw["ml"]) == "9.635" and str(raw["left"]) == "9.50"


def test_projections_in_memory_hold_what_the_database_gives_back():
    view = MemoryStateView()
    view.put("vials", {"registrant": "AB1234563", "vial_id": "V1", "ml_left": D("10.00") - D("0.365") - D("0.135")})
    assert str(view.get("vials", ("AB1234563", "V1"))["ml_left"]) == "9.50"


def test_reports_print_the_third_decimal_only_where_there_is_one():
    assert volume("10.00") == amount("10.00") == "10.00" and volume(D("9.5")) == "9.50"
    assert volume("0.365") == "0.365" and amount("0.365") == "0.36"  # amount stays for mg
    assert num("1234.5", "mL") == "1,234.50 mL" and num("1234.565", "mL") == "1,234.565 mL"
    assert num("36.505", "mg") == "36.50 mg"  # mg figures keep 2 places
