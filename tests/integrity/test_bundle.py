"""Offline bundles and single-entry proofs: round trip, every flipped byte fails and says where."""

from __future__ import annotations

import base64
import io

import pytest

from ledger import services
from ledger.services.bundle import (
    export_bundle,
    export_entry_proof,
    verify_bundle,
    verify_entry_proof,
)
from ledger.storage import log as tl
from ledger.storage.log import WitnessEntry
from tests.conftest import DEA
from tests.contract.test_ledger_contract import receipt
from witness.server import Witness, serve_in_thread


@pytest.fixture
def witnessed(signed_clinic, tlog, tmp_path):
    """A clinic with a few receipts, witnessed 1 of 1 by a local witness."""
    lg = signed_clinic.ledger
    w = Witness.init(tmp_path / "wit", "witness.test")
    server, url = serve_in_thread(w)
    with lg.reading() as c:
        w.add_log(tl.log_keys(c, DEA)[0].verifier_key)
    tlog.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
    for i in range(2):
        services.receive_stock(lg, signed_clinic.nurse, receipt(signed_clinic, invoice=f"B{i}"))
    assert all(r.ok for r in tlog.push(DEA))
    yield signed_clinic, w
    server.shutdown()
    server.server_close()


def export(lg) -> bytes:
    buf = io.BytesIO()
    with lg.reading() as c:
        export_bundle(c, DEA, buf)
    return buf.getvalue()


def keys(lg):
    with lg.reading() as c:
        return [k.verifier_key for k in tl.log_keys(c, DEA)]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_round_trip(witnessed):
    clinic, w = witnessed
    data = export(clinic.ledger)
    rep = verify_bundle(io.BytesIO(data), trusted_log_keys=keys(clinic.ledger),
                        trusted_witness_keys=[w.verifier.to_string()], threshold=1)
    assert rep.ok, rep.problem
    assert rep.keys_trusted and rep.cosignatures == 1 and rep.witnesses == ["witness.test"]
    assert rep.stock["67457000110"] == {"containers": "4", "ml": "40.00"}
    # without pinned keys it still verifies, but says it proves only internal consistency
    loose = verify_bundle(io.BytesIO(data))
    assert loose.ok and not loose.keys_trusted and loose.notes


def test_every_flipped_byte_fails_and_says_where(witnessed):
    clinic, w = witnessed
    data = export(clinic.ledger)
    pinned = dict(trusted_log_keys=keys(clinic.ledger), trusted_witness_keys=[w.verifier.to_string()])
    assert verify_bundle(io.BytesIO(data), **pinned).ok
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        for kw in (pinned, {}):  # pinned keys, and the bundle's own keys
            rep = verify_bundle(io.BytesIO(bytes(bad)), **kw)
            assert not rep.ok, f"flipping byte {i} ({data[i:i + 1]!r}) still verified with {kw and 'pinned keys'}"
            assert rep.problem.where.startswith(("line", "--")), rep.problem


@pytest.mark.parametrize("cut", [0, 1, 50, -1, -2, -30])
def test_truncated_bundles_fail(witnessed, cut):
    data = export(witnessed[0].ledger)
    rep = verify_bundle(io.BytesIO(data[:cut] if cut else b""))
    assert not rep.ok and "line" in str(rep.problem)


def test_unknown_key_is_refused(witnessed):
    from ledger.integrity.checkpoints import Signer

    data = export(witnessed[0].ledger)
    stranger = Signer.generate("someone.else/log").verifier().to_string()
    rep = verify_bundle(io.BytesIO(data), trusted_log_keys=[stranger])
    assert not rep.ok and "checkpoint" in str(rep.problem)
    rep = verify_bundle(io.BytesIO(data), trusted_log_keys=["not a key"])
    assert not rep.ok and "--log-key" in str(rep.problem)


def test_threshold_not_met_fails(witnessed):
    data = export(witnessed[0].ledger)
    rep = verify_bundle(io.BytesIO(data), trusted_log_keys=keys(witnessed[0].ledger), trusted_witness_keys=[],
                        threshold=1)
    assert not rep.ok and "witnessed by 0 of the 1" in str(rep.problem)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_single_entry_proof(witnessed):
    clinic, w = witnessed
    lg = clinic.ledger
    with lg.reading() as c:
        size = tl.latest_checkpoint(c, DEA).tree_size
        proofs = [export_entry_proof(c, DEA, s) for s in range(size)]
    for s, p in enumerate(proofs):
        assert p.startswith(b"c2sp.org/tlog-proof@v1\nextra ")
        rep = verify_entry_proof(p, trusted_log_keys=keys(lg), trusted_witness_keys=[w.verifier.to_string()],
                                 threshold=1)
        assert rep.ok, rep.problem
        assert rep.entry["seq"] == s and rep.cosignatures == 1
    p = proofs[-1]
    assert not verify_entry_proof(p, trusted_log_keys=[]).ok  # a proof alone carries no keys
    for i in range(len(p)):
        bad = bytearray(p)
        bad[i] ^= 0x01
        rep = verify_entry_proof(bytes(bad), trusted_log_keys=keys(lg), trusted_witness_keys=[w.verifier.to_string()],
                                 threshold=1)
        assert not rep.ok, f"flipping byte {i} of the proof still verified"


def test_single_entry_proof_bad_seq(witnessed):
    from ledger.domain.errors import InvalidInput

    with witnessed[0].ledger.reading() as c, pytest.raises(InvalidInput):
        export_entry_proof(c, DEA, 10_000)


def test_extra_is_the_entry(witnessed):
    with witnessed[0].ledger.reading() as c:
        p = export_entry_proof(c, DEA, 0)
    extra = p.split(b"\n")[1][len(b"extra "):]
    assert base64.b64decode(extra).startswith(b'{"address"')


def test_bundle_recomputes_the_accountability_audit(witnessed):
    from datetime import UTC, datetime, timedelta

    import ledger.services.audit  # noqa: F401  (a missing module is a failure, never a skip)
    from ledger.services.audit import audit

    clinic, w = witnessed
    data = export(clinic.ledger)
    start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(minutes=1)
    rep = verify_bundle(io.BytesIO(data), trusted_log_keys=keys(clinic.ledger), audit_between=(start, end))
    assert rep.ok, rep.problem
    # the offline figures equal those the service computes from its database
    assert rep.audit == audit(clinic.ledger, DEA, start, end)
    receipts = [p["ml"]["receipts"] for p in rep.audit["products"] if p["ndc_key"] == "67457000110"]
    assert receipts and str(receipts[0]) == "40.00"
