"""Request bodies for the HTTP bad-input sweep (``test_bad_input_http.py``): the fields of an
OpenAPI request schema, the bad values that fit each field's kind, whether a value conforms to
the schema, and the malformed bodies. Nothing here talks to the server.

A variant is one change to a body that the server accepts: a field set to a value, or left out.
``bad`` says the value is wrong for this field whatever the clinic holds (it must be refused);
the others could be right (a null for an optional field, Cyrillic in a name) and are checked
when accepted (see the sweep). Deterministic: no randomness, no ``hash()``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MISSING = object()  # the variant leaves the field out
UNKNOWN = "unexpected_field"

# --- bad values, by kind of field: (label, value, bad everywhere) ------------------------------

NAN = float("nan")
INF = float("inf")
QUANTITY = [("NaN", NAN, True), ('"NaN"', "NaN", True), ('"Infinity"', "Infinity", True), ("1e309", INF, True),
            ('"1e309"', "1e309", True), ('"-0"', "-0", True), ('"1,5"', "1,5", True),
            ('"10^20"', "100000000000000000000", True), ('"1.2345"', "1.2345", True), ("1.5", 1.5, True),
            ("true", True, True), ('"-1.00"', "-1.00", True), ("fullwidth", "\uff11\uff10.00", True)]
DATETIME = [("year 1", "0001-01-01T00:00:00Z", True), ("year 9999", "9999-12-31T23:59:59Z", True),
            ("month 13", "2026-13-45T10:00:00Z", True), ("no zone", "2026-11-01T10:00:00", True),
            ("far future", "2200-01-01T00:00:00Z", True), ("number", 1764000000, True)]
DATE = [("year 1", "0001-01-01", False), ("year 9999", "9999-12-31", False), ("month 13", "2026-13-45", True),
        ("Feb 30", "2026-02-30", True), ("far future", "2200-01-01", False), ("fullwidth", "２０２８-03-31", True)]
DEA_VALUES = [("check digit", "AB1234564", True), ("Cyrillic A", "\u0410B1234563", True),
              ("fullwidth 6", "AB12345\uff163", True)]
NDC_VALUES = [("5-4-3 segments", "42023-0113-100", True), ("empty segment", "42023--0113", True),
              ("Cyrillic O", "42023-0113-1\u041e", True), ("fullwidth", "\uff142023-0113-10", True)]
TAINTS = [("zero-width space", lambda s: s + "\u200b", True), ("NUL", lambda s: s + "\x00", True),
          ("lone surrogate", lambda s: s + "\ud800", True)]
CONFUSABLE = [("Cyrillic look-alike", lambda s: s.replace("A", "\u0410").replace("a", "\u0430") + "\u0410", False),
              ("fullwidth digit", lambda s: s + "\uff11", False)]
INTEGER = [("1.5", 1.5, True), ('"1"', "1", False), ("true", True, True), ("-1", -1, False),
           ("10^20", 10**20, True), ("1e309", INF, True), ("NaN", NAN, True)]
BOOLEAN = [('"yes"', "yes", True), ("2", 2, True), ("[]", [], True), ('"true"', "true", True)]
WRONG_TYPES = [("object", {UNKNOWN: 1}, True), ("list", [{UNKNOWN: 1}], True), ("null", None, True)]

#: Parts of a field name that make it an identifier: look-alike characters in it are never right.
IDENT_PARTS = ("dea", "ndc", "_id", "ids", "sha", "gtin", "documents", "username", "totp", "seq")


def path_text(path: tuple) -> str:
    """``("lines", 0, "ndc")`` as the API names fields: ``lines[0].ndc``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@dataclass
class Field:
    path: tuple
    schema: dict
    nullable: bool
    required: bool

    @property
    def name(self) -> str:
        return path_text(self.path)

    @property
    def leaf(self) -> str:
        named = [p for p in self.path if isinstance(p, str)]
        return named[-1] if named else ""

    @property
    def ident(self) -> bool:
        return any(k in self.leaf.lower() for k in IDENT_PARTS)


@dataclass
class Variant:
    label: str
    value: Any  # MISSING: the field is left out
    bad: bool  # wrong for this field whatever the clinic holds: must be refused by validation
    field: str  # the name the refusal must give (the mutated field, or the unknown one inside it)


_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$")


