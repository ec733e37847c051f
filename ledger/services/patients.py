"""The patient registry: names, addresses and (issue 21) dates of birth encrypted (never in an
entry, a log line or an error message); entries carry the patient id and a commitment.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
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
from ledger.services.common import US_STATES, address, registrant_tz, run, text
from ledger.storage.authority import authority_at, chain_head
from ledger.storage.patient_keys import KEY_CHECK_NAME, PatientDetails, PatientKeyError, PatientKeys
from ledger.storage.store import CommandContext, Ledger, raw

#: The earliest date of birth taken: an earlier one is a typing mistake.
EARLIEST_BIRTH = date(1900, 1, 1)


def date_of_birth(value: Any, *, today: date | None = None, field: str = "date_of_birth") -> str | None:
    """A date of birth as typed ("1984-03-07"), checked: a real date, from 1900 on, and (given
    ``today``, the registrant's local day) not after today. None or "" is "not given". The
    value is never echoed in the error (health data). The page checks with this too."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("must be a date (YYYY-MM-DD)", field=field)
    v = value.strip()
    if not v:
        return None
    try:
        born = date.fromisoformat(v) if len(v) == 10 and v[4] == "-" and v[7] == "-" else None
    except ValueError:
        born = None
    if born is None:
        raise InvalidInput("is not a real date: give the year, month and day (YYYY-MM-DD)", field=field)
    if born < EARLIEST_BIRTH:
        raise InvalidInput("is before 1900: check the year", field=field)
    if today is not None and born > today:
        raise InvalidInput("is in the future: check the year, month and day", field=field)
    return born.isoformat()


def _born_by_today(ctx: CommandContext, dob: str | None) -> None:
    """Inside the transaction: the date of birth is not after the registrant's local today."""
    if dob is not None:
        date_of_birth(dob, today=ctx.now.astimezone(registrant_tz(ctx)).date())


def patient_details(name: Any, addr: AddressInput, *, field: str = "", dob: Any = None) -> PatientDetails:
    """Validate without ever echoing the value (health data); ``dob`` the optional date of
    birth (issue 21), checked by ``date_of_birth`` (its "not in the future" in the transaction)."""
    p = f"{field}." if field else ""
    n = text(name, field=f"{p}name", max_len=200)
    a = addr if isinstance(addr, AddressInput) else None
    if a is None:
        raise InvalidInput("must be a street address", field=f"{p}address")
    state = text(a.state, field=f"{p}address.state", max_len=2).upper()
    if state not in US_STATES:
        raise InvalidInput("is not a US state or territory code", field=f"{p}address.state")
    checked = address(AddressInput(a.street, a.city, state, a.postal_code), field=f"{p}address")
    born = date_of_birth(dob, field=f"{p}date_of_birth")
    return PatientDetails(name=n, street=checked.street, city=checked.city, state=checked.state,
                          postal_code=checked.postal_code, date_of_birth=born)


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
    details = patient_details(cmd.name, cmd.address, dob=cmd.date_of_birth)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        _born_by_today(ctx, details.date_of_birth)
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
    """A new name, address or date of birth: the registry row is re-sealed and the new commitment
    recorded. A date of birth left out keeps the one registered (a client that sends only name
    and address, as before issue 21, does not erase it)."""
    given = patient_details(cmd.name, cmd.address, dob=cmd.date_of_birth)
    reason = text(cmd.reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=CLINICIANS)
        _born_by_today(ctx, given.date_of_birth)
        check_patient_key(ctx.conn, keys, ctx.now)
        if ctx.view.get("patients", (ctx.registrant, cmd.patient_id)) is None:
            raise NotFound(f"no patient {cmd.patient_id!r} at {ctx.registrant}", field="patient_id")
        details = given
        if given.date_of_birth is None:
            row = ctx.view.raw.one(ctx.conn, "SELECT sealed FROM patient_registry WHERE registrant = :r AND "
                                             "patient_id = :p", {"r": ctx.registrant, "p": cmd.patient_id})
            if row is not None:
                kept = keys.open(ctx.registrant, cmd.patient_id, bytes(row["sealed"])).date_of_birth
                details = PatientDetails(**{**given.as_dict(), "date_of_birth": kept})
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
               "details": keys.commitment(principal.registrant, "request", given)}
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
            "date_of_birth": details.date_of_birth, "matches_commitment": matches}


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


#: Patients seen (an infusion or a preparation started) within this many days come first in a
#: search: the nurse at the chair is most often looking for someone on a course.
RECENT_DAYS = 14
#: At most this many patients per search answer; a longer list asks for more of the name.
SEARCH_LIMIT = 20
#: Roles that may see a patient's name and address (as ``read_patient``).
NAME_READERS = CLINICIANS | {Role.COMPLIANCE_OFFICER, Role.AUDITOR}


