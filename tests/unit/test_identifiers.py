"""DEA numbers and NDCs: what is accepted, how it is normalised, and why the rest is refused."""

from __future__ import annotations

import pickle
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.errors import InvalidInput
from ledger.domain.identifiers import (
    DEA_REGISTRANT_TYPES,
    NDC,
    IdentifierError,
    dea_check_digit,
    dea_registrant_type,
    parse_dea_number,
    parse_ndc,
)


def refused(fn, text, **kw) -> IdentifierError:
    with pytest.raises(IdentifierError) as info:
        fn(text, **kw)
    return info.value


# ---------------------------------------------------------------------------- IdentifierError


def test_error_carries_field_and_reason():
    err = refused(parse_dea_number, "AB1234564")
    assert err.field == "dea_number"
    assert err.reason == "check digit is 4, expected 3"
    assert str(err) == "dea_number: check digit is 4, expected 3"
    assert isinstance(err, ValueError)
    assert isinstance(err, InvalidInput)


def test_error_names_the_callers_field():
    err = refused(parse_dea_number, "AB1234564", field="supplier_dea")
    assert str(err) == "supplier_dea: check digit is 4, expected 3"
    err = refused(parse_ndc, "garbage", field="items[2].ndc")
    assert err.field == "items[2].ndc"
    assert str(err).startswith("items[2].ndc: ")


def test_error_pickles():
    err = refused(parse_ndc, "1234567890")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.field, back.reason, str(back)) == (
        IdentifierError, err.field, err.reason, str(err),
    )


# ---------------------------------------------------------------------------- DEA numbers


def test_domain_example_is_valid():
    assert parse_dea_number("AB1234563") == "AB1234563"


def test_business_name_second_character_9():
    assert parse_dea_number("F91234563") == "F91234563"


def test_lowercase_and_whitespace_normalised():
    assert parse_dea_number("  ab1234563\n") == "AB1234563"
    assert parse_dea_number("aB1234563") == "AB1234563"


@pytest.mark.parametrize("last", "012456789")
def test_altered_check_digit_refused(last):
    err = refused(parse_dea_number, "AB123456" + last)
    assert err.reason == f"check digit is {last}, expected 3"


def test_altered_body_digit_refused():
    # 1+3+5 + 2*(2+4+7) = 35 -> expected 5
    assert refused(parse_dea_number, "AB1234763").reason == "check digit is 3, expected 5"


@pytest.mark.parametrize("text", ["AB123456", "AB12345630", "A1234563", "AB1234563-001AB", "A"])
def test_wrong_length_refused(text):
    err = refused(parse_dea_number, text)
    assert "must be 9 characters" in err.reason
    assert f"got {len(text)}" in err.reason


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_refused(text):
    assert refused(parse_dea_number, text).reason == "is empty"


@pytest.mark.parametrize("value", [None, 123456789, b"AB1234563"])
def test_non_text_refused(value):
    err = refused(parse_dea_number, value)
    assert "expected text" in err.reason


def test_fullwidth_refused():
    err = refused(parse_dea_number, "ＡＢ１２３４５６３")
    assert "not an ASCII letter" in err.reason
    assert "U+FF21" in err.reason


def test_fullwidth_digits_only_refused():
    err = refused(parse_dea_number, "AB１２３４５６３")
    assert "character 3" in err.reason and "not an ASCII digit" in err.reason


@pytest.mark.parametrize("text,pos", [("\u0410B1234563", 1), ("A\u04121234563", 2)])
def test_cyrillic_lookalike_refused(text, pos):
    err = refused(parse_dea_number, text)
    assert f"character {pos}" in err.reason
    assert "U+04" in err.reason


@pytest.mark.parametrize("text", ["AB12345\u0666\u0663", "AB\u00b2234563", "AB1234\u09eb63"])
def test_other_unicode_digits_refused(text):
    assert "not an ASCII digit" in refused(parse_dea_number, text).reason


def test_upper_does_not_smuggle_in_ascii():
    # 'ı'.upper() == 'I' and 'ß'.upper() == 'SS': must not become a valid-looking number.
    assert "not an ASCII letter" in refused(parse_dea_number, "\u0131B1234563").reason
    assert "not an ASCII letter" in refused(parse_dea_number, "A\u00df1234563").reason


@pytest.mark.parametrize("text", ["1B1234563", "-B1234563", " B1234563x"])
def test_non_letter_first_character_refused(text):
    refused(parse_dea_number, text)


def test_digit_other_than_9_in_second_place_refused():
    assert "not an ASCII letter or 9" in refused(parse_dea_number, "A81234563").reason


