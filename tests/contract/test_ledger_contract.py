"""The ledger contract: one test class, run against SQLite and PostgreSQL.

Every database here is built by the real Alembic migrations (never ``create_all``).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    GrantRole,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    RegisterRegistrant,
    RevokeRole,
    TakeInventory,
)
from ledger.domain.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    LedgerError,
    NotFound,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.integrity.canonical import ZERO_HASH, decode
from ledger.services.verify import verify
from ledger.storage.store import (
    Ledger,
    durability_settings,
    entries_t,
    make_engine,
    migrate,
    movements_t,
)
from tests.conftest import (
    DEA,
    DEA2,
    KETAMINE_50,
    SUPPLIER_REGISTRATION,
    Clinic,
    an_hour_ago,
    entry_count,
)


def receipt(clinic: Clinic, invoice: str = "INV-1001", containers: int = 2, ndc: str = KETAMINE_50, **kw) -> ReceiveStock:
    return ReceiveStock(supplier_id=clinic.supplier_id, invoice_number=invoice, occurred_at=an_hour_ago(),
                        lines=(ReceivedLineInput(ndc, containers, "LOT-7781", "2028-06-30"),), **kw)


def entries_of(ledger: Ledger, dea: str = DEA) -> list[dict]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t).where(entries_t.c.registrant == dea).order_by(entries_t.c.seq)).mappings().all()
    return [dict(r) for r in rows]


class LedgerContract:
    backend: str

    # --- storage properties ------------------------------------------------------------------

    def test_durability_settings(self, ledger):
        s = durability_settings(ledger.engine)
        if ledger.dialect == "sqlite":
            assert s["journal_mode"] == "wal"
            assert s["synchronous"] == "2"  # FULL
            assert s["foreign_keys"] == "1"
        else:
            assert s["synchronous_commit"] == "on"

    @pytest.mark.real_migrations  # the migrations themselves, not a copy of the template they made
    def test_migrations_match_the_models(self, ledger):
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        from ledger.storage.tables import metadata

        with ledger.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
        assert diff == []

    def test_log_starts_with_registration(self, clinic):
        rows = entries_of(clinic.ledger)
        assert [r["seq"] for r in rows] == list(range(len(rows)))
        first = decode(rows[0]["canonical"])
        assert first["kind"] == "registrant_registered" and first["seq"] == 0
        assert first["prev"] == ZERO_HASH and first["dea_number"] == DEA
        assert first["signatures"][0]["auth_method"] == "console_bootstrap"
        for a, b in zip(rows, rows[1:], strict=False):
            assert b["prev_hash"] == a["leaf_hash"]

    # --- the first clinical kinds ------------------------------------------------------------

    def test_receipt_records_every_1304_22c_element(self, clinic):
        res = services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, containers=3))
        assert len(res["vial_ids"]) == 3 and len(set(res["vial_ids"])) == 3
        entry = decode(entries_of(clinic.ledger)[-1]["canonical"])
        assert entry["kind"] == "stock_received"
        line = entry["lines"][0]
        p = line["product"]
        assert (p["name"], p["form"], p["strength_mg_per_ml"], p["container_ml"]) == (
            "Ketamine HCl injection 50 mg/mL", "injection", "50.00", "10.00")
        assert line["containers"] == 3 and line["lot"] == "LOT-7781" and line["expiry"] == "2028-06-30"
        assert entry["supplier"]["name"] == "Gulf Medical Supply"
        assert entry["supplier"]["dea_number"] == "PB1234563"
        assert entry["supplier"]["address"]["city"] == "Houston"
        assert entry["invoice_number"] == "INV-1001"
        assert p["ndc"] == KETAMINE_50 and p["ndc_key"] == "67457000110"
        sig = entry["signatures"][0]
        assert sig["staff_id"] == clinic.nurse.staff_id and sig["printed_name"] == "Nora Nurse"
        assert sig["meaning"] == "received" and sig["auth_method"] == "password"
        with clinic.ledger.reading() as c:
            vials = c.execute(sa.text("SELECT vial_id, state, ml_left FROM vials ORDER BY vial_id")).all()
        assert [(v.state, Decimal(v.ml_left)) for v in vials] == [("sealed", Decimal("10.00"))] * 3

    def test_entries_are_self_describing(self, clinic):
        """A later product change cannot alter an old entry: the bytes carry the strength."""
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        before = entries_of(clinic.ledger)[-1]["canonical"]
        assert b'"strength_mg_per_ml":"50.00"' in before and b'"container_ml":"10.00"' in before

    def test_initial_inventory_empty_and_with_items(self, ledger, tmp_path):
        c = Clinic(ledger)
        res = services.take_inventory(ledger, c.pharmacist, TakeInventory(
            "initial", "opening_of_business", an_hour_ago(), items=(
                InventoryItemInput(KETAMINE_50, "LOT-1", "2028-01-31", sealed=True, containers=4),
                InventoryItemInput(KETAMINE_50, "LOT-1", "2028-01-31", sealed=False, ml="6.00",
                                   first_punctured_on=(an_hour_ago() - timedelta(days=1)).date().isoformat()),
            )), witness=c.nurse)
        assert len(res["vial_ids"]) == 5
        e = decode(entries_of(ledger)[-1]["canonical"])
        assert [i["estimated"] for i in e["items"]] == [False] * 4 + [True]
        assert sum(Decimal(i["ml"]) for i in e["items"]) == Decimal("46.00")
        with pytest.raises(Conflict) as exc:
            services.take_inventory(ledger, c.pharmacist, TakeInventory("initial", "opening_of_business", an_hour_ago()), witness=c.nurse)
        assert exc.value.field == "inventory_type"

    def test_empty_initial_inventory(self, clinic):
        res = services.take_inventory(clinic.ledger, clinic.nurse, TakeInventory("initial", "close_of_business", an_hour_ago()), witness=clinic.pharmacist)
        assert res["vial_ids"] == []
        assert decode(entries_of(clinic.ledger)[-1]["canonical"])["items"] == []

    # --- refusals: a clear error naming the field, and nothing written ----------------------

    @pytest.mark.parametrize("mutate, exc_type, field", [
        (lambda c: dict(supplier_id="SUP999"), NotFound, "supplier_id"),
        (lambda c: dict(lines=(ReceivedLineInput("99999-9999-99", 1, "L", "2028-01-01"),)), NotFound, "lines[0].ndc"),
        (lambda c: dict(lines=(ReceivedLineInput("1234567890", 1, "L", "2028-01-01"),)), InvalidInput, "lines[0].ndc"),
        (lambda c: dict(lines=(ReceivedLineInput(KETAMINE_50, 0, "L", "2028-01-01"),)), InvalidInput, "lines[0].containers"),
        (lambda c: dict(lines=(ReceivedLineInput(KETAMINE_50, -2, "L", "2028-01-01"),)), InvalidInput, "lines[0].containers"),
        (lambda c: dict(lines=(ReceivedLineInput(KETAMINE_50, 1, "L", "2028-13-01"),)), InvalidInput, "lines[0].expiry"),
        (lambda c: dict(lines=(ReceivedLineInput(KETAMINE_50, 1, "L", "2020-01-01"),)), InvalidInput, "lines[0].expiry"),
        (lambda c: dict(occurred_at=datetime.now(UTC) + timedelta(days=1)), InvalidInput, "occurred_at"),
        (lambda c: dict(occurred_at=datetime(2026, 1, 1, 10, 0)), InvalidInput, "occurred_at"),
        (lambda c: dict(occurred_at=datetime.now(UTC) - timedelta(days=3)), InvalidInput, "late_reason"),
        (lambda c: dict(invoice_number=""), InvalidInput, "invoice_number"),
        (lambda c: dict(invoice_number="x" * 10_000_000), InvalidInput, "invoice_number"),
    ])
    def test_bad_receipt_is_refused_and_nothing_written(self, clinic, mutate, exc_type, field):
        before = entry_count(clinic.ledger)
        base = receipt(clinic)
        fields = {**base.__dict__, **mutate(clinic)}
        with pytest.raises(exc_type) as exc:
            services.receive_stock(clinic.ledger, clinic.nurse, ReceiveStock(**fields))
        assert exc.value.field == field, str(exc.value)
        assert str(exc.value).startswith(field)
        assert entry_count(clinic.ledger) == before

    def test_late_entry_with_reason_is_accepted(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, ReceiveStock(**{
            **receipt(clinic).__dict__, "occurred_at": datetime.now(UTC) - timedelta(days=3),
            "late_reason": "network down; recorded on the paper downtime log"}))
        e = decode(entries_of(clinic.ledger)[-1]["canonical"])
        assert e["late_reason"].startswith("network down")

    def test_duplicate_invoice_from_same_supplier_refused(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "INV-9"))
        before = entry_count(clinic.ledger)
        with pytest.raises(Conflict) as exc:
            services.receive_stock(clinic.ledger, clinic.pharmacist, receipt(clinic, "INV-9"))
        assert exc.value.field == "invoice_number" and "already received" in exc.value.reason
        assert entry_count(clinic.ledger) == before

    @pytest.mark.parametrize("amount, reason", [
        ("-5.00", "negative"), ("10.001", "decimal places"), ("abc", "not a decimal"), ("NaN", "not a decimal"),
        ("Infinity", "not a decimal"), ("1e309", "not a decimal"), ("1,5", "not a decimal"), ("-0", "negative zero"),
        ("100000000000000000000", "at most"), ("0", "greater than zero"),
    ])
    def test_bad_product_quantity(self, clinic, amount, reason):
        before = entry_count(clinic.ledger)
        with pytest.raises(InvalidInput) as exc:
            services.add_product(clinic.ledger, clinic.admin, AddProduct("0409-2053-02", "Ketamine", "7285", "III",
                                                                         "injection", amount, "10.00"))
        assert exc.value.field == "strength_mg_per_ml" and reason in exc.value.reason
        assert entry_count(clinic.ledger) == before

    def test_float_quantity_refused(self, clinic):
        with pytest.raises(InvalidInput, match="float"):
            services.add_product(clinic.ledger, clinic.admin, AddProduct("0409-2053-02", "K", "7285", "III", "injection", 50.0, "10.00"))

    @pytest.mark.parametrize("dea, reason", [("AB1234564", "check digit"), ("AB123456", "9 characters"),
                                             ("ＡＢ1234563", "not an ASCII")])
    def test_bad_dea_number(self, clinic, dea, reason):
        before = entry_count(clinic.ledger)
        with pytest.raises(InvalidInput) as exc:
            services.add_supplier(clinic.ledger, clinic.admin, AddSupplier("X", AddressInput("1 A St", "Austin", "TX", "78701"), dea,
                                                                                 **SUPPLIER_REGISTRATION))
        assert exc.value.field == "dea_number" and reason in exc.value.reason
        assert entry_count(clinic.ledger) == before

    def test_unknown_registrant_and_staff(self, clinic):
        ghost = Principal(DEA2, "S1", "Ghost", AuthMethod.PASSWORD)
        with pytest.raises(NotFound) as exc:
            services.receive_stock(clinic.ledger, ghost, receipt(clinic))
        assert exc.value.field == "registrant"
        stranger = Principal(DEA, "S999", "Stranger", AuthMethod.PASSWORD)
        with pytest.raises(NotFound) as exc:
            services.receive_stock(clinic.ledger, stranger, receipt(clinic))
        assert exc.value.field == "staff_id"

    def test_principal_without_role_refused(self, clinic):
        before = entry_count(clinic.ledger)
        with pytest.raises(Forbidden):
            services.receive_stock(clinic.ledger, clinic.auditor, receipt(clinic))
        with pytest.raises(Forbidden):
            services.add_product(clinic.ledger, clinic.nurse, AddProduct("0409-2053-02", "K", "7285", "III", "injection", "100.00", "10.00"))
        with pytest.raises(Forbidden):
            services.grant_role(clinic.ledger, clinic.nurse, GrantRole(clinic.nurse.staff_id, "manager"))
        assert entry_count(clinic.ledger) == before

    def test_roles_are_granted_and_revoked_by_entries(self, clinic):
        services.revoke_role(clinic.ledger, clinic.admin, RevokeRole(clinic.nurse.staff_id, "nurse", "left the clinic"))
        with pytest.raises(Forbidden):
            services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        services.grant_role(clinic.ledger, clinic.admin, GrantRole(clinic.nurse.staff_id, "nurse"))
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        kinds = [decode(e["canonical"])["kind"] for e in entries_of(clinic.ledger)[-3:]]
        assert kinds == ["role_revoked", "role_granted", "stock_received"]
        with pytest.raises(Conflict):
            services.revoke_role(clinic.ledger, clinic.admin, RevokeRole(clinic.admin.staff_id, "administrator", "x"))

    def test_registering_twice_refused(self, clinic):
        with pytest.raises(Conflict) as exc:
            services.register_registrant(clinic.ledger, RegisterRegistrant(
                DEA, "Dup", AddressInput("1 A St", "Austin", "TX", "78701"), "America/Chicago", "X Y", "xy"))
        assert exc.value.field == "dea_number"

    def test_bad_registration_fields(self, ledger):
        for kw, field in [({"time_zone": "Mars/Olympus"}, "time_zone"), ({"dea_number": "AB1234564"}, "dea_number")]:
            base = dict(dea_number=DEA, name="C", address=AddressInput("1 A St", "Austin", "TX", "78701"),
                        time_zone="America/Chicago", admin_printed_name="A B", admin_username="ab")
            with pytest.raises(InvalidInput) as exc:
                services.register_registrant(ledger, RegisterRegistrant(**{**base, **kw}))
            assert exc.value.field == field
        with pytest.raises(InvalidInput) as exc:
            services.register_registrant(ledger, RegisterRegistrant(
                DEA, "C", AddressInput("1 A St", "Austin", "ZZ", "78701"), "America/Chicago", "A B", "ab"))
        assert exc.value.field == "address.state"
        assert entry_count(ledger) == 0

    # --- idempotency ---------------------------------------------------------------------------

    def test_idempotent_retry_returns_first_answer_and_writes_nothing(self, clinic):
        cmd = receipt(clinic, "INV-IDEM")
        first = services.receive_stock(clinic.ledger, clinic.nurse, cmd, idempotency_key="k-1")
        n = entry_count(clinic.ledger)
        again = services.receive_stock(clinic.ledger, clinic.nurse, cmd, idempotency_key="k-1")
        assert again.pop("replayed") is True
        assert again == first
        assert entry_count(clinic.ledger) == n
        with pytest.raises(IdempotencyConflict) as exc:
            services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "INV-OTHER"), idempotency_key="k-1")
        assert exc.value.field == "idempotency_key" and exc.value.status == 409
        assert entry_count(clinic.ledger) == n

    def test_failed_command_does_not_burn_the_key(self, clinic):
        bad = ReceiveStock(**{**receipt(clinic).__dict__, "supplier_id": "nope"})
        with pytest.raises(NotFound):
            services.receive_stock(clinic.ledger, clinic.nurse, bad, idempotency_key="k-2")
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "INV-K2"), idempotency_key="k-2")

    # --- concurrency ---------------------------------------------------------------------------

    def test_concurrent_writers_one_registrant(self, clinic):
        threads, per_thread = 8, 12
        errors: list[BaseException] = []
        done: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(threads)
        base = entry_count(clinic.ledger)

        def worker(t: int):
            start.wait()
            for i in range(per_thread):
                inv = f"T{t}-{i}"
                try:
                    services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, inv, containers=1),
                                           idempotency_key=inv)
                    with lock:
                        done.append(inv)
                except LedgerError as exc:  # a clear refusal is allowed; a lost or doubled entry is not
                    with lock:
                        errors.append(exc)

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:3]
        rows = entries_of(clinic.ledger)
        assert [r["seq"] for r in rows] == list(range(len(rows)))  # no gap, no fork
        assert len(rows) == base + threads * per_thread
        invoices = sorted(decode(r["canonical"])["invoice_number"] for r in rows if r["kind"] == "stock_received")
        assert invoices == sorted(done)  # every acknowledged command exactly once
        report = verify(clinic.ledger, deep=True)
        assert report.ok, report.problems

    def test_registrants_are_independent(self, ledger):
        a, b = Clinic(ledger, DEA), Clinic(ledger, DEA2)
        services.receive_stock(ledger, a.nurse, receipt(a, "A-1"))
        services.receive_stock(ledger, b.nurse, receipt(b, "A-1"))  # same invoice number, other registrant
        assert verify(ledger, deep=True).ok
        with pytest.raises(NotFound):
            services.receive_stock(ledger, Principal(DEA2, a.nurse.staff_id + "x", "N", AuthMethod.PASSWORD), receipt(b, "A-2"))

    def test_a_read_is_one_snapshot(self, clinic):
        """Every statement of one ``reading()`` sees the same committed state, so a proof, page or
        audit never mixes a checkpoint or a balance from after an append with counts from before it
        (PostgreSQL's default READ COMMITTED would: it re-reads each statement)."""
        count = sa.select(sa.func.count()).select_from(entries_t).where(entries_t.c.registrant == DEA)
        with clinic.ledger.reading() as c:
            before = c.execute(count).scalar()
            services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "SNAP-1"))  # commits meanwhile
            assert c.execute(count).scalar() == before
        with clinic.ledger.reading() as c:
            assert c.execute(count).scalar() > before

    # --- tampering -----------------------------------------------------------------------------

    @pytest.mark.parametrize("sql", [
        "UPDATE entries SET kind = 'x' WHERE seq = 0",
        "DELETE FROM entries WHERE seq = 1",
        "UPDATE entry_movements SET ml = '1.00'",
        "DELETE FROM merkle_nodes",
    ])
    def test_append_only_triggers(self, clinic, sql):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        with pytest.raises(DBAPIError, match="append-only"):
            with clinic.ledger.engine.begin() as c:
                c.exec_driver_sql(sql)
        assert verify(clinic.ledger, deep=True).ok

    def _drop_triggers(self, ledger):
        with ledger.engine.begin() as c:
            if ledger.dialect == "sqlite":
                for t in ("entries", "entry_movements"):
                    c.exec_driver_sql(f"DROP TRIGGER {t}_no_update")
                    c.exec_driver_sql(f"DROP TRIGGER {t}_no_delete")
            else:
                for t in ("entries", "entry_movements"):
                    c.exec_driver_sql(f"DROP TRIGGER {t}_append_only ON {t}")

    def test_edited_bytes_caught_by_verify(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        rows = entries_of(clinic.ledger)
        target = rows[-1]
        self._drop_triggers(clinic.ledger)
        forged = target["canonical"].replace(b'"containers":2', b'"containers":1')
        assert forged != target["canonical"]
        with clinic.ledger.engine.begin() as c:
            c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == target["seq"])
                      .values(canonical=forged))
        report = verify(clinic.ledger)
        assert not report.ok
        assert report.problems[0].seq == target["seq"]
        assert "leaf hash" in str(report.problems[0])

    def test_edited_copied_column_caught_by_deep_verify_only(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        seq = entries_of(clinic.ledger)[-1]["seq"]
        self._drop_triggers(clinic.ledger)
        with clinic.ledger.engine.begin() as c:
            c.execute(sa.update(movements_t).where(movements_t.c.registrant == DEA, movements_t.c.seq == seq,
                                                   movements_t.c.line == 0).values(ml=Decimal("2.00")))
        assert verify(clinic.ledger).ok  # the fast pass reads only bytes, hashes and links
        report = verify(clinic.ledger, deep=True)
        assert not report.ok and report.problems[0].seq == seq
        assert "movement" in str(report.problems[0])

    def test_edited_projection_caught_by_deep_verify(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic))
        with clinic.ledger.engine.begin() as c:
            c.exec_driver_sql("UPDATE vials SET ml_left = '3.00' WHERE vial_id = (SELECT min(vial_id) FROM vials)")
        report = verify(clinic.ledger, deep=True)
        assert not report.ok and "vials" in str(report.problems[0])

    def test_deleted_entry_caught(self, clinic):
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "A"))
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic, "B"))
        seq = entries_of(clinic.ledger)[-2]["seq"]
        self._drop_triggers(clinic.ledger)
        with clinic.ledger.engine.begin() as c:
            c.execute(sa.delete(movements_t).where(movements_t.c.seq == seq))
            c.execute(sa.delete(entries_t).where(entries_t.c.seq == seq))
        report = verify(clinic.ledger)
        assert not report.ok and report.problems[0].seq == seq and "missing" in str(report.problems[0])


