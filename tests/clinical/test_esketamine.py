"""Esketamine (Spravato) nasal-spray sessions (issue 19), on SQLite and PostgreSQL.

A session names the devices used (each a tracked unit, used whole), the flat dose (56 or 84 mg =
devices x 28 mg), the prescriber, the administration and the REMS observation (at least 2
hours); the recording nurse, prescriber or pharmacist signs as the provider who directly
observed. The devices leave the book; counts, inventories, the audit and the 5 % transfer rule
count devices; the administration log prints the session; ``verify --deep`` replays the rules
and names a session forced in without them.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    CountLineInput,
    InventoryItemInput,
    QuarantineStock,
    ReceivedLineInput,
    ReceiveStock,
    RecordEsketamineSession,
    StartCount,
    SubmitCount,
    TakeInventory,
    TransferStock,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.integrity.canonical import decode, format_time
from ledger.services import stock
from ledger.services.audit import audit
from ledger.services.common import product_of_vial
from ledger.services.verify import verify
from ledger.storage.store import Ledger
from reports.base import build_report
from reports.verify import verify_report
from tests.api.conftest import build_api, entry_count
from tests.clinical.conftest import Ops
from tests.conftest import (
    BACKENDS,
    DEA,
    clinic_today,
    count_as_booked,
    fresh_database_url,
    migrated_sqlite,
    wants_template,
)
from tests.integrity.test_rules_replay import force, sig

SPRAVATO_2 = "50458-0028-02"  # kit of two 28 mg devices (the NDC reference's row)
SPRAVATO_3 = "50458-0028-03"  # kit of three
UNREGISTERED = "AB7654329"  # a practitioner's number nobody registered here



@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """Every test here on both backends (the ``ledger`` fixture builds on this)."""
    yield from fresh_database_url(request.param, tmp_path, migrated=wants_template(request))


def add_spravato(ops: Ops, ndc: str = SPRAVATO_2) -> None:
    services.add_product(ops.ledger, ops.admin, AddProduct(ndc, "Spravato (esketamine) nasal spray 28 mg", "7285",
                                                           "III", "nasal spray", "140.00", "0.20"))


def devices(ops: Ops, n: int, ndc: str = SPRAVATO_2) -> list[str]:
    """``n`` sealed devices received on an invoice 6 hours ago (each a tracked unit)."""
    return services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        supplier_id=ops.supplier_id, invoice_number=f"INV-SPR-{next(INVOICES)}",
        occurred_at=datetime.now(UTC) - timedelta(hours=6),
        lines=(ReceivedLineInput(ndc, n, "SPR-LOT-1", "2028-06-30"),)))["vial_ids"]


INVOICES = itertools.count(1)


@pytest.fixture
def clinic(ledger) -> Ops:
    ops = Ops(ledger)
    add_spravato(ops)
    return ops


def session(ops: Ops, ids: list[str], dose: str = "56.00", *, at: datetime | None = None,
            observed: timedelta = timedelta(hours=2, minutes=5), start_after: timedelta = timedelta(0),
            prescriber: str = DEA, who=None, **kw) -> dict:
    at = at or datetime.now(UTC) - timedelta(hours=3)
    cmd = RecordEsketamineSession(
        patient_id=kw.pop("patient_id", ops.patient_id), prescriber_dea_number=prescriber, device_ids=tuple(ids),
        dose_mg=dose, administered_at=at, observation_started_at=at + start_after,
        observation_ended_at=at + start_after + observed, **kw)
    return services.record_esketamine_session(ops.ledger, who or ops.nurse, cmd)


def entry(ledger: Ledger, seq: int) -> dict:
    with ledger.reading() as c:
        row = c.exec_driver_sql(f"SELECT canonical FROM entries WHERE registrant = '{DEA}' AND seq = {seq}").first()
    return decode(bytes(row[0]))


def refused(exc_type, fn, field: str) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    assert info.value.field == field, (info.value.field, info.value.reason)
    return info.value.reason


def test_a_session_end_to_end_over_the_service(clinic):
    ops = clinic
    ids = devices(ops, 3)
    before = len(stock.vials(ops.ledger, DEA, state="sealed", ndc_key="50458002802"))
    r = session(ops, ids[:2])
    assert (r["dose_mg"], r["devices"], r["mg_per_device"]) == ("56.00", ids[:2], "28.00")
    assert r["observed_minutes"] == 125
    e = entry(ops.ledger, r["entries"][0]["seq"])
    assert e["kind"] == "esketamine_session_recorded" and e["session_id"] == r["session_id"]
    assert (e["dose_mg"], e["mg_per_device"], e["ml_used"]) == ("56.00", "28.00", "0.40")
    assert [d["vial_id"] for d in e["devices"]] == ids[:2] and all(d["mg"] == "28.00" for d in e["devices"])
    assert e["product"]["unit_kind"] == "nasal_spray_device"
    assert (e["prescriber_dea_number"], e["prescriber_name"]) == (DEA, "Dr. Alex Prescriber")
    assert (e["directly_observed_by"], e["directly_observed_by_name"]) == (ops.nurse.staff_id, "Nora Nurse")
    assert [(s["staff_id"], s["meaning"]) for s in e["signatures"]] == [(ops.nurse.staff_id, "performed")]
    # the devices left the book whole; the third is still on hand
    states = {v["vial_id"]: (v["state"], v["ml_left"]) for v in stock.vials(ops.ledger, DEA)}
    assert states[ids[0]] == states[ids[1]] == ("empty", Decimal("0.00"))
    assert states[ids[2]] == ("sealed", Decimal("0.20"))
    assert len(stock.vials(ops.ledger, DEA, state="sealed", ndc_key="50458002802")) == before - 2
    # 84 mg is three devices (a prescriber or pharmacist may record it too)
    more = devices(ops, 2)
    r = session(ops, [ids[2], *more], "84.00", who=ops.pharmacist)
    assert r["dose_mg"] == "84.00"
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]


def test_the_audit_counts_devices_and_balances(clinic):
    ops = clinic
    start = datetime.now(UTC) - timedelta(days=1)
    ids = devices(ops, 5)
    session(ops, ids[:3], "84.00")
    a = audit(ops.ledger, DEA, start, datetime.now(UTC))
    (line,) = [p for p in a["products"] if p["ndc"] == "50458-0028-02"]
    assert line["containers"]["receipts"] == Decimal("5.00")
    assert line["containers"]["administered"] == Decimal("3.00")
    assert line["containers"]["ending"] == Decimal("2.00")
    assert line["mg"]["administered"] == Decimal("84.00") and line["ml"]["administered"] == Decimal("0.60")
    assert line["ml"]["difference"] == 0 and line["unreconciled"]["ml"] == 0 and not line["flagged"]
    # a blind count of the two devices left confirms the book
    s = services.start_count(ops.ledger, ops.nurse, StartCount((SPRAVATO_2,)))
    counted = services.submit_count(ops.ledger, ops.nurse, SubmitCount(
        s["session_id"], (CountLineInput(SPRAVATO_2, 2),), datetime.now(UTC)), second_counter=ops.nurse2)
    assert counted["discrepancy_ids"] == []
    a = audit(ops.ledger, DEA, start, datetime.now(UTC))
    (line,) = [p for p in a["products"] if p["ndc"] == "50458-0028-02"]
    assert line["ending_basis"] == "counted" and line["containers"]["ending"] == Decimal("2.00")
    assert line["ml"]["difference"] == 0
    assert verify(ops.ledger, deep=True).ok


def test_a_count_or_an_inventory_counts_whole_devices(clinic):
    ops = clinic
    devices(ops, 2)
    s = services.start_count(ops.ledger, ops.nurse, StartCount((SPRAVATO_2,)))
    reason = refused(InvalidInput, lambda: services.submit_count(ops.ledger, ops.nurse, SubmitCount(
        s["session_id"], (CountLineInput(SPRAVATO_2, 1, 1, "0.10"),), datetime.now(UTC)),
        second_counter=ops.nurse2), "lines[0].open_containers")
    assert "single use" in reason


def test_an_initial_inventory_refuses_an_opened_device(ledger):
    ops = Ops(ledger)
    add_spravato(ops)
    when = datetime.now(UTC) - timedelta(hours=2)
    reason = refused(InvalidInput, lambda: services.take_inventory(ledger, ops.pharmacist, TakeInventory(
        "initial", "opening_of_business", when, (
            InventoryItemInput(SPRAVATO_2, "LOT9", "2028-06-30", sealed=True, containers=2),
            InventoryItemInput(SPRAVATO_2, "LOT9", "2028-06-30", sealed=False, ml="0.10",
                               first_punctured_on=clinic_today().isoformat()))), witness=ops.nurse), "items[1].sealed")
    assert "single use" in reason
    inv = services.take_inventory(ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business", when, (
        InventoryItemInput(SPRAVATO_2, "LOT9", "2028-06-30", sealed=True, containers=2),)), witness=ops.nurse)
    r = session(ops, inv["vial_ids"])
    assert r["dose_mg"] == "56.00"
    assert verify(ledger, deep=True).ok


class TestRefusals:
    """Each refusal names its field and records nothing."""

    def test_observation_under_two_hours(self, clinic):
        ids = devices(clinic, 2)
        n = entry_count_of(clinic)
        reason = refused(InvalidInput, lambda: session(clinic, ids, observed=timedelta(hours=1, minutes=59)),
                         "observation_ended_at")
        assert "119 min" in reason and "2 hours" in reason and "REMS" in reason
        # end before start
        refused(InvalidInput, lambda: session(clinic, ids, observed=timedelta(minutes=-5)), "observation_ended_at")
        # observation starting long after the administration leaves the patient unobserved
        refused(InvalidInput, lambda: session(clinic, ids, start_after=timedelta(minutes=30)),
                "observation_started_at")
        # the observation must also end 2 h after administration when it started before it
        refused(InvalidInput, lambda: session(clinic, ids, start_after=timedelta(minutes=-30),
                                              observed=timedelta(hours=2, minutes=20)), "observation_ended_at")
        assert entry_count_of(clinic) == n
        assert session(clinic, ids, observed=timedelta(hours=2))["observed_minutes"] == 120  # exactly 2 h

    def test_wrong_dose(self, clinic):
        ids = devices(clinic, 3)
        n = entry_count_of(clinic)
        assert "56.00 mg or 84.00 mg" in refused(InvalidInput, lambda: session(clinic, ids[:2], "28.00"), "dose_mg")
        assert "56.00 mg or 84.00 mg" in refused(InvalidInput, lambda: session(clinic, ids, "70.00"), "dose_mg")
        # the dose must be the devices named: 84 mg with two devices, 56 mg with three
        assert "56.00 mg, not the 84.00 mg" in refused(InvalidInput, lambda: session(clinic, ids[:2], "84.00"),
                                                       "device_ids")
        refused(InvalidInput, lambda: session(clinic, ids, "56.00"), "device_ids")
        assert entry_count_of(clinic) == n

    def test_a_device_used_twice(self, clinic):
        ids = devices(clinic, 3)
        session(clinic, ids[:2])
        n = entry_count_of(clinic)
        reason = refused(Conflict, lambda: session(clinic, [ids[1], ids[2]]), "device_ids[0]")
        assert "already used" in reason and "single use" in reason
        refused(InvalidInput, lambda: session(clinic, [ids[2], ids[2]]), "device_ids[1]")  # named twice
        assert entry_count_of(clinic) == n

    def test_a_device_quarantined_or_not_on_hand(self, clinic):
        ids = devices(clinic, 2)
        services.quarantine_stock(clinic.ledger, clinic.nurse, QuarantineStock((ids[1],), "seal broken"))
        assert "quarantine" in refused(Conflict, lambda: session(clinic, ids), "device_ids[1]")
        refused(NotFound, lambda: session(clinic, [ids[0], "V999999-1"]), "device_ids[1]")

    def test_a_non_device_product_or_two_products(self, clinic):
        ops = clinic
        vial = ops.receive(1)[0]  # ketamine 50 mg/mL, a vial
        ids = devices(ops, 1)
        n = entry_count_of(ops)
        assert "not a nasal-spray device" in refused(InvalidInput, lambda: session(ops, [vial, ids[0]]),
                                                     "device_ids[0]")
        add_spravato(ops, SPRAVATO_3)
        other = devices(ops, 1, ndc=SPRAVATO_3)
        n = entry_count_of(ops)
        assert "one product" in refused(InvalidInput, lambda: session(ops, [ids[0], other[0]]), "device_ids[1]")
        assert entry_count_of(ops) == n

    def test_an_infusion_never_draws_from_a_device(self, clinic):
        ids = devices(clinic, 1)
        n = entry_count_of(clinic)
        assert "esketamine session" in refused(InvalidInput, lambda: clinic.dose(ids[0], "0.10", "0.10"),
                                               "draws[0].vial_id")
        assert entry_count_of(clinic) == n

    def test_an_unregistered_or_distributor_prescriber(self, clinic):
        ids = devices(clinic, 2)
        n = entry_count_of(clinic)
        assert "not a registered prescriber" in refused(
            InvalidInput, lambda: session(clinic, ids, prescriber=UNREGISTERED), "prescriber_dea_number")
        assert "not a practitioner" in refused(
            InvalidInput, lambda: session(clinic, ids, prescriber="RP1234563"), "prescriber_dea_number")
        assert entry_count_of(clinic) == n

    def test_who_may_record_and_when(self, clinic):
        ids = devices(clinic, 2)
        with pytest.raises(Forbidden):  # a manager is not the healthcare provider who observes a session
            session(clinic, ids, who=clinic.manager)
        later = datetime.now(UTC) + timedelta(hours=1)
        refused(InvalidInput, lambda: session(clinic, ids, at=later - timedelta(hours=2), observed=timedelta(hours=3)),
                "observation_ended_at")  # the observation has not ended yet


def entry_count_of(ops: Ops) -> int:
    with ops.ledger.reading() as c:
        return c.exec_driver_sql("SELECT count(*) FROM entries").scalar_one()


def test_the_five_percent_rule_counts_devices(clinic):
    """21 CFR 1307.11: a transfer is measured in dosage units; a device product's is the device.
    7 sessions of 3 devices dispensed 21 devices: one more device may be transferred (1 in 22)."""
    ops = clinic
    ids = devices(ops, 23)
    to = dict(receiver_dea_number="FB7654329", receiver_name="Other Clinic",
              receiver_address=AddressInput("2 Oak St", "Austin", "TX", "78702"),
              receiver_registration_expires_on="2031-06-30", receiver_schedules=("3N", "4", "5"))
    refused(Conflict, lambda: services.transfer_stock(ops.ledger, ops.pharmacist, TransferStock(
        (ids[22],), invoice_number="T-0", occurred_at=datetime.now(UTC), **to), witness=ops.nurse2), "vial_ids")
    for k in range(7):
        session(ops, ids[3 * k:3 * k + 3], "84.00")
    r = services.transfer_stock(ops.ledger, ops.pharmacist, TransferStock(
        (ids[21],), invoice_number="T-1", occurred_at=datetime.now(UTC), **to), witness=ops.nurse2)
    e = entry(ops.ledger, r["entries"][0]["seq"])
    assert (e["year_transfer_units"], e["year_total_units"]) == ("1.00", "22.00")
    refused(Conflict, lambda: services.transfer_stock(ops.ledger, ops.pharmacist, TransferStock(
        (ids[22],), invoice_number="T-2", occurred_at=datetime.now(UTC), **to), witness=ops.nurse2), "vial_ids")


def test_the_administration_log_prints_the_session(clinic):
    ops = clinic
    ids = services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory(  # records begin with it
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=6),
        (InventoryItemInput(SPRAVATO_2, "SPR-LOT-1", "2028-06-30", sealed=True, containers=2),)), witness=ops.nurse)["vial_ids"]
    r = session(ops, ids)
    today = clinic_today()
    pdf, data = build_report(ops.ledger, "administrations", DEA, (today - timedelta(days=1)).isoformat(),
                             today.isoformat())
    (row,) = data["figures"]["sessions"]
    assert (row["dose_mg"], row["session_id"], row["observed_minutes"]) == ("56.00", r["session_id"], 125)
    assert data["figures"]["rows"] == [] and data["figures"]["sessions_total"]["devices"] == 2
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(BytesIO(pdf)).pages)
    assert "56.00 mg" in text and "2 devices x 28.00 mg" in text, text
    assert "directly observed by Nora Nurse" in text and "2 h 05 min" in text, text
    assert ids[0] in text
    check = verify_report(ops.ledger, pdf)  # the figures rebuild from the entries
    assert not [p for p in check.problems if "sign" not in p.lower()], check.problems
    # the audit's containers column counts the devices; it runs to a count (issue 20, one period)
    count_as_booked(ops.ledger, ops.nurse, ops.pharmacist)
    pdf, data = build_report(ops.ledger, "audit", DEA, (today - timedelta(days=1)).isoformat(), today.isoformat())
    (line,) = [p for p in data["figures"]["products"] if p["ndc"] == "50458-0028-02"]
    assert line["unit_kind"] == "nasal_spray_device" and line["containers"]["administered"] == "2.00", line
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(BytesIO(pdf)).pages)
    assert "28.00 mg per nasal-spray device" in text and "Devices" in text, text


def _forged_session(*, observed: timedelta = timedelta(hours=2), n: int = 2, dose: str = "56.00",
                    observer=None):
    def make(ops, ctx):
        vials = [v for v in ctx.view.select("vials", registrant=DEA)
                 if v["state"] == "sealed" and v["ndc_key"] == "50458002802"][:n]
        p = product_of_vial(ctx, vials[0])
        patient = ctx.view.select("patients", registrant=DEA)[0]
        at = ctx.now - timedelta(hours=3)
        who = observer or ops.nurse
        return ev.EsketamineSessionRecorded(
            session_id=f"E{ctx.next_seq}", patient_id=patient["patient_id"], patient_commitment=patient["commitment"],
            prescriber_dea_number=DEA, prescriber_name="Dr. Alex Prescriber", product=p,
            devices=tuple(ev.DeviceUsed(v["vial_id"], v["lot"], date.fromisoformat(v["expiry"]), Decimal("0.20"),
                                        Decimal("28.00")) for v in vials),
            mg_per_device=Decimal("28.00"), dose_mg=Decimal(dose), ml_used=Decimal("0.20") * n,
            administered_at=format_time(at), observation_started_at=format_time(at),
            observation_ended_at=format_time(at + observed), directly_observed_by=who.staff_id,
            directly_observed_by_name=who.printed_name), [sig(ops.nurse, "performed", ctx.now)]
    return make


@pytest.mark.parametrize("make, rule, names", [
    (_forged_session(observed=timedelta(hours=1)), "esketamine-observation", "60 min"),
    (_forged_session(n=3, dose="56.00"), "esketamine-dose", "84.00 mg, not the 56.00 mg"),
    (_forged_session(dose="70.00"), "esketamine-dose", "not an esketamine nasal-spray dose"),
], ids=["one_hour_observation", "dose_not_the_devices", "dose_not_on_the_label"])
def test_a_session_forced_in_by_hand_fails_verify_deep(clinic, make, rule, names):
    ops = clinic
    devices(ops, 3)
    session(ops, devices(ops, 2))
    assert verify(ops.ledger, deep=True).ok
    seq = force(ops.ledger, lambda ctx: make(ops, ctx))
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and f"breaks rule {rule}:" in str(problem) and names in str(problem), str(problem)


def test_a_forged_session_naming_another_observer_or_a_used_device_fails_verify_deep(clinic):
    ops = clinic
    devices(ops, 2)
    seq = force(ops.ledger, lambda ctx: _forged_session(observer=ops.nurse2)(ops, ctx))
    (problem,) = verify(ops.ledger, deep=True).problems
    assert problem.seq == seq and "breaks rule esketamine-observer:" in str(problem), str(problem)


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def api(ledger):
    api = build_api(ledger)
    add_spravato(api.clinic)
    return api


def http_session(api, ids: list[str], patient: str, user: str = "nora", **over):
    at = datetime.now(UTC) - timedelta(hours=3)
    body = {"patient_id": patient, "prescriber_dea_number": DEA, "device_ids": ids, "dose_mg": "56.00",
            "administered_at": at.isoformat(), "observation_started_at": at.isoformat(),
            "observation_ended_at": (at + timedelta(hours=2, minutes=10)).isoformat(), **over}
    return api.client.post(api.url("/esketamine-sessions"), json=body, headers=api.headers(user, **api.key()))


def test_a_session_over_http(api):
    ids = services.receive_stock(api.ledger, api.clinic.nurse, ReceiveStock(
        api.clinic.supplier_id, "INV-SPR-1", datetime.now(UTC) - timedelta(hours=4),
        (ReceivedLineInput(SPRAVATO_2, 4, "SPR-LOT", "2028-06-30"),)))["vial_ids"]
    pat = api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": {
        "street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}}, headers=api.headers("nora"))
    patient = pat.json()["patient_id"]
    before = entry_count(api)
    assert http_session(api, ids[:2], patient, user="ari").status_code == 403  # an auditor records nothing
    r = http_session(api, ids[:2], patient, observation_ended_at=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["observation_ended_at"], r.text
    assert entry_count(api) == before
    r = http_session(api, ids[:2], patient, user="dana")  # the prescriber observed it
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["command"] == "record_esketamine_session" and body["dose_mg"] == "56.00"
    assert body["devices"] == ids[:2] and body["observed_minutes"] == 130
    seq = body["entries"][0]["seq"]
    e = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert e["kind"] == "esketamine_session_recorded" and e["directly_observed_by_name"] == "Dr. Dana Prescriber"
    again = http_session(api, ids[:2], patient)
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "device_ids[0]", again.text
    assert verify(api.ledger, deep=True).ok


# --- property: whatever sessions are tried, devices are counted once and the audit balances ------


@given(st.lists(st.tuples(st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True),
                          st.sampled_from(["28.00", "56.00", "84.00", "112.00"]), st.integers(90, 180)),
                min_size=1, max_size=6))
@example([([0, 1], "56.00", 125), ([1, 2], "56.00", 130), ([2, 3, 4], "84.00", 120), ([5, 6], "56.00", 119)])
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_sessions_use_each_device_once_and_the_audit_balances(plan):
    """Random sessions over a pool of 8 devices (SQLite): one is recorded exactly when its dose
    is 56 or 84 mg of as many devices, none used before, observed at least 2 hours; the stock
    never goes below zero, each device leaves once, whole, and the audit balances in devices."""
    folder = tempfile.mkdtemp(prefix="csledger-esk-")
    engine = migrated_sqlite(Path(folder) / "ledger.db")
    ledger = Ledger(engine)
    try:
        ops = Ops(ledger)
        add_spravato(ops)
        start = datetime.now(UTC) - timedelta(days=1)
        pool = devices(ops, 8)
        used: set[str] = set()
        for picks, dose, minutes in plan:
            ids = [pool[i] for i in picks]
            ok = (Decimal(dose) == 28 * len(ids) and dose in ("56.00", "84.00") and not used & set(ids)
                  and minutes >= 120)
            try:
                session(ops, ids, dose, observed=timedelta(minutes=minutes))
            except (InvalidInput, Conflict):
                assert not ok, (ids, dose, minutes)
                continue
            assert ok, (ids, dose, minutes)
            used |= set(ids)
        on_hand = {v["vial_id"] for v in stock.vials(ops.ledger, DEA) if v["state"] == "sealed"}
        assert on_hand == set(pool) - used
        (line,) = [p for p in audit(ledger, DEA, start, datetime.now(UTC))["products"] if p["ndc"] == "50458-0028-02"]
        assert line["containers"]["administered"] == len(used) and line["containers"]["ending"] == 8 - len(used)
        assert line["mg"]["administered"] == 28 * len(used) and line["ml"]["difference"] == 0
        assert verify(ledger, deep=True).ok
    finally:
        ledger.dispose()
        shutil.rmtree(folder, ignore_errors=True)
