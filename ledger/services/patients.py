"""The patient registry: names and addresses encrypted (never in an entry, a log line or an
error message); entries carry the patient id and a commitment.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import (
    AddressInput,
    ChangePatientDetails,
    RegisterPatient,
)
from ledger.domain.errors import Forbidden, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.integrity.canonical import format_time
from ledger.services.administration import CLINICIANS
from ledger.services.common import US_STATES, address, run, text
from ledger.storage.authority import authority_at, chain_head
from ledger.storage.patient_keys import KEY_CHECK_NAME, PatientDetails, PatientKeyError, PatientKeys
from ledger.storage.store import CommandContext, Ledger, raw


def patient_details(name: Any, addr: AddressInput, *, field: str = "") -> PatientDetails:
    """Validate without ever echoing the value (health data)."""
    p = f"{field}." if field else ""
    n = text(name, field=f"{p}name", max_len=200)
    a = addr if isinstance(addr, AddressInput) else None
    if a is None:
        raise InvalidInput("must be a street address", field=f"{p}address")
    state = text(a.state, field=f"{p}address.state", max_len=2).upper()
    if state not in US_STATES:
        raise InvalidInput("is not a US state or territory code", field=f"{p}address.state")
    checked = address(AddressInput(a.street, a.city, state, a.postal_code), field=f"{p}address")
    return PatientDetails(name=n, street=checked.street, city=checked.city, state=checked.state,
                          postal_code=checked.postal_code)


def check_patient_key(conn, keys: PatientKeys, now: datetime) -> None:
    """Store the key-check value at first use; refuse a key that is not the registry's."""
    r = raw(conn)
    row = r.one(conn, "SELECT check_value FROM patient_key_check WHERE name = :n", {"n": KEY_CHECK_NAME})
    if row is None:
        r.run(conn, "INSERT INTO patient_key_check (name, check_value, created_at) VALUES (:n, :v, :t)",
              {"n": KEY_CHECK_NAME, "v": keys.check_value(), "t": format_time(now)})
    elif row["check_value"] != keys.check_value():
        raise PatientKeyError("the patient key is not the key this registry was written with; "
                              "restore the backed-up key (nothing was written)", field="patient_key")


def verify_patient_key(ledger: Ledger, keys: PatientKeys) -> None:
    """At start: fail fast when the configured key is not the registry's key."""
    with ledger.engine.begin() as conn:
        check_patient_key(conn, keys, ledger.clock())


def register_patient(ledger: Ledger, principal: Principal, cmd: RegisterPatient, *, keys: PatientKeys,
                     idempotency_key: str | None = None) -> dict:
    """Add a patient: the encrypted registry row and a ``patient_registered`` entry holding the
    id and the commitment, in one transaction."""
    details = patient_details(cmd.name, cmd.address)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        check_patient_key(ctx.conn, keys, ctx.now)
        patient_id = f"P{ctx.next_seq}"
        commitment = keys.commitment(ctx.registrant, patient_id, details)
        sealed = keys.seal(ctx.registrant, patient_id, details)
        ctx.view.raw.run(ctx.conn, "INSERT INTO patient_registry (registrant, patient_id, sealed, updated_at) "
                                   "VALUES (:r, :p, :s, :t)",
                         {"r": ctx.registrant, "p": patient_id, "s": sealed, "t": format_time(ctx.now)})
        ctx.append(ev.PatientRegistered(patient_id=patient_id, commitment=commitment,
                                        sealed_sha256=hashlib.sha256(sealed).hexdigest()),
                   signatures=[sig], occurred_at=ctx.now)
        return {"patient_id": patient_id}

    # The idempotency hash must not be a hash of a name: hash a commitment instead (its opening
    # is keyed, so it cannot be tested against guessed names).
    request = {"type": "RegisterPatient", "details": keys.commitment(principal.registrant, "request", details)}
    return run(ledger, principal, "register_patient", cmd, build, idempotency_key, request)


