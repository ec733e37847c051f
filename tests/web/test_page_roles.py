"""Authorization of the pages: every page route under /ui/ (GET and POST, read from the app's
routes) x every role (a login holding only that role), another registrant's login, and no login,
on SQLite and PostgreSQL.

- A login without the page's roles gets 403 with a message naming the roles it needs, and a
  refused POST writes nothing (entry count unchanged).
- No login: a GET or a POST is sent to the location's login page, and nothing is written.
- Another registrant's login (its own session cookie sent to this location's URLs) is sent to
  this location's login page and sees none of its data; on its own pages it sees only its own.

The expected matrix is written out here (``PAGES``), not read from ``api.web.core.PAGE_ROLES``:
that table names page keys and each route picks its key in code, so this test holds both to
what the pages are meant to allow. A new page without a row here fails
``test_every_page_route_is_in_the_matrix``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute

from api.web.security import SESSION_COOKIE, csrf_for_token
from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import (
    EnrollStaff,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    TakeInventory,
)
from ledger.storage.store import Ledger, make_engine, migrate
from tests.api.conftest import ROLE_USERS, Api, build_api, second_clinic
from tests.api.roles_all import ALL
from tests.conftest import BACKENDS, DEA, DEA2, KETAMINE_50, entry_count, fresh_database_url

N, PH, PR, M, C, A = "nurse", "pharmacist", "prescriber", "manager", "compliance_officer", "auditor"
ANY = frozenset(ALL)  # any login at the location, the administrator included
SECRET_INVOICE = "GMS-SECRET-4242"  # this registrant's data, which the other registrant must never see

#: (method, path) -> the roles that open it. Every other login gets 403 naming these roles.
PAGES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/ui/{dea}/"): ANY,
    ("GET", "/ui/{dea}/password"): ANY,
    ("POST", "/ui/{dea}/password"): ANY,
    ("POST", "/ui/{dea}/logout"): ANY,
    ("GET", "/ui/{dea}/status"): ANY,
    ("GET", "/ui/{dea}/tasks"): ANY,  # issue 21: the index of every other task page
    ("POST", "/ui/{dea}/status"): ANY,
    ("GET", "/ui/{dea}/stock"): frozenset({N, PH, PR, M, C, A}),
    ("GET", "/ui/{dea}/receipts/new"): frozenset({N, PH, M}),
    ("POST", "/ui/{dea}/receipts/new"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/counts/new"): frozenset({N, PH, M}),
    # issue 20: inventories, by those who take them (receiving.INVENTORY_TAKERS)
    ("GET", "/ui/{dea}/inventories/new"): frozenset({N, PH, M}),
    ("POST", "/ui/{dea}/inventories/new"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/inventories/{seq}"): frozenset({N, PH, M}),
    ("POST", "/ui/{dea}/counts/new"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/counts/{session_id}"): frozenset({N, PH, M}),
    ("POST", "/ui/{dea}/counts/{session_id}"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/discrepancies"): frozenset({N, PH, M, C}),
    ("POST", "/ui/{dea}/discrepancies"): frozenset({M}),
    ("GET", "/ui/{dea}/infusions/new"): frozenset({N, PR}),
    ("POST", "/ui/{dea}/infusions/new"): frozenset({N, PR}),
    ("GET", "/ui/{dea}/destructions/new"): frozenset({N, PH, PR, M}),
    ("POST", "/ui/{dea}/destructions/new"): frozenset({N, PH, PR, M}),
    ("GET", "/ui/{dea}/transfers/new"): frozenset({PH, M}),
    ("POST", "/ui/{dea}/transfers/new"): frozenset({PH, M}),
    ("GET", "/ui/{dea}/losses/new"): frozenset({M, C}),
    ("POST", "/ui/{dea}/losses/new"): frozenset({M, C}),
    # issue 20: a loss report's notice to DEA and Form 106 filing, by those who report losses
    ("GET", "/ui/{dea}/losses/follow-up"): frozenset({M, C}),
    ("POST", "/ui/{dea}/losses/follow-up"): frozenset({M, C}),
    ("GET", "/ui/{dea}/alerts"): frozenset({M, C}),
    ("POST", "/ui/{dea}/alerts"): frozenset({M, C}),
    ("GET", "/ui/{dea}/reports"): frozenset({PH, M, C, A}),
    ("POST", "/ui/{dea}/reports"): frozenset({PH, M, C, A}),
    # Any login opens the page, but an entry is shown only to its signer (here the nurse who
    # recorded the receipt) and to managers, compliance officers and auditors.
    ("GET", "/ui/{dea}/entries/{seq}"): frozenset({N, M, C, A}),
    # issue 17: one's own signatures and signing credentials, for every login
    ("GET", "/ui/{dea}/me/signatures"): ANY,
    ("GET", "/ui/{dea}/me/signing-key"): ANY,
    ("POST", "/ui/{dea}/me/signing-key"): ANY,
    ("POST", "/ui/{dea}/me/passkeys"): ANY,
    # issue 21: the downtime paper forms and beyond-use labels, for those who draw and prepare
    ("GET", "/ui/{dea}/downtime"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/downtime/vial-log.pdf"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/downtime/infusion-form.pdf"): frozenset({N, PH, M}),
    ("GET", "/ui/{dea}/containers/{container_id}/label"): frozenset({N, PH, M}),
    # issue 20: the stored documents entries cite (get_document's roles)
    ("GET", "/ui/{dea}/documents/{sha256}"): frozenset({N, PH, M, C, A}),
    # issue 21: the overview charts, read-only
    ("GET", "/ui/{dea}/overview"): frozenset({M, C, PH, A}),
    # issue 21 pages: staff
    ("GET", "/ui/{dea}/staff"): frozenset({M, "administrator"}),
    ("POST", "/ui/{dea}/staff"): frozenset({M, "administrator"}),
    ("GET", "/ui/{dea}/staff/{staff_id}"): frozenset({M, "administrator"}),
    ("POST", "/ui/{dea}/staff/{staff_id}"): frozenset({M, "administrator"}),
    # issue 21 pages: reference
    ("GET", "/ui/{dea}/products"): frozenset({"administrator", M, PH}),
    ("POST", "/ui/{dea}/products"): frozenset({"administrator", M, PH}),
    ("GET", "/ui/{dea}/suppliers"): frozenset({"administrator", M, PH}),
    ("POST", "/ui/{dea}/suppliers"): frozenset({"administrator", M, PH}),
    ("GET", "/ui/{dea}/prescribers"): frozenset({"administrator", M}),
    ("POST", "/ui/{dea}/prescribers"): frozenset({"administrator", M}),
    ("GET", "/ui/{dea}/policies"): frozenset({"administrator", M}),
    ("POST", "/ui/{dea}/policies"): frozenset({"administrator", M}),
    # issue 21 pages: patients
    ("GET", "/ui/{dea}/patients"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/patients"): frozenset({M, N, PH, PR}),
    # issue 21 pages: stock_events
    ("GET", "/ui/{dea}/wastes/new"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/wastes/new"): frozenset({M, N, PH, PR}),
    ("GET", "/ui/{dea}/breakages/new"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/breakages/new"): frozenset({M, N, PH, PR}),
    ("GET", "/ui/{dea}/returns/new"): frozenset({M, PH}),
    ("POST", "/ui/{dea}/returns/new"): frozenset({M, PH}),
    ("GET", "/ui/{dea}/quarantines"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/quarantines"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/quarantines/release"): frozenset({M, PH}),
    ("GET", "/ui/{dea}/packages"): frozenset({M, N, PH}),
    ("POST", "/ui/{dea}/packages"): frozenset({M, N, PH}),
    # issue 21 pages: preparations
    ("GET", "/ui/{dea}/preparations"): frozenset({M, N, PH, PR}),  # the union: a manager may waste one
    ("POST", "/ui/{dea}/preparations"): frozenset({N, PH, PR}),
    ("GET", "/ui/{dea}/preparations/{preparation_id}/infusion"): frozenset({N, PR}),
    ("POST", "/ui/{dea}/preparations/{preparation_id}/infusion"): frozenset({N, PR}),
    ("GET", "/ui/{dea}/preparations/{preparation_id}/waste"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/preparations/{preparation_id}/waste"): frozenset({M, N, PH, PR}),
    ("GET", "/ui/{dea}/esketamine-sessions/new"): frozenset({N, PH, PR}),
    ("POST", "/ui/{dea}/esketamine-sessions/new"): frozenset({N, PH, PR}),
    # issue 21 pages: corrections
    ("GET", "/ui/{dea}/corrections/new"): frozenset({M, N, PH, PR}),
    ("POST", "/ui/{dea}/corrections/new"): frozenset({M, N, PH, PR}),
    # issue 21 pages: backfill
    # document upload: store_document's roles; the backfill: the sheet uploaded by those who store
    # documents, an infusion from it by those who administer, a later waste by clinicians
    ("GET", "/ui/{dea}/documents/new"): frozenset({N, PH, M, C, "administrator"}),
    ("POST", "/ui/{dea}/documents/new"): frozenset({N, PH, M, C, "administrator"}),
    ("GET", "/ui/{dea}/backfill"): frozenset({N, PH, PR, M}),
    ("POST", "/ui/{dea}/backfill"): frozenset({N, PH, M}),
    ("POST", "/ui/{dea}/backfill/infusion"): frozenset({N, PR}),
    ("POST", "/ui/{dea}/backfill/waste"): frozenset({N, PH, PR, M}),
}
#: Refusals that are not the page's role check, with their message.
REFUSED_BECAUSE = {("GET", "/ui/{dea}/entries/{seq}"): "you may see the entries you signed; this one is not yours"}
#: Open without a login.
PUBLIC = {("GET", "/"), ("GET", "/ui/"), ("GET", "/ui/{dea}/login"), ("POST", "/ui/{dea}/login"),
          ("GET", "/ui/static/{name}")}
OTHER, NOBODY = "other registrant", "no login"
WHO = [*ROLE_USERS, OTHER, NOBODY]


def page_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the app under /ui/ (and the root, which sends there)."""
    def walk(routes) -> Iterator[APIRoute]:
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI's included routers
            if inner is not None:
                yield from walk(inner.routes)
            elif isinstance(r, APIRoute):
                yield r
    return {(m, r.path) for r in walk(app.routes) if r.path == "/" or r.path.startswith("/ui/")
            for m in r.methods if m != "HEAD"}


