"""Bad input on every HTTP operation, driven by the app's own OpenAPI document: a new endpoint is
swept as soon as its request body has an example (and fails until that example is accepted).

**Every write route is shown to accept before it is shown to refuse.** For each write operation
of ``/openapi.json``, in the document's order:

1. Its preconditions are made (``PREPARE``, by route name): a fresh vial for the stock commands,
   a real count discrepancy (counted by two other nurses, one vial short) to resolve, a real
   administration to correct or to waste the rest of, stock dispensed so a transfer stays under
   the 5% rule, a quarantined vial to release, an open alert, an open count session, a staff
   member holding the role to revoke, a registrant without stock for an initial inventory, a new
   NDC / username / invoice number where those must be new. The documented example is sent with
   only those ids, its times (moved into the last hour) and the test's passwords substituted,
   and must be **accepted (2xx)**. Witnessed routes get what the route reads (learned from its
   FastAPI dependencies): one ``Witness-Assertion`` token for ``/administrations``, ``/wastes``
   and ``/counts/{id}/submissions``, two comma-separated tokens (two different people) for
   ``/destructions``, each signed for the exact bytes of that request, for every request.
2. Each field in turn (nested objects and list items included, e.g. ``lines[0].ndc``) gets the
   values fitting its kind: quantities (NaN, infinities, ``-0``, ``1e309``, ``1,5``, ``10^20``,
   four decimals (issue 19: mL take three), floats, booleans, negative, fullwidth), times (year 1, year 9999, month 13, no
   zone, far future, a number), dates, DEA numbers and NDCs (check digit, Cyrillic and fullwidth
   look-alikes), zero-width space, NUL, lone surrogate, empty, one character over ``maxLength``,
   integers out of range, lists empty or one item too long, wrong JSON types, an unknown field
   inside a nested object, the field left out; ids that are well formed but name nothing
   (``V999999-1``, entry 999999...); one 10 MB string (413). Then malformed bodies (empty,
   truncated, not UTF-8, duplicate keys, 10,000 levels deep, top-level array/number/string/null,
   wrong content type, unknown field), bad ``Idempotency-Key`` headers, bad and missing witness
   assertions (one witness where two are needed, the same person twice, an assertion for another
   body), and bad path parameters.
3. The unmodified body is sent again and must be accepted again: every refusal in between came
   from a state where the body is accepted, so it is the variant's doing.

After every accepted request (the unmodified body, or a variant that was valid) the route's
preconditions are made again, so the next variant meets them too. The ledger signs checkpoints
and runs the alert rules on every write, as under ``csledger serve``. A field's kind comes from
its schema and its example: a quantity's pattern is not in the OpenAPI document, so a string
field whose example looks like ``"10.00"`` is a quantity. Nothing is random.

**What each answer must be.** Never a 5xx or a traceback; a 4xx is ``application/problem+json``
with a ``detail``, and writes nothing (entry count unchanged). A value that breaks the field's
schema or is wrong everywhere (``bad``) must be refused *by validation*: ``422`` whose
``errors[].field`` names the mutated field or a part of it (naming only the object or list
holding it does not count). A 401,
403, 404 or 409 for it is a failure, except where the variant is about exactly that: a well
formed id of nothing (404 naming the field), the credentials of a login or witness sign-in (401),
a witness header (401 naming ``Witness-Assertion``), the same witness twice (409 naming
``witnesses``), another registrant's DEA number in the path (401/403/404), a path that routes
nowhere (404/405), 10 MB (413). A value that could be right (a null or a missing optional field,
Cyrillic in a name, a lot expiring in 9999) may be refused the same way or accepted; when
accepted it must have been genuinely valid: the schema allows it and it was recorded as sent (the
appended entries hold it; for a patient, the registry read back; for a password, a login with
it), or it is null / left out where the schema makes the field optional. Reads: every GET is first
answered 200 with its required parameters, then bad path and query parameters must be refused
by a 422 naming the parameter unless the schema allows the value (then 200, or 404 for an id of
nothing).

**Shown to bite** (2026-12-06, once, in a scratch copy of the tree, then deleted): in
``ledger/services/administration.py`` ``record_waste`` read ``ml`` with ``Decimal(cmd.ml)``
instead of ``parse_amount`` (no scale, range or sign check; the schema's pattern still refuses
signs and letters). This sweep failed on both backends with exactly two problems:
``POST .../wastes ml="1.234": status 409; expected 422 naming ml`` and the same for
``ml="10^20"`` (the bad amount went past validation and was refused by the stock check instead).
The sweep as it was before this rewrite, run on the same broken copy, passed on both backends:
each of its ``/wastes`` requests carried both witness tokens in one header and was refused
``401 witness-assertion-invalid`` before the body was read, and any 4xx counted as a refusal.

**Product defects** it found are listed in ``KNOWN_DEFECTS`` with the exact cases that show
them: printed on every run, and the test fails when one of them stops showing (fixed: remove it).
"""

from __future__ import annotations

import hashlib
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

from api.http import deps
from ledger import services
from ledger.domain.alerts import Candidate
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    CountLineInput,
    DrawInput,
    EnrollStaff,
    QuarantineStock,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPatient,
    StartCount,
    StoreDocument,
    SubmitCount,
)
from ledger.domain.identifiers import dea_check_digit
from ledger.integrity.canonical import decode
from ledger.services import alerts as alert_service
from ledger.services import stock
from ledger.services.alerts import attach_alert_rules
from ledger.settings import Settings
from ledger.storage.log import attach
from ledger.storage.patient_keys import PatientKeys
from ledger.storage.store import entries_t, entry_count
from tests.api.conftest import PASSWORD, PATIENT_KEY, Api, build_api
from tests.api.roles_all import ALL
from tests.conftest import BACKENDS, DEA, KETAMINE_10, KETAMINE_50, Clinic
from tests.robustness.http_bodies import (
    MISSING,
    Field,
    Spec,
    Variant,
    dumps,
    get_at,
    holds,
    malformed_bodies,
    names,
    set_at,
    variants,
)