class Spec:
    """The OpenAPI document's schemas: resolving references, listing a body's fields, and
    checking a value against a schema (the subset FastAPI writes: types, patterns, lengths,
    ranges, enums, date-times, required and unknown properties)."""

    def __init__(self, doc: dict):
        self.doc = doc

    def resolve(self, s: dict) -> tuple[dict, bool]:
        """The schema behind ``$ref`` and ``anyOf`` (non-null branch), and whether null is allowed."""
        nullable = False
        while True:
            if "$ref" in s:
                s = self.doc["components"]["schemas"][s["$ref"].split("/")[-1]]
            elif "anyOf" in s or "oneOf" in s:
                options = s.get("anyOf") or s.get("oneOf")
                real = [o for o in options if o.get("type") != "null"]
                nullable = nullable or len(real) < len(options)
                s = real[0]
            elif "allOf" in s and len(s["allOf"]) == 1:
                s = s["allOf"][0]
            else:
                return s, nullable

    def fields(self, value: Any, schema: dict, path: tuple = (), required: bool = True):
        """Every field of ``value`` (an example body), nested objects and first list items
        included, plus the optional fields the example leaves out."""
        s, nullable = self.resolve(schema)
        if path:
            yield Field(path, s, nullable, required)
        if s.get("type") == "object" and "properties" in s:
            need = set(s.get("required", []))
            for name, sub in s["properties"].items():
                if isinstance(value, dict) and name in value:
                    yield from self.fields(value[name], sub, (*path, name), name in need)
                else:
                    sub_s, sub_null = self.resolve(sub)
                    yield Field((*path, name), sub_s, sub_null, False)
        elif s.get("type") == "array" and isinstance(value, list) and value and isinstance(s.get("items"), dict):
            yield from self.fields(value[0], s["items"], (*path, 0), True)

    def conforms(self, value: Any, schema: dict) -> bool:
        """Does ``value`` satisfy ``schema`` as written in the OpenAPI document?"""
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            return any(self.conforms(value, o) for o in options)
        if "$ref" in schema:
            return self.conforms(value, self.resolve(schema)[0])
        if "allOf" in schema:
            return all(self.conforms(value, o) for o in schema["allOf"])
        if "enum" in schema and value not in schema["enum"]:
            return False
        t = schema.get("type")
        if t == "null":
            return value is None
        if t == "string":
            if not isinstance(value, str):
                return False
            if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
                return False
            if "pattern" in schema and not re.search(schema["pattern"], value):
                return False
            if schema.get("format") == "date-time":
                if not _TIME.match(value):
                    return False
                try:
                    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
                except ValueError:
                    return False
            return True
        if t == "integer":
            return (isinstance(value, int) and not isinstance(value, bool)
                    and schema.get("minimum", value) <= value <= schema.get("maximum", value))
        if t == "number":
            return isinstance(value, int | float) and not isinstance(value, bool) and value == value
        if t == "boolean":
            return isinstance(value, bool)
        if t == "array":
            if not isinstance(value, list):
                return False
            if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
                return False
            items = schema.get("items")
            return not isinstance(items, dict) or all(self.conforms(v, items) for v in value)
        if t == "object":
            if not isinstance(value, dict):
                return False
            props = schema.get("properties", {})
            if any(k not in value for k in schema.get("required", [])):
                return False
            extra = schema.get("additionalProperties", True)
            for k, v in value.items():
                if k in props:
                    if not self.conforms(v, props[k]):
                        return False
                elif extra is False:
                    return False
                elif isinstance(extra, dict):
                    key_schema = schema.get("propertyNames")
                    if key_schema and not self.conforms(k, key_schema):
                        return False
                    if not self.conforms(v, extra):
                        return False
            if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", len(value)):
                return False
            return True
        return True


