"""Shared fixtures: fresh databases built by the real Alembic migrations, on each backend.

PostgreSQL tests need ``CSLEDGER_TEST_POSTGRES_URL`` (a server URL whose user may CREATE
DATABASE). Without it they skip, except under ``CSLEDGER_REQUIRE_POSTGRES=1`` (set by
``.ci/run``), where a missing server is a failure, so CI can never go green on SQLite alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    EnrollStaff,
    RegisterPrescriber,
    RegisterRegistrant,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.storage.store import Ledger, make_engine, migrate
from tests.support import db_templates

# Hypothesis, reproducibly: under CI (CI=true) every property test is derandomized (the same
# examples on every run and machine, a seed derived from the test); elsewhere examples vary per run
# and a failure prints the blob that replays it (@reproduce_failure). HYPOTHESIS_PROFILE overrides.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

#: The test clinics' time zone: their calendar days (expiry, counts, years) are the clinic's.
CLINIC_TZ = "America/Chicago"


def clinic_today(now: datetime | None = None):
    """The clinic's local date now (not the machine's, not UTC's): what expiry and usability use."""
    from zoneinfo import ZoneInfo

    return (now or datetime.now(UTC)).astimezone(ZoneInfo(CLINIC_TZ)).date()


PG_ENV = "CSLEDGER_TEST_POSTGRES_URL"
DEA = "AB1234563"
DEA2 = "FB7654329"  # a second valid practitioner number
#: The prescribers every test clinic registers (issue 19): administrations name one of these.
PRESCRIBERS = {DEA: "Dr. Alex Prescriber", DEA2: "Dr. Fran Prescriber"}
#: Real NDCs with their true figures (csledger's NDC reference, ledger/domain/ndc_reference.csv):
#: Mylan's ketamine 50 mg/mL, 10 mL vials, carton of 10; Ketalar 10 mg/mL, 20 mL vial, one per bag
#: (General Injectables & Vaccines). K10's key sorts before K50's, as tests of per-NDC order expect.
KETAMINE_50 = "67457-0001-10"
KETAMINE_10 = "52584-0037-10"


def postgres_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CSLEDGER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is not set but CSLEDGER_REQUIRE_POSTGRES=1")
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} to run these tests")
    return url


