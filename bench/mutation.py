"""Mutation testing of the core's arithmetic and checks (issue 14), with mutmut.

    python bench/mutation.py                      # every module below
    python bench/mutation.py --module audit --module verify
    python bench/mutation.py --report             # print the last results again, run nothing
    python bench/mutation.py --baseline --sample 150 --work mutants/baseline   # before the new tests

For each module it makes a private copy of the project in ``mutants/<module>/`` (never mutating
the work tree, where others run their tests), writes that copy's ``[tool.mutmut]`` from the one in
``pyproject.toml`` plus the module's files and test selection (``MODULES`` below), and runs
``mutmut run`` there on the module's functions. mutmut records which selected tests call each
mutated function and runs only those against its mutants, in forked workers (``--max-children``).
``PYTHONPATH`` points at the mutated copy, so the tests' ``python -m api.cli`` subprocesses run the
mutant too. Then it prints, per module: mutants, killed, survived, timed out, no tests, the score
(killed + timed out over mutants) and the score without the mutants listed in ``EQUIVALENT``, and
every surviving mutant with its file:line and change.

SQLite only, no slow tests: the figures are in docs/reliability.md ("Mutation testing"). Run it
under ``nice``; it is not part of CI. Needs mutmut (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants"
#: What a module's private copy holds: the packages, the tests, the benchmark drivers.
COPIED = ("ledger", "api", "reports", "migrations", "witness", "tests", "bench")


@dataclass(frozen=True)
class Module:
    files: tuple[str, ...]
    #: mutmut mutant names (fnmatch patterns): the functions whose mutants are run and counted
    functions: tuple[str, ...]
    #: pytest paths (a missing one is left out, so a file renamed elsewhere does not stop the run)
    tests: tuple[str, ...]
    #: the score the issue asks for, if any (percent, equivalent mutants left out)
    target: float | None = None
    #: function pattern -> regular expression: of that function's mutants, only those whose changed
    #: source line matches it
    lines: dict[str, str] = field(default_factory=dict)


MODULES: dict[str, Module] = {
    "audit": Module(
        ("ledger/services/audit.py",), ("ledger.services.audit.*",),
        ("tests/clinical", "tests/reports/test_audit_core.py"),  # the audit tests, and the scenarios that call it
        target=90.0),
    "verify": Module(
        ("ledger/services/verify.py",), ("ledger.services.verify.*",),
        # Not tests/robustness/test_tampering.py: it runs the same checks through `python -m api.cli`
        # subprocesses (~4 s a test, ~100 s in all), which every surviving mutant would pay again;
        # test_mutants_verify asserts the same findings in-process.
        ("tests/integrity/test_mutants_verify.py", "tests/contract/test_ledger_contract.py",
         "tests/integrity/test_log_keys_and_checkpoints.py"),
        target=90.0),
    "stock": Module(
        ("ledger/services/stock.py",), ("ledger.services.stock.*",),
        ("tests/clinical",)),
    "quantities": Module(
        ("ledger/domain/quantities.py",), ("ledger.domain.quantities.*",),
        ("tests/unit/test_mutants_quantities.py", "tests/robustness/test_bad_input.py", "tests/api/test_commands.py")),
    # The two-person rules: the witness is someone else, enrolled, in a witnessing role
    # (common.sign_witness); a waste needs a witness (administer_dose, record_waste); a count needs two
    # different counters (submit_count) and a manager who did not count (resolve_discrepancy); a
    # destruction needs two different witnesses (destroy_stock).
    "two_person": Module(
        ("ledger/services/common.py", "ledger/services/administration.py", "ledger/services/counts.py",
         "ledger/services/discrepancies.py", "ledger/services/disposal.py"),
        ("ledger.services.common.x_sign_witness__mutmut_*",
         "ledger.services.administration.x_administer_dose__mutmut_*",
         "ledger.services.administration.x_record_waste__mutmut_*",
         "ledger.services.counts.x_submit_count__mutmut_*",
         "ledger.services.discrepancies.x_resolve_discrepancy__mutmut_*",
         "ledger.services.disposal.x_destroy_stock__mutmut_*"),
        ("tests/clinical/test_mutants_two_person.py", "tests/clinical/test_clinical_contract.py",
         "tests/api/test_witness.py"),
        # sign_witness whole; in the others, the lines of the second person's checks and signature
        lines=dict.fromkeys(
            ("ledger.services.administration.x_administer_dose__mutmut_*",
             "ledger.services.administration.x_record_waste__mutmut_*",
             "ledger.services.counts.x_submit_count__mutmut_*",
             "ledger.services.discrepancies.x_resolve_discrepancy__mutmut_*",
             "ledger.services.disposal.x_destroy_stock__mutmut_*"),
            r"witness|wsig|second_counter|\bsig[12]\b|counters|COUNTERS")),
}

_HALF_EVEN = "Decimal's default context rounds half-even too: the same figures"
_LAST = ("start_key and end_key end in the seq _LAST (1 << 62), which no entry has, so no key equals them: "
         "< and <= agree")
_COUNT = ("the key equal to end_of(k) is the ending count's own, and a count moves no stock and is no dose: "
          "< and <= agree")
_REQUEST_KEY = ("the name the second person's id has in the idempotency request: under any name not among the "
                "command's fields it is still hashed, so a retry with another person is still refused")
_SQL = "SQL keywords are case-insensitive, and unquoted names too (SQLite keeps the declared column name)"
_PAGE = "no LIMIT reads the same rows in one page instead of several: memory, not the verdict"
_LEVEL = ("the accumulator's levels are only compared with each other: any one-to-one relabelling merges the same "
          "subtrees")
_FRONTIER = "the pop only frees nodes no later append reads: memory, not the verdict"
_HELD_NONE = "_verify_registrant treats None like {} (`if held and ...`, `(held or {})`)"
_UNUSED = "the fast pass never reads moves or levels: an object made and left unused"

#: Mutants that cannot change behaviour: (mutant name pattern, text its change must contain, why).
#: Keyed by function and change, not by mutmut's number (which shifts when the function is edited);
#: a mutant matching none is counted as any other. Shown, and left out of the second score.
EQUIVALENT: list[tuple[str, str, str]] = [
    ("ledger.services.audit.x__pct__*", "quantize(CENT, None)", _HALF_EVEN),
    ("ledger.services.audit.x__pct__*", "quantize(CENT, )", _HALF_EVEN),
    ("ledger.services.audit.x_accountability__*", "quantize(CENT, None)", _HALF_EVEN),
    ("ledger.services.audit.x_accountability__*", "quantize(CENT, )", _HALF_EVEN),
    ("ledger.services.audit.x_accountability__*", "+if start_key <= c.key <= end_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if start_key < c.key < end_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+elif c.key < start_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if key < start_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if start_key <= key <= end_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if start_key < key < end_key:", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if not (start_key <= key <= end_of(k)):", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if k in products and start_key <= key <= end_of(k):", _LAST),
    ("ledger.services.audit.x_accountability__*", "+if key < end_of(k):", _COUNT),
    ("ledger.services.audit.x_accountability__*", "+if not (start_key < key < end_of(k)):", _COUNT),
    ("ledger.services.audit.x_accountability__*", "+if k in products and start_key < key < end_of(k):", _COUNT),
    ("ledger.services.audit.x_accountability__*", "+break  # it begins the records",
     "the period test does not depend on the product: every product of an initial inventory takes this branch, so "
     "leaving the loop skips only what would be skipped"),
    ("ledger.services.audit.x_accountability__*", "sum((p.ml[x] for x in OUT_LINES), )",
     "0 + Decimal('x.xx') keeps the Decimal's two places: the same sum"),
    ("ledger.services.audit.x_accountability__*", '+last = ""',
     'last only marks a key already seen; a key is a tuple, never equal to None or ""'),
    ("ledger.services.audit.x_accountability__*", '(kind == "loss_adjusted") or True',
     "of the kinds with an audit line only loss_adjusted carries a discrepancy_id: for the others the lookup is None"),
    ("ledger.services.audit.x_audit__*", "select canonical from entries", _SQL),
    # quantities
    ("ledger.domain.quantities.x_parse_amount__*", "+if d.as_tuple().exponent <= -SCALE",
     "at exponent -2 the value equals its quantization: the test after `and` is false"),
    ("ledger.domain.quantities.x_parse_amount__*", "+if d.as_tuple().exponent < +SCALE",
     "at exponent -2 or above the value equals its quantization: the test after `and` is false"),
    ("ledger.domain.quantities.x_fmt__*", "+return format(q2(d), )",
     "at scale 2 str() of a Decimal is already fixed-point (no exponent): the same text"),
    ("ledger.domain.quantities.x_fmt__*", '+return format(q2(d), "F")',
     '"F" differs from "f" only for NaN and infinities, which never reach it'),
    # two-person rules
    ("ledger.services.administration.x_*", '+{**request_fields(cmd), "XXwitnessXX"', _REQUEST_KEY),
    ("ledger.services.administration.x_*", '+{**request_fields(cmd), "WITNESS"', _REQUEST_KEY),
    ("ledger.services.counts.x_submit_count__*", '+{**request_fields(cmd), "XXsecond_counterXX"', _REQUEST_KEY),
    ("ledger.services.counts.x_submit_count__*", '+{**request_fields(cmd), "SECOND_COUNTER"', _REQUEST_KEY),
    ("ledger.services.disposal.x_destroy_stock__*", '+{**request_fields(cmd), "XXwitnessesXX"', _REQUEST_KEY),
    ("ledger.services.disposal.x_destroy_stock__*", '+{**request_fields(cmd), "WITNESSES"', _REQUEST_KEY),
    # verify
    ("ledger.services.verify.x__verify_registrant__*", '+cols = "SEQ, PREV_HASH, LEAF_HASH, CANONICAL"', _SQL),
    ("ledger.services.verify.x__verify_registrant__*", '+cols += ", KIND, SCHEMA_VERSION', _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", '+where = " and registrant = :r"', _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", "+for row in r.rows(conn, \"select registrant, seq", _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", "+for row in r.rows(conn, \"SELECT REGISTRANT, SEQ", _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", '+kc = r.one(conn, "select check_value', _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", '+rows = r.rows(conn, "select registrant, patient_id', _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", '+rows = r.rows(conn, "SELECT REGISTRANT, PATIENT_ID', _SQL),
    ("ledger.services.verify.x__verify_patient_registry__*", '+"(registrant > :lr or (registrant = :lr and', _SQL),
    ("ledger.services.verify.x\u01c1_LevelStreams\u01c1_iter__*", "+return query.order_by(nodes_t.c.idx).limit(None)", _PAGE),
    ("ledger.services.verify.x__verify_registrant__*",
     "+return query.order_by(movements_t.c.seq, movements_t.c.line).limit(None)", _PAGE),
    ("ledger.services.verify.x__verify_registrant__*", "+level = 1", _LEVEL),
    ("ledger.services.verify.x__verify_registrant__*", "+level -= 1", _LEVEL),
    ("ledger.services.verify.x__verify_registrant__*", "+level += 2", _LEVEL),
    ("ledger.services.verify.x__deep_nodes__*", "+frontier.pop(None, None)", _FRONTIER),
    ("ledger.services.verify.x__deep_nodes__*", "+frontier.pop((level, index + 2), None)", _FRONTIER),
    ("ledger.services.verify.x__deep_nodes__*", "+frontier.pop((level, index - 3), None)", _FRONTIER),
    ("ledger.services.verify.x_verify__*", "held.get(reg, None))", _HELD_NONE),
    ("ledger.services.verify.x_verify__*", "held.get(reg, ))", _HELD_NONE),
    ("ledger.services.verify.x__verify_registrant__*", "+levels = _LevelStreams(conn, reg) if (deep) or True", _UNUSED),
    ("ledger.services.verify.x__verify_registrant__*", "-return 0 / +return 1",
     "unreachable: every registrant listed has an entry, and a log without seq 0 fails before"),
    ("ledger.services.verify.x__held_targets__*", "require_known=True)", "require_known=True is open_checkpoint's default"),
]


def _equivalent(name: str, change: str) -> str | None:
    for pattern, text, why in EQUIVALENT:
        if fnmatch.fnmatchcase(name, pattern) and text in change:
            return why
    return None


STATUS = {  # mutmut's exit codes (mutmut/stats.py)
    0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
    -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "type check", None: "not checked",
}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string for the plain paths and options used here


def _pyproject_for(module: Module, work: Path) -> str:
    """The repository's pyproject.toml with its [tool.mutmut] narrowed to one module."""
    text = (ROOT / "pyproject.toml").read_text()
    base = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    # drop the [tool.mutmut] table (up to the next table header)
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    cfg = dict(base)
    cfg["only_mutate"] = list(module.files)
    cfg["pytest_add_cli_args_test_selection"] = [t for t in module.tests if (work / t).exists()]
    cfg.setdefault("use_git_change_detection", False)
    return text.rstrip() + "\n\n[tool.mutmut]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.items())


