"""``verify --deep`` replays the rules (issue 16): who was allowed to do what, at each entry's
place in the chain, from the chain's own role entries. A healthy clinic's ledger passes (the CLI,
as a subprocess); an entry forced in by hand with a valid hash chain (appended through the
ledger's own append path, bypassing every service check, so every hash, Merkle node, movement
and projection agrees) fails, naming the entry and the rule; so do a clock set back before
recording and a clock ahead of the witness that cosigned. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import (
    BreakageLineInput,
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    GrantRole,
    RecordBreakage,
    RecordWaste,
    ResolveDiscrepancy,
    RevokeRole,
    StartCount,
    SubmitCount,
)
from ledger.domain.entries import EVENT_TYPES
from ledger.integrity import canonical as canon
from ledger.services import rules_replay, stock
from ledger.services.common import product_of_vial
from ledger.services.verify import verify
from ledger.storage import log as tl
from ledger.storage.log import WitnessEntry, attach
from tests.clinical.conftest import Ops
from tests.conftest import BACKENDS, DEA, KETAMINE_50, an_hour_ago
from tests.integrity.conftest import settings_for
from witness.server import Witness, serve_in_thread

CSLEDGER = [sys.executable, "-m", "api.cli"]
both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def cli_verify_deep(url: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(tmp_path / "keys")}
    env.pop("CSLEDGER_PATIENT_KEY", None)
    return subprocess.run(CSLEDGER + ["verify", "--deep", "--db", url], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)


def sig(p, meaning: str, at: datetime) -> dict:
    """A signature as ``CommandContext.signature`` writes it, made by hand (no role check)."""
    return {"staff_id": p.staff_id, "printed_name": p.printed_name, "meaning": meaning,
            "signed_at": canon.format_time(at), "auth_method": "password"}


def force(ledger, make) -> int:
    """Append one entry through the ledger's own append path (hash chain, Merkle nodes,
    movements and projections all consistent), bypassing every service check: what someone
    with write access to the database can do. ``make(ctx)`` returns (event, signatures)."""
    out = {}

    def build(ctx):
        event, signatures = make(ctx)
        out["seq"] = ctx.append(event, signatures=signatures, occurred_at=ctx.now).seq
        return {}

    ledger.execute(DEA, "forced_by_hand", {}, build, principal_id=None)
    return out["seq"]


def busy_clinic(ops: Ops) -> dict:
    """Every two-person command once, through the services, as a clinic works; returns a sealed
    vial left untouched (``spare``)."""
    lg = ops.ledger
    vids = ops.receive(4)
    ops.dose(vids[0], drawn="4.00", given="3.50", waste="0.50", witness=ops.nurse2)
    admin_id = ops.dose(vids[0], drawn="3.00", given="2.50")["administration_id"]
    services.record_waste(lg, ops.nurse, RecordWaste(admin_id, "0.50", "expelled", an_hour_ago()), witness=ops.nurse2)
    s = services.start_count(lg, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    counted = services.submit_count(lg, ops.nurse, SubmitCount(s["session_id"], (
        CountLineInput(KETAMINE_50, 2, 1, "3.00"),), an_hour_ago()), second_counter=ops.nurse2)
    (d,) = counted["discrepancy_ids"]  # one sealed vial short: theft or loss, two people
    services.resolve_discrepancy(lg, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "vial not found after a search"),
                                 witness=ops.pharmacist)
    services.destroy_stock(lg, ops.pharmacist, DestroyStock((vids[0],), "incinerated", "medication room",
                                                           "remainder past its beyond-use date", an_hour_ago()),
                           witnesses=(ops.nurse, ops.nurse2))
    sealed = [v for v in stock.vials(lg, ops.dea) if v["state"] == "sealed"]
    one, spare = sealed[0], sealed[1]
    services.correct_entry(lg, ops.nurse, CorrectEntry(one["added_seq"], "keyed one mL too many", (
        CorrectionLineInput(one["vial_id"], "remove", "1.00"),)), approver=ops.manager)
    services.record_breakage(lg, ops.nurse, RecordBreakage("spill", "syringe knocked over", False, (
        BreakageLineInput(one["vial_id"], "2.00"),), an_hour_ago()), witness=ops.nurse2)
    services.grant_role(lg, ops.admin, GrantRole(ops.nurse2.staff_id, "pharmacist"), approver=ops.manager)
    services.revoke_role(lg, ops.manager2, RevokeRole(ops.nurse2.staff_id, "pharmacist", "covering shift over"))
    return {"spare": spare["vial_id"]}


def witnessed(ledger, tmp_path) -> tuple:
    """Checkpoint signing attached and an independent witness (own key, HTTP server)."""
    log = attach(ledger, settings_for(tmp_path))
    w = Witness.init(tmp_path / "witness", "compliance-officer.clinic.test")
    server, url = serve_in_thread(w)
    return log, w, server, url


def push(log, w, url) -> None:
    """The witness cosigns the latest checkpoint (``log.push``), its time from its own clock."""
    with log.ledger.reading() as c:
        key = tl.log_keys(c, DEA)[0]
    w.add_log(key.verifier_key)
    log.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
    assert all(r.ok for r in log.push(DEA))


def test_every_entry_kind_has_its_signature_rule():
    """A new entry kind must say who signs it, or the replay could not check it."""
    dynamic = {"registrant_registered", "inventory_taken", "stock_destroyed", "theft_or_loss_reported",
               "entry_corrected", "role_revoked"} | rules_replay.CHAIN_RULED  # credential_chain's rules
    assert set(EVENT_TYPES) <= set(rules_replay.SIGNATURES) | dynamic


@both
def test_healthy_clinic_passes_verify_deep_on_the_command_line(ledger, db_url, tmp_path):
    log, w, server, url = witnessed(ledger, tmp_path)
    try:
        ops = Ops(ledger)
        busy_clinic(ops)
        push(log, w, url)
        ops.receive(1)  # entries after the last cosigned checkpoint: not bounded by it, still checked
        report = verify(ledger, deep=True, patient_keys=ops.keys)
        assert report.ok, [str(p) for p in report.problems]
        p = cli_verify_deep(db_url, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "(deep): OK" in p.stdout
    finally:
        server.shutdown()
        server.server_close()


def _role_by_nurse(ops, ctx):
    return ev.RoleGranted(staff_id=ops.nurse2.staff_id, role="manager"), [
        sig(ops.nurse, "performed", ctx.now), sig(ops.pharmacist, "approved", ctx.now)]


def _self_grant(ops, ctx):
    return ev.RoleGranted(staff_id=ops.manager.staff_id, role="pharmacist"), [
        sig(ops.manager, "performed", ctx.now), sig(ops.manager2, "approved", ctx.now)]


def _enrolled_alone_with_approvers_around(ops, ctx):
    return ev.StaffEnrolled(staff_id=f"S{ctx.next_seq}", printed_name="Sam Puppet", username="sam"), [
        sig(ops.admin, "performed", ctx.now), sig(ops.admin, "approved", ctx.now)]


def _waste_witnessed_by_performer(ops, ctx):
    a = [r for r in ctx.view.select("administrations", registrant=DEA) if r["status"] == "unreconciled"][0]
    product = product_of_vial(ctx, {"ndc_key": a["ndc_key"]})
    return ev.DoseWasted(administration_id=a["administration_id"], administration_seq=a["seq"], product=product,
                         ml=Decimal("0.50"), mg=Decimal("25.00"), method="sink"), [
        sig(ops.nurse, "performed", ctx.now), sig(ops.nurse, "witnessed", ctx.now)]


def _correction_removing_without_approver(ops, ctx):
    v = ctx.view.get("vials", (DEA, ops.spare))
    return ev.EntryCorrected(corrects_seq=v["added_seq"], corrects_kind="stock_received", reason="typo", lines=(
        ev.CorrectionLine(v["vial_id"], product_of_vial(ctx, v), "remove", Decimal("1.00")),)), [
        sig(ops.nurse, "performed", ctx.now)]


def _spill_below_zero(ops, ctx):
    v = ctx.view.get("vials", (DEA, ops.spare))
    return ev.BreakageRecorded(what="spill", description="knocked over", recoverable=False, lines=(
        ev.VialAdjustment(v["vial_id"], product_of_vial(ctx, v), Decimal("12.00"), True),)), [
        sig(ops.nurse, "performed", ctx.now), sig(ops.nurse2, "witnessed", ctx.now)]


@both
@pytest.mark.parametrize("make, rule, names", [
    (_role_by_nurse, "signer-held-role", "Nora Nurse"),
    (_self_grant, "no-self-grant", "granted themself"),
    (_enrolled_alone_with_approvers_around, "two-people", "could have approved"),
    (_waste_witnessed_by_performer, "two-people", "signed twice"),
    (_correction_removing_without_approver, "two-people", "carries 1 signature(s)"),
    (_spill_below_zero, "stock-never-negative", "-2.00 mL"),
], ids=lambda x: getattr(x, "__name__", "")[1:] if callable(x) else None)
def test_entry_forced_in_by_hand_fails_verify_deep_naming_the_rule(ledger, make, rule, names):
    ops = Ops(ledger)
    ops.spare = busy_clinic(ops)["spare"]
    ops.dose(ops.receive(1)[0], drawn="1.00", given="0.50")  # unreconciled: its waste is yet to come
    assert verify(ledger, deep=True).ok
    seq = force(ledger, lambda ctx: make(ops, ctx))
    assert verify(ledger).ok  # the chain and the tree agree: the arithmetic alone cannot see it
    (problem,) = verify(ledger, deep=True).problems
    assert problem.seq == seq and f"breaks rule {rule}:" in str(problem) and names in str(problem), str(problem)


@both
def test_role_granted_by_a_nurse_fails_verify_deep_on_the_command_line(ledger, db_url, tmp_path):
    ops = Ops(ledger)
    seq = force(ledger, lambda ctx: _role_by_nurse(ops, ctx))
    p = cli_verify_deep(db_url, tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"FAIL {DEA} seq {seq}: breaks rule signer-held-role: role_granted is signed 'performed' by " \
           f"{ops.nurse.staff_id} (Nora Nurse)" in " ".join(p.stderr.split()), p.stderr
    assert "Traceback" not in p.stderr


@both
def test_clock_set_back_before_recording_fails_the_replay(ledger):
    ops = Ops(ledger)
    ops.receive(2)
    real = ledger.clock
    ledger.clock = lambda: real() - timedelta(hours=2)  # the server's clock set back two hours
    (vial,) = ops.receive(1)
    ledger.clock = real
    ops.receive(1)
    (problem,) = verify(ledger, deep=True).problems
    assert "breaks rule recorded-at-order:" in str(problem) and "the clock was set back" in str(problem)
    assert problem.seq == next(v["added_seq"] for v in stock.vials(ledger, DEA) if v["vial_id"] == vial)


@both
def test_entry_recorded_after_the_witness_cosigned_fails_the_replay(ledger, tmp_path):
    """The server's clock ran ahead of the witness's: the entry claims a time after a witness had
    already cosigned a tree that holds it."""
    log, w, server, url = witnessed(ledger, tmp_path)
    try:
        ops = Ops(ledger)
        ops.receive(2)
        push(log, w, url)
        real = ledger.clock
        ledger.clock = lambda: real() + timedelta(hours=1)
        ops.receive(1)
        ledger.clock = lambda: real() + timedelta(hours=2)
        ops.receive(1)
        push(log, w, url)
        ledger.clock = real
        (problem,) = verify(ledger, deep=True).problems
        assert "breaks rule recorded-before-witnessed:" in str(problem), str(problem)
    finally:
        server.shutdown()
        server.server_close()
