"""Recording and reading over HTTP: reference data, stock, entries, idempotency, bad input."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.api.test_auth import ptype
from tests.api.test_separation_of_duties import send
from tests.conftest import KETAMINE_50, an_hour_ago, entry_count

PRODUCT = {"ndc": "0143-9509-01", "name": "Ketamine HCl injection 100 mg/mL", "drug_code": "7285",
           "schedule": "III", "form": "injection", "strength_mg_per_ml": "100.00", "container_ml": "5.00"}


def receipt(api, invoice="INV-1", containers=3):
    return {"supplier_id": api.clinic.supplier_id, "invoice_number": invoice, "occurred_at": an_hour_ago().isoformat(),
            "lines": [{"ndc": KETAMINE_50, "containers": containers, "lot": "KA2611", "expiry": "2028-06-30"}]}


def test_add_product_is_signed_by_the_authenticated_pharmacist(api):
    r = api.client.post(api.url("/products"), json=PRODUCT, headers=api.headers("pia", **api.key()))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["command"] == "add_product" and body["ndc_key"] == "00143950901" and body["replayed"] is False
    seq = body["entries"][0]["seq"]
    e = api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()
    entry = json.loads(e["canonical"])
    assert entry["signatures"] == [{**entry["signatures"][0], "staff_id": api.clinic.pharmacist.staff_id,
                                    "printed_name": "Pia Pharmacist", "auth_method": "password",
                                    "meaning": "performed"}]
    names = [p["name"] for p in api.client.get(api.url("/products"), headers=api.headers("nora")).json()]
    assert PRODUCT["name"] in names


def test_a_typed_name_cannot_choose_the_signer(api):
    r = api.client.post(api.url("/products"), json={**PRODUCT, "printed_name": "Somebody Else"},
                        headers=api.headers("pia", **api.key()))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "printed_name"


def test_idempotency_key_same_body_replays_other_body_conflicts(api):
    h = api.headers("pia", **{"Idempotency-Key": "add-100"})
    first = api.client.post(api.url("/products"), json=PRODUCT, headers=h)
    n = entry_count(api.ledger)
    again = api.client.post(api.url("/products"), json=PRODUCT, headers=h)
    assert again.status_code == 201 and again.json() == {**first.json(), "replayed": True}
    assert entry_count(api.ledger) == n
    other = api.client.post(api.url("/products"), json={**PRODUCT, "name": "Ketamine HCl 100 mg/mL (West-Ward)"},
                            headers=h)
    assert other.status_code == 409 and ptype(other) == "idempotency-key-reused"
    assert entry_count(api.ledger) == n


def test_business_conflicts_are_409_not_found_404(api):
    h = api.headers("nora")
    assert api.client.post(api.url("/receipts"), json=receipt(api), headers=h).status_code == 201
    dup = api.client.post(api.url("/receipts"), json=receipt(api), headers=h)
    assert dup.status_code == 409 and dup.json()["errors"][0]["field"] == "invoice_number"
    missing = api.client.post(api.url("/receipts"), json={**receipt(api, "INV-2"), "supplier_id": "SUP999"}, headers=h)
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "supplier_id"


@pytest.mark.parametrize("value,why", [
    (10.5, "JSON numbers with fractions are refused"),
    (10.0, "JSON numbers with fractions are refused"),
    (True, "decimal string"),
    ("10.001", "more than 2 decimal places"),
    ("1e3", "string should match pattern"),
    ("-1", "string should match pattern"),
    ("NaN", "string should match pattern"),
])
def test_quantities_are_decimal_strings(api, value, why):
    r = api.client.post(api.url("/products"), json={**PRODUCT, "strength_mg_per_ml": value},
                        headers=api.headers("pia"))
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "strength_mg_per_ml" and why.lower() in err["reason"].lower()


def test_integer_quantity_is_accepted_as_exact(api):
    r = api.client.post(api.url("/products"), json={**PRODUCT, "strength_mg_per_ml": 100}, headers=api.headers("pia"))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("body,field", [
    (b"{not json", "body"),
    (b"", "body"),
    (b"[]", "body"),
    (json.dumps({**PRODUCT, "name": "x" * 100_000}).encode(), "name"),
    (json.dumps({**PRODUCT, "ndc": 4202301131}).encode(), "ndc"),
    (json.dumps({**PRODUCT, "name": None}).encode(), "name"),
    (json.dumps({**PRODUCT, "ndc": "not-an-ndc"}).encode(), "ndc"),
    (json.dumps({**PRODUCT, "drug_code": "72\x0085"}).encode(), "drug_code"),
    ("{\"ndc\": \"\ud800\"}".encode("utf-8", "surrogatepass"), "ndc"),
])
def test_malformed_input_is_422_problem_never_500(api, body, field):
    r = api.client.post(api.url("/products"), content=body,
                        headers=api.headers("pia", **{"Content-Type": "application/json"}))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["type"].endswith("/invalid-input") and p["detail"] and p["status"] == 422
    assert field in [e["field"] for e in p["errors"]], p


def test_huge_body_is_413(api):
    r = api.client.post(api.url("/products"), content=b"{" + b" " * 2_000_000 + b"}",
                        headers=api.headers("pia", **{"Content-Type": "application/json"}))
    assert r.status_code == 413 and ptype(r) == "payload-too-large"


def test_bad_path_and_query_are_422_or_404(api):
    h = api.headers("ari")
    assert api.client.get("/v1/registrants/not-a-dea/products", headers=h).status_code == 422
    assert api.client.get(api.url("/entries/-1"), headers=h).status_code == 422
    assert api.client.get(api.url("/entries/99999"), headers=h).status_code == 404
    assert api.client.get(api.url("/entries?limit=0"), headers=h).status_code == 422
    assert api.client.get(api.url("/entries?cursor=%%%"), headers=h).status_code == 422
    r = api.client.get(api.url("/nothing-here"), headers=h)
    assert r.status_code == 404 and ptype(r) == "not-found"
    long_key = api.client.post(api.url("/products"), json=PRODUCT, headers=api.headers("pia", **{"Idempotency-Key": "k" * 500}))
    assert long_key.status_code == 422


def test_receipt_inventory_vials_and_stock(api):
    h = api.headers("nora")
    from tests.api.test_clinical import witnessed

    inv, _ = witnessed(api, "nora", "/inventories", {  # issue 20: witnessed
        "inventory_type": "initial", "taken_at": "opening_of_business", "occurred_at": an_hour_ago().isoformat(),
        "items": [{"ndc": KETAMINE_50, "lot": "KA2601", "expiry": "2028-03-31", "sealed": False, "ml": "6.00",
                   "first_punctured_on": (an_hour_ago() - timedelta(days=1)).date().isoformat()}]}, "pia")
    assert inv.status_code == 201, inv.text
    r = api.client.post(api.url("/receipts"), json=receipt(api, containers=3), headers=h)
    assert r.status_code == 201 and r.json()["total_ml"] == "30.00" and len(r.json()["vial_ids"]) == 3
    stock = api.client.get(api.url("/stock"), headers=h).json()
    [p] = stock["products"]
    assert p["ml"] == "36.00" and p["mg"] == "1800.00" and p["containers_sealed"] == 3 and p["containers_open"] == 1
    assert stock["total_mg_by_drug_code"] == {"7285": "1800.00"}
    page = api.client.get(api.url("/vials?limit=2"), headers=h).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.client.get(api.url(f"/vials?limit=2&cursor={page['next_cursor']}"), headers=h).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    vid = r.json()["vial_ids"][0]
    v = api.client.get(api.url(f"/vials/{vid}"), headers=h).json()
    assert v["state"] == "sealed" and v["ml_left"] == "10.00" and v["mg_left"] == "500.00"
    assert api.client.get(api.url("/vials/V0-0"), headers=h).status_code == 404


def test_entries_filters_and_cursor_pagination(api):
    h = api.headers("nora")
    rec = api.client.post(api.url("/receipts"), json=receipt(api), headers=h).json()
    a = api.headers("casey")
    everything = []
    cursor = None
    while True:
        q = "/entries?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(api.url(q), headers=a).json()
        everything += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["seq"] for e in everything] == list(range(entry_count(api.ledger)))
    kinds = api.client.get(api.url("/entries?kind=stock_received"), headers=a).json()["items"]
    assert [e["seq"] for e in kinds] == [rec["entries"][0]["seq"]]
    by_vial = api.client.get(api.url(f"/entries?vial_id={rec['vial_ids'][1]}"), headers=a).json()["items"]
    assert [e["kind"] for e in by_vial] == ["stock_received"]
    by_staff = api.client.get(api.url(f"/entries?staff_id={api.clinic.nurse.staff_id}"), headers=a).json()["items"]
    assert {e["kind"] for e in by_staff} == {"staff_enrolled", "role_granted", "stock_received"}
    future = api.client.get(api.url("/entries"), params={"occurred_from": "2099-01-01T00:00:00Z"}, headers=a).json()
    assert future["items"] == []
    naive = api.client.get(api.url("/entries"), params={"occurred_from": "2026-01-01T00:00:00"}, headers=a)
    assert naive.status_code == 422


def test_staff_enrol_grant_revoke(api):
    h = api.headers("morgan")
    # Enrolling and granting are approved by a second manager or administrator (issue 15).
    r = send(api, "morgan", "/staff", {"printed_name": "Rita Nurse", "username": "rita", "roles": ["nurse"]},
             approver="avery")
    assert r.status_code == 201, r.text
    sid = r.json()["staff_id"]
    assert send(api, "morgan", f"/staff/{sid}/roles", {"role": "pharmacist"}, approver="avery").status_code == 201
    again = api.client.post(api.url(f"/staff/{sid}/roles"), json={"role": "pharmacist"}, headers=h)
    assert again.status_code == 409
    admin = api.client.post(api.url(f"/staff/{sid}/roles"), json={"role": "administrator"}, headers=h)
    assert admin.status_code == 403  # only an administrator grants administrator (the service says so)
    bogus = api.client.post(api.url(f"/staff/{sid}/roles"), json={"role": "janitor"}, headers=h)
    assert bogus.status_code == 422 and bogus.json()["errors"][0]["field"] == "role"
    staff = {s["username"]: s for s in api.client.get(api.url("/staff"), headers=h).json()}
    assert staff["rita"]["roles"] == ["nurse", "pharmacist"] and staff["rita"]["has_password"] is False
    assert staff["nora"]["has_password"] is True


def test_receipt_into_quarantine_with_its_dscsa_reference(api):
    body = receipt(api, invoice="INV-Q", containers=1)
    body["lines"][0] |= {"quarantine": True, "invoiced_containers": 1}
    body["dscsa_reference"] = "TI-2026-0042"
    r = api.client.post(api.url("/receipts"), json=body, headers=api.headers("pia"))
    assert r.status_code == 201, r.text
    v = api.client.get(api.url(f"/vials/{r.json()['vial_ids'][0]}"), headers=api.headers("pia")).json()
    assert v["state"] == "quarantined"
