"""Issue 21: the correction page (``/ui/<DEA>/corrections/new``), over HTTP on SQLite and PostgreSQL.

It calls ``services.correct_entry`` with ``CorrectEntry`` as ``POST /corrections`` does: the entry
is picked from the recent entries (or typed by number and shown back with its summary), the reason
is given, the vials the entry moved may be corrected, and a line that removes stock needs a
manager or pharmacist to approve on the same screen. The corrected entry's bytes never change;
the confirmation names the entry corrected.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from api.web import queries
from api.web.security import SESSION_COOKIE, csrf_for_token
from ledger import services
from ledger.domain.commands import AdministerDose, DrawInput
from ledger.integrity.canonical import decode
from tests.api.conftest import PASSWORD, entry_count
from tests.conftest import BACKENDS, DEA
from tests.web.test_infusion_page21 import _errors, _patients
from tests.web.test_pages_http import UI, _stock_up, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def web(ledger):
    from api.web.settings import WebSettings
    from tests.api.conftest import build_api

    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _canonical(web, seq: int) -> bytes:
    with web.ledger.reading() as c:
        return bytes(c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r AND seq = :s"),
                               {"r": DEA, "s": seq}).scalar_one())


def _last(web, kind: str) -> dict:
    with web.ledger.reading() as c:
        row = c.execute(sa.text("SELECT canonical FROM entries WHERE kind = :k ORDER BY seq DESC LIMIT 1"),
                        {"k": kind}).scalar_one()
    return decode(bytes(row))


def _dose(web) -> tuple[int, str]:
    """Nora's infusion: 2.00 mL drawn from a vial, all given; (its entry seq, the vial)."""
    _stock_up(web)
    pid = _patients(web)["Pat Alvarez"]
    vial = queries.usable_vials(web.ledger, DEA, date.today())[0]["vial_id"]
    at = datetime.now(UTC) - timedelta(hours=1)
    res = services.administer_dose(web.ledger, web.clinic.nurse, AdministerDose(
        pid, DEA, "70.00", "0.50", (DrawInput(vial, "2.00"),), "2.00", at, at + timedelta(minutes=30)))
    return res["entries"][0]["seq"], vial


