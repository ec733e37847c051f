"""Staff signatures, checked by every verifier (issue 17): ``verify``, ``verify --deep``,
``verify-bundle`` and the exported bundle feed one registrant's entries, in seq order, to a
:class:`StaffSignatureCheck`.

The rules are the live server's (``ledger.storage.authority.Authority.extended``), through the same
pure functions (``ledger.integrity.credential_chain``), so what the server accepts and what an
inspector's verifier accepts cannot drift apart:

* the registrant's first ``staff_credential_enrolled`` entry is its **root**; entries before it
  are **unsigned history**: recorded before staff credentials existed, counted and reported once
  ("entries 0-13 were recorded before staff credentials existed"), never silently accepted;
* from the root on, every signature of every entry must be a staff signature that verifies against
  the credential enrolled (and not revoked) for that person at that point of the chain
  (``check_entry``); every credential is enrolled by the chain's rules (``check_enrolment``);
* a statement nonce is single-use: one seen twice is a signature copied from another entry (the
  copy verifies on its own; only its nonce gives it away). One exception, because a person signs a
  *command* and a few commands write more than one entry, each carrying the command's signatures
  (``ONE_COMMAND``): the entry right after (system entries aside) may carry the same signature when
  it is the next entry that command writes and links to the one before as the command links them
  (an enrolment's role grants: the same staff id, a role the signed command asked for, once each;
  a dose's waste: its ``administration_seq`` and a waste in the signed command; a resolution's
  loss adjustment: its ``resolution_seq`` and the signed discrepancy);
* only ``alert_raised`` (``SYSTEM_KINDS``: written by the system's alert rules, signed by nobody)
  may carry no signature after the root.

Roles (for who may approve a credential) come from ``staff_enrolled`` / ``role_granted`` /
``role_revoked``, counted after the root only when their signatures verify, as ``Authority`` does.

Each problem names the entry (seq and kind), the person (staff id and printed name) and what
failed. The time spent checking is kept apart (``seconds``) so ``verify`` can report it beside the
chain check. Memory: staff, roles and credentials of the registrant, and one nonce per signature
after the root.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ledger.integrity import canonical as canon
from ledger.integrity.credential_chain import (
    APPROVER_ROLES,
    Credential,
    RelyingParty,
    check_enrolment,
    check_entry,
    check_signature,
    credential_from_entry,
)
from ledger.integrity.staff_signatures import SignatureInvalid

#: Entry kinds the system writes with no signature at all (``alerts._append``): allowed after the
#: root only with an empty signature list. Keep in step with ``rules_replay.SIGNATURES`` (``()``).
SYSTEM_KINDS = frozenset({"alert_raised", "alert_cleared"})

ROLE_KINDS = frozenset({"staff_enrolled", "role_granted", "role_revoked"})

#: Before the root only these kinds matter (roles, and the root itself): ``feed_bytes`` decodes
#: nothing else there.
_BEFORE_ROOT = re.compile(b'"kind":"(?:' + b"|".join(
    k.encode() for k in sorted(ROLE_KINDS | {"staff_credential_enrolled"})) + b')"')

#: Commands that write more than one entry under one statement (one nonce): the statement's kind
#: (the command) -> the (entry before, entry after) pairs it writes. See ``_same_command``.
ONE_COMMAND: dict[str, frozenset[tuple[str, str]]] = {
    "enroll_staff": frozenset({("staff_enrolled", "role_granted"), ("role_granted", "role_granted")}),
    "administer_dose": frozenset({("dose_administered", "dose_wasted")}),
    "resolve_discrepancy": frozenset({("discrepancy_resolved", "loss_adjusted")}),
}


@dataclass(frozen=True)
class SignatureProblem:
    """One entry whose staff signatures fail: where, who, what."""

    seq: int
    kind: str
    #: The people concerned, each "staff id (printed name)": the signer whose signature failed,
    #: else the credential's owner (credential entries), else every signer of the entry.
    people: tuple[str, ...]
    reason: str

    @property
    def text(self) -> str:
        """The problem without the seq (the caller's report names the place)."""
        return f"{self.kind} in the name of {', '.join(self.people) or 'nobody'}: {self.reason}"

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.text}"


