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
- ``esketamine-devices``, ``esketamine-dose``, ``esketamine-observation``, ``esketamine-observer``
  (issue 19): an esketamine session uses whole devices of one nasal-spray product, each on hand
  whole at that seq; its dose is the devices x mg per device and 56 or 84 mg; its observation
  meets the REMS (at least 2 hours after administration, ``ledger.domain.esketamine``, the
  service's own rules); whoever it says directly observed is its signer; its prescriber is
  checked as a dose's (``prescriber-registered``);
- ``preparation-mg``, ``preparation-beyond-use``, ``preparation-once`` (issue 19): a preparation's mg is
  exactly the sum of its draws' mL x strength, its beyond-use time its start + 4 hours; its
  infusion starts neither before it nor after that time, infuses no more than its final volume
  and gives mg x mL infused / final mL; its waste is mg - mg given exactly (with the product mL
  split the same way), witnessed by someone else; one infusion and one waste per preparation
  (``ledger.domain.preparations``, the service's own arithmetic); its prescriber is checked as
  a dose's (``prescriber-registered``); its draws are within stock (``stock-never-negative``);
- ``recipient-registered`` (issue 19, recipients): a transfer or return copies the registration it
  was checked against, current on the entry's local day and covering its products' schedules
  (``ledger.domain.trading_partners.recipient_refusal``, the service's own rule); a transfer goes
  to a practitioner's number; a return to a supplier recorded under that DEA number copies the
  supplier's registration as recorded at that seq, its ``supplier_id`` and its DSCSA status.
  Required on every transfer and return after the registrant's first issue-19 registration
  (a supplier's, a prescriber's, or one copied by a transfer or return); earlier ones are not;
- ``supplier-registered`` (issue 19): a receipt names a supplier added in the chain and copies
  its registration and DSCSA status as recorded at that seq, current on the receipt's local day,
  covering its products' schedules, from an authorized trading partner
  (``trading_partners.receipt_refusal``, the service's own rule); receipts from before the
  supplier's registration was recorded copy none;
- ``product-as-added``: each line of a receipt describes its product exactly as the chain's
  ``product_added`` entry did (strength, container, schedule, units per package);
- ``package-contents``, ``package-once``, ``package-sealed`` (issue 19, package hierarchy): a
  ``package_opened`` names a package an earlier receipt received, not opened before, still on hand,
  and its units found and missing are exactly the units received in it (found no more than it was
  received holding; a discrepancy exactly when units are missing); its witness is another person
  (``two-people``). A unit still in its sealed package is never drawn from, broken or corrected
  alone, and leaves (transfer, return, destruction, theft or loss, loss adjustment) only with
  every unit of its package still on the book (a package's missing units leave by the loss
  adjustment of its discrepancy);
- ``alert-closer-not-subject``: nobody acknowledges or resolves an alert about themself;
- ``count-tolerance`` (issue 20): a count records the opened-container tolerance of the policy in
  force at its seq; each line's difference is its counted minus expected mL, its tolerance is
  ``ledger.domain.counting.line_tolerance`` (the service's own rule), a line marked within
  tolerance really is within it, and a line that rule says opens a discrepancy carries one
  (a sealed difference, a difference beyond the tolerance, a blind count whose book was read);
  opened vials a line names are named once, add up to its opened mL, and their expected mL are
  their balances replayed at that seq. Counts recorded before the tolerance are held to 0 mL;
- ``inventory-vs-book`` (issue 20): an inventory recorded with its comparison with the book
  (``lines``) is witnessed by a second person (``two-people``); an initial one compares nothing;
  a biennial or other one lists only vials on the book at its seq, and its lines are exactly
  ``ledger.domain.inventory.compare`` of the book replayed at that seq (the service's own
  comparison): expected figures, found, difference, the vials not found, and a discrepancy id on
  every difference. Inventories recorded before issue 20 carry no comparison and are not checked,
  but once the chain holds one with a comparison, every later inventory must carry one;
- ``loss-follow-up`` (issue 20): a ``dea_notice_sent`` / ``form_106_filed`` names an earlier
  ``theft_or_loss_reported`` entry, once each per report; ``alert-cleared-by-count`` also holds
  an ``alert_cleared`` of a theft/loss alert to the follow-up it cites (``form106.CLEARED_BY``:
  the notice for an overdue notice, the filing for an overdue Form 106, both for the theft/loss
  alert itself, all of the same report);
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
in pages as the replay reaches them. Beside ``verify --deep``'s scratch view (issue 22) the
balances, packages, packaged units and preparations live in its scratch file, not in memory.
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

from ledger.domain import counting, projections, trading_partners
from ledger.domain import esketamine as esketamine_rules
from ledger.domain import preparations as preparation_rules
from ledger.domain import prescribers as prescriber_rules
from ledger.domain.alerts import CLOSERS
from ledger.domain.form106 import CLEARED_BY, report_of_alert  # issue 20
from ledger.domain.policy import open_count_tolerance  # issue 20
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
from ledger.services.esketamine import SESSION_RECORDERS
from ledger.services.loss_followup import FOLLOW_UP_SIGNERS  # issue 20
from ledger.services.packages import OPENERS  # issue 19, package hierarchy
from ledger.services.preparations import INFUSERS, PREPARERS, WASTERS
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
    # issue 19, preparations part: the waste of a preparation is witnessed by a second person
    "preparation_made": ((PERFORMED, PREPARERS),),
    "preparation_infused": ((PERFORMED, INFUSERS),),
    "preparation_wasted": ((PERFORMED, WASTERS), (WITNESSED, WITNESSES)),
    "esketamine_session_recorded": ((PERFORMED, SESSION_RECORDERS),),  # issue 19, esketamine part
    "package_opened": ((PERFORMED, OPENERS), (WITNESSED, WITNESSES)),  # issue 19, package hierarchy
    "dea_notice_sent": ((PERFORMED, FOLLOW_UP_SIGNERS),),  # issue 20
    "form_106_filed": ((PERFORMED, FOLLOW_UP_SIGNERS),),  # issue 20
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
    if kind == "inventory_taken":  # the witness: optional before issue 20, required on compared ones
        required = n_signatures > 1 or "lines" in e
        return ((PERFORMED, INVENTORY_TAKERS),) + (((WITNESSED, WITNESSES),) if required else ())
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


def _inventory_figures(line: tuple | None) -> str:
    """An inventory line's figures, as ``inventory-vs-book`` names them."""
    if line is None:
        return "nothing (no line)"
    return (f"expected {line[1]} sealed, {line[2]} opened, {line[3]} mL; found {line[4]} sealed, {line[5]} opened, "
            f"{line[6]} mL; difference {line[7]} mL; not found: {', '.join(line[8]) or 'none'}; "
            f"discrepancy {line[9] or 'none'}")


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


#: A product description's fields as entries recorded before issue 19 left them out.
_PRODUCT_DEFAULTS = {"unit_kind": "vial", "unit_ndc": None, "units_per_package": 1}


def _as_added(product: dict[str, Any]) -> dict[str, Any]:
    """A product description with issue 19's defaults filled in (the projection fills them the
    same way), so a receipt's copy compares with a ``product_added`` written before them."""
    return {**_PRODUCT_DEFAULTS, **{k: v for k, v in product.items() if v is not None or k not in _PRODUCT_DEFAULTS}}


class RulesReplay:
    """One registrant's rules, replayed entry by entry (call ``check`` in seq order)."""

    def __init__(self, conn: Connection, registrant: str, state: Any = None):
        self.conn, self.registrant = conn, registrant
        #: Issue 20: the projections ``verify --deep`` replays beside the rules (a
        #: ``MemoryStateView``, already holding each entry when ``check`` sees it): the book an
        #: inventory is compared with. None: inventories' comparisons are not checked.
        self.state = state
        #: Issue 20: the seq of the first inventory recorded with its comparison with the book.
        self.compared_inventory: int | None = None
        self.staff: dict[str, str] = {}  # staff_id -> printed name
        self.roles: dict[str, set[str]] = defaultdict(set)
        self.balance: dict[str, Decimal] = {}
        self.counters: dict[int, frozenset[str]] = {}
        self.subjects: dict[str, frozenset[str]] = {}
        self.alert_rules: dict[str, str] = {}  # alert id -> the rule that raised it
        self.counts_seen: set[int] = set()  # seqs of counts and inventories
        #: Issue 20: the policy's count tolerance for opened containers in force (default till set).
        self.open_count_tolerance = open_count_tolerance(None)
        #: Issue 20: alert id -> its key; theft/loss report seqs; follow-up seq -> (kind, report seq).
        self.alert_keys: dict[str, str] = {}
        self.loss_reports: set[int] = set()
        self.follow_ups: dict[int, tuple[str, int]] = {}
        self.corrected: dict[tuple[int, str, str], Decimal] = defaultdict(lambda: ZERO)
        #: Issue 19: preparation id -> its entry, and its infusion and waste once recorded.
        self.preparations: dict[str, dict[str, Any]] = {}
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
        #: Issue 19, package hierarchy: package id -> its receipt (units, units per package,
        #: receipt seq, opening seq), and unit id -> package id while the unit is in it.
        self.packages: dict[str, dict[str, Any]] = {}
        self.packaged: dict[str, str] = {}
        self.any_packaged = False  # a unit was ever received in a package (then ``_packaged_units`` runs)
        if hasattr(state, "map"):
            # Issue 22: beside a scratch view (``verify_scratch``), the state that grows with the
            # vials, preparations, counts and alerts lives in the same scratch file, so memory
            # stays flat (the staff, roles, corrections and loss reports stay here: few).
            self.balance = state.map("balance")
            self.preparations = state.map("preparations")
            self.packages = state.map("packages")
            self.packaged = state.map("packaged")
            self.counters = state.map("counters")
            self.subjects = state.map("subjects")
            self.alert_rules = state.map("alert_rules")
            self.alert_keys = state.map("alert_keys")
            self.counts_seen = state.map("counts_seen")
        #: Issue 19, recipients: supplier id -> its recorded registration, DEA number, DSCSA status;
        #: and whether the chain has recorded any issue-19 registration yet (then every transfer
        #: and return must copy its recipient's).
        self.suppliers: dict[str, dict[str, Any]] = {}
        self.registrations_recorded = False
        #: NDC key -> the product as its ``product_added`` entry described it (a receipt copies it).
        self.products: dict[str, dict[str, Any]] = {}

    def check(self, e: dict[str, Any], moved: list | None = None) -> str | None:
        """The rule entry ``e`` breaks at its place in the chain (text naming it), or None; the
        entry is then applied to the replay's state (call once per entry, in seq order).
        ``moved``: ``list(projections.movements(e))`` when the caller has it already."""
        try:
            self._times(e)
            self._signers(e)
            self._kind_rules(e)
            self._apply(e, moved)
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
        elif kind in ("dea_notice_sent", "form_106_filed"):  # issue 20
            self._loss_follow_up(e)
        elif kind == "alert_cleared" and report_of_alert(self.alert_keys.get(e.get("alert_id")) or ""):
            self._loss_alert_cleared(e)  # issue 20
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
        elif kind in projections.PREPARATION_KINDS:  # issue 19, preparations part
            self._preparation(e)
        elif kind in ("stock_transferred", "stock_returned"):  # issue 19, recipients part
            self._recipient(e)
        elif kind == "stock_received":  # issue 19: the supplier's registration it was checked against
            self._supplier_of_receipt(e)
        elif kind == "esketamine_session_recorded":  # issue 19, esketamine part
            self._esketamine_session(e)
        if kind == "inventory_taken":  # issue 20
            self._inventory(e)
        if kind == "stock_counted":  # issue 20, count tolerance
            self._count_tolerance(e)
        if kind == "package_opened":  # issue 19, package hierarchy
            self._package_opened(e)
        elif self.any_packaged:  # (a no-op when no unit is in a package)
            self._packaged_units(e)

    def _count_tolerance(self, e: dict[str, Any]) -> None:
        """Issue 20: no line escapes a discrepancy it should have opened (``ledger.domain.counting``)."""
        recorded = e.get("open_count_tolerance_ml")
        if recorded is not None and Decimal(recorded) != self.open_count_tolerance:
            raise RuleBroken("count-tolerance", f"the count records a tolerance of {recorded} mL per opened vial; the "
                                                f"policy in force was {self.open_count_tolerance} mL")
        per = ZERO if recorded is None else Decimal(recorded)
        read = bool(e.get("book_reads"))
        for i, ln in enumerate(e["lines"]):
            where = f"line {i + 1} (NDC {ln['product']['ndc']})"
            diff = Decimal(ln["difference_ml"])
            if diff != Decimal(ln["counted_ml"]) - Decimal(ln["expected_ml"]):
                raise RuleBroken("count-tolerance", f"{where} records a difference of {diff} mL between "
                                                    f"{ln['counted_ml']} counted and {ln['expected_ml']} expected")
            tol = counting.line_tolerance(per, sealed=ln["sealed_containers"], opened=ln["open_containers"],
                                          expected_sealed=ln["expected_sealed_containers"],
                                          expected_opened=ln["expected_open_containers"], book_read=read)
            if ln.get("tolerance_ml") is not None and Decimal(ln["tolerance_ml"]) != tol:
                raise RuleBroken("count-tolerance", f"{where} records a tolerance of {ln['tolerance_ml']} mL; the "
                                                    f"policy gives it {tol} mL")
            if ln.get("within_tolerance") and not counting.within_tolerance(diff, tol):
                raise RuleBroken("count-tolerance", f"{where} is marked within tolerance, but its difference {diff} mL "
                                                    f"is beyond {tol} mL")
            if not ln.get("discrepancy_id") and counting.opens_discrepancy(
                    diff, tol, sealed_differs=ln["sealed_containers"] != ln["expected_sealed_containers"],
                    book_read=read):
                raise RuleBroken("count-tolerance", f"{where} differs by {diff} mL (tolerance {tol} mL) and opens no "
                                                    "discrepancy")
            named = ln.get("open_vials") or ()
            if named:
                ids = [v["vial_id"] for v in named]
                total = sum((Decimal(v["counted_ml"]) for v in named), ZERO)
                if len(set(ids)) != len(ids) or total != Decimal(ln["open_ml"]):
                    raise RuleBroken("count-tolerance", f"{where} names opened vials {', '.join(ids)[:200]} twice or "
                                                        f"holding {total} mL, not its {ln['open_ml']} opened mL")
                for v in named:
                    if Decimal(v["expected_ml"]) != self.balance.get(v["vial_id"], ZERO):
                        raise RuleBroken("count-tolerance", f"{where} says vial {v['vial_id']} held {v['expected_ml']} mL "
                                                            f"on the book; it held {self.balance.get(v['vial_id'], ZERO)}")

    def _loss_follow_up(self, e: dict[str, Any]) -> None:
        """Issue 20: a notice or filing names an earlier theft/loss report, once per report."""
        report = e.get("loss_report_seq")
        if report not in self.loss_reports:
            raise RuleBroken("loss-follow-up", f"{e['kind']} names entry {report!r}, which is not an earlier theft or "
                                               "loss report")
        if any(v == (e["kind"], report) for v in self.follow_ups.values()):
            raise RuleBroken("loss-follow-up", f"a second {e['kind']} for the theft or loss report of entry {report}")

    def _loss_alert_cleared(self, e: dict[str, Any]) -> None:
        """Issue 20: a theft/loss alert cleared by the system cites the follow-up(s) its key needs."""
        prefix, report = report_of_alert(self.alert_keys[e.get("alert_id")])
        cited = self.follow_ups.get(e.get("evidence_seq"))
        have = {k for k, r in self.follow_ups.values() if r == report}
        needs = CLEARED_BY[prefix]
        if cited is None or cited[1] != report or cited[0] not in needs or not set(needs) <= have:
            raise RuleBroken("alert-cleared-by-count", f"alert {e.get('alert_id')} of the theft or loss report of entry "
                                                       f"{report} was cleared by the system citing entry "
                                                       f"{e.get('evidence_seq')}, which is not its "
                                                       f"{' and '.join(k.replace('_', ' ') for k in needs)}")

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

    def _recipient(self, e: dict[str, Any]) -> None:
        """Issue 19: stock left only to a registration current on the day and covering its
        products' schedules, the one the entry copies (``trading_partners.recipient_refusal``)."""
        transfer = e["kind"] == "stock_transferred"
        reg = e.get("receiver_registration" if transfer else "recipient_registration")
        dea = e.get("receiver_dea_number" if transfer else "recipient_dea_number")
        name = e.get("receiver_name" if transfer else "recipient_name")
        if transfer and prescriber_rules.practitioner_refusal(dea if isinstance(dea, str) else "") is not None:
            raise RuleBroken("recipient-registered", f"stock was transferred to {dea}, not a practitioner's number "
                                                     "(21 CFR 1307.11)")
        if reg is None:
            if self.registrations_recorded:
                raise RuleBroken("recipient-registered", f"{e['kind']} to {dea} copies no registration of its "
                                                         "recipient; every one recorded since registrations are "
                                                         "checked does")
            return
        day = _time(e.get("occurred_at"), "occurred_at").astimezone(self.tz or UTC).date()
        schedules = {v["product"].get("schedule") for v in e.get("vials") or ()}
        refusal = trading_partners.recipient_refusal(name, dea, reg["expires_on"], reg["schedules"], day, schedules,
                                                     what="transfer" if transfer else "return")
        if refusal is not None:
            raise RuleBroken("recipient-registered", refusal[1])
        if transfer:
            return
        recorded = [(sid, s) for sid, s in self.suppliers.items() if s["dea_number"] == dea]
        sid = e.get("supplier_id")
        if sid is None and e.get("recipient_type") == "supplier" and recorded:
            raise RuleBroken("recipient-registered", f"the return names {dea}, recorded as supplier {recorded[-1][0]}, "
                                                     "but is not checked against that supplier's registration")
        if sid is not None:
            sup = self.suppliers.get(sid)
            if (sup is None or sup["dea_number"] != dea or sup["registration"] != reg
                    or sup["partner"] is not True or e.get("authorized_trading_partner") is not True):
                raise RuleBroken("recipient-registered", f"the return copies supplier {sid}'s registration as "
                                                         f"{reg}; at that seq it was recorded as "
                                                         f"{sup and sup['registration']} (DSCSA partner "
                                                         f"{sup and sup['partner']})")

    def _supplier_of_receipt(self, e: dict[str, Any]) -> None:
        """Issue 19: a receipt copies the supplier's registration and DSCSA status as recorded in
        the chain at that seq, and they allow it (``trading_partners.receipt_refusal``, the
        service's own rule). Why replay it: the service checks the ``suppliers`` table, which a
        database writer can edit for one receipt and put back; the entries keep the truth."""
        sup = e.get("supplier") or {}
        sid = sup.get("supplier_id")
        recorded = self.suppliers.get(sid)
        if recorded is None:
            raise RuleBroken("supplier-registered", f"the receipt names supplier {sid!r}, never added in this chain")
        copied = sup.get("registration")
        before_registrations = recorded["registration"] is None and copied is None  # issue 19 came later
        if not before_registrations and (
                copied != recorded["registration"] or sup.get("authorized_trading_partner") != recorded["partner"]
                or sup.get("dea_number") != recorded["dea_number"]):
            raise RuleBroken("supplier-registered", f"the receipt copies supplier {sid}'s registration as {copied} "
                                                    f"(DSCSA partner {sup.get('authorized_trading_partner')}); at that "
                                                    f"seq it was recorded as {recorded['registration']} (DSCSA partner "
                                                    f"{recorded['partner']})")
        for i, ln in enumerate(e.get("lines") or ()):
            p = ln.get("product") or {}
            added = self.products.get(p.get("ndc_key"))
            if added is None or _as_added(p) != added:
                raise RuleBroken("product-as-added", f"line {i + 1} of the receipt describes NDC {p.get('ndc')} as {p}; "
                                                     f"it was added as {added}")
        if before_registrations:
            return
        day = _time(e.get("occurred_at"), "occurred_at").astimezone(self.tz or UTC).date()
        row = {"name": sup.get("name"), "supplier_id": sid, "registration_expires_on": copied["expires_on"],
               "schedules": ",".join(copied["schedules"]), "authorized_trading_partner": recorded["partner"]}
        refusal = trading_partners.receipt_refusal(row, day, {ln["product"].get("schedule") for ln in e.get("lines") or ()})
        if refusal is not None:
            raise RuleBroken("supplier-registered", refusal)

    def _note_registrations(self, e: dict[str, Any]) -> None:
        kind = e["kind"]
        if kind == "supplier_added":
            self.suppliers[e["supplier_id"]] = {"dea_number": e.get("dea_number"), "registration": e.get("registration"),
                                                "partner": e.get("authorized_trading_partner")}
        elif kind == "supplier_registration_recorded" and e.get("supplier_id") in self.suppliers:
            self.suppliers[e["supplier_id"]].update(registration=e.get("registration"),
                                                    partner=e.get("authorized_trading_partner"))
        if (kind in ("prescriber_registered", "supplier_registration_recorded")
                or e.get("registration") is not None and kind == "supplier_added"
                or e.get("receiver_registration") is not None or e.get("recipient_registration") is not None):
            self.registrations_recorded = True

    def _esketamine_session(self, e: dict[str, Any]) -> None:
        """The session's rules (``ledger.domain.esketamine``), replayed from the entry alone and
        the balances before it: whole devices of one nasal-spray product on hand, dose = devices
        x mg per device (56 or 84 mg), REMS observation, the signer observed, the prescriber."""
        p = e["product"]
        if not esketamine_rules.is_device(p):
            raise RuleBroken("esketamine-devices", f"session {e.get('session_id')} uses {p.get('unit_kind')!r} units "
                                                   f"of {p.get('ndc')}, not nasal-spray devices")
        whole = Decimal(p["container_ml"])
        per_device = esketamine_rules.mg_per_device(Decimal(p["strength_mg_per_ml"]), whole)
        devices = e["devices"]
        for d in devices:
            ml, on_hand = Decimal(d["ml"]), self.balance.get(d["vial_id"], ZERO)
            if ml != whole or on_hand != whole or Decimal(d["mg"]) != per_device:
                raise RuleBroken("esketamine-devices", f"device {d['vial_id']} is used as {ml} mL / {d['mg']} mg with "
                                                       f"{on_hand} mL on hand; a device is {whole} mL, "
                                                       f"{per_device} mg, used whole")
        if len({d["vial_id"] for d in devices}) != len(devices):
            raise RuleBroken("esketamine-devices", f"session {e.get('session_id')} names a device twice")
        total = sum((Decimal(d["ml"]) for d in devices), ZERO)
        if Decimal(e["mg_per_device"]) != per_device or Decimal(e["ml_used"]) != total:
            raise RuleBroken("esketamine-dose", f"the session records {e['mg_per_device']} mg per device and "
                                                f"{e['ml_used']} mL used; its devices are {per_device} mg, {total} mL")
        wrong = esketamine_rules.dose_refusal(len(devices), per_device, Decimal(e["dose_mg"]))
        if wrong is not None:
            raise RuleBroken("esketamine-dose", wrong[1])
        wrong = esketamine_rules.observation_refusal(_time(e["administered_at"], "administered_at"),
                                                     _time(e["observation_started_at"], "observation_started_at"),
                                                     _time(e["observation_ended_at"], "observation_ended_at"))
        if wrong is not None:
            raise RuleBroken("esketamine-observation", f"{wrong[0]} {wrong[1]}")
        signer = e["signatures"][0]
        if (e.get("directly_observed_by"), e.get("directly_observed_by_name")) != (signer["staff_id"],
                                                                                  signer["printed_name"]):
            raise RuleBroken("esketamine-observer", f"the session says {e.get('directly_observed_by')!r} directly "
                                                    f"observed it; it is signed by {signer['staff_id']}")
        dea = e.get("prescriber_dea_number")
        registered = self.prescribers.get(dea)
        day = _time(e["administered_at"], "administered_at").astimezone(self.tz or UTC).date()
        refusal = prescriber_rules.order_refusal(dea, registered, day, p.get("schedule"))
        if refusal is None and e.get("prescriber_name") != registered["name"]:
            refusal = f"the session names its prescriber {e.get('prescriber_name')!r}; {dea} is registered as {registered['name']!r}"
        if refusal is not None:
            raise RuleBroken("prescriber-registered", refusal)

    def _preparation(self, e: dict[str, Any]) -> None:
        """A preparation's arithmetic and times (``ledger.domain.preparations``), replayed from its
        entries alone; the state is kept per preparation id."""
        kind, pid = e["kind"], e.get("preparation_id")
        D = Decimal  # noqa: N806
        if kind == "preparation_made":
            if pid in self.preparations:
                raise RuleBroken("preparation-once", f"preparation id {pid} was already used")
            self._prescriber_of_dose(e)
            draws = e["draws"]
            if not draws or len({d["product"]["ndc_key"] for d in draws}) != 1:
                raise RuleBroken("preparation-mg", f"preparation {pid} is not drawn from one product")
            mg = preparation_rules.mg_of_draws((D(d["ml"]), D(d["product"]["strength_mg_per_ml"])) for d in draws)
            drawn = sum((D(d["ml"]) for d in draws), ZERO)
            final = D(e["final_ml"])
            if D(e["mg"]) != mg or D(e["ml_drawn"]) != drawn:
                raise RuleBroken("preparation-mg", f"preparation {pid} records {e['mg']} mg in {e['ml_drawn']} mL; "
                                                   f"its draws hold {mg} mg in {drawn} mL")
            if e["container"] not in preparation_rules.CONTAINERS or drawn + D(e["diluent_ml"]) > final:
                raise RuleBroken("preparation-mg", f"preparation {pid}: {e['container']!r} of final volume "
                                                   f"{final} mL cannot hold {drawn} mL drawn and "
                                                   f"{e['diluent_ml']} mL of diluent")
            started = _time(e["started_at"], "started_at")
            if (e["started_at"] != e["occurred_at"]
                    or _time(e["beyond_use_at"], "beyond_use_at") != preparation_rules.beyond_use_at(started)):
                raise RuleBroken("preparation-beyond-use", f"preparation {pid} started {e['started_at']} has "
                                                           f"beyond-use time {e['beyond_use_at']}; USP <797> "
                                                           "immediate use gives its start + 4 hours")
            self.preparations[pid] = {"made": e, "infused": None, "wasted": None}
            return
        prep = self.preparations.get(pid)
        if prep is None or prep["made"]["seq"] != e.get("preparation_seq"):
            raise RuleBroken("preparation-once", f"{kind} names preparation {pid!r} (entry "
                                                 f"{e.get('preparation_seq')}), which is not an earlier one")
        made = prep["made"]
        mg, drawn, final = D(made["mg"]), D(made["ml_drawn"]), D(made["final_ml"])
        if prep["wasted"] is not None:
            raise RuleBroken("preparation-once", f"{kind} of preparation {pid}, already wasted (entry "
                                                 f"{prep['wasted']['seq']})")
        if kind == "preparation_infused":
            if prep["infused"] is not None:
                raise RuleBroken("preparation-once", f"preparation {pid} is infused twice")
            copied = (e["patient_id"], D(e["mg"]), D(e["ml_drawn"]), D(e["final_ml"]), D(e["ordered_mg"]),
                      e["vials_drawn"], e["product"]["ndc_key"])
            if copied != (made["patient_id"], mg, drawn, final, D(made["ordered_mg"]), len(made["draws"]),
                          made["draws"][0]["product"]["ndc_key"]):
                raise RuleBroken("preparation-mg", f"the infusion of preparation {pid} copies figures that are "
                                                   "not the preparation's")
            started, ended = _time(e["started_at"], "started_at"), _time(e["ended_at"], "ended_at")
            refusal = preparation_rules.infusion_start_refusal(started, _time(made["started_at"], "started_at"),
                                                               _time(made["beyond_use_at"], "beyond_use_at"))
            if refusal is not None or ended < started:
                raise RuleBroken("preparation-beyond-use", f"the infusion of preparation {pid} ran {e['started_at']} "
                                                           f"to {e['ended_at']}: {refusal or 'it ended before it started'}")
            infused = D(e["ml_infused"])
            given = preparation_rules.mg_given(mg, infused, final) if infused <= final else None
            if (given is None or D(e["mg_given"]) != given or e["stopped_early"] != (infused < final)
                    or D(e["product_ml_given"]) != preparation_rules.product_ml_given(drawn, given, mg)):
                raise RuleBroken("preparation-mg", f"the infusion of preparation {pid} records {e['mg_given']} mg "
                                                   f"({e['product_ml_given']} product mL) for {infused} mL of "
                                                   f"{final} mL holding {mg} mg; the rule gives "
                                                   f"{given if given is not None else 'no infusion above the final volume'}")
            prep["infused"] = e
            return
        inf = prep["infused"]
        given = D(inf["mg_given"]) if inf else ZERO
        product_given = D(inf["product_ml_given"]) if inf else ZERO
        if (e["infused"] != (inf is not None) or D(e["mg"]) != mg - given or D(e["mg"]) <= 0
                or D(e["product_ml"]) != drawn - product_given):
            raise RuleBroken("preparation-mg", f"the waste of preparation {pid} records {e['mg']} mg "
                                               f"({e['product_ml']} product mL); {mg} mg drawn less {given} mg given "
                                               f"leaves {mg - given} mg ({drawn - product_given} mL)")
        after = inf["ended_at"] if inf else made["started_at"]
        if e["occurred_at"] < after:
            raise RuleBroken("preparation-beyond-use", f"the waste of preparation {pid} at {e['occurred_at']} is "
                                                       f"before {after}")
        prep["wasted"] = e

    # --- inventories compared with the book (issue 20) ------------------------------------------

    def _inventory(self, e: dict[str, Any]) -> None:
        from ledger.domain import inventory

        if "lines" not in e:
            if self.compared_inventory is not None:
                raise RuleBroken("inventory-vs-book", f"inventory without its comparison with the book, after "
                                                      f"inventory {self.compared_inventory} was recorded with one")
            return
        if self.compared_inventory is None:
            self.compared_inventory = e["seq"]
        kind = e.get("inventory_type")
        if kind == "initial":
            if e["lines"]:
                raise RuleBroken("inventory-vs-book", "an initial inventory creates the book; it has nothing to be "
                                                      "compared with")
            return
        if kind not in ("biennial", "other") or (kind == "other" and not e.get("reason")):
            raise RuleBroken("inventory-vs-book", f"inventory type {kind!r} (an 'other' one gives its reason)")
        if self.state is None:
            return
        reg = self.registrant

        def opened(pid: str) -> bool:
            return (self.state.get("packages", (reg, pid)) or {}).get("opened_seq") is not None

        book = inventory.book_vials((v for v in self.state.tables["vials"].values() if v["registrant"] == reg), opened)
        listed = [inventory.Listed(i["vial_id"], i["product"]["ndc_key"], i["sealed"] is True, Decimal(i["ml"]))
                  for i in e["items"]]
        try:
            want = inventory.compare(e["seq"], book, listed)
        except inventory.NotOnBook as exc:
            raise RuleBroken("inventory-vs-book", f"the inventory lists vial {exc.vial_id}, which the book did not "
                                                  "hold at its seq") from None

        def said(ln: dict[str, Any], ndc_key: str) -> tuple:
            return (ndc_key, ln["expected_sealed_containers"], ln["expected_open_containers"],
                    Decimal(ln["expected_ml"]), ln["found_sealed_containers"], ln["found_open_containers"],
                    Decimal(ln["found_ml"]), Decimal(ln["difference_ml"]), tuple(ln["vials_not_found"]),
                    ln["discrepancy_id"])

        got = [said(ln, ln["product"]["ndc_key"]) for ln in e["lines"]]
        book_says = [said(c, c["ndc_key"]) for c in want]
        if got != book_says:
            keys = [x[0] for x in book_says] + [x[0] for x in got]
            k = next((k for k in keys if next((g for g in got if g[0] == k), None)
                     != next((w for w in book_says if w[0] == k), None)), keys[0])  # else: out of order
            raise RuleBroken("inventory-vs-book", f"for NDC key {k} the inventory says "
                                                  f"{_inventory_figures(next((g for g in got if g[0] == k), None))}; "
                                                  "the book at its seq says "
                                                  f"{_inventory_figures(next((w for w in book_says if w[0] == k), None))}")

    # --- package hierarchy (issue 19, packages part) -------------------------------------------

    #: Kinds that use a unit itself (never one still in its sealed package).
    UNIT_USES = frozenset({"dose_administered", "preparation_made", "esketamine_session_recorded",
                           "breakage_recorded", "entry_corrected"})

    def _package_opened(self, e: dict[str, Any]) -> None:
        pid = e.get("package_id")
        pkg = self.packages.get(pid)
        if pkg is None or pkg["receipt_seq"] != e.get("receipt_seq"):
            raise RuleBroken("package-contents", f"package_opened names package {pid!r} (receipt entry "
                                                 f"{e.get('receipt_seq')}), which no earlier receipt received so")
        if pkg["opened"] is not None:
            raise RuleBroken("package-once", f"package {pid} was already opened by entry {pkg['opened']}")
        found, missing = list(e["units_found"]), list(e["units_missing"])
        named = found + missing
        if (sorted(named) != sorted(pkg["units"]) or len(set(named)) != len(named)
                or e.get("units_per_package") != pkg["per"] or len(found) > pkg["per"]):
            raise RuleBroken("package-contents", f"opening package {pid} finds {len(found)} and misses {len(missing)} "
                                                 f"units ({', '.join(sorted(set(named) - set(pkg['units']))[:3]) or 'none'}"
                                                 f" not received in it); it was received with {pkg['per']}: "
                                                 f"{', '.join(pkg['units'][:3])}...")
        gone = [u for u in pkg["units"] if self.balance.get(u, ZERO) <= 0]
        if gone:
            raise RuleBroken("package-contents", f"package {pid} is opened after its unit {gone[0]} left the book")
        if (e.get("discrepancy_id") is not None) != bool(missing):
            raise RuleBroken("package-contents", f"opening package {pid} misses {len(missing)} units and "
                                                 f"{'opens' if e.get('discrepancy_id') else 'opens no'} discrepancy")

    def _packaged_units(self, e: dict[str, Any]) -> None:
        """A unit still in its package is used only after its package is opened, and leaves only
        with every unit of the package still on the book."""
        kind = e["kind"]
        moved = {v for v, _k, ml in projections.movements(e) if ml < 0}
        for vial in sorted(moved):
            pid = self.packaged.get(vial)
            if pid is None:
                continue
            if kind in self.UNIT_USES:
                raise RuleBroken("package-sealed", f"{kind} uses vial {vial}, still in sealed package {pid}")
            pkg = self.packages[pid]
            if pkg["opened"] is not None and kind == "loss_adjusted":
                continue  # the units the opening did not find, by its discrepancy's resolution
            if pkg["opened"] is not None:
                raise RuleBroken("package-sealed", f"{kind} moves vial {vial}, not found when package {pid} was "
                                                   f"opened (entry {pkg['opened']}); only its discrepancy settles it")
            left = [u for u in pkg["units"] if self.packaged.get(u) == pid and self.balance.get(u, ZERO) > 0]
            if not set(left) <= moved:
                raise RuleBroken("package-sealed", f"{kind} moves part of sealed package {pid} "
                                                   f"({len(set(left) & moved)} of its {len(left)} units)")

    def _apply_packages(self, e: dict[str, Any]) -> None:
        if e["kind"] == "stock_received":
            for line in e.get("lines") or ():
                per = line.get("units_per_package", 1)
                if line.get("packages") is None or per <= 1:
                    continue
                for k, pid in enumerate(line["package_ids"]):
                    units = list(line["vial_ids"][k * per:(k + 1) * per])
                    self.packages[pid] = {"units": units, "per": per, "receipt_seq": e["seq"], "opened": None}
                    for u in units:
                        self.packaged[u] = pid
                    self.any_packaged = True
        elif e["kind"] == "package_opened":
            self.packages[e["package_id"]]["opened"] = e["seq"]
            for u in e["units_found"]:
                self.packaged.pop(u, None)
            # the opener and the witness counted the package: neither resolves its discrepancy
            self.counters[e["seq"]] = frozenset(s.get("staff_id") for s in e.get("signatures") or ())

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

    def _apply(self, e: dict[str, Any], moved: list | None = None) -> None:
        kind = e["kind"]
        self._note_registrations(e)  # issue 19, recipients part
        if kind == "product_added":
            self.products[e["product"]["ndc_key"]] = _as_added(e["product"])
        if kind == "registrant_registered":
            self.clinic_state = (e.get("address") or {}).get("state")
            self.tz = ZoneInfo(e["time_zone"])
        elif kind == "prescriber_registered":
            self.prescribers[e["dea_number"]] = {"name": e.get("name"), "schedules": e.get("schedules") or (),
                                                 "expires_on": e.get("expires_on")}
        elif kind == "staff_enrolled":
            self.staff[e.get("staff_id")] = e.get("printed_name")
        elif kind == "policy_set":  # issue 20: the count tolerance in force from here on
            self.open_count_tolerance = open_count_tolerance(e)
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
            self.alert_keys[e.get("alert_id")] = e.get("alert_key")  # issue 20
        elif kind == "theft_or_loss_reported":  # issue 20
            self.loss_reports.add(e["seq"])
        elif kind in ("dea_notice_sent", "form_106_filed"):  # issue 20
            self.follow_ups[e["seq"]] = (kind, e.get("loss_report_seq"))
        elif kind == "inventory_taken":
            self.counts_seen.add(e["seq"])
            # issue 20: the taker and the witness counted: neither resolves its discrepancies
            self.counters[e["seq"]] = frozenset(s.get("staff_id") for s in e.get("signatures") or ())
        elif kind in ("stock_received", "package_opened"):  # issue 19, package hierarchy
            self._apply_packages(e)
        for vial, _ndc, ml in projections.movements(e) if moved is None else moved:
            left = self.balance[vial] = self.balance.get(vial, ZERO) + ml
            if left < 0:
                raise RuleBroken("stock-never-negative", f"{e['kind']} takes vial {vial} to {left} mL")