def fresh_database_url(kind: str, tmp_path: Path, *, migrated: bool = False) -> Iterator[str]:
    """A new database of its own on ``kind``'s backend: empty, or with ``migrated`` a copy of
    this process's freshly migrated template (``tests/support/db_templates.py``), the same
    database the migrations make, at the same file path or under the same kind of name."""
    if kind == "sqlite":
        path = tmp_path / "ledger.db"
        url = f"sqlite:///{path}"
        if migrated:
            db_templates.copy_sqlite(path)
            db_templates.mark_copy(url)
        try:
            yield url
        finally:
            db_templates.release(url)
        return
    base = postgres_url()
    name = "cst_" + uuid.uuid4().hex[:16]
    db_templates.create_postgres(base, name, migrated=migrated)
    url = db_templates.database_url(base, name)
    if migrated:
        db_templates.mark_copy(url)
    try:
        yield url
    finally:
        db_templates.release(url)
        db_templates.drop_postgres(base, name)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh database's URL: already migrated (a template copy) when the test uses a ``ledger``
    fixture, which would migrate it first thing; else empty, for the tests that migrate (or run
    ``csledger init``) themselves. A test marked ``real_migrations`` gets an empty database and
    its ``ledger`` runs the migrations (tests of the migrations themselves)."""
    kind = getattr(request, "param", None) or getattr(request.cls, "backend", "sqlite")
    yield from fresh_database_url(kind, tmp_path, migrated=wants_template(request))


def wants_template(request: pytest.FixtureRequest) -> bool:
    """Whether a ``db_url`` fixture should hand ``request``'s test a migrated template copy: it
    uses a ``ledger`` fixture and is not marked ``real_migrations``."""
    return "ledger" in request.fixturenames and not request.node.get_closest_marker("real_migrations")


def migrated_engine(url: str) -> sa.Engine:
    """An engine on ``url`` with the schema at head: a template copy is already there (checked:
    its ``alembic_version`` is the head revision); any other database is migrated."""
    engine = make_engine(url)
    if db_templates.is_copy(url):
        with engine.connect() as c:
            version = c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        assert version == [_head_revision()], (url, version)
    else:
        migrate(engine)
    return engine


def _head_revision() -> str:
    global _HEAD
    if _HEAD is None:
        from alembic.script import ScriptDirectory

        from ledger.storage.engine import alembic_config

        _HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return _HEAD


_HEAD: str | None = None


def migrated_sqlite(path: Path) -> sa.Engine:
    """An engine on a new, freshly migrated SQLite ledger at ``path`` (a template copy): for
    tests that make a database of their own many times (property tests, one per example)."""
    db_templates.copy_sqlite(path)
    return make_engine(f"sqlite:///{path}")


@pytest.fixture
def ledger(db_url) -> Iterator[Ledger]:
    lg = Ledger(migrated_engine(db_url))
    yield lg
    lg.dispose()


#: A supplier's DEA registration and DSCSA status (issue 19): receipts are checked against them.
SUPPLIER_REGISTRATION = {"registration_expires_on": "2031-06-30", "schedules": ("2", "2N", "3", "3N", "4", "5"),
                         "authorized_trading_partner": True}
#: A transfer receiver's and a return recipient's DEA registration (issue 19): stock leaves only
#: to a registration current on the day that covers Schedule III; the entry copies it.
RECEIVER_REGISTRATION = {"receiver_registration_expires_on": "2031-06-30", "receiver_schedules": ("3", "3N", "4", "5")}
RECIPIENT_REGISTRATION = {"recipient_registration_expires_on": "2031-06-30",
                          "recipient_schedules": ("2", "2N", "3", "3N", "4", "5")}


class Clinic:
    """A registrant with an administrator, a nurse, a pharmacist, a product and a supplier."""

    def __init__(self, ledger: Ledger, dea: str = DEA):
        self.ledger = ledger
        self.dea = dea
        res = services.register_registrant(ledger, RegisterRegistrant(
            dea_number=dea, name="Calm Waters Ketamine Clinic",
            address=AddressInput("100 Harbor Way", "Austin", "TX", "78701"), time_zone=CLINIC_TZ,
            admin_printed_name="Avery Admin", admin_username="avery"))
        self.admin = Principal(dea, res["admin_staff_id"], "Avery Admin", AuthMethod.CONSOLE_BOOTSTRAP)
        #: Who holds manager or administrator, in order of enrolment: the approvers available.
        self.staff_admins: list[Principal] = [self.admin]
        self.nurse = self.enroll("Nora Nurse", "nora", "nurse")
        self.nurse2 = self.enroll("Ned Nurse", "ned", "nurse")
        self.pharmacist = self.enroll("Pia Pharmacist", "pia", "pharmacist")
        self.auditor = self.enroll("Ari Auditor", "ari", "auditor")
        services.add_product(ledger, self.admin, AddProduct(KETAMINE_50, "Ketamine HCl injection 50 mg/mL", "7285", "III",
                                                           "injection", "50.00", "10.00"))
        services.add_product(ledger, self.admin, AddProduct(KETAMINE_10, "Ketamine HCl injection 10 mg/mL", "7285", "III",
                                                           "injection", "10.00", "20.00"))
        self.supplier_id = services.add_supplier(ledger, self.admin, AddSupplier(
            "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
            **SUPPLIER_REGISTRATION))["supplier_id"]
        for number, name in PRESCRIBERS.items():  # last, so the entries before keep their seqs
            services.register_prescriber(ledger, self.admin, RegisterPrescriber(
                name, number, "TX", ("3N", "4", "5"), "2031-06-30", f"TX-{number[2:]}", "TX"))

    def approver_for(self, actor: Principal, grantee: str | None = None) -> Principal | None:
        """A second manager or administrator to approve an enrolment or grant by ``actor`` (None
        while the administrator is the registrant's only one: they enrol alone)."""
        return next((p for p in self.staff_admins if p.staff_id not in (actor.staff_id, grantee)), None)

    def enroll(self, name: str, username: str, *roles: str, by: Principal | None = None) -> Principal:
        """Enrol through the service as ``by`` (the administrator), approved by the first other
        manager or administrator once there is one (separation of duties)."""
        by = by or self.admin
        res = services.enroll_staff(self.ledger, by, EnrollStaff(name, username, roles),
                                    approver=self.approver_for(by))
        who = Principal(self.dea, res["staff_id"], name, AuthMethod.PASSWORD)
        if {"manager", "administrator"} & set(roles):
            self.staff_admins.append(who)
        return who


@pytest.fixture
def clinic(ledger) -> Clinic:
    return Clinic(ledger)


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def entry_count(ledger: Ledger) -> int:
    from ledger.storage.store import entries_t

    with ledger.reading() as c:
        return c.execute(sa.select(sa.func.count()).select_from(entries_t)).scalar()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_migrations: the test's ledger fixture runs the Alembic migrations "
                            "on an empty database instead of copying the migrated template")


