"""Pages' forms and the keyboard, and the pages' own Content-Security-Policy (issue 21)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.web.conftest import log_in

TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "web" / "templates"


def test_no_inline_style_or_script_in_any_template() -> None:
    """The pages' CSP allows only the app's own scripts and styles: an inline ``style`` attribute
    or ``<script>`` block is refused by the browser (the alerts page logged one error per alert)."""
    for path in sorted(TEMPLATES.glob("*.html")):
        text = path.read_text()
        assert not re.search(r"\sstyle\s*=", text), f"{path.name}: inline style attribute"
        assert not re.search(r"<style\b", text), f"{path.name}: <style> block"
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{path.name}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path.name}: inline event handler"


def test_enter_in_the_count_time_field_moves_on_instead_of_submitting(server, context) -> None:
    """Pressing Enter in the count's date field used to send the half-filled form."""
    page = context.new_page()
    log_in(page, server, "pia")
    page.get_by_role("link", name="Count").first.click()
    page.get_by_role("button", name="Start a blind count").click()
    page.wait_for_url(re.compile(r".*/counts/C\d+$"))
    url = page.url
    field = page.get_by_label("Counted at")
    field.focus()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert page.url == url and page.locator("#error-summary").count() == 0  # nothing was sent
    assert page.evaluate("document.activeElement.name") != "occurred_at"  # focus moved to the next field
