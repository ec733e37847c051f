"""Issue 15, attack 3: "one administrator is two people".

Before: an administrator granted themself ``nurse``, enrolled a second staff member printed "Ned
Nurse" (a Cyrillic look-alike of an existing name was accepted too), set its temporary password
and used it as the witness of their own 9.5 mL waste; nothing was refused or raised.

Now: no one grants a role to themself; enrolling staff and granting roles take a second manager
or administrator (``Witness-Assertion``, signed ``approved``), neither of them the grantee; a
registrant whose only manager or administrator is the actor may enrol alone, the entry shows it
(the actor signs ``approved`` too), and for 90 days an entry signed by both the enroller and the
person enrolled raises ``witness_enrolled_by_actor`` (high). Printed names in two scripts are
refused; a name that looks like an existing one needs a visible suffix. Each refusal writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain import names
from ledger.domain.alerts import alone_enrolment, witness_enrolled_by_actor
from ledger.domain.commands import RevokeRole
from ledger.integrity.canonical import format_time
from ledger.services.alerts import attach_alert_rules, evaluate, load_entries
from tests.api.conftest import PASSWORD, entry_count, second_clinic
from tests.conftest import BACKENDS, CLINIC_TZ, DEA, DEA2, KETAMINE_50

both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
ADDRESS = {"street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}
RULE = "witness_enrolled_by_actor"


def entry(api, seq: int, dea: str = DEA) -> dict:
    with api.ledger.engine.connect() as c:
        data = c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r AND seq = :s"),
                         {"r": dea, "s": seq}).scalar_one()
    return json.loads(bytes(data))


def field(r) -> str | None:
    return (r.json().get("errors") or [{}])[0].get("field")


def send(api, actor: str, path: str, body: dict, approver: str | None = None, *, dea: str = DEA,
         password: str = PASSWORD):
    """POST ``body`` as ``actor``; ``approver`` signs on the actor's device (``Witness-Assertion``)."""
    content = json.dumps(body).encode()
    headers = {**api.headers(actor, dea=dea), "Content-Type": "application/json"}
    if approver is not None:
        r = api.client.post(api.url("/witness-assertions", dea), headers=api.headers(actor, dea=dea), json={
            "username": approver, "password": password, "body_sha256": hashlib.sha256(content).hexdigest(),
            **({"totp": api.totp(approver, dea)} if api.totp(approver, dea) else {})})
        assert r.status_code == 201, r.text
        headers["Witness-Assertion"] = r.json()["assertion"]
    return api.client.post(api.url(path, dea), content=content, headers=headers)


def person(i: str) -> dict:
    return {"printed_name": f"Robin Newcomer {i}", "username": f"robin{i}", "roles": ["nurse"]}


# --- two managers or administrators -------------------------------------------------------------


@both
def test_no_one_grants_a_role_to_themself(api):
    before = entry_count(api)
    for who, approver in (("avery", "morgan"), ("morgan", "avery"), ("avery", None)):
        me = api.auth.store.staff_by_username(DEA, who).staff_id
        r = send(api, who, f"/staff/{me}/roles", {"role": "nurse"}, approver)
        assert r.status_code == 403 and field(r) == "staff_id", r.text
        assert "themself" in r.json()["detail"]
    assert entry_count(api) == before


@both
def test_enrolment_and_grant_without_an_approver_are_refused_once_there_are_two_managers(api):
    before = entry_count(api)
    r = send(api, "avery", "/staff", person("1"))
    assert r.status_code == 422 and field(r) == "approver", r.text
    assert "Morgan Manager" in r.json()["detail"]
    r = send(api, "morgan", f"/staff/{api.clinic.auditor.staff_id}/roles", {"role": "pharmacist"})
    assert r.status_code == 422 and field(r) == "approver", r.text
    assert entry_count(api) == before
    # With the second manager's assertion both go through, signed by both.
    r = send(api, "avery", "/staff", person("1"), approver="morgan")
    assert r.status_code == 201, r.text
    body = r.json()
    morgan = api.auth.store.staff_by_username(DEA, "morgan").staff_id
    assert body["approved_by"] == morgan and body["enrolled_alone"] is False
    sigs = entry(api, body["entries"][0]["seq"])["signatures"]
    assert [(s["staff_id"], s["meaning"]) for s in sigs] == [(api.clinic.admin.staff_id, "performed"),
                                                           (morgan, "approved")]
    assert sigs[1]["auth_method"] == "password+totp"
    r = send(api, "avery", f"/staff/{body['staff_id']}/roles", {"role": "pharmacist"}, approver="morgan")
    assert r.status_code == 201 and r.json()["granted_alone"] is False, r.text


