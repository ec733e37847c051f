"""Reports over issue 3's clinical entry kinds, on entries built as the clinical services record
them (pure: the report data is computed and drawn, then read back with pypdf)."""

from __future__ import annotations

import io
from datetime import date

from pypdf import PdfReader

from reports.base import compute_data, kind_named, render_data
from reports.fmt import Period
from tests.reports.handmade_entries import K50, entry, worked_example

ADDRESS = {"street": "100 Harbor Way", "city": "Austin", "state": "TX", "postal_code": "78701"}
PERIOD = Period(date(2026, 9, 1), date(2026, 9, 30), "America/Chicago")


def sig(name: str, meaning: str, at: str = "2026-09-10T16:00:00.000000Z") -> dict:
    return {"staff_id": name[:3], "printed_name": name, "meaning": meaning, "signed_at": at, "auth_method": "password"}


def clinic_entries():
    snap = worked_example()
    snap.entries[0]["address"] = ADDRESS
    snap.entries[0]["name"] = "Calm Waters Ketamine Clinic"
    for e in snap.entries:
        if e["kind"] == "dose_wasted":
            e.update(administration_id="A4", administration_seq=4, method="syringe into drug-waste container",
                     signatures=[sig("Nora Nurse", "performed"), sig("Ned Nurse", "witnessed")])
    copy = {"dea_number": "AB1234563", "name": "Calm Waters Ketamine Clinic", "address": ADDRESS}
    snap.entries.append(entry(
        9, "stock_destroyed", "2026-09-25T15:00:00.000000Z", registrant_copy=copy, method="chemical digestion kit",
        place="pharmacy room", reason="expired", documents=[],
        items=[{"vial_id": "V3-1", "product": K50, "lot": "KA2", "full_package": True, "ml": "10.00", "mg": "500.00"},
               {"vial_id": "V3-2", "product": K50, "lot": "KA2", "full_package": False, "ml": "2.50", "mg": "125.00"}],
        signatures=[sig("Pia Pharmacist", "performed"), sig("Nora Nurse", "witnessed"), sig("Ned Nurse", "witnessed")]))
    return snap


