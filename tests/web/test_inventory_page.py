"""Issue 20: the inventory pages over HTTP. A biennial inventory lists the vials on the book; the
nurse marks 3 of 10 found and the rest not found, a second person authenticates on the page, and
the confirmation names the discrepancy opened; an initial inventory creates the book with its
witness. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import zoneinfo

import pytest

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from tests.api.conftest import PASSWORD
from tests.conftest import BACKENDS, KETAMINE_50, an_hour_ago
from tests.web.test_pages_http import UI, csrf_of, login, web  # noqa: F401  (the fixture)

both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def local_now(web) -> str:  # noqa: F811
    return web.clock().astimezone(zoneinfo.ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")


@both
def test_a_biennial_inventory_of_3_of_10_on_the_page_opens_a_discrepancy(web):  # noqa: F811
    vids = services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, "INV-PAGE", an_hour_ago(), (ReceivedLineInput(KETAMINE_50, 10, "KA1", "2028-06-30"),)
    ))["vial_ids"]
    login(web, "nora")
    home = web.client.get(UI)
    assert 'href="/ui/' in home.text and "inventories/new" in home.text  # the home page and the navigation link it
    page = web.client.get(UI + "inventories/new?type=biennial")
    assert page.status_code == 200, page.text
    rows = re.findall(r'name="(vials-\d+)-id" value="([^"]+)"', page.text)
    assert sorted(v for _, v in rows) == sorted(vids)
    form = {"csrf_token": csrf_of(page.text), "form_key": "inv-1", "inventory_type": "biennial",
            "vial_count": str(len(rows)), "taken_at": "close_of_business", "occurred_at": local_now(web),
            "witness_username": "nora", "witness_password": PASSWORD}
    for k, (prefix, vid) in enumerate(rows):
        form[f"{prefix}-id"] = vid
        form[f"{prefix}-ndc"] = KETAMINE_50
        form[f"{prefix}-found"] = "sealed" if k < 3 else "missing"
    # every vial needs an answer
    r = web.client.post(UI + "inventories/new", data={**form, f"{rows[5][0]}-found": ""})
    assert r.status_code == 422 and f'id="f-{rows[5][0]}-found-error"' in r.text
    # the witness is another person: the error is next to their username
    r = web.client.post(UI + "inventories/new", data=form)
    assert r.status_code == 422 and 'id="f-witness_username-error"' in r.text, r.text
    assert 'name="witness_username" type="text" value="nora"' in r.text
    r = web.client.post(UI + "inventories/new", data={**form, "witness_username": "pia"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = web.client.get(r.headers["location"])
    assert done.status_code == 200
    text = re.sub(r"<[^>]+>", " ", done.text)
    [did] = re.findall(r"D\d+-0", text)[:1]
    assert "1 discrepancy opened" in text and did in text and "-70.00 mL" in text
    assert "10 sealed, 0 opened, 100.00 mL" in text and "3 sealed, 0 opened, 30.00 mL" in text
    assert all(v in done.text for _, v in rows[3:])  # the vials not found, named
    seq = r.headers["location"].rsplit("/", 1)[1]
    entry = web.client.get(UI + f"entries/{seq}")  # the entry page reads the new fields too
    assert entry.status_code == 200 and did in entry.text, entry.text[:500]
    # the manager sees it among the discrepancies to resolve
    web.client.cookies.clear()
    login(web, "morgan")
    assert did in web.client.get(UI + "discrepancies").text


@both
def test_an_initial_inventory_on_the_page_needs_its_witness(web):  # noqa: F811
    login(web, "pia")
    page = web.client.get(UI + "inventories/new")
    assert page.status_code == 200 and "creates the book" in page.text  # no stock yet: the initial one
    form = {"csrf_token": csrf_of(page.text), "form_key": "inv-2", "inventory_type": "initial", "line_count": "6",
            "taken_at": "opening_of_business", "occurred_at": local_now(web),
            "lines-0-ndc": KETAMINE_50, "lines-0-lot": "KA1", "lines-0-expiry": "2028-06-30", "lines-0-state": "sealed",
            "lines-0-containers": "4"}
    r = web.client.post(UI + "inventories/new", data=form)
    assert r.status_code == 422 and 'id="f-witness_password-error"' in r.text
    r = web.client.post(UI + "inventories/new", data={**form, "witness_username": "nora", "witness_password": PASSWORD},
                        follow_redirects=False)
    assert r.status_code == 303, r.text
    done = web.client.get(r.headers["location"]).text
    assert "creates the book: 4 container(s)" in done and "witnessed by Nora Nurse" in done


@both
def test_the_inventory_page_is_for_those_who_take_inventories(web):  # noqa: F811
    login(web, "casey")  # compliance officer
    assert web.client.get(UI + "inventories/new").status_code == 403
