"""Bad input on every HTTP operation, driven by the app's own OpenAPI document (a new endpoint is
covered without touching this file).

For every operation with a JSON body: start from its documented example (times moved to an hour
ago, ids pointed at things that exist), then put bad values, chosen by the kind of field, in each
field in turn (nested list items included, e.g. ``lines[0].ndc``): quantities (NaN, infinities,
``-0``, ``1e309``, ``1,5``, ``10^20``, three decimals, floats, booleans), times and dates (year 1,
year 9999, month 13, no time zone, far future), identifiers (bad DEA check digit, Cyrillic and
fullwidth look-alikes, zero-width space, NUL, lone surrogate), wrong JSON types, one 10 MB
string (413), plus malformed bodies (truncated, not UTF-8, duplicate keys, 10,000 levels deep,
top-level array or number, wrong content type) and bad headers. Every operation also gets bad
path parameters and, for reads, bad query parameters.

Each request is sent as a login holding every role; witnessed commands carry fresh assertions
for the exact bytes sent, so the body's own validation is reached. Per request: no 5xx, no
traceback in the answer, a 4xx is ``application/problem+json`` with a ``detail``; a 422 lists
``errors`` and one of them names the mutated field; a refused request leaves the entry count
unchanged. Values that are bad anywhere (NUL, NaN, a bad check digit...) must be refused; values
that could be right somewhere (a null for an optional field, year 9999 as an expiry) only have to
be answered cleanly.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from ledger import services
from ledger.domain.commands import EnrollStaff
from ledger.settings import Settings
from ledger.storage.store import entry_count
from tests.api.conftest import PASSWORD, PATIENT_KEY, Api, build_api
from tests.api.roles_all import ALL
from tests.conftest import BACKENDS, KETAMINE_50

pytestmark = [pytest.mark.parametrize("db_url", BACKENDS, indirect=True), pytest.mark.slow]

USER = "allroles"
WITNESSES = ("wanda", "wes")  # sign the witness assertions; never the subject of a bad login
BIG = 10 * 1024 * 1024

# --- bad values, by kind of field: (label, value, bad_everywhere) ------------------------------

NAN = float("nan")
INF = float("inf")
QUANTITY = [("NaN", NAN, True), ('"NaN"', "NaN", True), ('"Infinity"', "Infinity", True), ("1e309", INF, True),
            ('"1e309"', "1e309", True), ('"-0"', "-0", True), ('"1,5"', "1,5", True),
            ('"10^20"', "100000000000000000000", True), ('"1.234"', "1.234", True), ("1.5", 1.5, True),
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
BOOLEAN = [('"yes"', "yes", True), ("2", 2, True), ("[]", [], True)]
WRONG_TYPES = [("object", {"unexpected": 1}, True), ("list", [{"unexpected": 1}], True), ("null", None, True)]


def path_text(path: tuple) -> str:
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


class Spec:
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


def values_for(f: Field, example: Any) -> list[tuple[str, Any, bool]]:
    """Bad values fitting the field's kind."""
    s = f.schema
    t = s.get("type")
    leaf = f.leaf.lower()
    wrong = [(lbl, v, bad and not (v is None and f.nullable)) for lbl, v, bad in WRONG_TYPES]
    if t in ("object", "array"):
        if t == "array":
            wrong.append(("list of lists", [[[]]], True))
        return wrong
    if t == "integer":
        return INTEGER + wrong
    if t == "boolean":
        return BOOLEAN + wrong
    pattern = s.get("pattern", "")
    base = example if isinstance(example, str) and example else "x"
    out: list[tuple[str, Any, bool]] = []
    if s.get("format") == "date-time":
        out += DATETIME
    elif r"\d{4}-\d{2}-\d{2}" in pattern:
        out += DATE
    elif "[0-9]+(\\.[0-9]+)?" in pattern:
        out += QUANTITY
    elif "dea" in leaf:
        out += DEA_VALUES
    elif "ndc" in leaf:
        out += NDC_VALUES
    if t == "string" and "enum" not in s:
        out += [(lbl, fn(base), bad) for lbl, fn, bad in TAINTS]
        ident = any(k in leaf for k in ("dea", "ndc", "_id", "ids", "sha", "gtin", "documents", "username", "totp"))
        out += [(lbl, fn(base), bad or ident) for lbl, fn, bad in CONFUSABLE]
        if "enum" not in s and not s.get("format"):
            out.append(("empty", "", "minLength" in s and s["minLength"] > 0))
    elif "enum" in s:
        out += [("not in the list", s["enum"][0] + "\u200b", True), ("upper case", str(s["enum"][0]).upper() + "X", True)]
    return out + wrong


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
    body = json.loads(json.dumps(body))
    target = body
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return body


