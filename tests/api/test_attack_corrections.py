"""Issue 15, attack 1: a correction that removes a sealed vial.

Before: a nurse posted ``POST .../corrections`` naming an unrelated infusion and a line removing
10.00 mL from a sealed vial; 201, the vial was empty and nothing was raised. Now a correction may
only move stock in the vials the corrected entry moved, by no more than that entry recorded, and
taking stock off the book needs a second authenticated person (manager or pharmacist) and
raises an alert with the evidence. Each refusal leaves the ledger as it was.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from ledger import services
from ledger.domain.commands import CorrectEntry, CorrectionLineInput
from ledger.domain.errors import Conflict
from ledger.domain.principal import AuthMethod, Principal
from ledger.services.alerts import attach_alert_rules
from tests.api.conftest import PASSWORD, entry_count
from tests.api.test_clinical import infusion, setup_floor, witnessed
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def alert_rules(api):
    """The served ledger runs the alert rules in every command (``serve`` attaches them)."""
    attach_alert_rules(api.ledger)


def vial(api, vial_id: str) -> dict:
    return api.client.get(api.url(f"/vials/{vial_id}"), headers=api.headers("pia")).json()


def correction(api, who: str, body: dict, approver: str | None = None):
    if approver is None:
        return api.client.post(api.url("/corrections"), json=body, headers=api.headers(who))
    return witnessed(api, who, "/corrections", body, approver)[0]


def problem_field(r) -> str | None:
    return (r.json().get("errors") or [{}])[0].get("field")


def an_infusion(api):
    vials, patient = setup_floor(api)
    r, _ = witnessed(api, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert r.status_code == 201, r.text
    return vials, r.json()["entries"][0]["seq"]


def test_the_attack_as_performed_is_refused_and_writes_nothing(api):
    vials, infusion_seq = an_infusion(api)
    sealed = vials[2]
    before, held = entry_count(api), vial(api, sealed)["ml_left"]
    body = {"corrects_seq": infusion_seq, "reason": "wrong vial recorded",
            "lines": [{"vial_id": sealed, "direction": "remove", "ml": "10.00"}]}
    alone = correction(api, "nora", body)
    assert alone.status_code == 422 and problem_field(alone) == "approver", alone.text
    # With a real second person the line is still refused: the infusion never drew from that vial.
    approved = correction(api, "nora", body, approver="pia")
    assert approved.status_code == 409 and problem_field(approved) == "lines[0].vial_id", approved.text
    assert entry_count(api) == before and vial(api, sealed)["ml_left"] == held


def test_a_removal_needs_a_second_person_with_authority(api):
    vials, infusion_seq = an_infusion(api)
    body = {"corrects_seq": infusion_seq, "reason": "0.20 mL more was drawn than typed",
            "lines": [{"vial_id": vials[0], "direction": "remove", "ml": "0.20"}]}
    before = entry_count(api)
    # A nurse may witness a waste but not approve stock off the book.
    by_nurse = correction(api, "nora", body, approver="ned")
    assert by_nurse.status_code == 403 and problem_field(by_nurse) == "approver", by_nurse.text
    assert entry_count(api) == before


def test_an_approved_removal_is_recorded_with_both_signatures_and_raises_an_alert(api):
    vials, infusion_seq = an_infusion(api)
    left = vial(api, vials[0])["ml_left"]
    body = {"corrects_seq": infusion_seq, "reason": "0.20 mL more was drawn than typed",
            "lines": [{"vial_id": vials[0], "direction": "remove", "ml": "0.20"}]}
    r = correction(api, "nora", body, approver="pia")
    assert r.status_code == 201, r.text
    seq = r.json()["entries"][0]["seq"]
    entry = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert {(s["staff_id"], s["meaning"]) for s in entry["signatures"]} == {
        (api.clinic.nurse.staff_id, "performed"), (api.clinic.pharmacist.staff_id, "approved")}
    assert vial(api, vials[0])["ml_left"] == f"{float(left) - 0.20:.2f}"
    alerts = api.client.get(api.url("/alerts"), params={"status": "all"}, headers=api.headers("morgan")).json()
    found = [a for a in alerts["items"] if a["rule"] == "stock_removed_by_correction"]
    assert len(found) == 1, alerts
    assert found[0]["evidence_seqs"] == [infusion_seq, seq]
    assert found[0]["figures"]["ml_removed"] == "0.20"
    assert set(found[0]["subjects"]) == {api.clinic.nurse.staff_id, api.clinic.pharmacist.staff_id}


def test_corrections_of_one_entry_never_move_more_than_it_recorded(api):
    vials, infusion_seq = an_infusion(api)  # drew 1.00 mL from vials[0]
    first = correction(api, "nora", {"corrects_seq": infusion_seq, "reason": "0.60 mL more drawn",
                                     "lines": [{"vial_id": vials[0], "direction": "remove", "ml": "0.60"}]},
                       approver="pia")
    assert first.status_code == 201, first.text
    before = entry_count(api)
    again = correction(api, "nora", {"corrects_seq": infusion_seq, "reason": "and 0.50 mL more",
                                     "lines": [{"vial_id": vials[0], "direction": "remove", "ml": "0.50"}]},
                       approver="pia")
    assert again.status_code == 409 and problem_field(again) == "lines[0].ml", again.text
    assert "earlier corrections" in again.text
    assert entry_count(api) == before


def test_the_approver_is_not_the_author(api):
    vials, infusion_seq = an_infusion(api)
    before = entry_count(api)
    body = {"corrects_seq": infusion_seq, "reason": "0.20 mL more drawn",
            "lines": [{"vial_id": vials[0], "direction": "remove", "ml": "0.20"}]}
    # Over HTTP a person cannot sign an assertion for their own command ...
    r = api.client.post(api.url("/witness-assertions"), headers=api.headers("pia"), json={
        "username": "pia", "password": PASSWORD, "body_sha256": hashlib.sha256(json.dumps(body).encode()).hexdigest()})
    assert r.status_code == 401 and r.json()["type"].endswith("/witness-is-actor"), r.text
    # ... and the service refuses it too, whatever interface calls it.
    pia = Principal(api.dea, api.clinic.pharmacist.staff_id, "Pia Pharmacist", AuthMethod.PASSWORD)
    cmd = CorrectEntry(infusion_seq, "0.20 mL more drawn", (CorrectionLineInput(vials[0], "remove", "0.20"),))
    with pytest.raises(Conflict) as refused:
        services.correct_entry(api.ledger, pia, cmd, approver=pia)
    assert refused.value.field == "approver"
    assert entry_count(api) == before


def test_putting_stock_back_into_the_vial_it_came_from_needs_no_approver(api):
    vials, infusion_seq = an_infusion(api)
    left = vial(api, vials[0])["ml_left"]
    r = correction(api, "nora", {"corrects_seq": infusion_seq, "reason": "0.30 mL typed as drawn was not drawn",
                                 "lines": [{"vial_id": vials[0], "direction": "add", "ml": "0.30"}]})
    assert r.status_code == 201, r.text
    assert vial(api, vials[0])["ml_left"] == f"{float(left) + 0.30:.2f}"
