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
