"""Accessibility (issue 21): every page passes axe-core with no serious or critical violation, and a
task is done by keyboard alone.

- axe-core (Deque's rules engine, MPL-2.0) comes from the npm registry, pinned exactly in
  ``tests/a11y/package.json`` and ``tests/a11y/package-lock.json``; ``.ci/run`` installs it with
  ``npm ci --prefix tests/a11y`` into ``tests/a11y/node_modules`` (gitignored). No Python package
  bundles it here, so the test injects ``axe.min.js`` into each page with Playwright and runs
  ``axe.run()`` with the WCAG 2.0 and 2.1 A and AA rules. Without that folder the axe tests skip,
  except under ``CSLEDGER_REQUIRE_BROWSER=1`` (CI), where that is a failure.
- The pages are test_layout.py's: each role's navigation and header links, every link of the
  "More tasks" page (so a task page is checked as soon as it is linked there; its first form is
  also sent empty, and the page with the errors checked), and the pages behind the forms
  (errors, a count in progress, a scanned receipt, an entry, a refusal, the login). Each at a
  desktop's, a tablet's (820 x 1180) and a phone's (390 x 844) size, each address once per
  size, seen by the first role in test_layout's order that reaches it.
- The pages' CSP allows only the app's own scripts, so the axe contexts bypass CSP (for the
  injection only: test_layout.py checks the pages under their CSP).
- By keyboard alone: a nurse records an infusion with Tab, Space, Enter and typing (no click), and
  sees the confirmation; every element Tab reaches on the pages walked has a visible focus outline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.web import test_layout as layout
from tests.web.conftest import PASSWORD, _need
from tests.web.test_layout import (
    USERS,
    VIEWPORTS,
    Pages,
    _is_task_page,
    _linked_pages,
    open_linked,
    page_name,
    walk_pages_behind_the_forms,
)

#: test_layout's module fixtures, one of each here: its clinic (long names, GS1 ids, a count
#: discrepancy, an open Form 106) on a server of this module, and each user's login.
server = layout.server
states = layout.states

AXE = Path(__file__).resolve().parents[1] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
#: WCAG 2.0 and 2.1, levels A and AA (axe's tags).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
#: The impacts that fail the test (axe's others: moderate, minor).
FAILING = ["serious", "critical"]

RUN_AXE = """async ([tags, failing]) => {
  const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return r.violations.filter(v => failing.includes(v.impact)).map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(' ')
      + (n.failureSummary ? ' (' + n.failureSummary.split('\\n').slice(1, 2).join('').trim() + ')' : ''))
  }));
}"""


@pytest.fixture(scope="module")
def axe_path() -> Path:
    if not AXE.exists():
        _need(f"no axe-core at {AXE}: npm ci --prefix tests/a11y --no-audit --no-fund")
    return AXE


class AxePages(Pages):
    """test_layout's browsing, with axe run on each page instead of the layout's measurements."""

    def __init__(self, browser, server, size, states, axe: Path):
        super().__init__(browser, server, size, states, Path(os.devnull))
        self.axe = axe

    def page(self, user: str | None):
        # bypass_csp: the pages allow only their own scripts; axe is injected by the test
        ctx = self.browser.new_context(viewport=VIEWPORTS[self.size], locale="en-US", bypass_csp=True,
                                       storage_state=self.states[user] if user else None)
        ctx.set_default_timeout(15000)
        self.contexts.append(ctx)
        return ctx.new_page()

    def check(self, page, name: str, who: str) -> None:
        page.wait_for_load_state("load")
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.add_script_tag(path=str(self.axe))
        for v in page.evaluate(RUN_AXE, [TAGS, FAILING]):
            for target in v["targets"]:
                self.problems.append(f"{v['id']} ({v['impact']}: {v['help']}) at {target} on {name} [{self.size}, {who}]")


@pytest.mark.slow  # about a minute per size (some 50 pages, axe on each); not timing-sensitive: CI's parallel pass
@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_every_page_has_no_serious_axe_violation(server, browser, states, axe_path, size):
    pages = AxePages(browser, server, size, states, axe_path)
    done: set[str] = set()
    try:
        for user in USERS:
            page = pages.page(user)
            page.goto(server.ui)
            for url in _linked_pages(page, server.ui):
                if url in done:
                    continue
                done.add(url)
                if open_linked(page, url, server.ui, user, pages.problems):
                    pages.check(page, page_name(url, server.ui), user)
                    if _is_task_page(url, server.ui):
                        _send_empty(pages, page, url, user)
        walk_pages_behind_the_forms(pages, server, size)
    finally:
        pages.close()
    assert len(done) >= 15, sorted(done)
    assert not pages.problems, (f"{len(pages.problems)} problems (serious or critical axe violations, forms "
                                "that did not answer):\n" + "\n".join(pages.problems))


def _send_empty(pages: AxePages, page, url: str, user: str) -> None:
    """A "More tasks" page's first form sent as it comes (nothing filled in): the page that
    answers, with its errors, checked too (each error must be tied to its field)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # here: tests skip without it

    form = page.locator("main form[method=post]").first
    if form.count() == 0:
        return
    form.evaluate("f => { f.noValidate = true; }")  # the server's checks, not the browser's bubbles
    try:
        with page.expect_navigation(timeout=15000):
            form.locator("button[type=submit], input[type=submit]").last.click(no_wait_after=True)
    except PlaywrightTimeout:
        pages.problems.append(f"{url} [{pages.size}, {user}]: its form sent empty got no answer in 15 s")
        return
    page.wait_for_load_state("load")
    pages.check(page, page_name(url, pages.server.ui) + "-sent-empty", user)


