"""Persistence: engine, migrations, the unit of work and the append path.

The one way anything is written is ``Ledger.execute``: it opens one transaction, takes the
registrant's write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``),
checks the idempotency key, lets the service validate against the projections and append its
entries, updates projections, Merkle nodes and the checkpoint, records the idempotency key with
the response, and commits. Anything raised rolls everything back: a command writes all of its
entries or none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ledger.domain import projections
from ledger.domain.entries import ENVELOPE_FIELDS, Event
from ledger.domain.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    LedgerError,
    NotFound,
    SignatureNeeded,
)
from ledger.domain.principal import Meaning, Principal
from ledger.domain.quantities import norm
from ledger.integrity import canonical as canon
from ledger.integrity import merkle, staff_signatures
from ledger.integrity.credential_chain import check_command_writes
from ledger.storage.authority import AUTHORITY_KINDS, Authority, authority_at, carry_forward
from ledger.storage.engine import (  # noqa: F401  (re-exported)
    MIGRATIONS_DIR,
    PIPELINE_INFO_KEY,
    alembic_config,
    durability_settings,
    make_engine,
    migrate,
    normalize_url,
    per_engine,
)
from ledger.storage.tables import (
    PROJECTION_MODELS,
    Entry,
    EntryMovement,
    ExactDecimal,
    IdempotencyRecord,
    MerkleNode,
)

entries_t = Entry.__table__


movements_t = EntryMovement.__table__


idem_t = IdempotencyRecord.__table__


nodes_t = MerkleNode.__table__


projection_tables = {name: model.__table__ for name, model in PROJECTION_MODELS.items()}


class RawSql:
    """Hand-written SQL for the append path, run with ``exec_driver_sql``.

    Why: building and compiling a SQLAlchemy statement costs more than the database work of a
    one-row insert, and an append runs a dozen of them under the registrant's lock. Statements
    here are plain SQL written once with ``:name`` parameters (sqlite3's own style), rewritten to
    ``%(name)s`` for psycopg, cached per dialect. ``ExactDecimal`` columns are converted by hand:
    text on SQLite, NUMERIC on PostgreSQL, always ``Decimal`` in Python, written and read by the
    2-or-3 rule (``quantities.norm``, issue 19: volumes at syringe resolution).
    """

    _PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")

    def __init__(self, dialect: str):
        self.sqlite = dialect == "sqlite"
        self._cache: dict[str, str] = {}

    def sql(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            out = text if self.sqlite else self._PARAM.sub(r"%(\1)s", text)
            self._cache[text] = out
        return out

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        # Every Decimal parameter is a quantity (a column value or a bound compared with one):
        # its one form, never rounded (``norm`` refuses a fourth decimal), text on SQLite.
        if not self.sqlite:
            return {k: (norm(v) if isinstance(v, Decimal) else v) for k, v in params.items()}
        return {k: (format(norm(v), "f") if isinstance(v, Decimal) else v) for k, v in params.items()}

    def _cursor(self, conn: Connection, text: str, params: dict[str, Any] | None):
        # The DBAPI connection under SQLAlchemy's, inside the same transaction: no statement
        # objects, no result processing. Driver errors are mapped in ``Ledger.execute``.
        cur = conn.connection.driver_connection.cursor()
        cur.execute(self.sql(text), self.bind(params or {}))
        return cur

    def run(self, conn: Connection, text: str, params: dict[str, Any] | None = None) -> None:
        self._cursor(conn, text, params).close()

    def rows(self, conn: Connection, text: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self._cursor(conn, text, params)
        data = cur.fetchall()  # first: in psycopg's pipeline mode the description comes with the rows
        names = [d[0] for d in cur.description]
        out = [dict(zip(names, r, strict=True)) for r in data]
        cur.close()
        return out

    def batch(self, conn: Connection, queries: list[tuple[str, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        """Several reads sent before any is fetched: one round trip on PostgreSQL's pipeline mode
        (``Ledger.execute``), the same as one by one on SQLite."""
        curs = [self._cursor(conn, text, params) for text, params in queries]
        out = []
        for cur in curs:
            data = cur.fetchall()
            names = [d[0] for d in cur.description]
            out.append([dict(zip(names, r, strict=True)) for r in data])
            cur.close()
        return out

    def one(self, conn: Connection, text: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        rows = self.rows(conn, text, params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, text: str, params: dict[str, Any] | None = None) -> Any:
        cur = self._cursor(conn, text, params)
        row = cur.fetchone()
        cur.close()
        return None if row is None else row[0]


_RAW = {"sqlite": RawSql("sqlite"), "postgresql": RawSql("postgresql")}


def raw(conn: Connection) -> RawSql:
    return _RAW[conn.dialect.name]


def _decimal_columns(table: sa.Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, ExactDecimal))


_DECIMALS = {name: _decimal_columns(t) for name, t in projection_tables.items()}


def utcnow() -> datetime:
    return datetime.now(UTC)


class ReferenceCache:
    """The reference rows of one database (a registrant, its policy, suppliers and products), per
    registrant, as of a chain head (thread-safe).

    Why: nearly every command reads them (a receipt: the registrant, its policy, the supplier and
    the product, three round trips on PostgreSQL) and almost no entry changes them. Projections
    are a function of the chain, and a head's leaf hash commits to the whole chain before it, so
    a row read at head (seq, leaf) is the row at that head wherever and whenever it is asked
    again; ``carry_forward`` moves the rows on over an entry that writes none of these tables.
    A rolled-back entry's head is not asked for again (or, if an identical entry is appended
    again, stands for the same rows); a restored or replaced database, or another process's
    append, shows a head this cache does not hold, and the rows are read afresh. An edit of these
    tables by hand, behind the entries, is not seen while the rows are cached, and a forged row
    read once may outlive its own revert: ``verify --deep`` names every entry that used one (each
    entry copies the rows it was checked against and the rules replay them against the chain:
    ``supplier-registered``, ``tests/integrity/test_forged_supplier_row.py``)."""

    #: The tables kept (written only by ``projections.apply``, through ``SqlStateView.put``).
    TABLES = frozenset({"registrants", "policies", "suppliers", "products"})
    #: Rows kept per registrant at most (a clinic has tens of suppliers and products).
    MAX_ROWS = 2048

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[str, tuple[tuple[int, str], dict[tuple[str, tuple], dict[str, Any] | None]]] = {}

    def get(self, registrant: str, head: tuple[int, str], key: tuple[str, tuple]) -> tuple[bool, dict[str, Any] | None]:
        """(found, a copy of the row or None when the row is known absent) at ``head``."""
        with self._lock:
            held = self._at.get(registrant)
            if held is None or held[0] != head or key not in held[1]:
                return False, None
            row = held[1][key]
        return True, (dict(row) if row is not None else None)

    def put(self, registrant: str, head: tuple[int, str], key: tuple[str, tuple], row: dict[str, Any] | None) -> None:
        """Remember ``row`` (None: absent) as read at ``head``."""
        with self._lock:
            held = self._at.get(registrant)
            if held is None or held[0] != head:
                held = self._at[registrant] = (head, {})
            if len(held[1]) < self.MAX_ROWS:
                held[1][key] = dict(row) if row is not None else None

    def clear(self) -> None:
        """Forget every row (the periodic chain check does, so a row edited or repaired by hand
        is read afresh at least that often)."""
        with self._lock:
            self._at.clear()

    def carry_forward(self, registrant: str, before: tuple[int, str], after: tuple[int, str]) -> None:
        """An entry appended at ``after`` onto ``before`` wrote none of ``TABLES``: the rows at
        ``before`` are the rows at ``after``."""
        with self._lock:
            held = self._at.get(registrant)
            if held is not None and held[0] == before:
                self._at[registrant] = (after, held[1])


#: The reference-row cache of an engine's database (one per engine, made on first use).
reference_cache = per_engine(ReferenceCache)


class SqlStateView:
    """``projections.StateView`` over the database, inside the append transaction."""

    #: The registrant's row is fetched along with its policy (one round trip on PostgreSQL).
    _MEMO_SQL = {"registrants": "SELECT * FROM registrants WHERE dea_number = :k",
                 "policies": "SELECT * FROM policies WHERE registrant = :k"}

    def __init__(self, conn: Connection, registrant: str | None = None, at: tuple[int, str] | None = None):
        self.conn = conn
        self.raw = raw(conn)
        self.registrant = registrant
        #: The chain head (seq, leaf hash) the database state seen through this view is at, or
        #: None (while an entry's projections are being applied, or outside a command): only a
        #: read at a known head may be served from, or kept in, the ``ReferenceCache``.
        self.at = at
        #: Writes to the cached tables through this view (an entry that made none carries the
        #: cache forward).
        self.reference_writes = 0

    def _cached(self, table: str, key: tuple) -> tuple[bool, dict[str, Any] | None]:
        if self.at is None or table not in ReferenceCache.TABLES or not key or key[0] != self.registrant:
            return False, None
        cache = reference_cache(self.conn.engine)
        hit, row = cache.get(self.registrant, self.at, (table, key))
        if hit:
            return True, row
        if table in self._MEMO_SQL:
            # The registrant's row rides along with the policies read (a schema without the
            # policies table never reads them, so the batch never names a missing table). Their
            # absence is kept too: a registrant without a policy runs on the defaults.
            wanted = [table] + (["registrants"] if table == "policies" and not cache.get(
                self.registrant, self.at, ("registrants", (self.registrant,)))[0] else [])
            rows = self.raw.batch(self.conn, [(self._MEMO_SQL[t], {"k": self.registrant}) for t in wanted])
            got = {t: self._row(t, found[0]) if found else None for t, found in zip(wanted, rows, strict=True)}
            for t, row in got.items():
                cache.put(self.registrant, self.at, (t, (self.registrant,)), row)
            row = got[table]
        else:
            row = self._read(table, key)
            if row is not None:
                # Only rows that exist: a made-up supplier id or NDC in a refused command must
                # not fill the registrant's slots (``MAX_ROWS``).
                cache.put(self.registrant, self.at, (table, key), row)
        return True, (dict(row) if row is not None else None)

    def _note_write(self, table: str) -> None:
        if table in ReferenceCache.TABLES:
            self.reference_writes += 1

    def _row(self, table: str, mapping) -> dict[str, Any]:
        # Both backends: SQLite gives text, PostgreSQL NUMERIC(18, 3) pads "10.00" to "10.000";
        # a value copied from a projection into an entry must keep the entry's own text.
        row = dict(mapping)
        for c in _DECIMALS[table]:
            if row.get(c) is not None:
                row[c] = norm(Decimal(row[c]))
        return row

    @staticmethod
    def _where(table: str, cols) -> str:
        return " AND ".join(f"{c} = :k_{c}" for c in cols)

    def get(self, table: str, key: tuple) -> dict[str, Any] | None:
        hit, row = self._cached(table, tuple(key))
        if hit:
            return row
        return self._read(table, tuple(key))

    def _read(self, table: str, key: tuple) -> dict[str, Any] | None:
        """The row from the database (not the cache)."""
        if table in self._MEMO_SQL:
            row = self.raw.one(self.conn, self._MEMO_SQL[table], {"k": key[0]})
        else:
            cols = projections.PRIMARY_KEYS[table]
            row = self.raw.one(self.conn, f"SELECT * FROM {table} WHERE {self._where(table, cols)}",
                               {f"k_{c}": v for c, v in zip(cols, key, strict=True)})
        return self._row(table, row) if row is not None else None

    def put(self, table: str, row: dict[str, Any]) -> None:
        """Insert or replace the row (one statement: INSERT .. ON CONFLICT DO UPDATE, on both)."""
        self._note_write(table)
        pk = projections.PRIMARY_KEYS[table]
        cols = list(row)
        others = [c for c in cols if c not in pk]
        update = ", ".join(f"{c} = excluded.{c}" for c in others) if others else None
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
               f"ON CONFLICT ({', '.join(pk)}) DO " + (f"UPDATE SET {update}" if update else "NOTHING"))
        self.raw.run(self.conn, sql, row)

    def delete(self, table: str, key: tuple) -> None:
        self._note_write(table)
        cols = projections.PRIMARY_KEYS[table]
        self.raw.run(self.conn, f"DELETE FROM {table} WHERE {self._where(table, cols)}",
                     {f"k_{c}": v for c, v in zip(cols, key, strict=True)})

    def select(self, table: str, **where: Any) -> list[dict[str, Any]]:
        cond = " AND ".join(f"{c} = :k_{c}" for c in where) or "1 = 1"
        rows = self.raw.rows(self.conn, f"SELECT * FROM {table} WHERE {cond}", {f"k_{c}": v for c, v in where.items()})
        return [self._row(table, r) for r in rows]


@dataclass(frozen=True)
class AppendedEntry:
    registrant: str
    seq: int
    kind: str
    leaf_hash: str


@dataclass
class CommandContext:
    """What a service sees while its command runs: the projections, the clock, and ``append``."""

    conn: Connection
    registrant: str
    command_id: str
    now: datetime
    view: SqlStateView
    next_seq: int
    head_hash: str
    appended: list[AppendedEntry] = field(default_factory=list)
    #: The command's name and its fields as submitted: what every staff signature's statement covers.
    command: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    #: Refuse (TypeError) a staff-signed entry its statement's command never writes
    #: (``COMMAND_KINDS``); only tests playing an attacker who writes entries by hand turn it off.
    guard_command_kinds: bool = True
    #: The staff member running the command (``principal_id``); every other signer is a second person.
    actor_id: str | None = None
    after_append: list[Callable[[CommandContext, AppendedEntry, bytes], None]] = field(default_factory=list)
    #: Merkle nodes this command's entries completed, (level, index) -> hash: read before the
    #: committed cache, moved into it only once the transaction has committed.
    new_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    #: Canonical bytes of the entries this command appended, by seq (the alert rules read them).
    written: dict[int, bytes] = field(default_factory=dict)
    #: Nodes completed by the commands committed earlier in the same group (not yet committed).
    group_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    #: Nodes read from the database by this command (remembered after the commit).
    read_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def node_reader(self) -> merkle.NodeReader:
        """Perfect Merkle nodes of this registrant as this transaction sees them: the ones this
        command completed, then the process's cache of committed nodes, then the database."""
        pending, group, read = self.new_nodes, self.group_nodes, self.read_nodes
        cache, reg = node_cache(self.conn.engine), self.registrant
        stored = node_reader(self.conn, reg)

        def get(level: int, index: int) -> bytes:
            key = (level, index)
            h = pending.get(key) or group.get(key) or read.get(key)
            if h is None:
                h = cache.get(reg, key)
                if h is None:
                    # Under the registrant's lock every node below the head is committed; it
                    # joins the cache with this command's own nodes, once the commit is done.
                    h = read[key] = stored(level, index)
            return h

        return get

    def authority(self) -> Authority:
        """Who is enrolled and holds which roles, from the role entries of this transaction's
        chain up to its head (entries this command appended included); never the projections."""
        return authority_at(self.conn, self.registrant, (self.next_seq - 1, self.head_hash) if self.next_seq else None)

    def signature(self, principal: Principal, meaning: Meaning, *, roles: frozenset[str] | None = None,
                  credential: Any = None) -> dict:
        """A signature for ``principal``: checks enrollment and roles against the role entries
        (``authority``), takes the printed name from the enrolment entry (never from the caller).

        Once the registrant has staff credentials (issue 17), the person's own signer signs a
        statement of this command (``staff_signatures``) with a credential enrolled for them and
        not revoked; ``credential`` is the one being enrolled, signing its own enrolment."""
        if principal.registrant != self.registrant:
            raise NotFound(f"staff member {principal.staff_id!r} is not enrolled at {self.registrant}", field="staff_id")
        authority = self.authority()
        staff = authority.member(principal.staff_id)
        if staff is None:
            raise NotFound(f"staff member {principal.staff_id!r} is not enrolled at {self.registrant}", field="staff_id")
        if roles is not None:
            if not authority.roles(principal.staff_id) & roles:
                raise Forbidden(
                    f"{staff.printed_name} holds none of the roles this needs ({', '.join(sorted(roles))})",
                    field="principal",
                )
        sig = {
            "staff_id": principal.staff_id,
            "printed_name": staff.printed_name,
            "meaning": meaning.value,
            "signed_at": canon.format_time(self.now),
            "auth_method": principal.auth_method.value,
        }
        if credential is None and not authority.signing_required:
            return sig
        return self._staff_signed(sig, principal, staff.printed_name, authority, credential)

    def _staff_signed(self, sig: dict, principal: Principal, name: str, authority: Authority, credential: Any) -> dict:
        signer = principal.signer
        if signer is None:
            raise Forbidden(f"{name} cannot sign: this sign-in holds no signing key of theirs (sign in again with "
                            "their password, or confirm with their passkey)", type_="signature-required",
                            field="principal")
        if credential is None and signer.credential_id is None:
            # A passkey signer before its authenticator answered: any of their passkeys may sign.
            # Nothing is recorded; the caller gets the statement and the WebAuthn options.
            keys = [c for c in authority.active_credentials(principal.staff_id) if c.method == signer.method]
            if not keys:
                raise Forbidden(f"{name} has no {signer.method} enrolled at {self.registrant}",
                                type_="credential-not-enrolled", field="principal")
            st = staff_signatures.statement(self.registrant, self.command, sig["meaning"],
                                            canon.to_json_value(self.request), signer.nonce)
            raise SignatureNeeded(f"{name} confirms this {sig['meaning']} with their passkey; send the same request "
                                  "again with the authenticator's answer", field="principal",
                                  challenge=signer.challenge(principal.staff_id, st, keys, authority.relying_party))
        cred = credential if credential is not None else authority.credentials.get(signer.credential_id)
        if cred is None or cred.staff_id != principal.staff_id:
            raise Forbidden(f"{name}'s signing key ({signer.credential_id}) is not enrolled at {self.registrant}; "
                            "they enrol one (with a manager's approval) before they can sign",
                            type_="credential-not-enrolled", field="principal")
        if not cred.active:
            raise Forbidden(f"{name}'s signing key {cred.credential_id} was revoked (entry {cred.revoked_seq})",
                            type_="credential-revoked", field="principal")
        if cred.method == staff_signatures.PASSWORD_KEY:
            self._password_key_allowed(name, principal.staff_id, authority.passkey_required_for)
        st = staff_signatures.statement(self.registrant, self.command, sig["meaning"],
                                        canon.to_json_value(self.request),
                                        signer.nonce or staff_signatures.new_nonce())
        st_bytes = staff_signatures.statement_bytes(st)
        try:
            proof = signer.sign(st_bytes, credential=cred, relying_party=authority.relying_party)
        except staff_signatures.SignatureInvalid as exc:
            raise InvalidInput(f"{name}'s signature: {exc.reason}", type_="signature-invalid",
                               field="principal") from None
        return {**sig, "auth_method": cred.method, "credential_id": cred.credential_id, "statement": st,
                "proof": proof}

    def _password_key_allowed(self, name: str, staff_id: str, scopes: tuple[str, ...]) -> None:
        """The registrant's policy (from its latest signed ``policy_set`` entry, via the authority)
        may require every second person (witness, second counter, approver) to confirm with a
        passkey: on every command ("witnessing") or on destructions ("destruction"). The person
        running the command signs with the key their sign-in opened."""
        if staff_id == self.actor_id:
            return
        if "witnessing" in scopes or (self.command == "destroy_stock" and "destruction" in scopes):
            what = "sign a destruction as its witness" if self.command == "destroy_stock" else "confirm this"
            raise Forbidden(f"this registrant's policy has {name} {what} with their passkey, not a password",
                            type_="passkey-required", field="principal")

    def append(self, event: Event, *, signatures: list[dict], occurred_at: datetime) -> AppendedEntry:
        """Hash and insert one entry at the next sequence number, and update the projections."""
        seq = self.next_seq
        body = canon.to_json_value(event)
        clash = ENVELOPE_FIELDS & body.keys()
        if clash:
            raise TypeError(f"event {event.kind} reuses envelope fields {sorted(clash)}")
        obj = {
            "registrant": self.registrant,
            "seq": seq,
            "kind": event.kind,
            "schema_version": event.schema_version,
            "occurred_at": canon.format_time(occurred_at),
            "recorded_at": canon.format_time(self.now),
            "signatures": signatures,
            "prev": self.head_hash,
            **body,
        }
        for sig in signatures if self.guard_command_kinds else ():
            st = sig.get("statement") if isinstance(sig, dict) else None
            if st is not None:
                try:
                    check_command_writes(st["kind"], event.kind, obj, st["command"])
                except staff_signatures.SignatureInvalid as exc:
                    # A programming error, not bad input: every verifier would refuse the entry.
                    raise TypeError(f"{st['kind']}: {exc.reason} (COMMAND_KINDS, NAMES_ITS_VIALS)") from None
        data = canon.canonical_bytes(obj)
        leaf = canon.leaf_hash(data)
        r = self.view.raw
        r.run(self.conn,
              "INSERT INTO entries (registrant, seq, kind, schema_version, occurred_at, recorded_at, prev_hash, "
              "leaf_hash, canonical, command_id) VALUES (:registrant, :seq, :kind, :schema_version, :occurred_at, "
              ":recorded_at, :prev_hash, :leaf_hash, :canonical, :command_id)",
              {"registrant": self.registrant, "seq": seq, "kind": event.kind, "schema_version": event.schema_version,
               "occurred_at": obj["occurred_at"], "recorded_at": obj["recorded_at"], "prev_hash": self.head_hash,
               "leaf_hash": leaf.hex(), "canonical": data, "command_id": self.command_id})
        for i, (v, n, ml) in enumerate(projections.movements(obj)):
            r.run(self.conn,
                  "INSERT INTO entry_movements (registrant, seq, line, vial_id, ndc_key, ml) "
                  "VALUES (:registrant, :seq, :line, :vial_id, :ndc_key, :ml)",
                  {"registrant": self.registrant, "seq": seq, "line": i, "vial_id": v, "ndc_key": n, "ml": ml})
        # While the projections change, the state is at no head: no cached reference row is read
        # or kept. An entry that wrote none carries the cached rows on to its own head.
        view, before = self.view, self.view.at
        view.at, writes = None, view.reference_writes
        projections.apply(obj, view)
        view.at = (seq, leaf.hex())
        if before is not None and view.reference_writes == writes:
            reference_cache(self.conn.engine).carry_forward(self.registrant, before, view.at)
        appended = AppendedEntry(self.registrant, seq, event.kind, leaf.hex())
        self.written[seq] = data
        for hook in self.after_append:
            hook(self, appended, leaf)
        if seq and event.kind not in AUTHORITY_KINDS:
            carry_forward(self.conn.engine, self.registrant, (seq - 1, self.head_hash), (seq, appended.leaf_hash))
        self.appended.append(appended)
        self.next_seq = seq + 1
        self.head_hash = leaf.hex()
        return appended


