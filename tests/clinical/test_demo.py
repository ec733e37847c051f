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
    text = console.export_text()
    assert "verify --deep: OK" in text
    lg = Ledger.open(settings.database_url)
    try:
        with lg.reading() as c:
            kinds = Counter(c.execute(sa.select(entries_t.c.kind)).scalars())
            patients = c.execute(sa.text("SELECT count(*) FROM patients")).scalar()
        assert patients == 42  # 20 infusion patients and one Spravato patient per location
        for kind in ("dose_administered", "dose_wasted", "count_started", "stock_counted", "discrepancy_resolved",
                     "loss_adjusted", "stock_destroyed", "theft_or_loss_reported", "policy_set", "stock_received",
                     # issue 19: cartons opened before a witness, diluted bags, Spravato sessions
                     "package_opened", "preparation_made", "preparation_infused", "preparation_wasted",
                     "esketamine_session_recorded"):
            assert kinds[kind] > 0, kind
        assert kinds["dose_administered"] + kinds["preparation_infused"] > 200 and kinds["stock_counted"] > 70
        assert kinds["preparation_made"] == kinds["preparation_infused"] == kinds["preparation_wasted"]
        assert "1 discrepancy resolved" in text and "1 discrepancies" not in text
        for dea in summary:
            assert stock.unreconciled_administrations(lg, dea) == []
            assert stock.discrepancies(lg, dea) == []
        # late entries carry their reason
        with lg.reading() as c:
            blobs = [bytes(b) for b in c.execute(sa.select(entries_t.c.canonical)).scalars()]
        assert sum(b'"late_reason":"EHR downtime' in b for b in blobs) >= 1
        # issue 19: vials are their carton's GTIN + serial + position; one bag per location stopped
        # early; the short-dated carton was destroyed whole, sealed (one full package on Form 41)
        vials = stock.vials(lg, "AB1234563")
        assert any(v["vial_id"].endswith(":10") and v["vial_id"].startswith("(01)") for v in vials)
        assert sum(b'"stop_reason":"patient asked to stop' in b for b in blobs) == 2
        k10 = [v for v in vials if v["ndc_key"] == "42023011310"]
        assert len(k10) == 10 and {v["state"] for v in k10} == {"destroyed"} and len({v["package_id"] for v in k10}) == 1
        keys = PatientKeys.from_settings(settings)
        assert services.check_registry(lg, "AB1234563", keys=keys) == []
        # issue 21: every demo patient has a date of birth, the second identifier of a pick
        with lg.reading() as c:
            rows = c.execute(sa.text("SELECT registrant, patient_id, sealed FROM patient_registry")).all()
        assert len(rows) == 42 and all(keys.open(r[0], r[1], bytes(r[2])).date_of_birth for r in rows)
    finally:
        lg.dispose()
