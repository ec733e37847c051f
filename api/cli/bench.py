"""``csledger bench``: durable appends/s and verify entries/s, each beside a bare
``sqlite3`` + ``hashlib`` loop over rows of the same size in the same run, with the ratios.

With staff signatures (issue 17, on by default) the same run also measures what per-person
signatures cost: building a command's statement and signing it, verifying an Ed25519
(password-key) signature and a passkey ES256 assertion, one argon2id opening of a password key
at production cost (the per-sign-in cost), and durable appends/s and verify entries/s on a
second registrant of the same database whose chain is signed (root credential and the bench
nurse's password key), beside the unsigned figures; verify's time in the staff-signature check
is reported apart from the chain check.

Every figure printed is measured in this run; nothing is hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import struct
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    ReceivedLineInput,
    ReceiveStock,
    RegisterRegistrant,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.integrity import canonical as canon
from ledger.integrity import passkeys
from ledger.integrity.staff_signatures import (
    KdfParams,
    PasswordKeySigner,
    new_nonce,
    open_key,
    sign_with,
    statement,
    statement_bytes,
    verify_password_key,
)
from ledger.services.common import request_fields
from ledger.services.receiving import supplier_copy
from ledger.services.verify import VerifyReport, verify
from ledger.storage.store import Ledger, entries_t, migrate

BENCH_DEA = "AB1234563"


def _seed(ledger: Ledger) -> tuple[Principal, str]:
    """The bench registrant with one product, one supplier and a nurse: (nurse, supplier id).
    (``bench/bench_proofs.py`` uses it too.)"""
    _, nurse, supplier_id = _seed_registrant(ledger, BENCH_DEA)
    return nurse, supplier_id


def _seed_registrant(ledger: Ledger, dea: str) -> tuple[Principal, Principal, str]:
    """A registrant with one product, one supplier and a nurse: (admin, nurse, supplier id)."""
    res = services.register_registrant(ledger, RegisterRegistrant(
        dea_number=dea, name="Bench Clinic", address=AddressInput("1 Main St", "Austin", "TX", "78701"),
        time_zone="America/Chicago", admin_printed_name="Bench Admin", admin_username="admin"))
    admin = Principal(dea, res["admin_staff_id"], "Bench Admin", AuthMethod.CONSOLE_BOOTSTRAP)
    services.add_product(ledger, admin, AddProduct("67457-0001-10", "Ketamine HCl injection", "7285", "III",
                                                  "injection", "50.00", "10.00"))
    from ledger.domain.commands import EnrollStaff

    nurse = services.enroll_staff(ledger, admin, EnrollStaff("Bench Nurse", "nurse", ("nurse",)))
    sup = services.add_supplier(ledger, admin, AddSupplier("Bench Wholesale", AddressInput("2 Depot Rd", "Dallas", "TX", "75201"), "PB1234563",
                                                          registration_expires_on="2099-12-31", schedules=("3", "3N"),
                                                          authorized_trading_partner=True))
    return admin, Principal(dea, nurse["staff_id"], "Bench Nurse", AuthMethod.PASSWORD), sup["supplier_id"]


def _receipt(supplier_id: str, i: int) -> ReceiveStock:
    return ReceiveStock(supplier_id=supplier_id, invoice_number=f"INV-{i:08d}",
                        occurred_at=datetime.now(UTC) - timedelta(minutes=1),
                        lines=(ReceivedLineInput("67457-0001-10", 1, "LOT-A1", "2030-01-31"),))


def _bare_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE rows (registrant TEXT, seq INTEGER, prev TEXT, leaf TEXT, data BLOB, PRIMARY KEY (registrant, seq))")
    return conn


def bare_append(path: Path, payloads: list[bytes]) -> float:
    """Appends/s of the bare loop: hash, insert, commit per row (same durability settings)."""
    conn = _bare_db(path)
    prev = "0" * 64
    t0 = time.perf_counter()
    for i, data in enumerate(payloads):
        leaf = hashlib.sha256(b"\x00" + data).hexdigest()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO rows VALUES (?,?,?,?,?)", (BENCH_DEA, i, prev, leaf, data))
        conn.execute("COMMIT")
        prev = leaf
    dt = time.perf_counter() - t0
    conn.close()
    return len(payloads) / dt


def bare_verify(path: Path) -> float:
    """Entries/s of the bare loop: stream rows, re-hash, check the link."""
    conn = sqlite3.connect(path)
    t0 = time.perf_counter()
    prev = "0" * 64
    n = 0
    for _seq, p, leaf, data in conn.execute("SELECT seq, prev, leaf, data FROM rows WHERE registrant=? ORDER BY seq", (BENCH_DEA,)):
        h = hashlib.sha256(b"\x00" + data).hexdigest()
        if h != leaf or p != prev:
            raise AssertionError("bare loop found a bad row")
        prev = leaf
        n += 1
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def _copy_rows(ledger: Ledger, path: Path) -> int:
    """Copy the ledger's rows into the bare table, so both loops read the same bytes."""
    conn = _bare_db(path)
    with ledger.reading() as lc:
        rows = lc.execute(entries_t.select().where(entries_t.c.registrant == BENCH_DEA).order_by(entries_t.c.seq)).mappings()
        conn.execute("BEGIN")
        n = 0
        for r in rows:
            conn.execute("INSERT INTO rows VALUES (?,?,?,?,?)", (BENCH_DEA, r["seq"], r["prev_hash"], r["leaf_hash"], bytes(r["canonical"])))
            n += 1
        conn.execute("COMMIT")
    conn.close()
    return n


