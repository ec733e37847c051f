"""Bad input on every HTML form under /ui/ (the JSON API: test_bad_input_http.py), driven by the
forms themselves: a new field of a form is fuzzed without touching this file, and a new POST
route under /ui/ fails ``test_every_form_route_is_fuzzed`` until it has a row in ``FORMS``.

For each POST route: open its page as a login holding every role, parse the ``<form>`` (fields,
their kind, labels, select options, checkboxes, buttons, CSRF token) and build a valid
submission from what the page offers plus the few values a person types (``fill``). That
submission is sent last and must be recorded, so every refusal before it is the mutated field's
doing. Then each field in turn gets bad values chosen by its kind:

- quantities (``inputmode=decimal``): NaN, Infinity, ``1e309``, ``-0``, ``1,5``, 10^20, three
  decimals, negative, fullwidth digits;
- whole numbers (``inputmode=numeric``): 1.5, -1, NaN, ``1e309``, 10^20, superscript and
  fullwidth digits;
- times (``datetime-local``; the page applies the location's zone, so "no zone" is the normal
  case: a far offset and ``Z`` are sent instead and may be right) and dates: month 13, Feb 30,
  hour 25, year 1, year 9999, far future, garbage, a bare date;
- text and identifiers: NUL, a lone surrogate (percent-encoded as invalid UTF-8,
  ``%ED%A0%80``), zero-width space, Cyrillic look-alikes, 100 kB, empty; DEA numbers a bad check
  digit and look-alikes; ids (vials, suppliers, patients, alerts, discrepancies, logins) of
  things that do not exist or belong to the other registrant in the same database;
- selects, checkboxes and buttons: unknown values, an option with a zero-width space, upper
  case, the placeholder;
- every field: left out, and sent twice with two different values (a checkbox group: the same
  value twice).

Plus, per form: a 1.1 MB body (413), bodies that are not a form (JSON, multipart, text/plain, no
content type, not UTF-8, more fields than the parser's limit, raw NUL garbage, empty), and a missing, empty, wrong, other
session's, NUL-tainted or other site's CSRF token; the count session's path gets ids that do not
exist, are the other registrant's or do not fit the pattern.

Sampling, to keep the run short (about 1,280 requests, 20-30 s per backend on 2 cores): list rows
(``lines-N-*``, ``vials-N-*``) are fuzzed on the row the valid submission uses only; the 1.1 MB
body once per form, 100 kB per text field; a witness's TOTP code and the receipt's scan box,
which the valid submission does not read, get five values.

Per request (what is accepted, precisely):
- never a 5xx, never a traceback or an exception's name in the body;
- *refused* means a 4xx, or a 200 page showing an error. A refusal must show a message: a
  ``class="error"`` element, the error summary's items, the error page's ``error-block``, or,
  for the 413 (the size limit answers before any page), a problem+json ``detail``. A refused
  request writes nothing (entry count unchanged);
- a value bad everywhere (``bad=True``) must be refused, and one of the messages must *name the
  field*: an element ``id="f-<name>-error"`` / ``id="f-<name>"`` (per-item forms:
  ``f-<item>-<name>-error``), or a message whose text holds the field's name (``_`` and ``-``
  read as spaces; for a list row's field, its last part, e.g. "ndc") or its label; for an id
  the page holds (hidden inputs, selects, checkboxes: no label a person would know), a message
  quoting the value also counts. A wrong username or password is named on either field of
  that login or witness (on purpose the message does not say which). For the 413 and the
  malformed bodies, a message about the body; for CSRF, a 403 about the security token or the
  other site;
- a value that could be right somewhere (a far time-zone offset, Cyrillic in a free-text note,
  an unknown value of a button, a year-1 report start) only has to be answered cleanly; when it
  is recorded, the form is opened again for the next value.
"""

from __future__ import annotations

import functools
import os
import re
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote_plus

import pytest

from api.http import queries as api_queries
from api.web import queries
from api.web.forms import MAX_FIELDS
from api.web.security import csrf_for_token
from api.web.settings import WebSettings
from ledger import services
from ledger.domain.alerts import Candidate
from ledger.domain.commands import (
    AddressInput,
    AddSupplier,
    AdministerDose,
    CountLineInput,
    DrawInput,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPatient,
    StartCount,
    SubmitCount,
    TakeInventory,
)
from ledger.services import alerts as alert_service
from ledger.services import stock
from ledger.settings import Settings
from ledger.storage.store import entry_count
from tests.api.conftest import PASSWORD, PATIENT_KEY, Api, build_api, second_clinic
from tests.api.roles_all import ALL
from tests.conftest import (
    BACKENDS,
    DEA,
    DEA2,
    KETAMINE_10,
    KETAMINE_50,
    SUPPLIER_REGISTRATION,
    Clinic,
    clinic_today,
)
from tests.web.test_page_roles import page_routes
from tests.web.test_pages_http import _patient, _stock_up, login, raise_test_alert

pytestmark = [pytest.mark.parametrize("db_url", BACKENDS, indirect=True), pytest.mark.slow]

USER = "allroles"
NEW_PASSWORD = "seven calm river stones"
UI = f"/ui/{DEA}/"
FORM = "application/x-www-form-urlencoded"
HUGE_BODY = 1_100_000  # over the server's 1,000,000-byte limit
LONG = "x" * 100_000  # under it: reaches the page
TRACE = re.compile(r"Traceback|File \"|\b(ValueError|TypeError|KeyError|IndexError|AttributeError|OverflowError|"
                   r"Unicode\w*Error|IntegrityError|OperationalError|DataError|ProgrammingError|InvalidOperation|"
                   r"psycopg|sqlalchemy|sqlite3)\b")


# --- the clinic under test -------------------------------------------------------------------------


def open_discrepancy(ledger, clinic: Clinic) -> str:
    """A blind count by two nurses finding nothing: a discrepancy for a manager who did not count."""
    sid = services.start_count(ledger, clinic.nurse, StartCount(blind=True))["session_id"]
    services.submit_count(ledger, clinic.nurse, SubmitCount(sid, (CountLineInput(KETAMINE_50, 0), CountLineInput(
        KETAMINE_10, 0)), datetime.now(UTC) - timedelta(minutes=5)), second_counter=clinic.nurse2)
    return stock.discrepancies(ledger, clinic.dea)[-1]["discrepancy_id"]