def node_reader(conn: Connection, registrant: str) -> merkle.NodeReader:
    """Read stored perfect Merkle nodes of one registrant (O(log n) per root or proof)."""

    r = raw(conn)

    def get(level: int, index: int) -> bytes:
        h = r.scalar(conn, "SELECT hash FROM merkle_nodes WHERE registrant = :r AND level = :l AND idx = :i",
                     {"r": registrant, "l": level, "i": index})
        if h is None:
            raise KeyError((level, index))
        return bytes(h)

    return get


def write_merkle_nodes(ctx: CommandContext, appended: AppendedEntry, leaf: bytes) -> None:
    """Store the perfect nodes the new leaf completes, in the append transaction."""
    nodes = merkle.nodes_created_by_append(appended.seq, leaf, ctx.node_reader())
    # One statement for all of them (two on average, up to log2(n) + 1): on PostgreSQL each
    # statement costs the driver's own work even when it shares a round trip.
    params: dict[str, Any] = {"r": ctx.registrant}
    for n, (lv, i, h) in enumerate(nodes):
        params[f"l{n}"], params[f"i{n}"], params[f"h{n}"] = lv, i, h
        ctx.new_nodes[(lv, i)] = h
    raw(ctx.conn).run(ctx.conn, _merkle_insert_sql(len(nodes)), params)