def _copy_project(dest: Path, *, baseline: bool = False) -> None:
    skip = ["__pycache__", "*.pyc", "*.db", "*.db-wal", "*.db-shm", ".hypothesis"]
    if baseline:
        skip.append("test_mutants_*.py")
    ignore = shutil.ignore_patterns(*skip)
    for name in COPIED:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)


def _mutmut() -> str:
    exe = Path(sys.executable).parent / "mutmut"
    found = str(exe) if exe.exists() else shutil.which("mutmut")
    if not found:
        sys.exit("mutmut is not installed: pip install -e '.[test]' (or mutmut==3.8.1)")
    return found


def _mutants(base: Path, file: str) -> dict[str, tuple[int, str]]:
    """Every mutant mutmut makes of one file (the same generator ``mutmut run`` uses): its name ->
    (line in the source file, the change as '-old / +new')."""
    import difflib

    from mutmut.mutation.file_mutation import mutate_file_contents

    source = (base / file).read_text()
    mutated = mutate_file_contents(file, source)
    code = mutated.code.split("\n")
    spans = mutated.line_span_by_function_name
    def_lines: dict[str, int] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            def_lines[f"x_{node.name}"] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef):
                    def_lines[f"x\u01c1{node.name}\u01c1{m.name}"] = m.lineno

    def body(name: str) -> list[str]:
        span = spans[name]
        lines = code[span.start - 1:span.end]
        while lines and not lines[0].lstrip().startswith(("def ", "async def ")):
            lines = lines[1:]
        return [lines[0].replace(name.rpartition("\u01c1")[2], "_"), *lines[1:]] if lines else lines

    prefix = file.removesuffix(".py").replace("/", ".") + "."
    out = {}
    for name in mutated.mutant_names:
        mangled = name.split("__mutmut_")[0]
        orig, mut = body(mangled + "__mutmut_orig"), body(name)
        removed, added, first = [], [], None
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=orig, b=mut, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            first = i1 if first is None else first
            removed += [ln.strip() for ln in orig[i1:i2]]
            added += [ln.strip() for ln in mut[j1:j2]]
        line = def_lines.get(mangled, 0) + (first or 0)
        out[prefix + name] = (line, " / ".join([f"-{r}" for r in removed] + [f"+{a}" for a in added]))
    return out


