"""``witness_enrolled_by_actor``: two signatures that may be one person.

A registrant with a single manager or administrator enrols staff alone (no one else could
approve). For 90 days after such an enrolment, an entry signed by both the enroller and the
person enrolled (a waste and its witness, a count and its second counter, a destruction and
its witnesses, an approval) is a high alert: one person can have created the second login.

"Alone" follows the approvals: an enrolment approved only by people whom the enroller had
themselves enrolled alone in the previous 90 days was, in effect, done alone too (an
administrator enrols a manager alone, then enrols a nurse "approved" by that manager), and the
people vouching for it are the enroller and those approvers.

Who enrolled whom comes from the ``staff_enrolled`` entries (the chain), looked up through
``enrolment_of(staff_id)``: the decoded enrolment entry of a staff member, or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger.domain.alerts.candidates import NON_EVENT_KINDS, Candidate, signers
from ledger.integrity.canonical import format_time, parse_time

#: How long after an enrolment done alone a shared signature raises the alert.
WINDOW = timedelta(days=90)
RULE = "witness_enrolled_by_actor"
#: Deeper chains of people enrolled alone than this are not followed (each link is an entry
#: earlier in the log, so a chain ends; this bounds the reads of one check).
_MAX_DEPTH = 20

EnrolmentOf = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class AloneEnrolment:
    """A staff member enrolled alone (in effect): the entry, when, and who vouched for them."""

    seq: int
    staff_id: str
    at: datetime
    vouched_by: frozenset[str]


def alone_enrolment(staff_id: str, enrolment_of: EnrolmentOf, *, _depth: int = 0) -> AloneEnrolment | None:
    """How ``staff_id`` was enrolled, when it was done alone in effect; None when a second,
    independent person approved it (or the entry cannot be found)."""
    e = enrolment_of(staff_id)
    if e is None or e.get("kind") != "staff_enrolled" or e.get("staff_id") != staff_id or _depth > _MAX_DEPTH:
        return None
    at = parse_time(e["recorded_at"])
    # The first administrator enrolls themself at the console: no second person to be.
    who = [s for s in signers(e) if s != staff_id]
    if not who:
        return None
    if len(who) == 1:
        return AloneEnrolment(e["seq"], staff_id, at, frozenset(who))
    for enroller in who:
        vouched = {enroller}
        for other in who:
            if other == enroller:
                continue
            inner = alone_enrolment(other, enrolment_of, _depth=_depth + 1)
            if inner is None or enroller not in inner.vouched_by or at >= inner.at + WINDOW:
                break
            vouched |= inner.vouched_by | {other}
        else:
            return AloneEnrolment(e["seq"], staff_id, at, frozenset(vouched))
    return None


def witness_enrolled_by_actor(entry: dict[str, Any], enrolment_of: EnrolmentOf) -> list[Candidate]:
    """Alerts for an entry signed by someone enrolled alone less than 90 days before and by one
    of the people who enrolled them. The entry counts as inside the window when it happened or
    was recorded inside it (a late entry cannot move the event out)."""
    if entry["kind"] in NON_EVENT_KINDS:
        return []  # reference data: enrolments and grants are what the window follows, not a witnessing
    who = signers(entry)
    if len(who) < 2:
        return []
    when = min(parse_time(entry["occurred_at"]), parse_time(entry["recorded_at"]))
    out = []
    for person in who:
        en = alone_enrolment(person, enrolment_of)
        if en is None or en.seq >= entry["seq"] or when >= en.at + WINDOW:
            continue
        partners = tuple(s for s in who if s != person and s in en.vouched_by)
        if not partners:
            continue
        days = max((when - en.at).days, 0)
        out.append(Candidate(
            alert_key=f"{RULE}:{entry['seq']}:{en.seq}", rule=RULE, severity="high",
            subjects=(*partners, person),
            summary=(f"{entry['kind']} (entry {entry['seq']}) is signed by {person} and by {', '.join(partners)}, "
                     f"who enrolled {person} without an independent second approver (entry {en.seq}) "
                     f"{days} day(s) earlier: the two signatures may be one person"),
            parameters={"window_days": str(WINDOW.days)},
            evidence_seqs=(en.seq, entry["seq"]),
            figures={"enrolled": person, "enrolled_by": " ".join(sorted(en.vouched_by)),
                     "enrolled_at": format_time(en.at), "signed_at": entry["recorded_at"],
                     "occurred_at": entry["occurred_at"], "days_after_enrolment": str(days),
                     "kind": entry["kind"]},
        ))
    return out