@both
def test_the_approver_is_a_second_manager_and_not_the_grantee(api):
    morgan = api.auth.store.staff_by_username(DEA, "morgan").staff_id
    before = entry_count(api)
    r = send(api, "avery", f"/staff/{morgan}/roles", {"role": "pharmacist"}, approver="morgan")
    assert r.status_code == 409 and field(r) == "approver", r.text
    # A nurse cannot approve: the approver's role is checked in the transaction.
    r = send(api, "avery", f"/staff/{api.clinic.auditor.staff_id}/roles", {"role": "pharmacist"}, approver="nora")
    assert r.status_code == 403 and field(r) == "approver", r.text
    r = send(api, "avery", "/staff", person("2"), approver="nora")
    assert r.status_code == 403 and field(r) == "approver", r.text
    assert entry_count(api) == before


# --- names --------------------------------------------------------------------------------------


@both
def test_a_printed_name_mixing_scripts_is_refused(api):
    before = entry_count(api)
    for name in ("N\u0435d Nurse", "Nora \u039durse"):  # Cyrillic e; Greek capital nu
        r = send(api, "avery", "/staff", {"printed_name": name, "username": "nedx", "roles": ["nurse"]},
                 approver="morgan")
        assert r.status_code == 422 and field(r) == "printed_name", r.text
        assert "scripts" in r.json()["detail"]
    assert entry_count(api) == before


@both
def test_a_look_alike_name_needs_a_visible_suffix(api):
    ned = api.clinic.nurse2.staff_id
    before = entry_count(api)
    for name in ("Ned Nurse", "NED NURSE", "\U0001d40d\U0001d41e\U0001d41d Nurse", "Ned Nurs\u00e9", "Ned Nurse."):
        r = send(api, "avery", "/staff", {"printed_name": name, "username": "nedx", "roles": ["nurse"]},
                 approver="morgan")
        assert r.status_code == 409 and field(r) == "printed_name", (name, r.text)
        assert f"looks like 'Ned Nurse' ({ned}); add a distinguishing suffix such as '{name} (2)'" in r.json()["detail"]
    r = send(api, "avery", "/staff", {"printed_name": "Nora Nurse", "username": "rnorgan", "roles": []},
             approver="morgan")
    assert r.status_code == 409 and field(r) == "printed_name", r.text
    r = send(api, "avery", "/staff", {"printed_name": "Ned Nurse (2)", "username": "rnorgan", "roles": []},
             approver="morgan")
    assert r.status_code == 409 and field(r) == "username" and "'morgan'" in r.json()["detail"], r.text
    assert entry_count(api) == before
    r = send(api, "avery", "/staff", {"printed_name": "Ned Nurse (2)", "username": "ned2", "roles": ["nurse"]},
             approver="morgan")
    assert r.status_code == 201, r.text
    r = send(api, "avery", "/staff", {"printed_name": "Ned Nurse (\uff12)", "username": "ned3", "roles": []},
             approver="morgan")  # a full-width 2 is the same suffix
    assert r.status_code == 409 and "such as 'Ned Nurse (3)'" in r.json()["detail"], r.text


# --- a registrant with a single administrator -------------------------------------------------------


def _single_manager_registrant(api):
    """DEA2 run by one person, Mia (manager, administrator and nurse), as the attacker would set it
    up: its founding administrator enrols Mia alone, Mia then ends the founder's administrator role."""
    other = second_clinic(api)
    mia = other.enroll("Mia Manager", "mia", "manager", "administrator", "nurse")
    services.revoke_role(api.ledger, mia, RevokeRole(other.admin.staff_id, "administrator", "handed over to Mia"))
    api.set_password("mia", dea=DEA2)
    return other, mia


def _now(api) -> datetime:
    return api.clock()