def test_axe_as_run_here_reports_what_it_must(browser, axe_path):
    """The injection and the filter work: a field without a label, an image without a text and
    faint grey text are reported (a run that found nothing because axe never ran would pass)."""
    ctx = browser.new_context(bypass_csp=True)
    try:
        page = ctx.new_page()
        page.set_content('<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
                         '<input id="a"><img src="x.png"><p style="color:#bbb">faint</p></main></body></html>')
        page.add_script_tag(path=str(axe_path))
        found = {v["id"] for v in page.evaluate(RUN_AXE, [TAGS, FAILING])}
        assert {"label", "image-alt", "color-contrast"} <= found, found
    finally:
        ctx.close()


# -- keyboard alone ------------------------------------------------------------------------------

FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  // the stylesheet's 3 px outline; the browser's own ring ('auto', 1 px) is too faint to count
  const outline = s.outlineStyle !== 'none' && s.outlineStyle !== 'auto' && parseFloat(s.outlineWidth) >= 2;
  return {tag: el.tagName.toLowerCase(), type: el.type || '', id: el.id || '', name: el.name || '',
          text: (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 60),
          visible: outline};
}"""


def _tab_to(page, want, *, limit: int = 120, back: bool = False) -> dict:
    """Press Tab (Shift+Tab with ``back``) until the focused element matches ``want``; every
    element passed on the way must show a focus outline."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        el = page.evaluate(FOCUSED)
        if el is None:
            continue
        assert el["visible"], f"no visible focus on {el} at {page.url}"
        seen.append(el)
        if want(el):
            return el
    passed = [(e["tag"], e["id"], e["text"]) for e in seen[-12:]]
    raise AssertionError(f"Tab never reached the element on {page.url}; the last passed: {passed}")


def _by_id(ident: str):
    return lambda el: el["id"] == ident


