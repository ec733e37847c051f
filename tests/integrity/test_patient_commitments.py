"""Patient-name commitments an inspector can open offline (issue 18).

Every new entry records a v2 commitment, a salted SHA-256 of the patient's name and address
whose opening (salt) the key holder derives per patient and per details version. With the
details and the opening, and no key, ``open_commitment`` checks it; anything else (another name,
a one-character edit, another patient or registrant, a wrong opening, malformed hex) fails, as
False, never an exception. Entries recorded before v2 keep their v1 (HMAC) commitments: the
registry checks, ``read_patient`` and the report annotation still accept them. An opening tells
nothing about the key or any other patient. The database parts run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import AddressInput, ChangePatientDetails, RegisterPatient
from ledger.integrity import patient_commitments as pc
from ledger.integrity.canonical import decode
from ledger.integrity.patient_commitments import open_commitment
from ledger.services.verify import verify
from ledger.storage.patient_keys import PatientDetails, PatientKeys
from ledger.storage.store import entries_t
from reports.administrations import annotate, check_openings
from tests.clinical.conftest import Ops
from tests.conftest import BACKENDS

REG, PID = "AB1234563", "P7"
KEY = PatientKeys(bytes(range(32)))
ZOE = PatientDetails("Zoë Example", "12 Elm St", "Austin", "TX", "78702")

#: Test vectors, pinned: the canonical bytes and the v1 commitment were computed with the code
#: before v2 (entries already recorded depend on them), the opening is what idempotent
#: registration depends on.
CANONICAL = b'{"city":"Austin","name":"Zo\xc3\xab Example","postal_code":"78702","state":"TX","street":"12 Elm St"}'
V1 = "23fade213a423429b9d06e05bb7910680f5bb8e6116799a709d030aa53724579"
OPENING = "b3e96668879f2f5bcf87c54108b3c6c7d679ad2deaf9396e69df41c21dcc8064"
V2 = "97cdc04246485cdc7e84d70133fb36ddfddb83f66dfe1878332acd18b2e07c4c"


def details(**changes: str) -> dict[str, str]:
    return {**ZOE.as_dict(), **changes}


# --- the scheme, no database ---------------------------------------------------------------------

def test_vectors_and_an_independent_reimplementation():
    assert ZOE.canonical() == CANONICAL
    assert KEY.commitment_v1(REG, PID, ZOE) == V1
    assert KEY.opening(REG, PID, ZOE) == OPENING
    assert KEY.commitment(REG, PID, ZOE) == V2
    # What an inspector implements from the documentation alone.
    spec = hashlib.sha256(b"csledger/patient-commitment/v2\x00" + bytes.fromhex(OPENING) + b"AB1234563\x00P7\x00"
                          + CANONICAL).hexdigest()
    assert spec == V2 and len(V2) == 64


def test_v2_opens_with_details_and_opening_and_no_key():
    assert open_commitment(REG, PID, details(), OPENING, V2) is True
    # The same details always give the same commitment (registration is idempotent).
    assert KEY.commitment(REG, PID, PatientDetails(**details())) == V2


@pytest.mark.parametrize("change", [
    {"name": "Zoe Example"},           # one character
    {"name": "Zoë Example "},          # one trailing space
    {"name": "Someone Else"},
    {"street": "14 Elm St"},
    {"city": "Dallas"},
    {"state": "OK"},
    {"postal_code": "78703"},
])
def test_changed_details_do_not_open(change):
    assert open_commitment(REG, PID, details(**change), OPENING, V2) is False


def test_another_patient_registrant_or_opening_does_not_open():
    assert open_commitment(REG, "P8", details(), OPENING, V2) is False
    assert open_commitment("FB7654329", PID, details(), OPENING, V2) is False
    other = KEY.opening(REG, "P8", ZOE)
    assert open_commitment(REG, PID, details(), other, V2) is False
    flipped = format(int(OPENING, 16) ^ 1, "064x")
    assert open_commitment(REG, PID, details(), flipped, V2) is False
    # Another clinic's key gives another opening for the same patient: it does not open either.
    assert open_commitment(REG, PID, details(), PatientKeys(b"\x01" * 32).opening(REG, PID, ZOE), V2) is False
    # A v1 commitment cannot be opened without the key, whatever the opening.
    assert open_commitment(REG, PID, details(), OPENING, V1) is False


@pytest.mark.parametrize("opening, commitment", [
    (OPENING.upper(), V2), (OPENING, V2.upper()),      # this format is lowercase hex
    (OPENING[:-2], V2), (OPENING, V2[:-1]), (OPENING + "00", V2),
    ("zz" + OPENING[2:], V2), ("", V2), (OPENING, ""),
    (None, V2), (OPENING, None), (12, V2), (bytes.fromhex(OPENING), V2), (OPENING, bytes.fromhex(V2)),
    (" " + OPENING[1:], V2), ("٣" + OPENING[1:], V2),  # a space, an Arabic-Indic digit
])
def test_malformed_hex_is_false_never_an_exception(opening, commitment):
    assert open_commitment(REG, PID, details(), opening, commitment) is False


@pytest.mark.parametrize("bad", [
    None, "Zoë", [], {k: v for k, v in details().items() if k != "city"}, {**details(), "dob": "1970-01-01"},
    {**details(), "postal_code": 78702}, {**details(), "name": None}, {**details(), "name": "Zo\ud800"},
])
def test_malformed_details_or_ids_are_false_never_an_exception(bad):
    assert open_commitment(REG, PID, bad, OPENING, V2) is False


def test_malformed_ids_are_false():
    for reg, pid in ((None, PID), (REG, None), (REG, 7), (REG + "\x00", PID), (REG, "P\x007")):
        assert open_commitment(reg, pid, details(), OPENING, V2) is False
    # NUL separates the fields: shifting one across it would otherwise keep the bytes.
    with pytest.raises(ValueError):
        pc.commitment_v2("AB\x001234563", PID, CANONICAL, bytes(32))


def test_matches_accepts_v1_and_v2_only_for_the_same_details():
    assert KEY.matches(REG, PID, ZOE, V2) and KEY.matched_version(REG, PID, ZOE, V2) == 2
    assert KEY.matches(REG, PID, ZOE, V1) and KEY.matched_version(REG, PID, ZOE, V1) == 1
    moved = PatientDetails("Zoë Example", "14 Elm St", "Austin", "TX", "78702")
    for c in (V1, V2):
        assert not KEY.matches(REG, PID, moved, c)
        assert not KEY.matches(REG, "P8", ZOE, c)
        assert not PatientKeys(b"\x01" * 32).matches(REG, PID, ZOE, c)
    for junk in (None, "", OPENING, V2.upper(), "é" * 64, 7):
        assert not KEY.matches(REG, PID, ZOE, junk)


def test_an_opening_reveals_nothing_usable():
    """Per patient and per details version; not the v1 commitment, not the commitment key; the
    opening of one patient opens nobody else's commitment."""
    moved = PatientDetails("Zoë Example", "14 Elm St", "Austin", "TX", "78702")
    openings = {KEY.opening(REG, PID, ZOE), KEY.opening(REG, "P8", ZOE), KEY.opening("FB7654329", PID, ZOE),
                KEY.opening(REG, PID, moved), KEY.opening(REG, "request", ZOE)}
    assert len(openings) == 5
    assert OPENING not in {V1, V2, KEY.commitment_v1(REG, "P8", ZOE)}
    assert bytes.fromhex(OPENING) not in (KEY._mac, bytes(range(32)))  # noqa: SLF001 (the secret it must not be)
    # One patient's details and opening open only that patient's commitment of those details.
    assert not open_commitment(REG, PID, moved.as_dict(), OPENING, KEY.commitment(REG, PID, moved))
    assert open_commitment(REG, PID, moved.as_dict(), KEY.opening(REG, PID, moved), KEY.commitment(REG, PID, moved))