@dataclass
class Site:
    api: Api
    receipt_seq: int
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def client(self):
        return self.api.client

    def login(self, username: str, dea: str = DEA) -> str:
        """Log in through the login form; returns the session token (the cookie's value)."""
        c = self.client
        c.cookies.clear()
        page = c.get(f"/ui/{dea}/login")
        data = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1),
                "username": username, "password": "four quiet harbor lamps"}
        code = self.api.totp(username, dea)
        if code:
            data["totp"] = code
        r = c.post(f"/ui/{dea}/login", data=data, follow_redirects=False)
        assert r.status_code == 303, r.text
        token = r.cookies.get(SESSION_COOKIE)
        c.cookies.clear()
        assert token
        return token

    def token(self, who: str) -> str | None:
        if who == NOBODY:
            return None
        user, dea = (("nora", DEA2) if who == OTHER else (ROLE_USERS[who], DEA))
        if (user, dea) not in self.tokens:
            self.tokens[(user, dea)] = self.login(user, dea)
        return self.tokens[(user, dea)]

    def throwaway_token(self, who: str) -> str | None:
        """A login of its own (for logout, which ends the session it is sent with)."""
        if who == NOBODY:
            return None
        i = len(self.tokens)
        if who == OTHER:
            other = self.api.auth.store.staff_by_username(DEA2, "avery")
            admin = _principal(other)
            services.enroll_staff(self.api.ledger, admin, EnrollStaff(f"Other Temp {i}", f"otmp{i}", ("nurse",)))
            self.api.set_password(f"otmp{i}", dea=DEA2)
            return self.login(f"otmp{i}", DEA2)
        self.api.clinic.enroll(f"Temp Person {i}", f"tmp{i}", who)  # approved by a second manager
        self.api.set_password(f"tmp{i}")
        self.tokens[(f"tmp{i}", DEA)] = token = self.login(f"tmp{i}")
        return token