USER = "allroles"
NEW_PASSWORD = "seven calm river stones"
WITNESSES = ("wanda", "wes")  # sign the witness assertions; nurse + pharmacist, never the actor
#: Enrolments and role grants are approved by a second manager (issue 15): build_api's Morgan.
APPROVED = frozenset({"enroll_staff", "grant_role"})
APPROVERS = ("morgan",)
#: A second person signs these on the recorder's device (issue 15), read as an optional witness:
#: left out, the service refuses naming ``witness`` (the Form 106 example takes a vial off the book).
SECOND_PERSON = frozenset({"resolve_discrepancy", "record_breakage", "report_theft_or_loss", "transfer_stock",
                           "return_stock", "open_package", "take_inventory"})
BIG = 10 * 1024 * 1024
JSON = "application/json"


# --- the clinic under test ---------------------------------------------------------------------


def valid_dea(n: int) -> str:
    """A well-formed DEA number of a practitioner, n-th of a series (its check digit right)."""
    digits = f"{700000 + n:06d}"
    return "FC" + digits + str(dea_check_digit(digits))


class World:
    """A clinic whose preconditions are made on demand, fresh for each route and again after
    each accepted request (``PREPARE``)."""

    def __init__(self, api: Api):
        self.api = api
        self.ledger = led = api.ledger
        self.clinic = c = api.clinic
        app = api.client.app  # the registry key the routes use (they load it on first use otherwise)
        self.patient_keys = app.state.patient_keys = PatientKeys.from_settings(app.state.settings)
        c.enroll("Everyone Everything", USER, *ALL)  # approved by a second manager (issue 15)
        api.set_password(USER)
        for w in WITNESSES:
            c.enroll(w.title() + " Witness", w, "nurse", "pharmacist")
            api.set_password(w)
        self.tess = c.enroll("Tess Throwaway", "tess", "nurse").staff_id
        api.set_password("tess")
        self.serial = count(1)
        # One moment for every event: in the last hour, and in this calendar year at the clinic
        # (the 5% transfer rule counts the local year), so just after New Year it is after midnight.
        now = datetime.now(UTC)
        year_start = datetime(now.astimezone(zoneinfo.ZoneInfo("America/Chicago")).year, 1, 1,
                              tzinfo=zoneinfo.ZoneInfo("America/Chicago"))
        self.when = max(now - timedelta(minutes=30), year_start.astimezone(UTC) + (now - year_start) / 2)
        self.pool: list[str] = []
        self.patient = services.register_patient(led, c.nurse, RegisterPatient(
            "Jordan Example", AddressInput("12 Elm St", "Austin", "TX", "78702")),
            keys=self.patient_keys)["patient_id"]
        self.ids = {"supplier_id": c.supplier_id, "patient_id": self.patient, "staff_id": self.tess, "dea": DEA,
                    "seq": "1", "vial_id": self.vials(1)[0], "session_id": self.count_session(),
                    "kind": "roles",  # a report kind (issue 20) that needs no inventory
                    "container_id": _preparation(self),  # issue 21: a bag prepared, its label printable
                    "sha256": services.store_document(led, c.pharmacist, StoreDocument(
                        b"%PDF-1.7 the sweep's document", "application/pdf", "Sweep"))["sha256"]}

    # -- sessions -------------------------------------------------------------------------------

    def headers(self, dea: str = DEA, *, fresh: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api.token(USER, dea, fresh=fresh)}"}

    def count(self) -> int:
        with self.ledger.reading() as c:
            return entry_count(c)

    def entries(self, dea: str, seqs: list[int]) -> list[dict]:
        if not seqs:
            return []
        with self.ledger.reading() as c:
            rows = c.execute(sa.select(entries_t.c.canonical).where(
                entries_t.c.registrant == dea, entries_t.c.seq.in_(seqs))).scalars().all()
        return [decode(bytes(r)) for r in rows]

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.serial)}"

    # -- stock ----------------------------------------------------------------------------------

    def vials(self, n: int) -> list[str]:
        """``n`` sealed vials of ketamine 50 mg/mL that nothing else uses."""
        if len(self.pool) < n:
            self.pool += services.receive_stock(self.ledger, self.clinic.nurse, ReceiveStock(
                self.clinic.supplier_id, self.unique("FUZZ-POOL-"), self.when,
                (ReceivedLineInput(KETAMINE_50, max(100, n), "KA2611", "2028-06-30"),)))["vial_ids"]
        out, self.pool = self.pool[:n], self.pool[n:]
        return out

    def administration(self, draw: str, given: str, vial: str | None = None) -> tuple[str, int, str]:
        """An infusion by a nurse: (administration id, its seq, the vial drawn from)."""
        vial = vial or self.vials(1)[0]
        r = services.administer_dose(self.ledger, self.clinic.nurse, AdministerDose(
            self.patient, "FB7654329", "80.00", "0.50", (DrawInput(vial, draw),), given, self.when, self.when))
        return r["administration_id"], r["entries"][0]["seq"], vial

    def transferable(self) -> list[str]:
        """A sealed vial the 5% rule lets go: 20 vials dispensed first (1 in 21 transferred)."""
        vs = self.vials(21)
        services.administer_dose(self.ledger, self.clinic.nurse, AdministerDose(
            self.patient, "FB7654329", "80.00", "0.50", tuple(DrawInput(v, "10.00") for v in vs[:20]), "200.00",
            self.when, self.when))
        return vs[20:]

    def quarantined(self) -> list[str]:
        vs = self.vials(1)
        services.quarantine_stock(self.ledger, self.clinic.nurse, QuarantineStock(tuple(vs), "seal broken"))
        return vs

    def count_session(self) -> str:
        return services.start_count(self.ledger, self.clinic.nurse, StartCount((KETAMINE_50,), blind=True))["session_id"]

    def discrepancy(self) -> str:
        """An open discrepancy a manager who did not count may resolve as breakage: two nurses
        count the 10 mg/mL product (used by nothing else) one sealed vial short."""
        c = self.clinic
        services.receive_stock(self.ledger, c.nurse, ReceiveStock(c.supplier_id, self.unique("FUZZ-K10-"), self.when, (
            ReceivedLineInput(KETAMINE_10, 1, "KB2611", "2028-06-30"),)))
        sealed = len(stock.vials(self.ledger, DEA, state="sealed", ndc_key=ndc_key(KETAMINE_10)))
        sid = services.start_count(self.ledger, c.nurse, StartCount((KETAMINE_10,), blind=True))["session_id"]
        r = services.submit_count(self.ledger, c.nurse, SubmitCount(sid, (CountLineInput(KETAMINE_10, sealed - 1),),
                                                                     self.when), second_counter=c.nurse2)
        return r["discrepancy_ids"][0]

    def alert(self) -> str:
        n = next(self.serial)
        return alert_service.raise_alerts(self.ledger, DEA, [Candidate(
            alert_key=f"http-fuzz:{n}", rule="late_entry", severity="medium", subjects=(self.clinic.nurse.staff_id,),
            summary=f"entry {n} was recorded 30.00 h after the event", parameters={"late_entry_hours": "24"},
            evidence_seqs=(1,), figures={"hours_late": "30.00"})])[0]

    def staff(self, *roles: str) -> str:
        u = self.unique("spare")  # a printed name like an existing one is refused: each its own
        return self.clinic.enroll(f"Sam Spare {u}", u, *roles).staff_id

    def registrant(self) -> str:
        """A new registrant without stock (for an initial inventory), with our login."""
        dea = valid_dea(next(self.serial))
        other = Clinic(self.ledger, dea=dea)
        for w in WITNESSES:  # issue 20: every inventory is witnessed (enrolled first: alone, no approver)
            services.enroll_staff(self.ledger, other.admin, EnrollStaff(w.title() + " Witness", w,
                                                                        ("nurse", "pharmacist")))
            self.api.set_password(w, dea=dea)
        services.enroll_staff(self.ledger, other.admin, EnrollStaff("Everyone Everything", USER, ALL))
        self.api.set_password(USER, dea=dea)
        return dea


