"""DEA Form 106 (21 CFR 1301.76(b)), the rules the service, the alerts, the replay and the pages
share (issue 20): the notice methods, the contact's phone, the in-transit rule, and which notice
and filing entries close which report.

A registrant who discovers a theft or significant loss notifies the DEA field office in writing
within one business day, then files Form 106 (DEA accepts it only electronically) within 45 days.
A loss **in transit** is the supplier's to report (21 CFR 1301.74(c)): the clinic records the
shortage against the invoice and the supplier (the receipt's invoiced count), and keeps the
supplier's notice; it does not start its own Form 106 clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: How the written notice went to the DEA field office.
NOTICE_METHODS = ("email", "fax", "phone", "letter", "online")

#: The loss type that is the supplier's to report, not the clinic's.
IN_TRANSIT = "lost_in_transit"

IN_TRANSIT_RULE = "21 CFR 1301.74(c)"

IN_TRANSIT_REFUSAL = (
    f"a loss in transit is the supplier's to report ({IN_TRANSIT_RULE}): the supplier files Form 106 for "
    "what its carrier lost, and this clinic does not start its own Form 106 clock. Record the shortage against "
    "the invoice and the supplier instead: receive the shipment with the invoice's count (invoiced_containers "
    "or invoiced_packages) beside what arrived, and keep the supplier's notice with the receipt")

_PHONE = re.compile(r"[0-9 +().\-]+")


def phone_refusal(phone: str) -> str | None:
    """Why ``phone`` is not a telephone number (loosely: digits, spaces and + ( ) - . with 7 to
    20 digits), or None."""
    if not _PHONE.fullmatch(phone):
        return "a telephone number: digits, spaces and + ( ) - . only"
    digits = sum(c.isdigit() for c in phone)
    if not 7 <= digits <= 20:
        return f"a telephone number has 7 to 20 digits; this one has {digits}"
    return None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def transit_shortages(invoice: str, supplier: str, lines: Iterable[Any]) -> list[dict[str, Any]]:
    """The lines of a receipt where fewer arrived than the invoice says were shipped, each with
    the plain note the receipt's answer and page show. ``lines`` are ``ReceivedLine`` objects or
    decoded entry lines (the note is the same either way)."""
    out = []
    for i, ln in enumerate(lines):
        inv_p, got_p = _get(ln, "invoiced_packages"), _get(ln, "packages")
        inv, got = _get(ln, "invoiced_containers"), _get(ln, "containers")
        if inv_p is not None and got_p is not None and got_p < inv_p:
            short, unit = inv_p - got_p, "package"
        elif inv is not None and got is not None and got < inv:
            short, unit = inv - got, "container"
        else:
            continue
        out.append({"line": i, "short": short, "unit": unit, "invoice_number": invoice, "supplier": supplier,
                    "note": shortage_note(short, unit, invoice, supplier)})
    return out


def shortage_note(short: int, unit: str, invoice: str, supplier: str) -> str:
    """What the clinic is told about a shortage at receipt, in its words."""
    return (f"{short} {unit}{'' if short == 1 else 's'} short on invoice {invoice} from {supplier}: the supplier "
            f"reports a loss in transit ({IN_TRANSIT_RULE}); keep their notice")


def follow_ups(entries: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Mapping[str, Any]]]:
    """Report seq -> its ``dea_notice_sent`` ("notice") and ``form_106_filed`` ("filing")
    entries, as far as ``entries`` go."""
    out: dict[int, dict[str, Mapping[str, Any]]] = {}
    for e in entries:
        if e["kind"] == "dea_notice_sent":
            out.setdefault(e["loss_report_seq"], {}).setdefault("notice", e)
        elif e["kind"] == "form_106_filed":
            out.setdefault(e["loss_report_seq"], {}).setdefault("filing", e)
    return out


#: Alert keys a report's follow-up clears: (key prefix, the follow-up kinds that must all exist).
#: The theft/loss alert itself (its two deadlines) closes when both are recorded; each overdue
#: alert when its own one is.
CLEARED_BY = {
    "loss_reported": ("dea_notice_sent", "form_106_filed"),
    "dea_notice_overdue": ("dea_notice_sent",),
    "form_106_overdue": ("form_106_filed",),
}


def report_of_alert(alert_key: str) -> tuple[str, int] | None:
    """(prefix, report seq) of an alert a notice or filing clears, or None."""
    prefix, _, rest = alert_key.partition(":")
    if prefix in CLEARED_BY and rest.isdigit():
        return prefix, int(rest)
    return None
