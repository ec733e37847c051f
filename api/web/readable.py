"""Signed statements and entry kinds in plain words, for the pages that show what a person signed
("My signatures", and the passkey prompt of a witnessed form)."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Any

#: Entry kinds in plain words (others: the kind with spaces, capitalised).
KIND_WORDS = {
    "stock_received": "Stock received", "inventory_taken": "Inventory", "dose_administered": "Infusion",
    "dose_wasted": "Waste (infusion remainder)", "stock_counted": "Count", "discrepancy_resolved": "Discrepancy resolved",
    "stock_destroyed": "Destruction", "stock_transferred": "Transfer", "theft_or_loss_reported": "Theft or loss",
    "loss_adjusted": "Loss adjustment", "count_started": "Count started", "entry_corrected": "Correction",
    "staff_credential_enrolled": "Signing credential enrolled", "staff_credential_revoked": "Signing credential revoked",
    "report_key_certified": "Report signing key certified",
    "staff_enrolled": "Staff member enrolled", "role_granted": "Role granted", "role_revoked": "Role revoked",
    "patient_registered": "Patient registered", "breakage_recorded": "Breakage or spill",
}
MEANING_WORDS = {"performed": "did it", "witnessed": "witnessed", "approved": "approved", "counted": "counted",
                 "received": "received"}
METHOD_WORDS = {"password_key": "password key", "passkey": "passkey"}
#: Command names (the statement's ``type``) in plain words; others are split at their capitals.
COMMAND_WORDS = {"AdministerDose": "Record an infusion", "EnrolCredential": "Enrol a signing credential",
                 "SubmitCount": "Submit a count", "ReportTheftOrLoss": "Report theft or loss"}
_CAPS = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


def kind_words(kind: str) -> str:
    return KIND_WORDS.get(kind, kind.replace("_", " ").capitalize())


def method_words(method: str | None) -> str:
    """How a signature was made; an entry from before staff signatures names the sign-in only."""
    if method in METHOD_WORDS:
        return METHOD_WORDS[method]
    return f"sign-in only ({method or 'unknown'}), before signing keys"


def local_time(text: str, tz: zoneinfo.ZoneInfo) -> str:
    """An RFC 3339 time as the clinic's local time with its zone ("2026-12-07 09:40 CST")."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
    except (ValueError, AttributeError):
        return str(text)


def command_rows(command: dict[str, Any], tz: zoneinfo.ZoneInfo) -> list[tuple[str, str]]:
    """A command's fields as (label, value) rows, nested ones by path ("draws 1 vial id"), times
    in the clinic's zone. The command carries ids, never patient names."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix} {k.replace('_', ' ')}".strip(), x)
        elif isinstance(v, list):
            if not v:
                out.append((prefix, "none"))
            elif all(not isinstance(x, dict | list) for x in v):
                out.append((prefix, ", ".join(str(x) for x in v)))
            else:
                for i, x in enumerate(v):
                    walk(f"{prefix} {i + 1}", x)
        elif v is None or v == "":
            out.append((prefix, "—"))
        elif isinstance(v, str) and _TIME.match(v):
            out.append((prefix, local_time(v, tz)))
        else:
            out.append((prefix, str(v)))

    kind = command.get("type")
    if isinstance(kind, str):
        out.append(("command", COMMAND_WORDS.get(kind) or _CAPS.sub(" ", kind).capitalize()))
    for k, v in command.items():
        if k != "type":
            walk(k.replace("_", " "), v)
    return out
