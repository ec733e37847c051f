"""The date of birth, a patient's second identifier (issue 21): optional, sealed and committed
with the name and address; checked (a real date, from 1900, not in the future) with the field
named and the value never echoed; left out of a change, kept; patients registered before it read
and verify as they did, their commitments unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import timedelta

import pytest

from ledger.integrity.patient_commitments import canonical_details, open_commitment
from ledger.services.verify import verify
from ledger.storage.patient_keys import PatientDetails, PatientKeys
from tests.api.test_clinical import ADDRESS
from tests.conftest import BACKENDS

BOTH = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def _register(api, **over):
    return api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": ADDRESS, **over},
                           headers=api.headers("nora"))


def _read(api, pid: str) -> dict:
    r = api.client.get(api.url(f"/patients/{pid}"), headers=api.headers("nora"))
    assert r.status_code == 200, r.text
    return r.json()


def _change(api, pid: str, **over):
    body = {"name": "Jordan Example", "address": ADDRESS, "reason": "moved", **over}
    return api.client.post(api.url(f"/patients/{pid}/details-changes"), json=body, headers=api.headers("nora"))


@BOTH
def test_register_with_a_date_of_birth_change_it_and_read_it_back(api):
    r = _register(api, date_of_birth="1984-03-07")
    assert r.status_code == 201, r.text
    pid = r.json()["patient_id"]
    got = _read(api, pid)
    assert got["date_of_birth"] == "1984-03-07" and got["matches_commitment"] is True
    # the entry holds a commitment, never the date
    seq = r.json()["entries"][0]["seq"]
    entry = api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("casey")).text
    assert "1984" not in entry
    r = _change(api, pid, date_of_birth="1984-03-08", reason="date of birth corrected from the ID")
    assert r.status_code == 201, r.text
    assert _read(api, pid)["date_of_birth"] == "1984-03-08"
    # a change that leaves it out (a client from before issue 21) keeps it
    r = _change(api, pid, address={**ADDRESS, "street": "40 Oak Ave"})
    assert r.status_code == 201, r.text
    got = _read(api, pid)
    assert got["date_of_birth"] == "1984-03-08" and got["address"]["street"] == "40 Oak Ave"
    assert got["matches_commitment"] is True
    assert verify(api.ledger, deep=True, patient_keys=api.client.app.state.patient_keys).ok


@BOTH
def test_without_a_date_of_birth_as_before(api):
    r = _register(api)
    assert r.status_code == 201, r.text
    got = _read(api, r.json()["patient_id"])
    assert got["date_of_birth"] is None and got["matches_commitment"] is True


@pytest.mark.parametrize("dob, words", [
    ("1984-02-30", "is not a real date"), ("07/03/1984", "is not a real date"), ("1984-3-7", "is not a real date"),
    ("1899-12-31", "before 1900"), ("tomorrow", "is not a real date")])
@BOTH
def test_a_wrong_date_of_birth_is_refused_naming_the_field_not_the_value(api, dob, words):
    before = api.client.get(api.url("/entries"), headers=api.headers("casey")).json()["items"]
    r = _register(api, date_of_birth=dob)
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "date_of_birth" and words in err["reason"], r.text
    assert dob not in json.dumps(r.json()["errors"])  # health data is not echoed
    assert api.client.get(api.url("/entries"), headers=api.headers("casey")).json()["items"] == before


@BOTH
def test_a_date_of_birth_in_the_future_is_refused_on_register_and_change(api):
    tomorrow = (api.clock() + timedelta(days=2)).date().isoformat()
    r = _register(api, date_of_birth=tomorrow)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "date_of_birth", r.text
    assert "future" in r.json()["errors"][0]["reason"]
    pid = _register(api, date_of_birth="1990-01-01").json()["patient_id"]
    r = _change(api, pid, date_of_birth=tomorrow)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "date_of_birth", r.text
    assert _read(api, pid)["date_of_birth"] == "1990-01-01"
    assert _register(api, date_of_birth="1900-01-01").status_code == 201  # the first day taken


def test_details_without_a_date_of_birth_keep_their_bytes_and_commitments():
    """A registry row sealed before issue 21 (no date_of_birth key) opens with None, and its
    commitment, v1 or v2, is the one recorded: the canonical bytes are the five fields' bytes."""
    keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
    five = {"name": "Pat Alvarez", "street": "1 Elm St", "city": "Austin", "state": "TX", "postal_code": "78701"}
    old_bytes = json.dumps(five, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    d = PatientDetails(**five)
    assert d.canonical() == old_bytes and d.as_dict() == five
    # a row sealed by the code before: the same plaintext, decrypted by today's code
    nonce = secrets.token_bytes(12)
    sealed = nonce + keys._aead.encrypt(nonce, old_bytes, b"RX1234563/P7")
    opened = keys.open("RX1234563", "P7", sealed)
    assert opened.date_of_birth is None and opened == d
    # with a date of birth: committed (another date is another commitment) and openable offline
    born = PatientDetails(**five, date_of_birth="1984-03-07")
    assert born.canonical() != old_bytes and keys.commitment("R", "P7", born) != keys.commitment("R", "P7", d)
    c = keys.commitment("R", "P7", born)
    assert open_commitment("R", "P7", born.as_dict(), keys.opening("R", "P7", born), c)
    assert not open_commitment("R", "P7", {**born.as_dict(), "date_of_birth": "1984-03-08"},
                               keys.opening("R", "P7", born), c)
    assert not open_commitment("R", "P7", five, keys.opening("R", "P7", born), c)  # dropping it does not open
    with pytest.raises(ValueError):
        canonical_details({**five, "ssn": "x"})  # only the optional fields the scheme names
    assert hashlib.sha256(old_bytes).hexdigest() == hashlib.sha256(d.canonical()).hexdigest()


def test_a_report_embedding_a_date_of_birth_checks_offline():
    """An administration log embeds each patient's committed details beside the opening: with a
    date of birth they are six fields, and the offline check takes them; an edited date fails."""
    from reports.administrations import check_openings

    keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
    born = PatientDetails("Pat Alvarez", "1 Elm St", "Austin", "TX", "78701", date_of_birth="1984-03-07")
    figures = {"rows": [{"patient_id": "P7", "seq": 5, "patient_commitment": keys.commitment("R", "P7", born),
                         "patient_commitment_openable": True}]}
    ann = {"registrant": "R", "patients": {"P7": {"name": born.name, "address": "1 Elm St, Austin, TX 78701",
                                                  "details": born.as_dict(), "opening": keys.opening("R", "P7", born)}}}
    assert check_openings(ann, figures) == ([], 1, 0)
    ann["patients"]["P7"]["details"] = {**born.as_dict(), "date_of_birth": "1984-03-08"}
    problems, _, _ = check_openings(ann, figures)
    assert problems and "do not open" in problems[0] and "1984" not in problems[0]
    ann["patients"]["P7"]["details"] = {**born.as_dict(), "ssn": "x"}  # no field beyond the scheme's
    problems, _, _ = check_openings(ann, figures)
    assert any("five text fields" in p for p in problems)
