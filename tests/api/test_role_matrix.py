"""The role x endpoint matrix, all of it, on SQLite and PostgreSQL: every authenticated
endpoint called as a login holding each single role, as a login of another registrant, and
with no login. Allowed means the request got past authorization (any status but 401/403 and
never a 5xx; the services' own role checks would show as 403); refused means 403
``role-required``.

The expected answers are the table ``EXPECTED`` below, written by hand from the docs, not read
from ``api/http/roles.py`` (the code under test): who may record what is
``docs/compliance.md`` "Who may do what (roles)"; who may read what is ``docs/api.md`` (its
prose, and its roles x endpoints table where the prose says nothing). Where the two docs
disagree, ``EXPECTED`` follows ``docs/compliance.md`` and the cell is listed in
``DOC_CONFLICTS``; the code then disagrees with the test, and that case is an
``xfail(strict=True)`` naming the finding.

Deliberate break tried (reverted at once): ``api/http/roles.py`` letting the auditor read the
patient access log (``"patient_access_log": frozenset({C, A})``; no service checks that read
again). ``test_role_matrix[sqlite-patient_access_log-auditor]`` and
``[postgresql-patient_access_log-auditor]`` failed (200 where 403 was expected); the previous
version's matrix, which read its expected answers from ``ENDPOINT_ROLES``, passed (315 passed;
only its docs-freshness test would have failed, and not once docs/api.md was regenerated).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from api.http.roles import markdown_table  # only to check that docs/api.md is regenerated
from ledger.domain.principal import Role
from ledger.storage.store import Ledger, make_engine, migrate
from tests.api.conftest import PASSWORD, ROLE_USERS, build_api, second_clinic
from tests.conftest import (
    BACKENDS,
    DEA2,
    KETAMINE_50,
    an_hour_ago,
    clinic_today,
    fresh_database_url,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PUBLIC = {"login", "healthz"}
n = itertools.count(1)

#: Column order of ``EXPECTED`` (and of docs/api.md's table).
ROLES = ("nurse", "pharmacist", "prescriber", "manager", "compliance_officer", "auditor", "administrator")
#: Who may call what. ``Y`` allowed, ``-`` refused with 403. Sources, per row group:
#: - own session: docs/api.md "Logging in" (any login, even one holding no role); witness
#:   assertions are asked for by the *recording* person's device (docs/api.md "Witnesses"), so by
#:   the roles that record witnessed commands (waste, destruction, counts, breakage) and the
#:   compliance officer, whose theft or loss report that takes vials off the book is signed by a
#:   second person (issue 15), and the manager or administrator who enrols staff or grants a role,
#:   which a second one approves the same way (issue 15); and anyone making their own signing key,
#:   which a manager or administrator approves on their screen (issue 17), auditors included;
#: - own signing credentials and signatures (issue 17): any login; anyone's credentials: the
#:   roles that read staff records; a revocation: its owner or a manager (service);
#: - staff: docs/compliance.md (manager: "staff and roles"; administrator: "staff, roles,
#:   passwords"), docs/api.md "Logging in" (an administrator gives passwords; an administrator or
#:   manager ends someone's sessions); the staff list per docs/api.md's table;
#: - commands: docs/compliance.md's "May record" column, one role at a time; the manager does
#:   "the pharmacist's work (except administering)" plus discrepancies, policy, staff and
#:   roles, theft or loss reports and alerts;
#: - reads: docs/compliance.md (auditor: "entries, stock, vials, audit, alerts, ... patient name
#:   and address"; compliance officer: audit, alerts, patient access log; administrator: "no
#:   clinical records"), docs/api.md ("entries/{seq}: auditor, compliance and manager";
#:   "patients/{id}: clinical, compliance and auditor roles"; "patient-access-log: compliance
#:   officers") and, for reads neither describes, docs/api.md's table.
EXPECTED_TABLE = """
endpoint                  nurse pharm presc manag compl audit admin
whoami                      Y     Y     Y     Y     Y     Y     Y
logout                      Y     Y     Y     Y     Y     Y     Y
change_own_password         Y     Y     Y     Y     Y     Y     Y
create_witness_assertion    Y     Y     Y     Y     Y     Y     Y
enrol_signing_key           Y     Y     Y     Y     Y     Y     Y
passkey_registration_options Y     Y     Y     Y     Y     Y     Y
passkey_registration        Y     Y     Y     Y     Y     Y     Y
enrol_passkey               Y     Y     Y     Y     Y     Y     Y
my_signatures               Y     Y     Y     Y     Y     Y     Y
list_staff_credentials      -     -     -     Y     Y     Y     Y
revoke_credential           Y     Y     Y     Y     Y     Y     Y
list_staff                  -     -     -     Y     Y     Y     Y
enroll_staff                -     -     -     Y     -     -     Y
grant_role                  -     -     -     Y     -     -     Y
revoke_role                 -     -     -     Y     -     -     Y
set_staff_password          -     -     -     -     -     -     Y
revoke_staff_sessions       -     -     -     Y     -     -     Y
clear_sign_in_throttle      -     -     -     Y     -     -     Y
list_products               Y     Y     Y     Y     Y     Y     Y
add_product                 -     Y     -     Y     -     -     Y
list_suppliers              Y     Y     Y     Y     Y     Y     Y
add_supplier                -     Y     -     Y     -     -     Y
record_supplier_registration -     Y     -     Y     -     -     Y
list_prescribers            Y     Y     Y     Y     Y     Y     Y
register_prescriber         -     -     -     Y     -     -     Y
take_inventory              Y     Y     -     Y     -     -     -
receive_stock               Y     Y     -     Y     -     -     -
list_vials                  Y     Y     Y     Y     Y     Y     -
get_vial                    Y     Y     Y     Y     Y     Y     -
stock_on_hand               Y     Y     Y     Y     Y     Y     -
list_entries                -     -     -     Y     Y     Y     -
get_entry                   -     -     -     Y     Y     Y     -
patient_access_log          -     -     -     -     Y     -     -
store_document              Y     Y     -     Y     Y     -     Y
get_document                Y     Y     -     Y     Y     Y     -
set_policy                  -     -     -     Y     -     -     Y
register_patient            Y     Y     Y     Y     -     -     -
change_patient_details      Y     Y     Y     Y     -     -     -
read_patient                Y     Y     Y     Y     Y     Y     -
administer_dose             Y     -     Y     -     -     -     -
record_waste                Y     Y     Y     Y     -     -     -
start_count                 Y     Y     -     Y     -     -     -
submit_count                Y     Y     -     Y     -     -     -
resolve_discrepancy         -     -     -     Y     -     -     -
record_breakage             Y     Y     Y     Y     -     -     -
record_esketamine_session   Y     Y     Y     -     -     -     -
make_preparation            Y     Y     Y     -     -     -     -
infuse_preparation          Y     -     Y     -     -     -     -
waste_preparation           Y     Y     Y     Y     -     -     -
open_package                Y     Y     -     Y     -     -     -
list_packages               Y     Y     Y     Y     Y     Y     -
destroy_stock               Y     Y     Y     Y     -     -     -
transfer_stock              -     Y     -     Y     -     -     -
return_stock                -     Y     -     Y     -     -     -
report_theft_or_loss        -     -     -     Y     Y     -     -
record_dea_notice           -     -     -     Y     Y     -     -
record_form_106_filing      -     -     -     Y     Y     -     -
correct_entry               Y     Y     Y     Y     -     -     -
quarantine_stock            Y     Y     Y     Y     -     -     -
release_quarantine          -     Y     -     Y     -     -     -
get_policy                  Y     Y     Y     Y     Y     Y     Y
get_count                   Y     Y     -     Y     Y     Y     -
list_discrepancies          -     Y     -     Y     Y     Y     -
get_audit                   -     -     -     Y     Y     Y     -
get_report                  -     Y     -     Y     Y     Y     -
get_container_label         Y     Y     -     Y     -     -     -
list_alerts                 -     -     -     Y     Y     Y     -
acknowledge_alert           -     -     -     Y     Y     -     -
resolve_alert               -     -     -     Y     Y     -     -
"""


def parse_table(text: str) -> dict[str, frozenset[str]]:
    rows = [line.split() for line in text.strip().splitlines()[1:]]
    assert all(len(r) == 1 + len(ROLES) and set(r[1:]) <= {"Y", "-"} for r in rows), "malformed EXPECTED_TABLE row"
    return {r[0]: frozenset(role for role, cell in zip(ROLES, r[1:], strict=True) if cell == "Y") for r in rows}


EXPECTED = parse_table(EXPECTED_TABLE)
assert {r.value for r in Role} == set(ROLES)
_RECORD = "docs/compliance.md 'Who may do what' does not list it for this role"
#: Cells where docs/compliance.md (followed by EXPECTED) and docs/api.md's table (generated from
#: the code) disagree: findings, reported. The code allows each of these.
DOC_CONFLICTS: dict[tuple[str, str], str] = {}  # the six cells first found were the docs' error (compliance.md fixed)


@pytest.fixture(scope="module", params=BACKENDS)
def api(request, tmp_path_factory):
    urls = fresh_database_url(request.param, tmp_path_factory.mktemp("matrix"))
    url = next(urls)
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    api = build_api(ledger)
    second_clinic(api)
    yield api
    ledger.dispose()
    next(urls, None)  # drops the PostgreSQL database


def fresh_staff(api, *roles: str, password: bool = False) -> tuple[str, str]:
    """A throwaway staff member (for endpoints that change or end someone's login)."""
    i = next(n)
    username = f"tmp{i}"
    sid = api.clinic.enroll(f"Temp Person {i}", username, *roles).staff_id  # approved by a second manager
    if password:
        api.set_password(username)
    return username, sid


def request_for(api, name: str, user: str):
    """(method, path, json, user) that exercises ``name`` as ``user`` when authorized."""
    i = next(n)
    if name == "whoami":
        return "GET", "/me", None, user
    if name in ("logout", "change_own_password"):
        role = next(r for r, u in ROLE_USERS.items() if u == user)
        user, _ = fresh_staff(api, role, password=True)
        if name == "logout":
            return "DELETE", "/sessions/current", None, user
        return "POST", "/me/password", {"current_password": PASSWORD, "new_password": "seven silver kites fly"}, user
    if name == "create_witness_assertion":
        return "POST", "/witness-assertions", {"username": "ned", "password": PASSWORD, "body_sha256": "a" * 64}, user
    # issue 17; the module's registrant has no root credential and must keep none (its in-process
    # enrolments are unsigned), so these probes are shaped to stop after the role check.
    if name == "enrol_signing_key":
        return "POST", "/me/signing-key", {"password": ""}, user  # 422: never makes a root here
    if name == "passkey_registration_options":
        return "POST", "/me/passkeys/registration-options", None, user  # 409: no root
    if name == "passkey_registration":
        return "POST", "/me/passkeys/registrations", {"response": {}}, user  # 409: no root
    if name == "enrol_passkey":
        return "POST", "/me/passkeys", {"credential_id": "x", "assertion": {}}, user  # 422: nothing pending
    if name == "my_signatures":
        return "GET", "/me/signatures", None, user
    if name == "list_staff_credentials":
        return "GET", "/staff/S2/credentials", None, user
    if name == "revoke_credential":
        return "POST", "/staff/S2/credentials/pk-none/revocation", {"reason": "role matrix probe"}, user  # 404
    if name == "list_staff":
        return "GET", "/staff", None, user
    if name == "enroll_staff":
        return "POST", "/staff", {"printed_name": f"New Person {i}", "username": f"new{i}", "roles": []}, user
    if name == "grant_role":
        return "POST", f"/staff/{fresh_staff(api)[1]}/roles", {"role": "nurse"}, user
    if name == "revoke_role":
        return "POST", f"/staff/{fresh_staff(api, 'nurse')[1]}/role-revocations", {"role": "nurse", "reason": "left"}, user
    if name == "set_staff_password":
        return "POST", f"/staff/{fresh_staff(api)[1]}/password", {"password": "temporary harbor 42"}, user
    if name == "revoke_staff_sessions":
        return "DELETE", f"/staff/{fresh_staff(api)[1]}/sessions", None, user
    if name == "clear_sign_in_throttle":
        return "DELETE", f"/staff/{fresh_staff(api, password=True)[1]}/sign-in-throttle", None, user
    if name == "list_products":
        return "GET", "/products", None, user
    if name == "add_product":
        return "POST", "/products", {"ndc": f"6{i:04d}-4112-01", "name": "Ketamine HCl 100 mg/mL", "drug_code": "7285",
                                     "schedule": "III", "form": "injection", "strength_mg_per_ml": "100.00",
                                     "container_ml": "10.00"}, user
    if name == "list_suppliers":
        return "GET", "/suppliers", None, user
    if name == "add_supplier":
        return "POST", "/suppliers", {"name": "Gulf Medical Supply", "dea_number": "PB1234563", "address": {
            "street": "5 Depot Rd", "city": "Houston", "state": "TX", "postal_code": "77002"},
            "registration_expires_on": "2031-06-30", "schedules": ["3", "3N"], "authorized_trading_partner": True}, user
    if name == "record_supplier_registration":  # issue 19: a renewal of the test clinic's supplier
        return "POST", f"/suppliers/{api.clinic.supplier_id}/registration", {
            "registration_expires_on": "2032-06-30", "schedules": ["3", "3N"], "authorized_trading_partner": True}, user
    if name == "list_prescribers":
        return "GET", "/prescribers", None, user
    if name == "register_prescriber":  # issue 19: a renewal of a test clinic's prescriber
        return "POST", "/prescribers", {"name": "Dr. Alex Prescriber", "dea_number": "AB1234563",
                                        "registration_state": "TX", "schedules": ["3N", "4", "5"],
                                        "expires_on": "2032-01-31", "state_license_number": f"TX-{i}",
                                        "state_license_state": "TX"}, user
    if name == "take_inventory":
        return "POST", "/inventories", {"inventory_type": "initial", "taken_at": "opening_of_business",
                                        "occurred_at": an_hour_ago().isoformat(), "items": []}, user
    if name == "receive_stock":
        return "POST", "/receipts", {"supplier_id": api.clinic.supplier_id, "invoice_number": f"INV-{i}",
                                     "occurred_at": an_hour_ago().isoformat(), "lines": [
                                         {"ndc": KETAMINE_50, "containers": 1, "lot": "L1", "expiry": "2029-01-31"}]}, user
    if name == "list_vials":
        return "GET", "/vials", None, user
    if name == "get_vial":
        return "GET", "/vials/V1-1", None, user
    if name == "stock_on_hand":
        return "GET", "/stock", None, user
    if name == "list_entries":
        return "GET", "/entries?limit=5", None, user
    if name == "get_entry":
        return "GET", "/entries/0", None, user
    if name == "patient_access_log":
        return "GET", "/patient-access-log", None, user
    if name == "get_report":  # issue 20: the role history needs no stock (PDF, unsigned here: no report key)
        today = clinic_today()
        return "GET", f"/reports/roles?from={today - timedelta(days=1)}&to={today}", None, user
    if name == "get_container_label":  # issue 21: a sealed vial of the matrix's clinic (409 once allowed)
        return "GET", "/containers/V1-1/label", None, user
    if name == "store_document":  # issue 20: the body is the file (``call`` sends it as a PDF)
        return "POST", "/documents", DOCUMENT_PROBE, user
    if name == "get_document":  # a well-formed digest of nothing: 404 once the role is allowed
        return "GET", "/documents/" + "0" * 64, None, user
    clinical = CLINICAL_REQUESTS.get(name)
    if clinical is not None:
        method, path, body = clinical(i)
        return method, path, body, user
    raise AssertionError(f"no request for endpoint {name}: add one here and a row to the role table")


AN_HOUR_AGO = an_hour_ago().isoformat()
ADDRESS = {"street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}
#: Valid shapes; the services may still refuse them (404, 409, 422): allowed means "past the role check".
CLINICAL_REQUESTS = {
    "set_policy": lambda i: ("POST", "/policies", {"beyond_use_days": 28, "reason": f"policy {i}"}),
    "register_patient": lambda i: ("POST", "/patients", {"name": f"Pat Example {i}", "address": ADDRESS}),
    "change_patient_details": lambda i: ("POST", "/patients/P1/details-changes",
                                         {"name": "Pat Example", "address": ADDRESS, "reason": "moved"}),
    "read_patient": lambda i: ("GET", "/patients/P1", None),
    "administer_dose": lambda i: ("POST", "/administrations", {
        "patient_id": "P1", "prescriber_dea_number": "FB7654329", "weight_kg": "80.00", "ordered_mg_per_kg": "0.50",
        "draws": [{"vial_id": "V1-1", "ml": "1.00"}], "ml_given": "0.80", "started_at": AN_HOUR_AGO,
        "ended_at": AN_HOUR_AGO}),
    "record_waste": lambda i: ("POST", "/wastes", {"administration_id": "A1", "ml": "0.20", "method": "sharps",
                                                   "occurred_at": AN_HOUR_AGO}),
    "start_count": lambda i: ("POST", "/counts", {"blind": True}),
    "submit_count": lambda i: ("POST", "/counts/C1/submissions", {
        "lines": [{"ndc": KETAMINE_50, "sealed_containers": 1}], "occurred_at": AN_HOUR_AGO}),
    "resolve_discrepancy": lambda i: ("POST", "/discrepancies/D1/resolutions",
                                      {"category": "other", "explanation": "miscount"}),
    "record_breakage": lambda i: ("POST", "/breakages", {
        "what": "spill", "description": "role matrix probe", "recoverable": False,
        "lines": [{"vial_id": "V1-1", "ml": "0.10"}], "occurred_at": AN_HOUR_AGO}),
    "record_esketamine_session": lambda i: ("POST", "/esketamine-sessions", {  # issue 19
        "patient_id": "P1", "prescriber_dea_number": "FB7654329", "device_ids": ["V1-1", "V1-2"], "dose_mg": "56.00",
        "administered_at": AN_HOUR_AGO, "observation_started_at": AN_HOUR_AGO, "observation_ended_at": AN_HOUR_AGO}),
    "make_preparation": lambda i: ("POST", "/preparations", {  # issue 19
        "patient_id": "P1", "prescriber_dea_number": "FB7654329", "weight_kg": "80.00", "ordered_mg_per_kg": "0.50",
        "draws": [{"vial_id": "V1-1", "ml": "0.80"}], "diluent": "0.9% sodium chloride", "diluent_ml": "100.00",
        "container": "bag", "final_ml": "100.80", "started_at": AN_HOUR_AGO}),
    "infuse_preparation": lambda i: ("POST", "/preparations/P1/infusions", {  # issue 19
        "ml_infused": "50.00", "started_at": AN_HOUR_AGO, "ended_at": AN_HOUR_AGO}),
    "waste_preparation": lambda i: ("POST", "/preparations/P1/waste", {  # issue 19
        "method": "drain", "occurred_at": AN_HOUR_AGO}),
    "open_package": lambda i: ("POST", "/packages/P1-1/openings", {  # issue 19, package hierarchy
        "units_found": 10, "occurred_at": AN_HOUR_AGO}),
    "list_packages": lambda i: ("GET", "/packages", None),  # issue 19, package hierarchy
    "destroy_stock": lambda i: ("POST", "/destructions", {"vial_ids": ["V1-1"], "method": "digestion", "place": "med room",
                                                          "reason": "expired", "occurred_at": AN_HOUR_AGO}),
    "transfer_stock": lambda i: ("POST", "/transfers", {
        "vial_ids": ["V1-1"], "receiver_dea_number": "FB7654329", "receiver_name": "Other Clinic",
        "receiver_address": ADDRESS, "invoice_number": f"T{i}", "occurred_at": AN_HOUR_AGO,
        "receiver_registration_expires_on": "2031-06-30", "receiver_schedules": ["3", "3N", "4", "5"]}),
    "return_stock": lambda i: ("POST", "/returns", {
        "vial_ids": ["V1-1"], "recipient_type": "supplier", "recipient_name": "Gulf Medical Supply",
        "recipient_address": ADDRESS, "recipient_dea_number": "PB1234563", "invoice_number": f"R{i}",
        "occurred_at": AN_HOUR_AGO}),
    "report_theft_or_loss": lambda i: ("POST", "/loss-reports", {
        "discovered_at": AN_HOUR_AGO, "loss_type": "other", "police_notified": False, "losses_past_24_months": 0,
        "purchase_value_usd": "10.00", "lost": [{"vial_id": "V1-1"}], "narrative": "vial not found at opening",
        "corrective_measures": "safe code changed", "other_explanation": "missing after a power cut",
        "contact_name": "Mia Manager", "contact_phone": "512-555-0142"}),
    # issue 20: a report's follow-up (entry 1 is no loss report: 409 once the role is allowed)
    "record_dea_notice": lambda i: ("POST", "/dea-notices", {"loss_report_seq": 1, "sent_at": AN_HOUR_AGO,
                                                             "method": "email", "recipient": "DEA Houston"}),
    "record_form_106_filing": lambda i: ("POST", "/form-106-filings", {"loss_report_seq": 1, "filed_at": AN_HOUR_AGO,
                                                                       "confirmation_number": f"106-{i}"}),
    "correct_entry": lambda i: ("POST", "/corrections", {"corrects_seq": 1, "reason": "typo"}),
    "quarantine_stock": lambda i: ("POST", "/quarantines", {"vial_ids": ["V1-1"], "reason": "suspect"}),
    "release_quarantine": lambda i: ("POST", "/quarantine-releases", {"vial_ids": ["V1-1"], "reason": "cleared"}),
    "get_policy": lambda i: ("GET", "/policy", None),
    "get_count": lambda i: ("GET", "/counts/C1", None),
    "list_discrepancies": lambda i: ("GET", "/discrepancies?status=all", None),
    "list_alerts": lambda i: ("GET", "/alerts?status=all", None),
    "acknowledge_alert": lambda i: ("POST", "/alerts/A999/acknowledgements",
                                    {"category": "explained", "explanation": "role matrix probe"}),
    "resolve_alert": lambda i: ("POST", "/alerts/A999/resolutions",
                                {"category": "explained", "explanation": "role matrix probe"}),
    "get_audit": lambda i: ("GET", "/audit?from=2026-01-01&to=2026-12-31", None),
}
#: Commands a second person signs for: how many assertions they carry.
WITNESSED = {"take_inventory": 1, "record_waste": 1, "waste_preparation": 1, "open_package": 1, "submit_count": 1, "destroy_stock": 2, "record_breakage": 1, "enroll_staff": 1,
             "grant_role": 1}
WITNESS_POOL = ("ned", "casey", "pia", "morgan")
#: Enrolments and role grants are approved by a second manager or administrator.
APPROVER_POOL = ("morgan", "avery")


def witness_header(api, name: str, user: str, content: bytes) -> dict[str, str]:
    """Valid assertions for ``content`` from people other than ``user`` (when ``user`` may ask)."""
    if name not in WITNESSED or user not in {ROLE_USERS[r] for r in EXPECTED["create_witness_assertion"]}:
        return {}
    tokens = []
    pool = APPROVER_POOL if name in ("enroll_staff", "grant_role") else WITNESS_POOL
    for w in [w for w in pool if w != user][:WITNESSED[name]]:
        body = {"username": w, "password": PASSWORD, "body_sha256": hashlib.sha256(content).hexdigest()}
        if api.totp(w):
            body["totp"] = api.totp(w)
        r = api.client.post(api.url("/witness-assertions"), json=body, headers=api.headers(user))
        assert r.status_code == 201, r.text
        tokens.append(r.json()["assertion"])
    return {"Witness-Assertion": ", ".join(tokens)}


#: The role matrix's document: a new one per call (a stored document cannot be stored twice).
DOCUMENT_PROBE = object()


def call(api, name, user, dea=None):
    method, path, body, user = request_for(api, name, user)
    if body is DOCUMENT_PROBE:
        headers = api.headers(user, **api.key(), **{"Content-Type": "application/pdf", "Document-Title": "probe"})
        return api.client.request(method, api.url(path, api.dea), content=b"%%PDF-1.7 probe %d" % next(n),
                                  headers=headers)
    content = json.dumps(body).encode() if body is not None else None
    headers = api.headers(user, dea=dea if dea != api.dea else None, **api.key())
    if content is not None:
        headers = {**headers, "Content-Type": "application/json", **witness_header(api, name, user, content)}
    return api.client.request(method, api.url(path, api.dea), content=content, headers=headers)


def case(name: str, role: str):
    conflict = DOC_CONFLICTS.get((name, role))
    marks = [pytest.mark.xfail(strict=True, reason=f"finding: {conflict}")] if conflict else []
    return pytest.param(name, role, marks=marks, id=f"{name}-{role}")


CASES = [case(name, role) for name in EXPECTED for role in ROLES]


@pytest.mark.parametrize("name,role", CASES)
def test_role_matrix(api, name, role):
    r = call(api, name, ROLE_USERS[role])
    if role in EXPECTED[name]:
        assert r.status_code not in (401, 403) and r.status_code < 500, (name, role, r.status_code, r.text)
    else:
        assert r.status_code == 403, (name, role, r.status_code, r.text)
        assert r.json()["type"].endswith("/role-required")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_another_registrants_login_is_refused_everywhere(api, name):
    method, path, body, _ = request_for(api, name, "nora")
    body = None if body is DOCUMENT_PROBE else body
    headers = api.headers("avery", dea=DEA2, **api.key())  # DEA2's administrator, calling DEA's URLs
    r = api.client.request(method, api.url(path), json=body, headers=headers)
    assert r.status_code == 403 and r.json()["type"].endswith("/wrong-registrant"), (name, r.text)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_no_login_is_401_everywhere(api, name):
    method, path, body, _ = request_for(api, name, "nora")
    body = None if body is DOCUMENT_PROBE else body
    r = api.client.request(method, api.url(path), json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def api_routes() -> list[APIRoute]:
    from api.http import (
        routes_alerts,
        routes_clinical,
        routes_credentials,
        routes_documents,
        routes_esketamine,
        routes_labels,
        routes_packages,
        routes_preparations,
        routes_prescribers,
        routes_records,
        routes_reference,
        routes_reports,
        routes_session,
        routes_stock,
    )

    return [r for m in (routes_session, routes_credentials, routes_reference, routes_prescribers, routes_stock,
                        routes_clinical, routes_records, routes_documents, routes_alerts, routes_esketamine,
                        routes_preparations,
                        routes_packages, routes_reports, routes_labels)
            for r in m.router.routes
            if isinstance(r, APIRoute)]


def authenticated_routes() -> list[tuple[str, str, str]]:
    """(name, method, path) of every authenticated route, in docs/api.md's order."""
    from api.http.roles import ENDPOINT_ROLES  # the docs' row order only, never an expected answer

    out = []
    for route in api_routes():
        if route.name not in PUBLIC and route.include_in_schema:
            for m in sorted(route.methods):
                out.append((route.name, m, route.path))
    order = list(ENDPOINT_ROLES)
    return sorted(out, key=lambda t: order.index(t[0]) if t[0] in order else len(order))


def test_every_route_is_in_the_table_and_the_docs(api):
    names = {r.name for r in api_routes()}
    assert names - PUBLIC == set(EXPECTED), f"routes without a row in EXPECTED_TABLE, or rows without a route: " \
                                             f"{sorted(names - PUBLIC ^ set(EXPECTED))}"
    paths = set(api.client.get("/openapi.json").json()["paths"])
    assert {r.path for r in api_routes()} <= paths  # every one is served
    table = markdown_table(authenticated_routes())
    assert table in DOCS.read_text(), "docs/api.md's role table is stale: run python -m tests.api.test_role_matrix"


def docs_api_table() -> dict[str, frozenset[str]]:
    """docs/api.md's roles x endpoints table, read back: route name -> roles marked ``yes``."""
    by_path = {f"{m} {p}": name for name, m, p in authenticated_routes()}
    text = DOCS.read_text()
    section = text[text.index("## Roles x endpoints"):]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| `([A-Z]+ [^`]+)` \|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            out[by_path[m.group(1)]] = frozenset(r for r, c in zip(ROLES, cells, strict=True) if c == "yes")
    return out


def test_expected_table_is_docs_api_md_table():
    """The table above and the one docs/api.md publishes agree, but for the cells where
    docs/compliance.md says otherwise (``DOC_CONFLICTS``, reported as findings)."""
    published = docs_api_table()
    assert set(published) == set(EXPECTED)
    differ = {(name, role) for name in EXPECTED for role in ROLES
              if (role in EXPECTED[name]) != (role in published[name])}
    assert differ == set(DOC_CONFLICTS), sorted(differ ^ set(DOC_CONFLICTS))


def test_openapi_has_examples_on_every_body(api):
    spec = api.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody")
            if not body:
                continue
            if "application/json" not in body["content"]:  # a file upload (documents): the body is the file
                assert all(c["schema"].get("format") == "binary" for c in body["content"].values()), path
                continue
            ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert schemas[ref].get("examples"), f"{method.upper()} {path}: body {ref} has no example"


if __name__ == "__main__":  # print the table for docs/api.md
    print(markdown_table(authenticated_routes()))


def test_role_names_in_the_schema_are_the_core_roles():
    from typing import get_args

    from api.http.schemas import RoleName
    from ledger.domain.principal import Role

    assert set(get_args(RoleName)) == {r.value for r in Role}