def _grow(ledger: Ledger, nurse: Principal, supplier_id: str, target: int, start: int) -> int:
    """Append receipts until the log holds ``target`` entries, many per transaction (fast fill).

    Once the registrant has staff credentials (the signed chain) every entry gets its own
    signature (its own statement and nonce, as one command per entry would): one signature
    shared by many entries is what the verifier refuses as a copied signature."""
    from ledger.storage.store import tree_size

    dea = nurse.registrant
    i = start
    while True:
        with ledger.reading() as c:
            size = tree_size(c, dea)
        if size >= target:
            return i
        batch = min(500, target - size)

        def build(ctx, batch=batch, i0=i):
            from ledger.domain import entries as ev
            from ledger.domain.principal import Meaning

            signed = nurse.signer is not None
            sig = None if signed else ctx.signature(nurse, Meaning.RECEIVED)
            sup = ctx.view.get("suppliers", (dea, supplier_id))
            product = services.product_copy(ctx, "67457-0001-10", field="ndc")
            for k in range(batch):
                ctx.append(ev.StockReceived(
                    invoice_number=f"FILL-{i0 + k:08d}",
                    supplier=supplier_copy(sup),  # as the receipt service copies it
                    lines=(ev.ReceivedLine(product, 1, "LOT-A1", datetime(2030, 1, 31).date(), (f"V{ctx.next_seq}-1",)),),
                ), signatures=[ctx.signature(nurse, Meaning.RECEIVED) if signed else sig], occurred_at=ctx.now)
            return {}

        # The request is a receipt's fields, so a signed fill entry's statement is the size of a
        # real receipt's.
        ledger.execute(dea, "receive_stock", request_fields(_receipt(supplier_id, i)), build, principal_id=nurse.staff_id)
        i += batch


def _timed_verify_report(ledger: Ledger, deep: bool, registrant: str) -> tuple[float, int, VerifyReport]:
    t0 = time.perf_counter()
    report = verify(ledger, deep=deep, registrant=registrant)
    dt = time.perf_counter() - t0
    if not report.ok:
        raise AssertionError(f"verify failed in bench: {report.problems[0]}")
    return report.entries / dt, report.entries, report


def _peak_verify_memory(ledger: Ledger, deep: bool) -> int:
    tracemalloc.start()
    verify(ledger, deep=deep, registrant=BENCH_DEA)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# --- issue 22: eventsourcing, 16 concurrent writers, a bare psycopg loop ----------------------------

ES_INSTALL_HINT = ("eventsourcing comparison skipped: the package is not installed "
                   "(pip install 'csledger[bench]', the benchmark extra; not a product dependency)")


