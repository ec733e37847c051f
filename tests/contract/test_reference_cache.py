"""The reference-row cache (issue 22): a registrant's row, its policy, its suppliers and products
are kept across commands per registrant, keyed by the chain head they were read at.

What must hold: an entry that changes one of them is seen by the very next command, in this
process and in another; rows read at a head that was rolled back or replaced are never served;
and a command that only reads them does not go to the database for them again.
"""

from __future__ import annotations

import pytest

from ledger import services
from ledger.domain.commands import AddProduct, RecordSupplierRegistration
from ledger.domain.errors import Conflict, NotFound
from ledger.storage import store
from ledger.storage.store import Ledger, ReferenceCache, make_engine
from tests.conftest import DEA, Clinic
from tests.contract.test_ledger_contract import receipt

BOTH = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                               indirect=True)

#: A registration that no longer covers Schedule III: receipts from this supplier are refused.
NOT_SCHEDULE_III = RecordSupplierRegistration(supplier_id="", registration_expires_on="2031-06-30",
                                              schedules=("2", "2N"), authorized_trading_partner=True)


def _lose_schedule_iii(ledger: Ledger, clinic: Clinic) -> None:
    services.record_supplier_registration(ledger, clinic.admin, RecordSupplierRegistration(
        clinic.supplier_id, NOT_SCHEDULE_III.registration_expires_on, NOT_SCHEDULE_III.schedules,
        NOT_SCHEDULE_III.authorized_trading_partner))


@BOTH
def test_the_receipt_after_a_supplier_loses_schedule_iii_is_refused(ledger):
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))  # the supplier's row is now cached
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    _lose_schedule_iii(ledger, clinic)
    with pytest.raises(Conflict, match="(?i)schedule"):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-3"))


@BOTH
def test_a_change_recorded_by_another_process_is_seen(db_url, ledger):
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))  # cached here
    other = Ledger(make_engine(db_url))  # another server process: caches of its own
    try:
        _lose_schedule_iii(other, clinic)
    finally:
        other.dispose()
    with pytest.raises(Conflict, match="(?i)schedule"):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))


@BOTH
def test_a_product_added_after_a_refused_receipt_is_found(ledger):
    """A product refused as unknown is found once an entry adds it (absent products and
    suppliers are not cached; the registrant's absent policy is)."""
    clinic = Clinic(ledger)
    ndc = "00409-2051-05"
    with pytest.raises(NotFound, match="add the product first"):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1", ndc=ndc))
    services.add_product(ledger, clinic.admin, AddProduct(ndc, "Ketamine HCl injection 100 mg/mL", "7285", "III",
                                                          "injection", "100.00", "5.00"))
    res = services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1", ndc=ndc))
    assert res["entries"][0]["kind"] == "stock_received"


@BOTH
def test_a_receipt_reads_no_reference_row_the_last_command_read(ledger, monkeypatch):
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    statements: list[str] = []
    real = store.RawSql._cursor

    def spy(self, conn, text, params):
        statements.append(" ".join(text.split()))
        return real(self, conn, text, params)

    monkeypatch.setattr(store.RawSql, "_cursor", spy)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    reads = [s for s in statements if s.startswith("SELECT")]
    assert reads, "the spy saw no statement"
    for table in ReferenceCache.TABLES:
        assert not [s for s in reads if f" FROM {table} " in s + " "], (table, reads)


def test_rows_are_served_only_at_the_head_they_were_read_at():
    cache = ReferenceCache()
    key = ("suppliers", (DEA, "S1"))
    cache.put(DEA, (5, "a" * 64), key, {"name": "Gulf"})
    assert cache.get(DEA, (5, "a" * 64), key) == (True, {"name": "Gulf"})
    # the same position in another chain (a rolled-back entry, a restored database): not served
    assert cache.get(DEA, (5, "b" * 64), key) == (False, None)
    cache.carry_forward(DEA, (5, "b" * 64), (6, "c" * 64))  # not from the head the rows are at
    assert cache.get(DEA, (6, "c" * 64), key) == (False, None)
    cache.carry_forward(DEA, (5, "a" * 64), (6, "d" * 64))
    assert cache.get(DEA, (6, "d" * 64), key) == (True, {"name": "Gulf"})
    assert cache.get(DEA, (5, "a" * 64), key) == (False, None)
    got = cache.get(DEA, (6, "d" * 64), key)[1]
    got["name"] = "changed by a caller"  # a copy: the cached row is not changed
    assert cache.get(DEA, (6, "d" * 64), key) == (True, {"name": "Gulf"})
    cache.put("OTHER", (6, "d" * 64), key, None)  # known absent, per registrant
    assert cache.get("OTHER", (6, "d" * 64), key) == (True, None)


@BOTH
def test_made_up_ndcs_do_not_fill_the_cache(ledger):
    """A refused receipt's unknown NDC is not kept: made-up ones cannot crowd the real rows out."""
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    for i in range(5):
        with pytest.raises(NotFound):
            services.receive_stock(ledger, clinic.nurse, receipt(clinic, f"INV-X{i}", ndc=f"00409-205{i}-05"))
    cache = store.reference_cache(ledger.engine)
    held = cache._at[DEA][1]  # noqa: SLF001 - what the cache holds is the point
    assert not [k for k, row in held.items() if row is None and k[0] in ("products", "suppliers")], held.keys()
    assert ("products", (DEA, "67457000110")) in held


@BOTH
def test_a_row_edited_by_hand_is_read_afresh_after_the_periodic_check(db_url, ledger, tmp_path):
    """The cache holds a row edited (or repaired) behind the entries at most until the server's
    periodic chain check (``ChainGuard.verify_once``) clears it."""
    import sqlalchemy as sa

    from ledger.services.startup_check import ChainGuard
    from ledger.storage.log import attach
    from tests.integrity.conftest import settings_for

    log = attach(ledger, settings_for(tmp_path))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))  # the supplier's row is cached
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:  # a hand edit: the supplier no longer covers Schedule III
            c.execute(sa.text("UPDATE suppliers SET schedules = '2,2N' WHERE registrant = :r"), {"r": DEA})
    finally:
        engine.dispose()
    ChainGuard(ledger, log).verify_once()
    with pytest.raises(Conflict, match="(?i)schedule"):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))


@BOTH
def test_a_projection_that_reads_a_row_it_just_wrote_gets_the_new_row(ledger, monkeypatch):
    """While an entry's projections are applied the view is at no chain head, so a read there
    goes to the database. Served from the cache (the head before the entry), a projection that
    reads back a supplier it just changed would build on the old row. No projection does that
    today; this keeps it safe for the next one (review of issue 22)."""
    from ledger.domain import projections

    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))  # the supplier is cached now
    seen: list[dict | None] = []
    real_apply = projections.apply

    def apply_then_read_back(entry, view):
        real_apply(entry, view)
        if entry["kind"] == "supplier_registration_recorded":
            seen.append(view.get("suppliers", (DEA, entry["supplier_id"])))

    monkeypatch.setattr(projections, "apply", apply_then_read_back)
    _lose_schedule_iii(ledger, clinic)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0]["schedules"] == ",".join(NOT_SCHEDULE_III.schedules), "read the cached row, not the one written"
