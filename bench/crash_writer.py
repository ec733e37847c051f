"""A writer process for crash tests: appends receipts one command at a time and prints each
invoice number only after its command committed (flushed), so the parent knows exactly what
was acknowledged before it sends SIGKILL.

usage: python bench/crash_writer.py DB_URL DEA PREFIX NURSE_ID SUPPLIER_ID NDC
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.domain.principal import AuthMethod, Principal
from ledger.storage.store import Ledger


def main() -> None:
    url, dea, prefix, nurse_id, supplier_id, ndc = sys.argv[1:7]
    ledger = Ledger.open(url)
    nurse = Principal(dea, nurse_id, "", AuthMethod.PASSWORD)
    i = 0
    while True:
        inv = f"{prefix}-{i:06d}"
        cmd = ReceiveStock(supplier_id, inv, datetime.now(UTC) - timedelta(minutes=1),
                           (ReceivedLineInput(ndc, 1, "LOT-CRASH", "2030-01-31"),))
        services.receive_stock(ledger, nurse, cmd, idempotency_key=inv)
        sys.stdout.write(inv + "\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main()
