"""Where the pages meet modules other issues are landing (clinical events: issue 3; alerts:
issue 7). Each looks for the module and answers ``None`` when it is not there, so a page can say
so instead of failing; when it is there the page calls it exactly as the API would."""

from __future__ import annotations

import importlib
from typing import Any

from ledger.storage.store import Ledger


def module(name: str):
    try:
        return importlib.import_module(f"ledger.services.{name}")
    except ModuleNotFoundError:
        return None


def alert_service():
    svc = module("alerts")
    return svc if svc is not None and hasattr(svc, "list_alerts") and hasattr(svc, "resolve_alert") else None


def open_alerts(ledger: Ledger, dea: str) -> list[dict[str, Any]] | None:
    svc = alert_service()
    if svc is None:
        return None
    return svc.list_alerts(ledger, dea, status="open")
