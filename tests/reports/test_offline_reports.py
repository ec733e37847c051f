"""``verify-report FILE.pdf --bundle BUNDLE``: a report checked with no database (issue 18).

An inspector handed a report and the registrant's exported bundle checks both on their own
machine: the bundle must verify whole (under the log key they obtained out of band), the report's
entries are the bundle's first ``tree_size`` entries, its checkpoint verifies under the same
keys, its signer is a report key those entries certify, and the PDF is rebuilt from them byte for
byte. Each attack on the report itself is in ``test_rebuild.py`` and ``test_signed_reports.py``,
where every check runs online and offline alike; here: what only the offline path has (which
bundle, which keys, no database at all), through the command line as an inspector runs it.
"""

from __future__ import annotations

import pytest

from ledger import services
from ledger.domain.commands import TakeInventory
from ledger.integrity.keys import Signer
from ledger.storage.log import log_keys
from ledger.storage.store import utcnow
from reports.base import build_report
from reports.verify import verify_report_offline
from tests.cli.test_cli import run
from tests.conftest import BACKENDS, DEA
from tests.reports.report_keys import bundle_of
from tests.reports.test_report_access_log import floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def other_log_key(api) -> str:
    """A verifier key with the log's own name that never signed a checkpoint of it."""
    with api.ledger.reading() as conn:
        origin = log_keys(conn, DEA)[0].origin
    return Signer.generate(origin).verifier().to_string()


def report_file(api, tmp_path, kind: str = "receiving"):
    pdf, _ = build_report(api.ledger, kind, DEA, *api.period)
    path = tmp_path / f"{kind}.pdf"
    path.write_bytes(pdf)
    return path


def the_log_key(api) -> str:
    with api.ledger.reading() as conn:
        return log_keys(conn, DEA)[0].verifier_key


def offline(tmp_path, pdf, bundle, *extra: str, check: bool = True):
    """``csledger verify-report --bundle`` run where no database exists: a database URL naming a
    folder that does not exist, so any attempt to open one fails loudly."""
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/no-such-folder/none.db"}
    return run(["verify-report", str(pdf), "--bundle", str(bundle), *extra], tmp_path, env, check=check)


def test_report_verifies_offline_with_the_pinned_log_key(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = report_file(api, tmp_path)
    bundle = bundle_of(api.ledger, DEA)
    p = offline(tmp_path, pdf, bundle, "--log-key", the_log_key(api))
    assert p.stdout.startswith("OK Receiving log of AB1234563"), p.stdout
    assert f"rebuilt from the bundle {bundle.name} byte for byte" in p.stdout
    assert "log key pinned" in p.stdout and "signed by the report key certified in entry" in p.stdout
    assert "keys taken from the bundle itself" not in p.stderr
    assert not (tmp_path / "no-such-folder").exists()
    # Without the pinned key it still passes, and says what that proves.
    p = offline(tmp_path, pdf, bundle)
    assert p.stdout.startswith("OK ") and "keys taken from the bundle itself" in p.stderr


def test_a_log_key_that_did_not_sign_fails(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = report_file(api, tmp_path)
    p = offline(tmp_path, pdf, bundle_of(api.ledger, DEA), "--log-key", other_log_key(api), check=False)
    assert p.returncode == 1 and "FAIL the bundle ledger.bundle does not verify" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_bundle_older_than_the_report_is_named(floor, tmp_path):  # noqa: F811
    api = floor
    bundle = bundle_of(api.ledger, DEA)
    services.take_inventory(api.ledger, api.clinic.nurse, TakeInventory("biennial", "opening_of_business", utcnow()), witness=api.clinic.pharmacist)
    pdf = report_file(api, tmp_path)
    p = offline(tmp_path, pdf, bundle, check=False)
    assert p.returncode == 1 and "FAIL the bundle ends at tree size" in p.stderr, p.stderr
    assert "export a newer bundle" in p.stderr


def test_an_edited_bundle_fails(floor, tmp_path):  # noqa: F811
    """A bundle whose entries were edited (one byte of a quantity) cannot vouch for a report."""
    api = floor
    pdf = report_file(api, tmp_path)
    bundle = bundle_of(api.ledger, DEA)
    lines = bundle.read_bytes().split(b"\n")
    at = next(i for i, line in enumerate(lines) if b'"containers":2' in line)
    lines[at] = lines[at].replace(b'"containers":2', b'"containers":3', 1)
    bundle.write_bytes(b"\n".join(lines))
    result = verify_report_offline(pdf.read_bytes(), bundle)
    assert not result.ok and result.problems[0].startswith("the bundle ledger.bundle does not verify: line "), \
        result.problems


def test_options_of_the_offline_check_need_a_bundle(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = report_file(api, tmp_path)
    p = run(["verify-report", str(pdf), "--log-key", the_log_key(api), "--db", api.db], tmp_path, check=False)
    assert p.returncode == 2 and "go with --bundle" in p.stderr, p.stderr  # refused as a usage error
    p = offline(tmp_path, pdf, tmp_path / "missing.bundle", check=False)
    assert p.returncode == 2 and "no such bundle" in p.stderr, p.stderr
