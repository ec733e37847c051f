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
"""

from __future__ import annotations

import json
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


def test_bad_database_urls(tmp_path):
    """Every command that opens a database, given a URL it cannot use."""
    cases = []
    commands = {
        "migrate": ["migrate"], "init": INIT, "verify": ["verify"], "stock": ["stock", "--registrant", DEA],
        "audit": ["audit", "--registrant", DEA, "--from", "2026-01-01", "--to", "2026-01-02"],
        "keys show": ["keys", "show", "--registrant", DEA], "export": ["export", "--registrant", DEA, "--out", "x"],
        "backup": ["backup", "--out", str(tmp_path / "b")], "restore": ["restore", "--from", str(tmp_path)],
        "alerts list": ["alerts", "list", "--dea", DEA], "patient-key check": ["patient-key", "check"],
        "report": ["report", "receiving", "--registrant", DEA, "--from", "2026-01-01", "--to", "2026-01-02", "--out",
                   str(tmp_path / "r.pdf")],
        "staff set-password": ["staff", "set-password", "--dea", DEA, "--username", "avery", "--password-stdin"],
    }
    urls = list(BAD_URLS.items())
    for i, (cmd, args) in enumerate(commands.items()):  # each command gets two of the bad URLs, in turn
        for label, (url, expect) in (urls[i % len(urls)], urls[(i + 1) % len(urls)]):
            if cmd == "restore":
                expect = r"backup|" + expect  # the backup file may be checked first
            cases.append(Case(f"{cmd} --db {label}", [*args, "--db", url], expect, stdin="x\n"))
    problems = run_all(cases, tmp_path)
    assert not Path("/nonexistent-csledger").exists()
    print(f"\n{len(cases)} bad database URLs")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# --- offline files: bundles, proofs, checkpoints, witness folders --------------------------------


def _canonical(obj: dict) -> bytes:
    from ledger.integrity import canonical

    return canonical.canonical_bytes(obj)


def _bundle_with_header(bundle: bytes, **changes) -> bytes:
    lines = bundle.split(b"\n")
    header = json.loads(lines[0])
    header.update(changes)
    return b"\n".join([_canonical(header), *lines[1:]])


def test_bad_files_to_offline_commands(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ok([*INIT, "--db", url], tmp_path)
    ok(["export", "--registrant", DEA, "--out", "ledger.bundle", "--db", url], tmp_path)
    ok(["export", "--registrant", DEA, "--seq", "1", "--out", "entry.tlog-proof", "--db", url], tmp_path)
    bundle = (tmp_path / "ledger.bundle").read_bytes()
    proof = (tmp_path / "entry.tlog-proof").read_bytes()
    log_key = json.loads(bundle.split(b"\n")[0])["log_keys"][0]
    files = garbage_files(tmp_path, {"bundle": tmp_path / "ledger.bundle", "proof": tmp_path / "entry.tlog-proof"})
    header = json.loads(bundle.split(b"\n")[0])
    note = header["checkpoint"]
    crafted = {
        "checkpoint note without its signature": _bundle_with_header(bundle, checkpoint=note.split("\n\n")[0] + "\n"),
        "checkpoint note with a bad size": _bundle_with_header(bundle, checkpoint=note.replace("\n3\n", "\n3x\n", 1)),
        "checkpoint note with a NUL": _bundle_with_header(bundle, checkpoint=note.replace("\n", "\x00\n", 1)),
        "checkpoint note garbage": _bundle_with_header(bundle, checkpoint="garbage"),
        "tree_size as text": _bundle_with_header(bundle, tree_size="3"),
        "tree_size 10^30": _bundle_with_header(bundle, tree_size=10**30),
        "log_keys null": _bundle_with_header(bundle, log_keys=None),
        "header nested 10,000 deep": b"[" * 10_000 + b"]" * 10_000 + b"\n" + bundle.split(b"\n", 1)[1],
        "entry nested 10,000 deep": b"\n".join([bundle.split(b"\n")[0], b"[" * 10_000 + b"]" * 10_000,
                                                *bundle.split(b"\n")[2:]]),
        "top-level array": b"[1, 2]\n",
        "entry with a lone surrogate": bundle.replace(b"Avery", b"\\ud800very", 1),
        "proof with bad base64": proof.replace(b"extra ", b"extra !!", 1),
        "proof with index huge": re.sub(rb"index \d+", b"index " + b"9" * 40, proof),
    }
    for label, data in crafted.items():
        path = tmp_path / f"crafted-{len(files)}"
        path.write_bytes(data)
        files[label] = path
    cases = []
    for label, path in files.items():
        cases.append(Case(f"verify-bundle {label}", ["verify-bundle", str(path), "--log-key", log_key],
                          r"FAIL|cannot read|error"))
    for label in ("empty", "random bytes", "a folder", "no such file", "bundle cut in half",
                  "checkpoint note without its signature"):
        cases.append(Case(f"verify-bundle --checkpoint {label}",
                          ["verify-bundle", str(tmp_path / "ledger.bundle"), "--checkpoint", str(files[label])],
                          r"checkpoint|cannot read"))
        cases.append(Case(f"verify --checkpoint {label}", ["verify", "--checkpoint", str(files[label]), "--db", url],
                          r"--checkpoint .*(not a signed checkpoint note|cannot read)"))
    keys = {"garbage": "garbage", "truncated": log_key[:-6], "Cyrillic": log_key.replace("c", "\u0441", 1),
            "zero-width": log_key + "\u200b"}
    for label, key in keys.items():
        cases.append(Case(f"verify-bundle --log-key {label}", ["verify-bundle", str(tmp_path / "ledger.bundle"),
                                                              "--log-key", key], r"--log-key|log key"))
    for label in ("garbage", "Cyrillic"):
        cases.append(Case(f"verify-bundle --witness-key {label}", ["verify-bundle", str(tmp_path / "ledger.bundle"),
                                                                  "--witness-key", keys[label], "--threshold", "1"],
                          r"--witness-key|witness"))
    for label in ("truncated", "zero-width"):
        cases.append(Case(f"witness add-log --vkey {label}", ["witness", "add-log", "--dir", str(tmp_path / "w"),
                                                              "--vkey", keys[label]], r"verifier key|key"))
    for label, when in {"month 13": "2026-13-45T00:00:00Z", "no zone": "2026-11-01T10:00:00", "words": "yesterday"}.items():
        cases.append(Case(f"verify-bundle --audit-from {label}", ["verify-bundle", str(tmp_path / "ledger.bundle"),
                                                                 "--audit-from", when], r"--audit-from"))
    cases += [
        Case("verify-bundle --threshold 99", ["verify-bundle", str(tmp_path / "ledger.bundle"), "--threshold", "99"],
             r"witnessed by 0 of the 99|cosignatures"),
        Case("witness show: no such folder", ["witness", "show", "--dir", str(files["no such file"])],
             r"no-such-file|witness"),
        Case("witness show: a file", ["witness", "show", "--dir", str(files["random bytes"])], r"random.bin|witness"),
        Case("witness show: an empty folder", ["witness", "show", "--dir", str(files["a folder"])],
             r"a-folder|witness"),
        Case("witness init: under a file", ["witness", "init", "--dir", f"{files['empty']}/w", "--name", "w.example"],
             r"empty/w|not a directory|witness"),
        Case("witness init: bad name", ["witness", "init", "--dir", str(tmp_path / "w2"), "--name", "bad name\x01"],
             r"name"),
        Case("patient-key generate: a folder", ["patient-key", "generate", "--out", str(files["a folder"])],
             r"exists"),
        Case("patient-key generate: under a file", ["patient-key", "generate", "--out", f"{files['empty']}/k"],
             r"empty/k|not a directory"),
    ]
    ok(["witness", "init", "--dir", str(tmp_path / "w"), "--name", "witness.example"], tmp_path)
    (tmp_path / "w-bad").mkdir()
    for f in (tmp_path / "w").iterdir():
        (tmp_path / "w-bad" / f.name).write_bytes(b"{not json" if f.suffix == ".json" else f.read_bytes())
    cases.append(Case("witness show: a damaged state file", ["witness", "show", "--dir", str(tmp_path / "w-bad")],
                      r"state|json|witness"))
    cases.append(Case("witness latest: unknown origin", ["witness", "latest", "--dir", str(tmp_path / "w"),
                                                         "--origin", "nobody\u200b"], r"cosigned nothing"))
    problems = run_all(cases, tmp_path)
    print(f"\n{len(cases)} bad offline invocations")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
