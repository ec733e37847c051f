"""Clinic operations contract: one class, run on SQLite and PostgreSQL (fresh migrated databases).

Every refusal shows the error naming the field and that nothing was written.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain import gs1
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    ChangePatientDetails,
    CorrectEntry,
    CorrectionLineInput,
    CountLineInput,
    DestroyStock,
    DrawInput,
    InventoryItemInput,
    LostVialInput,
    QuarantineStock,
    ReceivedLineInput,
    ReceiveStock,
    RecordWaste,
    RegisterPatient,
    ReleaseQuarantine,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    ReturnStock,
    SetPolicy,
    StartCount,
    StoreDocument,
    SubmitCount,
    TakeInventory,
    TransferStock,
    WasteInput,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, LedgerError, NotFound
from ledger.integrity.canonical import decode
from ledger.services import stock
from ledger.services.verify import verify
from ledger.storage.patient_keys import PatientKeyError, PatientKeys
from ledger.storage.store import entries_t
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import (
    DEA2,
    KETAMINE_10,
    KETAMINE_50,
    RECEIVER_REGISTRATION,
    RECIPIENT_REGISTRATION,
    an_hour_ago,
    clinic_today,
    entry_count,
)

#: Issue 20: the rest of Form 106, required on every theft or loss report.
FORM_106 = {"narrative": "back door forced; one vial taken", "corrective_measures": "door replaced, alarm added",
            "contact_name": "Mia Manager", "contact_phone": "512-555-0142"}
ADDR = AddressInput("9 Oak Ave", "Austin", "TX", "78702")


def last_entries(ledger, n=1) -> list[dict]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).order_by(entries_t.c.seq.desc()).limit(n)).scalars().all()
    return [decode(bytes(r)) for r in reversed(rows)]


def refused(ops: Ops, exc_type: type[LedgerError], field: str, fn, *args, **kw) -> LedgerError:
    """Assert ``fn`` is refused with ``exc_type`` naming ``field``, and nothing was written."""
    before = entry_count(ops.ledger)
    with pytest.raises(exc_type) as exc:
        fn(*args, **kw)
    assert exc.value.field == field, str(exc.value)
    assert str(exc.value).startswith(field)
    assert entry_count(ops.ledger) == before
    return exc.value


def vial(ops: Ops, vial_id: str) -> dict:
    return next(v for v in stock.vials(ops.ledger, ops.dea) if v["vial_id"] == vial_id)


class ClinicalContract:
    backend: str

    # --- policy ---------------------------------------------------------------------------------

    def test_policy_defaults_then_set(self, ops):
        p = stock.policy(ops.ledger, ops.dea)
        assert p["is_default"] and p["beyond_use_days"] == 28 and p["late_entry_limit_hours"] == 24
        assert p["dosage_unit"] == "container"
        services.set_policy(ops.ledger, ops.manager, SetPolicy(
            beyond_use_days=14, late_entry_limit_hours=12, variance_threshold_percent="2.50",
            count_schedule="each_shift", clinic_hours={"mon": ("08:00", "18:00")}, dosage_unit="ml", reason="stricter"))
        p = stock.policy(ops.ledger, ops.dea)
        assert (p["beyond_use_days"], p["late_entry_limit_hours"], p["variance_threshold_percent"]) == (14, 12, "2.50")
        assert p["clinic_hours"] == {"mon": ["08:00", "18:00"]} and not p["is_default"]
        e = last_entries(ops.ledger)[0]
        assert e["kind"] == "policy_set" and e["signatures"][0]["meaning"] == "approved"
        # the policy's beyond-use days are used when a vial is opened
        v = ops.receive(1)[0]
        at = an_hour_ago()  # one instant for the dose and the expected date (local 01:00 falls between two calls)
        res = ops.dose(v, at=at)
        assert res["beyond_use_dates"][v] == (at.astimezone(_tz()).date() + timedelta(days=14)).isoformat()

    @pytest.mark.parametrize("kw, field", [
        (dict(beyond_use_days=29), "beyond_use_days"),
        (dict(beyond_use_days=0), "beyond_use_days"),
        (dict(late_entry_limit_hours=48), "late_entry_limit_hours"),
        (dict(variance_threshold_percent="1.005"), "variance_threshold_percent"),
        (dict(count_schedule="hourly"), "count_schedule"),
        (dict(dosage_unit="tablet"), "dosage_unit"),
        (dict(clinic_hours={"mon": ("18:00", "08:00")}), "clinic_hours.mon"),
        (dict(clinic_hours={"monday": ("08:00", "18:00")}), "clinic_hours"),
    ])
    def test_bad_policy_refused(self, ops, kw, field):
        refused(ops, InvalidInput, field, services.set_policy, ops.ledger, ops.manager, SetPolicy(**kw))

    def test_policy_late_limit_applies_to_receipts_and_doses(self, ops):
        services.set_policy(ops.ledger, ops.manager, SetPolicy(late_entry_limit_hours=3))
        four_hours_ago = datetime.now(UTC) - timedelta(hours=4)
        refused(ops, InvalidInput, "late_reason", services.receive_stock, ops.ledger, ops.nurse, ReceiveStock(
            ops.supplier_id, "INV-LATE", four_hours_ago, (ReceivedLineInput(KETAMINE_50, 1, "L", "2028-06-30"),)))
        v = ops.receive(1, invoice="INV-OK")[0]  # two hours ago: inside the limit
        e = refused(ops, InvalidInput, "late_reason", ops.dose, v, at=four_hours_ago)
        assert "3 h" in e.reason
        ops.dose(v, at=four_hours_ago, late_reason="charted on paper during downtime")

    def test_policy_needs_a_manager(self, ops):
        refused(ops, Forbidden, "principal", services.set_policy, ops.ledger, ops.nurse, SetPolicy())

    # --- patients --------------------------------------------------------------------------------

    def test_patient_registry_is_encrypted_and_committed(self, ops):
        with ops.ledger.reading() as c:
            sealed = c.execute(sa.text("SELECT sealed FROM patient_registry")).scalar()
            canon = b"".join(bytes(r) for r in c.execute(sa.select(entries_t.c.canonical)).scalars())
        assert b"Pat Example" not in bytes(sealed) and b"Elm" not in bytes(sealed)
        assert b"Pat Example" not in canon and b"Elm" not in canon
        e = [x for x in last_entries(ops.ledger, 50) if x["kind"] == "patient_registered"][0]
        assert len(e["commitment"]) == 64
        p = services.read_patient(ops.ledger, ops.nurse, ops.patient_id, keys=ops.keys)
        assert p["name"] == "Pat Example" and p["address"]["city"] == "Austin" and p["matches_commitment"]
        with ops.ledger.reading() as c:
            assert c.execute(sa.text("SELECT count(*) FROM patient_access_log")).scalar() == 1
        assert services.check_registry(ops.ledger, ops.dea, keys=ops.keys) == []

    def test_registry_change_without_entry_is_detected(self, ops):
        other = services.register_patient(ops.ledger, ops.nurse, RegisterPatient("Sam Other", ADDR), keys=ops.keys)
        # someone at the SQL prompt swaps two patients' sealed rows: the AAD binding refuses it
        with ops.ledger.engine.begin() as c:
            c.execute(sa.text("UPDATE patient_registry SET sealed = (SELECT sealed FROM patient_registry "
                              "WHERE patient_id = :o) WHERE patient_id = :p"), {"o": other["patient_id"], "p": ops.patient_id})
        assert services.check_registry(ops.ledger, ops.dea, keys=ops.keys) == [ops.patient_id]
        # a re-sealed row with a different address (valid encryption) no longer matches its commitment
        from ledger.storage.patient_keys import PatientDetails

        fake = ops.keys.seal(ops.dea, ops.patient_id, PatientDetails("Pat Example", "2 Elm St", "Austin", "TX", "78701"))
        with ops.ledger.engine.begin() as c:
            c.execute(sa.text("UPDATE patient_registry SET sealed = :s WHERE patient_id = :p"), {"s": fake, "p": ops.patient_id})
        assert services.check_registry(ops.ledger, ops.dea, keys=ops.keys) == [ops.patient_id]
        # the recorded change restores agreement
        services.change_patient_details(ops.ledger, ops.nurse, ChangePatientDetails(
            ops.patient_id, "Pat Example", AddressInput("2 Elm St", "Austin", "TX", "78701"), "moved"), keys=ops.keys)
        assert services.check_registry(ops.ledger, ops.dea, keys=ops.keys) == []

    def test_wrong_patient_key_is_refused_before_anything_is_written(self, ops):
        wrong = PatientKeys(b"\x01" * 32)
        with pytest.raises(PatientKeyError) as exc:
            services.verify_patient_key(ops.ledger, wrong)
        assert exc.value.field == "patient_key"
        refused(ops, PatientKeyError, "patient_key", services.register_patient, ops.ledger, ops.nurse,
                RegisterPatient("Sam Other", ADDR), keys=wrong)
        services.verify_patient_key(ops.ledger, ops.keys)

    def test_patient_errors_never_echo_health_data(self, ops):
        secret = "Zelda Q. Secretname"
        e = refused(ops, InvalidInput, "address.state", services.register_patient, ops.ledger, ops.nurse,
                    RegisterPatient(secret, AddressInput("77 Hidden Ln", "Austin", "ZZ", "78701")), keys=ops.keys)
        assert "Zelda" not in str(e) and "Hidden" not in str(e) and "ZZ" not in str(e)
        e = refused(ops, InvalidInput, "address.postal_code", services.register_patient, ops.ledger, ops.nurse,
                    RegisterPatient(secret, AddressInput("77 Hidden Ln", "Austin", "TX", "7870")), keys=ops.keys)
        assert "7870" not in str(e)
        assert "Secretname" not in repr(services.read_patient.__doc__)
        # the idempotency record holds no name either
        services.register_patient(ops.ledger, ops.nurse, RegisterPatient(secret, ADDR), keys=ops.keys,
                                  idempotency_key="k1")
        with ops.ledger.reading() as c:
            blob = " ".join(str(x) for r in c.execute(sa.text("SELECT * FROM idempotency_keys")).all() for x in r)
        assert "Zelda" not in blob

    def test_key_from_settings(self, tmp_path, monkeypatch):
        from ledger.settings import Settings
        from ledger.storage.patient_keys import generate_key_file

        path = tmp_path / "k" / "patient.key"
        generate_key_file(path)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        k1 = PatientKeys.from_settings(Settings(patient_key_file=path))
        k2 = PatientKeys.from_settings(Settings(patient_key=path.read_text().strip()))
        assert k1.check_value() == k2.check_value()
        with pytest.raises(FileExistsError):
            generate_key_file(path)
        with pytest.raises(PatientKeyError):
            PatientKeys.from_settings(Settings(patient_key_file=tmp_path / "missing"))
        with pytest.raises(PatientKeyError):
            PatientKeys.from_settings(Settings(patient_key="not base64!"))

    # --- administration and waste ---------------------------------------------------------------

    def test_dose_opens_the_vial_and_waste_in_same_command(self, ops):
        v = ops.receive(2)[0]
        res = ops.dose(v, drawn="8.00", given="7.00", waste="1.00", witness=ops.nurse2)
        assert res["reconciled"] and res["opened_vials"] == [v]
        adm, waste = last_entries(ops.ledger, 2)
        assert adm["kind"] == "dose_administered" and waste["kind"] == "dose_wasted"
        assert adm["ordered_mg"] == "35.00" and adm["mg_given"] == "350.00" and adm["ml_drawn"] == "8.00"
        assert adm["prescriber_dea_number"] == PRESCRIBER_DEA and adm["patient_id"] == ops.patient_id
        assert len(adm["patient_commitment"]) == 64 and "Pat" not in str(adm)
        assert adm["draws"][0]["opened_vial"] is True and adm["draws"][0]["product"]["strength_mg_per_ml"] == "50.00"
        assert waste["administration_id"] == res["administration_id"] and waste["mg"] == "50.00"
        assert [s["meaning"] for s in waste["signatures"]] == ["performed", "witnessed"]
        assert waste["signatures"][1]["staff_id"] == ops.nurse2.staff_id
        row = vial(ops, v)
        assert row["state"] == "open" and row["ml_left"] == Decimal("2.00") and row["opened_by"] == ops.nurse.staff_id
        assert row["beyond_use_date"] is not None
        assert stock.unreconciled_administrations(ops.ledger, ops.dea) == []
        # a second draw does not reopen the vial; drawing it empty marks it empty
        ops.dose(v, drawn="2.00", given="2.00")
        assert vial(ops, v)["state"] == "empty" and vial(ops, v)["ml_left"] == 0
        assert verify(ops.ledger, deep=True).ok

    def test_waste_later_reconciles(self, ops):
        v = ops.receive(1)[0]
        res = ops.dose(v, drawn="5.00", given="3.50")
        assert not res["reconciled"]
        un = stock.unreconciled_administrations(ops.ledger, ops.dea)
        assert [(u["administration_id"], u["ml_unaccounted"]) for u in un] == [(res["administration_id"], Decimal("1.50"))]
        refused(ops, Conflict, "ml", services.record_waste, ops.ledger, ops.nurse,
                RecordWaste(res["administration_id"], "1.60", "sink", an_hour_ago()), witness=ops.nurse2)
        refused(ops, Conflict, "witness", services.record_waste, ops.ledger, ops.nurse,
                RecordWaste(res["administration_id"], "1.50", "sink", an_hour_ago()), witness=ops.nurse)
        refused(ops, NotFound, "administration_id", services.record_waste, ops.ledger, ops.nurse,
                RecordWaste("A999", "1.50", "sink", an_hour_ago()), witness=ops.nurse2)
        out = services.record_waste(ops.ledger, ops.nurse, RecordWaste(res["administration_id"], "1.50", "sink",
                                                                     an_hour_ago()), witness=ops.pharmacist)
        assert out["reconciled"] and stock.unreconciled_administrations(ops.ledger, ops.dea) == []
        assert verify(ops.ledger, deep=True).ok

    def _dose_cmd(self, ops, v, **kw):
        at = an_hour_ago()
        base = dict(patient_id=ops.patient_id, prescriber_dea_number=PRESCRIBER_DEA, weight_kg="70.00",
                    ordered_mg_per_kg="0.50", draws=(DrawInput(v, "3.50"),), ml_given="3.50", started_at=at,
                    ended_at=at + timedelta(minutes=40))
        return AdministerDose(**{**base, **kw})

    @pytest.mark.parametrize("kw, exc_type, field", [
        (dict(patient_id="P999"), NotFound, "patient_id"),
        (dict(prescriber_dea_number="AB1234564"), InvalidInput, "prescriber_dea_number"),
        (dict(weight_kg="70.001"), InvalidInput, "weight_kg"),
        (dict(weight_kg="-70"), InvalidInput, "weight_kg"),
        (dict(ordered_mg_per_kg="0"), InvalidInput, "ordered_mg_per_kg"),
        (dict(draws=()), InvalidInput, "draws"),
        (dict(draws=(DrawInput("V-nope", "1.00"),), ml_given="1.00"), NotFound, "draws[0].vial_id"),
        (dict(draws=(DrawInput("@V", "1.0005"),)), InvalidInput, "draws[0].ml"),  # 0.001 mL since issue 19
        (dict(draws=(DrawInput("@V", "10.01"),), ml_given="1.00"), Conflict, "draws[0].ml"),
        (dict(ml_given="3.51"), InvalidInput, "ml_given"),
        (dict(ended_at=datetime.now(UTC) - timedelta(hours=3)), InvalidInput, "ended_at"),
        (dict(started_at=datetime.now(UTC) + timedelta(hours=1), ended_at=datetime.now(UTC) + timedelta(hours=2)),
         InvalidInput, "started_at"),
        (dict(started_at=datetime.now(UTC) - timedelta(days=3), ended_at=datetime.now(UTC) - timedelta(days=3, minutes=-40)),
         InvalidInput, "late_reason"),
        (dict(waste=WasteInput("0.50", "sink")), InvalidInput, "waste.ml"),
        (dict(draws=(DrawInput("@V", "4.00"),), waste=WasteInput("0.50", "sink")), InvalidInput, "witness"),
    ])
    def test_bad_dose_refused(self, ops, kw, exc_type, field):
        v = ops.receive(1)[0]
        if "draws" in kw:
            kw["draws"] = tuple(DrawInput(v if d.vial_id == "@V" else d.vial_id, d.ml) for d in kw["draws"])
        refused(ops, exc_type, field, services.administer_dose, ops.ledger, ops.nurse, self._dose_cmd(ops, v, **kw))

    def test_witness_must_be_another_person(self, ops):
        v = ops.receive(1)[0]
        refused(ops, Conflict, "witness", ops.dose, v, drawn="4.00", given="3.50", waste="0.50", witness=ops.nurse)
        refused(ops, Forbidden, "witness", ops.dose, v, drawn="4.00", given="3.50", waste="0.50", witness=ops.auditor)

    def test_only_clinicians_administer(self, ops):
        v = ops.receive(1)[0]
        refused(ops, Forbidden, "principal", services.administer_dose, ops.ledger, ops.auditor, self._dose_cmd(ops, v))

    def test_no_draw_from_quarantine_expired_or_past_bud(self, ops):
        v1, v2 = ops.receive(2)
        services.quarantine_stock(ops.ledger, ops.pharmacist, QuarantineStock((v1,), "suspect: torn seal"))
        assert vial(ops, v1)["state"] == "quarantined"
        e = refused(ops, Conflict, "draws[0].vial_id", ops.dose, v1)
        assert "quarantine" in e.reason
        refused(ops, Conflict, "vial_ids[0]", services.quarantine_stock, ops.ledger, ops.pharmacist,
                QuarantineStock((v1,), "again"))
        refused(ops, Forbidden, "principal", services.release_quarantine, ops.ledger, ops.nurse,
                ReleaseQuarantine((v1,), "verified"))
        services.release_quarantine(ops.ledger, ops.pharmacist, ReleaseQuarantine((v1,), "verified with supplier"))
        assert vial(ops, v1)["state"] == "sealed"
        ops.dose(v1)
        # past its beyond-use date: a dose 29 days after the first puncture is refused
        ops.dose(v2, at=datetime.now(UTC) - timedelta(days=30), late_reason="paper downtime log")
        e = refused(ops, Conflict, "draws[0].vial_id", ops.dose, v2)
        assert "beyond-use" in e.reason
        assert verify(ops.ledger, deep=True).ok

    def test_expired_lot_refused(self, ops):
        # a lot that expired yesterday (received, late, before it expired)
        v = services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
            ops.supplier_id, "INV-EXP", datetime.now(UTC) - timedelta(days=10),
            (ReceivedLineInput(KETAMINE_50, 1, "OLD", (clinic_today() - timedelta(days=2)).isoformat()),),
            late_reason="found the packing slip"))["vial_ids"][0]
        e = refused(ops, Conflict, "draws[0].vial_id", ops.dose, v)
        assert "expired" in e.reason
        # the expired remainder leaves by destruction with two witnesses (Form 41), never as waste
        services.destroy_stock(ops.ledger, ops.pharmacist, DestroyStock((v,), "chemical digestion (Rx Destroyer)",
                                                                          "med room", "expired", an_hour_ago()),
                               witnesses=(ops.nurse, ops.nurse2))
        assert vial(ops, v)["state"] == "destroyed"

    # --- counts and discrepancies -----------------------------------------------------------------

    def test_blind_count_hides_expected_until_submitted(self, ops):
        ops.receive(3)
        s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
        assert "expected" not in str(s) and "on_hand" not in stock.count_session(ops.ledger, ops.dea, s["session_id"])
        started = last_entries(ops.ledger)[0]
        assert started["kind"] == "count_started" and "expected" not in str(started)
        res = services.submit_count(ops.ledger, ops.nurse, SubmitCount(s["session_id"], (CountLineInput(KETAMINE_50, 3),),
                                                                     an_hour_ago()), second_counter=ops.nurse2)
        assert res["discrepancy_ids"] == [] and res["lines"][0]["difference_ml"] == "0.00"
        e = last_entries(ops.ledger)[0]
        assert [s["meaning"] for s in e["signatures"]] == ["counted", "counted"]
        assert e["lines"][0]["expected_ml"] == "30.00" and e["blind"] is True  # a JSON boolean on both backends
        assert "on_hand" in stock.count_session(ops.ledger, ops.dea, s["session_id"])
        refused(ops, Conflict, "session_id", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(s["session_id"], (CountLineInput(KETAMINE_50, 3),), an_hour_ago()), second_counter=ops.nurse2)

    def test_count_refusals(self, ops):
        ops.receive(3)
        s = services.start_count(ops.ledger, ops.nurse, StartCount())
        sid = s["session_id"]
        good = (CountLineInput(KETAMINE_50, 3), CountLineInput(KETAMINE_10, 0))
        refused(ops, Conflict, "second_counter", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, good, an_hour_ago()), second_counter=ops.nurse)
        refused(ops, Forbidden, "second_counter", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, good, an_hour_ago()), second_counter=ops.auditor)
        refused(ops, InvalidInput, "lines", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, good[:1], an_hour_ago()), second_counter=ops.nurse2)
        refused(ops, InvalidInput, "lines[1].ndc", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, (good[0], good[0]), an_hour_ago()), second_counter=ops.nurse2)
        refused(ops, InvalidInput, "lines[0].sealed_containers", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, (CountLineInput(KETAMINE_50, -1), good[1]), an_hour_ago()), second_counter=ops.nurse2)
        refused(ops, InvalidInput, "lines[0].open_ml", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount(sid, (CountLineInput(KETAMINE_50, 3, 1, "10.01"), good[1]), an_hour_ago()),
                second_counter=ops.nurse2)
        refused(ops, NotFound, "session_id", services.submit_count, ops.ledger, ops.nurse,
                SubmitCount("C9999", good, an_hour_ago()), second_counter=ops.nurse2)

    def _short_count(self, ops, sealed=3, open_containers=0, open_ml="0.00"):
        s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
        return services.submit_count(ops.ledger, ops.nurse, SubmitCount(
            s["session_id"], (CountLineInput(KETAMINE_50, sealed, open_containers, open_ml),), an_hour_ago()),
            second_counter=ops.nurse2)

    def test_discrepancy_accepted_loss_writes_adjustment(self, ops):
        vids = ops.receive(4)
        res = self._short_count(ops, sealed=3)
        (d,) = res["discrepancy_ids"]
        assert res["lines"][0]["difference_ml"] == "-10.00"
        (row,) = stock.discrepancies(ops.ledger, ops.dea)
        assert row["difference_ml"] == Decimal("-10.00") and row["status"] == "open"
        # the book stays as computed until resolution
        assert sum(v["ml_left"] for v in stock.vials(ops.ledger, ops.dea)) == Decimal("40.00")
        refused(ops, Forbidden, "principal", services.resolve_discrepancy, ops.ledger, ops.nurse,
                ResolveDiscrepancy(d, "theft_or_loss", "dropped"), witness=ops.pharmacist)
        counter_manager = ops.manager
        s = services.start_count(ops.ledger, counter_manager, StartCount(ndcs=(KETAMINE_50,)))
        r2 = services.submit_count(ops.ledger, counter_manager, SubmitCount(
            s["session_id"], (CountLineInput(KETAMINE_50, 3),), an_hour_ago()), second_counter=ops.nurse2)
        refused(ops, Forbidden, "principal", services.resolve_discrepancy, ops.ledger, counter_manager,
                ResolveDiscrepancy(r2["discrepancy_ids"][0], "theft_or_loss", "dropped"), witness=ops.pharmacist)
        # issue 15: a second person, not the manager and not a counter, signs with the manager
        refused(ops, InvalidInput, "witness", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "theft_or_loss", "vial missing"))
        refused(ops, Conflict, "witness", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "theft_or_loss", "vial missing"), witness=ops.nurse2)
        # a breakage is resolved only by pointing at the breakage recorded when it happened
        refused(ops, InvalidInput, "breakage_seq", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "breakage", "dropped"), witness=ops.pharmacist)
        refused(ops, InvalidInput, "category", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "gremlins", "?"))
        refused(ops, InvalidInput, "explanation", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "theft_or_loss", " "), witness=ops.pharmacist)
        out = services.resolve_discrepancy(ops.ledger, ops.manager2, ResolveDiscrepancy(
            d, "theft_or_loss", "vial not found after a search of the medication room"), witness=ops.pharmacist)
        res_e, adj = last_entries(ops.ledger, 2)
        assert res_e["kind"] == "discrepancy_resolved" and adj["kind"] == "loss_adjusted"
        assert out["loss_adjustment_seq"] == adj["seq"]
        assert [a["whole_vial"] for a in adj["adjustments"]] == [True]
        lost = [v for v in stock.vials(ops.ledger, ops.dea) if v["state"] == "lost"]
        assert len(lost) == 1 and lost[0]["vial_id"] in vids
        refused(ops, Conflict, "discrepancy_id", services.resolve_discrepancy, ops.ledger, ops.manager2,
                ResolveDiscrepancy(d, "theft_or_loss", "again"), witness=ops.pharmacist)
        assert verify(ops.ledger, deep=True).ok

    def test_documentation_error_fixed_by_late_entry(self, ops):
        v = ops.receive(2)[0]
        # a dose given during downtime was not entered: the count finds 3.50 mL less than the book
        res = self._short_count(ops, sealed=1, open_containers=1, open_ml="6.50")
        (d,) = res["discrepancy_ids"]
        refused(ops, InvalidInput, "fixed_by_seq", services.resolve_discrepancy, ops.ledger, ops.manager,
                ResolveDiscrepancy(d, "documentation_error", "dose missing"))
        late = ops.dose(v, at=datetime.now(UTC) - timedelta(hours=30), late_reason="downtime; on the paper log")
        seq = late["entries"][0]["seq"]
        refused(ops, NotFound, "fixed_by_seq", services.resolve_discrepancy, ops.ledger, ops.manager,
                ResolveDiscrepancy(d, "documentation_error", "dose missing", fixed_by_seq=10_000),
                witness=ops.pharmacist)
        services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
            d, "documentation_error", "dose given during downtime entered late", fixed_by_seq=seq),
            witness=ops.pharmacist)
        assert last_entries(ops.ledger)[0]["fixed_by_seq"] == seq
        assert stock.discrepancies(ops.ledger, ops.dea) == []
        # with the late entry, a new count matches the book
        assert self._short_count(ops, sealed=1, open_containers=1, open_ml="6.50")["discrepancy_ids"] == []

    def test_overage_is_not_a_loss(self, ops):
        ops.receive(2)
        (d,) = self._short_count(ops, sealed=3)["discrepancy_ids"]
        refused(ops, Conflict, "category", services.resolve_discrepancy, ops.ledger, ops.manager,
                ResolveDiscrepancy(d, "theft_or_loss", "?"), witness=ops.pharmacist)
        services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "other", "miscounted shelf"),
                                     witness=ops.pharmacist)

    # --- destruction, transfer, return, theft/loss --------------------------------------------------

    def test_destruction_form_41(self, ops):
        v1, v2 = ops.receive(2)
        ops.dose(v1, drawn="6.00", given="6.00")
        args = (ops.ledger, ops.pharmacist, DestroyStock((v1, v2), "chemical digestion", "med room", "unwanted",
                                                            an_hour_ago()))
        refused(ops, InvalidInput, "witnesses", services.destroy_stock, *args, witnesses=(ops.nurse,))
        refused(ops, Conflict, "witnesses", services.destroy_stock, *args, witnesses=(ops.nurse, ops.nurse))
        refused(ops, Conflict, "witnesses[1]", services.destroy_stock, *args, witnesses=(ops.nurse, ops.pharmacist))
        refused(ops, NotFound, "vial_ids[0]", services.destroy_stock, ops.ledger, ops.pharmacist,
                DestroyStock(("nope",), "m", "p", "r", an_hour_ago()), witnesses=(ops.nurse, ops.nurse2))
        services.destroy_stock(*args, witnesses=(ops.nurse, ops.nurse2))
        e = last_entries(ops.ledger)[0]
        assert e["kind"] == "stock_destroyed" and e["registrant_copy"]["dea_number"] == ops.dea
        assert [(i["full_package"], i["ml"], i["mg"]) for i in e["items"]] == [(False, "4.00", "200.00"),
                                                                                (True, "10.00", "500.00")]
        assert [s["meaning"] for s in e["signatures"]] == ["performed", "witnessed", "witnessed"]
        assert {vial(ops, v1)["state"], vial(ops, v2)["state"]} == {"destroyed"}
        refused(ops, Conflict, "vial_ids[0]", services.destroy_stock, *args, witnesses=(ops.nurse, ops.nurse2))
        assert verify(ops.ledger, deep=True).ok

    def test_transfer_five_percent_rule(self, ops):
        vids = ops.receive(30)
        at = an_hour_ago()  # the doses and the transfer in one (local) calendar year, even at New Year
        cmd = TransferStock((vids[0],), DEA2, "Other Clinic", ADDR, "TR-1", at, **RECEIVER_REGISTRATION)
        e = refused(ops, Conflict, "vial_ids", services.transfer_stock, ops.ledger, ops.pharmacist, cmd,
                    witness=ops.nurse)
        assert "5%" in e.reason
        # stock leaving the registrant needs a second person (issue 15)
        refused(ops, InvalidInput, "witness", services.transfer_stock, ops.ledger, ops.pharmacist, cmd)
        refused(ops, Conflict, "witness", services.transfer_stock, ops.ledger, ops.pharmacist, cmd,
                witness=ops.pharmacist)
        # dispense 19 containers' worth (19 x 10 mL): 1 container transferred is 1/20 = 5%, allowed
        for v in vids[1:20]:
            ops.dose(v, drawn="10.00", given="10.00", at=at)
        refused(ops, InvalidInput, "witness", services.transfer_stock, ops.ledger, ops.pharmacist, cmd)
        services.transfer_stock(ops.ledger, ops.pharmacist, cmd, witness=ops.nurse)
        e = last_entries(ops.ledger)[0]
        assert {(s["staff_id"], s["meaning"]) for s in e["signatures"]} == {
            (ops.pharmacist.staff_id, "performed"), (ops.nurse.staff_id, "witnessed")}
        assert (e["year_transfer_units"], e["year_total_units"]) == ("1.00", "20.00")
        assert vial(ops, vids[0])["state"] == "transferred"
        refused(ops, Conflict, "vial_ids", services.transfer_stock, ops.ledger, ops.pharmacist,
                TransferStock((vids[20],), DEA2, "Other Clinic", ADDR, "TR-2", an_hour_ago(), **RECEIVER_REGISTRATION), witness=ops.nurse)
        refused(ops, Conflict, "receiver_dea_number", services.transfer_stock, ops.ledger, ops.pharmacist,
                TransferStock((vids[20],), ops.dea, "Self", ADDR, "TR-3", an_hour_ago(), **RECEIVER_REGISTRATION), witness=ops.nurse)
        refused(ops, Conflict, "vial_ids[0]", services.transfer_stock, ops.ledger, ops.pharmacist,
                TransferStock((vids[1],), DEA2, "Other Clinic", ADDR, "TR-4", an_hour_ago(), **RECEIVER_REGISTRATION), witness=ops.nurse)
        # returns are not counted in the 5%
        services.return_stock(ops.ledger, ops.pharmacist, ReturnStock(
            tuple(vids[20:25]), "reverse_distributor", "Safe Returns Inc", ADDR, "RB1234563", "RD-1", an_hour_ago(),
            **RECIPIENT_REGISTRATION),
            witness=ops.nurse)
        assert {vial(ops, v)["state"] for v in vids[20:25]} == {"returned"}
        refused(ops, InvalidInput, "recipient_type", services.return_stock, ops.ledger, ops.pharmacist, ReturnStock(
            (vids[25],), "friend", "X", ADDR, "RB1234563", "RD-2", an_hour_ago()), witness=ops.nurse)
        assert verify(ops.ledger, deep=True).ok

    def test_theft_or_loss_report_and_deadline(self, ops):
        v1, v2 = ops.receive(2)
        # discovered on Friday 2026-07-03 (observed Independence Day holiday): notice due Monday 6 July
        discovered = datetime(2026, 7, 3, 16, 0, tzinfo=UTC)
        cmd = ReportTheftOrLoss(discovered_at=discovered, loss_type="night_break_in", police_notified=True,
                                losses_past_24_months=0, purchase_value_usd="24.50", lost=(LostVialInput(v1),),
                                police_department="Austin PD", police_report_number="APD-26-1", **FORM_106)
        refused(ops, InvalidInput, "police_department", services.report_theft_or_loss, ops.ledger, ops.manager,
                dataclasses.replace(cmd, police_department=None))
        refused(ops, InvalidInput, "loss_type", services.report_theft_or_loss, ops.ledger, ops.manager,
                dataclasses.replace(cmd, loss_type="aliens"))
        refused(ops, InvalidInput, "lost", services.report_theft_or_loss, ops.ledger, ops.manager,
                dataclasses.replace(cmd, lost=()))
        refused(ops, Conflict, "lost[0].ml", services.report_theft_or_loss, ops.ledger, ops.manager,
                dataclasses.replace(cmd, lost=(LostVialInput(v1, "10.01"),)), witness=ops.pharmacist)
        refused(ops, Forbidden, "principal", services.report_theft_or_loss, ops.ledger, ops.nurse, cmd,
                witness=ops.pharmacist)
        # issue 15: vials taken off the book need a second person, not the reporter
        refused(ops, InvalidInput, "witness", services.report_theft_or_loss, ops.ledger, ops.manager, cmd)
        refused(ops, Conflict, "witness", services.report_theft_or_loss, ops.ledger, ops.manager, cmd,
                witness=ops.manager)
        res = services.report_theft_or_loss(ops.ledger, ops.manager, cmd, witness=ops.pharmacist)
        assert res["notice_due_at"].startswith("2026-07-07T04:59:59")  # end of Mon 6 July, Chicago (CDT)
        e = last_entries(ops.ledger)[0]
        assert e["kind"] == "theft_or_loss_reported" and e["lost"][0]["ml"] == "10.00"
        assert e["registrant_copy"]["name"] and e["form_106_due_at"].startswith("2026-08-18")
        assert vial(ops, v1)["state"] == "lost"

    def test_next_business_day(self):
        assert services.next_business_day(date(2026, 11, 25)) == date(2026, 11, 27)  # Thanksgiving skipped
        assert services.next_business_day(date(2026, 11, 27)) == date(2026, 11, 30)  # weekend skipped

    # --- corrections, documents, receipts with scans, inventories --------------------------------------

    def test_correction_references_the_corrected_entry(self, ops):
        v = ops.receive(1)[0]
        res = ops.dose(v, drawn="3.00", given="3.00")
        seq = res["entries"][0]["seq"]
        refused(ops, NotFound, "corrects_seq", services.correct_entry, ops.ledger, ops.nurse,
                CorrectEntry(9999, "typo"))
        refused(ops, Conflict, "lines[0].ml", services.correct_entry, ops.ledger, ops.nurse,
                CorrectEntry(seq, "typo", (CorrectionLineInput(v, "add", "3.01"),)))
        refused(ops, InvalidInput, "approver", services.correct_entry, ops.ledger, ops.nurse,
                CorrectEntry(seq, "typo", (CorrectionLineInput(v, "remove", "0.50"),)))
        refused(ops, Conflict, "lines[0].ml", services.correct_entry, ops.ledger, ops.nurse,
                CorrectEntry(seq, "typo", (CorrectionLineInput(v, "remove", "3.01"),)), approver=ops.pharmacist)
        refused(ops, InvalidInput, "lines[0].direction", services.correct_entry, ops.ledger, ops.nurse,
                CorrectEntry(seq, "typo", (CorrectionLineInput(v, "sideways", "1.00"),)))
        services.correct_entry(ops.ledger, ops.nurse, CorrectEntry(seq, "drew 2.50 mL, typed 3.00",
                                                                   (CorrectionLineInput(v, "add", "0.50"),)))
        e = last_entries(ops.ledger)[0]
        assert (e["corrects_seq"], e["corrects_kind"]) == (seq, "dose_administered")
        assert vial(ops, v)["ml_left"] == Decimal("7.50")
        assert verify(ops.ledger, deep=True).ok

    def test_documents_content_addressed(self, ops):
        pdf = b"%PDF-1.4 police report"
        res = services.store_document(ops.ledger, ops.manager, StoreDocument(pdf, "application/pdf", "Police report"))
        import hashlib

        assert res["sha256"] == hashlib.sha256(pdf).hexdigest()
        assert services.read_document(ops.ledger, ops.dea, res["sha256"]) == pdf
        refused(ops, Conflict, "content", services.store_document, ops.ledger, ops.manager,
                StoreDocument(pdf, "application/pdf", "again"))
        refused(ops, InvalidInput, "media_type", services.store_document, ops.ledger, ops.manager,
                StoreDocument(b"x", "application/x-exe", "bad"))
        # issue 20: the bytes must be what the type says
        for content, media in ((b"MZ\x90\x00 an executable", "application/pdf"), (b"%PDF-1.7", "image/png"),
                               (b"\xff\xfe not utf-8", "text/plain"), (b"a\x00b", "text/plain")):
            refused(ops, InvalidInput, "media_type", services.store_document, ops.ledger, ops.manager,
                    StoreDocument(content, media, "mislabelled"))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with ops.ledger.engine.begin() as c:
                c.execute(sa.text("UPDATE document_blobs SET content = :c"), {"c": b"forged"})
        v = ops.receive(1)[0]
        refused(ops, NotFound, "documents[0]", services.report_theft_or_loss, ops.ledger, ops.manager, ReportTheftOrLoss(
            an_hour_ago(), "other", False, 0, "1.00", lost=(LostVialInput(v),), documents=("0" * 64,), **FORM_106,
            other_explanation="vial not found"),
            witness=ops.pharmacist)
        services.report_theft_or_loss(ops.ledger, ops.manager, ReportTheftOrLoss(
            an_hour_ago(), "other", False, 0, "1.00", lost=(LostVialInput(v),), documents=(res["sha256"],),
            **FORM_106, other_explanation="vial not found"),
            witness=ops.pharmacist)

    def test_receipt_with_gs1_scans(self, ops):
        gtin = gs1.gtin_for_ndc10("6745700110")
        exp = date(2028, 6, 30)
        scans = tuple(gs1.datamatrix(gtin, f"SN{i:04d}", "LOT-7781", exp) for i in range(3))
        vids = ops.receive(3, scans=scans, invoiced_containers=4)
        assert vids == [f"(01){gtin}(21)SN{i:04d}" for i in range(3)]
        line = last_entries(ops.ledger)[0]["lines"][0]
        assert line["gtin"] == gtin and line["serials"] == ["SN0000", "SN0001", "SN0002"]
        assert line["invoiced_containers"] == 4
        assert vial(ops, vids[0])["serial"] == "SN0000" and vial(ops, vids[0])["gtin"] == gtin
        # the same serial again is suspect: refused
        e = refused(ops, Conflict, "lines[0].serials[0]", ops.receive, 1, scans=scans[:1])
        assert "suspect" in e.reason
        other = gs1.datamatrix(gs1.gtin_for_ndc10("5258403710"), "SN9", "LOT-7781", exp)
        refused(ops, InvalidInput, "lines[0].gtin", ops.receive, 1, scans=(other,))
        refused(ops, InvalidInput, "lines[0].scans[0]", ops.receive, 1, scans=("garbage",))
        refused(ops, InvalidInput, "lines[0].scans[0]", ops.receive, 1,
                scans=(gs1.datamatrix(gtin, "SN77", "OTHERLOT", exp),))
        refused(ops, InvalidInput, "lines[0].containers", ops.receive, 2, scans=(gs1.datamatrix(gtin, "SN78", "LOT-7781", exp),))
        # a page that parsed the scan itself passes GTIN and serials
        vids = ops.receive(1, gtin=gtin, serials=("SN5000",))
        assert vids == [f"(01){gtin}(21)SN5000"]
        # suspect product straight into quarantine
        q = ops.receive(1, quarantine=True)[0]
        assert vial(ops, q)["state"] == "quarantined"
        assert verify(ops.ledger, deep=True).ok

    def test_biennial_inventory_records_without_moving(self, ops):
        v1, v2 = ops.receive(2)
        ops.dose(v1, drawn="4.00", given="4.00")
        before = sum(v["ml_left"] for v in stock.vials(ops.ledger, ops.dea))
        services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory("biennial", "close_of_business", an_hour_ago(), (
            InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=False, ml="6.00", vial_id=v1),
            InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=True, vial_id=v2),
        )), witness=ops.nurse)
        e = last_entries(ops.ledger)[0]
        assert e["inventory_type"] == "biennial" and [i["estimated"] for i in e["items"]] == [True, False]
        signed = services.store_document(ops.ledger, ops.pharmacist, StoreDocument(
            b"%PDF-1.7 signed biennial inventory", "application/pdf", "Biennial inventory, signed"))["sha256"]
        services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory(
            "biennial", "close_of_business", an_hour_ago(),
            (InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=True, vial_id=v2),), documents=(signed,)), witness=ops.nurse)
        assert last_entries(ops.ledger)[0]["documents"] == [signed]
        refused(ops, NotFound, "documents[0]", services.take_inventory, ops.ledger, ops.pharmacist, TakeInventory(
            "biennial", "close_of_business", an_hour_ago(), (), documents=("a" * 64,)), witness=ops.nurse)
        assert sum(v["ml_left"] for v in stock.vials(ops.ledger, ops.dea)) == before
        refused(ops, NotFound, "items[0].vial_id", services.take_inventory, ops.ledger, ops.pharmacist,
                TakeInventory("biennial", "close_of_business", an_hour_ago(),
                              (InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=True, vial_id="nope"),)),
                witness=ops.nurse)
        assert verify(ops.ledger, deep=True).ok

    def test_inventory_witness_and_idempotent_infusion(self, ops):
        from ledger.storage.store import Ledger  # noqa: F401

        services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business", an_hour_ago(), (
            InventoryItemInput(KETAMINE_50, "L1", "2028-01-31", sealed=True, containers=2),)), witness=ops.nurse)
        e = last_entries(ops.ledger)[0]
        assert [s["meaning"] for s in e["signatures"]] == ["performed", "witnessed"]
        v = e["items"][0]["vial_id"]
        at = an_hour_ago()
        cmd = self._dose_cmd(ops, v, draws=(DrawInput(v, "4.00"),), started_at=at, ended_at=at + timedelta(minutes=40),
                             waste=WasteInput("0.50", "sink"))
        first = services.administer_dose(ops.ledger, ops.nurse, cmd, witness=ops.nurse2, idempotency_key="inf-1")
        n = entry_count(ops.ledger)
        again = services.administer_dose(ops.ledger, ops.nurse, cmd, witness=ops.nurse2, idempotency_key="inf-1")
        assert again["replayed"] and again["entries"] == first["entries"] and entry_count(ops.ledger) == n
        assert len(first["entries"]) == 2  # the infusion and its waste, one transaction
        from ledger.domain.errors import IdempotencyConflict

        refused(ops, IdempotencyConflict, "idempotency_key", services.administer_dose, ops.ledger, ops.nurse, cmd,
                witness=ops.pharmacist, idempotency_key="inf-1")
        refused(ops, Conflict, "witness", services.take_inventory, ops.ledger, ops.pharmacist, TakeInventory(
            "biennial", "close_of_business", an_hour_ago(), ()), witness=ops.pharmacist)

    def test_transfer_counts_ml_when_policy_says_so(self, ops):
        services.set_policy(ops.ledger, ops.manager, SetPolicy(dosage_unit="ml"))
        vids = ops.receive(3)
        for v in (vids[1], vids[1], vids[2], vids[2]):  # 20 mL dispensed; a 10 mL vial would be 10/30 = 33%
            ops.dose(v, drawn="5.00", given="5.00")
        e = refused(ops, Conflict, "vial_ids", services.transfer_stock, ops.ledger, ops.pharmacist,
                    TransferStock((vids[0],), DEA2, "Other Clinic", ADDR, "TR-1", an_hour_ago(), **RECEIVER_REGISTRATION),
                    witness=ops.nurse)
        assert "33.33%" in e.reason

    def test_stock_read_models(self, ops):
        v = ops.receive(3)
        ops.receive(1, ndc=KETAMINE_10)
        ops.dose(v[0], drawn="2.50", given="2.50")
        services.quarantine_stock(ops.ledger, ops.nurse, QuarantineStock((v[2],), "suspect"))
        by_product = {g["ndc_key"]: g for g in stock.stock_by_product(ops.ledger, ops.dea)}
        k50 = by_product["67457000110"]
        assert (k50["sealed_containers"], k50["open_containers"], k50["quarantined_containers"]) == (1, 1, 1)
        assert k50["ml"] == Decimal("27.50") and k50["mg"] == Decimal("1375.00")
        assert len(stock.stock_by_lot(ops.ledger, ops.dea)) == 2
        (reg,) = stock.stock_by_registrant(ops.ledger)
        assert reg["mg"] == Decimal("1375.00") + Decimal("200.00")


def _tz():
    import zoneinfo

    return zoneinfo.ZoneInfo("America/Chicago")


class TestSQLite(ClinicalContract):
    backend = "sqlite"


class TestPostgres(ClinicalContract):
    backend = "postgresql"
