"""Beyond-use labels and downtime paper as PDF bytes (issue 21), for every interface: the label
route of the API and of the pages, the downtime page and ``csledger reports paper-log`` (which
reads the database directly: the server may be down). The core reads the figures
(``ledger.services.labels``), the reports layer draws them (``reports.labels``, ``reports.paper``);
this puts in the vials' short names as the pages show them (``api.web.gs1.short_vial_labels``,
one helper for every screen and every sheet of paper).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from api.web.gs1 import short_vial_labels
from ledger.integrity.canonical import format_time
from ledger.services.labels import container_label, paper_log_data
from ledger.storage.store import Ledger

PaperForm = Literal["vial-log", "infusion-form"]


def label_pdf(ledger: Ledger, registrant: str, container_id: str) -> tuple[bytes, dict[str, Any]]:
    """The label PDF of one container and its data (NotFound, Conflict: see ``container_label``)."""
    from reports.labels import render_label

    data = container_label(ledger, registrant, container_id)
    if data["kind"] == "vial":
        data["short_id"] = short_vial_labels([{"vial_id": data["container_id"]}])[data["container_id"]]
    return render_label(data), data


def paper_pdf(ledger: Ledger, registrant: str, form: PaperForm, *, now: datetime,
              vial: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """A downtime paper form and its data: the per-vial log (every vial that may be drawn from,
    or ``vial``) or the infusion form; ``now`` is when it is printed."""
    from reports.paper import render_infusion_form, render_vial_log

    data = paper_log_data(ledger, registrant, vial)
    names = short_vial_labels(data["vials"])
    for v in data["vials"]:
        v["short_id"] = names[v["vial_id"]]
    printed = format_time(now)
    data["printed_at"] = printed
    pdf = render_vial_log(data, printed) if form == "vial-log" else render_infusion_form(data, printed)
    return pdf, data
