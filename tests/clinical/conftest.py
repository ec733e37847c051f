"""Fixtures for clinic operations: a clinic with a manager, a prescriber, a patient key, a
patient and stock on hand, on a fresh migrated database (SQLite or PostgreSQL)."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from ledger import services
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    DrawInput,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPatient,
    WasteInput,
)
from ledger.storage.patient_keys import PatientKeys
from tests.conftest import KETAMINE_50, Clinic, an_hour_ago

PRESCRIBER_DEA = "AB1234563"


class Ops(Clinic):
    """``Clinic`` plus a manager, a compliance officer, a prescriber, a patient key and a patient."""

    def __init__(self, ledger, **kw):
        super().__init__(ledger, **kw)
        self.manager = self.enroll("Mia Manager", "mia", "manager")
        self.manager2 = self.enroll("Max Manager", "max", "manager")
        self.compliance = self.enroll("Cora Compliance", "cora", "compliance_officer")
        self.prescriber = self.enroll("Dr. Dee Prescriber", "dee", "prescriber")
        self.keys = PatientKeys(secrets.token_bytes(32))
        self.patient_id = services.register_patient(ledger, self.nurse, RegisterPatient(
            "Pat Example", AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=self.keys)["patient_id"]

    def receive(self, containers: int = 4, ndc: str = KETAMINE_50, invoice: str | None = None, **line_kw) -> list[str]:
        res = services.receive_stock(self.ledger, self.nurse, ReceiveStock(
            supplier_id=self.supplier_id, invoice_number=invoice or f"INV-{secrets.token_hex(4)}",
            occurred_at=an_hour_ago() - timedelta(hours=1),
            lines=(ReceivedLineInput(ndc, containers, "LOT-7781", "2028-06-30", **line_kw),)))
        return res["vial_ids"]

    def dose(self, vial_id: str, drawn: str = "3.50", given: str = "3.50", waste: str | None = None,
             witness=None, at: datetime | None = None, **kw):
        at = at or an_hour_ago()
        cmd = AdministerDose(
            patient_id=kw.pop("patient_id", self.patient_id), prescriber_dea_number=PRESCRIBER_DEA,
            weight_kg="70.00", ordered_mg_per_kg="0.50", draws=(DrawInput(vial_id, drawn),), ml_given=given,
            started_at=at, ended_at=at + timedelta(minutes=40),
            waste=WasteInput(waste, "syringe into drug disposal container") if waste else None, **kw)
        return services.administer_dose(self.ledger, self.nurse, cmd, witness=witness)


@pytest.fixture
def ops(ledger) -> Ops:
    return Ops(ledger)


def key_b64() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def now() -> datetime:
    return datetime.now(UTC)
