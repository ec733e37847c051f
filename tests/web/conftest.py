"""End-to-end fixtures: a seeded ledger, ``csledger serve`` as a subprocess on a free loopback
port, and Debian's chromium driven by the ``playwright`` package through its executable path
(no browser download). Browser tests skip when chromium or playwright is missing, except under
``CSLEDGER_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where that is a failure.

Screenshots go to ``CSLEDGER_SCREENSHOT_DIR`` when set (``docs/screenshots`` to refresh the
committed ones), else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.cli.test_cli import CSLEDGER, _free_port

CHROMIUM = os.environ.get("CSLEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "four quiet harbor lamps"
DEA = "AB1234563"
#: A tablet in landscape, the size of the screenshots.
VIEWPORT = {"width": 1180, "height": 820}


def _need(reason: str) -> None:
    if os.environ.get("CSLEDGER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} but CSLEDGER_REQUIRE_BROWSER=1")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        _need(f"no chromium at {CHROMIUM}: apt-get install chromium to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install playwright; never `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Seeded:
    db: str
    key_dir: Path
    totp: dict[str, str] = field(default_factory=dict)
    supplier_id: str = ""
    alert_id: str | None = None
    patient_id: str | None = None
    patient_key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def code(self, username: str) -> str | None:
        s = self.totp.get(username)
        return pyotp.TOTP(s).now() if s else None


class _SimClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def seed(tmp: Path) -> Seeded:
    """A clinic with a login for every role, an initial inventory and a receipt, with signed
    checkpoints (log key in ``tmp/keys``)."""
    from api.http.auth import Authenticator, fast_test_hasher
    from api.http.auth_store import AuthStore
    from ledger import services
    from ledger.domain.commands import (
        InventoryItemInput,
        ReceivedLineInput,
        ReceiveStock,
        TakeInventory,
    )
    from ledger.settings import Settings
    from ledger.storage.log import attach
    from ledger.storage.store import Ledger, migrate
    from tests.conftest import KETAMINE_50, Clinic

    db = f"sqlite:///{tmp / 'web.db'}"
    settings = Settings(database_url=db, key_dir=tmp / "keys")
    now = datetime.now(UTC)
    clock = _SimClock(now - timedelta(days=45))  # history is recorded when it happened, not late
    ledger = Ledger.open(db, clock=clock)
    migrate(ledger.engine)
    attach(ledger, settings)
    clinic = Clinic(ledger)
    clinic.enroll("Dr. Dana Prescriber", "dana", "prescriber")
    clinic.enroll("Morgan Manager", "morgan", "manager")
    clinic.enroll("Casey Compliance", "casey", "compliance_officer")
    out = Seeded(db, tmp / "keys", supplier_id=clinic.supplier_id)
    # The report key (issue 18), beside the log key: the reports page serves signed PDFs.
    from tests.reports.report_keys import certify

    certify(ledger, clinic.admin, tmp / "keys")
    auth = Authenticator(AuthStore(ledger), settings, clock=lambda: datetime.now(UTC), hasher=fast_test_hasher())
    for user in ("avery", "nora", "ned", "pia", "ari", "dana", "morgan", "casey"):
        secret = auth.set_password(auth.store.staff_by_username(clinic.dea, user), PASSWORD, must_change=False)
        if secret:
            out.totp[user] = secret
    clock.now = now - timedelta(days=40)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", clock.now - timedelta(minutes=5), items=(
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=3),
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=False, ml="6.00",
                               first_punctured_on=(clock.now - timedelta(days=1)).date().isoformat()))), witness=clinic.nurse)
    clock.now = now - timedelta(days=2)
    receipt = services.receive_stock(ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "GMS-0001", clock.now - timedelta(minutes=5),
        (ReceivedLineInput(KETAMINE_50, 4, "KA2610", "2028-06-30"),)))
    # A patient for the infusion, and an alert for the manager to resolve.
    from ledger.domain.commands import AddressInput, RegisterPatient
    from ledger.storage.patient_keys import PatientKeys
    from tests.web.test_pages_http import raise_test_alert

    keys = PatientKeys.from_base64(out.patient_key)
    clock.now = now - timedelta(days=1)
    out.patient_id = services.register_patient(ledger, clinic.nurse, RegisterPatient(
        "Jordan Example", AddressInput("1 Elm St", "Austin", "TX", "78701"), "1961-11-02"), keys=keys)["patient_id"]
    out.alert_id = raise_test_alert(ledger, clinic.nurse.staff_id, evidence=receipt["entries"][0]["seq"])
    ledger.dispose()
    return out


@dataclass
class Server:
    base: str
    seeded: Seeded
    proc: subprocess.Popen
    ui: str = ""


@contextmanager
def serving(tmp: Path, seeded: Seeded, *, port: int | None = None, host: str = "127.0.0.1",
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """``csledger serve`` on ``seeded``'s database at http://<host>:<port> until the block ends;
    afterwards its log must hold no password, token or patient name."""
    port = port or _free_port()
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(seeded.key_dir), "CSLEDGER_WEB_COOKIE_SECURE": "0",
           "CSLEDGER_PATIENT_KEY": seeded.patient_key, **(env or {})}
    log = open(tmp / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(CSLEDGER + ["serve", "--db", seeded.db, "--port", str(port)], cwd=tmp,
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://{host}:{port}"
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except httpx.TransportError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"server did not start: {(tmp / 'server.log').read_text()}")
            time.sleep(0.2)
    try:
        yield Server(base, seeded, proc, ui=f"{base}/ui/{DEA}/")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        text = (tmp / "server.log").read_text()
        assert PASSWORD not in text and "csl_" not in text  # no secrets in the server's log
        assert "Jordan" not in text  # no patient name either


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    with serving(tmp, seed(tmp)) as s:
        yield s


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="en-US")
    ctx.set_default_timeout(15000)
    yield ctx
    ctx.close()


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("CSLEDGER_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = True) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


def log_in(page, server: Server, username: str, password: str = PASSWORD) -> None:
    page.goto(server.ui + "login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    code = server.seeded.code(username)
    if code:
        page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(server.ui + "**")