class World:
    """A clinic with stock, a patient, open alerts and discrepancies, twelve large infusions (so a
    transfer stays under the 5% limit), and a second registrant whose ids are sent to this one."""

    def __init__(self, ledger):
        api = build_api(ledger, Settings(patient_key=PATIENT_KEY, lockout_after_failures=1_000_000))
        api.client.app.state.web_settings = WebSettings(cookie_secure=False)
        self.api: Api = api
        self.ledger = ledger
        c = self.clinic = api.clinic
        self.me = c.enroll("Everyone Everything", USER, *ALL)  # approved by a second manager
        api.set_password(USER)
        _stock_up(api)
        self.patient = _patient(api)
        # The 5% transfer limit counts the clinic's (local) calendar year: the infusions must fall in
        # this one, so just after New Year they are squeezed in after midnight (45 minutes back, they
        # fell in last year and the transfer page's valid submission was refused, 00:00-00:45 on 1 Jan).
        now = datetime.now(UTC)
        tz = zoneinfo.ZoneInfo("America/Chicago")
        start = max(now - timedelta(minutes=50), datetime(now.astimezone(tz).year, 1, 1, tzinfo=tz).astimezone(UTC))
        step = (now - start) / 50  # a minute, but for that
        vials = services.receive_stock(ledger, c.nurse, ReceiveStock(c.supplier_id, "GMS-FUZZ-1", start, (
            ReceivedLineInput(KETAMINE_50, 800, "KA2610", "2028-06-30"),)))["vial_ids"]
        # 640 vials dispensed: the year's transfers may reach 33 vials (the transfer form's variants
        # that may be right, its second person's code among them, each transfer one); 160 are left
        for k in range(32):
            services.administer_dose(ledger, c.nurse, AdministerDose(
                self.patient, DEA, "80.00", "0.50", tuple(DrawInput(v, "10.00") for v in vials[20 * k:20 * k + 20]),
                "200.00", start + 5 * step, start + 30 * step))
        self.alerts = iter(range(1, 10_000))  # evidence seqs: each alert its own key
        self.alert = self.session = self.discrepancy = ""
        # the other registrant, and ids of its things
        o = self.other = second_clinic(api)
        other_supplier = services.add_supplier(ledger, o.admin, AddSupplier(  # its first one's id is ours
            "Other Supply", AddressInput("1 Dock St", "Dallas", "TX", "75201"), "PB1234563",
            **SUPPLIER_REGISTRATION))["supplier_id"]
        services.take_inventory(ledger, o.pharmacist, TakeInventory("initial", "opening_of_business", start, items=(
            InventoryItemInput(KETAMINE_50, "KB2601", "2028-03-31", sealed=True, containers=2),)), witness=o.nurse)
        self.other_vial = queries.usable_vials(ledger, DEA2, clinic_today())[0]["vial_id"]
        self.other_patient = services.register_patient(ledger, o.nurse, RegisterPatient(
            "Olga Other", AddressInput("9 Oak St", "Dallas", "TX", "75201")),
            keys=api.client.app.state.patient_keys)["patient_id"]
        self.other_discrepancy = open_discrepancy(ledger, o)
        self.other_session = services.start_count(ledger, o.nurse, StartCount(blind=True))["session_id"]
        self.other_alert = alert_service.raise_alerts(ledger, DEA2, [Candidate(
            alert_key="web-fuzz:other", rule="late_entry", severity="medium", subjects=(o.nurse.staff_id,),
            summary="entry 1 was recorded 30.00 h after the event", parameters={"late_entry_hours": "24"},
            evidence_seqs=(1,), figures={"hours_late": "30.00"})])[0]
        o.enroll("Otto Other", "otto", "nurse")
        api.set_password("otto", dea=DEA2)
        self.other_supplier = other_supplier
        # Ids are numbered by each registrant's entries: make sure the other's are not ids of things
        # here too (those made here later have higher numbers).
        here = {s["supplier_id"] for s in api_queries.suppliers(ledger, DEA)} | {self.patient}
        here |= {v["vial_id"] for v in queries.usable_vials(ledger, DEA, clinic_today())}
        here |= {a["alert_id"] for a in alert_service.list_alerts(ledger, DEA, status=None)}
        here |= {d["discrepancy_id"] for d in stock.discrepancies(ledger, DEA, status=None)}
        clash = here & {other_supplier, self.other_vial, self.other_alert, self.other_discrepancy, self.other_patient}
        assert not clash, f"the other registrant's ids {clash} are ids here too"

    @property
    def client(self):
        return self.api.client

    def count(self) -> int:
        with self.ledger.reading() as c:
            return entry_count(c)

    def login(self) -> None:
        self.client.cookies.clear()
        r = login(self.api, USER)
        assert r.status_code == 303, r.text[:500]

    # what each form needs, made again after a submission was recorded
    def new_alert(self) -> None:
        self.alert = raise_test_alert(self.ledger, self.clinic.nurse.staff_id, evidence=next(self.alerts))

    def new_session(self) -> None:
        self.session = services.start_count(self.ledger, self.me, StartCount(blind=True))["session_id"]

    def new_discrepancy(self) -> None:
        self.discrepancy = open_discrepancy(self.ledger, self.clinic)

    def new_loss_report(self) -> None:
        """Issue 20: a theft or loss report discovered an hour ago, open for its notice and filing."""
        from ledger.domain.commands import LostVialInput, ReportTheftOrLoss

        vial = queries.usable_vials(self.ledger, DEA, clinic_today())[0]["vial_id"]
        services.report_theft_or_loss(self.ledger, self.me, ReportTheftOrLoss(
            datetime.now(UTC) - timedelta(hours=1), "night_break_in", False, 0, "10.00", lost=(LostVialInput(vial),),
            narrative="safe found open", corrective_measures="code changed", contact_name="Everyone Everything",
            contact_phone="512-555-0142"), witness=self.clinic.pharmacist)

    def ensure_root(self) -> None:
        """The registrant's root credential (this login's password key), made as the signing-key
        page makes it, unless the signing-key form's valid submission made it already."""
        from ledger.domain.principal import AuthMethod, Principal
        from ledger.storage.authority import authority_at

        with self.ledger.reading() as conn:
            if authority_at(conn, DEA).signing_required:
                return
        auth, member = self.api.auth, self.api.auth.store.staff_by_username(DEA, USER)
        auth.enrol_signing_key(member, Principal(DEA, member.staff_id, member.printed_name, AuthMethod.PASSWORD),
                               PASSWORD, rp_id=auth.settings.webauthn_rp_id, origins=tuple(auth.settings.webauthn_origins))
        self.login()  # a sign-in made before the key existed holds none

    def reset_password(self) -> None:
        self.api.set_password(USER)
        self.login()

    def ids(self, name: str) -> list[tuple[str, str]]:
        """Ids of things that do not exist here or are the other registrant's, for a field."""
        base = re.sub(r"-\d+-", "-N-", name)
        table = {
            "alert_id": [("no such alert", "AL999999"), ("other registrant's alert", self.other_alert)],
            "discrepancy_id": [("no such discrepancy", "DX999999"),
                               ("other registrant's discrepancy", self.other_discrepancy)],
            "vial_ids": [("no such vial", "V-NO-SUCH-VIAL"), ("other registrant's vial", self.other_vial)],
            "vials-N-id": [("no such vial", "V-NO-SUCH-VIAL"), ("other registrant's vial", self.other_vial)],
            "supplier_id": [("no such supplier", "SUP-NO-SUCH"), ("other registrant's supplier", self.other_supplier)],
            "patient_id": [("no such patient", "P999999"), ("other registrant's patient", self.other_patient)],
            "lines-N-ndc": [("no such product", "0409-2051-99")],
            "fixed_by_seq": [("no such entry", "999999")],
            "covers_seqs": [("no such entry", "999999")],
            # issue 20: an entry that is no theft or loss report (1: the first staff enrolment)
            "notice_report": [("no such entry", "999999"), ("not a loss report", "1")],
            "filing_report": [("no such entry", "999999"), ("not a loss report", "1")],
        }
        if name.endswith("username"):
            return [("another registrant's login", "otto"), ("no such login", "nobody-here")]
        return table.get(base, [])


# --- the forms, parsed ------------------------------------------------------------------------------


@dataclass
class Control:
    name: str
    tag: str
    type: str = "text"
    value: str = ""
    id: str = ""
    checked: bool = False
    required: bool = False
    disabled: bool = False
    inputmode: str = ""
    options: list[str] = field(default_factory=list)


@dataclass
class ParsedForm:
    action: str
    controls: list[Control] = field(default_factory=list)

    def hidden(self, name: str) -> str | None:
        return next((c.value for c in self.controls if c.name == name and c.type == "hidden"), None)

    def values(self, name: str) -> list[str]:
        return [c.value for c in self.controls if c.name == name and not c.disabled]


_READ = frozenset(("form", "label", "option", "input", "select", "textarea", "button"))


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[ParsedForm] = []
        self.labels: dict[str, str] = {}
        self._form: ParsedForm | None = None
        self._select: Control | None = None
        self._textarea: Control | None = None
        self._label: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _READ:  # most of a page (tables, lists, text): nothing to read
            return
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = ParsedForm(a.get("action", ""))
            self.forms.append(self._form)
        elif tag == "label" and a.get("for"):
            self._label = (a["for"], [])
        elif tag == "option" and self._select is not None:
            self._select.options.append(a.get("value", ""))
            if "selected" in a:
                self._select.value = a.get("value", "")
        if self._form is None or not a.get("name") or tag not in ("input", "select", "textarea", "button"):
            return
        c = Control(a["name"], tag, (a.get("type") or ("submit" if tag == "button" else "text")).lower(),
                    a.get("value", ""), a.get("id", ""), "checked" in a, "required" in a, "disabled" in a,
                    a.get("inputmode", ""))
        self._form.controls.append(c)
        if tag == "select":
            self._select = c
        elif tag == "textarea":
            self._textarea = c

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "label" and self._label:
            self.labels[self._label[0]] = " ".join("".join(self._label[1]).split()).rstrip(" *")
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea.value += data
        if self._label is not None:
            self._label[1].append(data)