def _folded(text_: str) -> str:
    """Lower case without accents ("José" and "jose" match); for matching only, never shown."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text_) if not unicodedata.combining(c)).casefold()


def _chart_number(query: str) -> str | None:
    """A query that is a patient id ("P20", "p20") or its number alone ("20"), as the id."""
    q = query.strip().upper()
    if q.startswith("P"):
        q = q[1:]
    return f"P{int(q)}" if q.isascii() and q.isdigit() and len(q) <= 18 else None


def find_patients(ledger: Ledger, principal: Principal, query: str = "", *, keys: PatientKeys,
                  patient_id: str | None = None, log_action: str = "search",
                  limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """Patients of the principal's registrant for a pick list (issue 21): by chart number (the
    patient id, "P20" or "20") or by name (every word of the query starts a word of the name),
    an empty query listing those seen in the last ``RECENT_DAYS`` days; seen-recently first.

    Names, city and date of birth are returned only to a role that may read them (``NAME_READERS``, from the
    role entries as ``read_patient``); each patient whose name is returned is written to the
    patient-access log (action ``search``) in the same transaction, before the answer leaves.
    Other roles get ids and the last-seen day only, and a name search finds nothing for them.
    The query is never logged nor put in an error message: it may be part of a name.

    ``patient_id`` instead of a query: that one patient (the pick a page shows again, or its
    confirmation), logged as ``log_action``.

    Returns ``{"patients": [{patient_id, name, date_of_birth, place, last_seen, recent}], "names": bool,
    "more": int, "by": "chart" | "name" | "recent"}``."""
    import sqlalchemy as sa

    if not isinstance(query, str) or len(query) > 100:
        raise InvalidInput("type at most 100 characters of the name, or the chart number", field="patient_query")
    words = _folded(query).split()
    chart = patient_id if patient_id is not None else _chart_number(query)
    by = "chart" if chart else ("name" if words else "recent")
    if by == "name" and sum(len(w) for w in words) < 2:
        raise InvalidInput("type at least two letters of the name, or the chart number", field="patient_query")
    now = ledger.clock()
    since = format_time(now - timedelta(days=RECENT_DAYS))
    with ledger.engine.begin() as conn:
        r = raw(conn)
        staff_roles = authority_at(conn, principal.registrant, chain_head(conn, principal.registrant)).roles(
            principal.staff_id)
        names = bool(staff_roles & NAME_READERS)
        seen: dict[str, str] = {}
        for row in r.rows(conn, "SELECT patient_id, MAX(occurred_at) AS at FROM administrations WHERE registrant = :r "
                                "GROUP BY patient_id "
                                "UNION ALL SELECT patient_id, MAX(started_at) AS at FROM preparations "
                                "WHERE registrant = :r GROUP BY patient_id", {"r": principal.registrant}):
            if row["at"] and row["at"] > seen.get(row["patient_id"], ""):
                seen[row["patient_id"]] = row["at"]
        ids = [row["patient_id"] for row in r.rows(conn, "SELECT patient_id FROM patients WHERE registrant = :r",
                                                    {"r": principal.registrant})]
        if by == "chart":
            ids = [p for p in ids if p == chart]
        elif by == "recent":
            ids = [p for p in ids if seen.get(p, "") >= since]
        elif not names:
            ids = []  # a name search needs the names: nothing to match for this role
        details: dict[str, PatientDetails] = {}
        if names and ids:
            check_patient_key(conn, keys, now)
            sealed = {row["patient_id"]: bytes(row["sealed"]) for row in r.rows(
                conn, "SELECT patient_id, sealed FROM patient_registry WHERE registrant = :r",
                {"r": principal.registrant})}
            for p in ids:
                try:
                    if p in sealed:
                        details[p] = keys.open(principal.registrant, p, sealed[p])
                except PatientKeyError:
                    pass  # a row that does not decrypt: listed by id, flagged (verify --deep names it)
            if by == "name":
                def hit(d: PatientDetails) -> bool:
                    parts = _folded(d.name).replace("-", " ").split()
                    return all(any(part.startswith(w) for part in parts) for w in words)

                ids = [p for p in ids if p in details and hit(details[p])]

        def number(p: str) -> tuple:
            return (int(p[1:]) if p[1:].isdigit() else 0, p)

        recent = sorted((p for p in ids if seen.get(p, "") >= since), key=lambda p: seen[p], reverse=True)
        ids = recent + sorted((p for p in ids if seen.get(p, "") < since), key=number)
        shown, more = ids[:limit], max(0, len(ids) - limit)
        if any(p in details for p in shown):
            conn.execute(sa.text("INSERT INTO patient_access_log (registrant, staff_id, patient_id, action, accessed_at) "
                                 "VALUES (:r, :s, :p, :a, :t)"),
                         [{"r": principal.registrant, "s": principal.staff_id, "p": p, "a": log_action[:64],
                           "t": format_time(now)}
                          for p in shown if p in details])
    out = []
    for p in shown:
        d = details.get(p) if names else None
        out.append({"patient_id": p, "name": d.name if d else None, "unreadable": names and d is None,
                    # issue 21: the second identifier of a pick, to the same roles as the name
                    "date_of_birth": d.date_of_birth if d else None,
                    "place": f"{d.city} {d.state} {d.postal_code}" if d else None,
                    "last_seen": seen.get(p), "recent": seen.get(p, "") >= since})
    return {"patients": out, "names": names, "more": more, "by": by}