def ndc_key(ndc: str) -> str:
    from ledger.domain.identifiers import parse_ndc

    return parse_ndc(ndc).key


@dataclass
class Prep:
    """A route's preconditions: values put into the example (by key, anywhere in the body),
    path parameters, and the registrant to send it to."""

    body: dict[str, Any] = field(default_factory=dict)
    path: dict[str, str] = field(default_factory=dict)
    dea: str = DEA


def _newcomer(username: str) -> Prep:
    return Prep(body={"username": username, "printed_name": f"New Comer {username}"})


def _correction(w: World) -> Prep:
    _, seq, vial = w.administration("2.00", "2.00")  # 8.00 mL left: room to add the example's 1.80
    return Prep(body={"corrects_seq": seq, "vial_id": vial})


def _esketamine(w: World) -> Prep:
    """Issue 19: two sealed Spravato devices (the product added once) for the session, and
    times that meet the REMS (observed 2 h 05 min, ending at the sweep's moment)."""
    from ledger.domain.commands import AddProduct

    if not getattr(w, "spravato", False):
        services.add_product(w.ledger, w.clinic.admin, AddProduct(
            "50458-0028-02", "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray", "140.00", "0.20"))
        w.spravato = True
    at = w.when - timedelta(hours=2, minutes=5)
    ids = services.receive_stock(w.ledger, w.clinic.nurse, ReceiveStock(
        w.clinic.supplier_id, w.unique("FUZZ-SPR-"), at - timedelta(hours=1),
        (ReceivedLineInput("50458-0028-02", 2, "SPR2611", "2028-06-30"),)))["vial_ids"]
    return Prep(body={"patient_id": w.patient, "device_ids": ids, "administered_at": at.isoformat(),
                      "observation_started_at": at.isoformat(), "observation_ended_at": w.when.isoformat()})


def _preparation(w: World, *, infused: bool = False) -> str:
    """Issue 19: a bag prepared 20 minutes before the sweep's moment (well within its 4-hour
    beyond-use time), infused from 15 to 10 minutes before it when ``infused``; its id."""
    from ledger.domain.commands import InfusePreparation, MakePreparation

    at = w.when - timedelta(minutes=20)
    pid = services.make_preparation(w.ledger, w.clinic.nurse, MakePreparation(
        w.patient, "FB7654329", "80.00", "0.50", (DrawInput(w.vials(1)[0], "0.80"),), "0.9% sodium chloride",
        "100.00", "bag", "100.80", at))["preparation_id"]
    if infused:
        services.infuse_preparation(w.ledger, w.clinic.nurse, InfusePreparation(
            pid, "70.00", at + timedelta(minutes=5), at + timedelta(minutes=10)))
    return pid


def _loss_report(w: World) -> int:
    """Issue 20: a theft or loss report of one vial, discovered an hour before the sweep's moment,
    by a manager with the pharmacist as second person, for a notice or a filing; its seq."""
    from ledger.domain.commands import LostVialInput, ReportTheftOrLoss

    if getattr(w, "loss_reporter", None) is None:
        w.loss_reporter = w.clinic.enroll("Lou Reporter", "lou", "manager")
    r = services.report_theft_or_loss(w.ledger, w.loss_reporter, ReportTheftOrLoss(
        w.when - timedelta(hours=1), "night_break_in", False, 0, "10.00", lost=(LostVialInput(w.vials(1)[0]),),
        narrative="safe found open", corrective_measures="code changed", contact_name="Lou Reporter",
        contact_phone="512-555-0142"), witness=w.clinic.pharmacist)
    return r["entries"][0]["seq"]


def _sealed_carton(w: World) -> Prep:
    """Issue 19: a sealed carton of 10 vials (KETAMINE_50's package), received for the opening."""
    pid = services.receive_stock(w.ledger, w.clinic.nurse, ReceiveStock(
        w.clinic.supplier_id, w.unique("FUZZ-CARTON-"), w.when - timedelta(minutes=10),
        (ReceivedLineInput(KETAMINE_50, None, "KA2611", "2028-06-30", packages=1),)))["package_ids"][0]
    return Prep(path={"package_id": pid})