def parse(html: str) -> _Parser:
    p = _Parser()
    p.feed(html)
    return p


@dataclass
class Field:
    name: str
    kind: str  # quantity whole datetime date select checkbox button hidden password text ident
    required: bool
    options: list[str]
    label: str
    group: bool  # several controls share the name (a checkbox group)


STRICT_IDENT = re.compile(r"dea_number|ndc|_id$|_ids$|gtin|username|totp")
IDENT = re.compile(r"dea_number|ndc|_id$|_ids$|gtin|serials|username|invoice_number|lot$|scan$|seqs?$|totp")


def kind_of(c: Control) -> str:
    if c.tag == "button" or c.type == "submit":
        return "button"
    if c.type == "checkbox":
        return "checkbox"
    if c.tag == "select":
        return "select"
    if c.type in ("hidden", "password"):
        return c.type
    if c.type == "datetime-local":
        return "datetime"
    if c.type == "date":
        return "date"
    if c.inputmode == "decimal":
        return "quantity"
    if c.inputmode == "numeric":
        return "whole"
    return "ident" if c.tag == "input" and IDENT.search(c.name) else "text"


def fields_of(form: ParsedForm, labels: dict[str, str], baseline: list[tuple[str, str]]) -> list[Field]:
    """One field per name; of a list's rows (``lines-N-*``, ``vials-N-*``), the row in use."""
    by_name: dict[str, list[Control]] = {}
    for c in form.controls:
        if c.name != "csrf_token":
            by_name.setdefault(c.name, []).append(c)
    used = {k for k, v in baseline if v}
    # the row in use: one a person filled in (a ticked box, a typed mL), not one whose hidden id alone is sent
    hidden = {c.name for c in form.controls if c.type == "hidden"}
    rows = tuple({m.group(0) for k, v in baseline if v and k not in hidden and (m := re.match(r"\w+-\d+-", k))})

    def rank(name: str) -> tuple[bool, bool]:
        return bool(rows) and name.startswith(rows), name in used

    chosen: dict[str, str] = {}
    for name in by_name:
        pattern = re.sub(r"-\d+-", "-N-", name)
        if pattern not in chosen or rank(name) > rank(chosen[pattern]):
            chosen[pattern] = name
    out = []
    for name in chosen.values():
        cs = by_name[name]
        first = cs[0]
        options = [c.value for c in cs] if first.type in ("checkbox", "submit") else first.options
        out.append(Field(name, kind_of(first), any(c.required for c in cs), [o for o in options if o],
                         labels.get(first.id, ""), len(cs) > 1))
    return out


# --- bad values, by kind: (label, value or a function of the valid value, bad everywhere) -------------

Value = str | Callable[[str], str]
QUANTITY: list[tuple[str, Value, bool]] = [
    ("NaN", "NaN", True), ("Infinity", "Infinity", True), ("1e309", "1e309", True), ("-0", "-0", True),
    ("1,5", "1,5", True), ("10^20", "1" + "0" * 20, True), ("four decimals", "1.2345", True),
    ("negative", "-1.00", True), ("fullwidth", "\uff11.\uff10\uff10", True)]
WHOLE: list[tuple[str, Value, bool]] = [
    ("1.5", "1.5", True), ("negative", "-1", True), ("NaN", "NaN", True), ("1e309", "1e309", True),
    ("10^20", "1" + "0" * 20, True), ("superscript two", "\u00b2", True), ("fullwidth", "\uff13", True)]
DATETIME: list[tuple[str, Value, bool]] = [
    ("month 13", "2026-13-45T10:00", True), ("Feb 30", "2026-02-30T10:00", True), ("hour 25", "2026-11-25T25:00", True),
    ("year 1", "0001-01-01T00:00", True), ("year 9999", "9999-12-31T23:59", True),
    ("far future", "2200-01-01T00:00", True), ("garbage", "yesterday at noon", True),
    ("offset +14:00", lambda v: v + "+14:00", False), ("Z", lambda v: v + "Z", False),
    ("a bare date", lambda v: v[:10], True)]
DATE: list[tuple[str, Value, bool]] = [
    ("month 13", "2026-13-45", True), ("Feb 30", "2026-02-30", True), ("year 1", "0001-01-01", False),
    ("year 9999", "9999-12-31", False), ("far future", "2200-01-01", False), ("garbage", "next week", True),
    ("fullwidth", "\uff12\uff10\uff12\uff18-03-31", True), ("no zero padding", "2028-6-30", True)]
DEA_VALUES: list[tuple[str, Value, bool]] = [
    ("check digit", "AB1234564", True), ("Cyrillic A", "\u0410B1234563", True),
    ("fullwidth 6", "AB12345\uff163", True), ("lower case", "ab1234563", False)]


def taints(strict: bool) -> list[tuple[str, Value, bool]]:
    return [("NUL", lambda v: v + "\x00", True), ("lone surrogate", lambda v: v + "\ud800", True),
            ("zero-width space", lambda v: v + "\u200b", True),
            ("Cyrillic look-alike", lambda v: (v or "a").replace("a", "\u0430").replace("A", "\u0410") + "\u0430",
             strict),
            ("100 kB", LONG, strict)]


def read_when_needed(name: str) -> bool:
    """A witness's code, read when their role needs one (ours need none), the scan box, read on
    "Add scanned carton", and the infusion's patient search box, read on "Find patient", and the
    correction's entry number box, read on "Show" (issue 21; the valid submission records): any
    value may be right."""
    return name.endswith("_totp") or name in ("scan", "patient_query", "seq_typed")


def values_for(f: Field, world: World, new: tuple[str, ...] = ()) -> list[tuple[str, Value, bool]]:
    out: list[tuple[str, Value, bool]] = [] if f.name in new else [(lbl, v, True) for lbl, v in world.ids(f.name)]
    if read_when_needed(f.name):
        return [("not a code", "12ab", False), ("100 kB", LONG, False), ("empty", "", False),
                ("NUL", lambda v: v + "\x00", True), ("lone surrogate", lambda v: v + "\ud800", True)]
    if f.kind == "quantity":
        out += QUANTITY
    elif f.kind == "whole":
        out += WHOLE
    elif f.kind == "datetime":
        out += DATETIME
    elif f.kind == "date":
        out += DATE
    elif f.kind in ("select", "checkbox", "button"):
        # A button's value picks what to do: the pages take an unknown one for the main action. A
        # lone checkbox (a vial's "use") counts as ticked whatever its value.
        real = f.kind == "select" or (f.kind == "checkbox" and f.group)
        opt = f.options[0] if f.options else "x"
        out += [("not an option", "x-not-an-option", real), ("option + zero-width space", opt + "\u200b", real),
                ("NUL", opt + "\x00", True), ("lone surrogate", opt + "\ud800", True)]
        if opt.upper() != opt:
            out.append(("upper case", opt.upper(), real))
    elif f.kind == "hidden":
        if f.name == "line_count":  # how many rows the page sent: the page reads what is there
            out += [(lbl, v, False) for lbl, v, _ in WHOLE]
        out += [("NUL", lambda v: v + "\x00", True), ("lone surrogate", lambda v: v + "\ud800", True),
                ("zero-width space", lambda v: v + "\u200b", bool(STRICT_IDENT.search(f.name))),
                ("100 kB", LONG, False)]
    elif f.kind == "password":
        changing = f.name.startswith("new_password")  # a new password may be any text
        out += [(lbl, v, bad or not changing) for lbl, v, bad in taints(False)]
    else:
        if "dea_number" in f.name:
            out += DEA_VALUES
        out += taints(bool(STRICT_IDENT.search(f.name)))
        if f.kind == "text" and not f.required:
            out.append(("only spaces", "   ", False))
    if f.kind not in ("button", "checkbox", "hidden"):
        out.append(("empty", "", f.required))
    return out


