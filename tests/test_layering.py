"""The layering contracts of ``[tool.importlinter]`` in pyproject.toml, checked by ``lint-imports``.

One test runs ``lint-imports`` on this checkout (every contract KEPT). The others show the
contracts bite: the product packages and pyproject.toml are copied into a temporary folder, one
wrong-way import is planted in the copy, and ``lint-imports`` run on the copy must name the
contract it breaks. Nothing here skips: without import-linter these tests fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("ledger", "api", "reports", "migrations", "witness")
CONTRACT_NAMES = [c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]

# `python -m importlinter.cli` is NOT a way to run it: that module has no `__main__` block, so it
# exits 0 without checking anything. This is what the `lint-imports` script runs, but with this
# interpreter, so it does not depend on where the console scripts were installed.
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
                "--no-logo", "--no-cache"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")

LAYERS = "Interfaces above reports above the core; migrations beside the interfaces"
CORE_LAYERS = "Inside the core: services above storage above domain above the integrity formats"
NO_WEB_IN_CORE = "The core imports neither FastAPI nor ReportLab nor Jinja2"
PURE = "The domain and the integrity formats are pure: no database, no settings"
INTEGRITY_ALONE = "The integrity formats stand alone"
WITNESS = "The witness is independent of the server: it imports only ledger.integrity"
NO_BENCH = "Nothing in the product imports the benchmark and load drivers"


def lint_imports(cwd: Path) -> tuple[int, str]:
    """Run lint-imports in ``cwd`` with only ``cwd`` on PYTHONPATH; answer (exit code, output).

    The checkout is installed editable, but that finder comes last on ``sys.meta_path``: with the
    copy on PYTHONPATH (and lint-imports putting its cwd first on ``sys.path``) grimp reads the copy.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FORCE_COLOR")}
    env.update(PYTHONPATH=str(cwd), COLUMNS="1000", NO_COLOR="1")  # wide: rich wraps long names
    proc = subprocess.run(LINT_IMPORTS, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, ANSI.sub("", proc.stdout + proc.stderr)


def statuses(output: str) -> dict[str, str]:
    """Each contract of pyproject.toml -> "KEPT" / "BROKEN" as listed in the output (absent if not)."""
    found = {}
    for name in CONTRACT_NAMES:
        m = re.search(rf"^{re.escape(name)}\s*(KEPT|BROKEN)\s*$", output, re.M)
        if m:
            found[name] = m.group(1)
    return found


def assert_all_kept(code: int, output: str) -> None:
    assert "Contracts:" in output, f"lint-imports did not check anything (is import-linter installed?):\n{output}"
    assert code == 0, f"lint-imports exited {code}:\n{output}"
    assert statuses(output) == dict.fromkeys(CONTRACT_NAMES, "KEPT"), output
    assert f"Contracts: {len(CONTRACT_NAMES)} kept, 0 broken." in output, output
    assert "BROKEN" not in output, output


@pytest.fixture
def product_copy(tmp_path: Path) -> Path:
    """The product packages and pyproject.toml (its [tool.importlinter]), copied as they are now."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for pkg in PRODUCT_PACKAGES:
        shutil.copytree(REPO / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_checkout_keeps_every_contract():
    """No break planted: lint-imports on this checkout exits 0 and lists every contract KEPT."""
    assert len(CONTRACT_NAMES) == 7, CONTRACT_NAMES
    assert_all_kept(*lint_imports(REPO))


def test_a_clean_copy_is_what_gets_analysed_and_keeps_every_contract(product_copy: Path):
    """No break planted: the copy resolves to itself (not the editable install) and passes, so a
    failure in the tests below comes from the planted import alone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(product_copy)}
    where = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u, sys; "
         f"print('\\n'.join(u.find_spec(p).origin for p in {PRODUCT_PACKAGES!r}))"],
        cwd=product_copy, env=env, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert [Path(p).parent for p in where] == [product_copy / p for p in PRODUCT_PACKAGES], where
    assert_all_kept(*lint_imports(product_copy))