@functools.lru_cache(maxsize=64)
def _merkle_insert_sql(rows: int) -> str:
    values = ", ".join(f"(:r, :l{n}, :i{n}, :h{n})" for n in range(rows))
    return f"INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES {values}"


#: Committed nodes remembered per registrant. The root and a consistency proof of a tree of n
#: leaves read O(log n) nodes on its right edge, so a few hundred cover any log a clinic keeps.
_NODES_PER_REGISTRANT = 1024


class NodeCache:
    """Committed perfect Merkle nodes of one database, per registrant (thread-safe, LRU).

    A perfect node never changes once its leaves are committed: entries are append-only. Why
    cache them: the checkpoint signed in every append transaction needs the new root and a
    consistency proof, and reading those nodes was a dozen round trips per command.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, OrderedDict[tuple[int, int], bytes]] = {}
        self._head: dict[str, tuple[int, str]] = {}  # the last committed (tree size, head leaf) seen

    def get(self, registrant: str, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            nodes = self._nodes.get(registrant)
            return None if nodes is None else nodes.get(key)

    def remember(self, registrant: str, nodes: dict[tuple[int, int], bytes], size: int, head_leaf: str) -> None:
        """Add nodes committed in a tree of ``size`` leaves whose last leaf hash is ``head_leaf``."""
        with self._lock:
            held = self._nodes.setdefault(registrant, OrderedDict())
            for key, h in nodes.items():
                held[key] = h
                held.move_to_end(key)
            while len(held) > _NODES_PER_REGISTRANT:
                held.popitem(last=False)
            if size >= self._head.get(registrant, (0, ""))[0]:
                self._head[registrant] = (size, head_leaf)

    def check_chain(self, registrant: str, size: int, head_leaf: str | None,
                    leaf_at: Callable[[int], str | None]) -> None:
        """The chain this transaction sees has ``size`` entries ending in ``head_leaf``. Unless it
        still holds the head this process last saw committed (as its head, or further back when
        another process appended since), the database was restored or replaced: forget every
        node of the registrant rather than trust nodes of a history that is no longer there."""
        with self._lock:
            known = self._head.get(registrant)
        if known is None:
            return
        ksize, kleaf = known
        if ksize == size and kleaf == head_leaf:
            return
        if 0 < ksize < size and leaf_at(ksize - 1) == kleaf:
            return
        with self._lock:
            self._nodes.pop(registrant, None)
            self._head.pop(registrant, None)


#: The committed-node cache of an engine's database (one per engine, made on first use).
node_cache = per_engine(NodeCache)


def has_entry_of_kind(conn: Connection, kind: str, registrant: str | None = None) -> bool:
    """Whether any entry of ``kind`` exists (at ``registrant``, or anywhere)."""
    q = sa.select(entries_t.c.seq).where(entries_t.c.kind == kind)
    if registrant is not None:
        q = q.where(entries_t.c.registrant == registrant)
    return conn.execute(q.limit(1)).first() is not None


def registrants_with_entries(conn: Connection) -> list[str]:
    """DEA numbers of every registrant that has a chain here, sorted."""
    return sorted(conn.execute(sa.select(entries_t.c.registrant).distinct()).scalars())


def entries_of_kind(conn: Connection, kind: str) -> list[tuple[str, bytes]]:
    """``(registrant, canonical bytes)`` of every entry of ``kind``, in chain order."""
    q = (sa.select(entries_t.c.registrant, entries_t.c.canonical).where(entries_t.c.kind == kind)
         .order_by(entries_t.c.registrant, entries_t.c.seq))
    return [(r, bytes(c)) for r, c in conn.execute(q)]


def registrant_row(conn: Connection, registrant: str) -> dict[str, Any] | None:
    """The registrant's projection row (name, address, time zone), or None."""
    t = projection_tables["registrants"]
    row = conn.execute(t.select().where(t.c.dea_number == registrant)).mappings().first()
    return dict(row) if row else None