def _infusion_with_waste(api, other, witness: str, witness_password: str, actor: str = "mia") -> int:
    """``actor`` receives a vial, records an infusion of 0.50 mL from it and wastes 9.50 mL,
    witnessed; returns the waste entry's seq."""
    now = _now(api)
    rec = send(api, actor, "/receipts", {
        "supplier_id": other.supplier_id, "invoice_number": f"INV-{now.timestamp():.0f}",
        "occurred_at": (now - timedelta(hours=2)).isoformat(),
        "lines": [{"ndc": KETAMINE_50, "containers": 1, "lot": "KA2611", "expiry": "2030-06-30"}]}, dea=DEA2)
    assert rec.status_code == 201, rec.text
    pat = send(api, actor, "/patients", {"name": "Jordan Example", "address": ADDRESS}, dea=DEA2)
    assert pat.status_code == 201, pat.text
    at = (now - timedelta(hours=1)).isoformat()
    body = {"patient_id": pat.json()["patient_id"], "prescriber_dea_number": DEA, "weight_kg": "80.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": rec.json()["vial_ids"][0], "ml": "10.00"}],
            "ml_given": "0.50", "started_at": at, "ended_at": at, "waste": {"ml": "9.50", "method": "sharps container"}}
    r = send(api, actor, "/administrations", body, approver=witness, dea=DEA2, password=witness_password)
    assert r.status_code == 201, r.text
    return next(e["seq"] for e in r.json()["entries"] if e["kind"] == "dose_wasted")


def _alerts(api, reader: str = "mia") -> list[dict]:
    """The registrant's ``witness_enrolled_by_actor`` alerts, as its manager reads them."""
    r = api.client.get(api.url(f"/alerts?status=all&rule={RULE}", DEA2), headers=api.headers(reader, dea=DEA2))
    assert r.status_code == 200, r.text
    return r.json()["items"]


