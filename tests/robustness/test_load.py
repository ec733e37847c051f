"""The load run (``bench/load_network.py``) as a user runs it, shortened: a 20-clinic network's
mixed workload over HTTP on PostgreSQL. The 10-minute figures in docs/reliability.md come from
the same script with ``--seconds 600``. Checks that every operation of the mix ran, that no
request failed, that memory was sampled along the way and that ``verify --deep`` passes after.
Marked ``slow``; ``.ci/run`` runs it (``CSLEDGER_LOAD_SECONDS``, default 40)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadtest import DEFAULT_MIX

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "load_network.py"
SECONDS = os.environ.get("CSLEDGER_LOAD_SECONDS", "40")


@pytest.mark.slow
@pytest.mark.serial  # 40 clients for SECONDS: it takes both cores (.ci/run's second pass)
def test_twenty_clinic_network_load_run(tmp_path):
    pg = os.environ.get("CSLEDGER_TEST_POSTGRES_URL")
    if not pg:
        if os.environ.get("CSLEDGER_REQUIRE_POSTGRES") == "1":
            pytest.fail("CSLEDGER_REQUIRE_POSTGRES=1 but CSLEDGER_TEST_POSTGRES_URL is not set")
        pytest.skip("the load run is on PostgreSQL: set CSLEDGER_TEST_POSTGRES_URL")
    out = tmp_path / "load.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--db", pg, "--clinics", "20", "--workstations", "2",
                        "--seconds", SECONDS, "--sample-every", "5", "--workdir", str(tmp_path / "work"),
                        "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["backend"] == "PostgreSQL" and res["clients"] == 40
    assert set(res["ops"]) == set(DEFAULT_MIX), f"operations that never ran: {set(DEFAULT_MIX) - set(res['ops'])}"
    assert not res["errors"] and not res["client_failures"]
    assert res["verify_deep"]["exit"] == 0 and "OK" in res["verify_deep"]["output"]
    assert len(res["memory"]) >= 3 and all(m["server_rss_mib"] > 0 for m in res["memory"])
    # Every figure the script prints is in the JSON it wrote.
    assert "p99 ms" in p.stdout and "server memory" in p.stdout