@pytest.mark.parametrize("letter", sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZ") - set(DEA_REGISTRANT_TYPES)))
def test_unknown_registrant_type_refused(letter):
    err = refused(parse_dea_number, letter + "B1234563")
    assert "unknown registrant type" in err.reason
    assert repr(letter) in err.reason


def test_registrant_type_letters():
    assert set(DEA_REGISTRANT_TYPES) == set("ABCDEFGHJKLMPRSTUX")


@pytest.mark.parametrize("letter", sorted(DEA_REGISTRANT_TYPES))
def test_every_known_registrant_type_accepted(letter):
    assert parse_dea_number(letter.lower() + "b1234563") == letter + "B1234563"


def test_registrant_type_description():
    assert dea_registrant_type("AB1234563") == "practitioner"
    assert dea_registrant_type("MB1234563") == "mid-level practitioner"
    assert "distributor" in dea_registrant_type("PB1234563")
    assert dea_registrant_type("cb1234563") == "practitioner"
    with pytest.raises(IdentifierError):
        dea_registrant_type("AB1234564")


def test_dea_check_digit_helper():
    assert dea_check_digit("123456") == 3
    assert dea_check_digit("1234563") == 3
    with pytest.raises(ValueError):
        dea_check_digit("12345")


def test_huge_dea_input_refused_quickly():
    text = "A" * 10_000_000
    start = time.perf_counter()
    err = refused(parse_dea_number, text)
    assert time.perf_counter() - start < 1.0
    assert "got 10000000" in err.reason
    assert len(str(err)) < 200


def _expected_check(six: str) -> int:
    d = [int(c) for c in six]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10


@given(
    first=st.sampled_from(sorted(DEA_REGISTRANT_TYPES)),
    second=st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ9")),
    six=st.text(alphabet="0123456789", min_size=6, max_size=6),
)
def test_property_only_the_computed_check_digit_is_valid(first, second, six):
    check = _expected_check(six)
    number = f"{first}{second}{six}{check}"
    assert parse_dea_number(number) == number
    assert parse_dea_number(number.lower()) == number
    for other in range(10):
        if other == check:
            continue
        err = refused(parse_dea_number, f"{first}{second}{six}{other}")
        assert err.reason == f"check digit is {other}, expected {check}"


# ---------------------------------------------------------------------------- NDCs


@pytest.mark.parametrize(
    "printed,key,hyph",
    [
        # the NDC examples of docs/compliance.md, one per 10-digit layout
        ("0002-7597-01", "00002759701", "00002-7597-01"),  # 4-4-2
        ("50242-040-62", "50242004062", "50242-0040-62"),  # 5-3-2
        ("60575-4112-1", "60575411201", "60575-4112-01"),  # 5-4-1
        # 11-digit billing form, hyphenated and not
        ("00002-7597-01", "00002759701", "00002-7597-01"),
        ("00002759701", "00002759701", "00002-7597-01"),
        ("50242004062", "50242004062", "50242-0040-62"),
    ],
)
def test_ndc_formats(printed, key, hyph):
    ndc = parse_ndc(printed)
    assert ndc.key == key
    assert ndc.hyphenated_11 == hyph
    assert ndc.printed == printed
    assert (ndc.labeler, ndc.product, ndc.package) == tuple(hyph.split("-"))
    assert ndc.key_12 == "0" + key
    assert not ndc.is_12_digit


def test_ndc_printed_is_stripped_input():
    ndc = parse_ndc("  0002-7597-01 \n")
    assert ndc.printed == "0002-7597-01"
    assert ndc.key == "00002759701"


def test_ndc_equality_ignores_printed_form():
    a, b, c = parse_ndc("0002-7597-01"), parse_ndc("00002-7597-01"), parse_ndc("00002759701")
    assert a == b == c
    assert len({a, b, c}) == 1
    assert a != parse_ndc("0002-7597-02")


def test_ndc_12_digit_hyphenated():
    ndc = parse_ndc("123456-7890-12")
    assert ndc.key == "123456789012"
    assert ndc.is_12_digit
    assert (ndc.labeler, ndc.product, ndc.package) == ("123456", "7890", "12")
    assert ndc.hyphenated_12 == "123456-7890-12"
    assert ndc.hyphenated_11 is None  # a new 6-digit labeler has no 11-digit form


def test_ndc_12_digit_unhyphenated():
    ndc = parse_ndc("123456789012")
    assert ndc.key == "123456789012"
    assert (ndc.labeler, ndc.product, ndc.package) == ("123456", "7890", "12")


def test_ndc_12_digit_conversion_of_a_10_digit_ndc():
    old, new = parse_ndc("0002-7597-01"), parse_ndc("000002-7597-01")
    assert new.key == "000002759701"
    assert old.key != new.key  # the key keeps the input's width, as specified
    assert old.key_12 == new.key_12 == "000002759701"
    assert new.hyphenated_11 == "00002-7597-01" == old.hyphenated_11
    assert old.hyphenated_12 == "000002-7597-01"


def test_ndc_unhyphenated_10_digits_refused_as_ambiguous():
    err = refused(parse_ndc, "0002759701")
    assert err.field == "ndc"
    assert "ambiguous" in err.reason
    assert "hyphens" in err.reason


@pytest.mark.parametrize("text", ["123456789", "1", "1234567890123", "00000"])
def test_ndc_unhyphenated_wrong_length_refused(text):
    err = refused(parse_ndc, text)
    assert f"has {len(text)} digits" in err.reason or "characters long" in err.reason


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("abcd-efgh-ij", "only digits and hyphens"),
        ("0002-7597-0A", "character 12"),
        ("NDC 0002-7597-01", "only digits and hyphens"),
        ("0002 7597 01", "only digits and hyphens"),
        ("0002\u20137597-01", "ASCII hyphen"),  # en dash
        ("0002\u22127597-01", "ASCII hyphen"),  # minus sign
        ("\uff10\uff10\uff10\uff12-7597-01", "U+FF10"),  # fullwidth digits
        ("0002-7597-\u0661", "U+0661"),  # Arabic-Indic digit
        ("0002-7597-01-1", "4 hyphen-separated segments"),
        ("0002-759701", "2 hyphen-separated segments"),
        ("0002--759701", "segment 2 is empty"),
        ("-0002-7597", "segment 1 is empty"),
        ("0002-7597-", "segment 3 is empty"),
        ("--", "segment 1 is empty"),
        ("002-7597-01", "3-4-2"),
        ("0002-759-01", "4-3-2"),
        ("00002-7597-012", "5-4-3"),
        ("123456-789-12", "6-3-2"),
        ("123456-7890-1", "6-4-1"),
        ("1234567-890-12", "7-3-2"),
        ("1234567-8901-123", "characters long"),
        ("1" * 64 + "x", "characters long"),
        ("1" * 63 + "x", "character 64"),
    ],
)
def test_ndc_garbage_refused(text, needle):
    err = refused(parse_ndc, text)
    assert needle in err.reason, err.reason