#: What each write route needs before its example can be accepted, by FastAPI route name. A new
#: write route fails ``test_every_write_route_has_its_preconditions`` until it has a row.
PREPARE: dict[str, Callable[[World], Prep]] = {
    "login": lambda w: Prep(),  # the example's own user (nora), with the test's password
    "logout": lambda w: Prep(),
    "change_own_password": lambda w: Prep(body={"new_password": NEW_PASSWORD}),  # the example's is ours
    "set_staff_password": lambda w: Prep(path={"staff_id": w.tess}),
    "revoke_staff_sessions": lambda w: Prep(path={"staff_id": w.tess}),
    "clear_sign_in_throttle": lambda w: Prep(path={"staff_id": w.tess}),
    "create_witness_assertion": lambda w: Prep(),  # the example's own witness (ned)
    "enroll_staff": lambda w: _newcomer(w.unique("newcomer")),  # "nora" and "Nora Nurse" are taken
    "grant_role": lambda w: Prep(path={"staff_id": w.staff("nurse")}),
    "revoke_role": lambda w: Prep(path={"staff_id": w.staff("nurse", "pharmacist")}),
    "add_product": lambda w: Prep(body={"ndc": f"42023-{2000 + next(w.serial):04d}-10"}),  # the example's is added
    "add_supplier": lambda w: Prep(),
    "record_supplier_registration": lambda w: Prep(path={"supplier_id": w.clinic.supplier_id}),  # a renewal
    "register_prescriber": lambda w: Prep(),  # the example's DEA number again: a renewal (issue 19)
    "take_inventory": lambda w: Prep(dea=w.registrant()),  # an initial inventory needs a registrant without stock
    "receive_stock": lambda w: Prep(body={"invoice_number": w.unique("GMS-2026-"), "supplier_id": w.clinic.supplier_id}),
    "set_policy": lambda w: Prep(),
    "register_patient": lambda w: Prep(),
    "change_patient_details": lambda w: Prep(path={"patient_id": w.patient}),
    "administer_dose": lambda w: Prep(body={"patient_id": w.patient, "vial_id": w.vials(1)[0]}),
    "record_waste": lambda w: Prep(body={"administration_id": w.administration("1.00", "0.80")[0]}),
    "start_count": lambda w: Prep(),
    "submit_count": lambda w: Prep(path={"session_id": w.count_session()}),
    "resolve_discrepancy": lambda w: Prep(path={"discrepancy_id": w.discrepancy()}),
    "record_breakage": lambda w: Prep(body={"vial_id": w.vials(1)[0]}),  # the example spills 1.50 mL of it
    "record_esketamine_session": _esketamine,  # issue 19
    "open_package": _sealed_carton,  # issue 19, package hierarchy
    # issue 19: diluted infusions (a fresh bag for each: one infusion and one waste per bag)
    "make_preparation": lambda w: Prep(body={"patient_id": w.patient, "vial_id": w.vials(1)[0]}),
    "infuse_preparation": lambda w: Prep(path={"preparation_id": _preparation(w)}),
    "waste_preparation": lambda w: Prep(path={"preparation_id": _preparation(w, infused=True)}),
    "destroy_stock": lambda w: Prep(body={"vial_ids": w.vials(1)}),
    "transfer_stock": lambda w: Prep(body={"vial_ids": w.transferable()}),
    "return_stock": lambda w: Prep(body={"vial_ids": w.vials(1)}),
    "report_theft_or_loss": lambda w: Prep(body={"vial_id": w.vials(1)[0]}),
    # issue 20: a fresh loss report for each (one notice and one filing per report)
    "record_dea_notice": lambda w: Prep(body={"loss_report_seq": _loss_report(w)}),
    "record_form_106_filing": lambda w: Prep(body={"loss_report_seq": _loss_report(w)}),
    "correct_entry": _correction,
    "quarantine_stock": lambda w: Prep(body={"vial_ids": w.vials(1)}),
    "release_quarantine": lambda w: Prep(body={"vial_ids": w.quarantined()}),
    "acknowledge_alert": lambda w: Prep(path={"alert_id": w.alert()}),
    "resolve_alert": lambda w: Prep(path={"alert_id": w.alert()}),
}

#: Write routes this sweep does not drive, and why. Their bad input is swept by
#: ``tests/api/test_staff_signatures.py::test_bad_input_on_the_signing_routes`` instead: the
#: sweep's clinic signs in process, unsigned (no root credential), and must stay so; the first
#: signing key made here would be the registrant's root, after which every in-process command of
#: ``World`` would need staff signers; and the passkey routes take authenticator answers that
#: only a (software) authenticator can make.
NOT_SWEPT = {
    "enrol_signing_key": "would make the sweep's registrant require staff signatures",
    "passkey_registration_options": "needs a root credential (a signing registrant)",
    "passkey_registration": "needs an authenticator's registration answer",
    "enrol_passkey": "needs an authenticator's assertion over the enrolment statement",
    "revoke_credential": "needs an enrolled credential (a signing registrant)",
    "store_document": "its body is the file, not JSON: tests/api/test_documents_http.py sends it bad",
}

#: Fields a login or a witness's sign-in checks against the credentials: a well-formed wrong
#: value is a 401 (the same for a wrong username and a wrong password, on purpose).
CREDENTIALS = {"login": {"username", "password", "totp"}, "create_witness_assertion": {"username", "password", "totp"},
               "change_own_password": {"current_password"}}
#: Fields naming something recorded, with a well-formed value that names nothing (must be a 404
#: naming the field). A well-formed but wrong value in them (a look-alike id) may be a 404 too.
NOTHING = {"supplier_id": "SUP999999", "patient_id": "P999999", "vial_id": "V999999-1", "vial_ids": "V999999-1",
           "device_ids": "V999999-1",  # issue 19: esketamine devices are vials rows
           "administration_id": "A999999", "ndc": "0409-2051-99", "ndcs": "0409-2051-99", "corrects_seq": 999999,
           "fixed_by_seq": 999999, "covers_seqs": 999999, "documents": "ab" * 32,
           "loss_report_seq": 999999, "document_sha256": "ab" * 32}  # issue 20
