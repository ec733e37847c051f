"""An administration log carries the openings of its patients' commitments (issue 18).

Made with the patient key, the report embeds beside each printed name and address the committed
details and the v2 opening; ``check_openings``, with no key and no database, accepts them against
the commitments in the report's own rows. An edited printed name, edited embedded details, or
openings swapped between patients fail, naming the patient id and the entry, never the name. A
patient whose latest entry is v1 (recorded before v2) is embedded without an opening and counted
as not openable. What the page prints is unchanged. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
from pypdf import PdfReader

from reports import layout
from reports.administrations import check_openings
from reports.base import build_report
from tests.api.conftest import PATIENT_KEY
from tests.api.test_clinical import infusion, witnessed
from tests.conftest import BACKENDS, DEA
from tests.reports.test_report_access_log import NAMES, floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def administrations(api) -> dict:
    pdf, _ = build_report(api.ledger, "administrations", DEA, *api.period)
    reader = PdfReader(io.BytesIO(pdf))
    data = json.loads(reader.attachments[layout.DATA_FILE][0])
    data["_text"] = " ".join(" ".join(p.extract_text().split()) for p in reader.pages)
    return data


def check(data: dict) -> tuple[list[str], int, int]:
    return check_openings(data["annotations"], data["figures"], data["state"]["registrant"])


def latest_seq(data: dict, pid: str) -> int:
    return [r["seq"] for r in data["figures"]["rows"] if r["patient_id"] == pid][-1]


def test_report_embeds_openings_that_check_offline(floor, monkeypatch):  # noqa: F811
    api = floor
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)
    data = administrations(api)
    patients = data["annotations"]["patients"]
    assert sorted(patients) == api.patients
    for pt in patients.values():
        assert set(pt) == {"name", "address", "matches_commitment", "details", "opening"}
        assert pt["matches_commitment"] and len(pt["opening"]) == 64
        d = pt["details"]
        assert pt["address"] == f"{d['street']}, {d['city']}, {d['state']} {d['postal_code']}"
        assert pt["name"] in data["_text"]  # the page still prints the name
    assert check(data) == ([], 2, 0)
    # As verify-report --bundle calls it (``check_annotations``): the registrant embedded.
    assert data["annotations"]["registrant"] == DEA
    assert check_openings(data["annotations"], data["figures"]) == ([], 2, 0)
    from reports.base import KINDS

    assert KINDS["administrations"].check_annotations is check_openings

    pid = api.patients[0]
    seq = latest_seq(data, pid)
    # The printed name edited (as a forger redrawing the page would): the details no longer give it.
    bad = copy.deepcopy(data)
    bad["annotations"]["patients"][pid]["name"] = "Someone Else"
    problems, checked, _ = check(bad)
    assert checked == 2 and len(problems) == 1, problems
    assert problems[0].startswith(f"patient {pid} (entry {seq}): the printed name")
    # The embedded details edited too, to match: they no longer open the entry's commitment.
    bad["annotations"]["patients"][pid]["details"]["name"] = "Someone Else"
    problems, _, _ = check(bad)
    assert problems == [f"patient {pid}: the embedded name and address do not open the commitment of entry {seq} "
                        "(the details, the opening or the entry's commitment were changed)"]
    # One character of the address, or the openings of the two patients swapped.
    bad = copy.deepcopy(data)
    bad["annotations"]["patients"][pid]["details"]["postal_code"] = "78703"
    bad["annotations"]["patients"][pid]["address"] = bad["annotations"]["patients"][pid]["address"][:-1] + "3"
    assert [p.split(":")[0] for p in check(bad)[0]] == [f"patient {pid}"]
    bad = copy.deepcopy(data)
    a, b = (bad["annotations"]["patients"][p] for p in api.patients)
    a["opening"], b["opening"] = b["opening"], a["opening"]
    problems, _, _ = check(bad)
    assert [p.split(":")[0] for p in problems] == [f"patient {p}" for p in api.patients]
    # Never a name or an address in a problem (they are printed to logs).
    for text in problems + check(copy.deepcopy(data) | {"annotations": {"patients": {
            pid: {**data["annotations"]["patients"][pid], "name": "Someone Else", "opening": "00" * 32}}}})[0]:
        assert not any(n in text for n in NAMES + ("Someone Else", "Elm", "Austin", "78702"))
    # Malformed annotations are problems, not exceptions.
    assert check_openings({"patients": []}, data["figures"], DEA)[0]
    assert check_openings({"patients": {pid: "x"}}, data["figures"], DEA)[0]
    assert check_openings({"patients": {pid: {**patients[pid], "details": None}}}, data["figures"], DEA)[0]
    assert check_openings(data["annotations"], {"rows": None}, DEA)[0]
    assert check_openings({"patients": {"P999": patients[pid]}}, data["figures"], DEA)[0]
    # Another registrant's name for the same rows: nothing opens.
    assert check_openings(data["annotations"], data["figures"], "FB7654329")[1:] == (2, 0)
    assert len(check_openings(data["annotations"], data["figures"], "FB7654329")[0]) == 2
    assert len(check_openings({**data["annotations"], "registrant": "FB7654329"}, data["figures"])[0]) == 2
    assert len(check_openings({"patients": patients}, data["figures"])[0]) == 2  # no registrant: unchecked
    # A report made before openings were embedded (nor the rows' commitment schemes): nothing to
    # open, nothing wrong.
    before = {"patients": {p: {k: patients[p][k] for k in ("name", "address", "matches_commitment")}
                           for p in patients}}
    old_rows = {"rows": [{k: v for k, v in r.items() if k != "patient_commitment_openable"}
                         for r in data["figures"]["rows"]]}
    assert check_openings(before, old_rows) == ([], 0, 2)
    # A forger withholds the opening of a schema 2 commitment, to pass an edited name off as
    # "not checkable": the rows say an opening is owed.
    assert all(r["patient_commitment_openable"] for r in data["figures"]["rows"])
    bad = copy.deepcopy(data)
    bad["annotations"]["patients"][pid].update(name="Someone Else", opening=None)
    bad["annotations"]["patients"][pid]["details"]["name"] = "Someone Else"
    problems, checked, unopenable = check(bad)
    assert (checked, unopenable) == (1, 0)
    assert problems == [f"patient {pid} (entry {seq}): the commitment can be opened (a schema 2 patient entry) but "
                        "the report embeds no opening for it"]


def test_report_without_the_key_or_with_a_v1_patient(floor, monkeypatch):  # noqa: F811
    api = floor
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", "")
    assert check(administrations(api)) == ([], 0, 0)  # ids only: nothing to check
    # A patient registered and dosed before v2 (the code then recorded the HMAC commitment).
    from ledger.domain import entries as ev
    from ledger.storage.patient_keys import PatientKeys

    with monkeypatch.context() as m:
        m.setattr(PatientKeys, "commitment", PatientKeys.commitment_v1)
        m.setattr(ev.PatientRegistered, "schema_version", 1)  # as the entry was then written
        p = api.client.post(api.url("/patients"), json={"name": "Olive Older", "address": {
            "street": "3 Oak Ave", "city": "Austin", "state": "TX", "postal_code": "78701"}},
            headers=api.headers("nora"))
        assert p.status_code == 201, p.text
        old = p.json()["patient_id"]
    with api.ledger.reading() as conn:
        vial = conn.exec_driver_sql("SELECT vial_id FROM vials ORDER BY vial_id LIMIT 1").scalar()
    r, _ = witnessed(api, "nora", "/administrations", infusion(old, vial), "ned")
    assert r.status_code == 201, r.text
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)
    data = administrations(api)
    pt = data["annotations"]["patients"][old]
    assert pt["matches_commitment"] and pt["opening"] is None and pt["details"]["name"] == "Olive Older"
    assert "Olive Older" in data["_text"] and "REGISTRY DOES NOT MATCH" not in data["_text"]
    assert check(data) == ([], 2, 1)
    # Its printed name is still checked against its embedded details, though they open nothing.
    pt["name"] = "Someone Else"
    assert check(data)[0] == [f"patient {old} (entry {latest_seq(data, old)}): the printed name is not the one in "
                              "the embedded details"]
