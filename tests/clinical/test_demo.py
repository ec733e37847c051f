"""``csledger demo``: the clinic-operations data set, built through the services, verifies deeply."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from rich.console import Console

from api.cli.demo import run_demo
from ledger import services
from ledger.services import stock
from ledger.settings import Settings
from ledger.storage.patient_keys import PatientKeys
from ledger.storage.store import Ledger, entries_t


def test_demo_builds_the_clinic_data_set(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}", key_dir=tmp_path / "keys",
                        patient_key_file=tmp_path / "keys" / "patient.key")
    console = Console(record=True, width=200)
    summary = run_demo(settings, seed=11, console=console)
    assert set(summary) == {"AB1234563", "FB7654329"}
    assert "verify --deep: OK" in console.export_text()
    lg = Ledger.open(settings.database_url)
    try:
        with lg.reading() as c:
            kinds = Counter(c.execute(sa.select(entries_t.c.kind)).scalars())
            patients = c.execute(sa.text("SELECT count(*) FROM patients")).scalar()
        assert patients == 40
        for kind in ("dose_administered", "dose_wasted", "count_started", "stock_counted", "discrepancy_resolved",
                     "loss_adjusted", "stock_destroyed", "theft_or_loss_reported", "policy_set", "stock_received"):
            assert kinds[kind] > 0, kind
        assert kinds["dose_administered"] > 200 and kinds["stock_counted"] > 70
        for dea in summary:
            assert stock.unreconciled_administrations(lg, dea) == []
            assert stock.discrepancies(lg, dea) == []
        # late entries carry their reason; received vials carry GTIN + serial
        with lg.reading() as c:
            blobs = [bytes(b) for b in c.execute(sa.select(entries_t.c.canonical)).scalars()]
        assert sum(b'"late_reason":"EHR downtime' in b for b in blobs) >= 1
        assert any(v["serial"] for v in stock.vials(lg, "AB1234563"))
        keys = PatientKeys.from_settings(settings)
        assert services.check_registry(lg, "AB1234563", keys=keys) == []
    finally:
        lg.dispose()
