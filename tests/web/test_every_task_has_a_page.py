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

``NO_PAGE_YET`` is empty since issue 21 gave every task its page; it stays so that a task that
cannot have a page yet is named there with why, not hidden."""

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
    "enroll_staff": ("web_staff_enrol_post", "staff"),
    "grant_role": ("web_staff_member_post", "staff"),
    "revoke_role": ("web_staff_member_post", "staff"),
    "revoke_staff_sessions": ("web_staff_member_post", "staff"),
    "clear_sign_in_throttle": ("web_staff_member_post", "staff"),
    # the staff page opens to managers too; its password form is shown to administrators only and
    # the API's route (called by the page) refuses anyone else
    "set_staff_password": ("web_staff_member_post", None),
    # the API lets any login revoke their own credential and managers or administrators anyone's;
    # the staff page (managers, administrators) offers it for the member shown
    "revoke_credential": ("web_staff_member_post", None),
    # issue 21 pages: reference
    "add_product": ("web_products_post", "products"),
    "add_supplier": ("web_suppliers_post", "suppliers"),
    "record_supplier_registration": ("web_suppliers_post", "suppliers"),
    "register_prescriber": ("web_prescribers_post", "prescribers"),
    "set_policy": ("web_policies_post", "policies"),
    # issue 21 pages: patients
    "register_patient": ("web_patients_post", "patients"),
    "change_patient_details": ("web_patients_post", "patients"),
    # issue 21 pages: stock_events
    "record_waste": ("web_waste_post", "waste"),
    "record_breakage": ("web_breakage_post", "breakage"),
    "return_stock": ("web_return_post", "returns"),
    "quarantine_stock": ("web_quarantine_post", "quarantine"),
    "release_quarantine": ("web_release_quarantine_post", "release_quarantine"),
    "open_package": ("web_packages_post", "packages"),
    # issue 21 pages: preparations
    "make_preparation": ("web_preparations_post", "preparations"),
    "infuse_preparation": ("web_preparation_infusion_post", "infuse_preparation"),
    "waste_preparation": ("web_preparation_waste_post", "waste_preparation"),
    "record_esketamine_session": ("web_esketamine_post", "esketamine"),
    # issue 21 pages: corrections
    "correct_entry": ("web_correction_post", "corrections"),
    # issue 21 pages: backfill
    "store_document": ("web_document_new_post", "document_upload"),
}

#: Tasks with no page yet, each with why (empty: every task of the API has its page).
NO_PAGE_YET: dict[str, str] = {
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