def _principal(member):
    from ledger.domain.principal import AuthMethod, Principal

    return Principal(DEA2, member.staff_id, member.printed_name, AuthMethod.CONSOLE_BOOTSTRAP)


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory) -> Iterator[Site]:
    urls = fresh_database_url(request.param, tmp_path_factory.mktemp("pages"))
    engine = make_engine(next(urls))
    migrate(engine)
    ledger = Ledger(engine)
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    second_clinic(api)
    clinic = api.clinic
    now = datetime.now(UTC)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", now - timedelta(hours=3),
        items=(InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=2),)), witness=clinic.nurse)
    res = services.receive_stock(ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, SECRET_INVOICE, now - timedelta(hours=2), (ReceivedLineInput(KETAMINE_50, 3, "KA2610", "2028-06-30"),)))
    yield Site(api, res["entries"][0]["seq"])
    ledger.dispose()
    next(urls, None)


def url_of(site: Site, path: str, dea: str = DEA) -> str:
    return path.format(dea=dea, seq=site.receipt_seq, session_id="C1", name="app.css", container_id="V999999-1",
                       sha256="0" * 64, preparation_id="P999999", staff_id="S1")


def send(site: Site, method: str, path: str, token: str | None, dea: str = DEA):
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"} if token else {}
    site.client.cookies.clear()
    if method == "GET":
        return site.client.get(url_of(site, path, dea), headers=headers, follow_redirects=False)
    # A well-formed form post with the session's own CSRF token: only the role check can refuse it.
    data = {"csrf_token": csrf_for_token(token) if token else "", "action": "record", "form_key": "web-page-roles"}
    return site.client.post(url_of(site, path, dea), data=data, headers=headers, follow_redirects=False)