def test_a_nurse_records_an_infusion_by_keyboard_alone(server, browser):
    """No click: Tab and Shift+Tab to move, Space to tick and pick, Enter to follow a link and to
    send, typing for the figures. The confirmation is read the same way (focus lands on it)."""
    ctx = browser.new_context(viewport=VIEWPORTS["tablet"], locale="en-US")
    ctx.set_default_timeout(15000)
    try:
        page = ctx.new_page()
        # the login, typed
        page.goto(server.ui + "login")
        _tab_to(page, _by_id("f-username"))
        page.keyboard.type("nora")
        _tab_to(page, _by_id("f-password"))
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(re.escape(server.ui) + r"$"))
        # the navigation's link, followed with Enter
        _tab_to(page, lambda el: el["tag"] == "a" and el["text"] == "Record an infusion")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/infusions/new$"))
        # the patient: searched (Enter in the box finds), then picked with Space
        _tab_to(page, _by_id("f-patient_query"))
        page.keyboard.type("Jordan")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#patient-picks input[type=radio]') !== null")
        _tab_to(page, lambda el: el["type"] == "radio" and el["name"] == "patient_id")
        page.keyboard.press("Space")
        # the prescriber: the first radio Tab reaches in its group is the first prescriber
        _tab_to(page, lambda el: el["type"] == "radio" and el["name"] == "prescriber_dea_number")
        assert page.evaluate("document.activeElement.closest('label').innerText").startswith("Dr. Alex Prescriber")
        page.keyboard.press("Space")
        _tab_to(page, _by_id("f-weight_kg"))
        page.keyboard.type("72.50")
        page.keyboard.press("Tab")
        page.keyboard.type("0.50")
        # the first usable vial (the opened one), ticked with Space, and the mL drawn from it
        vial = _tab_to(page, lambda el: el["type"] == "checkbox" and el["name"].endswith("-use"))
        page.keyboard.press("Space")
        row = vial["name"].split("-")[1]
        _tab_to(page, _by_id(f"f-vials-{row}-ml"))
        page.keyboard.type("1.00")
        _tab_to(page, _by_id("f-ml_given"))
        page.keyboard.type("0.73")
        page.keyboard.press("Tab")
        page.keyboard.type("0.27")
        # Shift+Tab goes back: the weight is still there
        _tab_to(page, _by_id("f-weight_kg"), back=True)
        assert page.evaluate("document.activeElement.value") == "72.50"
        _tab_to(page, _by_id("f-witness_username"))
        page.keyboard.type("ned")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        _tab_to(page, lambda el: el["tag"] == "button" and el["text"] == "Record infusion")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/infusions/new\?saved=\d+$"))
        text = page.inner_text("#saved")
        assert "Infusion for J. Example: 36.50 mg given, 13.50 mg wasted, witnessed by Ned Nurse at " in text, text
        assert page.evaluate("document.activeElement.id") == "saved"  # a screen reader starts there
        # the entry's link is reached and followed by keyboard too
        _tab_to(page, _by_id("technical-view"))
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/entries/\d+$"))
    finally:
        ctx.close()


def test_every_focusable_element_shows_where_the_focus_is(server, browser, states):
    """Tab through whole pages (the nurse's and the manager's busiest): each element that takes
    the focus from the keyboard has a visible outline (the stylesheet's ``:focus-visible`` rule,
    at least 2 px, not the browser's default thin ring), and the first Tab reaches the skip link."""
    css = (Path(__file__).resolve().parents[2] / "api" / "web" / "static" / "app.css").read_text()
    assert re.search(r":focus-visible\s*\{[^}]*outline:\s*\d+px solid", css), "no :focus-visible outline in app.css"
    for user, path in (("nora", "infusions/new"), ("nora", "receipts/new"), ("morgan", "alerts"),
                       ("morgan", "tasks"), ("morgan", "stock")):
        ctx = browser.new_context(viewport=VIEWPORTS["tablet"], locale="en-US", storage_state=states[user])
        try:
            page = ctx.new_page()
            page.goto(server.ui + path)
            # the receiving page puts the focus in its scan field (a scanner types there): on the
            # others nothing has the focus yet and the first Tab reaches the skip link
            if page.evaluate("document.activeElement === document.body"):
                first = _tab_to(page, lambda el: True)
                assert first["tag"] == "a" and first["text"] == "Skip to content", first
            n = page.evaluate("document.querySelectorAll('a[href], button:not([disabled]), select:not([disabled]),"
                              " input:not([type=hidden]):not([disabled]), textarea:not([disabled])').length")
            # every element in the Tab order once (a radio group takes one stop): all outlined
            stops = 0
            for _ in range(n + 2):
                page.keyboard.press("Tab")
                el = page.evaluate(FOCUSED)
                if el is None:
                    break
                assert el["visible"], f"{user} {path}: no visible focus on {el}"
                stops += 1
            assert stops >= 5, (user, path, stops)
        finally:
            ctx.close()