#: Routes whose body changes credentials or sessions, which are not entries.
NO_ENTRY = {"login", "create_witness_assertion", "change_own_password", "set_staff_password"}
#: Fields that name something new, not something recorded.
NEW_NAMES = {("add_product", "ndc")}
#: Fields that name something recorded only in another variant of the command: the sweep's
#: inventory is an initial one, where every container gets a new identity, so any vial_id at all is
#: refused as not applicable (422 naming it), not looked up (a biennial inventory looks it up).
NOT_LOOKED_UP = {("take_inventory", "vial_id")}


def example_of(doc: dict, op: dict) -> dict:
    content = op["requestBody"]["content"][JSON]
    schema = content["schema"]
    ex = content.get("example") or (list(content.get("examples", {}).values())[0]["value"]
                                    if content.get("examples") else None)
    if ex is None:
        target = doc["components"]["schemas"][schema["$ref"].split("/")[-1]] if "$ref" in schema else schema
        ex = (target.get("examples") or [target.get("example")])[0]
    return ex


def baseline(example: dict, prep: Prep, world: World) -> dict:
    """The example with the route's preconditions put in, its times moved into the last hour
    and the test's passwords; nothing else changed."""
    when = world.when.isoformat()

    def fix(v: Any, key: str | None) -> Any:
        if key in prep.body:
            return prep.body[key]
        if isinstance(v, dict):
            return {k: fix(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x, key) for x in v]
        if isinstance(v, str):
            if key and (key.endswith("_at") or key.endswith("_from")) and v[:4].isdigit():
                return when
            if key in ("password", "current_password"):
                return PASSWORD
        return v

    return fix(example, None)


def api_routes(app) -> dict[tuple[str, str], APIRoute]:
    """(path, method) -> the app's route, FastAPI's included routers walked into."""
    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                yield from walk(inner.routes)
            elif isinstance(r, APIRoute):
                yield r

    return {(r.path, m.lower()): r for r in walk(app.routes) for m in r.methods}


def witnesses_needed(route: APIRoute) -> int:
    """How many witness assertions the route reads: its dependencies say (``deps.witness`` and
    ``deps.optional_witness``: one; ``deps.witnesses``: several, two for a Form 41 destruction)."""
    calls = set()

    def walk(d) -> None:
        for sub in d.dependencies:
            calls.add(sub.call)
            walk(sub)

    walk(route.dependant)
    if deps.witnesses in calls:
        return 2
    return 1 if calls & {deps.witness, deps.optional_witness} else 0


# --- sending and checking ---------------------------------------------------------------------


@dataclass
class Expect:
    """What an answer may be: the refusal statuses allowed, each with the field it must name
    (None: any), and, if acceptance is allowed, a check that it was genuinely valid (returns
    what is wrong, or None)."""

    refuse: dict[int, str | None]
    accept: Callable[[Any], str | None] | None = None


def ok_if_accepted(_r) -> None:
    return None


class Run:
    def __init__(self, api: Api, world: World):
        self.api, self.world = api, world
        self.problems: list[str] = []
        self.accepted: list[str] = []
        self.requests = 0
        self.cases = 0
        self.baselines = 0
        self.by_route: dict[str, int] = {}

    def sign(self, content: bytes, who: tuple[str, ...], dea: str) -> str:
        digest = hashlib.sha256(content).hexdigest()
        tokens = []
        for w in who:
            r = self.api.client.post(self.api.url("/witness-assertions", dea), headers=self.world.headers(dea),
                                     json={"username": w, "password": PASSWORD, "body_sha256": digest,
                                           **({"totp": self.api.totp(w, dea)} if self.api.totp(w, dea) else {})})
            self.requests += 1
            assert r.status_code == 201, r.text
            tokens.append(r.json()["assertion"])
        return ", ".join(tokens)

    def send(self, method: str, url: str, *, content: bytes | None = None, content_type: str = JSON,
             witnesses: tuple[str, ...] = (), dea: str = DEA, extra: dict | None = None):
        headers = self.world.headers(dea)
        if content is not None:
            headers["Content-Type"] = content_type
            if witnesses:
                headers["Witness-Assertion"] = self.sign(content, witnesses, dea)
        headers.update(extra or {})
        headers = {k: v for k, v in headers.items() if v is not None}
        self.requests += 1
        return self.api.client.request(method, url, content=content, headers=headers)

    def check(self, what: str, r, before: int, expect: Expect, *, variant: bool = True) -> bool:
        """Record what is wrong with the answer ``r``; True when it was accepted."""
        self.cases += 1
        route = " ".join(what.split()[:2])
        self.by_route[route] = self.by_route.get(route, 0) + 1
        text = r.text
        fail = []
        status = r.status_code
        if status >= 500:
            fail.append(f"status {status}")
        if "Traceback" in text or 'File "' in text:
            fail.append("a traceback in the answer")
        body = None
        if status >= 400:
            try:
                body = r.json()
            except ValueError:
                fail.append("a 4xx whose body is not JSON")
            ctype = r.headers.get("content-type", "")
            if not ctype.startswith("application/problem+json"):
                fail.append(f"content type {ctype!r}")
            if isinstance(body, dict) and (not isinstance(body.get("detail"), str) or not body["detail"]):
                fail.append("no detail")
            after = self.world.count()
            if after != before:
                fail.append(f"refused but {after - before} entries written")
        allowed = " or ".join(f"{s}" + (f" naming {f}" if f else "") for s, f in sorted(expect.refuse.items()))
        accepted = 200 <= status < 300
        if accepted:
            if expect.accept is None:
                fail.append(f"accepted ({status}); expected {allowed}")
            else:
                wrong = expect.accept(r)
                if wrong:
                    fail.append(f"accepted ({status}) but {wrong}")
                elif variant:
                    self.accepted.append(f"{what} -> {status}")
        elif status < 500 and status not in expect.refuse:
            fail.append(f"status {status}; expected " + " or ".join([allowed] * bool(allowed)
                                                                     + ["acceptance (2xx)"] * bool(expect.accept)))
        elif status in expect.refuse and expect.refuse[status] and isinstance(body, dict):
            want = expect.refuse[status]
            errs = body.get("errors")
            fields = [e.get("field", "") for e in errs if isinstance(e, dict)] if isinstance(errs, list) else []
            if not any(names(f, want) for f in fields):
                fail.append(f"{status} names {fields}, not {want}")
        if fail:
            self.problems.append(f"{what}: {'; '.join(fail)} :: {text[:240]}")
        return accepted