def _import_eventsourcing():
    """The eventsourcing classes the comparison needs, or None when the package is absent
    (it is a benchmark extra, never a product dependency)."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
        from eventsourcing.sqlite import SQLiteConnectionPool
    except ImportError:
        return None
    return Application, Aggregate, event, SQLiteConnectionPool


_ES_AGGREGATE: list = []


def _es_aggregate(Aggregate, event):  # noqa: N803 - eventsourcing's classes
    """The bench's eventsourcing aggregate class, made once: eventsourcing registers each class by
    topic and refuses a second class under the same one."""
    if not _ES_AGGREGATE:
        class Ledgerish(Aggregate):
            @event("Created")
            def __init__(self, name: str):
                self.name = name
                self.n = 0

            @event("Appended")
            def append(self, data: str) -> None:
                self.n += 1

        _ES_AGGREGATE.append(Ledgerish)
    return _ES_AGGREGATE[0]


def eventsourcing_appends(path: Path, payloads: list[str], threads: int) -> float | None:
    """Appends/s of ``eventsourcing`` 9.x on its SQLite persistence module (a file database, WAL,
    and every connection it opens set to ``synchronous=FULL`` like ours), one event per
    transaction (``app.save`` of one new event), the payloads split over ``threads`` threads.
    Each thread appends to its own aggregate: one aggregate shared by threads would only measure
    its optimistic-concurrency retries. None when the package is not installed."""
    es = _import_eventsourcing()
    if es is None:
        return None
    Application, Aggregate, event, Pool = es
    Ledgerish = _es_aggregate(Aggregate, event)

    original = Pool._create_connection
    synchronous: list[int] = []

    def create_full(self):  # why: eventsourcing sets WAL but leaves synchronous at the build default
        conn = original(self)
        conn._sqlite_conn.execute("PRAGMA synchronous=FULL")
        synchronous.append(conn._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0])
        return conn

    Pool._create_connection = create_full
    try:
        app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path),
                               "SQLITE_LOCK_TIMEOUT": "30"})
        aggs = []
        for t in range(threads):
            agg = Ledgerish(f"writer-{t}")
            app.save(agg)
            aggs.append(agg)
        shares = [payloads[t::threads] for t in range(threads)]

        def work(t: int) -> None:
            agg = aggs[t]
            for data in shares[t]:
                agg.append(data)
                app.save(agg)  # one event, one transaction

        dt = _run_threads(work, threads)
        app.close()
    finally:
        Pool._create_connection = original
    if not synchronous or set(synchronous) != {2}:  # 2 = FULL: the comparison is only fair if it held
        raise AssertionError(f"eventsourcing connections not at synchronous=FULL: {synchronous}")
    return len(payloads) / dt


def _run_threads(work: Callable[[int], None], threads: int) -> float:
    """Wall-clock seconds for ``work(t)`` on ``threads`` threads started together; re-raises the
    first error a thread hit."""
    import threading

    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        barrier.wait()
        try:
            work(t)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in ts:
        th.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt


def concurrent_appends(ledger: Ledger, nurse: Principal, supplier_id: str, total: int, threads: int,
                       start: int) -> tuple[float, int]:
    """csledger appends/s with ``threads`` concurrent writers on one registrant, each issuing
    single-command receipts through ``services.receive_stock`` (the single-writer figure's path),
    ``total`` commands in all. A writer told the ledger is busy (``Conflict``) retries, as a
    client would; returns (appends/s over wall-clock time, retries)."""
    from ledger.domain.errors import Conflict

    retries = [0] * threads

    def work(t: int) -> None:
        for k in range(t, total, threads):
            while True:
                try:
                    services.receive_stock(ledger, nurse, _receipt(supplier_id, start + k))
                    break
                except Conflict:
                    retries[t] += 1

    dt = _run_threads(work, threads)
    return total / dt, sum(retries)


def _bench_dea(i: int) -> str:
    """A valid DEA number (its check digit right) for the bench's ``i``-th extra registrant."""
    from ledger.domain.identifiers import dea_check_digit

    body = f"{700000 + i:06d}"
    return f"AB{body}{dea_check_digit(body)}"


def registrants_appends(ledger: Ledger, registrants: list[tuple[Principal, str]], per_registrant: int) -> dict:
    """One writer per registrant, all at once (a clinic group's network on one server): each
    issues ``per_registrant`` single-command receipts on its own registrant. Returns the total
    appends/s over wall-clock time and each registrant's median and worst command latency, which
    say whether any registrant waited for another."""
    import resource

    lat: list[list[float]] = [[] for _ in registrants]

    def work(t: int) -> None:
        nurse, supplier_id = registrants[t]
        for k in range(per_registrant):
            s = time.perf_counter()
            services.receive_stock(ledger, nurse, _receipt(supplier_id, k))
            lat[t].append(time.perf_counter() - s)

    before = resource.getrusage(resource.RUSAGE_SELF)
    dt = _run_threads(work, len(registrants))
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = len(registrants) * per_registrant
    medians = [statistics.median(x) * 1000 for x in lat]
    # CPU of the whole process per command, user and kernel apart: kernel time is what threads
    # handing the interpreter lock to each other cost (``WriteSlots``).
    return {"appends_per_s": n / dt, "registrants": len(registrants), "write_slots": ledger.write_slots.slots,
            "median_ms_range": (min(medians), max(medians)), "worst_p99_ms": max(_p99(x) * 1000 for x in lat),
            "user_ms_per_command": (after.ru_utime - before.ru_utime) * 1000 / n,
            "kernel_ms_per_command": (after.ru_stime - before.ru_stime) * 1000 / n}


def bare_psycopg_registrants(pg_url: str, payloads: list[bytes], threads: int) -> float:
    """The bare psycopg loop from ``threads`` connections at once, each appending ``payloads`` to
    its own registrant's chain (same table, same durability): appends/s over wall-clock time."""
    import os

    import psycopg

    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    table = f"csledger_bench_bare_many_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (registrant text, seq bigint, prev text, leaf text, data bytea, "
                      "PRIMARY KEY (registrant, seq))")
        conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
        try:
            def work(t: int) -> None:
                conn, prev = conns[t], "0" * 64
                conn.execute("SET synchronous_commit = on")
                for i, data in enumerate(payloads):
                    leaf = hashlib.sha256(b"\x00" + data).hexdigest()
                    with conn.transaction():
                        conn.execute(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s)", (f"R{t}", i, prev, leaf, data))
                    prev = leaf

            dt = _run_threads(work, threads)
        finally:
            for c in conns:
                c.close()
            admin.execute(f"DROP TABLE {table}")
    return threads * len(payloads) / dt