def entry_count(conn: Connection) -> int:
    """Entries in the whole database (for progress bars)."""
    return conn.execute(sa.select(sa.func.count()).select_from(entries_t)).scalar()


def tree_size(conn: Connection, registrant: str) -> int:
    n = conn.execute(sa.select(sa.func.max(entries_t.c.seq)).where(entries_t.c.registrant == registrant)).scalar()
    return 0 if n is None else int(n) + 1


def check_idempotency_key(key: str | None) -> None:
    """Refuse an idempotency key the ledger cannot store: 1 to 128 printable characters."""
    if key is not None and not (1 <= len(key) <= 128 and key.isprintable()):
        raise InvalidInput("must be 1 to 128 printable characters", field="idempotency_key")


def request_hash(command: str, principal_id: str | None, request: dict[str, Any]) -> str:
    payload = {"command": command, "principal": principal_id, "request": canon.to_json_value(request)}
    return hashlib.sha256(canon.canonical_bytes(payload)).hexdigest()


def _advisory_key(registrant: str) -> int:
    return int.from_bytes(hashlib.sha256(b"csledger-registrant:" + registrant.encode()).digest()[:8], "big", signed=True)


@contextmanager
def _pipeline(conn: Connection) -> Iterator[Any]:
    """PostgreSQL: the transaction in psycopg's pipeline mode, else nothing.

    Why: on PostgreSQL every statement was a network round trip. In pipeline mode a statement
    whose result is not needed (every INSERT of the append path) is queued and sent with the
    next one that is, so a command costs about one round trip per read, and its last writes go
    with the commit. Errors of queued statements are raised at the next read or sync, still
    inside the transaction, so nothing changes for the caller."""
    if conn.dialect.name != "postgresql":
        yield None
        return
    with conn.connection.driver_connection.pipeline() as pipe:
        # A statement run through SQLAlchemy reads its result description at once: the engine
        # syncs the pipeline after each (``make_engine``), so only hand-written SQL is queued.
        conn.info[PIPELINE_INFO_KEY] = pipe
        try:
            yield pipe
        finally:
            conn.info.pop(PIPELINE_INFO_KEY, None)


