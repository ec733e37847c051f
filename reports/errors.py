"""The one error a report raises for a request it cannot honour (unknown registrant, empty or
inverted period, nothing to report, a period before the first inventory, a damaged ledger)."""

from __future__ import annotations

from ledger.domain.errors import InvalidInput


class ReportError(InvalidInput):
    """A report cannot be built as asked; the message says why and what to do."""

    type = "report-error"