def _form(page_text: str, seq: int | str, **over) -> dict[str, str]:
    form = {"csrf_token": csrf_of(page_text), "form_key": "corr-1", "corrects_seq": str(seq), "seq_typed": "",
            "reason": "0.20 mL typed as 2.00 mL", "action": "record"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def test_a_correction_picked_from_recent_entries_records_and_never_changes_the_entry(web):
    seq, vial = _dose(web)
    before_bytes = _canonical(web, seq)
    login(web, "nora")
    page = web.client.get(UI + f"corrections/new?entry={seq}")
    assert page.status_code == 200
    assert re.search(rf'name="corrects_seq" value="{seq}" checked', page.text)
    assert f"#{seq} Infusion" in page.text and "2.00 mL" in page.text
    assert re.search(r'name="lines-0-vial" value="([^"]+)"', page.text).group(1) == vial
    before = entry_count(web)
    form = _form(page.text, seq, **{"lines-0-vial": vial, "lines-0-direction": "add", "lines-0-ml": "1.80"})
    r = web.client.post(UI + "corrections/new", data=form, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    again = web.client.post(UI + "corrections/new", data=form, follow_redirects=False)
    assert again.headers["location"] == r.headers["location"] and entry_count(web) == before + 1  # once
    e = _last(web, "entry_corrected")
    assert (e["corrects_seq"], e["corrects_kind"], e["reason"]) == (seq, "dose_administered", "0.20 mL typed as 2.00 mL")
    assert [(ln["vial_id"], ln["direction"], ln["ml"]) for ln in e["lines"]] == [(vial, "add", "1.80")]
    assert [(s["printed_name"], s["meaning"]) for s in e["signatures"]] == [("Nora Nurse", "performed")]
    assert _canonical(web, seq) == before_bytes  # the corrected entry is as it was
    done = web.client.get(r.headers["location"])
    assert f"Correction of entry #{seq} (Infusion" in done.text and "recorded by Nora Nurse" in done.text
    assert "added back 1.80 mL to " in done.text and f"Entry <a href=\"/ui/{DEA}/entries/{seq}\">#{seq}</a> stays" \
        in done.text
    assert f'href="/ui/{DEA}/entries/{e["seq"]}"' in done.text


def test_an_entry_typed_by_number_is_shown_back_before_saving(web):
    seq, _ = _dose(web)
    login(web, "nora")
    page = web.client.get(UI + "corrections/new")
    r = web.client.post(UI + "corrections/new", data=_form(page.text, "", seq_typed=str(seq), action="show"))
    assert r.status_code == 200 and f"#{seq} Infusion" in r.text
    assert re.search(rf'name="corrects_seq" value="{seq}" checked', r.text)
    r = web.client.post(UI + "corrections/new", data=_form(page.text, "", seq_typed="99999", action="show"))
    assert r.status_code == 422 and "no entry #99999" in _errors(r.text)["seq_typed"]
    r = web.client.post(UI + "corrections/new", data=_form(page.text, "", seq_typed="2x", action="show"))
    assert r.status_code == 422 and "seq_typed" in _errors(r.text)
    # an entry the nurse did not sign: its number, kind and time only, no vials to correct
    receipt = _last(web, "staff_enrolled")["seq"]
    assert f"#{receipt} Staff member enrolled" not in page.text  # not in her recent entries
    r = web.client.post(UI + "corrections/new", data=_form(page.text, "", seq_typed=str(receipt), action="show"))
    assert r.status_code == 200 and "its details are shown to its signers and managers" in r.text
    assert 'name="lines-0-vial"' not in r.text


def test_every_mistake_at_once_and_nothing_recorded(web):
    seq, vial = _dose(web)
    login(web, "nora")
    page = web.client.get(UI + f"corrections/new?entry={seq}")
    before = entry_count(web)
    r = web.client.post(UI + "corrections/new", data=_form(page.text, "", reason=""))
    assert r.status_code == 422 and {"corrects_seq", "reason"} <= set(_errors(r.text))
    r = web.client.post(UI + "corrections/new", data=_form(
        page.text, seq, reason="", **{"lines-0-vial": vial, "lines-0-direction": "", "lines-0-ml": "1.00"}))
    assert r.status_code == 422 and {"reason", "lines-0-direction"} <= set(_errors(r.text))
    assert 'value="1.00"' in r.text  # typed values kept
    # the service's rule: no more than the entry recorded for the vial, beside the line's mL
    r = web.client.post(UI + "corrections/new", data=_form(
        page.text, seq, **{"lines-0-vial": vial, "lines-0-direction": "add", "lines-0-ml": "3.00"}))
    assert r.status_code == 409 and "recorded 2.00 mL" in _errors(r.text)["lines-0-ml"]
    assert entry_count(web) == before


def test_a_line_that_removes_stock_needs_an_approver_once(web):
    seq, vial = _dose(web)
    login(web, "nora")
    page = web.client.get(UI + f"corrections/new?entry={seq}")
    lines = {"lines-0-vial": vial, "lines-0-direction": "remove", "lines-0-ml": "0.50"}
    before = entry_count(web)
    r = web.client.post(UI + "corrections/new", data=_form(page.text, seq, **lines))
    assert r.status_code == 422 and "manager or pharmacist" in _errors(r.text)["approver_username"]
    r = web.client.post(UI + "corrections/new", data=_form(page.text, seq, reason="", approver_username="pia",
                                                           approver_password=PASSWORD, **lines))
    assert r.status_code == 422 and PASSWORD not in r.text and "password was not checked yet" in r.text
    r = web.client.post(UI + "corrections/new", data=_form(page.text, seq, approver_username="ned",
                                                           approver_password=PASSWORD, **lines))
    assert r.status_code == 403 and "approver_username" in _errors(r.text)  # a nurse may not approve
    assert entry_count(web) == before
    r = web.client.post(UI + "corrections/new", data=_form(page.text, seq, approver_username="pia",
                                                           approver_password=PASSWORD, **lines),
                        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    e = _last(web, "entry_corrected")
    assert [(s["printed_name"], s["meaning"]) for s in e["signatures"]] == [
        ("Nora Nurse", "performed"), ("Pia Pharmacist", "approved")]
    done = web.client.get(r.headers["location"])
    assert "approved by Pia Pharmacist" in done.text and "removed 0.50 mL from " in done.text


def test_roles_the_api_refuses(web):
    seq, _ = _dose(web)
    for user in ("ari", "casey"):  # auditor, compliance officer
        login(web, user)
        assert web.client.get(UI + "corrections/new").status_code == 403
    login(web, "casey")
    before = entry_count(web)
    csrf = csrf_for_token(next(c.value for c in web.client.cookies.jar if c.name == SESSION_COOKIE))
    r = web.client.post(UI + "corrections/new", data={"csrf_token": csrf, "corrects_seq": str(seq),
                                                      "reason": "x", "form_key": "c-x", "action": "record"})
    assert r.status_code == 403 and entry_count(web) == before
    login(web, "morgan")  # a manager corrects, and sees every entry in the list
    page = web.client.get(UI + "corrections/new")
    assert page.status_code == 200 and f"#{seq} Infusion" in page.text