#: ``Connection.info`` key of the ``Ledger.prefetch`` rows of the append transaction in flight.
PREFETCHED_INFO_KEY = "csledger_prefetched"


@contextmanager
def _prefetched(conn: Connection) -> Iterator[None]:
    """Drop the transaction's prefetched rows when it ends (``Connection.info`` outlives it: it
    belongs to the pooled DBAPI connection)."""
    try:
        yield
    finally:
        conn.info.pop(PREFETCHED_INFO_KEY, None)


def prefetched(conn: Connection, name: str) -> list[dict[str, Any]] | None:
    """The rows of the ``Ledger.prefetch`` read ``name`` sent with this append transaction's
    head read, once: a second call (or a connection outside an append) gets None and reads for
    itself."""
    rows = conn.info.get(PREFETCHED_INFO_KEY)
    return None if rows is None else rows.pop(name, None)


#: Commands committed together at most (a bound on how long the first of them waits).
_GROUP_MAX = 64


class WriteSlots:
    """At most ``slots`` append transactions of one process run at once; the others wait their
    turn in order of arrival, and each is handed its slot by the transaction before it.

    Why: a transaction in flight is mostly this process's Python work, and under CPython's
    interpreter lock more of them at once only add hand-offs of that lock. With 20 registrants
    on one PostgreSQL server and no limit, every command cost about 2 ms of kernel time in
    context switches (240 a command) on top of its own work. SQLite has one writer per
    database, so a second transaction in flight only sleeps in SQLite's busy handler: with 20
    registrants the slowest commands waited 200 to 430 ms. The figures, and those with the
    limit, are in ``docs/benchmarks.md``.

    A slot is only a turn at the process's CPU, handed out first come, first served: a
    transaction gives its slot up while it waits for another process to release its
    registrant's lock (``Ledger._run_group``), so no registrant waits for another's lock or
    commit. A thread holds at most one slot: a command started inside another is refused
    (``Ledger.execute``)."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"write slots must be at least 1, not {slots}")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._holder = threading.local()

    def held(self) -> bool:
        """Whether the calling thread holds a slot."""
        return getattr(self._holder, "holds", False)

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                turn = None
            else:
                turn = threading.Lock()
                turn.acquire()
                self._waiters.append(turn)
        if turn is not None:
            try:
                self._wait_for(turn)
            except BaseException:
                with self._lock:
                    handed = turn not in self._waiters
                    if not handed:
                        self._waiters.remove(turn)
                if handed:
                    self._hand_on()
                raise
        self._holder.holds = True

    def release(self) -> None:
        self._holder.holds = False
        self._hand_on()

    def __enter__(self) -> WriteSlots:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def given_up(self) -> Iterator[None]:
        """The slot released for the block (a wait that is not this process's work), and taken
        again at its end, whatever happens in it."""
        self.release()
        try:
            yield
        finally:
            self.acquire()

    def _wait_for(self, turn: threading.Lock) -> None:
        turn.acquire()  # released by the holder whose slot this thread is handed

    def _hand_on(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1

    def waiting(self) -> int:
        """Threads waiting for a slot (for tests and health)."""
        with self._lock:
            return len(self._waiters)


def write_slots_for(dialect: str) -> int:
    """The default number of :class:`WriteSlots`: one on SQLite (one writer per database), two on
    PostgreSQL (one transaction's Python runs while the other waits for the server)."""
    return 1 if dialect == "sqlite" else 2


@dataclass(eq=False)
class _Pending:
    """One command waiting for (or in) a group commit, and what its caller is answered."""

    registrant: str
    command: str
    request: dict[str, Any]
    build: Callable[[CommandContext], dict[str, Any]]
    principal_id: str | None
    idempotency_key: str | None
    creates_registrant: bool
    rhash: str
    leader: bool = False
    finished: bool = False
    response: dict[str, Any] | None = None
    error: BaseException | None = None
    wake: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Group:
    """The commands of one registrant waiting for the transaction in flight to commit."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Pending] = field(default_factory=list)
    leading: bool = False


class Ledger:
    """The ledger over one database. Thread-safe: each command gets its own connection."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow, write_slots: int | None = None):
        self.engine = engine
        self.clock = clock
        #: Append transactions of this process run at most this many at once (``WriteSlots``).
        self.write_slots = WriteSlots(write_slots or write_slots_for(engine.dialect.name))
        #: Called after every entry is inserted, inside the transaction (Merkle nodes).
        self.after_append: list[Callable[[CommandContext, AppendedEntry, bytes], None]] = [write_merkle_nodes]
        #: Called before commit, inside the transaction: once per command (alert rules), or, for
        #: hooks marked ``once_per_commit`` (checkpoint signing), once per group commit with the
        #: context of its last command.
        self.before_commit: list[Callable[[CommandContext], None]] = []
        #: Reads sent with the chain-head read that opens every append transaction, by name: SQL
        #: whose one parameter ``:r`` is the registrant. On PostgreSQL they share its round trip.
        #: Their rows are in ``conn.info[PREFETCHED_INFO_KEY][name]`` for the transaction's hooks
        #: (``prefetched``): read after the registrant's write lock, so they are what a read at
        #: any later point of the transaction would return, as long as only the hook that uses
        #: them writes their tables.
        self.prefetch: dict[str, str] = {}
        self._groups: dict[str, _Group] = {}
        self._groups_lock = threading.Lock()
        #: Transactions committed and the commands they carried (``csledger bench`` prints the ratio).
        self.commits = 0
        self.commands_committed = 0

    @property
    def _dbapi(self):
        return self.engine.dialect.dbapi

    @classmethod
    def open(cls, url: str, **kw) -> Ledger:
        return cls(make_engine(url), **kw)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def execute(
        self,
        registrant: str,
        command: str,
        request: dict[str, Any],
        build: Callable[[CommandContext], dict[str, Any]],
        *,
        principal_id: str | None,
        idempotency_key: str | None = None,
        creates_registrant: bool = False,
    ) -> dict[str, Any]:
        """Run one command atomically and return its response (JSON-ready dict) once it is committed.

        With an ``idempotency_key``: a retry with the same request returns the first response
        and writes nothing; the same key with a different request raises ``IdempotencyConflict``.

        Group commit: commands for one registrant that arrive while another of its transactions
        is running wait, and the next of them to run commits them all in one transaction (one
        fsync, one checkpoint signature). Each runs in order inside its own savepoint, so a
        command that fails writes nothing and the others are unaffected; each caller is answered
        only after the commit, and if the commit fails every caller of the group gets the error.
        """
        check_idempotency_key(idempotency_key)
        if self.write_slots.held():
            # A command started from inside another command's transaction (whose leader holds
            # this thread's write slot) would wait forever: for its own group's commit on the
            # same registrant, or on another for a group whose leader waits for that slot. A
            # programming error: start it after this command commits.
            raise RuntimeError(f"a command on {registrant} was started inside another command's transaction")
        pending = _Pending(registrant, command, request, build, principal_id, idempotency_key, creates_registrant,
                           request_hash(command, principal_id, request))
        group = self._group(registrant)
        with group.lock:
            group.queue.append(pending)
            if not group.leading:
                group.leading = True
                pending.leader = True
        while not pending.finished:
            if pending.leader:
                self._lead(group, pending)
            else:
                pending.wake.wait()
                pending.wake.clear()
        if pending.error is not None:
            raise pending.error
        return pending.response

    def waiting(self, registrant: str) -> int:
        """Commands of ``registrant`` queued behind the transaction in flight (for tests and health)."""
        with self._groups_lock:
            group = self._groups.get(registrant)
        if group is None:
            return 0
        with group.lock:
            return len(group.queue)

    def _group(self, registrant: str) -> _Group:
        with self._groups_lock:
            group = self._groups.get(registrant)
            if group is None:
                group = self._groups[registrant] = _Group()
            return group

    def _lead(self, group: _Group, me: _Pending) -> None:
        """Run the waiting commands as one transaction, then hand the lead to the next waiter.

        The batch is taken once this transaction has its write slot, so the commands that
        arrived while it waited for one are committed with it."""
        batch: list[_Pending] = []
        try:
            with self.write_slots:
                with group.lock:
                    batch, group.queue = group.queue[:_GROUP_MAX], group.queue[_GROUP_MAX:]
                self._run_group(batch)
        except BaseException as exc:  # never leave a waiter hanging, whatever happened
            if not batch:  # stopped while waiting for a slot: only this caller's command fails
                with group.lock:
                    group.queue.remove(me)
                batch = [me]
            for p in batch:
                if not p.finished:
                    p.error, p.finished = exc if isinstance(exc, Exception) else Conflict(
                        "the ledger stopped while this command ran; nothing was recorded, retry"), True
            raise
        finally:
            with group.lock:
                if group.queue:
                    nxt = group.queue[0]
                    nxt.leader = True
                    nxt.wake.set()
                else:
                    group.leading = False
            for p in batch:
                p.finished = True
                p.wake.set()

    def _run_group(self, batch: list[_Pending]) -> None:
        registrant = batch[0].registrant
        alone = len(batch) == 1
        per_command = [h for h in self.before_commit if not getattr(h, "once_per_commit", False)]
        per_commit = [h for h in self.before_commit if getattr(h, "once_per_commit", False)]
        done: list[tuple[_Pending, dict[str, Any]]] = []
        group_nodes: dict[tuple[int, int], bytes] = {}
        try:
            with self.engine.connect() as conn, conn.begin(), _pipeline(conn) as pipe, _prefetched(conn):
                r = raw(conn)
                head, used_keys, locked = self._opening_reads(conn, r, batch, try_lock=pipe is not None)
                if not locked:
                    # Another process holds the registrant's lock (PostgreSQL): its reads above
                    # are void. Wait for the lock without this process's write slot, so the
                    # other registrants of this process are not held up, then read again.
                    with self.write_slots.given_up():
                        r.run(conn, "SELECT pg_advisory_xact_lock(:k)", {"k": _advisory_key(registrant)})
                        pipe.sync()
                    head, used_keys, locked = self._opening_reads(conn, r, batch, try_lock=False)
                node_cache(self.engine).check_chain(
                    registrant, 0 if head is None else head["seq"] + 1, None if head is None else head["leaf_hash"],
                    lambda seq: r.scalar(conn, "SELECT leaf_hash FROM entries WHERE registrant = :r AND seq = :s",
                                         {"r": registrant, "s": seq}))
                state = (None, None) if head is None else (head["seq"] + 1, head["leaf_hash"])
                last: CommandContext | None = None
                for p in batch:
                    if not alone:
                        r.run(conn, "SAVEPOINT csledger_command")
                    try:
                        response, ctx = self._one_command(conn, p, state, group_nodes, per_command, used_keys)
                        if pipe is not None and not alone:
                            pipe.sync()  # this command's writes fail here, inside its own savepoint
                    except Exception as exc:
                        if alone:
                            raise
                        if pipe is not None:
                            # A queued statement that failed leaves the pipeline aborted: every
                            # statement until the next sync is dropped, the rollback included.
                            try:
                                pipe.sync()
                            except Exception:  # noqa: BLE001, S110 - the error already raised above
                                pass
                        r.run(conn, "ROLLBACK TO SAVEPOINT csledger_command")
                        if pipe is not None:
                            pipe.sync()
                        p.error = self._mapped(exc)
                        continue
                    if not alone:
                        r.run(conn, "RELEASE SAVEPOINT csledger_command")
                    if p.idempotency_key is not None and ctx is not None:
                        # Recorded with this command: a later command of the group with the
                        # same key replays it (the keys were read once, before the first).
                        used_keys[p.idempotency_key] = {"request_hash": p.rhash, "command": p.command,
                                                        "response": json.dumps(response, sort_keys=True)}
                    done.append((p, response))
                    if ctx is not None:
                        group_nodes.update(ctx.read_nodes)
                        group_nodes.update(ctx.new_nodes)
                        state, last = (ctx.next_seq, ctx.head_hash), ctx
                if last is not None:
                    for hook in per_commit:
                        hook(last)
                    group_nodes.update(last.read_nodes)  # what the checkpoint's proof read
            # Committed: only now may the nodes these commands completed be remembered.
            if last is not None:
                node_cache(self.engine).remember(registrant, group_nodes, last.next_seq, last.head_hash)
            with self._groups_lock:
                self.commits += 1
                self.commands_committed += len(done)
        except Exception as exc:
            err = self._mapped(exc)
            for p in batch:
                if p.error is None:
                    p.error = err
            return
        for p, response in done:
            p.response = response

    def _mapped(self, exc: Exception) -> Exception:
        """A driver error as what the caller should see; anything else as it is."""
        if isinstance(exc, LedgerError):
            return exc
        if isinstance(exc, (IntegrityError, self._dbapi.IntegrityError)):
            # The primary keys are the last line of defence: a second writer at the same seq,
            # or the same idempotency key racing in, lands here and nothing is written.
            return Conflict(f"the ledger changed while this command ran; nothing was recorded, retry ({type(exc).__name__})")
        if isinstance(exc, (OperationalError, self._dbapi.OperationalError)) and (
                "locked" in str(exc).lower() or "busy" in str(exc).lower()):
            return Conflict("the ledger is busy; nothing was recorded, retry")
        return exc

    def _opening_reads(self, conn: Connection, r: RawSql, batch: list[_Pending], *,
                       try_lock: bool) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], bool]:
        """The reads that open an append transaction, sent together (one round trip on
        PostgreSQL): with ``try_lock``, first the registrant's advisory lock if it is free;
        then the chain head, the ``prefetch`` reads (kept in ``conn.info`` for the hooks) and
        the group's idempotency keys already recorded. Returns (the head row or None, the
        recorded keys by key, whether the lock is held: if not, the rows are void)."""
        registrant = batch[0].registrant
        keys = sorted({p.idempotency_key for p in batch if p.idempotency_key is not None})
        names = list(self.prefetch)
        queries = [("SELECT seq, leaf_hash FROM entries WHERE registrant = :r ORDER BY seq DESC LIMIT 1",
                    {"r": registrant})]
        if try_lock:
            queries.insert(0, ("SELECT pg_try_advisory_xact_lock(:k) AS locked", {"k": _advisory_key(registrant)}))
        queries += [(self.prefetch[n], {"r": registrant}) for n in names]
        if keys:
            marks = ", ".join(f":k{i}" for i in range(len(keys)))
            queries.append((f"SELECT key, request_hash, response, command FROM idempotency_keys "
                            f"WHERE registrant = :r AND key IN ({marks})",
                            {"r": registrant, **{f"k{i}": k for i, k in enumerate(keys)}}))
        results = r.batch(conn, queries)
        locked = True
        if try_lock:
            locked = bool(results.pop(0)[0]["locked"])
        conn.info[PREFETCHED_INFO_KEY] = dict(zip(names, results[1:1 + len(names)], strict=True))
        used = {row["key"]: row for row in results[-1]} if keys else {}
        return (results[0][0] if results[0] else None), used, locked

    def _one_command(self, conn: Connection, p: _Pending, state: tuple[int | None, str | None],
                     group_nodes: dict[tuple[int, int], bytes],
                     per_command: list[Callable[[CommandContext], None]],
                     used_keys: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], CommandContext | None]:
        """One command inside the group's transaction: (its response, its context or None when it
        only replayed an earlier response). ``used_keys``: the group's idempotency keys already
        recorded, by key (``_opening_reads``)."""
        registrant, r = p.registrant, raw(conn)
        if p.idempotency_key is not None:
            prior = used_keys.get(p.idempotency_key)
            if prior is not None:
                if prior["request_hash"] != p.rhash:
                    raise IdempotencyConflict(
                        f"this key was already used for a different {prior['command']} request",
                        field="idempotency_key",
                    )
                response = json.loads(prior["response"])
                response["replayed"] = True
                return response, None
        next_seq, head_hash = state
        if next_seq is None and not p.creates_registrant:
            raise NotFound(f"no registrant with DEA number {registrant}", field="registrant")
        if next_seq is not None and p.creates_registrant:
            raise Conflict(f"registrant {registrant} is already registered", field="dea_number")
        ctx = CommandContext(
            conn=conn, registrant=registrant, command_id=str(uuid.uuid4()), now=self.clock(),
            view=SqlStateView(conn, registrant, None if next_seq is None else (next_seq - 1, head_hash)),
            next_seq=next_seq or 0, head_hash=head_hash or canon.ZERO_HASH,
            after_append=list(self.after_append), command=p.command, request=p.request, actor_id=p.principal_id,
            group_nodes=group_nodes,
        )
        result = p.build(ctx)
        if not ctx.appended:
            raise InvalidInput("the command recorded nothing")
        for hook in per_command:
            hook(ctx)
        response = {
            "command": p.command,
            "registrant": registrant,
            "entries": [{"seq": a.seq, "kind": a.kind, "leaf_hash": a.leaf_hash} for a in ctx.appended],
            **result,
        }
        if p.idempotency_key is not None:
            r.run(conn, "INSERT INTO idempotency_keys (registrant, key, command, request_hash, response, created_at) "
                        "VALUES (:registrant, :key, :command, :request_hash, :response, :created_at)",
                  {"registrant": registrant, "key": p.idempotency_key, "command": p.command, "request_hash": p.rhash,
                   "response": json.dumps(response, sort_keys=True), "created_at": canon.format_time(ctx.now)})
        return response, ctx

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction (deferred BEGIN on SQLite: does not block writers in WAL)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(csledger_read_only=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = [
    "AppendedEntry", "CommandContext", "Ledger", "LedgerError", "SqlStateView", "make_engine", "migrate",
]