# --- the order of files over xdist's workers (.ci/run) --------------------------------------------
#: Files that take minutes, longest first (measured in session 30 on a loaded machine: 2-20 min
#: each there, roughly a third of that alone on 2 cores; see .ci/run). Under ``-n 2 --dist
#: loadfile --no-loadscope-reorder`` a worker takes one file at a time in collection order, so
#: these start first and the many short files even out the end. Left to itself xdist starts the
#: files with the most tests first, which leaves the few-but-long ones (browser sweeps, bad-input
#: sweeps, the wheel) for last, one worker busy and one idle.
LONG_FILES = (
    "tests/robustness/test_bad_input_web.py",
    "tests/robustness/test_bad_input_http.py",
    "tests/robustness/test_bad_input_cli.py",
    "tests/robustness/test_bad_input_web_part2.py",
    "tests/robustness/test_bad_input_cli_offline.py",
    "tests/robustness/test_tampering.py",
    "tests/reports/test_reports_cli.py",
    "tests/web/test_axe.py",
    "tests/robustness/test_backup_restore.py",
    "tests/integrity/test_bundle.py",
    "tests/reports/test_rebuild.py",
    "tests/test_wheel.py",
    "tests/web/test_layout.py",
    "tests/web/test_floor_three_sizes.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the files of ``LONG_FILES`` first, then files holding a ``slow`` test, then
    the rest with the most tests first (xdist's own order). Each file's tests keep their order
    (a stable sort on the file), so module fixtures are still built once per file."""
    # the workers collect (and run) in the order given here; xdist sets their own option.dist to "no"
    if not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") == "no":
        return
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    rank = {f: i for i, f in enumerate(LONG_FILES)}

    def key(f: str) -> tuple[int, int]:
        if f in rank:
            return (0, rank[f])
        if any(it.get_closest_marker("slow") for it in files[f]):
            return (1, -len(files[f]))
        return (2, -len(files[f]))

    items[:] = [it for f in sorted(files, key=key) for it in files[f]]


# --- no silent skips in CI --------------------------------------------------------------------------
# With CSLEDGER_FAIL_ON_SKIP=1 (set by .ci/run) a skipped test fails the run unless its node id
# matches a line of tests/skips_allowed.txt (fnmatch patterns, one per line, each with a comment
# saying why). An expected failure (xfail) is not a skip.
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def _allowed_skips() -> list[str]:
    path = Path(__file__).with_name("skips_allowed.txt")
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    failed_drops = db_templates.drop_templates()  # the queued drops, this process's templates
    if failed_drops:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"dropping test databases failed: {failed_drops}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.environ.get("CSLEDGER_FAIL_ON_SKIP") != "1":
        return
    import fnmatch

    allowed = _allowed_skips()
    unexpected = [(n, r) for n, r in _SKIPPED if not any(fnmatch.fnmatchcase(n, pat) for pat in allowed)]
    if unexpected:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{len(unexpected)} test(s) skipped that tests/skips_allowed.txt does not allow "
                 "(CSLEDGER_FAIL_ON_SKIP=1):"] + [f"  {n}: {r}" for n, r in unexpected]
        if tr is not None:
            tr.ensure_newline()
            tr.write_line("\n".join(lines), red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def count_as_booked(ledger: Ledger, counter: Principal, second_counter: Principal,
                    occurred_at: datetime | None = None) -> dict:
    """A two-person count of every product that finds exactly what the book holds (an open,
    not blind, count copies the expected figures): the count an audit needs at each end of its
    window (issue 20, one period). Returns the service's answer."""
    from ledger.domain.commands import CountLineInput, StartCount, SubmitCount

    s = services.start_count(ledger, counter, StartCount(blind=False))
    from decimal import Decimal

    lines = tuple(CountLineInput(  # expected_ml is every mL on hand: the opened vials hold the rest
        p["ndc"], p["expected_sealed_containers"], p["expected_open_containers"],
        str(Decimal(p["expected_ml"]) - p["expected_sealed_containers"] * Decimal(p["container_ml"])))
        for p in s["products"])
    res = services.submit_count(ledger, counter, SubmitCount(s["session_id"], lines,
                                                            occurred_at or datetime.now(UTC) - timedelta(minutes=1)),
                                second_counter=second_counter)
    assert res["discrepancy_ids"] == [], res
    return res
