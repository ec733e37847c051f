"""``csledger demo``: a deterministic demo data set built through the same services as
everything else, as the demo's seeded staff, then ``verify --deep``.

Signatures (issue 17): right after a clinic is registered its administrator enrols the root
signing key (a password key under ``DEMO_PASSWORD``), every seeded person's password key is
enrolled with the administrator's approval, and from then on each of them signs with their own
key (``auth_method: password_key``); only the registration before the root is the console's. The
demo also gives each of them a login (no TOTP secret yet: ``csledger staff demo-logins`` creates
and prints those) holding the same wrapped key, so the API signs as them after they sign in.

The demo simulates eight weeks of two clinics (Austin and Denver), so its ledger runs on a
simulated clock: each command is recorded a few minutes after the event it describes. Per
location: six staff, a policy with clinic hours, twenty patients on PTSD (six infusions over two
weeks) or depression (six over three weeks) courses at 0.5 mg/kg, receipts in cartons scanned as GS1
DataMatrix (GTIN + serial identify each carton; a carton of 10 vials is opened before a witness,
and each vial is its carton's id + position), a blind two-person count every clinic morning, and
a few honest discrepancies: a dose given during downtime and entered late (documentation error),
a spill, a missing vial (theft or loss, reported on Form 106 with its deadlines). Short-dated
stock expires and is destroyed with two witnesses (Form 41: a sealed carton as one full package).
Issue 19: some patients get their infusion diluted in a 100 mL bag (prepared, infused as the pump
reports it, the remainder wasted before a witness; one infusion per location stops early), and
one patient per location is on esketamine (Spravato) nasal spray: kits of two 28 mg devices,
opened before a witness, two sessions a week with at least 2 hours of observation (REMS).

The physical truth the counters see is the book plus what the script says went unrecorded, so
every discrepancy is one the demo caused on purpose and resolves.
"""

from __future__ import annotations

import math
import random
import zoneinfo
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from api.cli.main import DEFAULT_ORIGINS, DEFAULT_RP_ID
from ledger import services
from ledger.domain import gs1
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    AdministerDose,
    BreakageLineInput,
    CountLineInput,
    DestroyStock,
    DrawInput,
    EnrollStaff,
    InfusePreparation,
    InventoryItemInput,
    MakePreparation,
    OpenPackage,
    ReceivedLineInput,
    ReceiveStock,
    RecordBreakage,
    RecordEsketamineSession,
    RecordWaste,
    RegisterPatient,
    RegisterPrescriber,
    RegisterRegistrant,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    SetPolicy,
    StartCount,
    SubmitCount,
    TakeInventory,
    WasteInput,
    WastePreparation,
)
from ledger.domain.errors import Conflict
from ledger.domain.identifiers import parse_ndc
from ledger.domain.principal import AuthMethod, Principal
from ledger.integrity.staff_signatures import KdfParams, PasswordKeySigner
from ledger.services import stock
from ledger.services.credentials import enrol_password_key
from ledger.services.report_key import certify_report_key
from ledger.services.verify import verify
from ledger.settings import Settings
from ledger.storage.log import WitnessEntry, attach, log_keys
from ledger.storage.patient_keys import PatientKeys, generate_key_file
from ledger.storage.store import Ledger, migrate, tree_size, utcnow
from witness.server import DEFAULT_PORT, Witness, serve_in_thread

if TYPE_CHECKING:
    from api.http.auth import Authenticator

LOCATIONS = [
    ("AB1234563", "Calm Waters Ketamine Clinic - Austin", AddressInput("100 Harbor Way", "Austin", "TX", "78701"), "America/Chicago"),
    ("FB7654329", "Calm Waters Ketamine Clinic - Denver", AddressInput("2200 Larimer St", "Denver", "CO", "80205"), "America/Denver"),
]
#: In order of enrolment: Avery, the only administrator, enrols the staff alone, the manager last
#: (issue 15: once a second manager or administrator exists, every enrolment and role grant needs
#: their approval). Had the manager come first and approved the others, every entry the manager
#: co-signs with them in the demo's eight weeks would raise ``witness_enrolled_by_actor``: a
#: manager enrolled alone by the administrator is no independent approver.
STAFF = [("Nora Nurse", "nora", ("nurse",)), ("Ned Nurse", "ned", ("nurse",)), ("Pia Pharmacist", "pia", ("pharmacist",)),
         ("Casey Compliance", "casey", ("compliance_officer",)), ("Dr. Dana Prescriber", "dana", ("prescriber",)),
         ("Morgan Manager", "morgan", ("manager",))]
