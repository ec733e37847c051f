"""``verify --deep``, the rules: who was allowed to do what, replayed from the chain alone.

The arithmetic of the deep pass (bytes, hashes, movements, projections) says the stored data is
what was recorded; it does not say the recording was allowed. A database writer can force a
well-hashed entry in (a role granted by a nurse, a waste witnessed by its performer, a correction
that removes stock with nobody approving it): every hash and projection then agrees. This replay
walks a registrant's chain in ``seq`` order and, for each entry at its place, checks:

- ``signatures``: the entry carries the signatures its command writes (their number and
  meanings), e.g. ``dose_wasted`` = performed + witnessed;
- ``signer-enrolled`` / ``signer-held-role``: each signer was enrolled, under the printed name
  on the signature, and held one of the roles the command needs *at that seq*. Roles come from the
  chain's own ``staff_enrolled`` / ``role_granted`` / ``role_revoked`` entries, never from a
  table; the role sets are the services' own constants (imported, not copied);
- ``two-people``: the signers of one entry are different people (waste witness and performer, two
  counters, destruction's witnesses and the actor, a correction's approver and author, an
  enrolment or grant's approver and actor), except an enrolment or grant done alone where
  nobody else (but the grantee) held manager or administrator at that seq;
- ``no-self-grant``, ``approver-not-grantee``, ``administrator-by-administrator``,
  ``last-administrator``, ``grantee-enrolled``, ``role-known``, ``role-held``, ``staff-id-new``:
  the role rules of ``reference.enroll_staff`` / ``grant_role`` / ``revoke_role``;
- ``resolver-not-counter``: neither signer of a discrepancy resolution or loss adjustment counted
  the count it resolves;
- ``correction-scope``: a correction moves only vials the corrected entry moved, by no more than
  that entry recorded (with every earlier correction of it);
- ``prescriber-practitioner``: a ``prescriber_registered`` entry names a practitioner's DEA
  number, registered in the clinic's state, with schedule 3 or 3N (issue 19);
- ``prescriber-registered``: a dose names a prescriber registered at that seq, whose registration
  had not expired on the dose's local day and covers the product's schedule, under the name the
  dose copies (``ledger.domain.prescribers.order_refusal``, the service's own rule). Checked on
  doses that copy a prescriber's name and on every dose after the registrant's first
  prescriber registration; doses recorded before prescribers were registered are not;
- ``alert-closer-not-subject``: nobody acknowledges or resolves an alert about themself;
- ``stock-never-negative``: no vial's stock goes below zero (from ``projections.movements``);
- ``recorded-at-order``: ``recorded_at`` never goes backwards along the chain (not applied to
  ``csledger demo``'s simulated history: see ``SIMULATED`` and ``DEMO_REGISTRANT``);
- ``recorded-before-witnessed``: ``recorded_at`` is no later than the time a witness cosigned the
  first cosigned checkpoint covering the entry (the cosignature's own signed timestamp, verified
  with a witness key of the registrant's witness policies), give or take
  ``common.FUTURE_TOLERANCE`` for the two machines' clocks and the whole-second timestamp.
  Entries no cosigned checkpoint covers yet are not checked against it.

Staff credentials (issue 17): who signs a ``staff_credential_enrolled`` / ``_revoked`` entry is the
credential chain's rule (``ledger.integrity.credential_chain``), checked by ``signature_check``, not
repeated here (``CHAIN_RULED``). ``verify --deep`` runs that check on each entry *before* this
replay and stops at the first entry whose staff signatures fail, so a role entry forced in after
the root credential without its signers' own signatures is never counted here, as the live
server's ``Authority`` never counts it.

The first three entries are the console's bootstrap (``reference.register_registrant``): the
registrant, its first administrator enrolled and granted ``administrator`` by themself.

Memory: per registrant, the staff and their roles, one balance per vial, the counters of each
count and the subjects of each alert; entries are streamed by the deep pass, cosignatures are read
in pages as the replay reaches them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from ledger.domain import prescribers as prescriber_rules
from ledger.domain import projections
from ledger.domain.alerts import CLOSERS
from ledger.domain.principal import AuthMethod, Meaning, Role
from ledger.integrity import canonical as canon
from ledger.integrity.checkpoints import (
    NoteError,
    Verifier,
    parse_checkpoint,
    parse_signature_line,
    verify_cosignature,
)
from ledger.integrity.credential_chain import CREDENTIAL_KINDS
from ledger.services.administration import ADMINISTERERS, CLINICIANS
from ledger.services.alerts import REGISTRATION_RECORDERS
from ledger.services.breakage import RECORDERS
from ledger.services.common import FUTURE_TOLERANCE, WITNESSES
from ledger.services.corrections import CORRECTION_APPROVERS, vials_touched
from ledger.services.counts import COUNTERS
from ledger.services.discrepancies import RESOLVERS
from ledger.services.disposal import LOSS_REPORTERS, STOCK_HANDLERS
from ledger.services.documents import DOCUMENT_KEEPERS
from ledger.services.prescribers import PRESCRIBER_REGISTRARS
from ledger.services.receiving import INVENTORY_TAKERS, RECEIVERS
from ledger.services.reference import POLICY_SETTERS, REFERENCE_DATA, STAFF_ADMIN
from ledger.storage.store import raw

PERFORMED, WITNESSED, APPROVED, COUNTED, RECEIVED = (
    Meaning.PERFORMED.value, Meaning.WITNESSED.value, Meaning.APPROVED.value, Meaning.COUNTED.value,
    Meaning.RECEIVED.value)

Slot = tuple[str, frozenset]

ZERO = Decimal("0.00")

#: kind -> the signatures its command writes, in order: (meaning, roles that may sign it).
#: Kinds whose signatures depend on the entry are in ``_slots``.
SIGNATURES: dict[str, tuple[Slot, ...]] = {
    "product_added": ((PERFORMED, REFERENCE_DATA),),
    "supplier_added": ((PERFORMED, REFERENCE_DATA),),
    "supplier_registration_recorded": ((PERFORMED, REFERENCE_DATA),),  # issue 19
    "staff_enrolled": ((PERFORMED, STAFF_ADMIN), (APPROVED, STAFF_ADMIN)),
    "role_granted": ((PERFORMED, STAFF_ADMIN), (APPROVED, STAFF_ADMIN)),
    "policy_set": ((APPROVED, POLICY_SETTERS),),
    "patient_registered": ((PERFORMED, CLINICIANS),),
    "patient_details_changed": ((PERFORMED, CLINICIANS),),
    "stock_received": ((RECEIVED, RECEIVERS),),
    "dose_administered": ((PERFORMED, ADMINISTERERS),),
    # administer_dose's waste carries the dose's own signature (ADMINISTERERS, inside CLINICIANS)
    "dose_wasted": ((PERFORMED, CLINICIANS), (WITNESSED, WITNESSES)),
    "count_started": ((COUNTED, COUNTERS),),
    "stock_counted": ((COUNTED, COUNTERS), (COUNTED, COUNTERS)),
    "discrepancy_resolved": ((APPROVED, RESOLVERS), (WITNESSED, WITNESSES)),
    "loss_adjusted": ((APPROVED, RESOLVERS), (WITNESSED, WITNESSES)),
    # stock leaving the registrant: a second person checks it against the invoice (issue 15)
    "stock_transferred": ((PERFORMED, STOCK_HANDLERS), (WITNESSED, WITNESSES)),
    "stock_returned": ((PERFORMED, STOCK_HANDLERS), (WITNESSED, WITNESSES)),
    "stock_quarantined": ((PERFORMED, CLINICIANS),),
    "quarantine_released": ((APPROVED, STOCK_HANDLERS),),
    "document_stored": ((PERFORMED, DOCUMENT_KEEPERS),),
    "alert_raised": (),  # raised by the system's rules, unsigned
    "alert_cleared": (),  # cleared by the system when a signed count shows the condition gone (issue 20)
    "alert_acknowledged": ((APPROVED, frozenset(CLOSERS)),),
    "alert_resolved": ((APPROVED, frozenset(CLOSERS)),),
    "registration_expiry_recorded": ((PERFORMED, frozenset(REGISTRATION_RECORDERS)),),
    "breakage_recorded": ((PERFORMED, RECORDERS), (WITNESSED, WITNESSES)),
    "report_key_certified": ((PERFORMED, frozenset({"administrator"})),),  # issue 18
    "prescriber_registered": ((PERFORMED, PRESCRIBER_REGISTRARS),),  # issue 19
}

ROLES = frozenset(r.value for r in Role)

#: Kinds whose signers the credential chain rules (``credential_chain``, via ``signature_check``).
CHAIN_RULED = frozenset(CREDENTIAL_KINDS)

#: Kinds whose second signature may be the actor's own, when nobody else could approve.
ALONE_KINDS = frozenset({"staff_enrolled", "role_granted", "role_revoked"})

BOOTSTRAP = ("registrant_registered", "staff_enrolled", "role_granted")

#: ``csledger demo`` records eight simulated weeks on a script's clock, which steps back between
#: scripted commands (``api.cli.demo.SimClock``). ``recorded-at-order`` is not applied while every
#: signature of the chain so far is one of these (the console's bootstrap, older demo data); the
#: first real login's signature ends that for the rest of the chain. Since issue 17 the demo's
#: people sign with their own keys (``password_key``), so a registrant the demo registered is
#: told by its seq 0 instead: signed ``demo_seed`` (``DEMO_REGISTRANT``), never by ``init``.
SIMULATED = frozenset({AuthMethod.DEMO_SEED.value, AuthMethod.CONSOLE_BOOTSTRAP.value})
DEMO_REGISTRANT = AuthMethod.DEMO_SEED.value


class RuleBroken(Exception):
    def __init__(self, rule: str, detail: str):
        super().__init__(f"breaks rule {rule}: {detail}")
        self.rule = rule


def _slots(e: dict[str, Any], n_signatures: int) -> tuple[Slot, ...] | None:
    kind = e["kind"]
    if kind in SIGNATURES:
        return SIGNATURES[kind]
    if kind in CHAIN_RULED:
        return None  # checked by ``signature_check`` (the server's own rules) before the replay
    if kind == "inventory_taken":  # the witness is optional
        return ((PERFORMED, INVENTORY_TAKERS),) + (((WITNESSED, WITNESSES),) if n_signatures > 1 else ())
    if kind == "stock_destroyed":  # Form 41: two witnesses at least
        return ((PERFORMED, CLINICIANS),) + ((WITNESSED, WITNESSES),) * max(2, n_signatures - 1)
    if kind == "theft_or_loss_reported":  # vials taken off the book now need a second person
        return ((PERFORMED, LOSS_REPORTERS),) + (((WITNESSED, WITNESSES),) if e.get("lost") else ())
    if kind == "role_revoked":  # a manager or administrator role: a second one approves (issue 15 review)
        return ((APPROVED, STAFF_ADMIN),) * (2 if e.get("role") in STAFF_ADMIN else 1)
    if kind == "entry_corrected":  # removing stock needs an approver
        removes = any(ln.get("direction") == "remove" for ln in e.get("lines") or ())
        return ((PERFORMED, CLINICIANS),) + (((APPROVED, CORRECTION_APPROVERS),) if removes else ())
    return None  # unknown kinds are reported by the deep pass before this runs


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def _time(text: Any, what: str) -> datetime:
    """``canonical.parse_time``, faster (it runs once per entry): the one fixed shape, then
    ``fromisoformat``."""
    try:
        if not isinstance(text, str) or not _TIME.fullmatch(text):
            raise ValueError
        return datetime.fromisoformat(text)
    except ValueError:
        raise RuleBroken("recorded-at-order", f"{what} {str(text)[:40]!r} is not a recorded time") from None


class _Cosigned:
    """The registrant's cosigned checkpoints in size order, read in pages: for an entry at
    ``seq``, the earliest verified witness time of the first one whose size covers it."""

    PAGE = 500

    def __init__(self, conn: Connection, registrant: str):
        self.conn, self.registrant = conn, registrant
        self.verifiers: dict[tuple[str, int], Verifier] = {}
        for row in raw(conn).rows(conn, "SELECT witnesses FROM witness_policies WHERE registrant = :r",
                                  {"r": registrant}):
            try:
                for w in json.loads(row["witnesses"]):
                    v = Verifier.from_string(w["verifier_key"])
                    self.verifiers[(v.name, v.key_id)] = v
            except (ValueError, TypeError, KeyError):
                continue  # a policy that does not parse vouches for nothing
        self.groups = self._groups() if self.verifiers else iter(())
        self.current: tuple[int, datetime] | None = None
        self.done = False

    def _rows(self) -> Iterator[dict[str, Any]]:
        last = (-1, "", "")
        r = raw(self.conn)
        while True:
            rows = r.rows(self.conn, "SELECT c.tree_size, c.witness, c.key_id, c.line, k.note FROM cosignatures c "
                                     "JOIN checkpoints k ON k.registrant = c.registrant AND k.tree_size = c.tree_size "
                                     "WHERE c.registrant = :r AND (c.tree_size > :s OR (c.tree_size = :s AND "
                                     "(c.witness > :w OR (c.witness = :w AND c.key_id > :k)))) "
                                     f"ORDER BY c.tree_size, c.witness, c.key_id LIMIT {self.PAGE}",
                           {"r": self.registrant, "s": last[0], "w": last[1], "k": last[2]})
            yield from rows
            if len(rows) < self.PAGE:
                return
            last = (rows[-1]["tree_size"], rows[-1]["witness"], rows[-1]["key_id"])

    def _groups(self) -> Iterator[tuple[int, datetime]]:
        size, best = None, None
        for row in self._rows():
            if row["tree_size"] != size:
                if best is not None:
                    yield size, best
                size, best = row["tree_size"], None
            t = self._time(row)
            if t is not None and (best is None or t < best):
                best = t
        if best is not None:
            yield size, best

    def _time(self, row: dict[str, Any]) -> datetime | None:
        """The cosignature's signed time, or None when no known witness key verifies it."""
        try:
            body = row["note"].split("\n\n", 1)[0] + "\n"
            if parse_checkpoint(body).size != row["tree_size"]:
                return None
            sig = parse_signature_line(row["line"])
            v = self.verifiers.get((sig.name, sig.key_id))
            if v is None:
                return None
            return datetime.fromtimestamp(verify_cosignature(body, row["line"], v), UTC)
        except (NoteError, ValueError, OverflowError, OSError):
            return None

    def bound(self, seq: int) -> datetime | None:
        while not self.done and (self.current is None or self.current[0] <= seq):
            self.current = next(self.groups, None)
            self.done = self.current is None
        return None if self.done else self.current[1]