def _selected(module: Module, base: Path, sample: int | None = None) -> dict[str, tuple[str, int, str]]:
    """The module's mutants: name -> (file, line, change), narrowed by ``lines`` and ``--sample``."""
    out = {}
    for file in module.files:
        source_lines = (base / file).read_text().split("\n")
        for name, (line, change) in _mutants(base, file).items():
            pats = [p for p in module.functions if fnmatch.fnmatch(name, p)]
            if not pats:
                continue
            regex = module.lines.get(pats[0])
            if regex and not re.search(regex, source_lines[line - 1]):
                continue
            out[name] = (file, line, change)
    if sample is not None and sample < len(out):
        import random

        keep = set(random.Random(14).sample(sorted(out), sample))
        out = {k: v for k, v in out.items() if k in keep}
    return out


def run_module(name: str, module: Module, *, max_children: int, keep: bool, sample: int | None,
               baseline: bool = False) -> float:
    work = WORK / name
    if work.exists() and not keep:
        shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        _copy_project(work, baseline=baseline)
    (work / "pyproject.toml").write_text(_pyproject_for(module, work))
    # Made before mutmut starts: an entry of PYTHONPATH that does not exist yet is remembered by the
    # import system as "nothing there", and the tests would then import the unmutated package.
    (work / "mutants").mkdir(exist_ok=True)
    names = sorted(_selected(module, work, sample))
    (work / "selected.txt").write_text("".join(n + "\n" for n in names))
    # Subprocesses the tests start (``python -m api.cli ...``) inherit mutmut's MUTANT_UNDER_TEST. In
    # its "stats" pass a trampoline hit would look for mutmut's config from the subprocess's folder
    # and fail; a subprocess's hits cannot be recorded anyway, so there it runs the original code.
    site = work / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os\n\nif os.environ.get('MUTANT_UNDER_TEST') == 'stats':\n    os.environ['MUTANT_UNDER_TEST'] = ''\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(work / "mutants")]), "HYPOTHESIS_PROFILE": "ci"}
    for var in ("CSLEDGER_TEST_POSTGRES_URL", "CSLEDGER_REQUIRE_POSTGRES", "CSLEDGER_FAIL_ON_SKIP"):
        env.pop(var, None)
    log = WORK / f"{name}.log"
    print(f"== {name}: {len(names)} mutants of {', '.join(module.files)} (log: {os.path.relpath(log, ROOT)})", flush=True)
    t0 = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.run([_mutmut(), "run", "--max-children", str(max_children), *names],
                           cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    took = time.monotonic() - t0
    if p.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"mutmut failed for {name} (exit {p.returncode}) after {took:.0f} s; end of {log}:\n{tail}")
    (WORK / f"{name}.seconds").write_text(f"{took:.0f}\n")
    return took