class TestSQLite(LedgerContract):
    backend = "sqlite"


@pytest.mark.postgres
class TestPostgres(LedgerContract):
    backend = "postgresql"


def test_in_memory_sqlite_refused():
    with pytest.raises(InvalidInput):
        make_engine("sqlite://")


def test_migrate_is_idempotent(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(e)
    migrate(e)
    assert Ledger(e).dialect == "sqlite"
    e.dispose()


@pytest.mark.postgres
def test_postgres_registrants_do_not_block_each_other(tmp_path):
    """The advisory lock is per registrant: a writer holding A's lock does not stall B."""
    from ledger.storage.store import _advisory_key
    from tests.conftest import fresh_database_url

    gen = fresh_database_url("postgresql", tmp_path)
    url = next(gen)
    try:
        engine = make_engine(url)
        migrate(engine)
        lg = Ledger(engine)
        a, b = Clinic(lg, DEA), Clinic(lg, DEA2)
        result: dict[str, float] = {}
        with engine.connect() as holder, holder.begin():
            holder.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(DEA)})

            def write(clinic, name):
                services.receive_stock(lg, clinic.nurse, receipt(clinic, f"{name}-1"))
                result[name] = 1

            tb = threading.Thread(target=write, args=(b, "B"))
            ta = threading.Thread(target=write, args=(a, "A"))
            tb.start()
            ta.start()
            tb.join(timeout=20)
            assert result.get("B") == 1  # B committed while A's lock was held
            ta.join(timeout=1)
            assert "A" not in result  # A waits for its registrant's lock
        ta.join(timeout=20)
        assert result.get("A") == 1
        assert verify(lg, deep=True).ok
        lg.dispose()
    finally:
        next(gen, None)