@dataclass(frozen=True)
class StaffSignatureSummary:
    """What the check found for one registrant (kept by ``verify`` and the bundle's report)."""

    registrant: str
    entries: int
    root_seq: int | None
    root_fingerprint: str | None
    root_owner: str | None  # "S1 (Avery Admin)"
    unsigned_history: int
    signed_entries: int
    system_entries: int
    signatures_checked: int
    credentials: int
    seconds: float

    def lines(self) -> list[str]:
        """What a verifier prints: unsigned history once, then the signature counts and the root."""
        out = []
        if self.unsigned_history:
            last = self.unsigned_history - 1
            span = "entry 0 was" if last == 0 else f"entries 0-{last} were"
            tail = "" if self.root_seq is not None else " (no staff credential is enrolled yet)"
            out.append(f"{self.registrant}: {span} recorded before staff credentials existed: unsigned history{tail}")
        if self.root_seq is not None:
            system = f", {self.system_entries} system entr{'y' if self.system_entries == 1 else 'ies'} unsigned " \
                     "by design (alert_raised)" if self.system_entries else ""
            out.append(f"{self.registrant}: staff signatures: {self.signed_entries} entries from {self.root_seq} on, "
                       f"{self.signatures_checked} signatures verified{system}; {self.credentials} credential(s)")
            out.append(f"{self.registrant}: root staff credential {self.root_fingerprint} of {self.root_owner} "
                       f"(entry {self.root_seq})")
        return out