def quote_any(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="%")


def concrete(path: str, ids: dict[str, str], override: dict[str, str] | None = None) -> str:
    for name, value in {**ids, **(override or {})}.items():
        path = path.replace("{" + name + "}", value)
    return path


#: Bad path parameter values: (label, value, routes: whether the URL still reaches the route).
BAD_PATH = {
    "dea": [("check digit", "AB1234564", True), ("Cyrillic", "\u0410B1234563", True), ("long", "A" * 5000, True),
            ("NUL", "AB123456\x00", True), ("lower case", "ab1234563", True)],
    "*": [("long", "V" * 5000, True), ("NUL", "x\x00", True), ("lone surrogate", "x\ud800", True),
          ("zero-width", "V1\u200b", True), ("Cyrillic", "\u0412-1", True), ("slash", "a%2Fb", False),
          ("dots", "..", False), ("huge number", "9" * 40, True), ("negative", "-1", True)],
}
#: A well-formed id of nothing, per path parameter (checked separately: must be a 404 naming it).
NOBODY = {"alert_id": "AL999999", "discrepancy_id": "D999999-0", "session_id": "C999999", "patient_id": "P999999",
          "staff_id": "S999999", "vial_id": "V999999-1", "seq": "999999", "sha256": "0" * 64,
          "container_id": "V999999-1"}  # issue 21: a beyond-use label
BAD_QUERY = [("empty", ""), ("long", "q" * 5000), ("NUL", "\x00"), ("lone surrogate", "\ud800"),
             ("zero-width", "a\u200b"), ("huge number", "9" * 40), ("negative", "-1"), ("NaN", "NaN"),
             ("1e309", "1e309"), ("month 13", "2026-13-45T00:00:00Z"), ("no zone", "2026-11-01T10:00:00"),
             ("year 1", "0001-01-01T00:00:00Z"), ("year 9999", "9999-12-31T23:59:59Z"), ("Cyrillic", "\u0430")]


def query_conforms(spec: Spec, value: str, schema: dict) -> bool:
    """Does a query string value satisfy the parameter's schema (numbers read from the text)?"""
    s, nullable = spec.resolve(schema)
    if s.get("type") == "integer":
        if not (value.isascii() and value.lstrip("-").isdigit()):
            return False
        return spec.conforms(int(value), s)
    return spec.conforms(value, s)


def path_conforms(spec: Spec, value: str, schema: dict) -> bool:
    s, _ = spec.resolve(schema)
    if s.get("type") == "integer":
        return query_conforms(spec, value, s)
    return spec.conforms(value, s)