# --- the clinic under test -------------------------------------------------------------------


class World:
    """A clinic with stock, a patient, a count session and a throwaway staff member, and the
    ids a body's example should point at."""

    def __init__(self, api: Api):
        self.api = api
        led = api.ledger
        admin = api.clinic.admin
        services.enroll_staff(led, admin, EnrollStaff("Everyone Everything", USER, ALL))
        api.set_password(USER)
        for w in WITNESSES:
            api.clinic.enroll(w.title() + " Witness", w, "nurse", "pharmacist")
            api.set_password(w)
        self.tess = api.clinic.enroll("Tess Throwaway", "tess", "nurse").staff_id
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        r = self.post("/receipts", {"supplier_id": api.clinic.supplier_id, "invoice_number": "INV-BAD-1",
                                     "occurred_at": hour_ago, "lines": [{"ndc": KETAMINE_50, "containers": 40,
                                                                         "lot": "KA2611", "expiry": "2028-06-30"}]})
        self.vials = r["vial_ids"]
        self.patient = self.post("/patients", {"name": "Jordan Example", "address": {
            "street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}})["patient_id"]
        self.count_session = self.post("/counts", {"ndcs": [KETAMINE_50], "blind": False})["session_id"]
        self.ids = {"supplier_id": api.clinic.supplier_id, "patient_id": self.patient, "vial_id": self.vials[0],
                    "staff_id": self.tess, "session_id": self.count_session, "seq": "1", "dea": api.dea,
                    "discrepancy_id": "D1", "alert_id": "AL1"}
        self.next_vial = 1

    def post(self, path: str, body: dict) -> dict:
        r = self.api.client.post(self.api.url(path), json=body, headers=self.headers())
        assert r.status_code == 201, r.text
        return r.json()

    def headers(self, fresh: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api.token(USER, fresh=fresh)}"}

    def count(self) -> int:
        with self.api.ledger.reading() as c:
            return entry_count(c)

    def baseline(self, example: dict) -> dict:
        """The example with times an hour ago and ids of things that exist."""
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

        def fix(v: Any, key: str | None) -> Any:
            if isinstance(v, dict):
                return {k: fix(x, k) for k, x in v.items()}
            if isinstance(v, list):
                return [fix(x, key) for x in v]
            if isinstance(v, str):
                if key and key.endswith("_at") and v[:4].isdigit():
                    return hour_ago
                if key in ("vial_id", "vial_ids"):
                    vial = self.vials[self.next_vial % len(self.vials)]
                    self.next_vial += 1
                    return vial
                if key in ("supplier_id", "patient_id"):
                    return self.ids[key]
                if key in ("password", "current_password"):
                    return PASSWORD
                if key == "username" and v in ("ned", "nora", "morgan"):
                    return "ned"
            return v

        return fix(example, None)


# --- sending and checking ---------------------------------------------------------------------


class Run:
    def __init__(self, api: Api, world: World):
        self.api, self.world = api, world
        self.problems: list[str] = []
        self.accepted: list[str] = []
        self.requests = 0
        self.cases = 0
        self.operations: set[str] = set()
        self.fields = 0

    def witness_headers(self, op: dict, content: bytes) -> dict[str, str]:
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        if "Witness-Assertion" not in names:
            return {}
        digest = hashlib.sha256(content).hexdigest()
        tokens = []
        for w in WITNESSES:
            r = self.api.client.post(self.api.url("/witness-assertions"), headers=self.world.headers(),
                                     json={"username": w, "password": PASSWORD, "body_sha256": digest})
            self.requests += 1
            assert r.status_code == 201, r.text
            tokens.append(r.json()["assertion"])
        return {"Witness-Assertion": ", ".join(tokens)}

    def send(self, method: str, url: str, op: dict, *, content: bytes | None = None,
             content_type: str = "application/json", extra: dict | None = None, params: dict | None = None):
        headers = {**self.world.headers()}
        if content is not None:
            headers["Content-Type"] = content_type
            headers.update(self.witness_headers(op, content))
        headers.update(extra or {})
        self.requests += 1
        return self.api.client.request(method, url, content=content, headers=headers, params=params)

    def check(self, what: str, r, before: int, *, field: str | None, bad: bool, expect: int | None = None) -> None:
        self.cases += 1
        self.operations.add(" ".join(what.split()[:2]))
        text = r.text
        fail = []
        if r.status_code >= 500:
            fail.append(f"status {r.status_code}")
        if "Traceback" in text or 'File "' in text:
            fail.append("a traceback in the answer")
        if expect is not None and r.status_code != expect:
            fail.append(f"status {r.status_code}, expected {expect}")
        if 400 <= r.status_code < 600:
            ctype = r.headers.get("content-type", "")
            body = None
            try:
                body = r.json()
            except ValueError:
                fail.append("a 4xx whose body is not JSON")
            if not ctype.startswith("application/problem+json"):
                fail.append(f"content type {ctype!r}")
            if isinstance(body, dict):
                if not isinstance(body.get("detail"), str) or not body["detail"]:
                    fail.append("no detail")
                if r.status_code == 422:
                    errs = body.get("errors")
                    if not isinstance(errs, list) or not errs:
                        fail.append("a 422 without errors")
                    elif field is not None and not any(names(e.get("field", ""), field) for e in errs):
                        fail.append(f"errors name {[e.get('field') for e in errs]}, not {field}")
            after = self.world.count()
            if after != before:
                fail.append(f"refused but {after - before} entries written")
        elif bad and r.status_code < 400:
            fail.append(f"accepted ({r.status_code})")
        elif r.status_code < 400:
            self.accepted.append(f"{what} -> {r.status_code}")
        if fail:
            self.problems.append(f"{what}: {'; '.join(fail)} :: {text[:300]}")
        if r.status_code < 300:  # accepted: it may have changed the login's password or ended its session
            if "/me/password" in what:
                self.api.set_password(USER)
            self.world.headers(fresh=True)


def names(err_field: str, mutated: str) -> bool:
    """Does an error's field name the mutated one (or a part of it, or the object holding it)?"""
    return err_field == mutated or err_field.startswith((mutated + ".", mutated + "[")) or \
        mutated.startswith((err_field + ".", err_field + "["))


def dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


def malformed_bodies(base: dict) -> list[tuple[str, bytes, str, str | None]]:
    """(label, bytes, content type, field expected in the errors)."""
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
         "application/json", None),
        ("top-level array", b"[" + valid + b"]", "application/json", "body"),
        ("top-level number", b"42", "application/json", "body"),
        ("top-level string", b'"x"', "application/json", "body"),
        ("null", b"null", "application/json", "body"),
        ("NaN", b"NaN", "application/json", "body"),
        ("text/plain", valid, "text/plain", None),
        ("form", b"a=1&b=2", "application/x-www-form-urlencoded", None),
        ("unknown field", valid[:-1] + b', "unexpected_field": 1}', "application/json", "unexpected_field"),
    ]


BAD_PATH = {
    "dea": [("check digit", "AB1234564"), ("Cyrillic", "\u0410B1234563"), ("long", "A" * 5000),
            ("NUL", "AB123456\x00"), ("lower case", "ab1234563")],
    "*": [("long", "V" * 5000), ("NUL", "x\x00"), ("lone surrogate", "x\ud800"), ("zero-width", "V1\u200b"),
          ("Cyrillic", "\u0412-1"), ("slash", "a%2Fb"), ("dots", ".."), ("huge number", "9" * 40),
          ("negative", "-1")],
}
BAD_QUERY = [("empty", ""), ("long", "q" * 5000), ("NUL", "\x00"), ("lone surrogate", "\ud800"),
             ("zero-width", "a\u200b"), ("huge number", "9" * 40), ("negative", "-1"), ("NaN", "NaN"),
             ("1e309", "1e309"), ("month 13", "2026-13-45T00:00:00Z"), ("no zone", "2026-11-01T10:00:00"),
             ("year 1", "0001-01-01T00:00:00Z"), ("year 9999", "9999-12-31T23:59:59Z"), ("Cyrillic", "\u0430")]


def quote_any(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="%")


def concrete(path: str, ids: dict, override: dict | None = None) -> str:
    out = path
    for name, value in {**{k: v for k, v in ids.items()}, **(override or {})}.items():
        out = out.replace("{" + name + "}", value)
    return out


def example_of(doc: dict, op: dict) -> dict:
    content = op["requestBody"]["content"]["application/json"]
    schema = content["schema"]
    ex = content.get("example") or (list(content.get("examples", {}).values())[0]["value"]
                                    if content.get("examples") else None)
    if ex is None:
        target = doc["components"]["schemas"][schema["$ref"].split("/")[-1]] if "$ref" in schema else schema
        ex = (target.get("examples") or [target.get("example")])[0]
    return ex


def test_bad_input_on_every_operation(ledger):
    started = time.perf_counter()
    api = build_api(ledger, Settings(patient_key=PATIENT_KEY, lockout_after_failures=1_000_000))
    world = World(api)
    doc = api.client.get("/openapi.json").json()
    spec = Spec(doc)
    run = Run(api, world)
    ops_with_body = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            url_of = lambda override=None, p=path: concrete(p, world.ids, override)  # noqa: E731
            params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
            # Bad path parameters.
            for p in params:
                if p["in"] != "path":
                    continue
                for label, value in BAD_PATH.get(p["name"], BAD_PATH["*"]):
                    url = url_of({p["name"]: quote_any(value)})
                    before = world.count()
                    content = dumps(world.baseline(example_of(doc, op))) if "requestBody" in op else None
                    r = run.send(method.upper(), url, op, content=content)
                    run.check(f"{method.upper()} {path} path {p['name']}={label}", r, before, field=None,
                              bad=True)
            # Bad query parameters (reads).
            if method == "get":
                for p in params:
                    if p["in"] != "query":
                        continue
                    ps, _ = spec.resolve(p.get("schema", {}))
                    for label, value in BAD_QUERY:
                        # Must be refused: anything for a list of choices or a whole number, anything
                        # but a real moment for a time. Free-text filters may just find nothing.
                        bad = "enum" in ps or ps.get("type") == "integer" or (
                            ps.get("format") == "date-time" and label not in ("year 1", "year 9999"))
                        before = world.count()
                        url = url_of() + "?" + quote_any(p["name"]) + "=" + quote_any(value)
                        r = run.send("GET", url, op)
                        run.check(f"GET {path} ?{p['name']}={label}", r, before, field=None, bad=bad)
            if "requestBody" not in op:
                continue
            ops_with_body += 1
            base = world.baseline(example_of(doc, op))
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            where = f"{method.upper()} {path}"
            # Bad values in each field.
            fields = list(spec.fields(base, schema))
            run.fields += len(fields)
            big_done = False
            for f in fields:
                example = get_at(base, f.path)
                for label, value, bad in values_for(f, example):
                    body = set_at(base, f.path, value)
                    before = world.count()
                    r = run.send(method.upper(), url_of(), op, content=dumps(body))
                    run.check(f"{where} {f.name}={label}", r, before, field=f.name, bad=bad)
                if not big_done and f.schema.get("type") == "string":
                    big_done = True
                    before = world.count()
                    r = run.send(method.upper(), url_of(), op, content=dumps(set_at(base, f.path, "x" * BIG)))
                    run.check(f"{where} {f.name}=10 MB", r, before, field=None, bad=True, expect=413)
            # Malformed bodies.
            for label, content, ctype, field in malformed_bodies(base):
                before = world.count()
                r = run.send(method.upper(), url_of(), op, content=content, content_type=ctype)
                run.check(f"{where} body {label}", r, before, field=field, bad=True)
            # Bad headers.
            header_names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
            if "Idempotency-Key" in header_names:
                for label, key in [("129 characters", "k" * 129), ("empty", "")]:
                    before = world.count()
                    r = run.send(method.upper(), url_of(), op, content=dumps(base),
                                 extra={"Idempotency-Key": key})
                    run.check(f"{where} Idempotency-Key {label}", r, before, field=None, bad=True)
            if "Witness-Assertion" in header_names:
                for label, token in [("garbage", "wa_" + "x" * 40), ("501 characters", "w" * 501), ("commas", ",,,")]:
                    before = world.count()
                    r = run.send(method.upper(), url_of(), op, content=dumps(base),
                                 extra={"Witness-Assertion": token})
                    run.check(f"{where} Witness-Assertion {label}", r, before, field=None, bad=True)
    elapsed = time.perf_counter() - started
    for p in run.problems:
        print("PROBLEM", p[:400])
    print(f"\n{ledger.dialect}: {len(run.operations)} operations ({ops_with_body} with a body, {run.fields} body "
          f"fields), {run.cases} bad inputs, {run.requests} requests in {elapsed:.1f} s; accepted (could be valid): "
          f"{len(run.accepted)}")
    for a in run.accepted:
        print("  accepted:", a)
    assert ops_with_body >= 25, "the OpenAPI document lost its request bodies?"
    assert not run.problems, f"{len(run.problems)} problems:\n" + "\n".join(p[:400] for p in run.problems)