def _decimal(value: Any) -> bool:
    """A quantity as the API writes them ("10.00"): the examples of a quantity field look so (its
    pattern is not in the OpenAPI document)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9]+\.[0-9]{2}", value) is not None


def variants(f: Field, example: Any) -> list[Variant]:
    """The bad (and the could-be-right) values for one field, chosen by its kind."""
    s = f.schema
    t = s.get("type")
    leaf = f.leaf.lower()
    out: list[tuple[str, Any, bool]] = []
    if t == "object":
        pass
    elif t == "array":
        out.append(("list of lists", [[[]]], True))
        if s.get("minItems", 0) > 0:
            out.append(("empty list", [], True))
        if "maxItems" in s and isinstance(example, list) and example:
            out.append((f"{s['maxItems'] + 1} items", [example[0]] * (s["maxItems"] + 1), True))
    elif t == "integer":
        out += INTEGER
        if "maximum" in s:
            out.append(("maximum + 1", s["maximum"] + 1, True))
        if "minimum" in s and s["minimum"] > 0:
            out.append(("minimum - 1", s["minimum"] - 1, True))
    elif t == "boolean":
        out += BOOLEAN
    else:
        pattern = s.get("pattern", "")
        base = example if isinstance(example, str) and example else "x"
        before = len(out)
        if s.get("format") == "date-time":
            out += DATETIME
        elif r"\d{4}-\d{2}-\d{2}" in pattern:
            out += DATE
        elif "[0-9]+(\\.[0-9]+)?" in pattern or _decimal(example) or any(_decimal(e) for e in s.get("examples", [])):
            out += QUANTITY
        elif "dea" in leaf:
            out += DEA_VALUES
        elif "ndc" in leaf:
            out += NDC_VALUES
        strict = f.ident or len(out) > before  # an identifier, a quantity, a time: look-alikes are never right
        if t == "string" and "enum" not in s:
            out += [(lbl, fn(base), bad) for lbl, fn, bad in TAINTS]
            out += [(lbl, fn(base), bad or strict) for lbl, fn, bad in CONFUSABLE]
            if not s.get("format"):
                out.append(("empty", "", "minLength" in s and s["minLength"] > 0))
            if "maxLength" in s:
                filler = "9" if re.fullmatch(r"[0-9.]*", base) else "x"
                out.append((f"{s['maxLength'] + 1} characters", filler * (s["maxLength"] + 1), True))
        elif "enum" in s:
            out += [("not in the list", s["enum"][0] + "\u200b", True),
                    ("upper case", str(s["enum"][0]).upper() + "X", True)]
    out += [(lbl, v, bad and not (v is None and f.nullable)) for lbl, v, bad in WRONG_TYPES]
    found = [Variant(lbl, v, bad, f.name) for lbl, v, bad in out]
    if t == "object" and isinstance(example, dict) and f.path:
        found.append(Variant("unknown field inside", {**example, UNKNOWN: 1}, True, f"{f.name}.{UNKNOWN}"))
    if not isinstance(f.path[-1], int):  # a list's item: "empty list" and "N items" on the list itself
        found.append(Variant("left out", MISSING, f.required, f.name))
    return found


def get_at(body: Any, path: tuple) -> Any:
    for p in path:
        if isinstance(body, dict):
            body = body.get(p)
        elif isinstance(body, list) and isinstance(p, int) and p < len(body):
            body = body[p]
        else:
            return None
    return body


def set_at(body: Any, path: tuple, value: Any) -> Any:
    """A copy of ``body`` with the field at ``path`` set to ``value`` (``MISSING``: removed)."""
    body = json.loads(json.dumps(body))
    target = body
    for p in path[:-1]:
        target = target[p]
    if value is MISSING:
        if isinstance(target, dict):
            target.pop(path[-1], None)
        return body
    target[path[-1]] = value
    return body


def dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


def malformed_bodies(base: dict) -> list[tuple[str, bytes, str, str]]:
    """(label, bytes, content type, field the refusal must name)."""
    valid = json.dumps(base).encode()
    first = next(iter(base), "x")
    dup = b"{" + json.dumps(first).encode() + b': "\xe2\x80\x8bbad", ' + valid[1:]
    return [
        ("empty", b"", "application/json", "body"),
        ("truncated", valid[: len(valid) // 2], "application/json", "body"),
        ("not UTF-8", valid[:-1] + b', "x": "\xff\xfe"}', "application/json", "body"),
        ("duplicate keys", dup, "application/json", first),
        ("10,000 levels deep", b"[" * 10_000 + b"]" * 10_000, "application/json", "body"),
        ("10,000 levels in a field", b'{"' + first.encode() + b'": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
         "application/json", "body"),
        ("top-level array", b"[" + valid + b"]", "application/json", "body"),
        ("top-level number", b"42", "application/json", "body"),
        ("top-level string", b'"x"', "application/json", "body"),
        ("null", b"null", "application/json", "body"),
        ("NaN", b"NaN", "application/json", "body"),
        ("text/plain", valid, "text/plain", "body"),
        ("form", b"a=1&b=2", "application/x-www-form-urlencoded", "body"),
        ("unknown field", valid[:-1] + b', "' + UNKNOWN.encode() + b'": 1}', "application/json", UNKNOWN),
    ]


def names(err_field: str, mutated: str) -> bool:
    """Does an error's field name the mutated one: the field itself or a part of it (``address``
    -> ``address.street``, ``vial_ids`` -> ``vial_ids[0]``)? Naming only the object or list
    holding it (``draws`` for ``draws[0].ml``) does not count."""
    return err_field == mutated or err_field.startswith((mutated + ".", mutated + "["))


def normalized(text: str) -> str:
    """Free text as the services store it: runs of white space as one space."""
    return " ".join(text.split())


def holds(data: Any, value: Any) -> bool:
    """Does ``data`` (decoded JSON) hold ``value`` somewhere? Text is compared as the services
    keep it: white space runs as one space, and up to case (a product's form is kept in lower
    case, a state code in upper case)."""
    if isinstance(value, str) and isinstance(data, str):
        return data.casefold() in (value.casefold(), normalized(value).casefold())
    if isinstance(data, dict):
        return any(holds(v, value) for v in data.values())
    if isinstance(data, list):
        return any(holds(v, value) for v in data)
    return type(data) is type(value) and data == value
