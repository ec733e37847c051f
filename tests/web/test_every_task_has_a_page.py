"""Issue 21: "a page for every task that exists in the API, with the same role rules; a test
fails when a write route has no page".

Every write route of the API (POST, PUT, PATCH, DELETE under ``/v1``) is in ``TASK_PAGES``: the
page route that does the same task, or in ``NO_PAGE_YET`` with why. The test fails when:

- a write route is added to the API and appears in neither (a new task without a page, or
  without an explicit, reasoned place on the list below);
- a page named here does not exist;
- a task listed in ``NO_PAGE_YET`` gets a page (move it to ``TASK_PAGES``: the list only shrinks);
- a page offers its task to a role the API refuses, or the API allows a role the page leaves out
  for a clinic-floor task (the role rules must be the same).

``NO_PAGE_YET`` is the open part of issue 21, stated, not hidden: each of those tasks needs the API
today."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.routing import APIRoute

from api.http.roles import ENDPOINT_ROLES
from api.web import router as web_router
from api.web.core import PAGE_ROLES
from tests.api.test_role_matrix import api_routes

WRITE = {"POST", "PUT", "PATCH", "DELETE"}

#: API route name -> (page route name, page key whose roles must equal the API's).
TASK_PAGES: dict[str, tuple[str, str | None]] = {
    "login": ("web_login_post", None),
    "logout": ("web_logout", None),
    "change_own_password": ("web_password_post", None),
    # a witness authenticates on the page that needs them (api/web/witness.py), in the same form
    "create_witness_assertion": ("web_infusion_post", None),
    "enrol_signing_key": ("web_signing_key_post", None),
    "passkey_registration_options": ("web_passkey_post", None),
    "passkey_registration": ("web_passkey_post", None),
    "enrol_passkey": ("web_passkey_post", None),
    "take_inventory": ("web_inventory_post", "inventory"),
    "receive_stock": ("web_receive_post", "receive"),
    "administer_dose": ("web_infusion_post", "infusion"),
    "start_count": ("web_count_start", "count"),
    "submit_count": ("web_count_submit", "count"),
    "resolve_discrepancy": ("web_discrepancies_post", "resolve_discrepancy"),
    "destroy_stock": ("web_destroy_post", "destroy"),
    "transfer_stock": ("web_transfer_post", "transfer"),
    "report_theft_or_loss": ("web_loss_post", "loss"),
    "record_dea_notice": ("web_loss_followup_post", "loss"),
    "record_form_106_filing": ("web_loss_followup_post", "loss"),
    "acknowledge_alert": ("web_alerts_post", None),
    "resolve_alert": ("web_alerts_post", None),
    # issue 21 pages: staff
    # issue 21 pages: reference
    # issue 21 pages: patients
    # issue 21 pages: stock_events
    # issue 21 pages: preparations
    # issue 21 pages: corrections
    # issue 21 pages: backfill
}

#: Tasks with no page yet (issue 21, open): the API only, today.
NO_PAGE_YET: dict[str, str] = {
    "set_staff_password": "staff and roles page (administrator)",
    "revoke_staff_sessions": "staff and roles page (administrator)",
    "clear_sign_in_throttle": "staff and roles page (administrator)",
    "revoke_credential": "staff and roles page (administrator)",
    "enroll_staff": "staff and roles page (administrator)",
    "grant_role": "staff and roles page (administrator)",
    "revoke_role": "staff and roles page (administrator)",
    "add_product": "products page (reference data)",
    "add_supplier": "suppliers page (reference data)",
    "record_supplier_registration": "suppliers page (reference data)",
    "register_prescriber": "prescribers page",
    "set_policy": "policies page",
    "register_patient": "patients page (register, look up, change details)",
    "change_patient_details": "patients page (register, look up, change details)",
    "record_waste": "a later waste of an infusion recorded without its waste (the infusion page records "
                    "waste in the same form)",
    "record_breakage": "breakage and spill page",
    "return_stock": "returns page (the transfer page does practitioner transfers only)",
    "correct_entry": "corrections page",
    "quarantine_stock": "quarantine and release page",
    "release_quarantine": "quarantine and release page",
    "store_document": "document upload on the pages (entry pages link stored documents already)",
    "record_esketamine_session": "Spravato session page",
    "make_preparation": "preparations page (bags and syringes)",
    "infuse_preparation": "preparations page (bags and syringes)",
    "waste_preparation": "preparations page (bags and syringes)",
    "open_package": "package opening page",
}


def _write_routes() -> dict[str, APIRoute]:
    return {r.name: r for r in api_routes() if r.methods & WRITE}


def _page_routes() -> dict[str, APIRoute]:
    def walk(routes) -> Iterator[APIRoute]:
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI's included routers
            if inner is not None:
                yield from walk(inner.routes)
            elif isinstance(r, APIRoute):
                yield r
    return {r.name: r for r in walk(web_router.routes)}


def test_every_write_route_has_a_page_or_a_reasoned_place_on_the_open_list():
    writes = set(_write_routes())
    unplaced = sorted(writes - set(TASK_PAGES) - set(NO_PAGE_YET))
    assert not unplaced, f"write routes with no page (add one, or list it in NO_PAGE_YET with why): {unplaced}"
    stale = sorted((set(TASK_PAGES) | set(NO_PAGE_YET)) - writes)
    assert not stale, f"rows for routes that no longer exist: {stale}"
    assert not set(TASK_PAGES) & set(NO_PAGE_YET), "a task is both done and open"


def test_every_page_named_exists_and_takes_a_form():
    pages = _page_routes()
    for task, (page, _key) in TASK_PAGES.items():
        assert page in pages, f"{task}: no page route {page!r}"
        assert "POST" in pages[page].methods, f"{task}: {page} does not take a form"


def test_a_page_does_its_task_for_the_roles_the_api_allows():
    """Same role rules: the page key's roles are the API route's (for the clinic-floor tasks;
    session and credential pages are each person's own and open to every login)."""
    differ = {task: (sorted(PAGE_ROLES[key]), sorted(ENDPOINT_ROLES[task]))
              for task, (_page, key) in TASK_PAGES.items() if key is not None
              if set(PAGE_ROLES[key]) != set(ENDPOINT_ROLES[task])}
    assert not differ, f"page roles differ from the API's (page, API): {differ}"
