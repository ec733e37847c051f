"""The clinic floor's three journeys of issue 21 in a real browser, at a desktop's, a tablet's
(820 x 1180) and a phone's (390 x 844) viewport, each size against its own freshly seeded server:

- a nurse records an infusion by picking the patient, the prescriber and a vial; a form sent with
  three mistakes shows all three at once beside their fields and keeps what was typed, and the
  witness types their password once, when the rest of the form is valid (the HTTP tests in
  test_infusion_page21.py count that the password is checked exactly once);
- a pharmacist's blind count opens a discrepancy, and a manager resolves it starting from its alert;
- a compliance officer downloads every report the reports page offers, each a signed PDF.

At every size nothing on these pages may scroll sideways while it is used (the layout test checks
every page at rest; this checks the pages in the middle of the work: a form with errors, a result).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.web.conftest import PASSWORD, log_in, seed, serving

SIZES = {"desktop": {"width": 1280, "height": 900}, "tablet": {"width": 820, "height": 1180},
         "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module", params=sorted(SIZES))
def sized(request, tmp_path_factory, browser):
    """(size name, server, a function giving a new browser context at that size)."""
    tmp = tmp_path_factory.mktemp(f"floor-{request.param}")
    contexts = []

    def new_context():
        ctx = browser.new_context(viewport=SIZES[request.param], accept_downloads=True, locale="en-US")
        ctx.set_default_timeout(15000)
        contexts.append(ctx)
        return ctx

    with serving(tmp, seed(tmp)) as server:
        yield request.param, server, new_context
    for ctx in contexts:
        ctx.close()


def no_sideways_scroll(page, where: str) -> None:
    sizes = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert sizes[0] <= sizes[1], f"{where} scrolls sideways: {sizes[0]} px of content in {sizes[1]} px"


def test_a_nurse_records_an_infusion_by_picking_and_sees_every_mistake_at_once(sized):
    size, server, new_context = sized
    page = new_context().new_page()
    log_in(page, server, "nora")
    page.goto(server.ui + "infusions/new")
    page.get_by_label("Name or chart number").fill("example")
    page.get_by_label("Name or chart number").press("Enter")
    page.wait_for_load_state()
    assert "Jordan Example" in page.inner_text("#patient-picks")
    assert "xample" not in page.url  # the search went in the body, never the address
    # three mistakes: no patient picked, no prescriber picked, no weight; the rest filled in,
    # the witness's name typed but not their password yet
    page.get_by_label("Ordered dose (mg/kg)").fill("0.50")
    first = page.locator("input[type=checkbox][name$='-use']:not([disabled])").first
    first.check()
    row = first.get_attribute("name").split("-")[1]
    page.locator(f"#f-vials-{row}-ml").fill("1.00")
    page.get_by_label("mL given").fill("0.73")
    page.get_by_label("mL wasted (remainder)").fill("0.27")
    page.get_by_label("Witness username").fill("ned")
    page.get_by_role("button", name="Record infusion").click()
    page.wait_for_load_state()
    for field in ("patient_id", "prescriber_dea_number", "weight_kg"):
        assert page.locator(f"#f-{field}-error").is_visible(), (size, field, page.inner_text("main")[:1500])
    # the fourth line of the summary is the witness's turn, not a mistake: their password is asked
    # for last, and checked once, when the rest of the form is right
    assert "4 things to fix" in page.inner_text("main")
    assert "the witness enters their own password" in page.inner_text("#f-witness_password-error")
    assert page.locator(f"#f-vials-{row}-ml").input_value() == "1.00"  # nothing typed is lost
    assert page.get_by_label("mL given").input_value() == "0.73"
    assert page.get_by_label("Witness username").input_value() == "ned"
    no_sideways_scroll(page, f"the infusion form with errors at {size}")
    # fixed, and the witness types their password once
    page.get_by_label(re.compile("Jordan Example")).check()
    page.get_by_label(re.compile("Dr. Alex Prescriber")).check()
    page.get_by_label("Weight (kg)").fill("72.50")
    page.get_by_label("Witness password").fill(PASSWORD)
    page.get_by_role("button", name="Record infusion").click()
    page.wait_for_url(re.compile(r".*/infusions/new\?saved=\d+$"))
    text = page.inner_text("#saved")
    assert "Infusion for J. Example: 36.50 mg given, 13.50 mg wasted, witnessed by Ned Nurse at " in text, text
    no_sideways_scroll(page, f"the infusion's confirmation at {size}")


def test_a_manager_resolves_a_count_discrepancy_from_its_alert(sized):
    size, server, new_context = sized
    page = new_context().new_page()
    log_in(page, server, "pia")
    page.goto(server.ui + "counts/new")
    page.get_by_role("button", name="Start a blind count").click()
    page.wait_for_url(re.compile(r".*/counts/C\d+$"))
    sealed = page.locator("input[name$='-sealed_containers']")
    opened = page.locator("input[name$='-open_containers']")
    for k in range(sealed.count()):
        sealed.nth(k).fill("0")
        opened.nth(k).fill("0")
    page.locator("fieldset", has_text="67457-0001-10").locator("input[name$='-sealed_containers']").fill("2")
    page.get_by_label("Second counter username").fill("nora")
    page.get_by_label("Second counter password").fill(PASSWORD)
    page.get_by_role("button", name="Submit the count").click()
    page.wait_for_load_state()
    assert "/entries/" in page.url, page.inner_text("main")[:2000]
    no_sideways_scroll(page, f"the count's result at {size}")

    mgr = new_context().new_page()
    log_in(mgr, server, "morgan")
    mgr.goto(server.ui + "alerts")
    alert = mgr.locator("section.alert", has_text="count (entry").first
    assert "Pia Pharmacist" in alert.inner_text()
    no_sideways_scroll(mgr, f"the alerts page at {size}")
    alert.get_by_role("link", name=re.compile("Resolve discrepancy")).click()
    panel = mgr.locator("section.panel", has_text="50 mg/mL").first
    did = panel.get_attribute("id").removeprefix("disc-")
    panel.get_by_label("Category").select_option("theft_or_loss")
    panel.get_by_label("Explanation").fill("Vials not found after a search of the medication room.")
    panel.get_by_label("Second person username").fill("ned")
    panel.get_by_label("Second person password").fill(PASSWORD)
    panel.get_by_role("button", name=f"Resolve {did}").click()
    mgr.wait_for_url("**/discrepancies?done=*")
    assert f"Discrepancy {did} resolved" in mgr.inner_text("#saved")
    mgr.goto(server.ui + "alerts")
    assert mgr.locator(f"#alert-{did}").count() == 0  # the alert closed with the discrepancy


def test_a_compliance_officer_downloads_every_report(sized):
    size, server, new_context = sized
    from reports.signing import inspect_signature

    page = new_context().new_page()
    log_in(page, server, "casey")
    page.goto(server.ui + "reports")
    kinds = [v for v in page.locator("#f-kind option").evaluate_all("os => os.map(o => o.value)") if v]
    assert len(kinds) >= 10, kinds
    first_day = (datetime.now(UTC) - timedelta(days=45)).strftime("%Y-%m-%d")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    # the vial history with no vial picked: said beside the vial's field, nothing downloaded
    page.get_by_label("Report").select_option("vial")
    page.get_by_label("From (first day)").fill(first_day)
    page.get_by_role("button", name="Download PDF").click()
    page.wait_for_load_state()
    assert "pick the vial whose history to print" in page.inner_text("#f-vial-error")
    refused: dict[str, str] = {}
    downloaded: list[str] = []
    for kind in kinds:
        page.goto(server.ui + "reports")
        page.get_by_label("Report").select_option(kind)
        page.get_by_label("From (first day)").fill(first_day)
        page.get_by_label("To (last day, included)").fill(today)
        if kind == "vial":  # the vial history is of one vial, picked from the book's
            page.get_by_label("Vial (for the vial history only)").select_option(index=1)
        got = []
        page.once("download", lambda d, got=got: got.append(d))
        page.get_by_role("button", name="Download PDF").click()
        # the answer is a PDF download or the reports page again, with its refusal beside the field
        for _ in range(600):
            try:
                if got or page.locator("#error-summary, p.error").count():
                    break
            except Exception:  # noqa: BLE001, S110  (the page is navigating: look again)
                pass
            page.wait_for_timeout(100)
        if not got:
            refused[kind] = " ".join(page.inner_text("main").split())
            continue
        data = open(got[0].path(), "rb").read()
        assert data.startswith(b"%PDF"), kind
        assert got[0].suggested_filename.startswith(f"csledger-{kind}-"), (kind, got[0].suggested_filename)
        assert inspect_signature(data).problems == [], kind
        downloaded.append(kind)
    # What the seeded clinic holds (an opening inventory, receipts) is in its reports; a report of
    # something the clinic never did in those days is refused saying so, never an empty PDF
    assert {"receiving", "inventory", "vial"} <= set(downloaded), (downloaded, refused)
    for kind, text in refused.items():
        assert "nothing to report" in text or (kind == "audit" and "count" in text), (kind, text[:600])
    no_sideways_scroll(page, f"the reports page at {size}")
