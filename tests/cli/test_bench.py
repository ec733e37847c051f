"""``csledger bench`` runs end to end, small, and prints every section, the staff-signature one
(issue 17) included. No timing is asserted: speed figures live in docs/benchmarks.md, measured by
the command itself, never in a timed unit test."""

from __future__ import annotations

import io

from rich.console import Console

from api.cli.bench import SIGNED_DEA, run_bench
from ledger.integrity.staff_signatures import TEST_KDF


def test_bench_prints_the_staff_signature_section(tmp_path):
    buf = io.StringIO()
    # Cheap argon2 (TEST_KDF) and few timed signatures: this checks that every part runs and is
    # printed, not how fast it is.
    results = run_bench(Console(file=buf, width=200), entries=5, verify_entries=80, workdir=tmp_path, pg_url=None,
                        kdf=TEST_KDF, signature_ops=8)
    text = buf.getvalue()
    assert "durable single-command appends/s" in text
    assert "staff signatures (issue 17)" in text
    for row in ("statement (RFC 8785 bytes) + Ed25519 sign", "verify one Ed25519 signature (password key)",
                "verify one passkey ES256 assertion", "argon2id open of a password key", "staff-signature check",
                "chain and the rest"):
        assert row in text, row
    sig = results["staff_signatures"]
    # The signed chain really is signed: every entry after the root carries a verified signature.
    assert sig["verify_entries"] == 80 and sig["signatures_checked"] >= 70
    assert set(sig["per_op_s"]) >= {"sign", "verify_password_key", "verify_passkey", "open_key"}
    assert all(sig["per_op_s"][k] > 0 for k in ("sign", "verify_password_key", "verify_passkey", "open_key"))
    assert SIGNED_DEA in text


def test_bench_without_staff_signatures(tmp_path):
    buf = io.StringIO()
    results = run_bench(Console(file=buf, width=200), entries=3, verify_entries=40, workdir=tmp_path, pg_url=None,
                        staff_signatures=False)
    assert "staff_signatures" not in results
    assert "staff signatures (issue 17)" not in buf.getvalue()


def test_bench_issue22_comparisons_run(tmp_path):
    """The issue-22 section runs small: 16 concurrent writers on one registrant, eventsourcing from
    one and from 16 threads (when installed), each figure printed beside its target."""
    import pytest

    from api.cli import bench

    buf = io.StringIO()
    results = run_bench(Console(file=buf, width=240), entries=20, verify_entries=80, workdir=tmp_path, pg_url=None,
                        staff_signatures=False)
    text = buf.getvalue()
    c = results["issue22"]
    assert c["writers"] == 16 and c["concurrent_appends"] == 20 and c["concurrent_appends_per_s"] > 0
    assert "16 writers on one registrant" in text and ">= 0.50x" in text
    if bench._import_eventsourcing() is None:
        pytest.skip("eventsourcing not installed: only the absent path (next test) applies")
    assert c["es_appends_per_s"] > 0 and c["es_concurrent_appends_per_s"] > 0
    assert "eventsourcing (SQLite, 16 threads)" in text and ">= 1.00x" in text
    assert bench.ES_INSTALL_HINT not in text


def test_bench_without_eventsourcing_says_how_to_install(tmp_path, monkeypatch):
    """With the package absent the comparison is skipped with one line naming the extra."""
    import builtins

    real_import = builtins.__import__

    def no_eventsourcing(name, *args, **kwargs):
        if name == "eventsourcing" or name.startswith("eventsourcing."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_eventsourcing)
    buf = io.StringIO()
    results = run_bench(Console(file=buf, width=240), entries=4, verify_entries=40, workdir=tmp_path, pg_url=None,
                        staff_signatures=False, writers=2)
    c = results["issue22"]
    assert c["es_appends_per_s"] is None and c["es_concurrent_appends_per_s"] is None
    assert c["concurrent_appends_per_s"] > 0
    text = buf.getvalue()
    assert "pip install 'csledger[bench]'" in text
    assert "eventsourcing (SQLite, 2 threads)" not in text


def test_the_append_cpu_script_runs_and_a_receipt_reads_no_cached_reference_row(tmp_path):
    """``bench/append_cpu.py`` (issue 22) as a subprocess, small: it prints its figures and the
    statements of a receipt, and none of them reads a row the reference cache holds."""
    import subprocess
    import sys
    from pathlib import Path

    from ledger.storage.store import ReferenceCache

    script = Path(__file__).resolve().parents[2] / "bench" / "append_cpu.py"
    out = subprocess.run([sys.executable, str(script), "--commands", "5", "--warm", "2",
                          "--db", f"sqlite:///{tmp_path / 'ledger.db'}"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "ms per command" in out and "statements per receipt" in out
    listed = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert any("INSERT INTO entries" in ln for ln in listed)
    for table in ReferenceCache.TABLES:
        assert not [ln for ln in listed if f"FROM {table} " in ln], table
