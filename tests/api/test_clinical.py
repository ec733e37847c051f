"""Clinic operations over HTTP as the floor meets them: a patient, an infusion with its witnessed
waste in one command, a two-person count, a Form 41 destruction before two witnesses; patient
names and addresses only for the roles allowed, every read in the access log, never in logs."""

from __future__ import annotations

import hashlib
import json
import logging

from tests.api.conftest import PASSWORD
from tests.api.test_auth import ptype
from tests.api.test_commands import receipt
from tests.api.test_hygiene import Capture
from tests.conftest import KETAMINE_50, an_hour_ago

ADDRESS = {"street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}


def witnessed(api, actor: str, path: str, body: dict, *witnesses: str, key: str | None = None):
    """Send ``body`` as ``actor`` with assertions signed on the actor's device by ``witnesses``."""
    content = json.dumps(body).encode()
    tokens = []
    for w in witnesses:
        r = api.client.post(api.url("/witness-assertions"), headers=api.headers(actor), json={
            "username": w, "password": PASSWORD, "body_sha256": hashlib.sha256(content).hexdigest(),
            **({"totp": api.totp(w)} if api.totp(w) else {})})
        assert r.status_code == 201, r.text
        tokens.append(r.json()["assertion"])
    headers = api.headers(actor, **{"Content-Type": "application/json", "Witness-Assertion": ", ".join(tokens),
                                    **({"Idempotency-Key": key} if key else {})})
    return api.client.post(api.url(path), content=content, headers=headers), tokens


def setup_floor(api):
    rec = api.client.post(api.url("/receipts"), json=receipt(api, containers=3), headers=api.headers("nora")).json()
    pat = api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": ADDRESS},
                          headers=api.headers("nora"))
    assert pat.status_code == 201, pat.text
    return rec["vial_ids"], pat.json()["patient_id"]


def infusion(patient_id, vial_id, waste=True):
    body = {"patient_id": patient_id, "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vial_id, "ml": "1.00"}], "ml_given": "0.80",
            "started_at": an_hour_ago().isoformat(), "ended_at": an_hour_ago().isoformat()}
    if waste:
        body["waste"] = {"ml": "0.20", "method": "sharps container"}
    return body


def test_infusion_with_witnessed_waste_is_one_command_signed_by_both(api):
    vials, patient = setup_floor(api)
    r, tokens = witnessed(api, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert r.status_code == 201, r.text
    kinds = [e["kind"] for e in r.json()["entries"]]
    assert len(kinds) == 2, kinds
    waste_seq = r.json()["entries"][1]["seq"]
    entry = json.loads(api.client.get(api.url(f"/entries/{waste_seq}"), headers=api.headers("ari")).json()["canonical"])
    signers = {(s["staff_id"], s["meaning"], s["auth_method"]) for s in entry["signatures"]}
    assert (api.clinic.nurse2.staff_id, "witnessed", "password") in signers
    assert any(s[0] == api.clinic.nurse.staff_id for s in signers)
    # The same assertion on another infusion: refused, nothing recorded.
    again = api.client.post(api.url("/administrations"), content=json.dumps(infusion(patient, vials[1])).encode(),
                            headers=api.headers("nora", **{"Content-Type": "application/json",
                                                           "Witness-Assertion": tokens[0]}))
    assert again.status_code == 401
    # Waste without a witness: refused by the service.
    no = api.client.post(api.url("/administrations"), json=infusion(patient, vials[1]), headers=api.headers("nora"))
    assert no.status_code == 422 and no.json()["errors"][0]["field"] == "witness"
    by_patient = api.client.get(api.url("/entries"), params={"patient_id": patient}, headers=api.headers("casey"))
    assert [e["kind"] for e in by_patient.json()["items"]] == ["patient_registered", kinds[0]]


def test_patient_name_only_for_allowed_roles_and_every_read_logged(api):
    _, patient = setup_floor(api)
    cap = Capture()
    logging.getLogger("csledger.access").addHandler(cap)
    try:
        r = api.client.get(api.url(f"/patients/{patient}"), headers=api.headers("nora"))
        assert r.status_code == 200 and r.json()["name"] == "Jordan Example" and r.json()["matches_commitment"]
        assert api.client.get(api.url(f"/patients/{patient}"), headers=api.headers("avery")).status_code == 403
    finally:
        logging.getLogger("csledger.access").removeHandler(cap)
    assert "Jordan" not in "\n".join(cap.lines) and "Elm" not in "\n".join(cap.lines)
    log = api.client.get(api.url("/patient-access-log"), headers=api.headers("casey")).json()["items"]
    assert [(x["staff_id"], x["patient_id"]) for x in log] == [(api.clinic.nurse.staff_id, patient)]
    entries = api.client.get(api.url("/entries?kind=patient_registered"), headers=api.headers("casey")).text
    assert "Jordan" not in entries and "Elm" not in entries


def test_two_person_count_and_destruction_before_two_witnesses(api):
    vials, _ = setup_floor(api)
    start = api.client.post(api.url("/counts"), json={"ndcs": [KETAMINE_50], "blind": True}, headers=api.headers("nora"))
    assert start.status_code == 201, start.text
    session = start.json()["session_id"]
    body = {"lines": [{"ndc": KETAMINE_50, "sealed_containers": 3}], "occurred_at": an_hour_ago().isoformat()}
    alone = api.client.post(api.url(f"/counts/{session}/submissions"), json=body, headers=api.headers("nora"))
    assert alone.status_code == 401 and ptype(alone) == "witness-required"
    r, _ = witnessed(api, "nora", f"/counts/{session}/submissions", body, "ned")
    assert r.status_code == 201, r.text
    destroy = {"vial_ids": [vials[2]], "method": "chemical digestion", "place": "med room", "reason": "damaged",
               "occurred_at": an_hour_ago().isoformat()}
    one, _ = witnessed(api, "pia", "/destructions", destroy, "ned")
    assert one.status_code == 422 and one.json()["errors"][0]["field"] == "witnesses"
    two, _ = witnessed(api, "pia", "/destructions", destroy, "ned", "casey")
    assert two.status_code == 201, two.text
    v = api.client.get(api.url(f"/vials/{vials[2]}"), headers=api.headers("pia")).json()
    assert v["ml_left"] == "0.00"


def test_audit_and_discrepancies_as_json_with_decimal_strings(api):
    """Issue 20: the audit takes local days and runs between two counts; a floor with receipts
    and no inventory or count has none to run between (422 naming ``to``, offering none). The
    audit's JSON itself (decimal strings, no floats) is tested in tests/reports/test_one_period.py."""
    vials, patient = setup_floor(api)
    r, _ = witnessed(api, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert r.status_code == 201
    a = api.client.get(api.url("/audit"), headers=api.headers("casey"), params={"from": "2026-01-01", "to": "2026-12-31"})
    assert a.status_code == 422, a.text
    assert a.json()["errors"][0]["field"] == "to" and a.json()["offers"] == {"from": [], "to": []}
    assert a.json()["type"].endswith("audit-window-unavailable")
    assert api.client.get(api.url("/audit"), headers=api.headers("nora"), params={
        "from": "2026-01-01", "to": "2026-12-31"}).status_code == 403
    bad = api.client.get(api.url("/audit"), headers=api.headers("casey"), params={"from": "2026-02-01", "to": "2026-01-01"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to"
    assert api.client.get(api.url("/discrepancies"), headers=api.headers("casey")).json() == []
    assert api.client.get(api.url("/policy"), headers=api.headers("nora")).status_code == 200
