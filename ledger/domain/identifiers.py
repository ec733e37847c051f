"""DEA registration numbers and National Drug Codes: parsing, validation, normalisation.

Pure functions, standard library only. Every refusal is an :class:`IdentifierError` naming the
offending field and a reason a person at the front desk can act on. Inputs are checked against
explicit ASCII character sets: fullwidth digits, Cyrillic or Greek look-alike letters and other
Unicode confusables are refused, never silently folded into ASCII.

DEA number (docs/compliance.md, "Identifiers")::

    letter 1   registrant type (A, B, F, G practitioners/hospitals/clinics; M mid-level; ...)
    letter 2   registrant's last-name initial, or the digit 9 for a business name
    7 digits   d1..d7, with d7 = last digit of (d1 + d3 + d5) + 2 * (d2 + d4 + d6)

NDC: 10 digits printed as 4-4-2, 5-3-2 or 5-4-1; the 11-digit billing form 5-4-2 pads the short
segment with a leading zero; FDA's 12-digit form 6-4-2 (mandatory from 7 March 2033) pads every
segment. Ten digits without hyphens are ambiguous and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field

from ledger.domain.errors import InvalidInput

__all__ = [
    "DEA_REGISTRANT_TYPES",
    "IdentifierError",
    "NDC",
    "dea_check_digit",
    "dea_registrant_type",
    "parse_dea_number",
    "parse_ndc",
]

_ASCII_DIGITS = frozenset("0123456789")
_ASCII_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LETTERS = _ASCII_UPPER | frozenset("abcdefghijklmnopqrstuvwxyz")

#: First letter of a DEA number -> short description of the registrant type. DEA has reassigned
#: letters over time (A and B were exhausted, F and G now go to practitioners too), so the
#: descriptions are deliberately broad; the letter is not proof of what a registrant may handle.
DEA_REGISTRANT_TYPES: dict[str, str] = {
    "A": "practitioner",
    "B": "hospital/clinic or practitioner",
    "C": "practitioner",
    "D": "teaching institution",
    "E": "manufacturer",
    "F": "practitioner or distributor",
    "G": "practitioner or researcher",
    "H": "analytical lab",
    "J": "importer",
    "K": "exporter",
    "L": "reverse distributor",
    "M": "mid-level practitioner",
    "P": "distributor, manufacturer or other non-practitioner",
    "R": "distributor, manufacturer or other non-practitioner",
    "S": "narcotic treatment program",
    "T": "narcotic treatment program",
    "U": "narcotic treatment program",
    "X": "DATA-waived buprenorphine prescriber",
}

_DEA_LENGTH = 9
#: Longest acceptable NDC text: 12 digits and 2 hyphens (6-4-2).
_NDC_MAX_LENGTH = 14
#: Inputs up to this length are scanned for a bad character first (a more useful reason for
#: "NDC 0002-7597-01" than its length); longer ones are refused on length alone.
_NDC_SCAN_LIMIT = 64
#: Hyphen-separated layouts accepted, as segment lengths.
_NDC_LAYOUTS = frozenset({(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2), (6, 4, 2)})
#: Dash-like characters people paste from PDFs and word processors instead of '-'.
_DASH_LOOKALIKES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")


class IdentifierError(InvalidInput, ValueError):
    """A DEA number or NDC was refused.

    ``field`` names the offending input field, ``reason`` says what is wrong with it, and
    ``str(error)`` is ``"<field>: <reason>"``. It is a :class:`ValueError` and also the core's
    :class:`~ledger.domain.errors.InvalidInput` (HTTP 422).
    """

    field: str
    reason: str

    def __init__(self, reason: str, *, field: str):
        super().__init__(reason, field=field)

    def __reduce__(self):  # keep pickling working despite the keyword-only ``field``
        return (_rebuild_identifier_error, (self.reason, self.field))


def _rebuild_identifier_error(reason: str, field: str) -> IdentifierError:
    return IdentifierError(reason, field=field)


def _describe_char(ch: str) -> str:
    """``'А' (U+0410)``: shows the code point so look-alikes are told apart."""
    return f"{ch!r} (U+{ord(ch):04X})"


def _require_text(text: object, field: str) -> str:
    if not isinstance(text, str):
        raise IdentifierError(f"expected text, got {type(text).__name__}", field=field)
    stripped = text.strip()
    if not stripped:
        raise IdentifierError("is empty", field=field)
    return stripped


# --------------------------------------------------------------------------------------------
# DEA numbers
# --------------------------------------------------------------------------------------------


def dea_check_digit(digits: str) -> int:
    """Return the DEA check digit for the first six digits of a DEA number's 7-digit body.

    ``(d1 + d3 + d5) + 2 * (d2 + d4 + d6)``, last digit. Accepts exactly six ASCII digits
    (a seventh, if given, is ignored so the full body may be passed).
    """
    if len(digits) not in (6, 7) or not all(c in _ASCII_DIGITS for c in digits):
        raise ValueError("dea_check_digit needs the 6 (or 7) ASCII digits of a DEA number body")
    d = [ord(c) - 48 for c in digits[:6]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10


def parse_dea_number(text: str, *, field: str = "dea_number") -> str:
    """Validate a DEA registration number and return it normalised (stripped, upper case).

    The number must be exactly nine ASCII characters: a registrant-type letter (one of
    :data:`DEA_REGISTRANT_TYPES`), a second letter A-Z or the digit ``9``, then seven digits
    whose last is the check digit. Lower case is accepted and upper-cased; surrounding
    whitespace is stripped. Anything else raises :class:`IdentifierError`, e.g.
    ``"dea_number: check digit is 4, expected 3"``.

    >>> parse_dea_number(" ab1234563 ")
    'AB1234563'
    """
    s = _require_text(text, field)
    if len(s) != _DEA_LENGTH:
        raise IdentifierError(
            f"must be 9 characters (2 letters and 7 digits), got {len(s)}", field=field
        )
    # Check characters against ASCII sets *before* upper-casing: str.upper() maps some
    # non-ASCII letters to ASCII ones (e.g. 'ı' -> 'I', 'ß' -> 'SS').
    first, second, body = s[0], s[1], s[2:]
    if first not in _ASCII_LETTERS:
        raise IdentifierError(
            f"character 1 is {_describe_char(first)}, not an ASCII letter", field=field
        )
    if second not in _ASCII_LETTERS and second != "9":
        raise IdentifierError(
            f"character 2 is {_describe_char(second)}, not an ASCII letter or 9", field=field
        )
    for i, ch in enumerate(body, start=3):
        if ch not in _ASCII_DIGITS:
            raise IdentifierError(
                f"character {i} is {_describe_char(ch)}, not an ASCII digit "
                "(a DEA number is 2 letters then 7 digits)",
                field=field,
            )
    normalised = s.upper()
    kind = normalised[0]
    if kind not in DEA_REGISTRANT_TYPES:
        raise IdentifierError(
            f"unknown registrant type letter {kind!r} (expected one of "
            f"{', '.join(DEA_REGISTRANT_TYPES)})",
            field=field,
        )
    expected = dea_check_digit(body)
    actual = ord(body[6]) - 48
    if actual != expected:
        raise IdentifierError(f"check digit is {actual}, expected {expected}", field=field)
    return normalised


def dea_registrant_type(dea: str, *, field: str = "dea_number") -> str:
    """Return a short description of a DEA number's registrant type, e.g. ``"practitioner"``.

    The number is validated first with :func:`parse_dea_number` (so an invalid number raises
    :class:`IdentifierError`); the description comes from :data:`DEA_REGISTRANT_TYPES`.
    """
    return DEA_REGISTRANT_TYPES[parse_dea_number(dea, field=field)[0]]


# --------------------------------------------------------------------------------------------
# NDCs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NDC:
    """A National Drug Code.

    ``printed`` is the text as entered (surrounding whitespace stripped). ``labeler``,
    ``product`` and ``package`` are the *normalised* segments: 5-4-2 for a 10- or 11-digit
    NDC, 6-4-2 for a 12-digit one. Equality and hashing use the segments only, so
    ``parse_ndc("0002-7597-01") == parse_ndc("00002759701")``.

    Note: a 10-digit NDC and its FDA 12-digit conversion (``000002-7597-01``) are the same
    product but have different :attr:`key` values; compare :attr:`key_12` across that boundary.
    """

    printed: str = dc_field(compare=False)
    labeler: str
    product: str
    package: str

    def __post_init__(self) -> None:
        layout = (len(self.labeler), len(self.product), len(self.package))
        if layout not in ((5, 4, 2), (6, 4, 2)) or not all(
            c in _ASCII_DIGITS for c in self.labeler + self.product + self.package
        ):
            raise IdentifierError(
                "NDC segments must be ASCII digits in 5-4-2 or 6-4-2 form", field="ndc"
            )

    @property
    def key(self) -> str:
        """Normalised key without hyphens: 11 digits (5-4-2) for 10/11-digit NDCs, 12 (6-4-2)
        for 12-digit NDCs. E.g. ``"00002759701"``."""
        return self.labeler + self.product + self.package

    @property
    def key_12(self) -> str:
        """The FDA 12-digit (6-4-2) form without hyphens, for every NDC: 10/11-digit NDCs get
        the leading zero FDA's conversion adds to the labeler code. E.g. ``"000002759701"``."""
        return self.labeler.rjust(6, "0") + self.product + self.package

    @property
    def is_12_digit(self) -> bool:
        """True when the NDC was given in the 12-digit (6-4-2) format."""
        return len(self.labeler) == 6

    @property
    def hyphenated_11(self) -> str | None:
        """The 11-digit billing form with hyphens, e.g. ``"00002-7597-01"``.

        For a 12-digit NDC this is the 11-digit form only when its labeler code starts with 0
        (a converted 10-digit NDC); otherwise there is no 11-digit form and this is ``None``.
        """
        labeler = self.labeler
        if len(labeler) == 6:
            if labeler[0] != "0":
                return None
            labeler = labeler[1:]
        return f"{labeler}-{self.product}-{self.package}"

    @property
    def hyphenated_12(self) -> str:
        """The FDA 12-digit form with hyphens, e.g. ``"000002-7597-01"``."""
        return f"{self.labeler.rjust(6, '0')}-{self.product}-{self.package}"


