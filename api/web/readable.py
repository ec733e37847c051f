"""Signed statements and entry kinds in plain words, for the pages that show what a person signed
("My signatures", and the passkey prompt of a witnessed form), and what a form recorded, in the
clinic's words and local time (issue 21: the infusion page's confirmation)."""

from __future__ import annotations

import re
import zoneinfo
from datetime import date, datetime
from decimal import Decimal
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
    "dea_notice_sent": "Notice of theft or loss sent to DEA", "form_106_filed": "Form 106 filed",  # issue 20
}
MEANING_WORDS = {"performed": "did it", "witnessed": "witnessed", "approved": "approved", "counted": "counted",
                 "received": "received"}
METHOD_WORDS = {"password_key": "password key", "passkey": "passkey"}
#: Command names (the statement's ``type``) in plain words; others are split at their capitals.
COMMAND_WORDS = {"AdministerDose": "Record an infusion", "EnrolCredential": "Enrol a signing credential",
                 "SubmitCount": "Submit a count", "ReportTheftOrLoss": "Report theft or loss",
                 "RecordDeaNotice": "Record the notice sent to DEA", "RecordForm106Filing": "Record Form 106 filed"}
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


# --- results in the clinic's words (issue 21) ------------------------------------------------------


def short_name(name: str | None) -> str | None:
    """A patient's name as the confirmation says it: the first name's initial and the last name
    ("Pat Alvarez" -> "P. Alvarez"); a one-word name as it is."""
    if not name:
        return None
    parts = name.split()
    return f"{parts[0][0]}. {' '.join(parts[1:])}" if len(parts) > 1 else parts[0]


