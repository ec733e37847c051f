"""The chain of trust of staff credentials, and the check of every staff signature on an entry.

Pure functions over decoded entries: the live server's authority (``ledger.storage.authority``)
and every offline checker (``verify``, ``verify --deep``, ``verify-bundle``) use the same ones, so
what the server accepts and what an inspector's verifier accepts cannot drift apart.

Rules:

* A registrant's first ``staff_credential_enrolled`` entry is its **root**: the credential of an
  administrator, signed by that credential alone. From the root on, every signature on every entry
  must be a staff signature that verifies (``check_entry``); entries before it are unsigned history.
* Every later credential is signed by itself (``performed``: its owner holds it) and ``approved`` by
  a manager or administrator other than the owner with a credential of their own; while no other
  manager or administrator holds a credential, the owner's own earlier credential may approve it.
* A revoked credential signs nothing recorded after its revocation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.integrity.staff_signatures import (
    METHODS,
    PASSKEY,
    PASSWORD_KEY,
    SignatureInvalid,
    fingerprint,
    password_key_credential_id,
    statement_bytes,
    verify_password_key,
)

CREDENTIAL_KINDS = ("staff_credential_enrolled", "staff_credential_revoked")

#: The entries each signed command writes: a statement signs a command (its ``kind``), and an
#: entry carrying it must be one that command writes. ``CommandContext.append`` refuses any other
#: pairing, so a new command without its row here fails the first test that runs it.
COMMAND_KINDS: dict[str, frozenset[str]] = {name: frozenset(kinds) for name, kinds in {
    "register_registrant": ("registrant_registered", "staff_enrolled", "role_granted"),
    "add_product": ("product_added",), "add_supplier": ("supplier_added",),
    "record_supplier_registration": ("supplier_registration_recorded",),
    "enroll_staff": ("staff_enrolled", "role_granted"), "grant_role": ("role_granted",),
    "revoke_role": ("role_revoked",), "set_policy": ("policy_set",),
    "enrol_credential": ("staff_credential_enrolled",), "revoke_credential": ("staff_credential_revoked",),
    "take_inventory": ("inventory_taken",), "receive_stock": ("stock_received",),
    "register_patient": ("patient_registered",), "change_patient_details": ("patient_details_changed",),
    "administer_dose": ("dose_administered", "dose_wasted"), "record_waste": ("dose_wasted",),
    "start_count": ("count_started",), "submit_count": ("stock_counted",),
    "resolve_discrepancy": ("discrepancy_resolved", "loss_adjusted"),
    "record_breakage": ("breakage_recorded",), "correct_entry": ("entry_corrected",),
    "destroy_stock": ("stock_destroyed",), "transfer_stock": ("stock_transferred",),
    "return_stock": ("stock_returned",), "report_theft_or_loss": ("theft_or_loss_reported",),
    "quarantine_stock": ("stock_quarantined",), "release_quarantine": ("quarantine_released",),
    "store_document": ("document_stored",),
    "alert_acknowledged": ("alert_acknowledged",), "alert_resolved": ("alert_resolved",),
    "record_registration_expiry": ("registration_expiry_recorded",),
    "certify_report_key": ("report_key_certified",),  # issue 18: the report signing key
    "register_prescriber": ("prescriber_registered",),  # issue 19
    "record_esketamine_session": ("esketamine_session_recorded",),  # issue 19, esketamine part
    # issue 19, preparations part: a diluted infusion's preparation, its infusion and its waste
    "make_preparation": ("preparation_made",), "infuse_preparation": ("preparation_infused",),
    "waste_preparation": ("preparation_wasted",),
    "open_package": ("package_opened",),  # issue 19, package hierarchy: a carton opened, witnessed
    # issue 20: a theft or loss report's follow-up (its alerts clear, unsigned, in the same command)
    "record_dea_notice": ("dea_notice_sent",), "record_form_106_filing": ("form_106_filed",),
}.items()}


#: Entries whose every vial the signed command names itself (not chosen by the server: a receipt
#: numbers new vials, a waste or a loss adjustment finds its vials from other records).
NAMES_ITS_VIALS = frozenset({"dose_administered", "stock_destroyed", "stock_transferred", "stock_returned",
                             "breakage_recorded", "entry_corrected", "stock_quarantined", "quarantine_released",
                             "esketamine_session_recorded",
                             "preparation_made"})  # issue 19: a preparation's draws


def _vials(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "vial_id" and isinstance(v, str):
                out.add(v)
            elif k == "vial_ids" and isinstance(v, list):
                out.update(x for x in v if isinstance(x, str))
            else:
                _vials(v, out)
    elif isinstance(value, list):
        for v in value:
            _vials(v, out)
    return out


def _strings(value: Any, out: set[str]) -> set[str]:
    if isinstance(value, str):
        out.add(value.strip())
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
    return out


def check_command_writes(command: str, kind: str, entry: dict | None = None, fields: Any = None) -> None:
    """Refuse an entry of ``kind`` under a statement of ``command`` that never writes it, and an
    entry that moves a vial its signed command does not name (``NAMES_ITS_VIALS``): a signature
    made for one command cannot stand under an entry that moves other stock."""
    if kind not in COMMAND_KINDS.get(command, frozenset()):
        raise SignatureInvalid(f"the signed command ({command}) does not write {kind} entries")
    if entry is not None and kind in NAMES_ITS_VIALS:
        body = {k: v for k, v in entry.items() if k != "signatures"}
        unnamed = _vials(body, set()) - _strings(fields, set())
        if unnamed:
            raise SignatureInvalid(f"the entry moves vials its signed command does not name: {', '.join(sorted(unnamed))}")
APPROVER_ROLES = frozenset({"manager", "administrator"})


@dataclass(frozen=True)
class Credential:
    """An enrolled credential, as its ``staff_credential_enrolled`` entry records it."""

    staff_id: str
    credential_id: str
    method: str
    public_key: str
    fingerprint: str
    enrolled_seq: int
    revoked_seq: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_seq is None


@dataclass(frozen=True)
class RelyingParty:
    """The WebAuthn relying party fixed by the root credential."""

    rp_id: str
    origins: tuple[str, ...]


def _verify_proof(sig: dict, st_bytes: bytes, cred: Credential, rp: RelyingParty | None) -> None:
    if cred.method == PASSWORD_KEY:
        verify_password_key(sig.get("proof"), st_bytes, cred.public_key)
    elif cred.method == PASSKEY:
        from ledger.integrity import passkeys  # WebAuthn parsing only where passkeys are used

        if rp is None:
            raise SignatureInvalid("no WebAuthn relying party is fixed for this registrant")
        try:
            passkeys.verify_assertion(sig.get("proof"), statement_bytes=st_bytes, public_key=cred.public_key,
                                      rp_id=rp.rp_id, origins=list(rp.origins))
        except passkeys.PasskeyError as exc:
            raise SignatureInvalid(f"the passkey signature does not verify: {exc.reason}") from None
    else:
        raise SignatureInvalid(f"unknown credential method {cred.method!r}")


def check_signature(sig: Any, entry: dict, credentials: Mapping[str, Credential], rp: RelyingParty | None,
                    *, credential: Credential | None = None, names: Mapping[str, str] | None = None) -> dict:
    """Check one staff signature of ``entry``; returns its statement. ``credential`` overrides the
    lookup (the new credential signing its own enrolment). Raises :class:`SignatureInvalid`."""
    if not isinstance(sig, dict):
        raise SignatureInvalid("a signature must be an object")
    who = sig.get("staff_id")
    cid = sig.get("credential_id")
    if not isinstance(cid, str) or "statement" not in sig or "proof" not in sig:
        raise SignatureInvalid(f"the signature of {who!r} is not a staff signature (no credential, statement "
                               "and proof); from the registrant's first credential on, every signature must be")
    cred = credential if credential is not None else credentials.get(cid)
    if cred is None:
        raise SignatureInvalid(f"credential {cid} of {who!r} is not enrolled at this point of the chain")
    if cred.staff_id != who:
        raise SignatureInvalid(f"credential {cid} belongs to {cred.staff_id}, not to {who!r}")
    if names is not None and names.get(who) != sig.get("printed_name"):
        raise SignatureInvalid(f"the signature names {sig.get('printed_name')!r}, but {who!r} was enrolled as "
                               f"{names.get(who)!r}")
    if not cred.active:
        raise SignatureInvalid(f"credential {cid} of {who!r} was revoked at entry {cred.revoked_seq}")
    if sig.get("auth_method") != cred.method:
        raise SignatureInvalid(f"the signature says {sig.get('auth_method')!r} but credential {cid} is a {cred.method}")
    st = sig["statement"]
    st_bytes = statement_bytes(st)
    if st["registrant"] != entry.get("registrant"):
        raise SignatureInvalid(f"the statement signed by {who!r} names registrant {st['registrant']}, "
                               f"not {entry.get('registrant')}")
    if st["meaning"] != sig.get("meaning"):
        raise SignatureInvalid(f"the statement signed by {who!r} means {st['meaning']!r}, the entry says "
                               f"{sig.get('meaning')!r}")
    _verify_proof(sig, st_bytes, cred, rp)
    return st


def check_entry(entry: dict, credentials: Mapping[str, Credential], rp: RelyingParty | None,
                *, own: Credential | None = None, names: Mapping[str, str] | None = None) -> list[dict]:
    """Check every signature of an entry recorded after the root; returns their statements.
    All of them must have signed one command (same kind and fields): a signature lifted from
    another entry, or a statement whose fields differ, fails here or on its nonce (``verify``
    refuses a nonce seen twice). ``own`` is the credential an enrolment entry enrols."""
    sigs = entry.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise SignatureInvalid("the entry has no signatures")
    statements = []
    for sig in sigs:
        use = own if (own is not None and isinstance(sig, dict) and sig.get("credential_id") == own.credential_id) \
            else None
        statements.append(check_signature(sig, entry, credentials, rp, credential=use, names=names))
    first = statements[0]
    for st in statements[1:]:
        if st["kind"] != first["kind"] or st["command"] != first["command"]:
            raise SignatureInvalid("the signers of this entry signed different commands")
    check_command_writes(first["kind"], entry.get("kind"), entry, first["command"])
    return statements


def _text(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def check_authority_binding(entry: dict, st: dict, username_of: Callable[[str], str | None]) -> None:
    """An entry that changes who may do what must be what its signed command writes: the
    command named in the statement, with the same staff member, role or credential. A
    signature lifted from another command (a destruction, another grant) fails here.
    ``username_of`` gives an enrolled staff member's username (an enrolment's role grants name
    the new staff id, which the command cannot know: its username links them)."""
    kind, cmd, name = entry.get("kind"), st.get("command") or {}, st.get("kind")
    sid = entry.get("staff_id")
    if kind == "staff_enrolled":
        ok = name == "enroll_staff" and _text(cmd.get("username")) == _text(entry.get("username"))
    elif kind == "role_granted":
        ok = (name == "grant_role" and cmd.get("staff_id") == sid and _text(cmd.get("role")) == entry.get("role")) or (
            name == "enroll_staff" and entry.get("role") in [_text(r) for r in cmd.get("roles") or []]
            and _text(cmd.get("username")) == _text(username_of(sid)))
    elif kind == "role_revoked":
        ok = name == "revoke_role" and cmd.get("staff_id") == sid and _text(cmd.get("role")) == entry.get("role")
    elif kind == "staff_credential_enrolled":
        ok = (name == "enrol_credential" and cmd.get("staff_id") == sid
              and cmd.get("credential_id") == entry.get("credential_id") and cmd.get("public_key") == entry.get("public_key"))
    elif kind == "staff_credential_revoked":
        ok = name == "revoke_credential" and cmd.get("staff_id") == sid and cmd.get("credential_id") == entry.get(
            "credential_id")
    else:
        return
    if not ok:
        raise SignatureInvalid(f"the signed command ({name}) does not write this {kind} entry")


def credential_from_entry(entry: dict) -> Credential:
    """The credential an enrolment entry records; refuses a malformed one."""
    method = entry.get("method")
    pub = entry.get("public_key")
    if method not in METHODS or not isinstance(pub, str) or not pub:
        raise SignatureInvalid("a credential needs a known method and a public key")
    if entry.get("fingerprint") != fingerprint(method, pub):
        raise SignatureInvalid("the credential's fingerprint is not that of its public key")
    if method == PASSWORD_KEY and entry.get("credential_id") != password_key_credential_id(pub):
        raise SignatureInvalid("a password key's credential id is derived from its public key")
    if not isinstance(entry.get("credential_id"), str) or not isinstance(entry.get("staff_id"), str):
        raise SignatureInvalid("a credential needs a staff id and a credential id")
    return Credential(entry["staff_id"], entry["credential_id"], method, pub, entry["fingerprint"], entry["seq"])


def check_enrolment(entry: dict, credentials: Mapping[str, Credential], rp: RelyingParty | None,
                    roles_of: Callable[[str], frozenset[str]], *, is_root: bool,
                    names: Mapping[str, str] | None = None) -> tuple[Credential, RelyingParty | None]:
    """Check a ``staff_credential_enrolled`` entry against the credentials before it. Returns the
    new credential and the relying party (fixed by the root). Raises :class:`SignatureInvalid`."""
    new = credential_from_entry(entry)
    if names is not None and new.staff_id not in names:
        raise SignatureInvalid(f"{new.staff_id} is not enrolled staff: no credential is theirs")
    if new.credential_id in credentials:
        raise SignatureInvalid(f"credential {new.credential_id} is already enrolled")
    if is_root:
        rp_id = entry.get("rp_id")
        origins = entry.get("origins") or []
        if "administrator" not in roles_of(new.staff_id):
            raise SignatureInvalid("the first credential of a registrant must be an administrator's")
        rp = RelyingParty(rp_id, tuple(origins)) if isinstance(rp_id, str) and rp_id else None
    elif entry.get("rp_id") is not None:
        raise SignatureInvalid("only the root credential fixes the WebAuthn relying party")
    sigs = entry.get("signatures") or []
    owner = [s for s in sigs if isinstance(s, dict) and s.get("credential_id") == new.credential_id]
    if len(owner) != 1 or owner[0].get("staff_id") != new.staff_id or owner[0].get("meaning") != "performed":
        raise SignatureInvalid("a credential is enrolled with one signature by itself (performed), by its owner")
    check_entry(entry, credentials, rp, own=new, names=names)
    others = [s for s in sigs if s is not owner[0]]
    if is_root:
        if others:
            raise SignatureInvalid("the root credential is signed by itself alone")
        return new, rp
    holders = {c.staff_id for c in credentials.values() if c.active and roles_of(c.staff_id) & APPROVER_ROLES}
    approvals = [s for s in others if s.get("meaning") == "approved" and roles_of(s.get("staff_id")) & APPROVER_ROLES]
    if holders - {new.staff_id}:
        if not any(s.get("staff_id") != new.staff_id for s in approvals):
            raise SignatureInvalid(f"the credential of {new.staff_id} needs the approval of a manager or "
                                   "administrator other than its owner")
    elif not approvals:
        raise SignatureInvalid(f"the credential of {new.staff_id} needs the approval of an enrolled credential")
    return new, rp


__all__ = [
    "APPROVER_ROLES", "COMMAND_KINDS", "CREDENTIAL_KINDS", "check_authority_binding", "check_command_writes", "Credential", "RelyingParty", "check_enrolment", "check_entry",
    "check_signature", "credential_from_entry",
]