@both
def test_the_attack_alone_raises_the_alert_and_not_after_90_days(api):
    api.ledger.clock = api.clock  # the ledger and the logins share the clock the test moves
    attach_alert_rules(api.ledger)
    other, mia = _single_manager_registrant(api)
    # The look-alike of the nurse already there, in one script or two: refused, nothing written.
    before = entry_count(api)
    for name in ("Ned Nurse", "N\u0435d Nurse"):
        r = send(api, "mia", "/staff", {"printed_name": name, "username": "nn", "roles": ["nurse"]}, dea=DEA2)
        assert r.status_code in (409, 422) and field(r) == "printed_name", r.text
    # Mia cannot hand herself a role either.
    r = send(api, "mia", f"/staff/{mia.staff_id}/roles", {"role": "pharmacist"}, dea=DEA2)
    assert r.status_code == 403 and field(r) == "staff_id", r.text
    assert entry_count(api) == before
    # With a visible suffix the enrolment goes through, alone: no one else could approve it.
    r = send(api, "mia", "/staff", {"printed_name": "Ned Nurse (2)", "username": "nn", "roles": ["nurse"]}, dea=DEA2)
    assert r.status_code == 201, r.text
    assert r.json()["enrolled_alone"] is True and r.json()["approved_by"] == mia.staff_id
    puppet, enrol_seq = r.json()["staff_id"], r.json()["entries"][0]["seq"]
    assert [(s["staff_id"], s["meaning"]) for s in entry(api, enrol_seq, DEA2)["signatures"]] == [
        (mia.staff_id, "performed"), (mia.staff_id, "approved")]
    # Mia gives it a temporary password; the puppet replaces it, then witnesses Mia's waste.
    temp, chosen = "temporary harbor 42", "seven silver kites fly"
    r = api.client.post(api.url(f"/staff/{puppet}/password", DEA2), json={"password": temp},
                        headers=api.headers("mia", dea=DEA2))
    assert r.status_code == 200, r.text
    r = api.login("nn", temp, dea=DEA2)
    assert r.status_code == 201, r.text
    r = api.client.post(api.url("/me/password", DEA2), json={"current_password": temp, "new_password": chosen},
                        headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert r.status_code == 204, r.text
    waste_seq = _infusion_with_waste(api, other, "nn", chosen)
    [alert] = _alerts(api)
    assert alert["severity"] == "high" and set(alert["subjects"]) == {mia.staff_id, puppet}
    assert alert["evidence_seqs"] == [enrol_seq, waste_seq]
    assert alert["raised_seq"] == waste_seq + 1  # in the waste's own transaction
    # 91 days on, the same pair witnessing raises nothing new.
    api.clock.advance(days=91)
    api.tokens.clear()
    _infusion_with_waste(api, other, "nn", chosen)
    assert len(_alerts(api)) == 1
    # The scan's rules over the whole log find that one alert and no other (same key).
    with api.ledger.reading() as c:
        log = load_entries(c, DEA2)
    assert [c.alert_key for c in evaluate(log, _now(api), CLINIC_TZ) if c.rule == RULE] == [alert["alert_key"]]


@both
def test_the_attack_through_a_puppet_manager_raises_the_alert(api):
    """The administrator cannot grant themself ``nurse``, so they enrol a manager alone, who grants
    it to them alone (no one else holds manager or administrator); the puppet nurse's enrolment is
    then "approved" by that manager. It was done alone all the same: the waste it witnesses for the
    administrator raises the alert."""
    attach_alert_rules(api.ledger)
    other = second_clinic(api)
    avery = other.admin.staff_id
    r = send(api, "avery", "/staff", {"printed_name": "Max Puppet", "username": "max", "roles": ["manager"]}, dea=DEA2)
    assert r.status_code == 201 and r.json()["enrolled_alone"] is True, r.text
    api.set_password("max", dea=DEA2)
    r = send(api, "max", f"/staff/{avery}/roles", {"role": "nurse"}, dea=DEA2)
    assert r.status_code == 201 and r.json()["granted_alone"] is True, r.text
    api.tokens.clear()  # Avery's new role counts from the next login
    before = entry_count(api)
    nurse = {"printed_name": "Ned Nurse (2)", "username": "nn", "roles": ["nurse"]}
    r = send(api, "avery", "/staff", nurse, dea=DEA2)
    assert r.status_code == 422 and field(r) == "approver", r.text
    assert entry_count(api) == before
    r = send(api, "avery", "/staff", nurse, approver="max", dea=DEA2)
    assert r.status_code == 201 and r.json()["enrolled_alone"] is False, r.text
    puppet, enrol_seq = r.json()["staff_id"], r.json()["entries"][0]["seq"]
    api.set_password("nn", dea=DEA2)
    waste_seq = _infusion_with_waste(api, other, "nn", PASSWORD, actor="avery")
    [alert] = _alerts(api, reader="max")
    assert alert["severity"] == "high" and set(alert["subjects"]) == {avery, puppet}
    assert alert["evidence_seqs"] == [enrol_seq, waste_seq]


# --- the rule itself ------------------------------------------------------------------------------


T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _enrolled(seq: int, staff_id: str, *signers: str, at: datetime = T0) -> dict:
    return {"kind": "staff_enrolled", "seq": seq, "staff_id": staff_id, "recorded_at": format_time(at),
            "occurred_at": format_time(at),
            "signatures": [{"staff_id": s, "meaning": "performed" if i == 0 else "approved"} for i, s in enumerate(signers)]}


def _waste(seq: int, performer: str, witness: str, at: datetime) -> dict:
    return {"kind": "dose_wasted", "seq": seq, "recorded_at": format_time(at), "occurred_at": format_time(at),
            "signatures": [{"staff_id": performer, "meaning": "performed"}, {"staff_id": witness, "meaning": "witnessed"}]}


def test_an_enrolment_approved_only_by_someone_enrolled_alone_is_alone_too():
    log = {e["staff_id"]: e for e in (
        _enrolled(1, "S1", "S1"),  # the founding administrator, at the console
        _enrolled(4, "S4", "S1", "S1"),  # a manager, enrolled alone by S1
        _enrolled(7, "S7", "S1", "S4"),  # a nurse, "approved" by that manager
        _enrolled(9, "S9", "S1", "S8"),  # approved by someone S1 did not enrol alone
    )}
    assert alone_enrolment("S1", log.get) is None
    assert alone_enrolment("S4", log.get).vouched_by == {"S1"}
    assert alone_enrolment("S7", log.get).vouched_by == {"S1", "S4"}
    assert alone_enrolment("S9", log.get) is None
    day = timedelta(days=1)
    # The two puppets witnessing each other, and the founder with either: high alerts.
    for performer, witness in (("S4", "S7"), ("S1", "S7"), ("S1", "S4")):
        [c] = witness_enrolled_by_actor(_waste(20, performer, witness, T0 + 10 * day), log.get)
        assert c.rule == RULE and c.severity == "high" and set(c.subjects) == {performer, witness}
    assert witness_enrolled_by_actor(_waste(20, "S9", "S1", T0 + 10 * day), log.get) == []
    assert witness_enrolled_by_actor(_waste(20, "S1", "S7", T0 + 90 * day), log.get) == []
    # A late entry backdated into the window still counts; so does one recorded inside it.
    late = {**_waste(20, "S1", "S7", T0 + 100 * day), "occurred_at": format_time(T0 + 80 * day)}
    assert len(witness_enrolled_by_actor(late, log.get)) == 1
    # An approval by the manager after its own 90 days is independent again.
    log["S7"] = _enrolled(7, "S7", "S1", "S4", at=T0 + 91 * day)
    assert alone_enrolment("S7", log.get) is None


def test_names_skeletons():
    existing = [("S3", "Ned Nurse"), ("S5", "Ian Smith")]
    assert names.mixed_scripts("N\u0435d Nurse") == {"LATIN", "CYRILLIC"}
    for ok in ("José Núñez", "山田 太郎", "山田 さくら", "Дмитрий Иванов", "O'Neil-Smith Jr."):
        assert names.mixed_scripts(ok) is None, ok
    for alike in ("ned nurse", "Ned  Nurse", "Ned-Nurse", "lan Smith", "IAN SMITH"):
        assert names.look_alike(alike, existing) is not None, alike
    for distinct in ("Ned Nurse (2)", "Ned Nurse 2", "Ned Nurses", "Nan Smith"):
        assert names.look_alike(distinct, existing) is None, distinct
    assert names.suffixed("Ned Nurse", [*existing, ("S9", "Ned Nurse (2)")]) == "Ned Nurse (3)"


@both
def test_revoking_a_manager_needs_a_second_manager_where_one_exists(api):
    """Revoking the other managers one by one was a way to become the only one, free to enrol and
    grant alone (review of issue 15): a manager or administrator role is revoked by two people."""
    mona = api.clinic.enroll("Mona Manager", "mona", "manager")  # a third manager/administrator
    before = entry_count(api)
    alone = send(api, "avery", f"/staff/{mona.staff_id}/role-revocations", {"role": "manager", "reason": "left"})
    assert alone.status_code == 422 and field(alone) == "approver", alone.text
    assert entry_count(api) == before
    by_herself = send(api, "avery", f"/staff/{mona.staff_id}/role-revocations", {"role": "manager", "reason": "left"},
                      approver="morgan")
    assert by_herself.status_code == 201, by_herself.text
    morgan = api.client.get(api.url("/me"), headers=api.headers("morgan")).json()["staff_id"]
    sigs = entry(api, by_herself.json()["entries"][0]["seq"])["signatures"]
    assert [(s["staff_id"], s["meaning"]) for s in sigs] == [(api.clinic.admin.staff_id, "approved"),
                                                            (morgan, "approved")]
    # a nurse role is still revoked by one manager or administrator
    nurse = send(api, "avery", f"/staff/{api.clinic.nurse2.staff_id}/role-revocations",
                 {"role": "nurse", "reason": "moved"})
    assert nurse.status_code == 201, nurse.text


@both
def test_a_temporary_password_set_by_someone_else_raises_an_alert_naming_both(api):
    """Whoever sets a temporary password knows it: the reset is put in front of the compliance
    officer, and nobody resets their own password this way."""
    nora = api.clinic.nurse.staff_id
    r = api.client.post(api.url(f"/staff/{nora}/password"), json={"password": "temporary harbor 42"},
                        headers=api.headers("avery"))
    assert r.status_code == 200, r.text
    alerts = api.client.get(api.url("/alerts"), params={"status": "all"}, headers=api.headers("morgan")).json()
    found = [a for a in alerts["items"] if a["rule"] == "staff_password_set"]
    assert len(found) == 1 and found[0]["subjects"] == [api.clinic.admin.staff_id, nora], found
    own = api.client.post(api.url(f"/staff/{api.clinic.admin.staff_id}/password"),
                          json={"password": "temporary harbor 43"}, headers=api.headers("avery"))
    assert own.status_code == 403 and field(own) == "staff_id", own.text