def report(names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        module = MODULES[name]
        work = WORK / name
        if not (work / "selected.txt").exists():
            print(f"== {name}: no results (run it first)")
            continue
        chosen = set((work / "selected.txt").read_text().split())
        codes: dict[str, int | None] = {}
        for file in module.files:
            meta = work / "mutants" / (file + ".meta")
            if meta.exists():
                codes.update(json.loads(meta.read_text())["exit_code_by_key"])
        described: dict[str, tuple[str, int, str]] = {}
        for file in module.files:
            for key, (line, change) in _mutants(work, file).items():
                described[key] = (file, line, change)
        counts: dict[str, int] = {}
        survivors = []
        for key in sorted(chosen, key=lambda k: (described[k][0], described[k][1], k)):
            status = STATUS.get(codes.get(key), "suspicious")
            counts[status] = counts.get(status, 0) + 1
            if status in ("killed", "timeout"):
                continue
            file, line, change = described[key]
            reason = _equivalent(key, change)
            survivors.append({"mutant": key, "status": status, "file": file, "line": line, "change": change,
                              "equivalent": reason})
        total = len(chosen)
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        equivalent = sum(1 for s in survivors if s["equivalent"])
        secs = WORK / f"{name}.seconds"
        out[name] = {"mutants": total, "killed": counts.get("killed", 0), "survived": counts.get("survived", 0),
                     "timeout": counts.get("timeout", 0), "no_tests": counts.get("no tests", 0),
                     "other": total - sum(counts.get(s, 0) for s in ("killed", "survived", "timeout", "no tests")),
                     "equivalent": equivalent, "score": round(100.0 * killed / total, 1),
                     "score_without_equivalent": round(100.0 * killed / (total - equivalent), 1) if total > equivalent
                     else 100.0,
                     "seconds": int(secs.read_text()) if secs.exists() else None, "survivors": survivors}
    return out


def print_report(results: dict[str, dict]) -> None:
    print()
    print(f"{'module':<12} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7} {'no tests':>8} "
          f"{'other':>5} {'equiv.':>6} {'score':>6} {'w/o eq.':>7} {'target':>6} {'wall s':>6}")
    for name, r in results.items():
        target = MODULES[name].target
        print(f"{name:<12} {r['mutants']:>7} {r['killed']:>6} {r['survived']:>8} {r['timeout']:>7} {r['no_tests']:>8} "
              f"{r['other']:>5} {r['equivalent']:>6} {r['score']:>5.1f}% {r['score_without_equivalent']:>6.1f}% "
              f"{(f'{target:.0f}%' if target else '-'):>6} {r['seconds'] if r['seconds'] is not None else '-':>6}")
    for name, r in results.items():
        if not r["survivors"]:
            continue
        print(f"\n-- {name}: {len(r['survivors'])} not killed")
        for s in r["survivors"]:
            tag = f"  [equivalent: {s['equivalent']}]" if s["equivalent"] else ""
            print(f"{s['file']}:{s['line']}  {s['status']}  {s['mutant'].rpartition('.')[2]}  {s['change']}{tag}")


def main(argv: list[str] | None = None) -> int:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES), help="one module (repeatable); default all")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--keep", action="store_true",
                    help="reuse mutants/<module>/ (its copy of the project is not refreshed) and mutmut's cached results")
    ap.add_argument("--report", action="store_true", help="print the last results, run nothing")
    ap.add_argument("--baseline", action="store_true",
                    help="without the tests written to kill mutants (tests/**/test_mutants_*.py): the score before them")
    ap.add_argument("--sample", type=int, help="test a fixed random sample of this many mutants per module")
    ap.add_argument("--work", type=Path, default=WORK, help="where the copies and results go (default mutants/)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    names = args.module or list(MODULES)
    WORK = args.work.resolve()
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))  # the machine is shared: mutation runs are background work
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if not args.report:
        for name in names:
            took = run_module(name, MODULES[name], max_children=args.max_children, keep=args.keep,
                              sample=args.sample, baseline=args.baseline)
            print(f"   {name}: {took:.0f} s", flush=True)
    results = report(names)
    print_report(results)
    if not args.report:
        print(f"\nwall time {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
