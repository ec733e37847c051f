"""Who may do what at a registrant, read from the chain alone.

Authority is decided by the ``staff_enrolled``, ``role_granted`` and ``role_revoked`` entries:
their canonical bytes (the hashed, checkpointed record), never the ``staff`` / ``staff_roles``
projections, which are plain rows a database writer can edit without breaking any hash.
(``INSERT INTO staff_roles (..., 'manager')`` once let a nurse's live session set policy.)

Replaying those entries on every request would cost a scan of the chain, so the result is cached
in memory per database and registrant, keyed by the chain head it was computed at (seq and leaf
hash). A request first reads the head (one indexed row); the same head is a cache hit; a longer
chain whose earlier head is unchanged is brought up to date by decoding only the role entries
appended since; anything else (a rolled-back head, a chain that shrank) is computed again from
seq 0. So a new grant or revocation takes effect with the next request, in every process.

Inside a command the services pass the head of their own transaction (``CommandContext``), so
the check sees exactly the chain the new entry will extend.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from sqlalchemy.engine import Connection, Engine

from ledger.integrity import canonical as canon
from ledger.integrity.credential_chain import (
    APPROVER_ROLES,
    Credential,
    RelyingParty,
    check_authority_binding,
    check_enrolment,
    check_entry,
)
from ledger.integrity.staff_signatures import SignatureInvalid
from ledger.storage.engine import per_engine


def _raw(conn: Connection):
    # Imported late: ``store`` imports this module.
    from ledger.storage.store import raw

    return raw(conn)

#: The entry kinds authority is computed from.
AUTHORITY_KINDS = ("staff_enrolled", "role_granted", "role_revoked", "staff_credential_enrolled",
                   "staff_credential_revoked", "policy_set")
ROLE_KINDS = frozenset({"staff_enrolled", "role_granted", "role_revoked"})

#: Heads remembered per registrant: concurrent requests may sit at a few neighbouring heads.
_STATES_PER_REGISTRANT = 8


@dataclass(frozen=True)
class StaffRecord:
    """A staff member as their ``staff_enrolled`` entry records them."""

    staff_id: str
    printed_name: str
    username: str
    enrolled_seq: int


@dataclass(frozen=True)
class Authority:
    """Staff and roles of one registrant as of the entry at ``head_seq`` (leaf ``head_hash``)."""

    registrant: str
    head_seq: int
    head_hash: str
    staff: Mapping[str, StaffRecord] = field(default_factory=lambda: MappingProxyType({}))
    _roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    _usernames: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Staff credentials by id (issue 17), revoked ones included (``Credential.active``).
    credentials: Mapping[str, Credential] = field(default_factory=lambda: MappingProxyType({}))
    #: Seq of the root credential: from it on every signature must be a staff signature.
    root_seq: int | None = None
    relying_party: RelyingParty | None = None
    #: Statement nonces of the signed authority entries -> the last seq carrying each: a nonce is
    #: single-use, except on the very next entry of the same command (an enrolment's role grants).
    _nonces: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: Where the registrant's policy requires passkeys (issue 17), from its latest ``policy_set``
    #: entry (signed, once the root exists): never the editable ``policies`` row.
    passkey_required_for: tuple[str, ...] = ()

    @property
    def signing_required(self) -> bool:
        """Whether entries appended now must carry staff signatures (the root credential exists)."""
        return self.root_seq is not None

    def active_credentials(self, staff_id: str) -> list[Credential]:
        """The credentials ``staff_id`` may sign with now, oldest first."""
        return [c for c in self.credentials.values() if c.staff_id == staff_id and c.active]

    def member(self, staff_id: str) -> StaffRecord | None:
        """The enrolled staff member ``staff_id``, or None."""
        return self.staff.get(staff_id)

    def by_username(self, username: str) -> StaffRecord | None:
        """The enrolled staff member with this username, or None."""
        sid = self._usernames.get(username)
        return None if sid is None else self.staff.get(sid)

    def roles(self, staff_id: str) -> frozenset[str]:
        """The roles ``staff_id`` holds (granted and not revoked since); empty if none."""
        return self._roles.get(staff_id, frozenset())

    def holders(self, roles: frozenset[str] | set[str]) -> frozenset[str]:
        """Staff ids holding at least one of ``roles``."""
        return frozenset(sid for sid, held in self._roles.items() if held & roles)

    def extended(self, head_seq: int, head_hash: str, rows: list[tuple[int, str, bytes]]) -> Authority:
        """This authority with the role entries ``rows`` (seq, kind, canonical; seq order) applied."""
        staff = dict(self.staff)
        roles = {sid: set(held) for sid, held in self._roles.items()}
        usernames = dict(self._usernames)
        creds = dict(self.credentials)
        root_seq, rp = self.root_seq, self.relying_party
        nonces = dict(self._nonces)
        last_authority_seq = self.head_seq
        passkey_policy = self.passkey_required_for

        def username_of(sid: str) -> str | None:
            rec = staff.get(sid)
            return rec.username if rec is not None else None

        def fresh(statements: list[dict], seq: int) -> None:
            """Refuse a nonce seen before, unless on the entry right before, of the same command."""
            for st in statements:
                at = nonces.get(st["nonce"])
                if at is not None and not (at == seq - 1 and at == last_authority_seq):
                    raise SignatureInvalid(f"a signature of entry {at} copied onto entry {seq}")

        def roles_of(sid: object) -> frozenset[str]:
            return frozenset(roles.get(sid, ())) if isinstance(sid, str) else frozenset()

        for seq, kind, data in rows:
            entry = _decode(self.registrant, seq, kind, data)
            if entry is None:
                continue
            if kind == "policy_set":
                try:
                    if root_seq is not None:
                        check_entry(entry, creds, rp, names={k: v.printed_name for k, v in staff.items()})
                    scopes = entry.get("passkey_required_for") or []
                    passkey_policy = tuple(s for s in scopes if isinstance(s, str))
                except (SignatureInvalid, KeyError, TypeError, ValueError, RecursionError):
                    pass  # an unsigned policy after the root changes nothing (verify names it)
                continue
            sid = entry["staff_id"]
            # From the root credential on, an entry that changes who may do what counts only if
            # its signatures verify: the log key's holder, or a database writer, can append a
            # well-formed entry, but cannot sign it as a manager (``verify`` names such entries).
            try:
                if kind == "staff_credential_enrolled":
                    new, rp = check_enrolment(entry, creds, rp, roles_of, is_root=root_seq is None,
                                              names={k: v.printed_name for k, v in staff.items()})
                    statements = [s["statement"] for s in entry["signatures"]]
                    check_authority_binding(entry, statements[0], username_of)
                    fresh(statements, seq)
                    for st in statements:
                        nonces[st["nonce"]] = seq
                    last_authority_seq = seq
                    old = entry.get("replaces")
                    if isinstance(old, str) and old in creds and creds[old].staff_id == sid:
                        creds[old] = replace(creds[old], revoked_seq=seq)
                    creds[new.credential_id] = new
                    root_seq = seq if root_seq is None else root_seq
                    continue
                if root_seq is None:
                    if kind == "staff_credential_revoked":
                        continue
                else:
                    statements = check_entry(entry, creds, rp, names={k: v.printed_name for k, v in staff.items()})
                    check_authority_binding(entry, statements[0], username_of)
                    fresh(statements, seq)
                    for st in statements:
                        nonces[st["nonce"]] = seq
                    last_authority_seq = seq
                if kind == "staff_credential_revoked":
                    cred = creds.get(entry.get("credential_id"))
                    signer = entry["signatures"][0].get("staff_id")
                    if cred is not None and cred.staff_id == sid and cred.active \
                            and (signer == sid or roles_of(signer) & APPROVER_ROLES):
                        creds[cred.credential_id] = replace(cred, revoked_seq=seq)
                    continue
            except (SignatureInvalid, KeyError, TypeError, ValueError, RecursionError):
                continue
            if kind == "staff_enrolled":
                staff[sid] = StaffRecord(sid, entry["printed_name"], entry["username"], seq)
                usernames.setdefault(entry["username"], sid)
            elif kind == "role_granted":
                roles.setdefault(sid, set()).add(entry["role"])
            else:  # role_revoked
                roles.get(sid, set()).discard(entry["role"])
        return Authority(self.registrant, head_seq, head_hash, MappingProxyType(staff),
                         MappingProxyType({sid: frozenset(held) for sid, held in roles.items() if held}),
                         MappingProxyType(usernames), MappingProxyType(creds), root_seq, rp, MappingProxyType(nonces),
                         passkey_policy)


def _decode(registrant: str, seq: int, kind: str, data: bytes) -> dict | None:
    """The entry, if its own bytes say what its row says (registrant, seq, kind) and carry the
    fields authority needs. A row whose bytes disagree is not the hashed record: it grants
    nothing (``verify`` names it)."""
    try:
        entry = canon.decode(bytes(data))
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("registrant") != registrant or entry.get("seq") != seq \
            or entry.get("kind") != kind:
        return None
    if kind == "policy_set":
        return entry
    if not isinstance(entry.get("staff_id"), str):
        return None
    needs = {"staff_enrolled": ("printed_name", "username"), "role_granted": ("role",),
             "role_revoked": ("role",)}.get(kind, ("credential_id",))
    if not all(isinstance(entry.get(k), str) for k in needs):
        return None
    return entry


class _Cache:
    """Recent authorities of one database, per registrant (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states: dict[str, OrderedDict[tuple[int, str], Authority]] = {}

    def exact(self, registrant: str, key: tuple[int, str]) -> Authority | None:
        with self.lock:
            states = self.states.get(registrant)
            return None if states is None else states.get(key)

    def bases(self, registrant: str, head_seq: int) -> list[Authority]:
        """Cached authorities at an earlier seq, latest first (candidates to extend)."""
        with self.lock:
            states = list(self.states.get(registrant, {}).values())
        return sorted((a for a in states if a.head_seq < head_seq), key=lambda a: a.head_seq, reverse=True)

    def put(self, authority: Authority) -> None:
        with self.lock:
            states = self.states.setdefault(authority.registrant, OrderedDict())
            states[(authority.head_seq, authority.head_hash)] = authority
            states.move_to_end((authority.head_seq, authority.head_hash))
            while len(states) > _STATES_PER_REGISTRANT:
                states.popitem(last=False)


_cache_for = per_engine(_Cache)


def chain_head(conn: Connection, registrant: str) -> tuple[int, str] | None:
    """(seq, leaf hash) of the registrant's last entry, or None for no chain."""
    # Hand-written SQL (``RawSql``): every request and command asks this; compiling a statement
    # cost more than the indexed read.
    row = _raw(conn).one(conn, "SELECT seq, leaf_hash FROM entries WHERE registrant = :r ORDER BY seq DESC LIMIT 1",
                         {"r": registrant})
    return None if row is None else (int(row["seq"]), row["leaf_hash"])


_ROLE_ROWS_SQL = ("SELECT seq, kind, canonical FROM entries WHERE registrant = :r AND seq > :a AND seq <= :u AND kind IN ("
                  + ", ".join(f"'{k}'" for k in AUTHORITY_KINDS) + ") ORDER BY seq")


def _role_rows(conn: Connection, registrant: str, after: int, upto: int) -> list[tuple[int, str, bytes]]:
    rows = _raw(conn).rows(conn, _ROLE_ROWS_SQL, {"r": registrant, "a": after, "u": upto})
    return [(int(r["seq"]), r["kind"], bytes(r["canonical"])) for r in rows]


def _leaf_at(conn: Connection, registrant: str, seq: int) -> str | None:
    return _raw(conn).scalar(conn, "SELECT leaf_hash FROM entries WHERE registrant = :r AND seq = :s",
                             {"r": registrant, "s": seq})


def carry_forward(engine: Engine, registrant: str, before: tuple[int, str], after: tuple[int, str]) -> None:
    """An entry that changes no authority was appended at ``after`` onto ``before``: the cached
    authority at ``before`` (if any) is also the authority at ``after``.

    Why: the head moves with every entry, so without this every command missed the cache and
    re-read the chain since the last cached head. Keyed by the new leaf hash, which commits to
    the whole chain before it, so a rolled-back entry's key is simply never asked for again."""
    cache = _cache_for(engine)
    found = cache.exact(registrant, before)
    if found is not None:
        cache.put(replace(found, head_seq=after[0], head_hash=after[1]))


def authority_at(conn: Connection, registrant: str, head: tuple[int, str] | None = None) -> Authority:
    """The registrant's authority as of ``head`` (seq, leaf hash), read on ``conn`` (and so inside
    its transaction); without ``head``, as of the chain head this connection sees now."""
    if head is None:
        head = chain_head(conn, registrant)
    if head is None:
        return Authority(registrant, -1, canon.ZERO_HASH)
    seq, leaf = head
    cache = _cache_for(conn.engine)
    found = cache.exact(registrant, (seq, leaf))
    if found is not None:
        return found
    base = None
    for candidate in cache.bases(registrant, seq):
        # Only a state whose head is still in this chain may be extended (a head that was rolled
        # back, or replaced, is not).
        if _leaf_at(conn, registrant, candidate.head_seq) == candidate.head_hash:
            base = candidate
            break
    if base is None:
        base = Authority(registrant, -1, canon.ZERO_HASH)
    found = base.extended(seq, leaf, _role_rows(conn, registrant, base.head_seq, seq))
    cache.put(found)
    return found


def roles_of(conn: Connection, registrant: str, staff_id: str) -> frozenset[str]:
    """The roles ``staff_id`` holds at the chain head ``conn`` sees (for checks outside a command)."""
    return authority_at(conn, registrant).roles(staff_id)


__all__ = ["AUTHORITY_KINDS", "Authority", "StaffRecord", "authority_at", "carry_forward", "chain_head", "roles_of"]