class Sweep:
    """One backend: every operation of the OpenAPI document."""

    def __init__(self, ledger, key_dir):
        # As ``csledger serve`` runs: every write signs a checkpoint and runs the alert rules.
        attach(ledger, SimpleNamespace(key_dir=key_dir, origin_prefix="clinic.test", log_keys=""))
        attach_alert_rules(ledger)
        self.api = build_api(ledger, Settings(patient_key=PATIENT_KEY, lockout_after_failures=1_000_000))
        self.world = World(self.api)
        self.doc = self.api.client.get("/openapi.json").json()
        self.spec = Spec(self.doc)
        self.run = Run(self.api, self.world)
        self.routes = api_routes(self.api.client.app)
        self.write_routes: list[str] = []
        self.fields = 0

    # -- writes ---------------------------------------------------------------------------------

    def write(self, path: str, method: str, op: dict) -> None:
        route = self.routes[(path, method)]
        name = route.name
        self.write_routes.append(name)
        n_witnesses = witnesses_needed(route)
        who = APPROVERS if name in APPROVED else WITNESSES[:n_witnesses]
        has_body = "requestBody" in op
        example = example_of(self.doc, op) if has_body else None
        schema = op["requestBody"]["content"][JSON]["schema"] if has_body else None
        where = f"{method.upper()} {path}"
        w, run = self.world, self.run
        state: dict[str, Any] = {}

        def prepare() -> None:
            prep = PREPARE.get(name, lambda _w: Prep())(w)
            state["prep"] = prep
            state["base"] = baseline(example, prep, w) if has_body else None
            state["ids"] = {**w.ids, "dea": prep.dea, **prep.path}

        def url(override: dict[str, str] | None = None) -> str:
            return concrete(path, state["ids"], override)

        def send(content: bytes | None, *, url_=None, ctype=JSON, sign=True, extra=None):
            return run.send(method.upper(), url_ or url(), content=content, content_type=ctype,
                            witnesses=who if sign else (), dea=state["prep"].dea, extra=extra)

        def after_accept() -> None:
            """An accepted request may have used up the preconditions (a vial, a discrepancy),
            ended the login's sessions or changed its password: make them again."""
            if name == "change_own_password":
                self.api.set_password(USER)
            if name == "set_staff_password":
                self.api.set_password("tess")
            w.headers(DEA, fresh=True)
            prepare()

        def attempt(what: str, content: bytes | None, expect: Expect, **kw) -> None:
            before = w.count()
            r = send(content, **kw)
            if run.check(f"{where} {what}", r, before, expect):
                after_accept()

        prepare()
        content = dumps(state["base"]) if has_body else None
        # 1. The unmodified example, on a state where the route's preconditions hold.
        before = w.count()
        r = send(content)
        run.baselines += 1
        if not (200 <= r.status_code < 300):
            run.problems.append(f"{where} the example ({name}): status {r.status_code}, expected 2xx; give the route "
                                f"its preconditions in PREPARE :: {r.text[:300]} :: sent {content[:300] if content else b''}")
            return
        if has_body and name not in NO_ENTRY and w.count() == before:
            run.problems.append(f"{where} the example ({name}): accepted but no entry written")
        after_accept()

        # 2. Bad path parameters (the body is the accepted one).
        for p in op.get("parameters", []):
            if p["in"] == "path":
                self.path_variants(where, p, url, lambda u: send(dumps(state["base"]) if has_body else None, url_=u),
                                   after_accept)

        if has_body:
            self.body_variants(name, where, schema, state, attempt)
            self.header_variants(name, where, op, state, attempt, n_witnesses)

        # 3. The unmodified body, accepted again.
        before = w.count()
        r = send(dumps(state["base"]) if has_body else None)
        run.baselines += 1
        if run.check(f"{where} the example again", r, before, Expect({}, ok_if_accepted), variant=False):
            after_accept()

    def readback(self, name: str, state: dict, r, value: Any) -> str | None:
        """None if the accepted ``value`` was recorded as sent, else what is wrong."""
        w = self.world
        if name == "change_own_password" or name == "set_staff_password":
            user = USER if name == "change_own_password" else "tess"
            if self.api.login(user, value, dea=state["prep"].dea).status_code != 201:
                return f"a login with the new password {value!r} fails"
            return None
        try:
            seqs = [e["seq"] for e in r.json().get("entries", [])]
        except (ValueError, AttributeError):
            return "the answer lists no entries"
        if any(holds(e, value) for e in w.entries(state["prep"].dea, seqs)):
            return None
        if name in ("register_patient", "change_patient_details"):  # name and address: in the registry
            pid = (r.json() or {}).get("patient_id") or state["prep"].path.get("patient_id")
            got = self.api.client.get(self.api.url(f"/patients/{pid}", state["prep"].dea),
                                      headers=w.headers(state["prep"].dea))
            self.run.requests += 1
            if got.status_code == 200 and holds(got.json(), value):
                return None
            return f"neither the entries written nor the patient read back hold {value!r}"
        return f"the entries written do not hold {value!r}"

    def body_variants(self, name: str, where: str, schema: dict, state: dict, attempt) -> None:
        spec = self.spec
        fields = list(spec.fields(state["base"], schema))
        self.fields += len(fields)
        big_done = False
        for f in fields:
            count_ = len(variants(f, get_at(state["base"], f.path)))
            for i in range(count_):
                v = variants(f, get_at(state["base"], f.path))[i]  # from the current body: it may be re-made
                attempt(f"{f.name}={v.label}", dumps(set_at(state["base"], f.path, v.value)),
                        self.expect(name, f, v, state))
            nothing = NOTHING.get(f.leaf)
            if nothing is not None and (name, f.leaf) not in NEW_NAMES:
                value = [nothing] if f.schema.get("type") == "array" else nothing
                attempt(f"{f.name}=well formed, names nothing", dumps(set_at(state["base"], f.path, value)),
                        Expect({422 if (name, f.leaf) in NOT_LOOKED_UP else 404: f.name}))
            if not big_done and f.schema.get("type") == "string":
                big_done = True
                attempt(f"{f.name}=10 MB", dumps(set_at(state["base"], f.path, "x" * BIG)), Expect({413: None}))
        for label, content, ctype, named in malformed_bodies(state["base"]):
            attempt(f"body {label}", content, Expect({422: named}), ctype=ctype)

    def expect(self, name: str, f: Field, v: Variant, state: dict) -> Expect:
        value = v.value
        if value is MISSING:
            conforms = not f.required
        elif value is None:
            conforms = f.nullable
        else:
            conforms = self.spec.conforms(value, f.schema)
        refuse = {422: v.field}
        if conforms and (value is MISSING or value is None or value == []):
            # the field's default: valid wherever the schema makes it optional (the service may
            # still need it here, e.g. the lost vials of a loss report, and refuse naming it)
            return Expect(refuse, ok_if_accepted)
        if conforms and f.leaf in CREDENTIALS.get(name, ()):
            return Expect({401: None, 422: v.field})
        if conforms and f.leaf in NOTHING and (name, f.leaf) not in NEW_NAMES:
            refuse[404] = v.field
        if v.bad or not conforms:
            return Expect(refuse)
        return Expect(refuse, lambda r: self.readback(name, state, r, value))

    def header_variants(self, name: str, where: str, op: dict, state: dict, attempt, n_witnesses: int) -> None:
        header_names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        content = dumps(state["base"])
        if "Idempotency-Key" in header_names:
            for label, key in [("129 characters", "k" * 129), ("empty", "")]:
                attempt(f"Idempotency-Key {label}", content, Expect({422: "Idempotency-Key"}),
                        extra={"Idempotency-Key": key})
        if "Witness-Assertion" not in header_names:
            return
        wa = "Witness-Assertion"
        other = self.run.sign(dumps({**state["base"], "note": "another body"}), WITNESSES[:max(1, n_witnesses)],
                              state["prep"].dea)
        cases = [("garbage", "csw_" + "x" * 40, Expect({401: wa})), ("501 characters", "w" * 501, Expect({422: wa})),
                 ("commas", ",,,", Expect({401: wa})), ("signed for another body", other, Expect({401: wa}))]
        if n_witnesses == 0:
            cases = []
        for label, token, expect in cases:
            attempt(f"Witness-Assertion {label}", content, expect, sign=False, extra={wa: token})
        if name in APPROVED:  # the approver is optional where no second manager exists; here one does
            attempt("Witness-Assertion left out", content, Expect({422: "approver"}), sign=False)
        elif name in SECOND_PERSON:
            attempt("Witness-Assertion left out", content, Expect({422: "witness"}), sign=False)
        elif name == "revoke_role":
            # The example revokes a nurse role, which one person may: left out, the assertion is not
            # needed (and sending it would revoke the role before the valid submission, sent last).
            # A manager or administrator role needs the approver: tests/api/test_separation_of_duties.py.
            pass
        elif name == "correct_entry":  # the approver is needed only where stock comes off the book
            removal = dumps({**state["base"], "lines": [
                {"vial_id": state["base"]["lines"][0]["vial_id"], "direction": "remove", "ml": "0.50"}]})
            attempt("Witness-Assertion left out, stock removed", removal, Expect({422: "approver"}), sign=False)
        elif n_witnesses and name != "administer_dose":
            attempt("Witness-Assertion left out", content, Expect({401: wa}), sign=False)
        if name == "administer_dose":  # the witness is optional: needed for the waste in the body
            attempt("Witness-Assertion left out, waste given", content, Expect({422: "witness"}), sign=False)
        if n_witnesses >= 2:
            one = self.run.sign(content, WITNESSES[:1], state["prep"].dea)
            attempt("one witness of two", content, Expect({422: "witnesses"}), sign=False, extra={wa: one})
            twice = ", ".join(self.run.sign(content, WITNESSES[:1], state["prep"].dea) for _ in range(2))
            attempt("the same witness twice", content, Expect({409: "witnesses"}), sign=False, extra={wa: twice})

    def path_variants(self, where: str, p: dict, url, send, after_accept) -> None:
        if p["name"] in NOBODY:
            assert path_conforms(self.spec, NOBODY[p["name"]], p.get("schema", {})), p
            before = self.world.count()
            r = send(url({p["name"]: NOBODY[p["name"]]}))
            if self.run.check(f"{where} path {p['name']}=well formed, nothing", r, before, Expect({404: p["name"]})):
                after_accept()
        for label, value, routes in BAD_PATH.get(p["name"], BAD_PATH["*"]):
            if not routes:
                expect = Expect({404: None, 405: None})
            elif path_conforms(self.spec, value, p.get("schema", {})):
                # well formed: an id of nothing (another registrant, for the DEA number)
                expect = Expect({401: None, 403: None, 404: None, 422: "dea"} if p["name"] == "dea"
                                else {404: p["name"], 422: p["name"]})
            else:
                expect = Expect({422: p["name"]})
            before = self.world.count()
            r = send(url({p["name"]: quote_any(value)}))
            if self.run.check(f"{where} path {p['name']}={label}", r, before, expect):
                after_accept()

    # -- reads ----------------------------------------------------------------------------------

    def read(self, path: str, op: dict) -> None:
        where = f"GET {path}"
        run, w = self.run, self.world
        params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
        required = {p["name"]: self.query_default(p["name"]) for p in params if p["in"] == "query" and p.get("required")}

        def url(override=None) -> str:
            return concrete(path, w.ids, override)

        def get(u: str, query: dict[str, str]):
            qs = "&".join(quote_any(k) + "=" + quote_any(v) for k, v in query.items())
            run.requests += 1
            return self.api.client.get(u + ("?" + qs if qs else ""), headers=w.headers())

        before = w.count()
        r = get(url(), required)
        run.baselines += 1
        if not run.check(f"{where} with its required parameters", r, before, Expect({}, ok_if_accepted),
                         variant=False):
            return
        for p in params:
            if p["in"] == "path":
                self.path_variants(where, p, url, lambda u: get(u, required), lambda: None)
                continue
            for label, value in BAD_QUERY:
                if query_conforms(self.spec, value, p.get("schema", {})):
                    expect = Expect({422: p["name"]}, ok_if_accepted)
                else:
                    expect = Expect({422: p["name"]})
                before = w.count()
                r = get(url(), {**required, p["name"]: value})
                run.check(f"{where} ?{p['name']}={label}", r, before, expect)

    def query_default(self, name: str) -> str:
        now = datetime.now(UTC)
        today = now.astimezone(zoneinfo.ZoneInfo("America/Chicago")).date()  # reports take local days (issue 20)
        return {"start": (now - timedelta(days=1)).isoformat(), "end": now.isoformat(), "seq": "0",
                "first": "1", "second": "1", "from": (today - timedelta(days=1)).isoformat(),
                "to": today.isoformat()}.get(name, "1")

    def all(self) -> None:
        for path, ops in self.doc["paths"].items():
            for method, op in ops.items():
                if method == "get":
                    self.read(path, op)
                elif self.routes[(path, method)].name not in NOT_SWEPT:
                    self.write(path, method, op)


