"""Beyond-use labels (issue 21): one 2 x 1 inch label (the common thermal label stock; 51 x 25
mm stock prints it at 99 %) for a vial at its first puncture or a bag or syringe when it is
prepared, drawn from ``ledger.services.labels.container_label``'s data alone.

The label carries the product and strength, the short name a person reads (``short_id``: the
pages' name of the vial, ``api.web.gs1.short_vial_labels``, which the interfaces put in the data;
a preparation's id ``P40``), a QR code holding exactly the full container id (so a scanner on the
infusion page picks that container), when it was first punctured or prepared and its beyond-use
date or time in the registrant's local time, and who did it, as the entry's signature names them.
A label is not a report: nothing is recomputed from it, so it carries no ledger state.
"""

from __future__ import annotations

import io
from typing import Any

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.units import inch
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from reports.fmt import local
from reports.layout import BOLD, FONT

#: 2 x 1 inch, landscape: 144 x 72 pt.
LABEL_SIZE = (2 * inch, 1 * inch)
EDGE = 3.0  # pt of unprinted edge (label printers do not print to the edge)
QR_SIDE = 48.0  # pt at most, quiet zone included (the widget draws one)


def _fit(text: str, font: str, size: float, width: float) -> str:
    """``text`` cut with an ellipsis to ``width`` (a label has no room to wrap a third line)."""
    if stringWidth(text, font, size) <= width:
        return text
    while text and stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def draw_qr(c: Canvas, text: str, x: float, y: float, side: float) -> None:
    """A QR code of ``text`` (a container id), ``side`` points square, at (x, y)."""
    # Level M: a label is handled and may be scuffed; the container id is short, so the code
    # stays at a small version with modules large enough for a handheld scanner.
    widget = QrCodeWidget(text, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    d = Drawing(side, side, transform=[side / (x1 - x0), 0, 0, side / (y1 - y0), 0, 0])
    d.add(widget)
    renderPDF.draw(d, c, x, y)


def label_lines(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, float]]]:
    """(product lines across the top, [(text, font, size)] beside the QR code): what is printed,
    from the data alone (the tests read these back from the PDF)."""
    tz = data["registrant"]["time_zone"]
    p = data["product"]
    by = data.get("by")
    who = f"{by['printed_name']} ({by['initials']})" if by else "not recorded (before the ledger)"
    opened = data["opened"]
    short = data.get("short_id") or data["container_id"]
    if data["kind"] == "preparation":
        top = [f"{p['name']}", f"{data['mg']} mg in {data['final_ml']} mL {data['container']}, {data['diluent']}"]
        side = [(short, BOLD, 9.0),
                (f"{data['concentration_mg_per_ml']} mg/mL · patient {data['patient_id']}", FONT, 5.8),
                (f"Prepared {local(opened['at'], tz)}", FONT, 5.8),
                ("BEYOND USE", BOLD, 6.2), (local(data["beyond_use_at"], tz), BOLD, 7.4),
                (f"By {who}", FONT, 5.8)]
        return top, side
    top = [f"{p['name']}", f"{p['strength_mg_per_ml']} mg/mL, {p['container_ml']} mL vial, NDC {p['ndc']}"]
    if "day" in opened:  # listed open by the initial inventory: the day, as it was recorded
        when = f"Punctured {opened['day'] or 'before the ledger'}{' (est.)' if opened.get('estimated') else ''}"
    else:
        when = f"Punctured {local(opened['at'], tz)}"
    side = [(short, BOLD, 9.0), (f"Lot {data['lot']} · exp {data['expiry']}", FONT, 5.8),
            (when, FONT, 5.8), ("BEYOND USE", BOLD, 6.2), (f"{data['beyond_use_date']} (end of day)", BOLD, 7.4),
            (f"By {who}", FONT, 5.8)]
    return top, side


def render_label(data: dict[str, Any]) -> bytes:
    """The label PDF (one 2 x 1 inch page) of ``container_label``'s data."""
    w, h = LABEL_SIZE
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=LABEL_SIZE, invariant=1, pageCompression=0)
    c.setTitle(f"Beyond-use label {data['container_id']}")
    c.setAuthor(f"csledger, {data['registrant']['name']} (DEA {data['registrant']['dea_number']})")
    c.setSubject(f"container {data['container_id']}")
    top, side = label_lines(data)
    y = h - EDGE - 6.4
    c.setFont(BOLD, 6.4)
    c.drawString(EDGE, y, _fit(top[0], BOLD, 6.4, w - 2 * EDGE))
    y -= 6.6
    c.setFont(FONT, 5.4)
    c.drawString(EDGE, y, _fit(top[1], FONT, 5.4, w - 2 * EDGE))
    qr_top = y - 1.0
    full_id = data["container_id"] not in (data.get("short_id") or data["container_id"])
    bottom = EDGE + (5.0 if full_id else 0.0)  # the whole id's line, when the short id is not all of it
    side_qr = min(QR_SIDE, qr_top - bottom)
    # The widget draws its own quiet zone (4 modules): it stands in for the left margin.
    draw_qr(c, data["container_id"], EDGE - 2.5, bottom, side_qr)
    x = EDGE + side_qr - 1.5
    avail = w - x - EDGE
    y = qr_top
    for i, (text, font, size) in enumerate(side):
        y -= size + 0.8
        if i == 0:  # the short id in the largest type that fits ("carton …00C001 · vial 08")
            while size > 6.0 and stringWidth(text, font, size) > avail:
                size -= 0.25
        c.setFont(font, size)
        c.drawString(x, y, _fit(text, font, size, avail))
    if full_id:  # the whole id in small type under the code, for when no scanner is at hand
        c.setFont(FONT, 4.4)
        c.drawString(EDGE, EDGE + 0.6, _fit(data["container_id"], FONT, 4.4, w - 2 * EDGE))
    c.showPage()
    c.save()
    return buf.getvalue()
