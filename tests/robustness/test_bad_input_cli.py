"""Bad input on every command that takes a file, an identifier or a database URL, run as a user
runs it: ``python -m api.cli`` in a subprocess.

Files: empty, random bytes, a real file cut in half (a bundle, a single-entry proof, a report
PDF, a backup exported from a small ledger), 10 MB of garbage, a path that does not exist, a
folder; bundles with a malformed checkpoint note or nested 10,000 levels deep. Identifiers: bad
DEA check digit, Cyrillic and fullwidth look-alikes, zero-width space, unknown registrants,
impossible dates. Database URLs: an unreachable server, a folder that does not exist, a
dialect csledger does not speak, not a URL.

Per command: exit status not 0, no traceback, a line naming the problem (matched per case),
and, for commands against the ledger, no entry written (the count is taken before and after).
This file: the commands against a ledger; the bad database URLs and the offline files (bundles,
proofs, checkpoints, witness folders): test_bad_input_cli_offline.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger.storage.store import normalize_url
from tests.conftest import BACKENDS, postgres_url

pytestmark = pytest.mark.slow

CSLEDGER = [sys.executable, "-m", "api.cli"]
DEA = "AB1234563"
BAD_DEAS = {"check digit": "AB1234564", "Cyrillic A": "\u0410B1234563", "fullwidth 6": "AB12345\uff163",
            "zero-width space": "AB1234563\u200b", "unknown": "FB7654329"}
BAD_URLS = {"unreachable server": ("postgresql://nobody@127.0.0.1:1/x", r"cannot open the database|refused"),
            "no such folder": ("sqlite:////nonexistent-csledger/dir/x.db", r"nonexistent-csledger|unable to open"),
            "MySQL": ("mysql://x", r"only sqlite:/// and postgresql://"),
            "not a URL": ("not a url", r"only sqlite:/// and postgresql://")}
INIT = ["init", "--dea", DEA, "--name", "Calm Waters Ketamine Clinic", "--street", "100 Harbor Way", "--city",
        "Austin", "--state", "TX", "--zip", "78701", "--time-zone", "America/Chicago", "--admin-name", "Avery Admin",
        "--admin-username", "avery"]


def run(args: list[str], cwd: Path, *, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CSLEDGER + args, cwd=cwd, capture_output=True, encoding="utf-8", errors="replace",
                          input=stdin, env={**os.environ, **(env or {})}, timeout=300)


def ok(args: list[str], cwd: Path) -> str:
    p = run(args, cwd)
    assert p.returncode == 0, f"{args}: {p.stdout}{p.stderr}"
    return p.stdout


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str  # a regular expression the message must match (case-insensitive)
    stdin: str = ""
    env: dict = field(default_factory=dict)


def check(case: Case, p: subprocess.CompletedProcess) -> str | None:
    """What is wrong with how the command refused ``case`` (None when it refused cleanly)."""
    said = p.stdout + p.stderr
    wrong = []
    if p.returncode == 0:
        wrong.append("exit status 0")
    if "Traceback" in said or 'File "' in said:
        wrong.append("a traceback")
    lines = [x for x in p.stderr.splitlines() if x.strip() and not x.startswith("note ")]
    if not any(re.search(case.expect, x, re.IGNORECASE) for x in lines):
        wrong.append(f"no line of stderr matches {case.expect!r}")
    elif len(lines) > 3:
        wrong.append(f"{len(lines)} lines of stderr, not one message")
    return f"{case.name}: {'; '.join(wrong)}\n    stderr: {p.stderr.strip()[:300]!r}" if wrong else None


def run_all(cases: list[Case], cwd: Path) -> list[str]:
    """Two at a time (the machine has two cores); the problems found."""
    took: list[tuple[float, str]] = []

    def one(case: Case) -> str | None:
        t0 = time.perf_counter()
        p = run(case.args, cwd, stdin=case.stdin, env=case.env)
        took.append((time.perf_counter() - t0, case.name))
        return check(case, p)

    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = [p for p in pool.map(one, cases) if p is not None]
    print("\nslowest:", ", ".join(f"{name} {t:.1f} s" for t, name in sorted(took, reverse=True)[:4]))
    return problems


def garbage_files(folder: Path, real: dict[str, Path]) -> dict[str, Path]:
    """Bad stand-ins for a file argument: the usual ones, plus each real file cut in half."""
    rng = __import__("random").Random(20261126)
    files = {"empty": folder / "empty", "random bytes": folder / "random.bin", "10 MB garbage": folder / "big.bin",
             "a folder": folder / "a-folder", "no such file": folder / "no-such-file"}
    files["empty"].write_bytes(b"")
    files["random bytes"].write_bytes(rng.randbytes(4096))
    files["10 MB garbage"].write_bytes(rng.randbytes(10 * 1024 * 1024))
    files["a folder"].mkdir(exist_ok=True)
    for what, path in real.items():
        data = path.read_bytes()
        cut = folder / f"{path.name}.half"
        cut.write_bytes(data[: len(data) // 2])
        files[f"{what} cut in half"] = cut
    return files


# --- a small ledger, on each backend -----------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def made(request, tmp_path_factory):
    """A registrant with its first entries; its bundle, one entry's proof and a backup."""
    folder = tmp_path_factory.mktemp(f"cli-{request.param}")
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'ledger.db'}"
    else:
        base = postgres_url()
        name = "cst_" + uuid.uuid4().hex[:16]
        admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            c.exec_driver_sql(f'CREATE DATABASE "{name}_restore"')
        url = sa.engine.make_url(normalize_url(base)).set(database=name).render_as_string(hide_password=False)
    ok([*INIT, "--db", url], folder)
    ok(["export", "--registrant", DEA, "--out", "ledger.bundle", "--db", url], folder)
    ok(["export", "--registrant", DEA, "--seq", "1", "--out", "entry.tlog-proof", "--db", url], folder)
    ok(["backup", "--out", "ledger.backup", "--db", url], folder)
    yield request.param, url, folder
    if admin is not None:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}_restore" WITH (FORCE)')
        admin.dispose()