# --- the forms: route, page, what a person types ----------------------------------------------------


def _first_vial(form: ParsedForm) -> list[str]:
    return form.values("vial_ids")[:1]


def _first_option(form: ParsedForm, name: str) -> str:
    """The first real choice of select ``name`` (not its placeholder)."""
    return next(o for c in form.controls if c.name == name for o in c.options if o)


def _infusion(w: World, form: ParsedForm) -> dict[str, Any]:
    row = next(c.name.split("-")[1] for c in form.controls if re.fullmatch(r"vials-\d+-use", c.name) and not c.disabled)
    return {"patient_id": w.patient, "prescriber_dea_number": DEA, "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            f"vials-{row}-use": "1", f"vials-{row}-ml": "1.00", "ml_given": "0.73", "waste_ml": "0.27",
            "witness_username": "ned", "witness_password": PASSWORD, "action": "record"}


def _count(w: World, form: ParsedForm) -> dict[str, Any]:
    zeros = {c.name: "0" for c in form.controls if re.fullmatch(r"lines-\d+-(sealed|open)_containers", c.name)}
    return {**zeros, "counter2_username": "ned", "counter2_password": PASSWORD}


# issue 21 pages: stock_events (what their forms need: an infusion still unreconciled, a vial in
# quarantine, a sealed carton; made again after each submission recorded)
def _se_infusion(w: World) -> None:
    vial = next(v["vial_id"] for v in queries.usable_vials(w.ledger, DEA, clinic_today())
                if v["state"] == "sealed" and not v.get("packaged"))
    at = datetime.now(UTC) - timedelta(minutes=45)
    services.administer_dose(w.ledger, w.clinic.nurse, AdministerDose(
        w.patient, DEA, "80.00", "0.50", (DrawInput(vial, "1.00"),), "0.50", at, at + timedelta(minutes=30)))


def _se_quarantined(w: World) -> None:
    from ledger.domain.commands import QuarantineStock

    vial = next(v["vial_id"] for v in queries.usable_vials(w.ledger, DEA, clinic_today())
                if v["state"] == "sealed" and not v.get("packaged"))
    services.quarantine_stock(w.ledger, w.clinic.nurse, QuarantineStock((vial,), "recall notice"))


def _se_carton(w: World) -> None:
    services.receive_stock(w.ledger, w.clinic.nurse, ReceiveStock(
        w.clinic.supplier_id, f"GMS-CARTON-{w.count()}", datetime.now(UTC) - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, None, "KA2611", "2028-06-30", packages=1),)))


def _se_breakage(w: World, form: ParsedForm) -> dict[str, Any]:
    row = next(c.name.split("-")[1] for c in form.controls if re.fullmatch(r"lines-\d+-use", c.name))
    return {f"lines-{row}-use": "1", f"lines-{row}-ml": "0.10", "what": "spill", "recoverable": "no",
            "description": "drop spilled at chair 2", "witness_username": "ned", "witness_password": PASSWORD}


# issue 21 pages: staff, patients, corrections, preparations, esketamine, backfill (what their forms
# need: a staff member to grant a role to, an infusion to correct, a bag made and infused, a stored
# scanned sheet; made again after each submission recorded)
_NEW = iter(range(1, 10_000))
APPROVER = "avery"  # the administrator: a second person for the staff pages (this login is the first)


def _approver(w: World, prefix: str) -> dict[str, Any]:
    return {f"{prefix}_username": APPROVER, f"{prefix}_password": PASSWORD,
            f"{prefix}_totp": w.api.totp(APPROVER) or ""}


def _staff_member(w: World) -> None:
    w.member = w.clinic.enroll(f"Nell Newhire {next(_NEW)}", f"nell{next(_NEW)}", "nurse").staff_id


def _correctable(w: World) -> None:
    """An infusion an hour ago, 1.00 mL from a sealed vial: the entry the correction corrects."""
    _se_infusion(w)
    with w.ledger.reading() as conn:
        import sqlalchemy as sa
        w.corrects = conn.execute(sa.text("SELECT max(seq) FROM entries WHERE registrant = :r AND kind = "
                                          "'dose_administered'"), {"r": DEA}).scalar_one()


def _usable_sealed(w: World) -> str:
    return next(v["vial_id"] for v in queries.usable_vials(w.ledger, DEA, clinic_today())
                if v["state"] == "sealed" and not v.get("packaged"))


def _prep_made(w: World) -> None:
    """A 100 mL saline bag with 0.70 mL of ketamine, started 30 minutes ago."""
    from ledger.domain.commands import MakePreparation

    w.prep = services.make_preparation(w.ledger, w.clinic.nurse, MakePreparation(
        w.patient, DEA, "70.00", "0.50", (DrawInput(_usable_sealed(w), "0.70"),), "0.9% sodium chloride", "100.00",
        "bag", "100.70", datetime.now(UTC) - timedelta(minutes=30)))["preparation_id"]


def _prep_infused(w: World) -> None:
    from ledger.domain.commands import InfusePreparation

    _prep_made(w)
    now = datetime.now(UTC)
    services.infuse_preparation(w.ledger, w.clinic.nurse, InfusePreparation(
        w.prep, "70.00", now - timedelta(minutes=20), now - timedelta(minutes=5), "patient asked to stop"))


def _local(minutes_ago: int) -> str:
    tz = zoneinfo.ZoneInfo("America/Chicago")
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).astimezone(tz).strftime("%Y-%m-%dT%H:%M")


SHEET = b"%PDF-1.7\n% downtime paper sheet, chair 2, signed\n%%EOF\n"


def _sheet(w: World) -> None:
    """The scanned downtime sheet, stored (the backfill's step 2 cites it)."""
    import hashlib

    from ledger.domain.commands import StoreDocument

    if not getattr(w, "sheet", ""):  # stored once
        services.store_document(w.ledger, w.clinic.nurse, StoreDocument(SHEET, "application/pdf", "Downtime sheet"))
        w.sheet = hashlib.sha256(SHEET).hexdigest()


def _sheet_and_infusion(w: World) -> None:
    _sheet(w)
    _se_infusion(w)


SPRAVATO_2 = "50458-0028-02"


def _devices(w: World) -> None:
    """Two sealed Spravato devices on hand (the product added once)."""
    from ledger.domain.commands import AddProduct

    if not getattr(w, "spravato", False):
        services.add_product(w.ledger, w.clinic.admin, AddProduct(
            SPRAVATO_2, "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray", "140.00", "0.20"))
        w.spravato = True
    services.receive_stock(w.ledger, w.clinic.nurse, ReceiveStock(
        w.clinic.supplier_id, f"INV-SPR-{w.count()}", datetime.now(UTC) - timedelta(hours=6),
        (ReceivedLineInput(SPRAVATO_2, 2, "SPR-LOT-1", "2028-06-30"),)))


def _own_vial(w: World, tag: str) -> None:
    """A vial of the form's own, received once and opened (0.10 mL given): the valid submissions draw
    from it, so its row stays put (a sealed vial drawn from moves behind the sealed ones, and the
    fuzzed row must be the one the valid submission ticks)."""
    own = w.__dict__.setdefault("own_vials", {})
    if tag in own:
        return
    at = datetime.now(UTC) - timedelta(hours=2)
    [vial] = services.receive_stock(w.ledger, w.clinic.nurse, ReceiveStock(w.clinic.supplier_id, f"GMS-OWN-{tag}", at, (
        ReceivedLineInput(KETAMINE_50, 1, "KA2612", "2028-06-30"),)))["vial_ids"]
    services.administer_dose(w.ledger, w.clinic.nurse, AdministerDose(
        w.patient, DEA, "80.00", "0.50", (DrawInput(vial, "0.10"),), "0.10", at, at + timedelta(minutes=30)))
    own[tag] = vial


