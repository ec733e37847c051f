"""Issue 17 in a real browser: Chromium's virtual authenticator (CDP ``WebAuthn`` domain) is Ned's
security key. Staff make their password keys on "My signing key" (Avery's is the root, the others
approved by Avery on the same screen), Ned enrols his passkey there, then Nora records an infusion
whose waste Ned witnesses on her screen with the passkey; the entry's witness signature is a
passkey assertion, and "My signatures" shows Ned what he signed.

The server is served as http://localhost:<port> (a secure context for WebAuthn), and the root
credential fixes that origin and the RP id ``localhost`` (``CSLEDGER_WEBAUTHN_*`` settings, read
when the administrator makes the root on the page)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from ledger.integrity import canonical as canon
from tests.cli.test_cli import _free_port
from tests.web.conftest import PASSWORD, log_in, seed, serving


@pytest.fixture(scope="module")
def pk_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-passkeys")
    seeded = seed(tmp)
    port = _free_port()
    env = {"CSLEDGER_WEBAUTHN_RP_ID": "localhost",
           "CSLEDGER_WEBAUTHN_ORIGINS": json.dumps([f"http://localhost:{port}"])}
    with serving(tmp, seeded, port=port, host="localhost", env=env) as s:
        yield s


def log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login?m=out")


def make_key(page, server, approver: str | None) -> None:
    page.get_by_role("link", name="My signing key").click()
    page.get_by_label("Your password").fill(PASSWORD)
    if approver is not None:
        page.get_by_label("Approver username").fill(approver)
        page.get_by_label("Approver password").fill(PASSWORD)
        page.get_by_label("Approver code (managers only)").fill(server.seeded.code(approver) or "")
    page.get_by_role("button", name="Make my password key").click()
    page.wait_for_url("**/me/signing-key?done=*")
    assert "Enrolled as entry" in page.inner_text("#saved"), page.inner_text("main")


def waste_witness(db_path: str) -> dict:
    """The witness signature on the last dose_wasted entry, read from the database."""
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT canonical FROM entries WHERE kind = 'dose_wasted' ORDER BY seq DESC LIMIT 1").fetchall()
    finally:
        con.close()
    assert rows, "no waste recorded"
    entry = canon.decode(bytes(rows[0][0]))
    return next(s for s in entry["signatures"] if s["meaning"] == "witnessed")


def test_witness_confirms_an_infusion_with_a_passkey_in_the_browser(pk_server, context, shots, tmp_path):
    server = pk_server
    page = context.new_page()
    # Ned's security key, plugged into this tablet: a roaming (USB) authenticator with user verification
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True}})

    # the administrator makes the root of trust (no approver), then Nora and Ned theirs, approved by her
    log_in(page, server, "avery")
    page.get_by_role("link", name="My signing key").click()
    assert page.locator("#root-note").is_visible()
    make_key(page, server, None)
    assert "password key (root)" in page.inner_text("main")
    log_out(page)
    for user in ("nora", "ned"):
        log_in(page, server, user)
        make_key(page, server, "avery")
        log_out(page)

    # Ned enrols his passkey: register the key, then it signs its own enrolment, Avery approving
    log_in(page, server, "ned")
    page.get_by_role("link", name="My signing key").click()
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_role("button", name="Register my security key").click()
    page.wait_for_selector("#passkey-enrol")
    page.get_by_label("Approver username").fill("avery")
    page.get_by_label("Approver password").fill(PASSWORD)
    page.get_by_label("Approver code (managers only)").fill(server.seeded.code("avery") or "")
    shots(page, "20-passkey-enrol")
    page.get_by_role("button", name="Sign with my new passkey and enrol it").click()
    page.wait_for_url("**/me/signing-key?done=*")
    assert "Enrolled as entry" in page.inner_text("#saved")
    assert "passkey" in page.locator("table").inner_text()
    log_out(page)

    # Nora records an infusion with waste; Ned, at her screen, types only his username
    log_in(page, server, "nora")
    page.get_by_role("link", name="Record an infusion").first.click()
    page.get_by_label("Name or chart number").fill(server.seeded.patient_id)  # a chart number finds them too
    page.get_by_role("button", name="Find patient").click()
    page.get_by_label(re.compile("Jordan Example")).check()
    page.get_by_label(re.compile("Dr. Alex Prescriber")).check()
    page.get_by_label("Weight (kg)").fill("72.50")
    page.get_by_label("Ordered dose (mg/kg)").fill("0.50")
    first = page.locator("input[type=checkbox][name$='-use']:not([disabled])").first
    first.check()
    row = first.get_attribute("name").split("-")[1]
    page.locator(f"#f-vials-{row}-ml").fill("1.00")
    page.get_by_label("mL given").fill("0.73")
    page.get_by_label("mL wasted (remainder)").fill("0.27")
    page.get_by_label(re.compile("Witness uses a passkey")).check()
    assert not page.get_by_label("Witness password").is_visible()  # not asked for
    page.get_by_label("Witness username").fill("ned")
    page.get_by_role("button", name="Record infusion").click()
    # nothing recorded yet: the page shows what Ned confirms, with a button for his key
    prompt = page.locator("#witness-passkey")
    prompt.wait_for()
    assert "Ned Nurse" in prompt.inner_text() and "Record an infusion" in prompt.inner_text()
    assert page.get_by_label("Weight (kg)").input_value() == "72.50"  # nothing typed is lost
    shots(page, "21-infusion-passkey-prompt")
    page.get_by_role("button", name="Ned Nurse: confirm with passkey").click()
    page.wait_for_url(re.compile(r".*/infusions/new\?saved=\d+$"))
    assert "Recorded as entry" in page.inner_text("main") and "witnessed by Ned Nurse" in page.inner_text("#saved")
    w = waste_witness(server.seeded.db.removeprefix("sqlite:///"))
    assert w["auth_method"] == "passkey" and w["printed_name"] == "Ned Nurse"
    assert set(w["proof"]) == {"credential_id", "authenticator_data", "client_data_json", "signature"}
    log_out(page)

    # Ned sees what he signed
    log_in(page, server, "ned")
    page.get_by_role("link", name="My signatures").click()
    text = page.inner_text("main")
    assert "check that what was recorded is what you confirmed" in text
    newest = page.locator("table.signatures tbody tr").first.inner_text()
    assert "Waste" in newest and "witnessed" in newest and "passkey" in newest and "Record an infusion" in newest
    assert "Jordan" not in text  # statements carry the patient's id, never their name
    path = shots(page, "22-my-signatures")
    screenshot = tmp_path / "my-signatures.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000 and path.exists()
