"""Issue 15, attack 5: an infusion that records its waste need not account for the dose.

Before: drawn 0.78 mL, given 0.68, wasted 0.05 in the same command was recorded (201,
``reconciled: false``): 0.05 mL left the vial with no record of where it went, and the witness had
signed. Now waste given in the same command must make drawn = given + wasted exactly, or the
command is refused naming ``waste.ml`` and the mL unaccounted for, and nothing is written. An
infusion recorded without waste stays unreconciled until its waste entry, as before.
"""

from __future__ import annotations

import pytest

from tests.api.test_attack_corrections import entry_count, problem_field, vial
from tests.api.test_clinical import infusion, setup_floor, witnessed
from tests.conftest import BACKENDS, an_hour_ago

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def dose(patient: str, vial_id: str, drawn: str, given: str, wasted: str | None) -> dict:
    body = infusion(patient, vial_id, waste=wasted is not None)
    body["draws"][0]["ml"], body["ml_given"] = drawn, given
    if wasted is not None:
        body["waste"]["ml"] = wasted
    return body


@pytest.mark.parametrize("drawn, given, wasted, words", [
    ("0.78", "0.68", "0.05", "0.05 mL is unaccounted for"),  # the attack as performed
    ("0.78", "0.68", "0.20", "0.10 mL more than was drawn"),
])
def test_an_unbalanced_waste_in_the_same_command_is_refused_and_writes_nothing(api, drawn, given, wasted, words):
    vials, patient = setup_floor(api)
    before, held = entry_count(api), vial(api, vials[0])["ml_left"]
    r, _ = witnessed(api, "nora", "/administrations", dose(patient, vials[0], drawn, given, wasted), "ned")
    assert r.status_code == 422 and problem_field(r) == "waste.ml", r.text
    assert words in r.text
    assert entry_count(api) == before and vial(api, vials[0])["ml_left"] == held


def test_a_balanced_waste_reconciles_and_a_dose_without_waste_waits_for_its_waste(api):
    vials, patient = setup_floor(api)
    r, _ = witnessed(api, "nora", "/administrations", dose(patient, vials[0], "0.78", "0.68", "0.10"), "ned")
    assert r.status_code == 201 and r.json()["reconciled"] is True, r.text
    later = api.client.post(api.url("/administrations"), json=dose(patient, vials[0], "0.78", "0.68", None),
                            headers=api.headers("nora"))
    assert later.status_code == 201 and later.json()["reconciled"] is False, later.text
    waste, _ = witnessed(api, "nora", "/wastes", {"administration_id": later.json()["administration_id"], "ml": "0.10",
                                                  "method": "sharps container", "occurred_at": an_hour_ago().isoformat()},
                         "ned")
    assert waste.status_code == 201 and waste.json()["reconciled"] is True, waste.text
