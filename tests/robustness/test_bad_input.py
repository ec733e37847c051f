"""Fuzzed bad input at the service layer: every refusal is a LedgerError naming a field (never
a crash or a driver error), and a refused command writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    ReceivedLineInput,
    ReceiveStock,
)
from ledger.domain.errors import LedgerError
from tests.conftest import KETAMINE_50, SUPPLIER_REGISTRATION, entry_count

QUANTITY_TEXT = st.one_of(
    st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "-0", "-0.00", "1e309", "1,5", "1.5.5", "10^20",
                     "100000000000000000000", "0.001", "10.005", " ", "", "٣", "１０", "10 mL", "+-1", "0x10"]),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.none(),
)
IDENTIFIER = st.one_of(st.text(max_size=20), st.sampled_from(["AB1234564", "АB1234563", "AB12345６3", "x" * 100_000]))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(strength=QUANTITY_TEXT, container=QUANTITY_TEXT, ndc=IDENTIFIER)
def test_fuzzed_product(clinic, strength, container, ndc):
    before = entry_count(clinic.ledger)
    try:
        services.add_product(clinic.ledger, clinic.admin,
                             AddProduct(ndc, "Ketamine", "7285", "III", "injection", strength, container))
    except LedgerError as exc:
        assert exc.field and exc.reason
        assert entry_count(clinic.ledger) == before
    else:
        assert entry_count(clinic.ledger) == before + 1


@FUZZ
@given(dea=IDENTIFIER, state=st.text(max_size=4), zipc=st.text(max_size=12))
def test_fuzzed_supplier(clinic, dea, state, zipc):
    before = entry_count(clinic.ledger)
    try:
        services.add_supplier(clinic.ledger, clinic.admin, AddSupplier("S", AddressInput("1 A St", "Austin", state, zipc), dea,
                                                                               **SUPPLIER_REGISTRATION))
    except LedgerError as exc:
        assert exc.field
        assert entry_count(clinic.ledger) == before


@FUZZ
@given(
    containers=st.one_of(st.integers(min_value=-5, max_value=5000), st.text(max_size=6), st.none(), st.floats()),
    expiry=st.one_of(st.text(max_size=12), st.sampled_from(["2028-02-30", "0001-01-01", "9999-12-31", "2028-6-1"])),
    occurred=st.one_of(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    ),
    invoice=st.text(max_size=80),
)
def test_fuzzed_receipt(clinic, containers, expiry, occurred, invoice):
    before = entry_count(clinic.ledger)
    cmd = ReceiveStock(clinic.supplier_id, invoice, occurred, (ReceivedLineInput(KETAMINE_50, containers, "LOT", expiry),))
    try:
        services.receive_stock(clinic.ledger, clinic.nurse, cmd)
    except LedgerError as exc:
        assert exc.field, exc
        assert entry_count(clinic.ledger) == before
    else:
        assert entry_count(clinic.ledger) == before + 1
        assert occurred.tzinfo is not None and occurred <= datetime.now(UTC) + timedelta(minutes=5)


@pytest.mark.parametrize("key", ["", "x" * 129, "bad\nkey"])
def test_bad_idempotency_keys(clinic, key):
    from tests.contract.test_ledger_contract import receipt

    with pytest.raises(LedgerError) as exc:
        services.receive_stock(clinic.ledger, clinic.nurse, receipt(clinic), idempotency_key=key)
    assert exc.value.field == "idempotency_key"
