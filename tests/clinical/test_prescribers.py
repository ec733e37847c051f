"""Prescribers are checked (issue 19), over HTTP as a clinic meets them, on SQLite and PostgreSQL.

A manager or administrator registers a prescriber (``POST /prescribers``: a practitioner's DEA
number, in the clinic's state, schedules with 3 or 3N, not expired, a state licence of the
clinic's state); a nurse cannot. An administration must name a registered prescriber whose
registration has not expired on the day of the dose, and copies the prescriber's name; the
administration log prints name and DEA number; ``verify --deep`` passes, and names an entry forced
in by hand that breaks the rule (a distributor registered as prescriber, a dose naming an
unregistered prescriber or another name than the registered one).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from io import BytesIO

import pytest
from pypdf import PdfReader

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import InventoryItemInput, TakeInventory
from ledger.domain.prescribers import order_refusal
from ledger.integrity.canonical import format_time
from ledger.services.common import product_of_vial
from ledger.services.verify import verify
from ledger.storage.store import Ledger, make_engine, migrate, utcnow
from reports.base import build_report
from tests.api.conftest import build_api, entry_count
from tests.conftest import BACKENDS, DEA, KETAMINE_50, PRESCRIBERS, clinic_today, fresh_database_url
from tests.integrity.test_rules_replay import force, sig

DISTRIBUTOR = "RP1234563"  # a distributor's number, check digit valid
UNREGISTERED = "AB7654329"  # a practitioner's number nobody registered here
GALE = "GD2468139"  # registered in these tests
ADDRESS = {"street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}


class LedgerClock:
    """The ledger's clock: real time plus an offset a test moves forward (a registration expires)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self):
        return utcnow() + self.offset


@pytest.fixture(params=BACKENDS)
def world(request, tmp_path):
    urls = fresh_database_url(request.param, tmp_path)
    url = next(urls)
    engine = make_engine(url)
    migrate(engine)
    clock = LedgerClock()
    ledger = Ledger(engine, clock=clock)
    api = build_api(ledger)
    yield api, clock
    ledger.dispose()
    next(urls, None)  # drops the PostgreSQL database


def prescriber(dea=GALE, **kw) -> dict:
    return {"name": "Dr. Gale Prescriber", "dea_number": dea, "registration_state": "TX",
            "schedules": ["4", "3N", "2N", "2"], "expires_on": (clinic_today() + timedelta(days=400)).isoformat(),
            "state_license_number": "TX-Q77120", "state_license_state": "TX", **kw}


def register(api, body: dict, user: str = "morgan"):
    return api.client.post(api.url("/prescribers"), json=body, headers=api.headers(user, **api.key()))


def floor(api, clock) -> tuple[list[str], str]:
    """Sealed vials from the initial inventory, and a registered patient."""
    inv = services.take_inventory(api.ledger, api.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", clock() - timedelta(hours=2),
        (InventoryItemInput(KETAMINE_50, "KA2611", "2028-06-30", sealed=True, containers=3),)), witness=api.clinic.nurse)
    pat = api.client.post(api.url("/patients"), json={"name": "Jordan Example", "address": ADDRESS},
                          headers=api.headers("nora"))
    assert pat.status_code == 201, pat.text
    return inv["vial_ids"], pat.json()["patient_id"]


def dose(api, clock, patient: str, vial: str, dea: str):
    at = (clock() - timedelta(minutes=30)).isoformat()
    body = {"patient_id": patient, "prescriber_dea_number": dea, "weight_kg": "80.00", "ordered_mg_per_kg": "0.50",
            "draws": [{"vial_id": vial, "ml": "0.80"}], "ml_given": "0.80", "started_at": at, "ended_at": at}
    return api.client.post(api.url("/administrations"), json=body, headers=api.headers("nora", **api.key()))


def refused(r, field: str, status: int = 422) -> str:
    assert r.status_code == status, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.text
    return r.json()["detail"]