def bare_psycopg_append(pg_url: str, payloads: list[bytes]) -> float:
    """Appends/s of a bare psycopg loop on PostgreSQL with our durability (``synchronous_commit``
    on): per row SHA-256 of the canonical bytes, one INSERT, one COMMIT. Its table is created in
    the bench database and dropped afterwards."""
    import os

    import psycopg

    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    table = f"csledger_bench_bare_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute(f"CREATE TABLE {table} (registrant text, seq bigint, prev text, leaf text, data bytea, "
                     "PRIMARY KEY (registrant, seq))")
        try:
            prev = "0" * 64
            t0 = time.perf_counter()
            for i, data in enumerate(payloads):
                leaf = hashlib.sha256(b"\x00" + data).hexdigest()
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s)", (BENCH_DEA, i, prev, leaf, data))
                prev = leaf
            dt = time.perf_counter() - t0
        finally:
            conn.execute(f"DROP TABLE {table}")
    return len(payloads) / dt


def _print_issue22(console: Console, results: dict) -> None:
    """The issue-22 table: each figure beside its comparison, the ratio and the target."""
    c = results["issue22"]
    t = Table(title=f"appends beside eventsourcing and a bare psycopg loop (issue 22), same run, {c['writers']} writers")
    t.add_column("measure")
    t.add_column("csledger", justify="right")
    t.add_column("compared with", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column("target", justify="right")
    es1, es16 = c.get("es_appends_per_s"), c.get("es_concurrent_appends_per_s")
    ours1, ours16 = results["appends_per_s"], c["concurrent_appends_per_s"]
    # On PostgreSQL the one-writer target is the psycopg loop (below); the SQLite loop is context.
    t.add_row("durable appends/s, one writer vs bare sqlite3+hashlib", f"{ours1:,.0f}",
              f"{results['bare_appends_per_s']:,.0f}", f"{ours1 / results['bare_appends_per_s']:.2f}x",
              ">= 0.50x" if results["dialect"] == "sqlite" else "")
    if es1 is not None:
        t.add_row("durable appends/s, one writer vs eventsourcing (SQLite, 1 thread)", f"{ours1:,.0f}",
                  f"{es1:,.0f}", f"{ours1 / es1:.2f}x", "")
    if es16 is not None:
        t.add_row(f"durable appends/s, {c['writers']} writers on one registrant vs eventsourcing (SQLite, {c['writers']} threads)",
                  f"{ours16:,.0f}", f"{es16:,.0f}", f"{ours16 / es16:.2f}x", ">= 1.00x")
    else:
        t.add_row(f"durable appends/s, {c['writers']} writers on one registrant", f"{ours16:,.0f}", "", "", "")
    if c.get("psycopg_appends_per_s") is not None:
        bp = c["psycopg_appends_per_s"]
        t.add_row("durable appends/s, one writer vs bare psycopg loop (synchronous_commit on)", f"{ours1:,.0f}",
                  f"{bp:,.0f}", f"{ours1 / bp:.2f}x", ">= 0.50x")
    many = c.get("registrants")
    if many is not None and many["bare_appends_per_s"] is not None:
        t.add_row(f"durable appends/s, {many['registrants']} registrants one writer each vs bare psycopg loop from "
                  f"{many['registrants']} connections", f"{many['appends_per_s']:,.0f}",
                  f"{many['bare_appends_per_s']:,.0f}", f"{many['appends_per_s'] / many['bare_appends_per_s']:.2f}x",
                  ">= 0.50x")
    elif many is not None:
        t.add_row(f"durable appends/s, {many['registrants']} registrants one writer each", f"{many['appends_per_s']:,.0f}",
                  "", "", "")
    console.print(t)
    commits = c.get("concurrent_commits")
    per_commit = f", {c['concurrent_appends'] / commits:.1f} commands per commit (group commit)" if commits else ""
    console.print(f"{c['writers']} writers: {c['concurrent_appends']} commands, {c['concurrent_retries']} retried after "
                  f"'ledger busy'{per_commit}")
    if many is not None:
        lo, hi = many["median_ms_range"]
        console.print(f"{many['registrants']} registrants: median command latency {lo:.1f} to {hi:.1f} ms per registrant, "
                      f"worst p99 {many['worst_p99_ms']:.1f} ms; CPU per command {many['user_ms_per_command']:.2f} ms "
                      f"user + {many['kernel_ms_per_command']:.2f} ms kernel; {many['write_slots']} write slot(s)")
    if es1 is None:
        console.print(ES_INSTALL_HINT, markup=False)  # why: "[bench]" is not rich markup


# --- staff signatures (issue 17) ------------------------------------------------------------------

SIGNED_DEA = "AS1234563"  # the signed chain: a second registrant in the same database
RP_ID, ORIGIN = "localhost", "http://localhost"
_ADMIN_PASSWORD, _NURSE_PASSWORD = "bench-admin-password-1", "bench-nurse-password-1"


def _signed_registrant(ledger: Ledger, kdf: KdfParams) -> tuple[Principal, str, dict, str]:
    """The signed registrant: seeded, then the admin's root credential and the nurse's password
    key (approved by the admin), both wrapped at ``kdf``. Returns (nurse carrying her signer,
    supplier id, her wrapped-key record, her password)."""
    from ledger.services import credentials

    admin, nurse, supplier_id = _seed_registrant(ledger, SIGNED_DEA)
    _, root_record, root_key = credentials.enrol_password_key(ledger, admin, _ADMIN_PASSWORD, params=kdf,
                                                              rp_id=RP_ID, origins=(ORIGIN,))
    admin = replace(admin, signer=PasswordKeySigner(root_key, root_record["credential_id"]))
    _, record, key = credentials.enrol_password_key(ledger, nurse, _NURSE_PASSWORD, params=kdf, approver=admin)
    return replace(nurse, signer=PasswordKeySigner(key, record["credential_id"])), supplier_id, record, _NURSE_PASSWORD


def _per_op(fn: Callable[[int], object], n: int) -> float:
    """Seconds per call of ``fn(i)`` over ``n`` calls, after one untimed warm-up call."""
    fn(-1)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def _cose_es256(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The COSE_Key (EC2, P-256, ES256) of ``key``, CTAP2 canonical CBOR written out by hand
    (a map of five pairs: kty 2, alg -7, crv 1, x and y as 32-byte strings)."""
    nums = key.public_key().public_numbers()
    return (b"\xa5\x01\x02\x03\x26\x20\x01\x21\x58\x20" + nums.x.to_bytes(32, "big")
            + b"\x22\x58\x20" + nums.y.to_bytes(32, "big"))


def _passkey_proof(key: ec.EllipticCurvePrivateKey, st_bytes: bytes) -> dict:
    """What a passkey (user present and verified) answers for a statement, as stored in an entry:
    authenticator data = SHA-256(RP ID) + flags + sign counter, clientDataJSON carrying the
    statement's challenge, ES256 signature over authenticator data + SHA-256(clientDataJSON)."""
    auth_data = hashlib.sha256(RP_ID.encode()).digest() + bytes([0x01 | 0x04]) + struct.pack(">I", 1)
    client_data = json.dumps({"type": "webauthn.get", "challenge": passkeys.b64url(passkeys.challenge_for(st_bytes)),
                              "origin": ORIGIN, "crossOrigin": False}, separators=(",", ":")).encode()
    signature = key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
    return {"credential_id": passkeys.b64url(b"bench-passkey"), "authenticator_data": passkeys.b64url(auth_data),
            "client_data_json": passkeys.b64url(client_data), "signature": passkeys.b64url(signature)}


def signature_costs(supplier_id: str, record: dict, password: str, *, ops: int = 2000, passkey_ops: int = 500,
                    opens: int = 3) -> dict:
    """Per-operation costs of staff signatures, each on one core (seconds per op):

    * ``sign``: what ``CommandContext.signature`` does per signer for a receipt command: the
      statement (JSON value of the request, a fresh nonce, RFC 8785 bytes) and its Ed25519 signature;
    * ``verify_password_key``: one Ed25519 signature checked over those bytes, as the verifier does;
    * ``verify_passkey``: one passkey ES256 assertion checked offline (``verify_assertion``: client
      data, rpIdHash, UP/UV flags, the signature, and py_webauthn's second opinion);
    * ``open_key``: one argon2id opening of ``record`` (median of ``opens``): the sign-in cost.
    """
    key = open_key(record, password)
    if key is None:
        raise AssertionError("the bench nurse's password did not open her key")
    request = request_fields(_receipt(supplier_id, 0))

    def sign(_i: int) -> dict:
        st = statement(SIGNED_DEA, "receive_stock", "received", canon.to_json_value(request), new_nonce())
        return sign_with(key, statement_bytes(st))

    st_bytes = statement_bytes(statement(SIGNED_DEA, "receive_stock", "received", canon.to_json_value(request),
                                         new_nonce()))
    proof, public = sign_with(key, st_bytes), record["public_key"]
    pk = ec.generate_private_key(ec.SECP256R1())
    pk_proof, pk_public = _passkey_proof(pk, st_bytes), passkeys.b64url(_cose_es256(pk))

    def verify_pk(_i: int) -> None:
        verify_password_key(proof, st_bytes, public)

    def verify_passkey(_i: int) -> None:
        passkeys.verify_assertion(pk_proof, statement_bytes=st_bytes, public_key=pk_public, rp_id=RP_ID,
                                  origins=[ORIGIN])

    opened = []
    for _ in range(opens):
        t0 = time.perf_counter()
        open_key(record, password)
        opened.append(time.perf_counter() - t0)
    return {"sign": _per_op(sign, ops), "verify_password_key": _per_op(verify_pk, ops),
            "verify_passkey": _per_op(verify_passkey, passkey_ops), "open_key": statistics.median(opened),
            "kdf": dict(record["kdf"]), "statement_bytes": len(st_bytes)}


def _signature_split(ledger: Ledger, report: VerifyReport, registrant: str) -> float:
    """Seconds of a verify run spent on staff signatures: the report's own figure, or else (a
    verify without it) a :class:`StaffSignatureCheck` timed over the same entries."""
    seconds = getattr(report, "signature_seconds", None)
    if seconds is not None:
        return seconds
    from ledger.services.signature_check import StaffSignatureCheck

    check = StaffSignatureCheck(registrant)
    with ledger.reading() as c:
        for seq, data in c.execute(sa.select(entries_t.c.seq, entries_t.c.canonical)
                                   .where(entries_t.c.registrant == registrant).order_by(entries_t.c.seq)):
            check.feed_bytes(seq, data)
    if not check.ok:
        raise AssertionError(f"staff signatures failed in bench: {check.problems[0]}")
    return check.seconds


def run_bench(console: Console, *, entries: int, verify_entries: int, workdir: Path | None, pg_url: str | None,
              production: bool = True, staff_signatures: bool = True, kdf: KdfParams | None = None,
              signature_ops: int = 2000, writers: int = 16, comparisons: bool = True, registrants: int = 20) -> dict:
    """Run the benchmark, print its tables and return the figures.

    ``staff_signatures`` adds the issue-17 section (a signed registrant beside the unsigned one,
    per-operation signing and verification costs); ``kdf`` is the argon2id cost of the password
    keys it wraps and opens (default: production, ``KdfParams()``; the smoke test passes a cheap one),
    ``signature_ops`` how many signatures each per-operation figure times (passkeys: a quarter).

    ``comparisons`` adds the issue-22 section: ``writers`` concurrent writers on one registrant,
    ``eventsourcing`` on SQLite from one thread and from ``writers`` threads (when installed), and
    on PostgreSQL a bare psycopg append loop, and ``registrants`` registrants with one writer each
    beside the bare loop from as many connections; each beside csledger's figure with the ratio
    and its target (printed, never asserted)."""
    tmp = Path(tempfile.mkdtemp(prefix="csledger-bench-", dir=workdir))
    url = pg_url or f"sqlite:///{tmp / 'ledger.db'}"
    ledger = Ledger.open(url)
    migrate(ledger.engine)
    if production:
        # What a clinic runs: a checkpoint signed in every append transaction (issue 4) and the
        # in-transaction alert rules (issue 7), exactly as ``csledger serve`` attaches them.
        from ledger.services.alerts import attach_alert_rules
        from ledger.settings import get_settings
        from ledger.storage.log import attach

        attach(ledger, get_settings(database_url=url, key_dir=tmp / "keys"))
        attach_alert_rules(ledger)
    nurse, supplier_id = _seed(ledger)
    kdf = kdf or KdfParams()
    signed = _signed_registrant(ledger, kdf) if staff_signatures else None

    # 1. durable single-command appends (one receipt = one entry per command). With staff
    # signatures, an unsigned and a signed receipt alternate, so both see the same machine load.
    per_cmd: list[float] = []
    per_signed: list[float] = []
    for i in range(entries):
        s = time.perf_counter()
        services.receive_stock(ledger, nurse, _receipt(supplier_id, i))
        per_cmd.append(time.perf_counter() - s)
        if signed is not None:
            s = time.perf_counter()
            services.receive_stock(ledger, signed[0], _receipt(signed[1], i))
            per_signed.append(time.perf_counter() - s)
    ours_append = entries / sum(per_cmd)
    with ledger.reading() as c:
        sample = [bytes(r) for r in c.execute(entries_t.select().with_only_columns(entries_t.c.canonical)
                                               .where(entries_t.c.registrant == BENCH_DEA).order_by(entries_t.c.seq.desc()).limit(entries)).scalars()]
    bare_append_rate = bare_append(tmp / "bare-append.db", list(reversed(sample)))

    # 2. verify at two sizes (memory must not grow with the log)
    results = {"dialect": ledger.dialect, "appends_per_s": ours_append, "bare_appends_per_s": bare_append_rate,
               "append_p50_ms": statistics.median(per_cmd) * 1000,
               "append_p99_ms": _p99(per_cmd) * 1000}
    if comparisons:
        # Issue 22, in the same run: the same number of commands from ``writers`` threads on the same
        # registrant (invoices numbered after the single-writer ones), then eventsourcing with
        # payloads of the same canonical bytes, then (PostgreSQL) the bare psycopg loop.
        commits_before = ledger.commits
        conc, conc_retries = concurrent_appends(ledger, nurse, supplier_id, entries, writers, entries)
        texts = [b.decode() for b in reversed(sample)]
        es1 = eventsourcing_appends(tmp / "es-1.db", texts, 1)
        es16 = eventsourcing_appends(tmp / f"es-{writers}.db", texts, writers) if es1 is not None else None
        conc_commits = ledger.commits - commits_before
        bp = bare_psycopg_append(pg_url, list(reversed(sample))) if ledger.dialect == "postgresql" else None
        results["issue22"] = {"writers": writers, "concurrent_appends": entries, "concurrent_appends_per_s": conc,
                              "concurrent_retries": conc_retries, "es_appends_per_s": es1,
                              "es_concurrent_appends_per_s": es16, "psycopg_appends_per_s": bp,
                              "concurrent_commits": conc_commits}
        if registrants > 1:
            # The same number of commands again, spread over ``registrants`` registrants, one
            # writer each (on PostgreSQL beside the bare loop from as many connections).
            regs = [_seed_registrant(ledger, _bench_dea(i))[1:] for i in range(registrants)]
            per = max(entries // registrants, 1)
            many = registrants_appends(ledger, regs, per)
            many["bare_appends_per_s"] = (bare_psycopg_registrants(pg_url, list(reversed(sample))[:per], registrants)
                                          if ledger.dialect == "postgresql" else None)
            results["issue22"]["registrants"] = many
        entries_so_far = 2 * entries
    else:
        entries_so_far = entries
    small = max(verify_entries // 4, entries_so_far + 10)
    nxt = _grow(ledger, nurse, supplier_id, small, entries_so_far)
    mem_small = (_peak_verify_memory(ledger, False), _peak_verify_memory(ledger, True))
    _grow(ledger, nurse, supplier_id, verify_entries, nxt)
    mem_large = (_peak_verify_memory(ledger, False), _peak_verify_memory(ledger, True))
    v_rate, v_n, v_report = _timed_verify_report(ledger, False, BENCH_DEA)
    d_rate, _, d_report = _timed_verify_report(ledger, True, BENCH_DEA)
    _copy_rows(ledger, tmp / "bare-verify.db")  # the bare loop reads the same bytes from plain sqlite3
    bare_v = statistics.median(bare_verify(tmp / "bare-verify.db") for _ in range(3))
    results.update({"verify_entries": v_n, "verify_per_s": v_rate, "verify_deep_per_s": d_rate, "bare_verify_per_s": bare_v,
                    "verify_peak_bytes": {small: mem_small[0], verify_entries: mem_large[0]},
                    "deep_peak_bytes": {small: mem_small[1], verify_entries: mem_large[1]}})

    # 3. the signed chain (issue 17): grown as the unsigned one, then verified the same ways
    if signed is not None:
        nurse_s, supplier_s, record, password = signed
        _grow(ledger, nurse_s, supplier_s, verify_entries, entries)
        sv_rate, sv_n, sv_report = _timed_verify_report(ledger, False, SIGNED_DEA)
        sd_rate, _, sd_report = _timed_verify_report(ledger, True, SIGNED_DEA)
        staff = sv_report.staff.get(SIGNED_DEA) if hasattr(sv_report, "staff") else None
        results["staff_signatures"] = {
            "appends_per_s": entries / sum(per_signed), "append_p50_ms": statistics.median(per_signed) * 1000,
            "append_p99_ms": _p99(per_signed) * 1000,
            "verify_entries": sv_n, "signatures_checked": staff.signatures_checked if staff is not None else None,
            "verify": _split(sv_report, _signature_split(ledger, sv_report, SIGNED_DEA)),
            "verify_deep": _split(sd_report, _signature_split(ledger, sd_report, SIGNED_DEA)),
            "unsigned_verify": _split(v_report, _signature_split(ledger, v_report, BENCH_DEA)),
            "unsigned_verify_deep": _split(d_report, _signature_split(ledger, d_report, BENCH_DEA)),
            "verify_per_s": sv_rate, "verify_deep_per_s": sd_rate,
            "per_op_s": signature_costs(supplier_s, record, password, ops=signature_ops,
                                        passkey_ops=max(signature_ops // 4, 1))}
    ledger.dispose()

    mode = "checkpoint signing + alert rules" if production else "ledger only, no checkpoints"
    t = Table(title=f"csledger bench ({ledger.dialect}, {mode}, {entries} appends, verify over {v_n} entries)")
    t.add_column("measure")
    t.add_column("csledger", justify="right")
    t.add_column("bare sqlite3+hashlib", justify="right")
    t.add_column("ratio", justify="right")
    t.add_row("durable single-command appends/s", f"{ours_append:,.0f}", f"{bare_append_rate:,.0f}", f"{ours_append / bare_append_rate:.2f}x")
    t.add_row("verify entries/s", f"{v_rate:,.0f}", f"{bare_v:,.0f}", f"{v_rate / bare_v:.2f}x")
    t.add_row("verify --deep entries/s", f"{d_rate:,.0f}", f"{bare_v:,.0f}", f"{d_rate / bare_v:.2f}x")
    console.print(t)
    console.print(f"append latency p50 {results['append_p50_ms']:.2f} ms, p99 {results['append_p99_ms']:.2f} ms")
    console.print(f"verify peak traced memory: {mem_small[0] / 1024:,.0f} KiB at {small} entries, "
                  f"{mem_large[0] / 1024:,.0f} KiB at {verify_entries} entries")
    console.print(f"verify --deep peak traced memory: {mem_small[1] / 1024:,.0f} KiB at {small} entries, "
                  f"{mem_large[1] / 1024:,.0f} KiB at {verify_entries} entries (rebuilt projections in a scratch file "
                  "behind a bounded cache: flat)")
    if "issue22" in results:
        _print_issue22(console, results)
    if "staff_signatures" in results:
        _print_signatures(console, results)
    return results


def _p99(samples: list[float]) -> float:
    return sorted(samples)[max(int(len(samples) * 0.99) - 1, 0)]


def _split(report: VerifyReport, signature_s: float) -> dict:
    """A verify run's seconds: in all, in the staff-signature check, and the chain and the rest."""
    total = getattr(report, "seconds", 0.0) or 0.0
    return {"entries": report.entries, "seconds": total, "signature_seconds": signature_s,
            "chain_seconds": max(total - signature_s, 0.0)}


def _print_signatures(console: Console, results: dict) -> None:
    """The staff-signature section: per-operation costs, then signed beside unsigned."""
    sig = results["staff_signatures"]
    ops = sig["per_op_s"]
    kdf = ops["kdf"]
    t = Table(title=f"staff signatures (issue 17): per operation, one core ({ops['statement_bytes']}-byte receipt statement)")
    t.add_column("operation")
    t.add_column("cost", justify="right")
    t.add_column("ops/s per core", justify="right")
    t.add_row("statement (RFC 8785 bytes) + Ed25519 sign, per command and signer", f"{ops['sign'] * 1e6:,.1f} µs",
              f"{1 / ops['sign']:,.0f}")
    t.add_row("verify one Ed25519 signature (password key)", f"{ops['verify_password_key'] * 1e6:,.1f} µs",
              f"{1 / ops['verify_password_key']:,.0f}")
    t.add_row("verify one passkey ES256 assertion (verify_assertion, offline)", f"{ops['verify_passkey'] * 1e6:,.1f} µs",
              f"{1 / ops['verify_passkey']:,.0f}")
    t.add_row(f"argon2id open of a password key (t={kdf['t']}, m={kdf['m'] // 1024} MiB, p={kdf['p']}), per sign-in",
              f"{ops['open_key'] * 1e3:,.1f} ms", f"{1 / ops['open_key']:,.1f}")
    console.print(t)

    t = Table(title=f"signed chain ({SIGNED_DEA}: root + nurse's password key) beside the unsigned one, same run")
    t.add_column("measure")
    t.add_column("unsigned", justify="right")
    t.add_column("signed", justify="right")
    t.add_column("signed / unsigned", justify="right")
    a, sa_ = results["appends_per_s"], sig["appends_per_s"]
    t.add_row("durable single-command appends/s", f"{a:,.0f}", f"{sa_:,.0f}", f"{sa_ / a:.2f}x")
    t.add_row("append latency p50 / p99 ms", f"{results['append_p50_ms']:.2f} / {results['append_p99_ms']:.2f}",
              f"{sig['append_p50_ms']:.2f} / {sig['append_p99_ms']:.2f}", "")
    for label, un, sg in (("verify", sig["unsigned_verify"], sig["verify"]),
                          ("verify --deep", sig["unsigned_verify_deep"], sig["verify_deep"])):
        ur, sr = un["entries"] / un["seconds"], sg["entries"] / sg["seconds"]
        t.add_row(f"{label} entries/s (all of it)", f"{ur:,.0f}", f"{sr:,.0f}", f"{sr / ur:.2f}x")
        uc, sc = un["entries"] / un["chain_seconds"], sg["entries"] / sg["chain_seconds"]
        t.add_row(f"  {label}: chain and the rest, entries/s", f"{uc:,.0f}", f"{sc:,.0f}", f"{sc / uc:.2f}x")
        t.add_row(f"  {label}: staff-signature check, µs per entry",
                  f"{un['signature_seconds'] / un['entries'] * 1e6:,.1f}",
                  f"{sg['signature_seconds'] / sg['entries'] * 1e6:,.1f}", "")
    console.print(t)
    checked = sig["signatures_checked"]
    v = sig["verify"]
    console.print(f"signed verify: {v['entries']} entries, {checked if checked is not None else '?'} staff signatures "
                  f"checked in {v['signature_seconds']:.3f} s of {v['seconds']:.3f} s "
                  f"(chain and the rest {v['chain_seconds']:.3f} s)")