def clock_time(text: str, tz: zoneinfo.ZoneInfo, today: date | None = None) -> str:
    """An RFC 3339 time as the clinic says it: "14:12" today, "Dec 5 at 14:12" another day."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz)
    except (ValueError, AttributeError):
        return str(text)
    if today is not None and t.date() == today:
        return t.strftime("%H:%M")
    return f"{t.strftime('%b')} {t.day} at {t.strftime('%H:%M')}"


def _witness(entry: dict[str, Any]) -> str | None:
    return next((s.get("printed_name") for s in entry.get("signatures", []) if s.get("meaning") == "witnessed"), None)


def infusion_result(dose: dict[str, Any], waste: dict[str, Any] | None, *, patient: str | None,
                    vial_labels: dict[str, str], tz: zoneinfo.ZoneInfo, today: date) -> dict[str, Any]:
    """What the infusion page says after saving (issue 21), from the recorded entries (never
    from the form): the headline ("Infusion for P. Alvarez: 36.50 mg given, 13.50 mg wasted,
    witnessed by Pia Pharmacist at 14:12"), the order and draws, and, when not everything drawn
    was given or wasted, that the infusion stays unreconciled until its waste is recorded.

    ``patient`` is the name to show or None (a role that may not see names: the patient id).
    Fields read with ``get``: entries recorded before a field existed still read."""
    who = short_name(patient) or f"patient {dose.get('patient_id', '?')}"
    strength = Decimal(str((dose.get("draws") or [{}])[0].get("product", {}).get("strength_mg_per_ml", "0")))
    drawn, given = Decimal(str(dose.get("ml_drawn", "0"))), Decimal(str(dose.get("ml_given", "0")))
    wasted = Decimal(str(waste.get("ml", "0"))) if waste else Decimal("0")
    headline = f"Infusion for {who}: {dose.get('mg_given', '?')} mg given"
    if waste:
        headline += f", {waste.get('mg', '?')} mg wasted"
        witness = _witness(waste)
        if witness:
            headline += f", witnessed by {witness} at {clock_time(waste.get('occurred_at', ''), tz, today)}"
    headline += "."
    zone = ""
    try:
        zone = datetime.fromisoformat(str(dose.get("ended_at", "")).replace("Z", "+00:00")).astimezone(tz).strftime("%Z")
    except ValueError:
        pass
    order = (f"Ordered {dose.get('ordered_mg', '?')} mg ({dose.get('weight_kg', '?')} kg × "
             f"{dose.get('ordered_mg_per_kg', '?')} mg/kg)")
    prescriber = dose.get("prescriber_name")
    order += f" by {prescriber} (DEA {dose.get('prescriber_dea_number', '?')})" if prescriber else \
        f" by DEA {dose.get('prescriber_dea_number', '?')}"
    times = (f"started {clock_time(dose.get('started_at', ''), tz, today)}, "
             f"ended {clock_time(dose.get('ended_at', ''), tz, today)}{' ' + zone if zone else ''}")
    draws = "; ".join(f"{d.get('ml', '?')} mL from {vial_labels.get(d.get('vial_id', ''), d.get('vial_id', '?'))}"
                      for d in dose.get("draws") or [])
    left = drawn - given - wasted
    open_note = None
    if left > 0:
        open_note = (f"Not reconciled: {left} mL ({(left * strength).quantize(Decimal('0.01'))} mg) drawn was "
                     "neither given nor wasted. The infusion stays unreconciled until its waste is recorded "
                     "with a witness.")
    return {"headline": headline, "order": f"{order}; {times}.", "draws": f"Drawn: {draws}." if draws else "",
            "unreconciled": open_note, "late": dose.get("late_reason")}


def count_result(entry: dict[str, Any], tz: zoneinfo.ZoneInfo, today: date) -> dict[str, Any]:
    """What a submitted count says, in the clinic's words (issue 21), from its ``stock_counted``
    entry: who counted when, and per product what was counted against the book, each difference
    with its discrepancy (or within the open-vial tolerance, issue 20). Fields read with ``get``:
    counts recorded before a field existed still read."""
    counters = [s.get("printed_name", "?") for s in entry.get("signatures", []) if s.get("meaning") == "counted"]
    when = clock_time(entry.get("occurred_at", ""), tz, today)
    rows, opened = [], []
    for line in entry.get("lines") or []:
        name = (line.get("product") or {}).get("name", "?")
        counted, expected = line.get("counted_ml", "0.00"), line.get("expected_ml", "0.00")
        diff = Decimal(str(line.get("difference_ml", "0")))
        if Decimal(str(counted)) == 0 and Decimal(str(expected)) == 0 and diff == 0:
            continue  # nothing on the shelf and nothing on the book: not worth a line
        what = f"{line.get('sealed_containers', 0)} sealed"
        if line.get("sealed_packages"):
            what += f" (in {line['sealed_packages']} sealed cartons)"
        what += f", {line.get('open_containers', 0)} open ({line.get('open_ml', '0.00')} mL)"
        text = f"{name}: counted {what} = {counted} mL; the book held {expected} mL"
        if diff == 0:
            text += ": matches."
        elif line.get("discrepancy_id"):
            text += f": {'+' if diff > 0 else ''}{diff} mL, discrepancy {line['discrepancy_id']} opened."
            opened.append(line["discrepancy_id"])
        elif line.get("within_tolerance"):
            text += f": {'+' if diff > 0 else ''}{diff} mL, within the open-vial tolerance ({line.get('tolerance_ml')} mL)."
        else:
            text += f": {'+' if diff > 0 else ''}{diff} mL."
        rows.append(text)
    who = " and ".join(counters) if counters else "the counters"
    headline = f"Count by {who} at {when}: "
    if opened:
        headline += (f"{len(opened)} difference{'s' if len(opened) > 1 else ''} opened "
                     f"{'discrepancies' if len(opened) > 1 else 'a discrepancy'} for a manager who did not count.")
    else:
        headline += "everything counted matches the book."
    if entry.get("book_reads"):
        headline += " The counters read the book while the count was open: it was not blind."
    return {"headline": headline, "lines": rows or ["Nothing on the shelf and nothing on the book."]}


def entry_result(entry: dict[str, Any], tz: zoneinfo.ZoneInfo, today: date) -> dict[str, Any] | None:
    """The plain-words result of a form's entry for the page that shows it after saving, or None
    for a kind without one (the entry's fields are shown as they are)."""
    if entry.get("kind") == "stock_counted":
        return count_result(entry, tz, today)
    return None
