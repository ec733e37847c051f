"""A database writer's forged supplier row (issue 19 and 22): found by ``verify --deep`` even
after it is put back.

The receipt service checks the supplier's registration in the ``suppliers`` table, a projection
anyone with write access to the database can edit. The attack: give a supplier whose recorded
registration does not cover Schedule III the schedules it lacks, record a receipt, put the row
back. The projections then match the chain again, so only the receipt's own copy of the
registration, replayed against the chain's ``supplier_added`` / ``supplier_registration_recorded``
entries (rule ``supplier-registered``), shows it. A server process whose reference cache still
holds the forged row (``ReferenceCache``) makes no difference: every receipt it lets through is
named the same way.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import RecordSupplierRegistration
from ledger.domain.errors import Conflict
from ledger.services.verify import verify
from ledger.storage.store import Ledger, make_engine
from tests.conftest import BACKENDS, DEA, Clinic
from tests.contract.test_ledger_contract import receipt

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def _set_schedules(db_url: str, supplier_id: str, schedules: str) -> None:
    """The attacker: an UPDATE straight into the database, no command, no entry."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE suppliers SET schedules = :s WHERE registrant = :r AND supplier_id = :i"),
                      {"s": schedules, "r": DEA, "i": supplier_id})
    finally:
        engine.dispose()


def _problems(ledger: Ledger) -> str:
    report = verify(ledger, deep=True)
    assert not report.ok
    return " ".join(str(p) for p in report.problems)


def test_a_receipt_let_in_by_a_forged_row_is_named_after_the_row_is_put_back(db_url, ledger):
    clinic = Clinic(ledger)
    services.record_supplier_registration(ledger, clinic.admin, RecordSupplierRegistration(
        clinic.supplier_id, "2031-06-30", ("2", "2N"), True))
    with pytest.raises(Conflict, match="not Schedule III"):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    assert verify(ledger, deep=True).ok

    _set_schedules(db_url, clinic.supplier_id, "2,2N,3,3N")
    server = Ledger(make_engine(db_url))  # a server process that reads the forged row
    try:
        forged = services.receive_stock(server, clinic.nurse, receipt(clinic, "INV-1"))["entries"][0]["seq"]
        _set_schedules(db_url, clinic.supplier_id, "2,2N")  # put back: the projections match again
        try:  # the server's cache may still hold the forged row; either way it is found below
            services.receive_stock(server, clinic.nurse, receipt(clinic, "INV-2"))
        except Conflict:
            pass
    finally:
        server.dispose()

    text = _problems(ledger)
    assert "supplier-registered" in text and "3N" in text, text
    assert f"{forged}" in text, text


def test_a_receipt_copying_another_registration_than_the_chain_recorded_is_named(db_url, ledger):
    """The receipt's copy must be the registration recorded at that seq, not merely one that
    allows the receipt: a forged row with a later expiry is caught even though III is covered."""
    clinic = Clinic(ledger)
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE suppliers SET registration_expires_on = :d WHERE registrant = :r"),
                      {"d": "2039-12-31", "r": DEA})
    finally:
        engine.dispose()
    server = Ledger(make_engine(db_url))
    try:
        services.receive_stock(server, clinic.nurse, receipt(clinic, "INV-1"))
    finally:
        server.dispose()
    text = _problems(ledger)
    assert "supplier-registered" in text and "2039-12-31" in text, text


def test_a_receipt_of_a_product_forged_behind_the_entries_is_named(db_url, ledger):
    """The same for the ``products`` row: a strength edited for one receipt and put back."""
    clinic = Clinic(ledger)
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE products SET strength_mg_per_ml = :s WHERE registrant = :r"), {"s": "5.00", "r": DEA})
        server = Ledger(make_engine(db_url))
        try:
            seq = services.receive_stock(server, clinic.nurse, receipt(clinic, "INV-1"))["entries"][0]["seq"]
        finally:
            server.dispose()
        with engine.begin() as c:
            c.execute(sa.text("UPDATE products SET strength_mg_per_ml = :s WHERE registrant = :r AND ndc_key = :k"),
                      {"s": "50.00", "r": DEA, "k": "67457000110"})
            c.execute(sa.text("UPDATE products SET strength_mg_per_ml = :s WHERE registrant = :r AND ndc_key <> :k"),
                      {"s": "10.00", "r": DEA, "k": "67457000110"})
    finally:
        engine.dispose()
    text = _problems(ledger)
    assert "product-as-added" in text and f"{seq}" in text, text
