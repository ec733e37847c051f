"""The wheel as a clinic installs it: built from this checkout, installed with its dependencies in
a fresh virtual environment of its own (csledger is an application whose import packages have
generic names), and run from an empty folder that is not the checkout.

Needs PyPI (or the configured index): the build runs isolated and pip installs the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"ledger", "api", "reports", "migrations", "witness"}
# Never in the wheel: the benchmark/load drivers, the tests, and the pre-reorganisation package.
NOT_PACKAGED = ("bench", "tests", "csledger")
# Left out of the copy the wheel is built from: VCS, caches, local environments, build output
# (a stale build/lib would leak into the wheel) and files the CLI writes.
TOP_LEVEL_JUNK = {".git", ".venv", ".venv-ci", "build", "dist", "out", ".hypothesis", ".pytest_cache",
                  ".ruff_cache", ".grimp_cache", ".import_linter_cache", "csledger-keys", "csledger-demo-witness"}


def run(cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode} (cwd {cwd})\n"
                    f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}")
    return proc


def _ignore(folder: str, names: list[str]) -> set[str]:
    junk = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info", ".db", ".db-wal", ".db-shm"))}
    if Path(folder) == REPO:
        junk |= TOP_LEVEL_JUNK & set(names)
    return junk


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` on a copy of this checkout's working tree.

    A copy, because setuptools writes build/ and csledger.egg-info/ into the source folder (and
    reuses a stale build/lib). Isolated, because --no-isolation fails: this environment's
    setuptools is older than pyproject's ``setuptools>=68`` (and the SPDX ``license`` string)."""
    src = tmp_path_factory.mktemp("src") / "csledger"
    shutil.copytree(REPO, src, ignore=_ignore)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)], cwd=src, timeout=900)
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(venv, environment to run it with, an empty working folder outside the checkout)."""
    venv = tmp_path_factory.mktemp("venv") / "csledger-env"
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, timeout=300)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV") and not k.startswith("CSLEDGER_")}
    env["PATH"] = str(venv / "bin") + os.pathsep + os.environ.get("PATH", "")
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run([str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel)], cwd=venv.parent, env=env, timeout=1200)
    empty = tmp_path_factory.mktemp("empty")
    assert not any(empty.iterdir()) and REPO not in empty.parents and empty not in REPO.parents
    return venv, env, empty


def test_wheel_holds_exactly_the_product_packages(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    packages = {t for t in top if f"{t}/__init__.py" in names}
    assert packages == PACKAGES, sorted(packages)
    assert top == PACKAGES, f"stray top-level entries: {sorted(top - PACKAGES)}"
    for name in NOT_PACKAGED:
        assert not [n for n in names if n.startswith(f"{name}/")], f"{name}/ is in the wheel"


@pytest.mark.parametrize("pattern", ["migrations/versions/*.py", "api/web/templates/*.html", "api/web/static/*",
                                     "ledger/domain/*.csv"])
def test_wheel_holds_the_package_data(wheel: Path, pattern: str):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"migrations/alembic.ini", "migrations/script.py.mako"} <= names
    in_checkout = {p.relative_to(REPO).as_posix() for p in REPO.glob(pattern) if p.is_file()}
    folder = pattern.rsplit("/", 1)[0] + "/"
    in_wheel = {n for n in names if n.startswith(folder) and "/" not in n[len(folder):]
                and Path(n).match(pattern)}
    assert in_checkout, f"nothing matches {pattern} in the checkout"
    assert in_wheel == in_checkout


def test_installed_commands_run_from_an_empty_folder(installed):
    venv, env, empty = installed
    bin_dir = venv / "bin"
    csledger = shutil.which("csledger", path=env["PATH"])
    witness = shutil.which("csledger-witness", path=env["PATH"])
    assert csledger and Path(csledger).parent == bin_dir, csledger
    assert witness and Path(witness).parent == bin_dir, witness

    # The packages come from the new environment, not from the checkout's editable install.
    where = run([str(bin_dir / "python"), "-c", "import api, ledger, migrations, reports, witness as w; "
                 "print('\\n'.join(m.__file__ for m in (api, ledger, migrations, reports, w)))"],
                cwd=empty, env=env, timeout=120).stdout.split()
    assert len(where) == 5 and all(Path(p).is_relative_to(venv) for p in where), where

    run([csledger, "migrate", "--db", "sqlite:///x.db"], cwd=empty, env=env, timeout=300)
    run([csledger, "demo", "--db", "sqlite:///demo.db"], cwd=empty, env=env, timeout=600)
    verified = run([csledger, "verify", "--db", "sqlite:///demo.db"], cwd=empty, env=env, timeout=300)
    assert "OK" in verified.stdout, verified.stdout
    run([witness, "--help"], cwd=empty, env=env, timeout=120)


@pytest.mark.parametrize("module", NOT_PACKAGED)
def test_bench_and_tests_are_not_importable(installed, module: str):
    venv, env, empty = installed
    proc = run([str(venv / "bin" / "python"), "-c", f"import {module}"], cwd=empty, env=env, timeout=120,
               check=False)
    assert proc.returncode != 0 and f"No module named '{module}'" in proc.stderr, proc.stderr