def test_ndc_non_text_refused():
    assert "expected text" in refused(parse_ndc, None).reason
    assert "expected text" in refused(parse_ndc, 2759701).reason


@pytest.mark.parametrize("filler", ["1", "-", "x", "1-"])
def test_ndc_huge_input_refused_quickly(filler):
    text = filler * (10_000_000 // len(filler))
    start = time.perf_counter()
    err = refused(parse_ndc, text)
    assert time.perf_counter() - start < 1.0
    assert "characters long" in err.reason
    assert len(str(err)) < 200


def test_ndc_dataclass_validates_segments():
    with pytest.raises(IdentifierError):
        NDC(printed="x", labeler="0002", product="7597", package="01")
    with pytest.raises(IdentifierError):
        NDC(printed="x", labeler="0000a", product="7597", package="01")
    assert NDC(printed="x", labeler="00002", product="7597", package="01").key == "00002759701"


def test_ndc_is_frozen():
    ndc = parse_ndc("0002-7597-01")
    with pytest.raises(AttributeError):
        ndc.labeler = "99999"  # type: ignore[misc]


@given(
    labeler=st.text(alphabet="0123456789", min_size=4, max_size=5),
    product=st.text(alphabet="0123456789", min_size=3, max_size=4),
    package=st.text(alphabet="0123456789", min_size=1, max_size=2),
)
def test_property_10_digit_layouts_round_trip_through_11_digit_form(labeler, product, package):
    printed = f"{labeler}-{product}-{package}"
    layout = (len(labeler), len(product), len(package))
    if layout not in {(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2)}:
        refused(parse_ndc, printed)
        return
    ndc = parse_ndc(printed)
    assert len(ndc.key) == 11
    assert ndc.key == labeler.zfill(5) + product.zfill(4) + package.zfill(2)
    assert parse_ndc(ndc.key) == ndc
    assert parse_ndc(ndc.hyphenated_11) == ndc
    assert parse_ndc(ndc.hyphenated_12).key_12 == ndc.key_12
