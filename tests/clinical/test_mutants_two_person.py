"""The two-person rules, check by check (issue 14: mutation testing, bench/mutation.py): a witness
or second counter is another enrolled person in a witnessing (counting) role, named in the error's
field when refused, and signs the entry; a destruction needs two different witnesses; a manager
who counted does not approve the count's discrepancy. Each refusal writes nothing. SQLite."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ledger import services
from ledger.domain.commands import (
    AdministerDose,
    CountLineInput,
    DestroyStock,
    DrawInput,
    RecordWaste,
    ResolveDiscrepancy,
    StartCount,
    SubmitCount,
    WasteInput,
)
from ledger.domain.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    LedgerError,
    NotFound,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.integrity.canonical import decode
from ledger.services.common import sign_witness
from tests.clinical.conftest import PRESCRIBER_DEA
from tests.conftest import DEA, KETAMINE_50, an_hour_ago, entry_count


def last_entries(ops, n: int) -> list[dict]:
    with ops.ledger.reading() as c:
        rows = c.exec_driver_sql("SELECT canonical FROM entries WHERE registrant = ? ORDER BY seq DESC LIMIT ?",
                                 (DEA, n)).all()
    return [decode(bytes(r[0])) for r in reversed(rows)]


def signed(e: dict) -> list[tuple[str, str, str]]:
    return [(s["staff_id"], s["printed_name"], s["meaning"]) for s in e["signatures"]]


def refuses(ops, exc: type[LedgerError], field: str, reason: str | None, fn, *args, **kw) -> LedgerError:
    before = entry_count(ops.ledger)
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert type(e.value) is exc and e.value.field == field
    if reason is not None:
        assert e.value.reason == reason
    assert entry_count(ops.ledger) == before
    return e.value


def stranger(ops) -> Principal:
    return Principal(DEA, "S-NOBODY", "No Body", AuthMethod.PASSWORD)


# --- common.sign_witness, through a waste -----------------------------------------------------------


@pytest.fixture
def unreconciled(ops) -> str:
    vial = ops.receive(1)[0]
    return ops.dose(vial, drawn="4.00", given="3.00")["administration_id"]


def waste(ops, admin_id: str, witness, principal=None, **kw):
    return services.record_waste(ops.ledger, principal or ops.nurse, RecordWaste(
        admin_id, "1.00", "syringe into drug disposal container", an_hour_ago()), witness=witness, **kw)


def test_a_waste_needs_a_witness(ops, unreconciled):
    refuses(ops, InvalidInput, "witness", "a second, authenticated person must witness this",
            waste, ops, unreconciled, None)


def test_the_witness_is_not_the_actor(ops, unreconciled):
    refuses(ops, Conflict, "witness", "the witness must be a different person from whoever acts or witnesses",
            waste, ops, unreconciled, ops.nurse)
    # the same person signed in another way is still the same person
    again = Principal(DEA, ops.nurse.staff_id, "Nora Nurse", AuthMethod.CONSOLE_BOOTSTRAP)
    refuses(ops, Conflict, "witness", None, waste, ops, unreconciled, again)


def test_the_witness_is_enrolled_here_in_a_witnessing_role(ops, unreconciled):
    e = refuses(ops, NotFound, "witness", None, waste, ops, unreconciled, stranger(ops))
    assert "S-NOBODY" in e.reason
    e = refuses(ops, NotFound, "witness", None, waste, ops, unreconciled,
                Principal("FB7654329", ops.nurse2.staff_id, "Ned Nurse", AuthMethod.PASSWORD))
    e = refuses(ops, Forbidden, "witness", None, waste, ops, unreconciled, ops.auditor)
    assert e.reason.startswith("Ari Auditor holds none of the roles this needs (")
    for role in ("compliance_officer", "manager", "nurse", "pharmacist", "prescriber"):
        assert role in e.reason


def test_the_witness_signs_the_waste(ops, unreconciled):
    res = waste(ops, unreconciled, ops.pharmacist)
    assert res["administration_id"] == unreconciled and res["reconciled"] is True
    (e,) = last_entries(ops, 1)
    assert e["kind"] == "dose_wasted"
    assert signed(e) == [(ops.nurse.staff_id, "Nora Nurse", "performed"),
                         (ops.pharmacist.staff_id, "Pia Pharmacist", "witnessed")]
    assert e["signatures"][1]["auth_method"] == "password"


def test_a_waste_retried_with_another_witness_is_not_a_replay(ops, unreconciled):
    cmd = RecordWaste(unreconciled, "0.50", "syringe into drug disposal container", an_hour_ago())
    services.record_waste(ops.ledger, ops.nurse, cmd, witness=ops.pharmacist, idempotency_key="w-1")
    again = services.record_waste(ops.ledger, ops.nurse, cmd, witness=ops.pharmacist, idempotency_key="w-1")
    assert again["replayed"] is True
    refuses(ops, IdempotencyConflict, "idempotency_key", None, services.record_waste, ops.ledger, ops.nurse, cmd,
            witness=ops.nurse2, idempotency_key="w-1")


def test_sign_witness_against_others(ops):
    """``others``: the people who already act or witness in the command (none of them may witness again)."""
    got: list = []

    def attempt(witness, others=(), field="witness"):
        def build(ctx):
            got.append(sign_witness(ctx, ops.nurse, witness, field=field, others=others))
            raise LookupError("rolled back")  # nothing is appended

        with pytest.raises(LookupError):
            ops.ledger.execute(DEA, "t", {}, build, principal_id=ops.nurse.staff_id)

    attempt(ops.pharmacist, others=(ops.nurse2,))
    with pytest.raises(InvalidInput) as e:
        attempt("ned", field="witnesses[0]")
    assert e.value.reason == "must be an authenticated staff member" and e.value.field == "witnesses[0]"
    assert got[-1]["staff_id"] == ops.pharmacist.staff_id and got[-1]["meaning"] == "witnessed"
    assert got[-1]["printed_name"] == "Pia Pharmacist"
    for others in ((ops.pharmacist,), (ops.nurse2, ops.pharmacist)):
        with pytest.raises(Conflict) as e:
            def build(ctx, others=others):
                return sign_witness(ctx, ops.nurse, ops.pharmacist, field="witnesses[1]", others=others)

            ops.ledger.execute(DEA, "t", {}, build, principal_id=ops.nurse.staff_id)
        assert e.value.field == "witnesses[1]"
    with pytest.raises(InvalidInput) as e:
        ops.ledger.execute(DEA, "t", {}, lambda ctx: sign_witness(ctx, ops.nurse, None), principal_id="x")
    assert e.value.field == "witness"


# --- administer_dose: a waste in the same command --------------------------------------------------


def test_a_dose_with_waste_needs_a_witness(ops):
    vial = ops.receive(1)[0]
    refuses(ops, InvalidInput, "witness", "waste needs a second, authenticated person as witness",
            ops.dose, vial, drawn="4.00", given="3.00", waste="1.00")
    refuses(ops, Conflict, "witness", None, ops.dose, vial, drawn="4.00", given="3.00", waste="1.00", witness=ops.nurse)
    refuses(ops, Forbidden, "witness", None, ops.dose, vial, drawn="4.00", given="3.00", waste="1.00",
            witness=ops.auditor)
    ops.dose(vial, drawn="4.00", given="3.00", waste="1.00", witness=ops.nurse2)
    given, wasted = last_entries(ops, 2)
    assert signed(given) == [(ops.nurse.staff_id, "Nora Nurse", "performed")]
    assert signed(wasted) == [(ops.nurse.staff_id, "Nora Nurse", "performed"),
                              (ops.nurse2.staff_id, "Ned Nurse", "witnessed")]
    # without waste no witness is asked for, and one given is not signed in
    vial2 = ops.receive(1)[0]
    ops.dose(vial2, drawn="3.00", given="3.00", witness=ops.auditor)
    (e,) = last_entries(ops, 1)
    assert signed(e) == [(ops.nurse.staff_id, "Nora Nurse", "performed")]


def test_a_dose_retried_with_another_witness_is_not_a_replay(ops):
    vial = ops.receive(1)[0]
    at = an_hour_ago()
    cmd = AdministerDose(ops.patient_id, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(vial, "4.00"),), "3.00", at,
                         at + timedelta(minutes=40), waste=WasteInput("1.00", "syringe into drug disposal container"))
    services.administer_dose(ops.ledger, ops.nurse, cmd, witness=ops.nurse2, idempotency_key="d-1")
    again = services.administer_dose(ops.ledger, ops.nurse, cmd, witness=ops.nurse2, idempotency_key="d-1")
    assert again["replayed"] is True
    refuses(ops, IdempotencyConflict, "idempotency_key", None, services.administer_dose, ops.ledger, ops.nurse, cmd,
            witness=ops.pharmacist, idempotency_key="d-1")


# --- counts: two different counters; the approver did not count ------------------------------------


def count(ops, second, principal=None, counted: int = 4, session: str | None = None, **kw):
    if session is None:
        session = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))["session_id"]
    return services.submit_count(ops.ledger, principal or ops.nurse, SubmitCount(
        session, (CountLineInput(KETAMINE_50, counted),), an_hour_ago() + timedelta(minutes=30)),
        second_counter=second, **kw)


def session(ops) -> str:
    return services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))["session_id"]


def test_a_count_needs_a_second_counter(ops):
    ops.receive(4)
    sid = session(ops)
    refuses(ops, InvalidInput, "second_counter", "a second, authenticated counter is required",
            lambda: count(ops, None, session=sid))
    refuses(ops, InvalidInput, "second_counter", "a second, authenticated counter is required",
            lambda: count(ops, "ned", session=sid))


def test_the_second_counter_is_another_enrolled_counter(ops):
    ops.receive(4)
    sid = session(ops)
    refuses(ops, Conflict, "second_counter", "a count needs two different people",
            lambda: count(ops, ops.nurse, session=sid))
    refuses(ops, NotFound, "second_counter", None, lambda: count(ops, stranger(ops), session=sid))
    e = refuses(ops, Forbidden, "second_counter", None, lambda: count(ops, ops.prescriber, session=sid))
    assert e.reason.startswith("Dr. Dee Prescriber holds none of the roles this needs (")
    res = count(ops, ops.pharmacist, session=sid)
    assert res["discrepancy_ids"] == []
    (e,) = last_entries(ops, 1)
    assert e["kind"] == "stock_counted"
    assert signed(e) == [(ops.nurse.staff_id, "Nora Nurse", "counted"),
                         (ops.pharmacist.staff_id, "Pia Pharmacist", "counted")]


def test_the_first_counter_is_checked_before_the_second(ops):
    ops.receive(4)
    sid = session(ops)
    refuses(ops, Forbidden, "principal", None, lambda: count(ops, ops.nurse2, principal=ops.prescriber, session=sid))


def test_a_count_retried_with_another_second_counter_is_not_a_replay(ops):
    ops.receive(4)
    s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
    cmd = SubmitCount(s["session_id"], (CountLineInput(KETAMINE_50, 4),), an_hour_ago() + timedelta(minutes=30))
    services.submit_count(ops.ledger, ops.nurse, cmd, second_counter=ops.pharmacist, idempotency_key="c-1")
    again = services.submit_count(ops.ledger, ops.nurse, cmd, second_counter=ops.pharmacist, idempotency_key="c-1")
    assert again["replayed"] is True
    refuses(ops, IdempotencyConflict, "idempotency_key", None, services.submit_count, ops.ledger, ops.nurse, cmd,
            second_counter=ops.nurse2, idempotency_key="c-1")


def test_a_manager_who_counted_does_not_approve(ops):
    ops.receive(4)
    res = count(ops, ops.nurse2, principal=ops.manager, counted=3)  # one vial short: a discrepancy
    (d,) = res["discrepancy_ids"]
    with ops.ledger.reading() as c:
        counters = c.exec_driver_sql("SELECT counters FROM discrepancies WHERE discrepancy_id = ?", (d,)).scalar()
    assert set(json.loads(counters)) == {ops.manager.staff_id, ops.nurse2.staff_id}
    cmd = ResolveDiscrepancy(d, "theft_or_loss", "not found after a search")
    refuses(ops, Forbidden, "principal", "the manager approving a discrepancy must not be one of its counters",
            services.resolve_discrepancy, ops.ledger, ops.manager, cmd, witness=ops.pharmacist)
    # issue 15: the second person is not a counter either
    refuses(ops, Conflict, "witness", "the second person on a resolution must not be one of the counters whose "
            "count it resolves", services.resolve_discrepancy, ops.ledger, ops.manager2, cmd, witness=ops.nurse2)
    out = services.resolve_discrepancy(ops.ledger, ops.manager2, cmd, witness=ops.pharmacist)
    assert out["discrepancy_id"] == d


# --- destruction: two different witnesses ----------------------------------------------------------


def destroy(ops, witnesses, principal=None, vial: str | None = None, **kw):
    vial = vial or ops.receive(1)[0]
    return services.destroy_stock(ops.ledger, principal or ops.nurse, DestroyStock(
        (vial,), "incinerated by a reverse distributor", "on site", "expired", an_hour_ago()), witnesses=witnesses, **kw)


def test_a_destruction_needs_two_different_witnesses(ops):
    msg = "destruction needs two authorized employee witnesses (Form 41)"
    v = ops.receive(1)[0]
    refuses(ops, InvalidInput, "witnesses", msg, destroy, ops, [ops.pharmacist], vial=v)
    refuses(ops, InvalidInput, "witnesses", msg, destroy, ops, [], vial=v)
    refuses(ops, InvalidInput, "witnesses", msg, destroy, ops, ops.pharmacist, vial=v)
    refuses(ops, InvalidInput, "witnesses", msg, destroy, ops, None, vial=v)
    refuses(ops, Conflict, "witnesses", "the two witnesses must be two different people",
            destroy, ops, [ops.pharmacist, ops.pharmacist], vial=v)
    refuses(ops, Conflict, "witnesses", "the two witnesses must be two different people",
            destroy, ops, ("ned", "ned"), vial=v)


def test_each_destruction_witness_is_checked_and_named(ops):
    v = ops.receive(1)[0]
    refuses(ops, Conflict, "witnesses[0]", "the witness must be a different person from whoever acts or witnesses",
            destroy, ops, [ops.nurse, ops.pharmacist], vial=v)
    refuses(ops, Conflict, "witnesses[1]", None, destroy, ops, [ops.pharmacist, ops.nurse], vial=v)
    refuses(ops, Forbidden, "witnesses[1]", None, destroy, ops, [ops.pharmacist, ops.auditor], vial=v)
    refuses(ops, NotFound, "witnesses[0]", None, destroy, ops, [stranger(ops), ops.pharmacist], vial=v)
    refuses(ops, InvalidInput, "witnesses[1]", "must be an authenticated staff member", destroy, ops,
            [ops.pharmacist, "ned"], vial=v)


def test_both_witnesses_sign_the_destruction(ops):
    destroy(ops, [ops.pharmacist, ops.manager])
    (e,) = last_entries(ops, 1)
    assert e["kind"] == "stock_destroyed"
    assert signed(e) == [(ops.nurse.staff_id, "Nora Nurse", "performed"),
                         (ops.pharmacist.staff_id, "Pia Pharmacist", "witnessed"),
                         (ops.manager.staff_id, "Mia Manager", "witnessed")]
    destroy(ops, [ops.pharmacist, ops.manager, ops.nurse2])  # more than two: each signs
    (e,) = last_entries(ops, 1)
    assert [s[2] for s in signed(e)] == ["performed", "witnessed", "witnessed", "witnessed"]


def test_a_destruction_retried_with_other_witnesses_is_not_a_replay(ops):
    vial = ops.receive(1)[0]
    cmd = DestroyStock((vial,), "incinerated", "on site", "expired", an_hour_ago())
    services.destroy_stock(ops.ledger, ops.nurse, cmd, witnesses=[ops.pharmacist, ops.manager], idempotency_key="x-1")
    again = services.destroy_stock(ops.ledger, ops.nurse, cmd, witnesses=[ops.pharmacist, ops.manager],
                                   idempotency_key="x-1")
    assert again["replayed"] is True
    refuses(ops, IdempotencyConflict, "idempotency_key", None, services.destroy_stock, ops.ledger, ops.nurse, cmd,
            witnesses=[ops.pharmacist, ops.nurse2], idempotency_key="x-1")


def test_a_late_witnessed_waste_or_count_keeps_its_reason(ops, unreconciled):
    """On the same lines as the second signature: the late-entry reason is recorded with it."""
    late = an_hour_ago() - timedelta(hours=30)
    services.record_waste(ops.ledger, ops.nurse, RecordWaste(unreconciled, "0.50", "sink", late + timedelta(hours=2),
                                                             late_reason="paper log during downtime"),
                          witness=ops.pharmacist)
    (e,) = last_entries(ops, 1)
    assert e["kind"] == "dose_wasted" and e["late_reason"] == "paper log during downtime"
    sid = session(ops)
    services.submit_count(ops.ledger, ops.nurse, SubmitCount(sid, (CountLineInput(KETAMINE_50, 0),),
                                                             an_hour_ago() - timedelta(hours=30),
                                                             late_reason="counted on paper"), second_counter=ops.nurse2)
    (e,) = last_entries(ops, 1)
    assert e["kind"] == "stock_counted" and e["late_reason"] == "counted on paper"