class Arrow(NamedTuple):
    file: str  # where the import is planted (relative to the checkout)
    imports: str  # the module it imports
    importer: str  # the planted file's module name
    shown_as: str  # the imported module as lint-imports names it (external packages: top level)
    contract: str  # the contract that must be BROKEN


ARROWS = {
    "a-domain-imports-storage": Arrow("ledger/domain/entries.py", "ledger.storage.store",
                                      "ledger.domain.entries", "ledger.storage.store", CORE_LAYERS),
    "b-integrity-imports-domain": Arrow("ledger/integrity/merkle.py", "ledger.domain.errors",
                                        "ledger.integrity.merkle", "ledger.domain.errors", INTEGRITY_ALONE),
    "c-witness-imports-storage": Arrow("witness/server.py", "ledger.storage.log",
                                       "witness.server", "ledger.storage.log", WITNESS),
    "d-core-imports-reports": Arrow("ledger/services/audit.py", "reports.base",
                                    "ledger.services.audit", "reports.base", LAYERS),
    "e-reports-import-api": Arrow("reports/base.py", "api.http.app", "reports.base", "api.http.app", LAYERS),
    "f-core-imports-fastapi": Arrow("ledger/storage/store.py", "fastapi", "ledger.storage.store", "fastapi",
                                    NO_WEB_IN_CORE),
    "g-product-imports-bench": Arrow("api/cli/bench.py", "bench.loadtest", "api.cli.bench", "bench", NO_BENCH),
    "h-domain-imports-settings": Arrow("ledger/domain/policy.py", "ledger.settings",
                                       "ledger.domain.policy", "ledger.settings", PURE),
}


def test_every_contract_has_a_wrong_arrow_here():
    """No break planted: each contract of pyproject.toml is the target of one arrow below, so a
    new contract comes with a test that it bites (and a renamed one is noticed here)."""
    assert sorted({a.contract for a in ARROWS.values()}) == sorted(CONTRACT_NAMES)


@pytest.mark.parametrize("arrow", ARROWS.values(), ids=ARROWS.keys())
def test_a_wrong_way_import_breaks_its_contract(product_copy: Path, arrow: Arrow):
    """Plants one wrong-way import in the copy and expects lint-imports to fail naming its contract:
    (a) ledger.domain.entries -> ledger.storage.store breaks the core's layers;
    (b) ledger.integrity.merkle -> ledger.domain.errors breaks "the integrity formats stand alone";
    (c) witness.server -> ledger.storage.log breaks the witness's independence;
    (d) ledger.services.audit -> reports.base (the core importing reports) breaks the top layers;
    (e) reports.base -> api.http.app (reports importing an interface) breaks the top layers;
    (f) ledger.storage.store -> fastapi breaks "the core imports neither FastAPI ...";
    (g) api.cli.bench -> bench.loadtest breaks "nothing in the product imports the bench drivers";
    (h) ledger.domain.policy -> ledger.settings breaks the purity of the domain.
    The planted line's number must be in the report: proof that the copy is what was analysed."""
    target = product_copy / arrow.file
    assert target.is_file(), f"{arrow.file} is gone: update this arrow"
    source = target.read_text()
    assert f"import {arrow.imports}" not in source
    planted = f"import {arrow.imports}  # noqa: E402,F401  wrong-way import planted by tests/test_layering.py\n"
    text = source if source.endswith("\n") else source + "\n"
    target.write_text(text + planted)
    lineno = text.count("\n") + 1

    code, output = lint_imports(product_copy)

    assert "Contracts:" in output, f"lint-imports did not check anything (is import-linter installed?):\n{output}"
    assert code != 0, f"{arrow.importer} -> {arrow.imports} passed lint-imports:\n{output}"
    assert statuses(output).get(arrow.contract) == "BROKEN", f"{arrow.contract!r} not BROKEN:\n{output}"
    assert re.search(rf"{re.escape(arrow.importer)} -> {re.escape(arrow.shown_as)} \([^)]*\bl\.{lineno}\b", output), \
        f"the planted import (line {lineno}) is not in the report:\n{output}"
