"""Issue 15, attack 2: an after-the-fact "spill" erases a shortage.

Before: a count came up short; one manager resolved the discrepancy as ``spill`` (or
``breakage``), the loss adjustment then counted as accounted for, the audit's variance came out
0.00 % and the shortage was never seen again. Now:

- breakage and spills are events recorded when they happen (``POST .../breakages``), signed by the
  recorder and a second person who saw it; not recoverable, the mL leave the book at once;
  recoverable, the vial is set aside (never drawn from) until it is destroyed (Form 41);
- a discrepancy is resolved as a spill or breakage only by pointing at such a record
  (``breakage_seq``) of the same product, that happened before the count and that the count could
  not see (recorded after it was submitted), whose mL do not exceed the shortage; its mL are
  already off the book, so nothing further is adjusted for them;
- every resolution is signed by the approving manager and a second authenticated person who is
  neither the manager nor a counter; every loss adjustment by both, and it raises an alert with
  the count, the resolution and the mL; a theft or loss report that takes vials off the book
  needs a second person too;
- the audit shows the difference BEFORE adjustments, with breakage at the time and theft or loss
  on their own lines, and lists each adjustment after it with who signed it.

Every refusal leaves the ledger as it was (entry count unchanged). SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from ledger.services.alerts import attach_alert_rules
from tests.api.conftest import PATIENT_KEY, entry_count
from tests.api.test_clinical import ADDRESS, witnessed
from tests.conftest import BACKENDS, CLINIC_TZ, KETAMINE_50

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

#: Issue 20: the rest of Form 106, required on every theft or loss report.
FORM_106 = {"narrative": "a vial is missing from the safe at opening", "corrective_measures": "safe code changed",
            "contact_name": "Morgan Manager", "contact_phone": "512-555-0142"}


@pytest.fixture(autouse=True)
def alert_rules(api):
    """The served ledger runs the alert rules in every command (``serve`` attaches them)."""
    attach_alert_rules(api.ledger)


def ago(**kw) -> str:
    return (datetime.now(UTC) - timedelta(**kw)).isoformat()


def field_of(r) -> str | None:
    return (r.json().get("errors") or [{}])[0].get("field")


def entry(api, seq: int) -> dict:
    return json.loads(api.client.get(api.url(f"/entries/{seq}"), headers=api.headers("ari")).json()["canonical"])


def vial(api, vial_id: str) -> dict:
    return api.client.get(api.url(f"/vials/{vial_id}"), headers=api.headers("pia")).json()


def post(api, who: str, path: str, body: dict):
    return api.client.post(api.url(path), json=body, headers=api.headers(who))


def alerts(api, rule: str) -> list[dict]:
    r = api.client.get(api.url("/alerts"), params={"status": "all"}, headers=api.headers("morgan")).json()
    return [a for a in r["items"] if a["rule"] == rule]


def opening(api) -> tuple[list[str], str]:
    """Initial inventory 3 h ago: 3 sealed 50 mg/mL vials (30.00 mL); a patient; an infusion
    drawing 1.00 mL from the first vial (0.80 given, 0.20 wasted before Ned): book 29.00 mL."""
    from tests.api.test_clinical import witnessed

    inv, _ = witnessed(api, "nora", "/inventories", {  # issue 20: witnessed
        "inventory_type": "initial", "taken_at": "opening_of_business", "occurred_at": ago(hours=3),
        "items": [{"ndc": KETAMINE_50, "lot": "KA1", "expiry": "2028-06-30", "sealed": True, "containers": 3}]}, "pia")
    assert inv.status_code == 201, inv.text
    vials = inv.json()["vial_ids"]
    pat = post(api, "nora", "/patients", {"name": "Jordan Example", "address": ADDRESS})
    assert pat.status_code == 201, pat.text
    body = {"patient_id": pat.json()["patient_id"], "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vials[0], "ml": "1.00"}], "ml_given": "0.80",
            "started_at": ago(hours=2, minutes=50), "ended_at": ago(hours=2, minutes=40),
            "waste": {"ml": "0.20", "method": "sharps container"}}
    r, _ = witnessed(api, "nora", "/administrations", body, "ned")
    assert r.status_code == 201, r.text
    return vials, pat.json()["patient_id"]


def count(api, open_ml: str, when: str, sealed: int = 2) -> dict:
    """A blind two-person count (Nora and Ned) of the 50 mg/mL: ``sealed`` vials and one open."""
    s = post(api, "nora", "/counts", {"ndcs": [KETAMINE_50], "blind": True})
    assert s.status_code == 201, s.text
    body = {"lines": [{"ndc": KETAMINE_50, "sealed_containers": sealed, "open_containers": 1, "open_ml": open_ml}],
            "occurred_at": when}
    r, _ = witnessed(api, "nora", f"/counts/{s.json()['session_id']}/submissions", body, "ned")
    assert r.status_code == 201, r.text
    return {"seq": r.json()["entries"][0]["seq"], "discrepancy_ids": r.json()["discrepancy_ids"]}


def breakage(api, vial_id: str, ml: str | None, when: str, *, what: str = "spill", recoverable: bool = False,
             witness: str | None = "ned"):
    body = {"what": what, "description": f"{what} seen by Nora and Ned", "recoverable": recoverable,
            "lines": [{"vial_id": vial_id, **({"ml": ml} if ml is not None else {})}], "occurred_at": when}
    if witness is None:
        return post(api, "nora", "/breakages", body)
    return witnessed(api, "nora", "/breakages", body, witness)[0]


def resolve(api, discrepancy_id: str, body: dict, second: str | None = "pia"):
    path = f"/discrepancies/{discrepancy_id}/resolutions"
    if second is None:
        return post(api, "morgan", path, body)
    return witnessed(api, "morgan", path, body, second)[0]


# --- the attack -------------------------------------------------------------------------------


def test_the_attack_as_performed_is_refused_and_writes_nothing(api):
    """Count short by 0.50 mL, then one manager resolves it as a spill: refused, naming
    ``breakage_seq`` (and, once that is given, the missing second person); nothing written."""
    vials, _ = opening(api)
    c = count(api, "8.50", ago(hours=1))  # book 29.00, counted 2 x 10 + 8.50 = 28.50
    (d,) = c["discrepancy_ids"]
    before, held = entry_count(api), vial(api, vials[0])["ml_left"]
    alone = resolve(api, d, {"category": "spill", "explanation": "vial knocked over"}, second=None)
    assert alone.status_code == 422 and field_of(alone) == "breakage_seq", alone.text
    # a second person does not make an unrecorded spill acceptable
    with_second = resolve(api, d, {"category": "spill", "explanation": "vial knocked over"})
    assert with_second.status_code == 422 and field_of(with_second) == "breakage_seq", with_second.text
    breakage_too = resolve(api, d, {"category": "breakage", "explanation": "vial dropped"}, second=None)
    assert breakage_too.status_code == 422 and field_of(breakage_too) == "breakage_seq", breakage_too.text
    assert entry_count(api) == before and vial(api, vials[0])["ml_left"] == held
    listed = api.client.get(api.url("/discrepancies"), headers=api.headers("morgan")).json()
    assert [x["discrepancy_id"] for x in listed] == [d]  # still open, still visible


def test_a_resolution_needs_a_second_person_who_did_not_count(api):
    vials, _ = opening(api)
    (d,) = count(api, "8.50", ago(hours=1))["discrepancy_ids"]
    before = entry_count(api)
    body = {"category": "theft_or_loss", "explanation": "not found after a search"}
    alone = resolve(api, d, body, second=None)
    assert alone.status_code == 422 and field_of(alone) == "witness", alone.text
    counter = resolve(api, d, body, second="ned")  # Ned counted
    assert counter.status_code == 409 and field_of(counter) == "witness", counter.text
    other = resolve(api, d, {"category": "other", "explanation": "miscounted shelf"}, second=None)
    assert other.status_code == 422 and field_of(other) == "witness", other.text
    assert entry_count(api) == before and vial(api, vials[0])["ml_left"] == "9.00"


def test_theft_or_loss_writes_a_loss_adjustment_signed_by_both_and_raises_an_alert(api):
    vials, _ = opening(api)
    c = count(api, "8.50", ago(hours=1))
    (d,) = c["discrepancy_ids"]
    r = resolve(api, d, {"category": "theft_or_loss", "explanation": "not found after a search"})
    assert r.status_code == 201, r.text
    res_seq, adj_seq = (e["seq"] for e in r.json()["entries"][:2])
    assert r.json()["loss_adjustment_seq"] == adj_seq and r.json()["adjusted_ml"] == "0.50"
    staff = {api.clinic.nurse.staff_id: "nora", api.auth.store.staff_by_username(api.dea, "morgan").staff_id: "morgan",
             api.clinic.pharmacist.staff_id: "pia"}
    for seq in (res_seq, adj_seq):
        assert {(staff[s["staff_id"]], s["meaning"]) for s in entry(api, seq)["signatures"]} == {
            ("morgan", "approved"), ("pia", "witnessed")}
    adj = entry(api, adj_seq)
    assert (adj["count_seq"], adj["resolution_seq"]) == (c["seq"], res_seq)
    assert vial(api, vials[0])["ml_left"] == "8.50"  # the open vial, fullest first
    (alert,) = alerts(api, "stock_off_book_by_loss_adjustment")
    assert alert["evidence_seqs"] == [c["seq"], res_seq, adj_seq]
    assert alert["figures"]["ml_off_book"] == "0.50" and alert["severity"] == "high"


# --- breakage and spills at the time -------------------------------------------------------------


def test_a_breakage_needs_a_witness_and_takes_the_ml_off_at_once(api):
    vials, _ = opening(api)
    before = entry_count(api)
    alone = breakage(api, vials[0], "1.00", ago(minutes=20), witness=None)
    assert alone.status_code == 422 and field_of(alone) == "witness", alone.text
    # a broken vial leaves whole (9.00 mL on the book); a part of it is refused
    part = breakage(api, vials[0], "1.00", ago(minutes=20), what="breakage")
    assert part.status_code == 409 and field_of(part) == "lines[0].ml", part.text
    too_much = breakage(api, vials[0], "9.50", ago(minutes=20))
    assert too_much.status_code == 409 and field_of(too_much) == "lines[0].ml", too_much.text
    assert entry_count(api) == before and vial(api, vials[0])["ml_left"] == "9.00"
    r = breakage(api, vials[0], "1.00", ago(minutes=20))
    assert r.status_code == 201, r.text
    assert r.json()["lost_ml"] == "1.00" and r.json()["after_counts"] == []
    assert vial(api, vials[0])["ml_left"] == "8.00"
    e = entry(api, r.json()["breakage_seq"])
    assert {(s["staff_id"], s["meaning"]) for s in e["signatures"]} == {
        (api.clinic.nurse.staff_id, "performed"), (api.clinic.nurse2.staff_id, "witnessed")}
    # recorded at the time: the next count already has it in its expected figures, no discrepancy
    assert count(api, "8.00", ago(minutes=5))["discrepancy_ids"] == []
    (low,) = alerts(api, "breakage_recorded")
    assert low["severity"] == "low" and low["figures"]["ml"] == "1.00"


def test_recoverable_stock_is_set_aside_and_leaves_by_destruction(api):
    vials, patient = opening(api)
    r = breakage(api, vials[1], None, ago(minutes=30), what="breakage", recoverable=True)
    assert r.status_code == 201 and r.json()["held_ml"] == "10.00", r.text
    assert vial(api, vials[1])["state"] == "quarantined" and vial(api, vials[1])["ml_left"] == "10.00"
    draw = {"patient_id": patient, "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vials[1], "ml": "1.00"}], "ml_given": "1.00",
            "started_at": ago(minutes=20), "ended_at": ago(minutes=10)}
    refused = post(api, "nora", "/administrations", draw)
    assert refused.status_code == 409 and field_of(refused) == "draws[0].vial_id", refused.text
    # Two people attested it broken: one pharmacist cannot release it back into use.
    release = post(api, "pia", "/quarantine-releases", {"vial_ids": [vials[1]], "reason": "looks fine"})
    assert release.status_code == 409 and field_of(release) == "vial_ids[0]", release.text
    assert "destroy it" in release.text and vial(api, vials[1])["state"] == "quarantined"
    destroy = {"vial_ids": [vials[1]], "method": "chemical digestion", "place": "med room",
               "reason": "recovered from a cracked vial", "occurred_at": ago(minutes=5)}
    gone, _ = witnessed(api, "pia", "/destructions", destroy, "ned", "nora")
    assert gone.status_code == 201, gone.text
    assert vial(api, vials[1])["ml_left"] == "0.00"


# --- a spill that explains a count ------------------------------------------------------------


def test_a_spill_before_the_count_recorded_by_two_people_explains_it(api):
    """The spill happened 40 min before the count and was recorded (Nora and Ned, who saw it)
    just after the count came up 0.50 mL short: the count could not see it, its 0.50 mL explain
    the difference exactly and are already off the book; the resolution (Morgan and Pia) points
    at it and adjusts nothing."""
    vials, _ = opening(api)
    c = count(api, "8.50", ago(hours=1))
    (d,) = c["discrepancy_ids"]
    recount = count(api, "8.50", ago(minutes=50))  # a recount finds the same
    (d2,) = recount["discrepancy_ids"]
    spilled = breakage(api, vials[0], "0.50", ago(hours=1, minutes=40))
    assert spilled.status_code == 201, spilled.text
    spill_seq = spilled.json()["breakage_seq"]
    assert spilled.json()["after_counts"] == [c["seq"], recount["seq"]]
    (late,) = alerts(api, "breakage_after_count")
    assert late["severity"] == "high" and late["evidence_seqs"] == [c["seq"], recount["seq"], spill_seq]
    before = entry_count(api)
    r = resolve(api, d, {"category": "spill", "explanation": "vial knocked over during setup",
                         "breakage_seq": spill_seq})
    assert r.status_code == 201, r.text
    assert "loss_adjustment_seq" not in r.json() and len(r.json()["entries"]) == 1
    assert entry(api, r.json()["entries"][0]["seq"])["breakage_seq"] == spill_seq
    assert entry_count(api) == before + 1 and vial(api, vials[0])["ml_left"] == "8.50"
    # one record explains one discrepancy
    again = resolve(api, d2, {"category": "spill", "explanation": "same spill", "breakage_seq": spill_seq})
    assert again.status_code == 409 and field_of(again) == "breakage_seq" and "already explains" in again.text


def test_a_spill_the_count_already_saw_or_that_does_not_fit_explains_nothing(api):
    vials, _ = opening(api)
    at_the_time = breakage(api, vials[0], "1.00", ago(hours=2)).json()["breakage_seq"]  # book 28.00
    c = count(api, "7.50", ago(hours=1))  # 2 x 10 + 7.50 = 27.50: 0.50 short
    (d,) = c["discrepancy_ids"]
    before = entry_count(api)
    seen = resolve(api, d, {"category": "spill", "explanation": "x", "breakage_seq": at_the_time})
    assert seen.status_code == 409 and field_of(seen) == "breakage_seq" and "before the count" in seen.text
    wrong_kind = resolve(api, d, {"category": "breakage", "explanation": "x", "breakage_seq": at_the_time})
    assert wrong_kind.status_code == 409 and field_of(wrong_kind) == "breakage_seq", wrong_kind.text
    not_a_breakage = resolve(api, d, {"category": "spill", "explanation": "x", "breakage_seq": c["seq"]})
    assert not_a_breakage.status_code == 409 and field_of(not_a_breakage) == "breakage_seq"
    after = breakage(api, vials[0], "0.20", ago(minutes=30)).json()["breakage_seq"]  # after the count
    later = resolve(api, d, {"category": "spill", "explanation": "x", "breakage_seq": after})
    assert later.status_code == 409 and field_of(later) == "breakage_seq" and "after the count" in later.text
    # a documentation error cannot stand in for it either
    doc = resolve(api, d, {"category": "documentation_error", "explanation": "x", "fixed_by_seq": after})
    assert doc.status_code == 409 and field_of(doc) == "fixed_by_seq", doc.text
    assert entry_count(api) == before + 2  # only the second spill was recorded (and its alert)
    # more than the shortage: refused; less: the rest is a loss adjustment signed by both
    big = breakage(api, vials[0], "0.60", ago(hours=1, minutes=10)).json()["breakage_seq"]
    too_big = resolve(api, d, {"category": "spill", "explanation": "x", "breakage_seq": big})
    assert too_big.status_code == 409 and field_of(too_big) == "breakage_seq" and "more than" in too_big.text


def test_a_smaller_spill_leaves_the_rest_to_a_loss_adjustment(api):
    vials, _ = opening(api)
    (d,) = count(api, "8.50", ago(hours=1))["discrepancy_ids"]  # 0.50 short
    small = breakage(api, vials[0], "0.30", ago(hours=1, minutes=10)).json()["breakage_seq"]
    r = resolve(api, d, {"category": "spill", "explanation": "spill, and 0.20 mL more unexplained",
                         "breakage_seq": small})
    assert r.status_code == 201, r.text
    assert r.json()["adjusted_ml"] == "0.20"  # 0.50 - 0.30
    assert vial(api, vials[0])["ml_left"] == "8.50"  # 9.00 - 0.30 spilled - 0.20 adjusted
    assert [a["figures"]["ml_off_book"] for a in alerts(api, "stock_off_book_by_loss_adjustment")] == ["0.20"]


# --- theft or loss (Form 106) -----------------------------------------------------------------


def test_a_theft_report_that_takes_vials_off_needs_a_second_person(api):
    vials, _ = opening(api)
    body = {"discovered_at": ago(minutes=30), "loss_type": "night_break_in", "police_notified": True,
            "police_department": "Austin PD", "losses_past_24_months": 0, "purchase_value_usd": "12.50",
            "lost": [{"vial_id": vials[2]}], **FORM_106}
    before = entry_count(api)
    alone = post(api, "casey", "/loss-reports", body)
    assert alone.status_code == 422 and field_of(alone) == "witness", alone.text
    assert entry_count(api) == before and vial(api, vials[2])["ml_left"] == "10.00"
    r, _ = witnessed(api, "casey", "/loss-reports", body, "morgan")
    assert r.status_code == 201, r.text
    e = entry(api, r.json()["entries"][0]["seq"])
    assert [s["meaning"] for s in e["signatures"]] == ["performed", "witnessed"]
    assert vial(api, vials[2])["ml_left"] == "0.00"


# --- the audit ----------------------------------------------------------------------------------


def test_the_audit_shows_the_difference_before_adjustments(api, tmp_path):
    """The attack's own figures, by hand (ketamine 50 mg/mL: mg = mL x 50, containers = mL / 10).
    Initial inventory 30.00 mL (3 sealed); an infusion draws 1.00 (0.80 given, 0.20 wasted);
    count 1 finds 28.50 against a book of 29.00: 0.50 mL short, accepted as theft or loss (loss
    adjustment 0.50, Morgan and Pia); a spill of 1.00 mL recorded at the time; count 2 finds
    2 x 10 + 7.50 = 27.50, the book. Over the period:
      to account for 30.00 (the initial inventory inside the period begins it);
      accounted for 0.80 + 0.20 + 1.00 breakage + 27.50 ending = 29.50;
      difference before adjustments 29.50 - 30.00 = -0.50 mL (-25.00 mg, -0.05 containers),
      variance -0.50 / 30 = -1.666..% -> -1.67 %, flagged at the default 1 %;
      adjustments 0.50 (the loss adjustment), difference after adjustments 0.00, 0.00 %.
    Before issue 15 this audit answered difference 0.00 and variance 0.00 %."""
    vials, _ = opening(api)
    (d,) = count(api, "8.50", ago(hours=2))["discrepancy_ids"]
    r = resolve(api, d, {"category": "theft_or_loss", "explanation": "not found after a search"})
    assert r.status_code == 201, r.text
    adj_seq = r.json()["loss_adjustment_seq"]
    assert breakage(api, vials[0], "1.00", ago(hours=1, minutes=30)).status_code == 201
    # count 2 now (after the loss adjustment, which is dated when it was approved)
    assert count(api, "7.50", datetime.now(UTC).isoformat())["discrepancy_ids"] == []
    zone = ZoneInfo(CLINIC_TZ)  # issue 20: the audit takes local days (it runs from the initial inventory to count 2)
    a = api.client.get(api.url("/audit"), headers=api.headers("casey"),
                       params={"from": (datetime.now(UTC) - timedelta(hours=4)).astimezone(zone).date().isoformat(),
                               "to": datetime.now(UTC).astimezone(zone).date().isoformat()})
    assert a.status_code == 200, a.text
    (p,) = a.json()["products"]
    assert {k: p["ml"][k] for k in ("to_account_for", "administered", "wasted", "breakage", "theft_or_loss",
                                    "ending", "accounted_for", "difference", "adjustments",
                                    "difference_after_adjustments")} == {
        "to_account_for": "30.00", "administered": "0.80", "wasted": "0.20", "breakage": "1.00",
        "theft_or_loss": "0.00", "ending": "27.50", "accounted_for": "29.50", "difference": "-0.50",
        "adjustments": "0.50", "difference_after_adjustments": "0.00"}
    assert (p["mg"]["difference"], p["containers"]["difference"], p["mg"]["adjustments"]) == (
        "-25.00", "-0.05", "25.00")
    assert (p["variance_percent"], p["flagged"], p["variance_after_adjustments_percent"]) == ("-1.67", True, "0.00")
    (item,) = p["adjustment_entries"]
    assert (item["seq"], item["kind"], item["ml"], item["category"]) == (adj_seq, "loss_adjusted", "0.50",
                                                                         "theft_or_loss")
    assert [(s["printed_name"], s["meaning"]) for s in item["signatures"]] == [
        ("Morgan Manager", "approved"), ("Pia Pharmacist", "witnessed")]

    # the PDF prints the same: the difference before adjustments, then the adjustment with its signers
    from pypdf import PdfReader

    from reports.base import build_report

    zone = ZoneInfo(CLINIC_TZ)
    first = (datetime.now(UTC) - timedelta(hours=4)).astimezone(zone).date().isoformat()
    today = datetime.now(UTC).astimezone(zone).date().isoformat()
    pdf, data = build_report(api.ledger, "audit", api.dea, first, today)
    (q,) = data["figures"]["products"]
    assert (q["ml"]["difference"], q["ml"]["adjustments"], q["variance_percent"]) == ("-0.50", "0.50", "-1.67")
    path = tmp_path / "audit.pdf"
    path.write_bytes(pdf)
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(path).pages)
    # containers: whole 10 mL vials and the rest in mL, never a fraction (issue 20)
    for row in ("Breakage and spills recorded at the time (two people) 50.00 mg 1.00 mL 0 + 1.00 mL",
                "Theft or loss (Form 106) 0.00 mg 0.00 mL 0",
                "Difference (before adjustments) -25.00 mg -0.50 mL -(0 + 0.50 mL)",
                "Variance (before adjustments) -1.67 %",
                "Adjustments after the difference (net out of stock, listed below) 25.00 mg 0.50 mL 0 + 0.50 mL",
                "Difference after adjustments 0.00 mg 0.00 mL 0",
                "approved: Morgan Manager", "second person: Pia Pharmacist"):
        assert row in text, row
    assert text.index("Difference (before adjustments)") < text.index("Difference after adjustments")


def test_verify_deep_passes_after_breakage_resolutions_and_losses(api, tmp_path, db_url):
    """``csledger verify --deep`` replays every new entry kind into the projections and finds
    them equal to the stored ones: a spill, a recoverable breakage, a spill resolution, a loss
    adjustment and a witnessed theft report."""
    from tests.cli.test_cli import run

    vials, _ = opening(api)
    c = count(api, "8.50", ago(hours=1))
    spill = breakage(api, vials[0], "0.50", ago(hours=1, minutes=20)).json()["breakage_seq"]
    assert resolve(api, c["discrepancy_ids"][0], {"category": "spill", "explanation": "x",
                                                  "breakage_seq": spill}).status_code == 201
    assert breakage(api, vials[1], None, ago(minutes=40), what="breakage", recoverable=True).status_code == 201
    # the set-aside vial is still on hand and counted: book 8.50 + 10 + 10 = 28.50, counted 28.00
    (d,) = count(api, "8.00", ago(minutes=30))["discrepancy_ids"]
    assert resolve(api, d, {"category": "theft_or_loss", "explanation": "y"}).status_code == 201
    loss = {"discovered_at": ago(minutes=20), "loss_type": "other", "police_notified": False,
            "losses_past_24_months": 1, "purchase_value_usd": "5.00", "lost": [{"vial_id": vials[2], "ml": "2.00"}],
            **FORM_106, "other_explanation": "2 mL gone from an opened vial"}
    assert witnessed(api, "casey", "/loss-reports", loss, "morgan")[0].status_code == 201
    url = api.ledger.engine.url.render_as_string(hide_password=False)
    p = run(["verify", "--deep", "--db", url], tmp_path, {"CSLEDGER_PATIENT_KEY": PATIENT_KEY}, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    from ledger.services.verify import verify

    assert verify(api.ledger, deep=True).ok
    assert D(vial(api, vials[2])["ml_left"]) == D("8.00")
