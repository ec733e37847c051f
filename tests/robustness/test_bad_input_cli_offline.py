"""Bad input to ``csledger`` run as a user runs it (``python -m api.cli`` in a subprocess), second
part: the commands given a database URL they cannot use, and the offline commands (bundles,
proofs, checkpoints, witness folders) given bad files and keys. The first part, the commands
against a ledger, and the rules of a clean refusal (``check``): test_bad_input_cli.py. A file
of its own so that ``--dist loadfile`` can run the two parts on two workers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.robustness.test_bad_input_cli import (
    BAD_URLS,
    DEA,
    INIT,
    Case,
    garbage_files,
    ok,
    run_all,
)

pytestmark = pytest.mark.slow


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