class RulesReplay:
    """One registrant's rules, replayed entry by entry (call ``check`` in seq order)."""

    def __init__(self, conn: Connection, registrant: str):
        self.conn, self.registrant = conn, registrant
        self.staff: dict[str, str] = {}  # staff_id -> printed name
        self.roles: dict[str, set[str]] = defaultdict(set)
        self.balance: dict[str, Decimal] = {}
        self.counters: dict[int, frozenset[str]] = {}
        self.subjects: dict[str, frozenset[str]] = {}
        self.alert_rules: dict[str, str] = {}  # alert id -> the rule that raised it
        self.counts_seen: set[int] = set()  # seqs of counts and inventories
        self.corrected: dict[tuple[int, str, str], Decimal] = defaultdict(lambda: ZERO)
        self.last: tuple[int, datetime] | None = None
        self.bootstrap_id: str | None = None
        #: Until someone signs with a real login, the chain may be ``csledger demo``'s simulation.
        self.simulated = True
        #: The registrant was registered by ``csledger demo`` (seq 0 signed ``demo_seed``).
        self.demo = False
        self.cosigned = _Cosigned(conn, registrant)
        #: Issue 19: DEA number -> its latest registration; the clinic's state and time zone.
        self.prescribers: dict[str, dict[str, Any]] = {}
        self.clinic_state: str | None = None
        self.tz: ZoneInfo | None = None

    def check(self, e: dict[str, Any]) -> str | None:
        """The rule entry ``e`` breaks at its place in the chain (text naming it), or None; the
        entry is then applied to the replay's state (call once per entry, in seq order)."""
        try:
            self._times(e)
            self._signers(e)
            self._kind_rules(e)
            self._apply(e)
        except RuleBroken as exc:
            return str(exc)
        except (TypeError, KeyError, AttributeError, ValueError, ArithmeticError) as exc:
            # a field of the wrong shape where a rule reads it: named, never a traceback
            return f"breaks rule entry-shape: {e.get('kind')} cannot be read where its rules look ({exc!r})"
        return None

    # --- time -------------------------------------------------------------------------------

    def _times(self, e: dict[str, Any]) -> None:
        seq = e["seq"]
        at = _time(e.get("recorded_at"), "recorded_at")
        sigs = e.get("signatures")
        if seq == 0 and isinstance(sigs, list) and sigs and isinstance(sigs[0], dict):
            self.demo = sigs[0].get("auth_method") == DEMO_REGISTRANT
        if self.simulated and not self.demo and isinstance(sigs, list):
            self.simulated = all(isinstance(s, dict) and s.get("auth_method") in SIMULATED for s in sigs)
        if self.last is not None and at < self.last[1] and not self.simulated:
            raise RuleBroken("recorded-at-order", f"recorded at {e['recorded_at']}, before entry {self.last[0]} "
                                                  f"({canon.format_time(self.last[1])}): the clock was set back")
        self.last = (seq, at)
        bound = self.cosigned.bound(seq)
        if bound is not None and at > bound + FUTURE_TOLERANCE:
            raise RuleBroken("recorded-before-witnessed",
                             f"recorded at {e['recorded_at']}, after a witness had cosigned "
                             f"({canon.format_time(bound)}) the first checkpoint that covers it")

    # --- signatures ---------------------------------------------------------------------------

    def _signers(self, e: dict[str, Any]) -> None:
        seq, kind = e["seq"], e["kind"]
        sigs = e.get("signatures")
        if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
            raise RuleBroken("signatures", f"{kind} carries no list of signatures")
        if seq < len(BOOTSTRAP) or kind == "registrant_registered":
            return self._bootstrap(e, sigs)
        slots = _slots(e, len(sigs))
        if slots is None:
            return
        if len(sigs) != len(slots):
            raise RuleBroken("two-people" if 1 <= len(sigs) < len(slots) else "signatures",
                             f"{kind} carries {len(sigs)} signature(s); its command writes {len(slots)} "
                             f"({', '.join(m for m, _ in slots) or 'none'})")
        ids = []
        for i, (s, (meaning, roles)) in enumerate(zip(sigs, slots, strict=True)):
            sid = s.get("staff_id")
            if not isinstance(sid, str):
                raise RuleBroken("signatures", f"{kind} signature {i} names no staff id")
            if s.get("meaning") != meaning:
                raise RuleBroken("signatures", f"{kind} signature {i} means {s.get('meaning')!r}, not {meaning!r}")
            if sid not in self.staff:
                raise RuleBroken("signer-enrolled", f"{kind} is signed {meaning!r} by {sid!r}, who was not enrolled")
            if s.get("printed_name") != self.staff[sid]:
                raise RuleBroken("signer-enrolled", f"{kind} signature {i} names {s.get('printed_name')!r}, but "
                                                    f"{sid} was enrolled as {self.staff[sid]!r}")
            if not self.roles[sid] & roles:
                held = ", ".join(sorted(self.roles[sid])) or "no role"
                raise RuleBroken("signer-held-role", f"{kind} is signed {meaning!r} by {sid} ({self.staff[sid]}), who "
                                                     f"held {held}, none of {', '.join(sorted(roles))}")
            ids.append(sid)
        if len(set(ids)) != len(ids):
            if kind in ALONE_KINDS and ids[0] == ids[1]:
                self._alone(e, ids[0])
            else:
                twice = next(x for i, x in enumerate(ids) if x in ids[:i])
                raise RuleBroken("two-people", f"{kind} is signed twice by {twice}: its signatures must be "
                                               "different people")

    def _bootstrap(self, e: dict[str, Any], sigs: list[dict]) -> None:
        seq, kind = e["seq"], e["kind"]
        if seq >= len(BOOTSTRAP) or kind != BOOTSTRAP[seq] or len(sigs) != 1 or sigs[0].get("meaning") != PERFORMED:
            raise RuleBroken("bootstrap", f"entries 0-2 are the registrant, its first administrator enrolled and "
                                          f"granted administrator, each signed once; found {kind} at seq {seq}")
        sid = sigs[0].get("staff_id")
        if seq == 0:
            self.bootstrap_id = sid
        elif sid != self.bootstrap_id or e.get("staff_id") != sid or (seq == 2 and e.get("role") != Role.ADMINISTRATOR):
            raise RuleBroken("bootstrap", f"{kind} at seq {seq} is not the first administrator's own enrolment "
                                          "and administrator role")

    def _alone(self, e: dict[str, Any], actor: str) -> None:
        """Done alone: allowed only when nobody but the actor and the grantee held manager or
        administrator at that seq (``reference._second_person``)."""
        grantee = e.get("staff_id") if e["kind"] in ("role_granted", "role_revoked") else None
        others = sorted(s for s, held in self.roles.items() if held & STAFF_ADMIN and s not in (actor, grantee))
        if others:
            raise RuleBroken("two-people", f"{e['kind']} was approved by its own actor {actor}, but "
                                           f"{', '.join(others[:5])} could have approved it")

    # --- per-kind rules -------------------------------------------------------------------------

    def _kind_rules(self, e: dict[str, Any]) -> None:
        kind, seq = e["kind"], e["seq"]
        if seq < len(BOOTSTRAP):
            return
        sigs = e["signatures"]
        actor = sigs[0]["staff_id"] if sigs else None
        if kind == "staff_enrolled" and e.get("staff_id") in self.staff:
            raise RuleBroken("staff-id-new", f"staff id {e.get('staff_id')} was already enrolled")
        elif kind == "role_granted":
            grantee, role = e.get("staff_id"), e.get("role")
            if role not in ROLES:
                raise RuleBroken("role-known", f"{role!r} is not a role")
            if grantee not in self.staff:
                raise RuleBroken("grantee-enrolled", f"role {role} granted to {grantee!r}, who was not enrolled")
            if grantee == actor:
                raise RuleBroken("no-self-grant", f"{actor} granted themself the role {role}")
            if sigs[1]["staff_id"] == grantee:
                raise RuleBroken("approver-not-grantee", f"{grantee} approved their own role {role}")
            self._admin_role(kind, role, actor)
        elif kind == "role_revoked":
            target, role = e.get("staff_id"), e.get("role")
            if role not in self.roles.get(target, ()):
                raise RuleBroken("role-held", f"{target!r} did not hold the role {role} revoked")
            self._admin_role(kind, role, actor)
            if role == Role.ADMINISTRATOR and sum(Role.ADMINISTRATOR in r for r in self.roles.values()) == 1:
                raise RuleBroken("last-administrator", "the registrant's last administrator was revoked")
        elif kind in ("discrepancy_resolved", "loss_adjusted"):
            counters = self.counters.get(e.get("count_seq"), frozenset())
            for s in sigs:
                if s["staff_id"] in counters:
                    raise RuleBroken("resolver-not-counter", f"{kind} is signed by {s['staff_id']}, who counted the "
                                                             f"count it resolves (entry {e.get('count_seq')})")
        elif kind in ("alert_acknowledged", "alert_resolved"):
            if actor in self.subjects.get(e.get("alert_id"), frozenset()):
                raise RuleBroken("alert-closer-not-subject", f"{actor} closed alert {e.get('alert_id')}, which is "
                                                             "about them")
        elif kind == "alert_cleared":
            # only an overdue count clears itself, and only by a count or inventory recorded before
            if self.alert_rules.get(e.get("alert_id")) != "count_overdue" or e.get("evidence_seq") not in self.counts_seen:
                raise RuleBroken("alert-cleared-by-count", f"alert {e.get('alert_id')} was cleared by the system "
                                                           f"citing entry {e.get('evidence_seq')}, which is not a "
                                                           "count or inventory clearing an overdue count")
        elif kind == "entry_corrected" and e.get("lines"):
            self._correction_scope(e)
        elif kind == "prescriber_registered":
            self._prescriber_registered(e)
        elif kind == "dose_administered" and ("prescriber_name" in e or self.prescribers):
            self._prescriber_of_dose(e)

    def _prescriber_registered(self, e: dict[str, Any]) -> None:
        dea = e.get("dea_number")
        refusal = prescriber_rules.practitioner_refusal(dea if isinstance(dea, str) else "")
        if refusal is None and e.get("registration_state") != self.clinic_state:
            refusal = f"{dea} is registered in {e.get('registration_state')!r}, not the clinic's state {self.clinic_state}"
        if refusal is None:
            refusal = prescriber_rules.schedules_refusal(e.get("schedules") or ())
        if refusal is not None:
            raise RuleBroken("prescriber-practitioner", refusal)

    def _prescriber_of_dose(self, e: dict[str, Any]) -> None:
        dea = e.get("prescriber_dea_number")
        registered = self.prescribers.get(dea)
        day = _time(e.get("started_at"), "started_at").astimezone(self.tz or UTC).date()
        draws = e.get("draws") or ()
        schedule = draws[0]["product"].get("schedule") if draws else None
        refusal = prescriber_rules.order_refusal(dea, registered, day, schedule)
        if refusal is None and e.get("prescriber_name") != registered["name"]:
            refusal = f"the dose names its prescriber {e.get('prescriber_name')!r}; {dea} is registered as {registered['name']!r}"
        if refusal is not None:
            raise RuleBroken("prescriber-registered", refusal)

    def _admin_role(self, kind: str, role: Any, actor: str) -> None:
        if role == Role.ADMINISTRATOR and Role.ADMINISTRATOR not in self.roles.get(actor, ()):
            raise RuleBroken("administrator-by-administrator",
                             f"{kind} of administrator by {actor}, who was not an administrator")

    def _correction_scope(self, e: dict[str, Any]) -> None:
        target_seq = e.get("corrects_seq")
        data = None
        if isinstance(target_seq, int) and 0 <= target_seq < e["seq"]:
            data = raw(self.conn).scalar(self.conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                                         {"r": self.registrant, "s": target_seq})
        if data is None:
            raise RuleBroken("correction-scope", f"corrects entry {target_seq!r}, which is not an earlier entry")
        touched = vials_touched(None, canon.decode(bytes(data)))
        for ln in e["lines"]:
            vial, direction, ml = ln["vial_id"], ln["direction"], Decimal(ln["ml"])
            key = (target_seq, vial, direction)
            if vial not in touched or self.corrected[key] + ml > touched[vial]:
                raise RuleBroken("correction-scope", f"{direction}s {ml} mL of vial {vial}; entry {target_seq} recorded "
                                                     f"{touched.get(vial, ZERO)} mL for it and earlier "
                                                     f"corrections already {direction} {self.corrected[key]} mL")
            self.corrected[key] += ml

    # --- state ------------------------------------------------------------------------------------

    def _apply(self, e: dict[str, Any]) -> None:
        kind = e["kind"]
        if kind == "registrant_registered":
            self.clinic_state = (e.get("address") or {}).get("state")
            self.tz = ZoneInfo(e["time_zone"])
        elif kind == "prescriber_registered":
            self.prescribers[e["dea_number"]] = {"name": e.get("name"), "schedules": e.get("schedules") or (),
                                                 "expires_on": e.get("expires_on")}
        elif kind == "staff_enrolled":
            self.staff[e.get("staff_id")] = e.get("printed_name")
        elif kind == "role_granted":
            self.roles[e.get("staff_id")].add(e.get("role"))
        elif kind == "role_revoked":
            self.roles[e.get("staff_id")].discard(e.get("role"))
        elif kind == "stock_counted":
            self.counters[e["seq"]] = frozenset(s.get("staff_id") for s in e.get("signatures") or ())
            self.counts_seen.add(e["seq"])
        elif kind == "alert_raised":
            self.subjects[e.get("alert_id")] = frozenset(e.get("subjects") or ())
            self.alert_rules[e.get("alert_id")] = e.get("rule")
        elif kind == "inventory_taken":
            self.counts_seen.add(e["seq"])
        for vial, _ndc, ml in projections.movements(e):
            left = self.balance[vial] = self.balance.get(vial, ZERO) + ml
            if left < 0:
                raise RuleBroken("stock-never-negative", f"{e['kind']} takes vial {vial} to {left} mL")