#: Real NDCs with their true figures (csledger's NDC reference, ledger/domain/ndc_reference.csv):
#: Mylan's ketamine 50 mg/mL in 10 mL vials, and Par's Ketalar 10 mg/mL in 20 mL vials, each
#: a carton of 10 vials by FDA's NDC Directory.
PRODUCTS = [("67457-0001-10", "Ketamine HCl injection 50 mg/mL", "50.00", "10.00"),
            ("42023-0113-10", "Ketalar (ketamine HCl injection) 10 mg/mL", "10.00", "20.00")]
K50, K10 = PRODUCTS[0][0], PRODUCTS[1][0]
K50_KEY, K10_KEY = parse_ndc(K50).key, parse_ndc(K10).key
#: Spravato 56 mg kit: two nasal-spray devices of 28 mg (0.20 mL at 140 mg/mL), kit NDC
#: 50458-028-02, device NDC 50458-028-00 (FDA's NDC Directory, in csledger's reference).
SPRAVATO = "50458-0028-02"
SPRAVATO_KEY = parse_ndc(SPRAVATO).key
#: K50's 10-digit NDC as its carton's GTIN carries it (FDA prints it 67457-001-10, 5-3-2).
K50_NDC10 = "6745700110"
#: Dr. Dana Prescriber's DEA registration at each location's state (one per state, 21 CFR
#: 1301.12; fictitious numbers with valid check digits) and state licence (issue 19).
PRESCRIBER_DEAS = {"TX": ("BP2345672", "TX-Q4821"), "CO": ("BP2345684", "CO-DR.0061234")}
FIRST = ["Alex", "Blake", "Casey", "Drew", "Emery", "Finley", "Gray", "Harper", "Indy", "Jordan", "Kai", "Logan",
         "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor"]
LAST = ["Rivera", "Chen", "Okafor", "Novak", "Haddad", "Silva", "Kowalski", "Nguyen", "Moreau", "Lindqvist"]
STREETS = ["Cedar St", "Maple Ave", "Birch Rd", "Willow Ln", "Aspen Ct", "Juniper Dr"]
WEEKS = 8
MG_PER_KG = Decimal("0.50")
#: The password of every demo login and the key it wraps (demo data only).
DEMO_PASSWORD = "calm waters demo 2026"
#: argon2id cost of the demo's password keys: production's, as a deployment's would be.
DEMO_KDF = KdfParams()


class SimClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _patient_key(settings: Settings) -> PatientKeys:
    """The configured patient key; the demo creates the key file when there is none."""
    if not settings.patient_key and not Path(settings.patient_key_file).exists():
        generate_key_file(Path(settings.patient_key_file))
    return PatientKeys.from_settings(settings)


