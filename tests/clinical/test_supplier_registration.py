"""Receipts only from a currently registered supplier that is an authorized trading partner
(issue 19).

A supplier now carries its DEA registration (expiry, schedules) and whether it is an authorized
trading partner under DSCSA; a receipt is refused, naming why, when the registration has expired,
does not cover the product's schedule, or the supplier is not an authorized trading partner, and
a supplier added before these were recorded must have them recorded first (a new entry, never an
edit). The receipt copies what it was checked against. Over HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.domain import entries as ev
from ledger.domain.principal import Meaning, Role
from ledger.services.verify import verify
from reports.source import load_snapshot
from tests.api.conftest import build_api
from tests.conftest import BACKENDS, DEA, KETAMINE_50

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

ADDRESS = {"street": "5 Depot Rd", "city": "Houston", "state": "TX", "postal_code": "77002"}


@pytest.fixture
def api(ledger):
    return build_api(ledger)


def supplier(api, *, expires: str = "2031-06-30", schedules=("3", "3N"), partner: bool = True, user: str = "morgan"):
    return api.client.post(api.url("/suppliers"), headers=api.headers(user), json={
        "name": "Coastal Wholesale", "address": ADDRESS, "dea_number": "PB1234563",
        "registration_expires_on": expires, "schedules": list(schedules), "authorized_trading_partner": partner})


def receive(api, supplier_id: str, invoice: str = "INV-1"):
    return api.client.post(api.url("/receipts"), headers=api.headers("nora"), json={
        "supplier_id": supplier_id, "invoice_number": invoice,
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "lines": [{"ndc": KETAMINE_50, "containers": 1, "lot": "KA1", "expiry": "2028-06-30"}]})


def entries(api) -> list[dict]:
    with api.ledger.reading() as conn:
        return load_snapshot(conn, DEA).entries


@pytest.mark.parametrize("kwargs, words", [
    ({"expires": "2026-01-31"}, "DEA registration expired on 2026-01-31"),
    ({"partner": False}, "is not an authorized trading partner under DSCSA"),
    ({"schedules": ("2", "2N", "4")}, "not Schedule III"),
], ids=["expired", "not an authorized trading partner", "no schedule III"])
def test_receipts_from_a_supplier_that_may_not_distribute_are_refused(api, kwargs, words):
    s = supplier(api, **kwargs)
    assert s.status_code == 201, s.text
    before = len(entries(api))
    r = receive(api, s.json()["supplier_id"])
    assert r.status_code == 409 and words in r.text, r.text
    assert '"supplier_id"' in r.text or "supplier_id" in r.json().get("field", ""), r.text
    assert len(entries(api)) == before  # nothing recorded


def test_a_supplier_needs_its_registration(api):
    r = api.client.post(api.url("/suppliers"), headers=api.headers("morgan"), json={
        "name": "Coastal Wholesale", "address": ADDRESS, "dea_number": "PB1234563"})
    assert r.status_code == 422 and "registration_expires_on" in r.text, r.text
    r = supplier(api, schedules=("3", "7"))
    assert r.status_code == 422 and "schedules" in r.text, r.text
    assert supplier(api, user="nora").status_code == 403  # a nurse does not add suppliers


def test_a_supplier_added_before_gets_its_registration_recorded_then_receipts_copy_it(api):
    # A supplier as the ledger recorded them before issue 19: no registration in the entry.
    def build(ctx):
        sig = ctx.signature(api.clinic.admin, Meaning.PERFORMED, roles=frozenset({Role.ADMINISTRATOR}))
        ctx.append(ev.SupplierAdded(supplier_id="SUP-OLD", name="Old Supply", address=ev.Address(
            "1 Dock St", "Dallas", "TX", "75201"), dea_number="PB1234563"), signatures=[sig], occurred_at=ctx.now)
        return {}

    api.ledger.execute(DEA, "add_supplier", {"type": "AddSupplier", "name": "Old Supply"}, build,
                       principal_id=api.clinic.admin.staff_id)
    listed = {s["supplier_id"]: s for s in api.client.get(api.url("/suppliers"), headers=api.headers("nora")).json()}
    assert listed["SUP-OLD"]["registration_expires_on"] is None and listed["SUP-OLD"]["schedules"] == []
    r = receive(api, "SUP-OLD")
    assert r.status_code == 409 and "DEA registration is not recorded here" in r.text, r.text
    assert "/suppliers/SUP-OLD/registration" in r.text

    body = {"registration_expires_on": "2030-12-31", "schedules": ["3N", "3"], "authorized_trading_partner": True}
    assert api.client.post(api.url("/suppliers/SUP-OLD/registration"), headers=api.headers("nora"),
                           json=body).status_code == 403
    missing = api.client.post(api.url("/suppliers/SUP-NONE/registration"), headers=api.headers("morgan"), json=body)
    assert missing.status_code == 404, missing.text
    rec = api.client.post(api.url("/suppliers/SUP-OLD/registration"), headers=api.headers("morgan"), json=body)
    assert rec.status_code == 201, rec.text
    r = receive(api, "SUP-OLD")
    assert r.status_code == 201, r.text
    receipt = [e for e in entries(api) if e["kind"] == "stock_received"][-1]
    assert receipt["supplier"]["registration"] == {"expires_on": "2030-12-31", "schedules": ["3", "3N"]}
    assert receipt["supplier"]["authorized_trading_partner"] is True
    # The original entry is untouched; the registration is a later entry; verify --deep agrees.
    kinds = [e["kind"] for e in entries(api)]
    assert "supplier_registration_recorded" in kinds
    report = verify(api.ledger, deep=True)
    assert report.ok, report.problems


def test_a_signed_clinic_records_a_supplier_registration_signed_by_its_manager(ledger, tmp_path):
    """With staff credentials (issue 17) the command's signature must cover the entry it writes."""
    from ledger import services
    from ledger.domain.commands import RecordSupplierRegistration
    from tests.integrity.test_staff_signatures_verify import signed_clinic

    chain = signed_clinic(ledger, tmp_path)
    services.record_supplier_registration(ledger, chain.manager, RecordSupplierRegistration(
        chain.ops.supplier_id, "2030-12-31", ("3N",), True))
    with ledger.reading() as conn:
        last = load_snapshot(conn, DEA).entries[-1]
    assert last["kind"] == "supplier_registration_recorded" and last["signatures"][0]["statement"]
    report = verify(ledger, deep=True, patient_keys=chain.ops.keys)
    assert report.ok, report.problems
