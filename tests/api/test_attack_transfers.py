"""Stock that leaves the registrant (transfers and returns) is signed by two people.

Before issue 15 a pharmacist alone could record sealed vials as transferred to any well-formed
DEA number or returned to a supplier: one login recording stock away. Now a second authenticated
person, who checks the vials against the invoice, signs with them; without one the command is
refused naming ``witness`` and nothing is written.
"""

from __future__ import annotations

import json

import pytest

from tests.api.test_attack_corrections import entry_count, problem_field, vial
from tests.api.test_clinical import ADDRESS, setup_floor, witnessed
from tests.conftest import BACKENDS, DEA2, an_hour_ago

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def a_return(vial_id: str) -> dict:
    return {"vial_ids": [vial_id], "recipient_type": "supplier", "recipient_name": "Gulf Medical Supply",
            "recipient_address": ADDRESS, "recipient_dea_number": "PB1234563", "invoice_number": "RET-1",
            "occurred_at": an_hour_ago().isoformat()}


def a_transfer(vial_id: str) -> dict:
    return {"vial_ids": [vial_id], "receiver_dea_number": DEA2, "receiver_name": "Dr. Other",
            "receiver_address": ADDRESS, "invoice_number": "TR-1", "occurred_at": an_hour_ago().isoformat(),
            "receiver_registration_expires_on": "2031-06-30", "receiver_schedules": ["3", "3N", "4", "5"]}


@pytest.mark.parametrize("path, body", [("/returns", a_return), ("/transfers", a_transfer)])
def test_one_person_cannot_send_stock_away(api, path, body):
    vials, _ = setup_floor(api)
    before = entry_count(api)
    r = api.client.post(api.url(path), json=body(vials[0]), headers=api.headers("pia"))
    assert r.status_code == 422 and problem_field(r) == "witness", r.text
    assert entry_count(api) == before and vial(api, vials[0])["state"] == "sealed"


def test_a_return_checked_by_a_second_person_is_signed_by_both(api):
    vials, _ = setup_floor(api)
    r, _ = witnessed(api, "pia", "/returns", a_return(vials[0]), "nora")
    assert r.status_code == 201, r.text
    seq = r.json()["entries"][0]["seq"]
    entry = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert {(s["staff_id"], s["meaning"]) for s in entry["signatures"]} == {
        (api.clinic.pharmacist.staff_id, "performed"), (api.clinic.nurse.staff_id, "witnessed")}
    assert vial(api, vials[0])["state"] == "returned"