#: Product defects this sweep found, each with the exact cases that show it. They are reported
#: on every run; the test fails if a case here stops failing (the defect is fixed: remove it).
KNOWN_DEFECTS: dict[str, list[str]] = {}  # the four the sweep first found are fixed (see docs/reliability.md)


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
@pytest.mark.slow
def test_bad_input_on_every_operation(ledger, tmp_path):
    started = time.perf_counter()
    sweep = Sweep(ledger, tmp_path / "keys")
    sweep.all()
    run = sweep.run
    elapsed = time.perf_counter() - started
    known = {case: defect for defect, cases in KNOWN_DEFECTS.items() for case in cases}
    shown = {case for p in run.problems for case in known if p.startswith(case + ":")}
    problems = [p for p in run.problems if not any(p.startswith(case + ":") for case in known)]
    writes = len(sweep.write_routes)
    print(f"\n{ledger.dialect}: {writes} write routes and {len(run.by_route) - writes} reads, "
          f"{sweep.fields} body fields, {run.baselines} unmodified requests accepted, {run.cases} answers checked, "
          f"{run.requests} requests in {elapsed:.1f} s; variants accepted (checked valid): {len(run.accepted)}")
    for route, n in run.by_route.items():
        print(f"  {n:5d}  {route}")
    for a in run.accepted:
        print("  accepted:", a)
    for p in run.problems:
        print("KNOWN DEFECT" if p not in problems else "PROBLEM", p[:500])
    assert writes >= 29, "the OpenAPI document lost its write routes?"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(p[:500] for p in problems)
    assert shown == set(known), f"known defects no longer shown (fixed? remove them): {sorted(set(known) - shown)}"


def test_every_write_route_has_its_preconditions(ledger):
    """A new write route (its example in the OpenAPI document) needs its row in ``PREPARE``."""
    api = build_api(ledger, Settings(patient_key=PATIENT_KEY))
    doc = api.client.get("/openapi.json").json()
    routes = api_routes(api.client.app)
    writes = [routes[(p, m)].name for p, ops in doc["paths"].items() for m in ops if m != "get"]
    assert len(writes) >= 29
    assert [n for n in writes if n not in PREPARE and n not in NOT_SWEPT] == []
    assert set(NOT_SWEPT) <= set(writes), "NOT_SWEPT rows for routes that are gone"
    assert sorted(set(PREPARE) - set(writes)) == [], "rows for routes that are gone"