def count_entries(url: str) -> int:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as c:
            return c.exec_driver_sql("SELECT count(*) FROM entries").scalar()
    finally:
        engine.dispose()


def table_count(url: str) -> int:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as c:
            return len(sa.inspect(c).get_table_names())
    finally:
        engine.dispose()


# --- commands against a ledger -------------------------------------------------------------------


def test_bad_input_to_commands_against_a_ledger(made):
    backend, url, folder = made
    db = ["--db", url]
    files = garbage_files(folder, {"backup": folder / "ledger.backup"})
    a_file = str(files["empty"])
    cases: list[Case] = []
    # Identifiers: every command that takes a DEA number gets one of the bad ones, in turn (each
    # bad DEA goes to several commands; init gets all of them).
    deas = list(BAD_DEAS.items())
    for label, dea in deas[:-1]:
        init = list(INIT)
        init[init.index(DEA)] = dea
        cases.append(Case(f"init --dea {label}", [*init, *db], r"dea_number"))
    by_dea = [
        ("verify --registrant", lambda d: ["verify", "--registrant", d], r"no registrant"),
        ("stock --registrant", lambda d: ["stock", "--registrant", d], r"no registrant"),
        ("audit --registrant", lambda d: ["audit", "--registrant", d, "--from", "2026-01-01", "--to", "2026-12-31"],
         r"no registrant"),
        ("keys show --registrant", lambda d: ["keys", "show", "--registrant", d], r"no log key"),
        ("keys rotate --registrant", lambda d: ["keys", "rotate", "--registrant", d, "--reason", "x"],
         r"no registrant"),
        ("export --registrant", lambda d: ["export", "--registrant", d, "--out", str(folder / "x.bundle")],
         r"no signed checkpoint|registrant"),
        ("report --registrant", lambda d: ["report", "receiving", "--registrant", d, "--from", "2026-01-01", "--to",
                                           "2026-12-31", "--out", str(folder / "x.pdf")], r"registrant"),
        ("alerts list --dea", lambda d: ["alerts", "list", "--dea", d], r"no registrant"),
        ("alerts scan --dea", lambda d: ["alerts", "scan", "--dea", d, "--no-notify"], r"registrant"),
        ("staff set-password --dea", lambda d: ["staff", "set-password", "--dea", d, "--username", "avery",
                                                "--password-stdin"], r"no staff member"),
        ("witnesses push --registrant", lambda d: ["witnesses", "push", "--registrant", d],
         r"no witness policy|registrant"),
    ]
    for i, (what, args, expect) in enumerate(by_dea):
        for label, dea in (deas[i % len(deas)], deas[(i + 2) % len(deas)]):
            cases.append(Case(f"{what} {label}", [*args(dea), *db], expect, stdin="four quiet harbor lamps\n"))
    cases += [
        Case("init --state", [*INIT[:INIT.index("--state") + 1], "XX", *INIT[INIT.index("--state") + 2:], *db],
             r"state"),
        Case("init --zip", [*INIT[:INIT.index("--zip") + 1], "7870", *INIT[INIT.index("--zip") + 2:], *db],
             r"postal_code|already"),
        Case("init --time-zone path", [*INIT[:INIT.index("--time-zone") + 1], "../../../etc/passwd",
                                       *INIT[INIT.index("--time-zone") + 2:], *db], r"time_zone|already"),
        Case("audit --from month 13", ["audit", "--registrant", DEA, "--from", "2026-13-45", "--to", "2026-12-31",
                                       *db], r"--from"),
        Case("report kind", ["report", "nonsense", "--registrant", DEA, "--from", "2026-01-01", "--to", "2026-12-31",
                             "--out", str(folder / "x.pdf"), *db], r"kind"),
        Case("report --from Feb 30", ["report", "receiving", "--registrant", DEA, "--from", "2026-02-30", "--to",
                                      "2026-12-31", "--out", str(folder / "x.pdf"), *db], r"from|date|inventory"),
        Case("export --seq huge", ["export", "--registrant", DEA, "--seq", "9" * 30, "--out", str(folder / "x.p"),
                                   *db], r"seq"),
        Case("export --seq -1", ["export", "--registrant", DEA, "--seq", "-1", "--out", str(folder / "x.p"), *db],
             r"seq"),
        Case("export --out a folder", ["export", "--registrant", DEA, "--out", str(files["a folder"]), *db],
             r"a-folder"),
        Case("export --out under a file", ["export", "--registrant", DEA, "--out", f"{a_file}/x.bundle", *db],
             r"empty/x.bundle|not a directory"),
        Case("witnesses set --witness garbage", ["witnesses", "set", "--registrant", DEA, "--witness",
                                                 "garbage http://127.0.0.1:1", "--threshold", "1", *db],
             r"verifier key"),
        Case("witnesses set --witness one word", ["witnesses", "set", "--registrant", DEA, "--witness", "garbage",
                                                  "--threshold", "1", *db], r"--witness 1"),
        Case("alerts ack unknown alert", ["alerts", "ack", "--dea", DEA, "--alert", "AL\u200b999", "--username",
                                          "avery", "--category", "other", "--explanation", "x", "--password-stdin",
                                          *db], r"password|alert|totp", stdin="wrong\n"),
        Case("alerts report --from month 13", ["alerts", "report", "--dea", DEA, "--from", "2026-13-45", "--to",
                                               "2026-12-31", "--out", str(folder / "a.pdf"), *db], r"date"),
        Case("backup --out an existing file", ["backup", "--out", a_file, *db], r"exists"),
        Case("backup --out under a file", ["backup", "--out", f"{a_file}/x", *db], r"folder|not a directory"),
    ]
    # Files into a command that reads the ledger.
    for label, path in files.items():
        cases.append(Case(f"verify-report {label}", ["verify-report", str(path), *db],
                          r"no such file|not a|pdf|report|read|empty|a-folder"))
        cases.append(Case(f"patient-key check with a key file: {label}", ["patient-key", "check", *db],
                          r"key|a-folder|no such file|directory",
                          env={"CSLEDGER_PATIENT_KEY_FILE": str(path), "CSLEDGER_PATIENT_KEY": ""}))
    # Restores into an empty database: refused, and the target stays empty.
    if backend == "sqlite":
        targets = {label: f"sqlite:///{folder / f'restore-{i}.db'}" for i, label in enumerate(files)}
    else:
        restore_url = sa.engine.make_url(url).set(database=sa.engine.make_url(url).database + "_restore")
        restore_url = restore_url.render_as_string(hide_password=False)
        targets = dict.fromkeys(files, restore_url)
    for label, path in files.items():
        cases.append(Case(f"restore --from {label}", ["restore", "--from", str(path), "--db", targets[label]],
                          r"backup|restore|pg_restore|from"))
    before = count_entries(url)
    problems = run_all(cases, folder)
    assert count_entries(url) == before, "a refused command wrote to the ledger"
    for label, target in targets.items():
        if target.startswith("sqlite"):
            file = Path(sa.engine.make_url(target).database)
            assert not file.exists() or file.stat().st_size == 0 or table_count(target) == 0, f"restore {label} wrote"
        else:
            assert table_count(target) == 0, f"restore {label} wrote into the target database"
    print(f"\n{backend}: {len(cases)} bad invocations against a ledger")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# The commands that need no ledger (bad database URLs, offline files): test_bad_input_cli_offline.py,
# a file of its own so that ``--dist loadfile`` can run it beside this one.