def test_every_page_route_is_in_the_matrix(site):
    routes = page_routes(site.client.app)
    assert routes == set(PAGES) | PUBLIC, (
        f"routes without a row: {sorted(routes - set(PAGES) - PUBLIC)}; rows without a route: "
        f"{sorted(set(PAGES) | PUBLIC - routes)}")


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("method, path", sorted(PAGES))
def test_page_roles(site, method, path, who):
    token = site.throwaway_token(who) if path.endswith("/logout") else site.token(who)
    before = entry_count(site.api.ledger)
    r = send(site, method, path, token)
    allowed = PAGES[(method, path)]
    login_page = f"/ui/{DEA}/login"
    if who in (NOBODY, OTHER):
        assert r.status_code == 303 and r.headers["location"].startswith(login_page), (r.status_code, r.text[:300])
        assert SECRET_INVOICE not in r.text
    elif path.endswith("/logout"):  # allowed to everyone: the session ends
        assert r.status_code == 303 and r.headers["location"] == login_page + "?m=out"
        assert send(site, "GET", "/ui/{dea}/", token).headers["location"].startswith(login_page)
    elif who in allowed:
        assert r.status_code not in (401, 403) and r.status_code < 500, r.text[:500]
        assert not r.headers.get("location", "").startswith(login_page)
        if method == "GET":  # the page itself (count C1 does not exist: a 404 page, past the role check)
            # (count C1 and container V999999-1 do not exist: a 404 page, past the role check)
            # (nor is entry {seq}, a receipt, an inventory: issue 20's confirmation page answers 404)
            # (nor a document of digest 0...0)
            assert r.status_code == (404 if "{session_id}" in path or "{container_id}" in path or "{sha256}" in path
                                     or "inventories/{seq}" in path or "{preparation_id}" in path else 200), r.status_code
    else:
        assert r.status_code == 403, (r.status_code, r.headers.get("location"), r.text[:300])
        message = REFUSED_BECAUSE.get((method, path), f"needs one of the roles {', '.join(sorted(allowed))}")
        assert message in r.text
        assert SECRET_INVOICE not in r.text
    if who in (NOBODY, OTHER) or who not in allowed:
        assert entry_count(site.api.ledger) == before, "a refused POST wrote an entry"


@pytest.mark.parametrize("method, path", sorted(PUBLIC))
def test_public_pages_need_no_login(site, method, path):
    if method == "POST":  # the login form itself: refused without its CSRF cookie, never a server error
        r = site.client.post(url_of(site, path), data={"username": "nora", "password": "x"}, follow_redirects=False)
        assert r.status_code == 403 and "security token" in r.text
        return
    site.client.cookies.clear()
    r = site.client.get(url_of(site, path), follow_redirects=False)
    assert r.status_code in (200, 303, 307), r.status_code
    assert SECRET_INVOICE not in r.text


def test_another_registrant_sees_only_its_own_data_on_its_own_pages(site):
    """A login of the other registrant holding every role opens every page of its own location;
    none shows this registrant's receipt, even the entry with the same sequence number."""
    other = site.api.auth.store.staff_by_username(DEA2, "avery")
    services.enroll_staff(site.api.ledger, _principal(other), EnrollStaff("Omni Other", "omni", ALL))
    site.api.set_password("omni", dea=DEA2)
    token = site.login("omni", DEA2)
    for method, path in sorted(PAGES):
        if method != "GET":
            continue
        r = send(site, method, path, token, dea=DEA2)
        assert r.status_code not in (401, 403), (path, r.status_code)
        assert SECRET_INVOICE not in r.text, path