def _draw(w: World, form: ParsedForm, tag: str, ml: str) -> dict[str, Any]:
    """``ml`` from the form's own vial (``_own_vial``)."""
    row = next(c.name.split("-")[1] for c in form.controls if re.fullmatch(r"vials-\d+-id", c.name)
               and c.value == w.own_vials[tag])
    return {f"vials-{row}-use": "1", f"vials-{row}-ml": ml}


def _backfill_infusion(w: World, f: ParsedForm) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(hours=30)
    tz = zoneinfo.ZoneInfo("America/Chicago")
    return {"patient_id": w.patient, "prescriber_dea_number": DEA, "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            **_draw(w, f, "backfill", "0.10"), "ml_given": "0.07", "waste_ml": "0.03", "waste_method": "sink, witnessed",
            "started_at": (end - timedelta(minutes=45)).astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
            "ended_at": end.astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
            "late_reason": "Recorded from the downtime paper sheet", "witness_username": "ned",
            "witness_password": PASSWORD, "action": "record"}


@dataclass
class Spec:
    route: str  # the POST route as the app declares it
    page: Callable[[World], str]  # the page (GET, under /ui/<dea>/) holding the form
    fill: Callable[[World, ParsedForm], dict[str, Any]] = lambda w, f: {}
    prepare: Callable[[World], None] = lambda w: None  # what the form needs; again after a record
    key: Callable[[World], str] | None = None  # of several forms with this action, the one holding this id
    pairs: tuple[tuple[str, str], ...] = ()  # fields typed twice (sent, and refused, together)
    new: tuple[str, ...] = ()  # fields naming something new (an enrolment's login name): no "no such" ids


_REF_NDCS = iter(range(1, 10_000))


def _ref_product(w: World, f: ParsedForm) -> dict[str, Any]:
    """issue 21 pages: reference: a product the registrant does not have yet (labeler 99xxx)."""
    return {"ndc": f"99{next(_REF_NDCS):03d}-0001-01", "name": "Ketamine HCl injection 100 mg/mL", "drug_code": "7285",
            "schedule": "III", "dosage_form": "injection", "strength_mg_per_ml": "100.00", "container_ml": "5.00"}