def pdf_text(kind: str, snap) -> tuple[dict, list[str]]:
    data = compute_data(kind_named(kind), snap, PERIOD, generated_at="2026-10-01T14:00:00.000000Z",
                        generated_by="Casey Compliance", paper="letter")
    pdf = render_data(data)
    return data, [" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages]


def test_waste_log_and_form_41_worksheet():
    data, pages = pdf_text("waste", clinic_entries())
    t = data["figures"]["total"]
    assert (t["wasted_ml"], t["wasted_mg"], t["destroyed_ml"], t["destroyed_mg"]) == ("7.00", "350.00", "12.50", "625.00")
    log = pages[0]
    for must in ("Waste of administered doses", "A4", "6.00 mL", "300.00 mg", "Nora Nurse", "Ned Nurse",
                 "syringe into drug-waste container", "Destructions of stock (DEA Form 41)", "625.00 mg"):
        assert must in log, must
    form = pages[-1]
    for must in ("DEA Form 41 worksheet", "Calm Waters Ketamine Clinic, 100 Harbor Way, Austin, TX 78701",
                 "DEA registration number: AB1234563", "67457-0001-10", "KA2", "50.00 mg/mL", "injection",
                 "10.00 mL", "2.50 mL", "500.00 mg", "125.00 mg", "Total 1 2.50 mL 625.00 mg",
                 "Place: pharmacy room", "Method: chemical digestion kit", "witnessed (authorized employee witness)",
                 "Signature (witness 1)", "Signature (witness 2)"):
        assert must in form, must
    assert form.count("witnessed (authorized employee witness)") == 2


def with_counts_and_losses():
    snap = clinic_entries()
    s = snap.entries
    line = {"product": K50, "sealed_containers": 3, "open_containers": 0, "open_ml": "0.00", "counted_ml": "30.00",
            "expected_sealed_containers": 3, "expected_open_containers": 1, "expected_ml": "31.00",
            "difference_ml": "-1.00", "discrepancy_id": "D1"}
    s[8].update(lines=[line], signatures=[sig("Nora Nurse", "counted"), sig("Ned Nurse", "counted")], blind=True)
    line2 = {**line, "discrepancy_id": "D2", "difference_ml": "-2.00", "counted_ml": "28.00"}
    s.append(entry(10, "stock_counted", "2026-09-12T13:00:00.000000Z", session_id="C0", blind=False, lines=[line2],
                   signatures=[sig("Pia Pharmacist", "counted"), sig("Ned Nurse", "counted")]))
    s.append(entry(11, "discrepancy_resolved", "2026-09-13T13:00:00.000000Z", discrepancy_id="D2", count_seq=10,
                   category="spill", explanation="vial dropped during a draw", fixed_by_seq=None,
                   signatures=[sig("Morgan Manager", "approved")]))
    adj = {"vial_id": "V3-4", "product": K50, "ml": "2.00", "whole_vial": False}
    s.append(entry(12, "loss_adjusted", "2026-09-13T13:00:01.000000Z", discrepancy_id="D2", category="spill",
                   adjustments=[adj], signatures=[sig("Morgan Manager", "approved")]))
    copy = {"dea_number": "AB1234563", "name": "Calm Waters Ketamine Clinic", "address": ADDRESS}
    s.append(entry(13, "theft_or_loss_reported", "2026-09-14T13:00:00.000000Z", registrant_copy=copy,
                   discovered_at="2026-09-14T12:00:00.000000Z", loss_type="employee_pilferage", police_notified=True,
                   police_department="Austin PD", police_report_number="26-1234", losses_past_24_months=1,
                   purchase_value_usd="42.50", covers_seqs=[12], notice_due_at="2026-09-16T04:59:59.000000Z",
                   form_106_due_at="2026-10-29T04:59:59.000000Z",
                   lost=[{"vial_id": "V3-5", "product": K50, "ml": "10.00", "whole_vial": True}],
                   signatures=[sig("Morgan Manager", "performed")]))
    s.sort(key=lambda e: e["occurred_at"])
    return snap


def test_counts_and_discrepancies_open_first():
    data, pages = pdf_text("counts", with_counts_and_losses())
    d = data["figures"]["discrepancies"]
    assert [x["id"] for x in d] == ["D1", "D2"] and [x["status"] for x in d] == ["open", "resolved"]
    assert d[0]["difference_mg"] == "-50.00" and d[1]["loss_adjusted_ml"] == "2.00"
    text = " ".join(pages)
    for must in ("1 OPEN", "OPEN", "spill: vial dropped during a draw", "Morgan Manager", "-1.00 mL", "-50.00 mg",
                 "Nora Nurse Ned Nurse", "blind count", "3 sealed, 1 opened", "3 sealed, 0 opened"):
        assert must in text, must
    assert text.index("D1") < text.index("D2")


def test_form_106_worksheet():
    data, pages = pdf_text("form106", with_counts_and_losses())
    (r,) = data["figures"]["reports"]
    (item,) = r["items"]
    assert (item["whole_containers"], item["ml"], item["mg"]) == (1, "12.00", "600.00")
    text = " ".join(pages)
    for must in ("DEA Form 106 worksheet", "Calm Waters Ketamine Clinic", "100 Harbor Way, Austin, TX 78701",
                 "AB1234563", "Employee pilferage", "Yes: Austin PD, report 26-1234", "42.50 USD",
                 "Thefts and losses in the past 24 months 1", "67457-0001-10", "7285", "12.00 mL", "600.00 mg",
                 "V3-5, V3-4", "Form 106 due", "Signature (reported by)"):
        assert must in text, must


def test_vial_history_from_inventory_to_empty():
    snap = clinic_entries()
    snap.entries.append(entry(14, "dose_administered", "2026-09-26T15:00:00.000000Z", administration_id="A14",
                              draws=[{"vial_id": "V1-5", "product": K50, "ml": "6.00", "opened_vial": False,
                                      "beyond_use_date": "2026-09-29"}], ml_drawn="6.00", ml_given="6.00",
                              signatures=[sig("Nora Nurse", "performed")]))
    data = compute_data(kind_named("vial"), snap, PERIOD, generated_at="2026-10-01T14:00:00.000000Z",
                        generated_by="Casey Compliance", paper="letter", params={"vial": "V1-5"})
    f = data["figures"]
    assert [(e["what"], e["ml"], e["ml_left"]) for e in f["events"]] == [
        ("initial inventory", "6.00", "6.00"), ("drawn for an infusion", "-6.00", "0.00")]
    assert f["state"] == "empty" and data["params"] == {"vial": "V1-5"}
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(render_data(data))).pages)
    for must in ("Container V1-5", "Now: EMPTY", "opened, ESTIMATED", "administration A14", "Nora Nurse (performed)"):
        assert must in text, must


def test_administration_log_marks_unreconciled_and_prints_every_element():
    snap = clinic_entries()
    for e in snap.entries:
        if e["kind"] == "dose_administered":
            e.update(administration_id=f"A{e['seq']}", patient_id="P1", patient_commitment="ab" * 32,
                     prescriber_dea_number="FD1234563", weight_kg="90.00", ordered_mg_per_kg="0.60",
                     ordered_mg="54.00", mg_given="2700.00",
                     started_at=e["occurred_at"], ended_at=e["occurred_at"].replace("T15", "T16"),
                     signatures=[sig("Nora Nurse", "performed")])
    for e in snap.entries:  # the second infusion's waste is not recorded yet
        if e["kind"] == "dose_wasted" and e["seq"] == 7:
            e["kind"] = "document_stored"
    data, pages = pdf_text("administrations", snap)
    rows = data["figures"]["rows"]
    assert rows[0]["ml_wasted"] == "6.00" and rows[0]["unreconciled_ml"] == "0.00"
    assert rows[1]["unreconciled_ml"] == "1.00" and rows[0]["mg_per_kg_given"] == "30.00"
    text = " ".join(pages)
    for must in ("Administration log", "patient P1", "54.00 mL", "Nora Nurse", "DEA FD1234563",
                 "0.60 mg/kg x 90.00 kg = 54.00 mg", "2,700.00 mg", "6.00 mL witnessed by Ned Nurse", "UNRECONCILED 1.00 mL",
                 "1 UNRECONCILED", "NOT AVAILABLE: no patient key"):
        assert must in text, must