def test_a_manager_registers_and_renews_a_prescriber_a_nurse_cannot(world):
    api, _ = world
    before = entry_count(api)
    r = register(api, prescriber(), user="nora")
    assert r.status_code == 403 and r.json()["type"].endswith("/role-required")
    assert entry_count(api) == before
    staff = api.client.get(api.url("/staff"), headers=api.headers("morgan")).json()
    dana = next(s["staff_id"] for s in staff if s["printed_name"] == "Dr. Dana Prescriber")
    nurse = next(s["staff_id"] for s in staff if s["printed_name"] == "Nora Nurse")
    refused(register(api, prescriber(staff_id=nurse)), "staff_id")  # not a prescriber
    assert register(api, prescriber(staff_id="S999")).status_code == 404
    first = register(api, prescriber(staff_id=dana))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["command"] == "register_prescriber" and body["supersedes_seq"] is None
    assert body["schedules"] == ["2", "2N", "3N", "4"]  # DEA's order, whatever order they were typed in
    seq = body["entries"][0]["seq"]
    entry = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert entry["kind"] == "prescriber_registered" and entry["staff_id"] == dana
    assert [(s["printed_name"], s["meaning"]) for s in entry["signatures"]] == [("Morgan Manager", "performed")]
    # A renewal: the same number again (by the administrator); the projection keeps the latest.
    later = (clinic_today() + timedelta(days=1200)).isoformat()
    renewed = register(api, prescriber(expires_on=later, staff_id=dana), user="avery")
    assert renewed.status_code == 201 and renewed.json()["supersedes_seq"] == seq, renewed.text
    listed = api.client.get(api.url("/prescribers"), headers=api.headers("nora"))
    assert listed.status_code == 200
    rows = {p["dea_number"]: p for p in listed.json()}
    assert set(rows) == {GALE, *PRESCRIBERS}
    assert rows[GALE]["expires_on"] == later and rows[GALE]["active"] is True
    assert rows[GALE]["registered_seq"] == renewed.json()["entries"][0]["seq"]
    assert verify(api.ledger, deep=True).ok


def test_each_refusal_names_its_field_and_records_nothing(world):
    api, clock = world
    before = entry_count(api)
    assert "not a practitioner" in refused(register(api, prescriber(DISTRIBUTOR)), "dea_number")
    refused(register(api, prescriber(dea_number="GD2468138")), "dea_number")  # check digit
    assert "TX" in refused(register(api, prescriber(registration_state="CO")), "registration_state")
    refused(register(api, prescriber(state_license_state="CO")), "state_license_state")
    assert "3 or 3N" in refused(register(api, prescriber(schedules=["2", "4", "5"])), "schedules")
    yesterday = (clinic_today() - timedelta(days=1)).isoformat()
    refused(register(api, prescriber(expires_on=yesterday)), "expires_on")
    assert entry_count(api) == before
    # Administrations: a distributor's number, an unregistered one, then an expired registration.
    vials, patient = floor(api, clock)
    before = entry_count(api)
    assert "not a practitioner" in refused(dose(api, clock, patient, vials[0], DISTRIBUTOR), "prescriber_dea_number")
    assert "not a registered prescriber" in refused(dose(api, clock, patient, vials[0], UNREGISTERED),
                                                    "prescriber_dea_number")
    assert entry_count(api) == before
    today = clinic_today(clock())
    assert register(api, prescriber(expires_on=today.isoformat())).status_code == 201
    assert dose(api, clock, patient, vials[0], GALE).status_code == 201  # valid through its expiry day
    clock.offset = timedelta(days=2)
    before = entry_count(api)
    assert "expired" in refused(dose(api, clock, patient, vials[1], GALE), "prescriber_dea_number")
    assert entry_count(api) == before
    # The renewed registration lets the dose be recorded.
    assert register(api, prescriber(expires_on=(today + timedelta(days=700)).isoformat())).status_code == 201
    assert dose(api, clock, patient, vials[1], GALE).status_code == 201
    assert verify(api.ledger, deep=True).ok