FORMS = [
    Spec("/ui/{dea}/alerts", lambda w: "alerts", prepare=World.new_alert, key=lambda w: w.alert,
         fill=lambda w, f: {"category": "documentation_error", "action": "resolve",
                            "explanation": "Entry typed late after a network outage; checked."}),
    Spec("/ui/{dea}/counts/new", lambda w: "counts/new"),
    Spec("/ui/{dea}/counts/{session_id}", lambda w: f"counts/{w.session}", fill=_count, prepare=World.new_session),
    Spec("/ui/{dea}/discrepancies", lambda w: "discrepancies", prepare=World.new_discrepancy,
         key=lambda w: w.discrepancy,
         fill=lambda w, f: {"category": "other", "explanation": "Counted again next morning; the vial was in the fridge.",
                            # issue 15: a second person who did not count (Nora and Ned did)
                            "second_username": "pia", "second_password": PASSWORD}),
    # issue 21: the patient is picked, not typed; the page opened with a chart number offers them
    Spec("/ui/{dea}/infusions/new", lambda w: f"infusions/new?patient={w.patient}", fill=_infusion),
    Spec("/ui/{dea}/destructions/new", lambda w: "destructions/new",
         fill=lambda w, f: {"vial_ids": _first_vial(f), "reason": "damaged vial", "witness1_username": "ned",
                            "witness1_password": PASSWORD, "witness2_username": "pia", "witness2_password": PASSWORD}),
    Spec("/ui/{dea}/transfers/new", lambda w: "transfers/new",
         fill=lambda w, f: {"vial_ids": _first_vial(f), "receiver_dea_number": DEA2, "receiver_name": "Dr. Other",
                            "street": "1 Main St", "city": "Austin", "state": "TX", "postal_code": "78701",
                            "receiver_registration_expires_on": "2031-06-30", "receiver_schedules": "3N 4 5",
                            # issue 15: stock leaving the registrant is signed by a second person
                            "witness_username": "ned", "witness_password": PASSWORD}),
    Spec("/ui/{dea}/losses/new", lambda w: "losses/new",
         fill=lambda w, f: {"vial_ids": _first_vial(f), "loss_type": "other", "police_notified": "no",
                            "purchase_value_usd": "12.50", "witness_username": "pia", "witness_password": PASSWORD,
                            # issue 20: the rest of Form 106
                            "narrative": "vial missing from the safe at opening",
                            "corrective_measures": "safe code changed", "other_explanation": "not found after a search",
                            "contact_phone": "512-555-0142"}),
    # issue 20: the follow-up page's two forms (same action), each for a report still open for it
    Spec("/ui/{dea}/losses/follow-up", lambda w: "losses/follow-up", prepare=World.new_loss_report,
         key=lambda w: "notice", fill=lambda w, f: {"notice_report": _first_option(f, "notice_report"),
                                                    "method": "email", "recipient": "DEA Houston Division"}),
    Spec("/ui/{dea}/losses/follow-up", lambda w: "losses/follow-up", prepare=World.new_loss_report,
         key=lambda w: "filing", fill=lambda w, f: {"filing_report": _first_option(f, "filing_report"),
                                                    "confirmation_number": "106-2026-0042187"}),
    # issue 20: a biennial inventory, every vial on the book found sealed, before a witness
    Spec("/ui/{dea}/inventories/new", lambda w: "inventories/new?type=biennial", key=lambda w: "biennial",
         fill=lambda w, f: {**{c.name: "sealed" for c in f.controls if re.fullmatch(r"vials-\d+-found", c.name)},
                            "taken_at": "close_of_business", "witness_username": "ned", "witness_password": PASSWORD}),
    Spec("/ui/{dea}/receipts/new", lambda w: "receipts/new",
         fill=lambda w, f: {"supplier_id": w.clinic.supplier_id, "lines-0-ndc": KETAMINE_50, "lines-0-containers": "2",
                            "lines-0-lot": "KA2700", "lines-0-expiry": "2028-06-30", "action": "record"}),
    # issue 21 pages: stock_events
    Spec("/ui/{dea}/wastes/new", lambda w: "wastes/new", prepare=_se_infusion,
         fill=lambda w, f: {"administration_id": f.values("administration_id")[0], "ml": "0.50",
                            "witness_username": "ned", "witness_password": PASSWORD}),
    Spec("/ui/{dea}/breakages/new", lambda w: "breakages/new", fill=_se_breakage),
    Spec("/ui/{dea}/returns/new", lambda w: "returns/new",
         fill=lambda w, f: {"vial_ids": _first_vial(f), "supplier_id": w.clinic.supplier_id, "invoice_number": "RET-1",
                            "witness_username": "ned", "witness_password": PASSWORD}),
    Spec("/ui/{dea}/quarantines", lambda w: "quarantines",
         fill=lambda w, f: {"vial_ids": _first_vial(f), "reason": "recall notice R-14"}),
    Spec("/ui/{dea}/quarantines/release", lambda w: "quarantines", prepare=_se_quarantined,
         fill=lambda w, f: {"release_vial_ids": f.values("release_vial_ids")[:1], "release_reason": "not recalled"}),
    Spec("/ui/{dea}/packages", lambda w: "packages", prepare=_se_carton,
         fill=lambda w, f: {"package_id": f.values("package_id")[0], "units_found": "10",
                            "witness_username": "ned", "witness_password": PASSWORD}),
    # issue 21 pages: reference (each valid submission records again: a product with a new NDC,
    # not in csledger's NDC reference, so its figures are the typed ones; the others may repeat)
    Spec("/ui/{dea}/products", lambda w: "products", fill=_ref_product),
    Spec("/ui/{dea}/suppliers", lambda w: "suppliers", key=lambda w: "add",
         fill=lambda w, f: {"name": "Lone Star Pharma Distribution", "address-street": "9 Mill St",
                            "address-city": "Dallas", "address-postal_code": "75201", "dea_number": "PD2345672",
                            "registration_expires_on": "2031-01-31", "schedules": ["3", "3N"],
                            "authorized_trading_partner": "yes"}),
    Spec("/ui/{dea}/suppliers", lambda w: "suppliers", key=lambda w: "registration",
         fill=lambda w, f: {"supplier_id": w.clinic.supplier_id, "reg-registration_expires_on": "2032-01-31",
                            "reg-schedules": ["3", "3N", "4"], "reg-authorized_trading_partner": "yes"}),
    Spec("/ui/{dea}/prescribers", lambda w: "prescribers",
         fill=lambda w, f: {"name": "Dr. Sam Rivera", "dea_number": "AP2345672", "schedules": ["3N", "4"],
                            "expires_on": "2031-05-31", "state_license_number": "TX-Q1234"}),
    # issue 21 pages: staff (each enrolment a new login; each grant to a newly enrolled nurse)
    Spec("/ui/{dea}/staff", lambda w: "staff",
         fill=lambda w, f: {"printed_name": f"Sam Newhire {next(_NEW)}", "username": f"sam{next(_NEW)}", "roles": ["nurse"],
                            **_approver(w, "approver")}, new=("username",)),
    Spec("/ui/{dea}/staff/{staff_id}", lambda w: f"staff/{w.member}", prepare=_staff_member, key=lambda w: "grant",
         fill=lambda w, f: {"grant_role": "pharmacist", **_approver(w, "grant_approver")}),
    # issue 21 pages: patients (the register form; the search and change forms record nothing new)
    Spec("/ui/{dea}/patients", lambda w: "patients", key=lambda w: "register",
         fill=lambda w, f: {"name": f"Rosa Delgado {next(_NEW)}", "date_of_birth": "1984-03-07",
                            "street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}),
    # issue 21 pages: corrections (of an infusion an hour ago: 0.20 mL more taken from its vial, which
    # a pharmacist approves: the approver is read only when a line removes stock)
    Spec("/ui/{dea}/corrections/new", lambda w: f"corrections/new?entry={w.corrects}", prepare=_correctable,
         fill=lambda w, f: {"corrects_seq": str(w.corrects), "lines-0-direction": "remove", "lines-0-ml": "0.20",
                            "reason": "1.20 mL typed as 1.00 mL", "action": "record",
                            "approver_username": "pia", "approver_password": PASSWORD}),
    # issue 21 pages: preparations (the patient is picked by a search: sent as the pick sends it)
    Spec("/ui/{dea}/preparations", lambda w: "preparations", prepare=lambda w: _own_vial(w, "prep"),
         fill=lambda w, f: {"patient_id": w.patient, "prescriber_dea_number": DEA, "weight_kg": "70.00",
                            "ordered_mg_per_kg": "0.50", **_draw(w, f, "prep", "0.10"),
                            "diluent": "0.9% sodium chloride", "diluent_ml": "100.00", "container": "bag",
                            "final_ml": "100.10",
                            "started_at": _local(30), "action": "record"}),
    Spec("/ui/{dea}/preparations/{preparation_id}/infusion", lambda w: f"preparations/{w.prep}/infusion",
         prepare=_prep_made,
         fill=lambda w, f: {"ml_infused": "70.00", "started_at": _local(20), "ended_at": _local(5),
                            "stop_reason": "patient asked to stop", "action": "record"}),
    Spec("/ui/{dea}/preparations/{preparation_id}/waste", lambda w: f"preparations/{w.prep}/waste",
         prepare=_prep_infused,
         fill=lambda w, f: {"method": "bag emptied into drug disposal container, witnessed", "occurred_at": _local(0),
                            "ml_remaining": "30.70", "witness_username": "ned", "witness_password": PASSWORD,
                            "action": "record"}),
    # issue 21 pages: backfill, step 2 (the sheet stored; an infusion from it at the paper's time, and
    # a later waste of an infusion still unreconciled)
    Spec("/ui/{dea}/backfill/infusion", lambda w: f"backfill?sheet={w.sheet}",
         prepare=lambda w: (_sheet(w), _own_vial(w, "backfill")),
         fill=_backfill_infusion),
    Spec("/ui/{dea}/backfill/waste", lambda w: f"backfill?sheet={w.sheet}", prepare=_sheet_and_infusion,
         fill=lambda w, f: {"lw_administration_id": f.values("lw_administration_id")[0], "lw_ml": "0.50",
                            "lw_method": "sink, witnessed", "lw_occurred_at": _local(10),
                            "lw_late_reason": "Recorded from the paper sheet",
                            "waste_witness_username": "ned", "waste_witness_password": PASSWORD}),
    # issue 21 pages: a Spravato session (last of these: its devices are sealed units the forms above
    # would otherwise draw from), two devices, 56 mg, observed for two hours
    Spec("/ui/{dea}/esketamine-sessions/new", lambda w: "esketamine-sessions/new", prepare=_devices,
         fill=lambda w, f: {"patient_id": w.patient, "prescriber_dea_number": DEA,
                            "device_ids": f.values("device_ids")[:2], "dose_mg": "56.00",
                            "administered_at": _local(130), "observation_started_at": _local(130),
                            "observation_ended_at": _local(2), "action": "record"}),
    Spec("/ui/{dea}/policies", lambda w: "policies", fill=lambda w, f: {"reason": "medical director memo"}),
    Spec("/ui/{dea}/reports", lambda w: "reports", fill=lambda w, f: {"kind": "receiving"}),
    Spec("/ui/{dea}/status", lambda w: "status"),
    # issue 17, after every form that records stock (the sign-in forms that follow record nothing): the
    # first valid submission makes the registrant's root credential (this login holds the
    # administrator role), and from then on every entry needs its signers' own keys
    Spec("/ui/{dea}/me/signing-key", lambda w: "me/signing-key", fill=lambda w, f: {"password": PASSWORD}),
    # "Add a passkey" (step 1 of its enrolment; steps 2 and 3 need an authenticator's answers:
    # tests/web/test_pages_signatures.py), offered once the root exists
    Spec("/ui/{dea}/me/passkeys", lambda w: "me/signing-key", prepare=World.ensure_root),
    Spec("/ui/{dea}/login", lambda w: "login", fill=lambda w, f: {"username": USER, "password": PASSWORD}),
    Spec("/ui/{dea}/logout", lambda w: "", prepare=World.login),
    Spec("/ui/{dea}/password", lambda w: "password", prepare=World.reset_password,
         fill=lambda w, f: {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                            "new_password_again": NEW_PASSWORD}, pairs=(("new_password", "new_password_again"),)),
]


# POST routes the sweep does not send, each with why and where its bad input is tested instead
EXEMPT = {
    # issue 21 pages: the two uploads take multipart/form-data (a file), which this sweep does not build
    # (every body here is urlencoded, and "a multipart body" is one of its bad bodies); their bad input
    # (too large, empty, not a document, no title, CSRF, roles) is in tests/web/test_backfill_pages.py
    "/ui/{dea}/documents/new": "multipart upload: tests/web/test_backfill_pages.py",
    "/ui/{dea}/backfill": "multipart upload: tests/web/test_backfill_pages.py",
}


# --- sending and checking ---------------------------------------------------------------------------


def encode(pairs: list[tuple[str, str]]) -> bytes:
    """A form body; a lone surrogate goes as the bytes a broken client would send (invalid UTF-8)."""
    return "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in pairs).encode("ascii")


def _quoted(s: str) -> str:
    """``s`` percent-encoded; short values memoized (a form's valid ones, often 250 fields, are
    sent again with each of its bad values)."""
    return _quoted_short(s) if len(s) <= 1000 else quote_plus(s.encode("utf-8", "surrogatepass"), safe="")


@functools.lru_cache(maxsize=8192)
def _quoted_short(s: str) -> str:
    return quote_plus(s.encode("utf-8", "surrogatepass"), safe="")


ERROR_ELEMENT = re.compile(r'<p class="error(?:-block)?"(?: [^>]*?id="([^"]*)")?[^>]*>(.*?)</p>', re.S)
ERROR_SUMMARY = re.compile(r'<div class="error-summary".*?<ul>(.*?)</ul>', re.S)


def messages(r) -> list[tuple[str, str]]:
    """(element id, text) of every error message the answer shows."""
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("application/problem+json"):
        detail = r.json().get("detail")
        return [("", detail)] if isinstance(detail, str) and detail else []
    if not ctype.startswith("text/html"):
        return []
    out = [(i or "", unescape(re.sub(r"<[^>]+>", "", t)).strip()) for i, t in ERROR_ELEMENT.findall(r.text)]
    for block in ERROR_SUMMARY.findall(r.text):
        out += [("", unescape(re.sub(r"<[^>]+>", "", li)).strip()) for li in re.findall(r"<li>(.*?)</li>", block, re.S)]
    return [(i, t) for i, t in out if t]


def companions(name: str) -> list[str]:
    """Fields a refusal of ``name`` may be shown on instead: a login's or a witness's username and
    password are refused together ("wrong username or password", on purpose not saying which)."""
    if name.endswith("username"):
        return [name[: -len("username")] + "password"]
    if name.endswith("password") and not name.startswith("new_"):
        return [name[: -len("password")] + "username"]
    return []


def names(msgs: list[tuple[str, str]], targets: list[tuple[str, str]], value: str | None) -> bool:
    """Does a message name one of the (field, label) targets (by the id of the element showing it,
    its name, the name's last part for a list row's field, or its label), or quote the bad value
    (``value``: given for ids the page holds, which have no label a person would know)?"""
    for name, label in targets:
        words = {re.sub(r"[-_]", " ", name).lower()}
        leaf = re.sub(r"^\w+-\d+-", "", name)
        if leaf != name and len(leaf) >= 3:
            words.add(re.sub(r"[-_]", " ", leaf).lower())
        if label:
            words.add(label.lower())
        for mid, text in msgs:
            if mid in (f"f-{name}-error", f"f-{name}") or mid.endswith(f"-{name}-error"):
                return True
            low = re.sub(r"[-_]", " ", text).lower()
            if name.lower() in text.lower() or any(w in low for w in words):
                return True
    stripped = (value or "").strip()
    return len(stripped) >= 3 and any(stripped in text for _, text in msgs)


@dataclass
class Case:
    what: str
    field: str | None  # the field the refusal must name (None: a message about the body or the token)
    bad: bool
    build: Callable[[list[tuple[str, str]]], list[tuple[str, str]]] | None = None  # the pairs to send
    body: bytes | None = None  # or these bytes
    content_type: str = FORM
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    value: str | None = None  # an id the page holds: a message quoting it names what is wrong
    expect: Callable[[Any], str | None] | None = None  # a check of its own (CSRF, bodies)


class Run:
    def __init__(self, world: World):
        self.w = world
        self.problems: list[str] = []
        self.accepted: list[str] = []
        self.requests = 0
        self.cases = 0
        self.fields = 0
        self.n = 0

    # the current form of a spec, opened afresh after anything was recorded
    def open(self, spec: Spec) -> None:
        w = self.w
        spec.prepare(w)
        url = UI + spec.page(w)
        r = w.client.get(url, follow_redirects=False)
        self.requests += 1
        if r.status_code == 303 and "/login" in r.headers.get("location", ""):
            w.login()
            r = w.client.get(url, follow_redirects=False)
            self.requests += 1
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        p = parse(r.text)
        action = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(spec.route).replace(r"\{dea\}", DEA))
                            + "$")
        forms = [f for f in p.forms if action.match(f.action)]
        if spec.key:
            forms = [f for f in forms if spec.key(w) in {c.value for c in f.controls if c.type == "hidden"}]
        assert forms, f"no form posting to {spec.route} on {url}"
        self.spec, self.form, self.labels, self.action = spec, forms[0], p.labels, forms[0].action
        self.base = self.baseline()

    def baseline(self) -> list[tuple[str, str]]:
        """The valid submission: what the page holds, the ticked boxes, and what a person types."""
        fill = self.spec.fill(self.w, self.form)
        out: list[tuple[str, str]] = []
        done: set[str] = set()
        for c in self.form.controls:
            if c.disabled:
                continue
            if c.name in fill:
                v = fill[c.name]
                if isinstance(v, list):  # checkboxes: the chosen values
                    if c.value in v:
                        out.append((c.name, c.value))
                elif c.type in ("checkbox", "submit") or c.tag == "button":
                    if v == c.value or (c.type == "checkbox" and c.name not in done):
                        out.append((c.name, v if c.type == "checkbox" else c.value))
                elif c.name not in done:
                    out.append((c.name, v))
                done.add(c.name)
            elif c.type == "checkbox":
                if c.checked:
                    out.append((c.name, c.value))
            elif c.type != "submit" and c.tag != "button":
                out.append((c.name, c.value))
        # a value the form holds only after a step (the patient, picked by a search), sent as that step sends it
        out += [(k, v) for k, v in fill.items() if k not in done and isinstance(v, str)
                and all(c.name != k for c in self.form.controls)]
        return out

    def fresh(self, pairs: list[tuple[str, str]], keep: str | None) -> list[tuple[str, str]]:
        """A new form key (and invoice number, TOTP code) per request, but for the field under test."""
        self.n += 1
        new = {"form_key": f"web-fuzz-{self.n}", "invoice_number": f"INV-FUZZ-{self.n}"}
        if self.spec.route.endswith("/login"):
            new["totp"] = self.w.api.totp(USER) or ""
        out = []
        for k, v in pairs:
            if k != keep and k in new:
                v = new[k]
            out.append((k, v))
        return out

    def send(self, case: Case) -> None:
        w = self.w
        pairs = self.fresh(case.build(list(self.base)) if case.build else list(self.base), case.field)
        body = case.body if case.body is not None else encode(pairs)
        before = w.count()
        r = w.client.post(case.url or self.action, content=body, headers={"Content-Type": case.content_type,
                                                                            **case.headers}, follow_redirects=False)
        self.requests += 1
        self.cases += 1
        self.check(case, r, before)

    def check(self, case: Case, r, before: int) -> None:
        what = f"{self.spec.route} {case.what}"
        fail = []
        ctype = r.headers.get("content-type", "")
        text = r.text if ctype.startswith(("text/", "application/problem+json", "application/json")) else ""
        if r.status_code >= 500:
            fail.append(f"status {r.status_code}")
        if TRACE.search(text):
            fail.append(f"exception text in the answer: {TRACE.search(text).group(0)!r}")
        msgs = messages(r)
        refused = r.status_code >= 400 or (r.status_code == 200 and ctype.startswith("text/html") and bool(msgs))
        if refused:
            if w_after := self.w.count() - before:
                fail.append(f"refused but {w_after} entries written")
            if not msgs:
                fail.append("refused without a message")
            elif case.expect is not None:
                why = case.expect(r)
                if why:
                    fail.append(why)
            elif case.bad and case.field is not None:
                related = [b for a, b in self.spec.pairs if a == case.field] + companions(case.field)
                targets = [(n, self.labels_of(n)) for n in [case.field, *related]]
                if not names(msgs, targets, case.value):
                    fail.append(f"the messages do not name {case.field}: {[t for _, t in msgs][:3]}")
        elif case.bad:
            fail.append(f"accepted ({r.status_code} {r.headers.get('location', '')})")
        else:
            self.accepted.append(f"{what} -> {r.status_code}")
        if fail:
            self.problems.append(f"{what}: {'; '.join(fail)} :: {r.status_code} {text[:200]!r}")
        if not refused:  # recorded (or logged in, out...): open the form afresh for the next value
            self.open(self.spec)

    def labels_of(self, name: str) -> str:
        if name == "csrf_token":
            return "security token"
        ids = {c.id for c in self.form.controls if c.name == name}
        return next((self.labels[i] for i in ids if i in self.labels), "")

    # the cases of one form
    def field_cases(self) -> list[Case]:
        out = []
        base = dict(self.base)
        fields = fields_of(self.form, self.labels, self.base)
        self.fields += len(fields)
        paired = {b for _, b in self.spec.pairs}
        for f in fields:
            if f.name in paired:
                continue
            together = [f.name] + [b for a, b in self.spec.pairs if a == f.name]
            valid = base.get(f.name, f.options[0] if f.options else "")
            for label, v, bad in values_for(f, self.w, self.spec.new):
                value = v(valid) if callable(v) else v
                quoted = value if f.kind in ("hidden", "select", "checkbox") else None
                out.append(Case(f"{f.name}={label}", f.name, bad, build=_setter(together, value, f.group), value=quoted))
            out.append(Case(f"{f.name} left out", f.name, f.required and f.kind != "checkbox",
                            build=lambda p, ns=together: [(k, x) for k, x in p if k not in ns]))
            if f.group:  # a checkbox group: the same box twice
                out.append(Case(f"{f.name} twice, same value", f.name, False,
                                build=lambda p, n=f.name, v=valid: [*p, (n, v)]))
            else:
                other = "1" if valid != "1" else "2"
                out.append(Case(f"{f.name} twice, two values", f.name, not read_when_needed(f.name),
                                build=lambda p, n=f.name, v=valid, o=other: [*[(k, x) for k, x in p if k != n],
                                                                             (n, v), (n, o)]))
        return out

    def body_cases(self) -> list[Case]:
        def about_body(r) -> str | None:
            text = " ".join(t for _, t in messages(r)).lower()
            ok = ("form post", "could not be read", "security token", "larger than", "not valid utf-8",
                  "nul character")
            return None if any(k in text for k in ok) else f"no message about the body: {text[:200]!r}"

        pairs = self.fresh(list(self.base), None)
        valid = encode(pairs)
        csrf = dict(pairs).get("csrf_token", "")
        cases = [
            Case("body 1.1 MB", None, True, build=lambda p: [*p, ("notes", "x" * HUGE_BODY)], expect=about_body),
            Case("body JSON", None, True, body=b'{"csrf_token": "' + csrf.encode() + b'"}',
                 content_type="application/json", expect=about_body),
            Case("body multipart", None, True, body=b"--x\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
                 + csrf.encode() + b"\r\n--x--\r\n", content_type="multipart/form-data; boundary=x", expect=about_body),
            Case("body text/plain", None, True, body=valid, content_type="text/plain", expect=about_body),
            Case("body no content type", None, True, body=valid, content_type="", expect=about_body),
            Case("body not UTF-8", None, True, body=valid + b"&notes=\xff\xfe", expect=about_body),
            Case("body over the field limit", None, True,
                 body=valid + b"".join(b"&f%d=1" % i for i in range(MAX_FIELDS + 1)),
                 expect=about_body),
            Case("body garbage", None, True, body=b"\x00\x01%%%==&&=%zz", expect=about_body),
            Case("body empty", None, True, body=b"", expect=about_body),
        ]
        return cases

    def csrf_cases(self) -> list[Case]:
        def refused(*words: str):
            def check(r) -> str | None:
                text = " ".join(t for _, t in messages(r)).lower()
                if r.status_code != 403 or not any(x in text for x in words):
                    return f"expected a 403 about the {' or '.join(words)}, got {r.status_code}: {text[:200]!r}"
                return None
            return check

        other = csrf_for_token("csl_not-this-session")
        drop = lambda p: [(k, v) for k, v in p if k != "csrf_token"]  # noqa: E731
        return [
            Case("CSRF left out", "csrf_token", True, build=drop, expect=refused("security token")),
            Case("CSRF empty", "csrf_token", True, build=lambda p: [*drop(p), ("csrf_token", "")],
                 expect=refused("security token")),
            Case("CSRF wrong", "csrf_token", True, build=lambda p: [*drop(p), ("csrf_token", "0" * 64)],
                 expect=refused("security token")),
            Case("CSRF of another session", "csrf_token", True, build=lambda p: [*drop(p), ("csrf_token", other)],
                 expect=refused("security token")),
            Case("CSRF with NUL", "csrf_token", True, build=lambda p: [(k, v + "\x00" if k == "csrf_token" else v)
                                                                       for k, v in p]),
            Case("from another site", "csrf_token", True, build=lambda p: p,
                 headers={"Origin": "https://evil.example"}, expect=refused("another site")),
        ]

    def path_cases(self) -> list[Case]:
        if "{session_id}" not in self.spec.route:
            return []
        w = self.w
        return [Case(f"path session_id={label}", "session_id", True, build=lambda p: p, value=sid,
                     url=UI + "counts/" + sid, expect=lambda r: None)
                for label, sid in [("no such count", "C999999"), ("other registrant's count", w.other_session),
                                   ("not a count id", "X1"), ("19 digits", "C" + "9" * 19)]]