def parse_ndc(text: str, *, field: str = "ndc") -> NDC:
    """Parse an NDC as printed on a package, invoice or label.

    Accepted: hyphenated 4-4-2, 5-3-2, 5-4-1 (10 digits), 5-4-2 (11 digits) and 6-4-2
    (12 digits, FDA's format from 2033); unhyphenated 11 digits (read as 5-4-2) and 12 digits
    (read as 6-4-2). Refused with :class:`IdentifierError`: unhyphenated 10 digits (ambiguous:
    4-4-2, 5-3-2 and 5-4-1 cannot be told apart), any character other than ASCII digits and
    ``-``, empty segments, other segment counts or lengths.

    >>> parse_ndc("50242-040-62").key
    '50242004062'
    """
    s = _require_text(text, field)
    too_long = IdentifierError(
        f"is {len(s)} characters long; an NDC has at most 12 digits and 2 hyphens", field=field
    )
    if len(s) > _NDC_SCAN_LIMIT:  # don't scan megabytes for the first bad character
        raise too_long
    for i, ch in enumerate(s, start=1):
        if ch in _ASCII_DIGITS or ch == "-":
            continue
        if ch in _DASH_LOOKALIKES:
            raise IdentifierError(
                f"character {i} is {_describe_char(ch)}; separate the segments with an "
                "ASCII hyphen '-'",
                field=field,
            )
        raise IdentifierError(
            f"character {i} is {_describe_char(ch)}; an NDC contains only digits and hyphens",
            field=field,
        )
    if len(s) > _NDC_MAX_LENGTH:
        raise too_long

    if "-" not in s:
        n = len(s)
        if n == 11:
            return NDC(printed=s, labeler=s[:5], product=s[5:9], package=s[9:])
        if n == 12:
            return NDC(printed=s, labeler=s[:6], product=s[6:10], package=s[10:])
        if n == 10:
            raise IdentifierError(
                "10 digits without hyphens are ambiguous (could be 4-4-2, 5-3-2 or 5-4-1); "
                "enter the NDC with hyphens as printed on the package, or in the 11-digit "
                "5-4-2 form",
                field=field,
            )
        raise IdentifierError(
            f"has {n} digits without hyphens; expected 11 (5-4-2) or 12 (6-4-2), "
            "or a hyphenated NDC such as 0002-7597-01",
            field=field,
        )

    segments = s.split("-")
    if len(segments) != 3:
        raise IdentifierError(
            f"has {len(segments)} hyphen-separated segments; expected 3 "
            "(labeler-product-package)",
            field=field,
        )
    for i, seg in enumerate(segments, start=1):
        if not seg:
            raise IdentifierError(f"segment {i} is empty", field=field)
    layout = tuple(len(seg) for seg in segments)
    if layout not in _NDC_LAYOUTS:
        raise IdentifierError(
            f"segments are {'-'.join(map(str, layout))} digits; expected 4-4-2, 5-3-2, "
            "5-4-1, 5-4-2 or 6-4-2",
            field=field,
        )
    labeler, product, package = segments
    if layout[0] == 6:
        return NDC(printed=s, labeler=labeler, product=product, package=package)
    return NDC(
        printed=s,
        labeler=labeler.rjust(5, "0"),
        product=product.rjust(4, "0"),
        package=package.rjust(2, "0"),
    )