@pytest.mark.parametrize("send_in", ["local offset", "UTC"])
def test_lot_expiry_is_checked_against_the_clinics_local_day(tmp_path, send_in):
    """20:00 in Austin on 30 November is 02:00 UTC on 1 December: a lot expiring on the 30th is
    still in date at the clinic, whichever offset the client writes the time in (the check once
    took the date in the sent offset, so the same receipt was refused when sent in UTC)."""
    import zoneinfo

    at = datetime(2026, 11, 30, 20, 0, tzinfo=zoneinfo.ZoneInfo("America/Chicago"))
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    migrate(engine)
    lg = Ledger(engine, clock=lambda: at + timedelta(minutes=5))  # a fixed "now": independent of the hour
    clinic = Clinic(lg)
    sent = at if send_in == "local offset" else at.astimezone(UTC)
    services.receive_stock(lg, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "INV-1", sent, (ReceivedLineInput(KETAMINE_50, 1, "L1", "2026-11-30"),)))
    with pytest.raises(InvalidInput) as exc:  # expired the day before, at the clinic
        services.receive_stock(lg, clinic.nurse, ReceiveStock(
            clinic.supplier_id, "INV-2", sent, (ReceivedLineInput(KETAMINE_50, 1, "L2", "2026-11-29"),)))
    assert exc.value.field == "lines[0].expiry"
    lg.dispose()
