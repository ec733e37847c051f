"""``csledger serve`` refuses to start with a wrong patient-data key, or with none when the
registry holds patients: names and addresses are legally required and must stay readable."""

from __future__ import annotations

import base64
import os

from ledger import services
from ledger.domain.commands import AddressInput, RegisterPatient
from ledger.storage.patient_keys import PatientKeys
from ledger.storage.store import Ledger, make_engine, migrate
from tests.cli.test_cli import run
from tests.conftest import Clinic


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_wrong_or_missing_patient_key_is_refused_at_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    lg = Ledger(make_engine(url))
    migrate(lg.engine)
    c = Clinic(lg)
    right = _key()
    services.register_patient(lg, c.nurse, RegisterPatient("Jordan Example", AddressInput("12 Elm St", "Austin", "TX", "78702")),
                              keys=PatientKeys.from_base64(right))
    lg.dispose()
    wrong = run(["serve", "--db", url, "--port", "1"], tmp_path, {"CSLEDGER_PATIENT_KEY": _key()}, check=False)
    assert wrong.returncode == 2 and "not the key this registry was written with" in wrong.stderr
    env = {k: v for k, v in os.environ.items() if k != "CSLEDGER_PATIENT_KEY"}
    os.environ.pop("CSLEDGER_PATIENT_KEY", None)
    try:
        missing = run(["serve", "--db", url, "--port", "1"], tmp_path, env, check=False)
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert missing.returncode == 2 and "cannot be read without it" in missing.stderr
    assert "Jordan" not in wrong.stderr + missing.stderr
