"""The patient access log (append-only): who read which patients' names and addresses, when.

A single read (``GET /patients/{id}``, the infusion form) writes one row per patient
(``ledger.services.patients.read_patient``). A report that decrypts many patients' names at once
(the administration log, and ``verify-report`` re-reading them) writes ONE row per report: the
reader, the report (kind, period, ledger tree size) and every patient it included (issue 16).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable

import sqlalchemy as sa

from ledger.storage.tables import PatientAccessRecord

access_t = PatientAccessRecord.__table__

#: ``patient_id`` of a report's row: the patients it included are in ``patient_ids``.
REPORT_PATIENT = "*"
#: The width of ``staff_id`` and ``action`` in the table.
ID_WIDTH = 64


def cli_reader() -> str:
    """Who reads from the command line: it has no login, so the operating-system user running it
    (``cli:<user>``), or its numeric uid when the system knows no name for it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (a bare container)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"[:ID_WIDTH]


def log_report_access(engine: sa.engine.Engine, registrant: str, reader: str, *, action: str, report: str,
                      patient_ids: Iterable[str], now: str) -> bool:
    """Append one row naming ``reader``, ``report`` and the ``patient_ids`` whose names and
    addresses it decrypted; nothing (False) when it decrypted none. Its own small transaction,
    committed before the names leave the process: a report whose reading cannot be logged is
    not handed out."""
    ids = sorted(set(patient_ids))
    if not ids:
        return False
    with engine.begin() as conn:
        conn.execute(access_t.insert().values(
            registrant=registrant, staff_id=reader[:ID_WIDTH], patient_id=REPORT_PATIENT, action=action[:ID_WIDTH],
            accessed_at=now, report=report[:200], patient_ids=json.dumps(ids)))
    return True
