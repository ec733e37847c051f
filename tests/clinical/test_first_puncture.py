"""An opened vial at the initial inventory keeps its first-puncture date (issue 19).

Before, an opened multiple-dose vial counted into the initial inventory had no first-puncture
date: its 28-day beyond-use clock (USP <797>) started again at its first draw in csledger, so a
vial punctured three weeks before go-live could be used for another four. Now the inventory line
records the day it was first punctured (an estimate, marked so, when nobody knows) and the
beyond-use date that follows; the first draw keeps it, a vial already past it is refused, and
``verify --deep`` rebuilds the same vial rows. Over HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ledger.services.verify import verify
from tests.api.conftest import build_api
from tests.api.test_clinical import infusion, witnessed
from tests.conftest import BACKENDS, DEA, KETAMINE_50, clinic_today

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def api(ledger):
    return build_api(ledger)


def inventory(api, *items: dict):
    when = datetime.now(UTC) - timedelta(hours=2)
    return witnessed(api, "nora", "/inventories", {  # issue 20: witnessed
        "inventory_type": "initial", "taken_at": "opening_of_business", "occurred_at": when.isoformat(),
        "items": list(items)}, "pia")[0]


def opened(**extra) -> dict:
    return {"ndc": KETAMINE_50, "lot": "KA2601", "expiry": "2028-03-31", "sealed": False, "ml": "6.00", **extra}


def patient(api) -> str:
    r = api.client.post(api.url("/patients"), headers=api.headers("nora"), json={
        "name": "Jordan Example", "address": {"street": "1 Elm St", "city": "Austin", "state": "TX",
                                              "postal_code": "78701"}})
    assert r.status_code == 201, r.text
    return r.json()["patient_id"]


def draw(api, vial: str):
    """An infusion drawing 1 mL from ``vial``, all of it given (nothing to waste, no witness)."""
    body = {**infusion(patient(api), vial, waste=False), "ml_given": "1.00"}
    return api.client.post(api.url("/administrations"), headers=api.headers("nora"), json=body)


def all_entries(api) -> list[dict]:
    from reports.source import load_snapshot

    with api.ledger.reading() as conn:
        return load_snapshot(conn, DEA).entries


def last_entry(api) -> dict:
    return all_entries(api)[-1]


@pytest.mark.parametrize("item, field, words", [
    (opened(), "items[0].first_punctured_on", "when was this opened vial first punctured"),
    (opened(first_punctured_on=(date.today() + timedelta(days=3)).isoformat()), "items[0].first_punctured_on",
     "is after the inventory"),
    ({"ndc": KETAMINE_50, "lot": "KA2601", "expiry": "2028-03-31", "sealed": True, "containers": 2,
      "first_punctured_on": "2026-01-01"}, "items[0].first_punctured_on", "a sealed container was never punctured"),
    (opened(first_punctured_on="2026-02-30"), "items[0].first_punctured_on", "is not a day"),
], ids=["missing", "in the future", "on a sealed line", "not a day"])
def test_refused_first_puncture(api, item, field, words):
    r = inventory(api, item)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert field in r.text and words in r.text, problem
    assert not any(e["kind"] == "inventory_taken" for e in all_entries(api))  # nothing recorded


def test_first_draw_keeps_the_inventory_beyond_use_date(api):
    punctured = clinic_today() - timedelta(days=10)
    r = inventory(api, opened(first_punctured_on=punctured.isoformat(), first_puncture_estimated=True))
    assert r.status_code == 201, r.text
    vial = r.json()["vial_ids"][0]
    entry = last_entry(api)
    item = entry["items"][0]
    assert item["first_punctured_on"] == punctured.isoformat() and item["first_puncture_estimated"] is True
    assert item["beyond_use_date"] == (punctured + timedelta(days=28)).isoformat()
    d = draw(api, vial)
    assert d.status_code == 201, d.text
    # Already open: the first draw in csledger neither opens it nor restarts its clock.
    assert d.json()["opened_vials"] == []
    assert d.json()["beyond_use_dates"] == {vial: (punctured + timedelta(days=28)).isoformat()}
    report = verify(api.ledger, deep=True)
    assert report.ok, report.problems


def test_a_vial_punctured_long_ago_is_past_its_beyond_use_date(api):
    punctured = clinic_today() - timedelta(days=40)
    r = inventory(api, opened(first_punctured_on=punctured.isoformat()))
    assert r.status_code == 201, r.text
    d = draw(api, r.json()["vial_ids"][0])
    assert d.status_code == 409 and "past its beyond-use date" in d.text, d.text


def test_a_biennial_inventory_does_not_take_a_first_puncture(api):
    day_before = (clinic_today() - timedelta(days=1)).isoformat()
    r = inventory(api, opened(first_punctured_on=day_before))
    assert r.status_code == 201, r.text
    vial = r.json()["vial_ids"][0]
    later = witnessed(api, "nora", "/inventories", {
        "inventory_type": "biennial", "taken_at": "close_of_business",
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=30)).isoformat(),
        "items": [opened(vial_id=vial, first_punctured_on=day_before)]}, "pia")[0]
    assert later.status_code == 422 and "items[0].first_punctured_on" in later.text, later.text