def _setter(names_: list[str], value: str, group: bool):
    def build(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out, placed = [], set()
        for k, v in pairs:
            if k in names_:
                if k not in placed:
                    out.append((k, value))
                    placed.add(k)
                continue
            out.append((k, v))
        for k in names_:
            if k not in placed:
                out.append((k, value))
        return out
    return build


#: The sweep runs in two files, this one (the forms before the preparations) and
#: test_bad_input_web_part2.py (the preparations on: the slowest pages, about half the time), each
#: on a World of its own, so that ``--dist loadfile`` can give the halves to two workers.
SPLIT = next(i for i, s in enumerate(FORMS) if s.route == "/ui/{dea}/preparations")
PARTS = (FORMS[:SPLIT], FORMS[SPLIT:])


def test_every_form_route_is_fuzzed(ledger):
    api = build_api(ledger)
    posts = {path for method, path in page_routes(api.client.app) if method == "POST"}
    swept = {s.route for s in FORMS} | set(EXEMPT)
    assert posts == swept, f"POST routes without a row in FORMS: {sorted(posts - swept)}; rows of no route: " \
                           f"{sorted(swept - posts)}"
    # every row is swept by exactly one of the two files, in FORMS' order
    assert [s for part in PARTS for s in part] == FORMS and all(PARTS)


def test_bad_input_on_every_form(ledger):
    """The forms of ``PARTS[0]``; ``PARTS[1]``: test_bad_input_web_part2.py."""
    sweep(ledger, PARTS[0])


def sweep(ledger, forms: list[Spec]) -> None:
    started = time.perf_counter()
    w = World(ledger)
    run = Run(w)
    per_form: dict[str, int] = {}
    only = [x for x in os.environ.get("CSLEDGER_WEB_FUZZ_ONLY", "").split(",") if x]  # to sweep a few rows
    for spec in forms:
        if only and not any(x in spec.route for x in only):
            continue
        w.login()
        run.open(spec)
        before = run.requests
        for case in run.field_cases() + run.path_cases() + run.body_cases() + run.csrf_cases():
            run.send(case)
        # last, the valid submission itself: it must be recorded, so the refusals above were the bad values'
        ok = Case("the valid submission", None, False)
        pairs = run.fresh(list(run.base), None)
        r = w.client.post(run.action, content=encode(pairs), headers={"Content-Type": FORM}, follow_redirects=False)
        run.requests += 1
        if not (r.status_code in (200, 303) and not messages(r)):
            run.problems.append(f"{spec.route} {ok.what} was not accepted: {r.status_code} "
                                f"{[t for _, t in messages(r)][:3]} {r.text[:300]!r}")
        per_form[spec.route] = run.requests - before
    elapsed = time.perf_counter() - started
    for p in run.problems:
        print("PROBLEM", p[:500])
    print(f"\n{ledger.dialect}: {len(forms)} forms, {run.fields} fields, {run.cases} bad inputs, {run.requests} "
          f"requests in {elapsed:.1f} s; accepted (could be valid): {len(run.accepted)}")
    for route, n in per_form.items():
        print(f"  {route}: {n} requests")
    for a in run.accepted:
        print("  accepted:", a)
    assert not run.problems, f"{len(run.problems)} problems:\n" + "\n".join(p[:500] for p in run.problems)