class _Location:
    """One clinic's script: its staff, patients, course schedule and the scripted incidents."""

    def __init__(self, ledger: Ledger, clock: SimClock, keys: PatientKeys, rng: random.Random, dea: str, name: str,
                 addr: AddressInput, tz: str, start: date):
        self.ledger, self.clock, self.keys, self.rng, self.dea = ledger, clock, keys, rng, dea
        self.tz = zoneinfo.ZoneInfo(tz)
        self.start = start
        # Seq 0 signed ``demo_seed``: what marks the registrant as the demo's (``staff demo-logins``,
        # and the replay's ``recorded-at-order`` rule, which the script's clock does not keep).
        res = services.register_registrant(ledger, RegisterRegistrant(dea, name, addr, tz, "Avery Admin", "avery"),
                                           bootstrap_method=AuthMethod.DEMO_SEED)
        #: Wrapped password-key records by username, stored with the logins (``give_logins``).
        self.key_records: dict[str, dict] = {}
        # The root: Avery's own password key, self-signed, before anything else is recorded.
        self.admin = self._with_key("avery", Principal(dea, res["admin_staff_id"], "Avery Admin", AuthMethod.DEMO_SEED),
                                    rp_id=DEFAULT_RP_ID, origins=DEFAULT_ORIGINS)
        self.people: dict[str, Principal] = {}
        self.unrecorded: dict[str, Decimal] = {}  # physical minus book, per NDC, until fixed
        self.pending_late: list[tuple[datetime, AdministerDose]] = []
        self.stats = {"infusions": 0, "counts": 0, "discrepancies": 0, "late_entries": 0, "bags": 0,
                      "cartons_opened": 0, "spravato_sessions": 0}
        self.downtime_done = False
        self.bag_patients: set[str] = set()  # issue 19: infused from a diluted 100 mL bag
        self.stopped_early_done = False
        self.kits: list[str] = []  # Spravato kits received, still sealed

    def _with_key(self, username: str, person: Principal, *, approver: Principal | None = None,
                  rp_id: str | None = None, origins: tuple[str, ...] = ()) -> Principal:
        """Enrol ``person``'s password key under ``DEMO_PASSWORD``; returns them holding its signer."""
        res, record, private = enrol_password_key(self.ledger, person, DEMO_PASSWORD, params=DEMO_KDF,
                                                  approver=approver, rp_id=rp_id, origins=origins)
        self.key_records[username] = record
        return replace(person, signer=PasswordKeySigner(private, res["credential_id"]))

    def at(self, day: date, hh: int, mm: int = 0) -> datetime:
        return datetime.combine(day, time(hh, mm), self.tz).astimezone(UTC)

    def setup(self) -> None:
        ledger, admin = self.ledger, self.admin
        self.clock.now = self.at(self.start, 7, 0)
        for printed, user, roles in STAFF:
            # Two people once there is a second manager (none here before the last one: see STAFF).
            approver = self.people.get("morgan")
            sid = services.enroll_staff(ledger, admin, EnrollStaff(printed, user, roles), approver=approver)["staff_id"]
            # Their key, approved by Avery (never by its owner: once Morgan holds a key, a new
            # key needs someone other than its owner, and Avery is that person for everyone).
            self.people[user] = self._with_key(user, Principal(self.dea, sid, printed, AuthMethod.DEMO_SEED),
                                               approver=admin)
        p = self.people
        for ndc, pname, strength, container in PRODUCTS:
            # units per carton and the unit's NDC come from csledger's NDC reference (issue 19)
            services.add_product(ledger, admin, AddProduct(ndc, pname, "7285", "III", "injection", strength, container))
        services.add_product(ledger, admin, AddProduct(SPRAVATO, "Spravato (esketamine) nasal spray 28 mg device, "
                                                       "kit of 2", "7285", "III", "nasal spray", "140.00", "0.20"))
        self.supplier = services.add_supplier(ledger, admin, AddSupplier(
            "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
            registration_expires_on="2028-05-31", schedules=("2", "2N", "3", "3N", "4", "5"),
            authorized_trading_partner=True))["supplier_id"]
        # The prescriber every infusion names, registered with their DEA registration (issue 19).
        state = next(a.state for dea, _, a, _ in LOCATIONS if dea == self.dea)
        self.prescriber_dea, licence = PRESCRIBER_DEAS[state]
        services.register_prescriber(ledger, admin, RegisterPrescriber(
            "Dr. Dana Prescriber", self.prescriber_dea, state, ("2", "2N", "3", "3N", "4", "5"),
            (self.start + timedelta(days=730)).isoformat(), licence, state, p["dana"].staff_id))
        weekdays = {d: ("08:00", "18:00") for d in ("mon", "tue", "wed", "thu", "fri")}
        services.set_policy(ledger, p["morgan"], SetPolicy(clinic_hours=weekdays, reason="opening policy"))
        self.clock.now = self.at(self.start, 7, 40)
        services.take_inventory(ledger, p["pia"], TakeInventory(
            "initial", "opening_of_business", self.at(self.start, 7, 30), items=(
                InventoryItemInput(K50, "KA2601", "2028-03-31", sealed=True, containers=4),
                InventoryItemInput(K50, "KA2601", "2028-03-31", sealed=False, ml="6.00", first_punctured_on="2026-08-28"),
            )), witness=p["nora"])  # issue 20: every inventory is witnessed
        # twenty patients, each on a course of six infusions
        self.courses: dict[date, list[tuple[str, int]]] = {}
        for i in range(20):
            first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
            addr = AddressInput(f"{self.rng.randint(10, 9999)} {self.rng.choice(STREETS)}", "Austin" if self.dea == LOCATIONS[0][0]
                                else "Denver", "TX" if self.dea == LOCATIONS[0][0] else "CO",
                                "78704" if self.dea == LOCATIONS[0][0] else "80206")
            # issue 21: a date of birth, the pick's second identifier; from i, not the random
            # stream, so every later draw of the demo (and what the README says of it) is unchanged
            born = date(1952 + (i * 7) % 50, 1 + (i * 5) % 12, 1 + (i * 11) % 28).isoformat()
            pid = services.register_patient(ledger, p["nora"], RegisterPatient(f"{first} {last}", addr, born),
                                            keys=self.keys)["patient_id"]
            if i % 4 == 1:  # issue 19: their infusion is diluted in a 100 mL bag
                self.bag_patients.add(pid)
            weight = self.rng.randint(52, 118)
            begin = self.start + timedelta(days=1 + self.rng.randint(0, 7 * (WEEKS - 3)))
            ptsd = i % 2 == 0
            # PTSD: six infusions over two weeks (Mon/Wed/Fri); depression: six over three weeks (Tue/Fri)
            pattern = (0, 2, 4) if ptsd else (1, 4)
            day, given = begin, 0
            while given < 6:
                if day.weekday() in pattern:
                    self.courses.setdefault(day, []).append((pid, weight))
                    given += 1
                day += timedelta(days=1)
        # issue 19: one patient on esketamine (Spravato) nasal spray, 56 mg twice a week for two
        # weeks (the induction phase), in the clinic under REMS monitoring
        addr = AddressInput("41 Quarry Rd", "Austin" if self.dea == LOCATIONS[0][0] else "Denver",
                            "TX" if self.dea == LOCATIONS[0][0] else "CO",
                            "78704" if self.dea == LOCATIONS[0][0] else "80206")
        self.spravato_patient = services.register_patient(ledger, p["nora"], RegisterPatient(
            f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}", addr, "1979-06-14"), keys=self.keys)["patient_id"]
        self.spravato_days = {self.start + timedelta(days=d) for d in (15, 18, 22, 25)}  # Tue/Fri, weeks 3 and 4

    # --- daily work ---------------------------------------------------------------------------

    def _usable_vials(self, day: date) -> list[dict]:
        vials = [v for v in stock.vials(self.ledger, self.dea, ndc_key=K50_KEY) if v["ml_left"] > 0
                 and v["state"] in ("open", "sealed") and not v.get("packaged")  # a sealed carton's vials wait
                 and date.fromisoformat(v["expiry"]) >= day
                 and (v["beyond_use_date"] is None or date.fromisoformat(v["beyond_use_date"]) >= day)]
        # opened vials first (use them up before their beyond-use date), then sealed by expiry
        return sorted(vials, key=lambda v: (v["state"] != "open", v["beyond_use_date"] or "", v["expiry"], v["added_seq"],
                                            v["vial_id"]))

    def _draws(self, day: date, ml: Decimal) -> tuple[DrawInput, ...]:
        draws, need = [], ml
        for v in self._usable_vials(day):
            take = min(need, v["ml_left"])
            draws.append(DrawInput(v["vial_id"], str(take)))
            need -= take
            if need == 0:
                return tuple(draws)
        raise RuntimeError(f"demo ran out of stock at {self.dea} on {day}")

    def infusions(self, day: date) -> None:
        p, rng = self.people, self.rng
        nurses = [p["nora"], p["ned"]]
        today = self.courses.get(day, [])
        for slot, (pid, weight) in enumerate(today):
            start = self.at(day, 9, 0) + timedelta(minutes=50 * slot)
            end = start + timedelta(minutes=40)
            given = (Decimal(weight) * MG_PER_KG / 50).quantize(Decimal("0.01"))  # mL of 50 mg/mL
            drawn = Decimal(math.ceil(given * 10) + 1) / 10
            nurse, witness = nurses[slot % 2], nurses[(slot + 1) % 2]
            if pid in self.bag_patients:
                self.bag(day, pid, weight, given, start, nurse, witness)
                continue
            waste_now = rng.random() < 0.85
            cmd = AdministerDose(pid, self.prescriber_dea, f"{weight}.00", str(MG_PER_KG), self._draws(day, drawn),
                                 str(given), start, end,
                                 waste=WasteInput(str(drawn - given), "expelled into drug disposal container")
                                 if waste_now else None)
            if (self.dea == LOCATIONS[0][0] and day >= self.start + timedelta(days=15) and not self.downtime_done
                    and slot == len(today) - 1):
                # downtime at the day's last infusion: charted on paper, entered after the next count
                self.downtime_done = True
                self.unrecorded[K50] = self.unrecorded.get(K50, Decimal(0)) - drawn
                self.pending_late.append((end, cmd))
                continue
            self.clock.now = end + timedelta(minutes=rng.randint(2, 12))
            res = services.administer_dose(self.ledger, nurse, cmd, witness=witness if waste_now else None)
            self.stats["infusions"] += 1
            if not waste_now:  # waste recorded a little later, still witnessed
                self.clock.now += timedelta(minutes=15)
                services.record_waste(self.ledger, nurse, RecordWaste(res["administration_id"], str(drawn - given),
                                                                      "expelled into drug disposal container",
                                                                      end + timedelta(minutes=10)), witness=p["pia"])

    def bag(self, day: date, pid: str, weight: int, given: Decimal, start: datetime, nurse: Principal,
            witness: Principal) -> None:
        """Issue 19: the dose drawn into a 100 mL bag of saline, infused as the pump reports it
        (bags are overfilled: never "bag minus remainder"), the remainder wasted before a witness.
        The first bag infusion on or after day 10 at each location stops early."""
        p = self.people
        prepared = start - timedelta(minutes=20)
        self.clock.now = prepared + timedelta(minutes=8)
        bag = services.make_preparation(self.ledger, nurse, MakePreparation(
            pid, self.prescriber_dea, f"{weight}.00", str(MG_PER_KG), self._draws(day, given), "0.9% sodium chloride",
            "100.00", "bag", str(Decimal("100.00") + given), prepared))
        early = not self.stopped_early_done and day >= self.start + timedelta(days=10)
        infused = Decimal("55.00") if early else Decimal("100.00")
        end = start + (timedelta(minutes=22) if early else timedelta(minutes=40))
        self.clock.now = end + timedelta(minutes=5)
        services.infuse_preparation(self.ledger, nurse, InfusePreparation(
            bag["preparation_id"], str(infused), start, end,
            stop_reason="patient asked to stop (dissociation); vital signs stable" if early else None))
        self.stopped_early_done = self.stopped_early_done or early
        self.clock.now = end + timedelta(minutes=12)
        services.waste_preparation(self.ledger, nurse, WastePreparation(
            bag["preparation_id"], "bag emptied into drug disposal container", end + timedelta(minutes=8),
            ml_remaining=str(Decimal("100.00") + given - infused)), witness=witness if witness != nurse else p["pia"])
        self.stats["infusions"] += 1
        self.stats["bags"] += 1

    def spravato(self, day: date) -> None:
        """Issue 19: a Spravato 56 mg session: a kit of two devices opened before a witness, the
        patient self-administers under a nurse's direct observation, then at least 2 hours of
        monitoring (REMS) before the session is recorded."""
        p = self.people
        kit = self.kits.pop(0)
        given_at = self.at(day, 13, 0)
        self.clock.now = given_at - timedelta(minutes=8)
        opened = services.open_package(self.ledger, p["nora"], OpenPackage(kit, 2, given_at - timedelta(minutes=10)),
                                       witness=p["pia"])
        self.stats["cartons_opened"] += 1
        self.clock.now = given_at + timedelta(hours=2, minutes=20)
        services.record_esketamine_session(self.ledger, p["nora"], RecordEsketamineSession(
            self.spravato_patient, self.prescriber_dea, tuple(opened["units_found"]), "56.00", given_at,
            given_at + timedelta(minutes=5), given_at + timedelta(hours=2, minutes=10)))
        self.stats["spravato_sessions"] += 1

    def count(self, day: date) -> list[str]:
        """Opening count, blind, by the two nurses: they find the physical truth."""
        p = self.people
        self.clock.now = self.at(day, 8, 5)
        s = services.start_count(self.ledger, p["nora"], StartCount())
        lines = []
        for ndc, key in ((K50, K50_KEY), (K10, K10_KEY), (SPRAVATO, SPRAVATO_KEY)):
            # what the counters see, vial by vial: a full, never-punctured vial is sealed; any other
            # vial with something in it is open (a sealed vial a spill took part of is open too)
            on_hand = [v for v in stock.vials(self.ledger, self.dea, ndc_key=key)
                       if v["state"] in ("sealed", "open", "quarantined") and v["ml_left"] > 0]
            full = [v for v in on_hand if v["opened_at"] is None and v["ml_left"] == v["container_ml"]]
            sealed, opened = len(full), len(on_hand) - len(full)
            open_ml = sum((v["ml_left"] for v in on_hand if v not in full), Decimal(0))
            delta = self.unrecorded.get(ndc, Decimal(0))
            container = Decimal(PRODUCTS[0][3] if ndc == K50 else PRODUCTS[1][3] if ndc == K10 else "0.20")
            while delta <= -container and sealed > 0:  # a whole sealed vial is physically missing
                sealed -= 1
                delta += container
            open_ml += delta
            if open_ml < 0 and sealed > 0:  # the loss came out of a sealed vial, which is open now
                sealed, opened, open_ml = sealed - 1, opened + 1, open_ml + container
            lines.append(CountLineInput(ndc, sealed, opened if open_ml > 0 else 0, str(open_ml) if open_ml > 0 else "0.00"))
        self.clock.now = self.at(day, 8, 20)
        res = services.submit_count(self.ledger, p["nora"], SubmitCount(s["session_id"], tuple(lines), self.at(day, 8, 15)),
                                    second_counter=p["ned"])
        self.stats["counts"] += 1
        self.stats["discrepancies"] += len(res["discrepancy_ids"])
        return res["discrepancy_ids"]

    def resolve(self, day: date, discrepancies: list[str]) -> None:
        p = self.people
        for d in discrepancies:
            self.clock.now = self.at(day, 8, 45)
            if self.pending_late:
                # the paper-charted infusion is entered now (late, with its reason) and fixes the count
                end, cmd = self.pending_late.pop()
                self.clock.now = end + timedelta(hours=26)
                late = AdministerDose(**{**cmd.__dict__, "late_reason": "EHR downtime; charted on the paper downtime log"})
                res = services.administer_dose(self.ledger, p["nora"], late, witness=p["ned"] if cmd.waste else None)
                self.stats["late_entries"] += 1
                self.unrecorded[K50] = Decimal(0)
                self.clock.now += timedelta(minutes=10)
                services.resolve_discrepancy(self.ledger, p["morgan"], ResolveDiscrepancy(
                    d, "documentation_error", "infusion given during EHR downtime was entered late from the paper log",
                    fixed_by_seq=res["entries"][0]["seq"]), witness=p["pia"])
            elif self.incident == "spill":
                # issue 15: the spill (before the count) is recorded by the two nurses who saw it,
                # then the resolution points at it; the second person is Pia (not a counter)
                vials = [v for v in stock.vials(self.ledger, self.dea, ndc_key=K50_KEY)
                         if v["state"] in ("sealed", "open") and v["ml_left"] >= Decimal("0.50")]
                spilled = max(vials, key=lambda v: (v["opened_at"] is not None, v["ml_left"]))
                self.clock.now = self.at(day, 8, 40)
                b = services.record_breakage(self.ledger, p["nora"], RecordBreakage(
                    "spill", "0.5 mL spilled when a syringe disconnected during the draw", False,
                    (BreakageLineInput(spilled["vial_id"], "0.50"),), self.at(day, 7, 50)), witness=p["ned"])
                self.clock.now = self.at(day, 8, 45)
                services.resolve_discrepancy(self.ledger, p["morgan"], ResolveDiscrepancy(
                    d, "spill", "0.5 mL spilled when a syringe disconnected during the draw; reported same day",
                    breakage_seq=b["breakage_seq"]), witness=p["pia"])
                self.unrecorded[K50] = Decimal(0)
            elif self.incident == "missing":
                out = services.resolve_discrepancy(self.ledger, p["morgan"], ResolveDiscrepancy(
                    d, "theft_or_loss", "a sealed vial is missing from the locked cabinet; police notified"),
                    witness=p["pia"])
                self.unrecorded[K50] = Decimal(0)
                self.clock.now = self.at(day, 11, 0)
                services.report_theft_or_loss(self.ledger, p["morgan"], ReportTheftOrLoss(
                    discovered_at=self.at(day, 8, 20), loss_type="other", police_notified=True,
                    losses_past_24_months=0, purchase_value_usd="18.75", covers_seqs=(out["loss_adjustment_seq"],),
                    police_department="Denver Police Department", police_report_number=f"DPD-{day:%y%m%d}-17",
                    # issue 20: the rest of Form 106
                    narrative="At the opening count a sealed 10 mL vial of ketamine 50 mg/mL was not in the locked "
                              "cabinet; the cabinet showed no damage. Police notified the same morning.",
                    corrective_measures="Cabinet lock re-keyed; two-person access to the cabinet; daily closing count "
                                        "added",
                    other_explanation="a sealed vial missing from the locked cabinet, cause unknown",
                    contact_name="Morgan Manager", contact_phone="303-555-0142"))

    def receive(self, day: date, week: int) -> None:
        """Cartons, as the invoice and the DSCSA data speak of them (issue 19): a carton of ten
        50 mg/mL vials in weeks 0, 3 and 5, opened before a witness when it is put away; in week 1
        a carton of short-dated 10 mg/mL Ketalar (never opened: it expires and is destroyed whole)
        and four Spravato kits."""
        if week not in (0, 1, 3, 5):
            return
        p, rng = self.people, self.rng
        self.clock.now = self.at(day, 10, 30)
        gtin = gs1.gtin_for_ndc10(K50_NDC10)
        lot, exp = f"KA26{week + 10:02d}", date(2028, 6, 30)
        lines = []
        if week != 1:
            scan = gs1.datamatrix(gtin, f"{self.dea[-4:]}W{week:02d}C001", lot, exp)
            lines.append(ReceivedLineInput(K50, None, lot, exp.isoformat(), scans=(scan,), packages=1,
                                           invoiced_packages=1))
        else:
            # short-dated 10 mg/mL stock: it expires unused and is destroyed later
            lines.append(ReceivedLineInput(K10, None, "KB2509", (self.start + timedelta(days=30)).isoformat(),
                                           packages=1, invoiced_packages=1))
            lines.append(ReceivedLineInput(SPRAVATO, None, "SPV2611", "2028-01-31", packages=4, invoiced_packages=4))
        late = None
        occurred = self.at(day, 10, 0)
        if week == 3:
            occurred -= timedelta(days=2)  # received on a Saturday delivery, entered Monday
            late = "Saturday delivery; receiving log entered on the next clinic day"
            self.stats["late_entries"] += 1
        receiver = rng.choice(["nora", "ned", "pia"])
        res = services.receive_stock(self.ledger, p[receiver], ReceiveStock(
            supplier_id=self.supplier, invoice_number=f"GMS-{self.dea[-4:]}-{week + 1:04d}", occurred_at=occurred,
            lines=tuple(lines), late_reason=late, dscsa_reference=f"TI/TS GMS-{self.dea[-4:]}-{week + 1:04d}"),
            idempotency_key=f"demo-{self.dea}-receipt-{week}")
        if week == 1:
            self.kits = list(res["package_ids"][1:])  # the Spravato kits, opened at each session
            return
        # the carton is opened when its vials go into the cabinet, before a second person
        witness = "pia" if receiver != "pia" else "nora"
        self.clock.now += timedelta(minutes=10)
        services.open_package(self.ledger, p[receiver], OpenPackage(res["package_ids"][0], 10,
                                                                    self.clock.now - timedelta(minutes=2)),
                              witness=p[witness])
        self.stats["cartons_opened"] += 1

    def destroy_expired(self, day: date) -> None:
        p = self.people
        expired = [v["vial_id"] for v in stock.vials(self.ledger, self.dea)
                   if v["state"] in ("sealed", "open") and (date.fromisoformat(v["expiry"]) < day or (
                       v["beyond_use_date"] is not None and date.fromisoformat(v["beyond_use_date"]) < day))]
        if not expired:
            return
        self.clock.now = self.at(day, 16, 30)
        services.destroy_stock(self.ledger, p["pia"], DestroyStock(
            tuple(expired), "chemical digestion (non-retrievable)", "medication room", "expired / past beyond-use date",
            self.at(day, 16, 0)), witnesses=(p["nora"], p["morgan"]))

    def run(self) -> None:
        self.setup()
        self.incident = None
        for offset in range(1, 7 * WEEKS):
            day = self.start + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            # scripted honest incidents: a spill (Austin), a missing vial (Denver)
            if self.dea == LOCATIONS[0][0] and offset == 24:
                self.incident = "spill"
                self.unrecorded[K50] = Decimal("-0.50")
            elif self.dea == LOCATIONS[1][0] and offset == 31:
                self.incident = "missing"
                self.unrecorded[K50] = Decimal("-10.00")
            discrepancies = self.count(day)
            if discrepancies:
                self.resolve(day, discrepancies)
                self.incident = None
            if day.weekday() == 0:
                self.receive(day, (offset - 1) // 7)
            self.infusions(day)
            if day in self.spravato_days:
                self.spravato(day)
            if day.weekday() == 4 and offset > 7 * 5:
                self.destroy_expired(day)


def run_demo(settings: Settings, *, seed: int, console: Console) -> dict:
    """Build the demo on a fresh database and verify it deeply; returns entries per registrant."""
    rng = random.Random(seed)
    start = date(2026, 8, 31)  # a Monday
    clock = SimClock(datetime(2026, 8, 31, 12, 0, tzinfo=UTC))
    ledger = Ledger.open(settings.database_url, clock=clock)
    migrate(ledger.engine)
    log = attach(ledger, settings)  # issue 4: checkpoints signed in every append transaction
    # issue 7: the cheap alert rules run in each command's transaction, as under `csledger serve`,
    # so the demo's late entries and its loss raise their alerts as they are recorded.
    from ledger.services.alerts import attach_alert_rules

    attach_alert_rules(ledger)
    for dea, *_ in LOCATIONS:
        with ledger.reading() as c:
            if tree_size(c, dea):
                raise Conflict(f"the database already holds {dea}; run the demo on a fresh database (--db)", field="database_url")
    keys = _patient_key(settings)
    services.verify_patient_key(ledger, keys)
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore

    auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
    summary = {}
    stats = {}
    for dea, name, addr, tz in LOCATIONS:
        loc = _Location(ledger, clock, keys, rng, dea, name, addr, tz, start)
        loc.run()
        give_logins(auth, dea, loc.key_records)
        # issue 18: reports are signed by a report key the administrator certified in the ledger.
        certify_report_key(ledger, loc.admin, Path(settings.key_dir))
        stats[dea] = loc.stats
        with ledger.reading() as c:
            summary[dea] = tree_size(c, dea)
    run_demo_witness(log, summary, Path(settings.key_dir).with_name("csledger-demo-witness"), console)  # issue 4
    report = verify(ledger, deep=True)
    ledger.dispose()
    for dea, n in summary.items():
        s = stats[dea]
        console.print(f"{dea}: {n} entries; {_n(s['infusions'], 'infusion')} ({s['bags']} from diluted bags), "
                      f"{_n(s['spravato_sessions'], 'Spravato session')}, {_n(s['cartons_opened'], 'carton')} opened, "
                      f"{_n(s['counts'], 'blind count')}, {_n(s['discrepancies'], 'discrepancy', 'discrepancies')} "
                      f"resolved, {_n(s['late_entries'], 'late entry', 'late entries')}")
    if not report.ok:
        raise RuntimeError(f"demo data failed verify --deep: {report.problems[0]}")
    console.print(f"verify --deep: OK ({report.entries} entries)")
    return summary


def _n(count: int, one: str, many: str | None = None) -> str:
    """"1 discrepancy", "2 discrepancies": the count with its noun in the right number."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def give_logins(auth: Authenticator, registrant: str, records: dict[str, dict]) -> None:
    """A login per seeded person: ``DEMO_PASSWORD``, no TOTP secret yet (``staff demo-logins``
    creates and prints those), and the wrapped password key they signed the demo with.

    One argon2id hash of the shared demo password serves every demo login (each hash costs a
    quarter of a second at production cost; the demo's password is public anyway)."""
    from api.http.auth import check_password_rules
    from ledger.integrity.canonical import format_time

    password_hash = None
    for username, record in records.items():
        member = auth.store.staff_by_username(registrant, username)
        check_password_rules(DEMO_PASSWORD, username=member.username, printed_name=member.printed_name)
        password_hash = password_hash or auth.hasher.hash(DEMO_PASSWORD)
        now = format_time(utcnow())
        auth.store.set_credential(registrant, member.staff_id, password_hash=password_hash, must_change=False,
                                  totp_secret=None, keep_totp=True, now=now)
        auth.store.set_signing_key(registrant, member.staff_id, record, now)


def run_demo_witness(log, registrants, directory: Path, console) -> None:
    """The demo's local witness: a witness folder, a server on a free loopback port, each
    registrant's log key trusted, a 1-of-1 policy, and the latest checkpoints cosigned."""
    w = Witness(directory) if (Path(directory) / "witness.key").exists() else Witness.init(directory, "demo-witness.csledger.local")
    try:
        # The port `csledger witness serve` uses by default, so the recorded URL works after
        # the demo when the operator restarts the witness; any free port if it is taken.
        server, url = serve_in_thread(w, port=DEFAULT_PORT)
    except OSError:
        server, url = serve_in_thread(w)
    try:
        for reg in registrants:
            with log.ledger.reading() as conn:
                for k in log_keys(conn, reg):
                    w.add_log(k.verifier_key)
            log.set_witnesses(reg, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
            for r in log.push(reg):
                state = "cosigned" if r.ok else f"NOT cosigned ({r.detail})"
                console.print(f"{reg}: checkpoint {r.tree_size} {state} by witness {r.witness}", highlight=False)
    finally:
        server.shutdown()
        server.server_close()
    console.print(f"demo witness folder: {directory} (restart it with `csledger witness serve --dir {directory}`)",
                  highlight=False)