def test_the_core_module_imports_no_csledger_module():
    tree = ast.parse(Path(pc.__file__).read_text())
    imported = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "hashlib", "hmac", "json", "collections.abc", "typing"}, imported


# --- old entries keep v1; every check accepts it -------------------------------------------------

def latest_entries(ledger, kind: str) -> list[dict]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).order_by(entries_t.c.seq)).scalars().all()
    return [e for e in (decode(bytes(r)) for r in rows) if e["kind"] == kind]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_v1_rows_still_pass_the_registry_checks_and_new_entries_are_v2(ledger, monkeypatch):
    ops = Ops(ledger)  # registers "Pat Example" with v2
    # A patient registered and dosed before v2: the code then recorded the HMAC commitment.
    with monkeypatch.context() as m:
        m.setattr(PatientKeys, "commitment", PatientKeys.commitment_v1)
        old = services.register_patient(ledger, ops.nurse, RegisterPatient(
            "Olive Older", AddressInput("3 Oak Ave", "Austin", "TX", "78701")), keys=ops.keys)["patient_id"]
    vials = ops.receive(2)
    ops.dose(vials[0], patient_id=old)
    ops.dose(vials[1])
    older = PatientDetails("Olive Older", "3 Oak Ave", "Austin", "TX", "78701")
    registered = {e["patient_id"]: e["commitment"] for e in latest_entries(ledger, "patient_registered")}
    assert registered[old] == ops.keys.commitment_v1(ops.dea, old, older)
    assert registered[ops.patient_id] == ops.keys.commitment(ops.dea, ops.patient_id, PatientDetails(
        "Pat Example", "1 Elm St", "Austin", "TX", "78701"))
    doses = {e["patient_id"]: e["patient_commitment"] for e in latest_entries(ledger, "dose_administered")}
    assert doses == registered

    assert services.check_registry(ledger, ops.dea, keys=ops.keys) == []
    report = verify(ledger, deep=True, patient_keys=ops.keys)
    assert report.ok, [str(p) for p in report.problems]
    for pid in (old, ops.patient_id):
        assert services.read_patient(ledger, ops.nurse, pid, keys=ops.keys)["matches_commitment"]

    # The report annotation: a v1 row embeds no opening (nothing to open without the key), a v2
    # row embeds one, and the offline check accepts both (counting the v1 one as not openable).
    monkeypatch.setattr(PatientKeys, "from_settings", classmethod(lambda cls, settings: ops.keys))
    figures = {"rows": [{"seq": e["seq"], "patient_id": e["patient_id"], "patient_commitment": e["patient_commitment"]}
                        for e in latest_entries(ledger, "dose_administered")]}
    ann = annotate(ledger, ops.dea, figures)
    assert ann["patients"][old]["opening"] is None and ann["patients"][old]["matches_commitment"]
    assert ann["patients"][old]["details"] == older.as_dict()
    assert ann["patients"][ops.patient_id]["opening"] == ops.keys.opening(ops.dea, ops.patient_id, PatientDetails(
        "Pat Example", "1 Elm St", "Austin", "TX", "78701"))
    assert check_openings(ann, figures, ops.dea) == ([], 1, 1)
    assert check_openings(ann, figures) == ([], 1, 1)  # the registrant annotate embedded

    # A v1 row changed outside the ledger is still caught, by the registry check and by verify.
    fake = ops.keys.seal(ops.dea, old, PatientDetails("Olive Older", "5 Oak Ave", "Austin", "TX", "78701"))
    with ledger.engine.begin() as c:
        saved = c.execute(sa.text("SELECT sealed FROM patient_registry WHERE patient_id = :p"), {"p": old}).scalar()
        c.execute(sa.text("UPDATE patient_registry SET sealed = :s WHERE patient_id = :p"), {"s": fake, "p": old})
    assert services.check_registry(ledger, ops.dea, keys=ops.keys) == [old]
    assert any(f"patient {old}'s registry row no longer matches the commitment" in str(p)
               for p in verify(ledger, deep=True, patient_keys=ops.keys).problems)
    with ledger.engine.begin() as c:
        c.execute(sa.text("UPDATE patient_registry SET sealed = :s WHERE patient_id = :p"),
                  {"s": bytes(saved), "p": old})

    # The next details change of the v1 patient records v2; old entries are never rewritten.
    services.change_patient_details(ledger, ops.nurse, ChangePatientDetails(
        old, "Olive Older", AddressInput("5 Oak Ave", "Austin", "TX", "78701"), "moved"), keys=ops.keys)
    moved = PatientDetails("Olive Older", "5 Oak Ave", "Austin", "TX", "78701")
    change = latest_entries(ledger, "patient_details_changed")[-1]
    assert change["commitment"] == ops.keys.commitment(ops.dea, old, moved)
    assert open_commitment(ops.dea, old, moved.as_dict(), ops.keys.opening(ops.dea, old, moved), change["commitment"])
    assert {e["patient_id"]: e["commitment"] for e in latest_entries(ledger, "patient_registered")} == registered
    assert services.check_registry(ledger, ops.dea, keys=ops.keys) == []
    report = verify(ledger, deep=True, patient_keys=ops.keys)
    assert report.ok, [str(p) for p in report.problems]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_registering_the_same_details_again_is_idempotent(ledger):
    ops = Ops(ledger)
    cmd = RegisterPatient("Ida Idem", AddressInput("9 Pine Rd", "Austin", "TX", "78701"))
    first = services.register_patient(ledger, ops.nurse, cmd, keys=ops.keys, idempotency_key="reg-ida-1")
    again = services.register_patient(ledger, ops.nurse, cmd, keys=ops.keys, idempotency_key="reg-ida-1")
    assert again["patient_id"] == first["patient_id"] and again.get("replayed") is True
    # A v2 commitment is deterministic: the entry's is what the keys give for these details.
    entry = [e for e in latest_entries(ledger, "patient_registered") if e["patient_id"] == first["patient_id"]][0]
    assert entry["commitment"] == ops.keys.commitment(ops.dea, first["patient_id"], PatientDetails(
        "Ida Idem", "9 Pine Rd", "Austin", "TX", "78701"))