class StaffSignatureCheck:
    """The staff signatures of one registrant, checked as its entries stream by (``feed``, seq order)."""

    def __init__(self, registrant: str):
        self.registrant = registrant
        self.staff: dict[str, str] = {}  # staff_id -> printed name (enrolment entry)
        self.roles: dict[str, set[str]] = {}
        self.credentials: dict[str, Credential] = {}
        self.root_seq: int | None = None
        self.root_fingerprint: str | None = None
        self.root_owner: str | None = None
        self.relying_party: RelyingParty | None = None
        self.nonces: dict[str, int] = {}  # statement nonce -> seq of the last entry that carried it
        #: The last entry whose staff signatures verified, and the roles its enrolment command has
        #: granted so far (an enrolment writes staff_enrolled, then one role_granted per role).
        self._last_signed: dict[str, Any] | None = None
        self._granted: set[str] = set()
        self.entries = 0
        self.unsigned_history = 0
        self.signed_entries = 0
        self.system_entries = 0
        self.signatures_checked = 0
        self.problems: list[SignatureProblem] = []
        self.seconds = 0.0
        self._next_seq = 0

    # --- feeding ---------------------------------------------------------------------------------

    def feed_bytes(self, seq: int, data: bytes) -> SignatureProblem | None:
        """:meth:`feed` from an entry's canonical bytes (the fast ``verify`` decodes only here;
        the decoding is timed with the check)."""
        if self.root_seq is None and _BEFORE_ROOT.search(data) is None:
            # Unsigned history that neither enrols anyone nor changes a role: nothing to read. (RFC
            # 8785 bytes spell an entry's own kind exactly so; a marker elsewhere only costs a decode.)
            # One regex pass, untimed: this is most of an unsigned chain and must stay cheap.
            self._next_seq = seq + 1
            self.entries += 1
            self.unsigned_history += 1
            return None
        start = time.perf_counter()
        data = bytes(data)
        try:
            entry = canon.decode(data)
        except ValueError as exc:
            entry = None
            why = f"its bytes are not entry JSON ({exc}): its signatures cannot be checked"
        else:
            why = "its bytes are not an entry object: its signatures cannot be checked"
        self.seconds += time.perf_counter() - start
        if not isinstance(entry, dict):
            self._next_seq = seq + 1
            self.entries += 1
            if self.root_seq is None:  # unsigned history either way; the deep pass names such bytes
                self.unsigned_history += 1
                return None
            return self._problem(seq, "?", (), why)
        return self.feed(entry, seq=seq)

    def feed(self, entry: dict[str, Any], *, seq: int | None = None) -> SignatureProblem | None:
        """Check the next entry (decoded) and apply it; returns the problem found (also kept in
        ``problems``), or None. ``seq`` is where the caller found it (default: the next one)."""
        start = time.perf_counter()
        try:
            return self._feed(entry, self._next_seq if seq is None else seq)
        finally:
            self.seconds += time.perf_counter() - start

    def feed_all(self, entries: Iterable[dict[str, Any]]) -> list[SignatureProblem]:
        """Feed every entry; returns every problem."""
        for e in entries:
            self.feed(e)
        return list(self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> StaffSignatureSummary:
        """The counts, root and time so far (``lines()`` says it as a verifier prints it)."""
        return StaffSignatureSummary(
            self.registrant, self.entries, self.root_seq, self.root_fingerprint, self.root_owner,
            self.unsigned_history, self.signed_entries, self.system_entries, self.signatures_checked,
            len(self.credentials), self.seconds)

    # --- the rules ---------------------------------------------------------------------------------

    def _feed(self, entry: dict[str, Any], seq: int) -> SignatureProblem | None:
        self._next_seq = seq + 1
        self.entries += 1
        kind = entry.get("kind") if isinstance(entry.get("kind"), str) else "?"
        if self.root_seq is None and kind != "staff_credential_enrolled":
            # Unsigned history: recorded before the root, so nobody could have signed it with a
            # credential; counted and reported once. Its roles count (who may approve the root).
            # (Whether its bytes are this registrant's entry at this seq is the deep pass's check.)
            self.unsigned_history += 1
            self._apply_roles(entry, kind, seq)
            return None
        if entry.get("seq") != seq or entry.get("registrant") != self.registrant:
            return self._problem(seq, kind, (), f"the entry's bytes say {entry.get('registrant')!r} seq "
                                                f"{entry.get('seq')!r}, not {self.registrant} seq {seq}: its "
                                                "signatures cannot be placed in the chain")
        if kind == "staff_credential_enrolled":
            return self._enrolment(entry, seq)
        sigs = entry.get("signatures")
        if kind in SYSTEM_KINDS and sigs == []:
            self.system_entries += 1
            return None
        try:
            statements = check_entry(entry, self.credentials, self.relying_party, names=self.staff)
        except (SignatureInvalid, KeyError, TypeError, ValueError) as exc:
            return self._problem(seq, kind, self._culprit(entry), self._why(exc))
        reused = self._nonces(entry, statements, seq)
        if reused is not None:
            return reused
        self.signed_entries += 1
        self.signatures_checked += len(statements)
        self._signed(entry, kind)
        if kind == "staff_credential_revoked":
            return self._revocation(entry, seq)
        self._apply_roles(entry, kind, seq)
        return None

    def _signed(self, entry: dict[str, Any], kind: str) -> None:
        if kind == "staff_enrolled":
            self._granted = set()
        elif kind == "role_granted" and self._last_signed is not None \
                and self._last_signed["kind"] in ("staff_enrolled", "role_granted"):
            self._granted.add(entry.get("role"))
        self._last_signed = entry

    def _enrolment(self, entry: dict[str, Any], seq: int) -> SignatureProblem | None:
        is_root = self.root_seq is None
        try:
            new, rp = check_enrolment(entry, self.credentials, self.relying_party, self._roles_of, is_root=is_root,
                                      names=self.staff)
            statements = [s["statement"] for s in entry["signatures"]]
        except (SignatureInvalid, KeyError, TypeError, ValueError) as exc:
            if is_root:
                self.unsigned_history += 1  # not a root: the chain is still unsigned history here
            owner = entry.get("staff_id")
            people = self._culprit(entry) if self._culprit_sig(entry) is not None else (
                (self._who(owner, None),) if isinstance(owner, str) else self._culprit(entry))
            what = "root credential" if is_root else "credential"
            return self._problem(seq, "staff_credential_enrolled", people, f"{what} refused: {self._why(exc)}")
        reused = self._nonces(entry, statements, seq)
        if reused is not None:
            if is_root:
                self.unsigned_history += 1
            return reused
        old = entry.get("replaces")
        if isinstance(old, str) and old in self.credentials and self.credentials[old].staff_id == new.staff_id:
            self.credentials[old] = replace(self.credentials[old], revoked_seq=seq)
        self.credentials[new.credential_id] = new
        if is_root:
            self.root_seq, self.root_fingerprint, self.relying_party = seq, new.fingerprint, rp
            self.root_owner = self._who(new.staff_id, None)
        self.signed_entries += 1
        self.signatures_checked += len(statements)
        self._signed(entry, "staff_credential_enrolled")
        return None

    def _revocation(self, entry: dict[str, Any], seq: int) -> SignatureProblem | None:
        """Revoked by its owner, or by a manager or administrator (``Authority``'s rule). A
        revocation the rule does not allow revokes nothing on the server: it is named here."""
        sid, cid = entry.get("staff_id"), entry.get("credential_id")
        cred = self.credentials.get(cid) if isinstance(cid, str) else None
        signer = entry["signatures"][0].get("staff_id")
        if cred is None or cred.staff_id != sid or not cred.active:
            return self._problem(seq, "staff_credential_revoked", self._culprit(entry),
                                 f"revokes credential {cid!r} of {sid!r}, which is not an active credential of "
                                 "theirs at this point: the revocation takes no effect")
        if signer != sid and not self._roles_of(signer) & APPROVER_ROLES:
            return self._problem(seq, "staff_credential_revoked", self._culprit(entry),
                                 f"revokes credential {cid} of {self._who(sid, None)}, but the signer is neither "
                                 "its owner nor a manager or administrator: the revocation takes no effect")
        self.credentials[cid] = replace(cred, revoked_seq=seq)
        return None

    def _nonces(self, entry: dict[str, Any], statements: list[dict], seq: int) -> SignatureProblem | None:
        """Every statement nonce of the entry must be new (in the chain and in this entry), but for
        the next entry of a command that writes several (``_same_command``)."""
        mine: dict[str, int] = {}
        for i, st in enumerate(statements):
            nonce = st["nonce"]
            first = self.nonces.get(nonce, mine.get(nonce))
            if first is not None and nonce not in mine and self._same_command(st, entry, first):
                mine[nonce] = seq
                continue
            if first is not None:
                sig = entry["signatures"][i]
                where = f"entry {first}" if first != seq else "another signature of this entry"
                return self._problem(seq, entry["kind"], (self._who(sig.get("staff_id"), sig),),
                                     f"the {sig.get('meaning')} signature reuses the statement nonce of {where}: "
                                     "a signature copied from another entry")
            mine[nonce] = seq
        self.nonces.update(mine)
        return None

    def _same_command(self, st: dict, entry: dict[str, Any], last_seq: int) -> bool:
        """Whether ``entry`` is the next entry of the command whose statement ``st`` the last
        signed entry (at ``last_seq``) carried: right after it, a pair that command writes, linked
        to it as the command links them (``ONE_COMMAND``). A copy appended later, of another kind,
        or not linked the command's way is a copy."""
        prev = self._last_signed
        if prev is None or prev.get("seq") != last_seq:
            return False
        kind = entry.get("kind")
        if (prev.get("kind"), kind) not in ONE_COMMAND.get(st.get("kind"), frozenset()):
            return False
        command = st.get("command") or {}
        if kind == "role_granted":
            roles = command.get("roles")
            role = entry.get("role")
            return entry.get("staff_id") == prev.get("staff_id") and isinstance(roles, list) and role in roles \
                and role not in self._granted
        if kind == "dose_wasted":
            return entry.get("administration_seq") == last_seq and isinstance(command.get("waste"), dict)
        if kind == "loss_adjusted":  # only under a resolution that says it adjusts the book
            return entry.get("resolution_seq") == last_seq and prev.get("adjusts_stock") is True \
                and entry.get("discrepancy_id") == command.get("discrepancy_id")
        return False

    def _apply_roles(self, entry: dict[str, Any], kind: str, seq: int) -> None:
        sid = entry.get("staff_id")
        if kind not in ROLE_KINDS or not isinstance(sid, str):
            return
        if kind == "staff_enrolled":
            if isinstance(entry.get("printed_name"), str):
                self.staff.setdefault(sid, entry["printed_name"])
        elif isinstance(entry.get("role"), str):
            held = self.roles.setdefault(sid, set())
            if kind == "role_granted":
                held.add(entry["role"])
            else:
                held.discard(entry["role"])

    def _roles_of(self, sid: object) -> frozenset[str]:
        return frozenset(self.roles.get(sid, ())) if isinstance(sid, str) else frozenset()

    # --- naming ---------------------------------------------------------------------------------------

    def _who(self, sid: Any, sig: dict | None) -> str:
        """"S3 (Nora Nurse)": the name from the enrolment entry; the signature's own name (which
        anyone can write) only for someone the chain never enrolled."""
        name = self.staff.get(sid) if isinstance(sid, str) else None
        if name is not None:
            return f"{sid} ({name})"
        claimed = sig.get("printed_name") if isinstance(sig, dict) else None
        return f"{sid!s} ({claimed}, not enrolled)" if claimed else f"{sid!s} (not enrolled)"

    def _culprit_sig(self, entry: dict[str, Any]) -> dict | None:
        """The first signature that fails on its own (None: each verifies alone)."""
        sigs = entry.get("signatures")
        if not isinstance(sigs, list):
            return None
        own = None
        if entry.get("kind") == "staff_credential_enrolled":
            try:
                own = credential_from_entry(entry)
            except (SignatureInvalid, KeyError, TypeError):
                own = None
        for sig in sigs:
            use = own if own is not None and isinstance(sig, dict) and sig.get("credential_id") == own.credential_id \
                else None
            try:
                check_signature(sig, entry, self.credentials, self.relying_party, credential=use)
            except (SignatureInvalid, KeyError, TypeError, ValueError):
                return sig if isinstance(sig, dict) else {}
        return None

    def _culprit(self, entry: dict[str, Any]) -> tuple[str, ...]:
        """Who to name: the signer whose signature fails, else every signer."""
        bad = self._culprit_sig(entry)
        if bad is not None:
            return (self._who(bad.get("staff_id"), bad),)
        sigs = entry.get("signatures")
        return tuple(self._who(s.get("staff_id"), s) for s in sigs if isinstance(s, dict)) \
            if isinstance(sigs, list) else ()

    @staticmethod
    def _why(exc: Exception) -> str:
        if isinstance(exc, SignatureInvalid):
            return exc.reason
        return f"a signature or statement of the wrong shape ({exc!r})"

    def _problem(self, seq: int, kind: str, people: tuple[str, ...], reason: str) -> SignatureProblem:
        p = SignatureProblem(seq, kind, people, reason)
        self.problems.append(p)
        return p


__all__ = ["ONE_COMMAND", "SYSTEM_KINDS", "SignatureProblem", "StaffSignatureCheck", "StaffSignatureSummary"]