def test_a_registration_must_cover_the_products_schedule():
    """The service's rule, as the replay runs it: Schedule III needs 3 or 3N, IV needs 4."""
    reg = {"name": "Dr. Gale Prescriber", "schedules": ["3N"], "expires_on": "2030-01-31"}
    on = date(2029, 6, 1)
    assert order_refusal(GALE, reg, on, "III") is None
    assert "not 4" in order_refusal(GALE, reg, on, "IV")
    assert "expired on 2030-01-31" in order_refusal(GALE, reg, date(2030, 2, 1), "III")
    assert order_refusal(GALE, reg, date(2030, 1, 31), "III") is None


def test_the_dose_copies_the_name_and_the_log_prints_it(world):
    api, clock = world
    vials, patient = floor(api, clock)
    assert register(api, prescriber(), user="avery").status_code == 201  # the administrator may too
    r = dose(api, clock, patient, vials[0], GALE)
    assert r.status_code == 201, r.text
    seq = r.json()["entries"][0]["seq"]
    entry = json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])
    assert (entry["prescriber_dea_number"], entry["prescriber_name"]) == (GALE, "Dr. Gale Prescriber")
    today = clinic_today(clock())
    pdf, data = build_report(api.ledger, "administrations", DEA, (today - timedelta(days=1)).isoformat(),
                             today.isoformat())
    (row,) = data["figures"]["rows"]
    assert (row["prescriber_name"], row["prescriber_dea_number"]) == ("Dr. Gale Prescriber", GALE)
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(BytesIO(pdf)).pages)
    assert f"Dr. Gale Prescriber DEA {GALE}" in text or ("Dr. Gale" in text and f"DEA {GALE}" in text), text
    report = verify(api.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]


def _distributor_as_prescriber(api, ctx):
    return ev.PrescriberRegistered(dea_number=DISTRIBUTOR, name="Gulf Medical Supply", registration_state="TX",
                                   schedules=("3N",), expires_on=date(2031, 1, 31), state_license_number="X",
                                   state_license_state="TX"), [sig(api.clinic.admin, "performed", ctx.now)]


def _forged_dose(dea: str, name: str):
    def make(api, ctx):
        vial = next(v for v in ctx.view.select("vials", registrant=DEA) if v["state"] == "sealed")
        at = ctx.now - timedelta(minutes=30)
        patient = ctx.view.select("patients", registrant=DEA)[0]
        draw = ev.Draw(vial_id=vial["vial_id"], product=product_of_vial(ctx, vial), lot=vial["lot"],
                       expiry=date.fromisoformat(vial["expiry"]), ml=Decimal("1.00"), opened_vial=True,
                       beyond_use_date=clinic_today() + timedelta(days=28))
        return ev.DoseAdministered(
            administration_id=f"A{ctx.next_seq}", patient_id=patient["patient_id"],
            patient_commitment=patient["commitment"], prescriber_dea_number=dea, weight_kg=Decimal("80.00"),
            ordered_mg_per_kg=Decimal("0.50"), ordered_mg=Decimal("40.00"), draws=(draw,), ml_drawn=Decimal("1.00"),
            ml_given=Decimal("1.00"), mg_given=Decimal("50.00"), started_at=format_time(at), ended_at=format_time(at),
            prescriber_name=name), [sig(api.clinic.nurse, "performed", ctx.now)]
    return make


@pytest.mark.parametrize("make, rule, names", [
    (_distributor_as_prescriber, "prescriber-practitioner", "not a practitioner"),
    (_forged_dose(UNREGISTERED, "Dr. Nobody"), "prescriber-registered", "not a registered prescriber"),
    (_forged_dose(DEA, "Dr. Someone Else"), "prescriber-registered", "registered as 'Dr. Alex Prescriber'"),
], ids=["distributor_registered", "unregistered_prescriber", "other_name"])
def test_an_entry_forced_in_by_hand_fails_verify_deep(world, make, rule, names):
    api, clock = world
    floor(api, clock)
    assert verify(api.ledger, deep=True).ok
    seq = force(api.ledger, lambda ctx: make(api, ctx))
    (problem,) = verify(api.ledger, deep=True).problems
    assert problem.seq == seq and f"breaks rule {rule}:" in str(problem) and names in str(problem), str(problem)
