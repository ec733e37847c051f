"""Doses at syringe resolution (issue 19): 0.5 mg/kg x 73 kg = 36.5 mg = 0.365 mL at 100 mg/mL.

Before, 0.365 mL was refused (two decimals) and the 0.37 mL a nurse could record raised "dose
above order". Now volumes are recorded to 0.001 mL (a syringe read to half a 0.01 mL graduation)
everywhere a volume is entered; mg stays at 0.01 mg, derived half-even. The stock stays exact on
both backends (PostgreSQL's NUMERIC(18, 3) does not round 9.635), and ``verify --deep`` rebuilds
every projection equal to the stored one. Through the services and over HTTP.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.alerts import per_entry
from ledger.domain.commands import (
    AddProduct,
    AdministerDose,
    CountLineInput,
    DrawInput,
    ReceivedLineInput,
    ReceiveStock,
    RecordWaste,
    SetPolicy,
    StartCount,
    SubmitCount,
    WasteInput,
)
from ledger.domain.errors import InvalidInput
from ledger.integrity import canonical as canon
from ledger.services import alerts as alert_service
from ledger.services.verify import verify
from tests.api.conftest import build_api
from tests.api.test_clinical import ADDRESS, witnessed
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import BACKENDS, an_hour_ago, count_as_booked
from tests.reports.test_report_access_log import floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

#: Ketamine HCl 100 mg/mL, one 10 mL multiple-dose vial per package (FDA NDC Directory, in
#: csledger's NDC reference).
NDC_100 = "52584-108-00"


def add_100(clinic) -> None:
    services.add_product(clinic.ledger, clinic.admin, AddProduct(NDC_100, "Ketamine HCl injection 100 mg/mL", "7285",
                                                                "III", "injection", "100.00", "10.00"))


def receive_100(clinic, containers: int = 1) -> list[str]:
    return services.receive_stock(clinic.ledger, clinic.nurse, ReceiveStock(
        supplier_id=clinic.supplier_id, invoice_number="INV-100", occurred_at=an_hour_ago() - timedelta(hours=1),
        lines=(ReceivedLineInput(NDC_100, containers, "LOT-100", "2028-06-30"),)))["vial_ids"]


def entry(ledger, seq: int) -> dict:
    with ledger.reading() as conn:
        data = conn.execute(sa.text("SELECT canonical FROM entries WHERE seq = :s"), {"s": seq}).scalar_one()
    return canon.decode(bytes(data))


def stored_ml_left(ledger, vial_id: str) -> str:
    """The stored value itself, as the database prints it (no application rounding between)."""
    with ledger.reading() as conn:
        text = conn.execute(sa.text("SELECT CAST(ml_left AS VARCHAR) FROM vials WHERE vial_id = :v"),
                            {"v": vial_id}).scalar_one()
    return format(Decimal(text).normalize(), "f")


def dose(ops: Ops, vial_id: str, drawn: str, given: str, waste: str | None = None, witness=None):
    at = an_hour_ago()
    return services.administer_dose(ops.ledger, ops.nurse, AdministerDose(
        patient_id=ops.patient_id, prescriber_dea_number=PRESCRIBER_DEA, weight_kg="73.00", ordered_mg_per_kg="0.50",
        draws=(DrawInput(vial_id, drawn),), ml_given=given, started_at=at, ended_at=at + timedelta(minutes=40),
        waste=WasteInput(waste, "syringe into drug disposal container") if waste else None), witness=witness)


@pytest.fixture
def alerted(ledger):
    alert_service.attach_alert_rules(ledger)
    return ledger


def test_a_dose_of_0_365_ml_is_recorded_exactly_with_no_above_order_alert(alerted):
    ops = Ops(alerted)
    add_100(ops)
    [vid] = receive_100(ops)
    res = dose(ops, vid, "0.365", "0.365")
    assert [e["kind"] for e in res["entries"]] == ["dose_administered"]  # no alert_raised
    assert res["ml_given"] == "0.365" and res["reconciled"] is True
    e = entry(alerted, res["entries"][0]["seq"])
    assert (e["ml_drawn"], e["ml_given"], e["mg_given"], e["ordered_mg"]) == ("0.365", "0.365", "36.50", "36.50")
    assert e["draws"][0]["ml"] == "0.365"
    assert per_entry.dose_above_order(e) is None
    assert stored_ml_left(alerted, vid) == "9.635"  # not 9.64 (PostgreSQL) nor 9.63

    # Drawn 1.00 mL, 0.365 given, 0.635 wasted before a witness: reconciled, mg balance exact.
    res = dose(ops, vid, "1.00", "0.365", waste="0.635", witness=ops.nurse2)
    assert [e["kind"] for e in res["entries"]] == ["dose_administered", "dose_wasted"]
    w = entry(alerted, res["entries"][1]["seq"])
    assert (w["ml"], w["mg"]) == ("0.635", "63.50")
    a = entry(alerted, res["entries"][0]["seq"])
    assert (a["ml_drawn"], a["mg_given"]) == ("1.00", "36.50")
    assert Decimal(a["mg_given"]) + Decimal(w["mg"]) == Decimal("1.00") * 100
    assert stored_ml_left(alerted, vid) == "8.635"

    # The 0.37 mL a nurse had to record before: still within half a graduation, no alert.
    res = dose(ops, vid, "0.37", "0.37")
    assert [e["kind"] for e in res["entries"]] == ["dose_administered"]
    assert entry(alerted, res["entries"][0]["seq"])["mg_given"] == "37.00"
    assert stored_ml_left(alerted, vid) == "8.265"

    # Waste recorded later, to the same resolution.
    res = dose(ops, vid, "0.500", "0.365")
    left = services.record_waste(alerted, ops.nurse, RecordWaste(res["administration_id"], "0.135", "sharps container",
                                                                 an_hour_ago() + timedelta(minutes=41)),
                                 witness=ops.nurse2)
    assert left["reconciled"] is True
    assert entry(alerted, left["entries"][0]["seq"])["mg"] == "13.50"
    assert entry(alerted, res["entries"][0]["seq"])["ml_drawn"] == "0.50"  # "0.500" would be another text
    assert stored_ml_left(alerted, vid) == "7.765"

    assert verify(alerted, deep=True).ok, verify(alerted, deep=True).problems


def test_a_fourth_decimal_is_refused_naming_the_field(ledger):
    ops = Ops(ledger)
    add_100(ops)
    [vid] = receive_100(ops)
    with pytest.raises(InvalidInput) as e:
        dose(ops, vid, "0.3655", "0.3655")
    assert (e.value.field, e.value.reason) == ("draws[0].ml", "has more than 3 decimal places")
    with pytest.raises(InvalidInput) as e:
        dose(ops, vid, "0.365", "0.3651")
    assert e.value.field == "ml_given"
    with pytest.raises(InvalidInput) as e:
        dose(ops, vid, "1.00", "0.365", waste="0.6350001", witness=ops.nurse2)
    assert e.value.field == "waste.ml"


def test_a_count_of_an_opened_vial_to_syringe_resolution(ledger):
    ops = Ops(ledger)
    add_100(ops)
    [vid] = receive_100(ops)
    dose(ops, vid, "0.365", "0.365")
    session = services.start_count(ledger, ops.nurse, StartCount(ndcs=(NDC_100,)))["session_id"]
    res = services.submit_count(ledger, ops.nurse, SubmitCount(session, (CountLineInput(NDC_100, 0, 1, "9.635"),),
                                                               an_hour_ago() + timedelta(minutes=50)),
                                second_counter=ops.pharmacist)
    [line] = res["lines"]
    assert (line["counted_ml"], line["expected_ml"], line["difference_ml"], line["discrepancy_id"]) == (
        "9.635", "9.635", "0.00", None)
    with pytest.raises(InvalidInput) as e:
        services.submit_count(ledger, ops.nurse, SubmitCount(session, (CountLineInput(NDC_100, 0, 1, "9.6355"),),
                                                             an_hour_ago()), second_counter=ops.pharmacist)
    assert e.value.field == "lines[0].open_ml"
    # A second count 5 microlitres short opens a discrepancy of exactly that. Issue 20: at the
    # default tolerance (0.10 mL per opened vial) it would be recorded without one; this test is
    # about the discrepancy's exact figure, so the policy here counts opened vials exactly.
    services.set_policy(ledger, ops.manager, SetPolicy(open_count_tolerance_ml="0", reason="exact counts"))
    session = services.start_count(ledger, ops.nurse, StartCount(ndcs=(NDC_100,)))["session_id"]
    res = services.submit_count(ledger, ops.nurse, SubmitCount(session, (CountLineInput(NDC_100, 0, 1, "9.630"),),
                                                               an_hour_ago() + timedelta(minutes=55)),
                                second_counter=ops.pharmacist)
    assert res["lines"][0]["difference_ml"] == "-0.005" and res["lines"][0]["counted_ml"] == "9.63"
    with ledger.reading() as conn:
        d = conn.execute(sa.text("SELECT CAST(difference_ml AS VARCHAR) FROM discrepancies")).scalar_one()
    assert Decimal(d) == Decimal("-0.005")
    assert verify(ledger, deep=True).ok


def test_over_http(ledger):
    api = build_api(ledger)
    add_100(api.clinic)
    [vid] = receive_100(api.clinic)
    pat = api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": ADDRESS},
                          headers=api.headers("nora"))
    assert pat.status_code == 201, pat.text
    body = {"patient_id": pat.json()["patient_id"], "prescriber_dea_number": "FB7654329", "weight_kg": "73.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vid, "ml": "1.00"}], "ml_given": "0.365",
            "started_at": an_hour_ago().isoformat(), "ended_at": an_hour_ago().isoformat(),
            "waste": {"ml": "0.635", "method": "sharps container"}}
    r, _ = witnessed(api, "nora", "/administrations", body, "ned")
    assert r.status_code == 201, r.text
    assert [e["kind"] for e in r.json()["entries"]] == ["dose_administered", "dose_wasted"]
    seq = r.json()["entries"][0]["seq"]
    e = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert (e["ml_given"], e["mg_given"]) == ("0.365", "36.50")
    body.update(draws=[{"vial_id": vid, "ml": "0.365"}], ml_given="0.365")
    del body["waste"]
    r = api.client.post(api.url("/administrations"), json=body, headers=api.headers("nora"))
    assert r.status_code == 201, r.text
    v = api.client.get(api.url(f"/vials/{vid}"), headers=api.headers("pia")).json()
    assert (v["ml_left"], v["mg_left"]) == ("8.635", "863.50")
    stock = api.client.get(api.url("/stock"), headers=api.headers("pia"))
    assert stock.status_code == 200, stock.text
    [p] = [p for p in stock.json()["products"] if p["ndc"] == NDC_100]
    assert p["ml"] == "8.635" and p["lots"][0]["ml"] == "8.635" and p["mg"] == "863.50"
    body["draws"] = [{"vial_id": vid, "ml": "0.0005"}]
    r = api.client.post(api.url("/administrations"), json=body, headers=api.headers("nora"))
    assert r.status_code == 422 and "has more than 3 decimal places" in r.text and "draws[0].ml" in r.text, r.text
    assert verify(ledger, deep=True).ok



def test_reports_print_fine_volumes_and_rebuild_byte_for_byte(floor, monkeypatch):  # noqa: F811
    """The administration log, the vial history, the audit and the waste log print 0.365 mL as
    recorded, and ``verify-report`` rebuilds each byte for byte (reports of older data print
    what they printed: ``reports.fmt.volume`` is ``amount`` for every 2-decimal volume)."""
    import io

    from pypdf import PdfReader

    from reports import layout
    from reports.base import build_report
    from reports.verify import verify_report
    from tests.api.conftest import PATIENT_KEY
    from tests.conftest import DEA

    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)
    api = floor
    add_100(api.clinic)
    [vid] = receive_100(api.clinic)
    pat = api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": ADDRESS},
                          headers=api.headers("nora"))
    body = {"patient_id": pat.json()["patient_id"], "prescriber_dea_number": "FB7654329", "weight_kg": "73.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vid, "ml": "1.00"}], "ml_given": "0.365",
            "started_at": an_hour_ago().isoformat(), "ended_at": an_hour_ago().isoformat(),
            "waste": {"ml": "0.635", "method": "sharps container"}}
    r, _ = witnessed(api, "nora", "/administrations", body, "ned")
    assert r.status_code == 201, r.text
    count_as_booked(api.ledger, api.clinic.nurse, api.clinic.nurse2)  # the audit ends at a count (issue 20)
    for kind, params, figure in (("administrations", None, '"ml_given":"0.365"'), ("vial", {"vial": vid}, '"ml_left":"9.00"'),
                                 ("audit", None, '"0.365"'), ("waste", None, '"ml":"0.635"')):
        pdf, _ = build_report(api.ledger, kind, DEA, *api.period, params=params)
        data = PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0].decode()
        assert figure in data, (kind, data[:400])
        result = verify_report(api.ledger, pdf)
        assert result.ok, (kind, result.problems)
    pdf, _ = build_report(api.ledger, "administrations", DEA, *api.period)
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "0.365 mL" in text and "0.635 mL" in text and "36.50 mg" in text


def test_an_opened_vial_at_the_initial_inventory_to_syringe_resolution(ledger):
    from tests.clinical.test_first_puncture import inventory, opened

    api = build_api(ledger)
    punctured = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    r = inventory(api, opened(ml="6.0005", first_punctured_on=punctured))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items[0].ml", r.text
    r = inventory(api, opened(ml="6.125", first_punctured_on=punctured))
    assert r.status_code == 201, r.text
    [vid] = r.json()["vial_ids"]
    assert api.client.get(api.url(f"/vials/{vid}"), headers=api.headers("pia")).json()["ml_left"] == "6.125"
    assert stored_ml_left(ledger, vid) == "6.125"
    assert verify(ledger, deep=True).ok
