"""Report PDFs over the API (issue 20): ``GET /v1/registrants/{dea}/reports/{kind}?from=&to=``.

On the small clinic of ``tests/reports/test_more_reports.py`` recorded through the services and
logged in over HTTP: a role that may read reports on the pages gets the same signed PDF the pages
build, which ``verify-report`` accepts; roles that may not (and the patient-access log for anyone
but the compliance officer) get 403; an unknown kind, days that are not days, ``to`` before
``from`` and a missing kind parameter get 422 naming the field; a period with nothing in it gets
the report's own 422, never a 500. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from pypdf import PdfReader

from reports.verify import verify_report
from tests.api.conftest import build_api
from tests.conftest import BACKENDS, clinic_today
from tests.reports.test_more_reports import record_day

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def api(ledger, db_url, tmp_path):
    api = build_api(ledger)
    morgan = next(p for p in api.clinic.staff_admins if p.printed_name == "Morgan Manager")
    api.day = record_day(ledger, api.clinic, morgan, db_url, tmp_path)
    return api


def get(api, user: str, kind: str, **query):
    period = dict(zip(("from", "to"), api.day.period, strict=True))
    return api.client.get(api.url(f"/reports/{kind}"), params={**period, **query}, headers=api.headers(user))


def test_allowed_roles_get_the_signed_pdf_verify_report_accepts(api):
    for user, kind in (("casey", "transfers"), ("pia", "breakage"), ("morgan", "corrections"), ("ari", "roles"),
                       ("casey", "receiving")):
        r = get(api, user, kind)
        assert r.status_code == 200, (user, kind, r.text[:300])
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"] == (f'attachment; filename="csledger-{kind}-{api.dea}-'
                                                    f'{api.day.period[0]}-to-{api.day.period[1]}.pdf"')
        result = verify_report(api.ledger, r.content)
        assert result.ok, (kind, result.problems)
        assert "signed by the report key certified in entry" in result.summary
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
        member = api.auth.store.staff_by_username(api.dea, user)
        assert f"by {member.printed_name} ({member.staff_id})" in " ".join(text.split())  # who made it
    # The compliance officer reads the patient-access log; the vial history takes its vial.
    assert get(api, "casey", "patient_access").status_code == 200
    r = get(api, "morgan", "vial", vial=api.day.vials[0], paper="a4")
    assert r.status_code == 200 and verify_report(api.ledger, r.content).ok


@pytest.mark.parametrize("user", ["nora", "dana", "avery"])
def test_roles_that_do_not_read_reports_are_refused(api, user):
    r = get(api, user, "transfers")
    assert r.status_code == 403 and r.json()["type"].endswith("/role-required"), r.text


@pytest.mark.parametrize("user", ["pia", "morgan", "ari"])
def test_the_patient_access_log_is_the_compliance_officers(api, user):
    r = get(api, user, "patient_access")
    assert r.status_code == 403 and r.json()["type"].endswith("/role-required"), r.text
    assert r.json()["errors"] == [{"field": "kind", "reason": r.json()["errors"][0]["reason"]}]


def fields(r) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in r.json()["errors"]]


def test_bad_input_is_422_naming_the_field(api):
    today = clinic_today()
    assert fields(get(api, "casey", "nosuchkind")) == ["kind"]
    assert fields(get(api, "casey", "Transfers")) == ["kind"]
    h = api.headers("casey")
    assert fields(api.client.get(api.url("/reports/transfers"), params={"to": str(today)}, headers=h)) == ["from"]
    for bad in ("2026-13-45", "12/01/2026", "2026-12-01T00:00:00Z", ""):
        r = api.client.get(api.url("/reports/transfers"), params={"from": bad, "to": str(today)}, headers=h)
        assert fields(r) == ["from"], (bad, r.text)
    r = api.client.get(api.url("/reports/transfers"), params={"from": str(today), "to": str(today - timedelta(days=3))},
                       headers=h)
    assert fields(r) == ["to"] and "before" in r.json()["detail"]
    assert fields(get(api, "casey", "transfers", paper="legal")) == ["paper"]
    assert fields(get(api, "casey", "vial")) == ["vial"]  # the vial history needs its vial
    assert fields(get(api, "casey", "transfers", vial="V1-1")) == ["vial"]  # ... and no other kind takes one


def test_nothing_to_report_is_the_reports_own_error(api):
    later = {"from": str(clinic_today() + timedelta(days=1)), "to": str(clinic_today() + timedelta(days=2))}
    for kind in ("transfers", "corrections", "breakage", "receiving"):
        r = api.client.get(api.url(f"/reports/{kind}"), params=later, headers=api.headers("casey"))
        assert r.status_code == 422 and r.json()["type"].endswith("/report-error"), r.text
        assert "nothing to report" in r.json()["detail"]
    r = api.client.get(api.url("/reports/transfers"), params={"from": "2020-01-01", "to": "2020-01-31"},
                       headers=api.headers("casey"))
    assert r.status_code == 422 and "before the first inventory" in r.json()["detail"], r.text


def test_the_pages_narrow_the_patient_access_log_alike(api):
    """The reports page builds the same PDFs; it refuses the patient-access log to a manager as
    ``/v1`` does, and gives it to the compliance officer."""
    from api.web.settings import WebSettings
    from tests.web.test_pages_http import csrf_of, login

    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    ui = f"/ui/{api.dea}/reports"
    for user, status in (("morgan", 403), ("casey", 200)):
        api.client.cookies.clear()
        assert login(api, user).status_code == 303
        page = api.client.get(ui)
        # the kind is offered only to who may read it
        assert ('value="patient_access"' in page.text) == (user == "casey")
        r = api.client.post(ui, data={"csrf_token": csrf_of(page.text), "kind": "patient_access",
                                      "start": api.day.period[0], "end": api.day.period[1], "paper": "letter"})
        assert r.status_code == status, r.text[:300]
        if status == 200:
            assert r.headers["content-type"] == "application/pdf" and verify_report(api.ledger, r.content).ok
        else:
            assert "compliance_officer" in r.text
