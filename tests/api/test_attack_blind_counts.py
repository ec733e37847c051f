"""Issue 15, attack 6: blind counts can peek.

Before: a counter could ``GET .../stock`` while their blind count was open and copy the book.
Now every read of stock figures is recorded (``stock_reads``, append-only); a blind count lists
the reads its two counters made while it was open, every line then opens a discrepancy (a count
taken after looking confirms nothing) and an alert names the readers. A session stays open at
most 30 minutes.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ledger.services.alerts import attach_alert_rules
from tests.api.test_attack_corrections import entry_count
from tests.api.test_clinical import setup_floor, witnessed
from tests.conftest import BACKENDS, KETAMINE_50, an_hour_ago

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def alert_rules(api):
    attach_alert_rules(api.ledger)


def start(api, who="nora") -> str:
    r = api.client.post(api.url("/counts"), json={"ndcs": [KETAMINE_50], "blind": True}, headers=api.headers(who))
    assert r.status_code == 201, r.text
    assert "expected_ml" not in json.dumps(r.json())  # the form never shows the book
    return r.json()["session_id"]


def submit(api, session: str, sealed: int, who="nora", second="ned"):
    body = {"lines": [{"ndc": KETAMINE_50, "sealed_containers": sealed}], "occurred_at": an_hour_ago().isoformat()}
    r, _ = witnessed(api, who, f"/counts/{session}/submissions", body, second)
    return r


def count_entry(api, r) -> dict:
    seq = r.json()["entries"][0]["seq"]
    return json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])


def test_an_honest_blind_count_that_matches_opens_nothing(api):
    setup_floor(api)  # 3 sealed vials
    r = submit(api, start(api), 3)
    assert r.status_code == 201, r.text
    assert r.json()["discrepancy_ids"] == [] and r.json()["book_read_during_count"] == []
    assert count_entry(api, r)["book_reads"] == []


@pytest.mark.parametrize("peeker, path", [("nora", "/stock"), ("ned", "/vials"), ("nora", "/vials/{vial}")])
def test_a_counter_who_reads_the_book_is_listed_and_the_count_confirms_nothing(api, peeker, path):
    vials, _ = setup_floor(api)
    session = start(api)
    seen = api.client.get(api.url(path.format(vial=vials[0])), headers=api.headers(peeker))
    assert seen.status_code == 200
    r = submit(api, session, 3)  # the count matches the book it was copied from
    assert r.status_code == 201, r.text
    staff = {"nora": api.clinic.nurse.staff_id, "ned": api.clinic.nurse2.staff_id}[peeker]
    reads = r.json()["book_read_during_count"]
    assert [x["staff_id"] for x in reads] == [staff]
    assert len(r.json()["discrepancy_ids"]) == 1
    entry = count_entry(api, r)
    assert [b["staff_id"] for b in entry["book_reads"]] == [staff]
    assert entry["lines"][0]["difference_ml"] == "0.00" and entry["lines"][0]["discrepancy_id"]
    disc = api.client.get(api.url("/discrepancies"), headers=api.headers("morgan")).json()
    assert [d["discrepancy_id"] for d in disc] == r.json()["discrepancy_ids"]
    alerts = api.client.get(api.url("/alerts"), params={"status": "all"}, headers=api.headers("morgan")).json()
    found = [a for a in alerts["items"] if a["rule"] == "book_read_during_blind_count"]
    assert len(found) == 1 and found[0]["subjects"] == [staff] and found[0]["evidence_seqs"] == [entry["seq"]]


def test_reads_by_someone_else_or_before_the_session_are_not_the_counters(api):
    setup_floor(api)
    api.client.get(api.url("/stock"), headers=api.headers("nora"))  # before the count opened
    session = start(api)
    api.client.get(api.url("/stock"), headers=api.headers("pia"))  # not a counter
    r = submit(api, session, 3)
    assert r.status_code == 201, r.text
    assert r.json()["book_read_during_count"] == [] and r.json()["discrepancy_ids"] == []


def test_a_count_session_closes_after_30_minutes(api):
    api.ledger.clock = api.clock  # the ledger's clock moves with the test's
    setup_floor(api)
    session = start(api)
    api.clock.advance(minutes=31)
    api.tokens.clear()  # the logins went idle too: sign in again
    before = entry_count(api)
    r = submit(api, session, 3)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "session_id", r.text
    assert "30 minutes" in r.text
    assert entry_count(api) == before


def test_the_read_record_cannot_be_erased(api):
    setup_floor(api)
    api.client.get(api.url("/stock"), headers=api.headers("nora"))
    with pytest.raises(sa.exc.DatabaseError), api.ledger.engine.begin() as c:
        c.execute(sa.text("DELETE FROM stock_reads"))
    with api.ledger.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM stock_reads")).scalar_one() == 1


def test_a_counting_manager_who_opens_the_audit_or_a_form_listing_vials_is_listed(api):
    """The audit's ending figures and the vial pickers of the destruction, transfer and loss forms
    show the book too."""
    setup_floor(api)
    session = start(api, who="morgan")
    day = an_hour_ago()
    audit = api.client.get(api.url("/audit"), headers=api.headers("morgan"),
                           params={"from": (day - timedelta(days=1)).date().isoformat(), "to": day.date().isoformat()})
    # issue 20: no two counts to run between (422), but the audit was opened: a read of the book
    assert audit.status_code == 422, audit.text
    r = submit(api, session, 3, who="morgan")
    assert r.status_code == 201, r.text
    assert [(x["staff_id"], x["what"]) for x in r.json()["book_read_during_count"]] == [
        (api.client.get(api.url("/me"), headers=api.headers("morgan")).json()["staff_id"], "GET /audit")]
    assert len(r.json()["discrepancy_ids"]) == 1
