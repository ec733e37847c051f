"""Fixtures for the verifiable ledger: a ledger that signs checkpoints, with a temp key folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger.storage.log import TransparencyLog, attach
from tests.conftest import BACKENDS, Clinic, fresh_database_url  # noqa: F401 - re-exported for tests


@pytest.fixture(params=BACKENDS)
def backend_url(request, tmp_path):
    """A fresh migrated-later database URL on each backend (PostgreSQL skips when unset)."""
    yield from fresh_database_url(request.param, tmp_path)


def settings_for(tmp_path: Path, prefix: str = "clinic.test") -> SimpleNamespace:
    return SimpleNamespace(key_dir=tmp_path / "keys", origin_prefix=prefix, log_keys="")


@pytest.fixture
def tlog(ledger, tmp_path) -> TransparencyLog:
    """The ``ledger`` fixture with checkpoint signing attached (keys in a temp folder)."""
    return attach(ledger, settings_for(tmp_path))


@pytest.fixture
def signed_clinic(tlog) -> Clinic:
    return Clinic(tlog.ledger)