def change_patient_details(ledger: Ledger, principal: Principal, cmd: ChangePatientDetails, *, keys: PatientKeys,
                           idempotency_key: str | None = None) -> dict:
    """A new name or address: the registry row is re-sealed and the new commitment recorded."""
    details = patient_details(cmd.name, cmd.address)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        check_patient_key(ctx.conn, keys, ctx.now)
        if ctx.view.get("patients", (ctx.registrant, cmd.patient_id)) is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}", field="patient_id")
        sealed = keys.seal(ctx.registrant, cmd.patient_id, details)
        ctx.view.raw.run(ctx.conn, "UPDATE patient_registry SET sealed = :s, updated_at = :t "
                                   "WHERE registrant = :r AND patient_id = :p",
                         {"r": ctx.registrant, "p": cmd.patient_id, "t": format_time(ctx.now), "s": sealed})
        ctx.append(ev.PatientDetailsChanged(patient_id=cmd.patient_id,
                                            commitment=keys.commitment(ctx.registrant, cmd.patient_id, details),
                                            reason=reason, sealed_sha256=hashlib.sha256(sealed).hexdigest()),
                   signatures=[sig], occurred_at=ctx.now)
        return {"patient_id": cmd.patient_id}

    request = {"type": "ChangePatientDetails", "patient_id": cmd.patient_id, "reason": reason,
               "details": keys.commitment(principal.registrant, "request", details)}
    return run(ledger, principal, "change_patient_details", cmd, build, idempotency_key, request)


def read_patient(ledger: Ledger, principal: Principal, patient_id: str, *, keys: PatientKeys) -> dict:
    """Name and address for the administration record, for an enrolled clinician; every read is
    written to the access log, and a registry row that no longer matches its commitment says so."""
    import sqlalchemy as sa

    with ledger.engine.begin() as conn:
        check_patient_key(conn, keys, ledger.clock())
        r = raw(conn)
        # Authority from the role entries (issue 16), never the staff_roles projection.
        staff_roles = authority_at(conn, principal.registrant, chain_head(conn, principal.registrant)).roles(
            principal.staff_id)
        if not staff_roles & (CLINICIANS | {Role.COMPLIANCE_OFFICER, Role.AUDITOR}):
            raise Forbidden("reading a patient's name and address needs a clinical, compliance or auditor role",
                            field="principal")
        row = r.one(conn, "SELECT sealed FROM patient_registry WHERE registrant = :r AND patient_id = :p",
                    {"r": principal.registrant, "p": patient_id})
        committed = r.one(conn, "SELECT commitment FROM patients WHERE registrant = :r AND patient_id = :p",
                          {"r": principal.registrant, "p": patient_id})
        if row is None or committed is None:
            raise NotFound(f"no patient {patient_id!r} at {principal.registrant}", field="patient_id")
        details = keys.open(principal.registrant, patient_id, bytes(row["sealed"]))
        conn.execute(sa.text("INSERT INTO patient_access_log (registrant, staff_id, patient_id, action, accessed_at) "
                             "VALUES (:r, :s, :p, 'read', :t)"),
                     {"r": principal.registrant, "s": principal.staff_id, "p": patient_id,
                      "t": format_time(ledger.clock())})
    # The latest entry may hold a v1 (HMAC) or a v2 (salted hash) commitment: either matches.
    matches = keys.matches(principal.registrant, patient_id, details, committed["commitment"])
    return {"patient_id": patient_id, "name": details.name,
            "address": {"street": details.street, "city": details.city, "state": details.state,
                        "postal_code": details.postal_code},
            "matches_commitment": matches}


def check_registry(ledger: Ledger, registrant: str, *, keys: PatientKeys) -> list[str]:
    """Patient ids whose registry row was changed without a ``patient_details_changed`` entry
    (or cannot be decrypted): the registry no longer matches the commitment in the ledger."""
    bad = []
    with ledger.reading() as conn:
        r = raw(conn)
        rows = r.rows(conn, "SELECT g.patient_id, g.sealed, p.commitment FROM patient_registry g "
                            "LEFT JOIN patients p ON p.registrant = g.registrant AND p.patient_id = g.patient_id "
                            "WHERE g.registrant = :r ORDER BY g.patient_id", {"r": registrant})
    for row in rows:
        if keys.registry_row_problem(registrant, row["patient_id"], row["sealed"], row["commitment"]) is not None:
            bad.append(row["patient_id"])
    return bad
