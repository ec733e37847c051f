"""The role x endpoint table (``api.http.roles``, printed in ``docs/api.md``), all of it:
every authenticated endpoint called as a login holding each single role, and as a login of
another registrant. Allowed means the request got past authorization (any status but 401/403;
the services' own role checks would show as 403); refused means 403."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from api.http.roles import ALL_ROLES, ENDPOINT_ROLES, markdown_table
from ledger import services
from ledger.domain.commands import EnrollStaff
from ledger.storage.store import Ledger, make_engine, migrate
from tests.api.conftest import PASSWORD, ROLE_USERS, build_api, second_clinic
from tests.conftest import DEA2, KETAMINE_50, an_hour_ago

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PUBLIC = {"login", "healthz"}
n = itertools.count(1)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'ledger.db'}")
    migrate(engine)
    ledger = Ledger(engine)
    api = build_api(ledger)
    second_clinic(api)
    yield api
    ledger.dispose()


def fresh_staff(api, *roles: str, password: bool = False) -> tuple[str, str]:
    """A throwaway staff member (for endpoints that change or end someone's login)."""
    i = next(n)
    username = f"tmp{i}"
    sid = services.enroll_staff(api.ledger, api.clinic.admin, EnrollStaff(f"Temp Person {i}", username, roles))["staff_id"]
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
            "street": "5 Depot Rd", "city": "Houston", "state": "TX", "postal_code": "77002"}}, user
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
    "destroy_stock": lambda i: ("POST", "/destructions", {"vial_ids": ["V1-1"], "method": "digestion", "place": "med room",
                                                          "reason": "expired", "occurred_at": AN_HOUR_AGO}),
    "transfer_stock": lambda i: ("POST", "/transfers", {
        "vial_ids": ["V1-1"], "receiver_dea_number": "FB7654329", "receiver_name": "Other Clinic",
        "receiver_address": ADDRESS, "invoice_number": f"T{i}", "occurred_at": AN_HOUR_AGO}),
    "return_stock": lambda i: ("POST", "/returns", {
        "vial_ids": ["V1-1"], "recipient_type": "supplier", "recipient_name": "Gulf Medical Supply",
        "recipient_address": ADDRESS, "recipient_dea_number": "PB1234563", "invoice_number": f"R{i}",
        "occurred_at": AN_HOUR_AGO}),
    "report_theft_or_loss": lambda i: ("POST", "/loss-reports", {
        "discovered_at": AN_HOUR_AGO, "loss_type": "other", "police_notified": False, "losses_past_24_months": 0,
        "purchase_value_usd": "10.00", "lost": [{"vial_id": "V1-1"}]}),
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
    "get_audit": lambda i: ("GET", "/audit?start=2026-01-01T00:00:00Z&end=2026-12-31T00:00:00Z", None),
}
#: Commands a second person signs for: how many assertions they carry.
WITNESSED = {"record_waste": 1, "submit_count": 1, "destroy_stock": 2}
WITNESS_POOL = ("ned", "casey", "pia", "morgan")


def witness_header(api, name: str, user: str, content: bytes) -> dict[str, str]:
    """Valid assertions for ``content`` from people other than ``user`` (when ``user`` may ask)."""
    if name not in WITNESSED or user not in {ROLE_USERS[r] for r in ENDPOINT_ROLES["create_witness_assertion"]}:
        return {}
    tokens = []
    for w in [w for w in WITNESS_POOL if w != user][:WITNESSED[name]]:
        body = {"username": w, "password": PASSWORD, "body_sha256": hashlib.sha256(content).hexdigest()}
        if api.totp(w):
            body["totp"] = api.totp(w)
        r = api.client.post(api.url("/witness-assertions"), json=body, headers=api.headers(user))
        assert r.status_code == 201, r.text
        tokens.append(r.json()["assertion"])
    return {"Witness-Assertion": ", ".join(tokens)}


def call(api, name, user, dea=None):
    method, path, body, user = request_for(api, name, user)
    content = json.dumps(body).encode() if body is not None else None
    headers = api.headers(user, dea=dea if dea != api.dea else None, **api.key())
    if content is not None:
        headers = {**headers, "Content-Type": "application/json", **witness_header(api, name, user, content)}
    return api.client.request(method, api.url(path, api.dea), content=content, headers=headers)


CASES = [(name, role) for name in ENDPOINT_ROLES for role in ALL_ROLES]


@pytest.mark.parametrize("name,role", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_role_matrix(api, name, role):
    r = call(api, name, ROLE_USERS[role])
    allowed = not ENDPOINT_ROLES[name] or role in ENDPOINT_ROLES[name]
    if allowed:
        assert r.status_code not in (401, 403) and r.status_code < 500, (name, role, r.status_code, r.text)
    else:
        assert r.status_code == 403, (name, role, r.status_code, r.text)
        assert r.json()["type"].endswith("/role-required")


@pytest.mark.parametrize("name", list(ENDPOINT_ROLES))
def test_another_registrants_login_is_refused_everywhere(api, name):
    method, path, body, _ = request_for(api, name, "nora")
    headers = api.headers("avery", dea=DEA2, **api.key())  # DEA2's administrator, calling DEA's URLs
    r = api.client.request(method, api.url(path), json=body, headers=headers)
    assert r.status_code == 403 and r.json()["type"].endswith("/wrong-registrant"), (name, r.text)


@pytest.mark.parametrize("name", list(ENDPOINT_ROLES))
def test_no_login_is_401_everywhere(api, name):
    method, path, body, _ = request_for(api, name, "nora")
    r = api.client.request(method, api.url(path), json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def api_routes() -> list[APIRoute]:
    from api.http import (
        routes_alerts,
        routes_clinical,
        routes_records,
        routes_reference,
        routes_session,
        routes_stock,
    )

    return [r for m in (routes_session, routes_reference, routes_stock, routes_clinical, routes_records, routes_alerts)
            for r in m.router.routes
            if isinstance(r, APIRoute)]


def authenticated_routes() -> list[tuple[str, str, str]]:
    out = []
    for route in api_routes():
        if route.name in ENDPOINT_ROLES and route.include_in_schema:
            for m in sorted(route.methods):
                out.append((route.name, m, route.path))
    order = list(ENDPOINT_ROLES)
    return sorted(out, key=lambda t: order.index(t[0]))


def test_every_route_is_in_the_table_and_the_docs(api):
    names = {r.name for r in api_routes()}
    assert names - PUBLIC == set(ENDPOINT_ROLES), names ^ set(ENDPOINT_ROLES)
    paths = set(api.client.get("/openapi.json").json()["paths"])
    assert {r.path for r in api_routes()} <= paths  # every one is served
    table = markdown_table(authenticated_routes())
    assert table in DOCS.read_text(), "docs/api.md's role table is stale: run python -m tests.api.test_role_matrix"


def test_openapi_has_examples_on_every_body(api):
    spec = api.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody")
            if not body:
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
