"""The canonical bytes of an entry: RFC 8785 (JSON Canonicalization Scheme), UTF-8.

Contract (docs/architecture.md, "Integrity contracts"): no floats anywhere. Quantities are decimal
strings at their field's scale (see ``quantities``; mL by the 2-or-3 rule since issue 19: "10.00",
"0.365"), times are UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, integers are only used for counts,
``seq`` and ``schema_version``. ``to_json_value`` turns domain values into that shape and
refuses anything else, so a float can never reach the hash.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import rfc8785

ZERO_HASH = "0" * 64
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(t: datetime) -> str:
    """UTC text of an aware datetime in the one format used in entries and tables."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("time must carry a time zone")
    u = t.astimezone(UTC)
    if u.year < 1000:  # strftime's %Y does not pad to four digits: keep its text for these
        return u.strftime(_TIME_FORMAT)
    # The same text as ``strftime(_TIME_FORMAT)`` at a quarter of the cost (several per command).
    return u.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; refuses any other shape."""
    if len(text) != 27 or _TIME_SHAPE.fullmatch(text) is None:
        raise ValueError(f"time {text[:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    # Shape checked above (ASCII digits only), so ``fromisoformat`` reads exactly this form and
    # still refuses a month 13 or a 30 February, as ``strptime`` did, at a tenth of its cost.
    return datetime.fromisoformat(text)


#: Field names of each dataclass met by ``to_json_value`` (``dataclasses.fields`` per value was
#: a third of its cost, and an entry is a tree of dataclasses).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
#: Exact types returned as they are (a subclass, such as a string enum, takes the long way).
_AS_IS = frozenset({str, int, bool, type(None)})


def to_json_value(value: Any) -> Any:
    """Convert a domain value (dataclass, Decimal, datetime, enum, tuple) to canonical JSON data."""
    t = type(value)
    if t in _AS_IS:
        return value
    names = _FIELD_NAMES.get(t)
    if names is not None:
        return {n: to_json_value(getattr(value, n)) for n in names}
    if t is tuple or t is list:
        return [to_json_value(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise TypeError("floats are not allowed in entries; use Decimal")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite decimal in entry")
        return format(value, "f")
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[t] = tuple(f.name for f in dataclasses.fields(value))
        return {n: to_json_value(getattr(value, n)) for n in names}
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into an entry")


_fast_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a JSON-ready entry object.

    Uses the C JSON encoder, which produces exactly the JCS bytes for the values entries may
    hold: no floats (``to_json_value`` and ``decode`` refuse them), integers well inside 2^53,
    and strings, which both escape the same way (``\\b \\f \\n \\r \\t``, other controls as
    lowercase ``\\u00xx``, everything else literal). The C encoder sorts keys by code point and
    RFC 8785 by UTF-16 code unit; the two orders differ only between keys in U+E000..U+FFFF and
    astral ones, so an object with any non-ASCII key is encoded by ``rfc8785`` itself (entries'
    keys are ASCII field names, so the fast path is the one taken). A string the C encoder cannot
    encode (a lone surrogate) also falls back to ``rfc8785``, which refuses it.
    ``tests/unit/test_canonical.py`` proves it equal to the ``rfc8785`` package.
    """
    try:
        text = _fast_encoder.encode(obj)
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return rfc8785.dumps(obj)
    if not text.isascii() and _has_non_ascii_key(obj):
        return rfc8785.dumps(obj)
    return data


def _has_non_ascii_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(not str(k).isascii() or _has_non_ascii_key(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_non_ascii_key(v) for v in value)
    return False


def canonical_bytes_reference(obj: dict[str, Any]) -> bytes:
    """The ``rfc8785`` package's bytes, the reference the fast path is tested against."""
    return rfc8785.dumps(obj)


def _no_float(text: str) -> Any:
    raise ValueError(f"float {text!r} in canonical entry")


#: One decoder for every call (``json.loads`` with an argument builds a new one each time).
_decoder = json.JSONDecoder(parse_float=_no_float)


def decode(canonical: bytes) -> dict[str, Any]:
    """Parse canonical bytes back into the entry object (numbers stay ints; there are no floats)."""
    try:
        if isinstance(canonical, bytes | bytearray):
            # exactly what ``json.loads`` does with bytes before decoding them; an object's
            # bytes start with b"{" and a non-zero byte, for which ``detect_encoding`` (no BOM
            # starts with b"{") says UTF-8: that answer without the call (issue 22)
            if canonical[:1] == b"{" and canonical[1:2] != b"\x00":
                encoding = "utf-8"
            else:
                encoding = json.detect_encoding(canonical)
            text = canonical.decode(encoding, "surrogatepass")
        else:
            return json.loads(canonical, parse_float=_no_float)
        return _decoder.decode(text)
    except RecursionError:  # nesting deeper than the parser's stack: not an entry, never a crash
        raise ValueError("nested too deeply to be an entry") from None


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || canonical bytes)."""
    return hashlib.sha256(b"\x00" + canonical).digest()
