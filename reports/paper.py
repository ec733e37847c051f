"""Downtime paper (issue 21): when the server is down or refuses appends, the clinic works on
paper. Two printable forms, prefilled with what was on hand, drawn from
``ledger.services.labels.paper_log_data``'s data alone:

- the **paper log per vial**: one page per vial that may be drawn from (open or sealed), with its
  id (and a QR code of it), product, lot, expiry, mL left on the book and beyond-use date, then
  ruled rows for each draw (time, patient id, mL drawn, given, wasted, who did it and who
  witnessed, signed by hand, and the mL left);
- the **infusion form**: a blank infusion record with the fields the infusion page asks, and the
  vials on hand to copy ids from.

Both print when they were printed and the last entry of the ledger, so whoever types them in
afterwards (as late entries) knows where paper began. They are blank forms, NOT ledger records
or signed reports: nothing on them is recomputed or verified, and each page says so.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from reportlab.lib.pagesizes import LETTER
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from reports.fmt import local
from reports.labels import draw_qr
from reports.layout import BOLD, FONT

MARGIN = 36.0
W, H = LETTER
NOT_A_RECORD = ("BLANK FORM, NOT A LEDGER RECORD: csledger did not sign this page and checks nothing written on "
                "it. Use it only while csledger is down or refuses entries. When it is back, enter every line "
                "(a late entry when more than the policy's limit has passed, naming this sheet as the reason), "
                "and file this sheet with the records.")
LOG_COLUMNS = (("Date and time", 74), ("Patient id", 58), ("mL drawn", 46), ("mL given", 46), ("mL wasted", 46),
               ("Performed by (sign)", 92), ("Witness (sign)", 92), ("mL left", 86))
LOG_ROWS = 18
ROW_H = 24.0


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    out, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if stringWidth(trial, font, size) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
    return [*out, line] if line else out


def _fit(text: str, font: str, size: float, width: float) -> str:
    if stringWidth(text, font, size) <= width:
        return text
    while text and stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def printed_line(data: dict[str, Any], printed_at: str) -> str:
    """When it was printed and where paper begins (the last entry of the ledger then)."""
    tz = data["registrant"]["time_zone"]
    last = (f"last ledger entry #{data['last_seq']} (tree size {data['tree_size']})" if data["last_seq"] is not None
            else "the ledger has no entries")
    return f"Printed {local(printed_at, tz)}; {last}: paper begins after it."


def _header(c: Canvas, title: str, data: dict[str, Any], printed_at: str, page: int, pages: int) -> float:
    """Title, registrant, printed time and last entry, the not-a-record notice; returns the y below."""
    reg = data["registrant"]
    y = H - MARGIN - 14
    c.setFont(BOLD, 14)
    c.drawString(MARGIN, y, title)
    c.setFont(FONT, 8)
    c.drawRightString(W - MARGIN, y + 4, f"Page {page} of {pages}")
    y -= 13
    c.setFont(FONT, 9)
    c.drawString(MARGIN, y, f"{reg['name']} · DEA {reg['dea_number']} · times in {reg['time_zone']}")
    y -= 11
    c.setFont(BOLD, 9)
    c.drawString(MARGIN, y, printed_line(data, printed_at))
    lines = _wrap(NOT_A_RECORD, BOLD, 7.6, W - 2 * MARGIN - 12)
    box_h = 9.2 * len(lines) + 8
    y -= 6 + box_h
    c.setFillGray(0.9)
    c.rect(MARGIN, y, W - 2 * MARGIN, box_h, stroke=1, fill=1)
    c.setFillGray(0)
    c.setFont(BOLD, 7.6)
    ty = y + box_h - 11
    for ln in lines:
        c.drawString(MARGIN + 6, ty, ln)
        ty -= 9.2
    return y - 16


def _footer(c: Canvas, text: str) -> None:
    c.setFont(FONT, 7)
    c.drawString(MARGIN, MARGIN - 14, text)


def _grid(c: Canvas, columns: Sequence[tuple[str, float]], top: float, rows: list[list[str]], row_h: float,
          *, size: float = 8.0) -> float:
    """A ruled table: a grey header row, then ``rows`` (blank strings for blank cells)."""
    x0 = MARGIN
    width = sum(w for _, w in columns)
    head_h = 14.0
    c.setFillGray(0.85)
    c.rect(x0, top - head_h, width, head_h, stroke=1, fill=1)
    c.setFillGray(0)
    c.setFont(BOLD, 7.2)
    x = x0
    for name, w in columns:
        c.drawString(x + 2.5, top - head_h + 4.2, _fit(name, BOLD, 7.2, w - 5))
        x += w
    y = top - head_h
    for row in rows:
        c.rect(x0, y - row_h, width, row_h, stroke=1, fill=0)
        x = x0
        for (_, w), cell in zip(columns, row, strict=True):
            c.line(x, y, x, y - row_h)
            if cell:
                # a figure shrinks before it is cut (a long lot or GS1 id stays whole where it can)
                fs = size
                while fs > 5.0 and stringWidth(cell, FONT, fs) > w - 5:
                    fs -= 0.25
                c.setFont(FONT, fs)
                c.drawString(x + 2.5, y - row_h / 2 - size / 3, _fit(cell, FONT, fs, w - 5))
            x += w
        c.line(x, y, x, y - row_h)
        y -= row_h
    return y


def vial_fields(v: dict[str, Any], beyond_use_days: int) -> list[tuple[str, str]]:
    """The prefilled (label, value) pairs of one vial's log (the tests compare them to the book)."""
    if v["beyond_use_date"]:
        bud = v["beyond_use_date"]
    else:
        bud = f"sealed: at first puncture write the day + {beyond_use_days} days here: ______________"
    return [("Product", v["name"]), ("NDC", v["ndc"]),
            ("Strength", f"{v['strength_mg_per_ml']} mg/mL, {v['container_ml']} mL container"),
            ("Lot", v["lot"]), ("Expiry", v["expiry"]), ("State when printed", v["state"]),
            ("mL left on the book", f"{v['ml_left']} mL"), ("Beyond-use date", bud)]


def _vial_page(c: Canvas, data: dict[str, Any], v: dict[str, Any], printed_at: str, page: int, pages: int) -> None:
    y = _header(c, "Downtime paper log: one vial", data, printed_at, page, pages)
    qr = 84.0
    draw_qr(c, v["vial_id"], W - MARGIN - qr + 6, y - qr + 6, qr)
    c.setFont(BOLD, 16)
    name = v.get("short_id") or f"vial {v['vial_id']}"  # the pages' short name ("carton …00C001 · vial 08")
    c.drawString(MARGIN, y - 14, _fit(name[:1].upper() + name[1:], BOLD, 16, W - 2 * MARGIN - qr))
    c.setFont(FONT, 8)
    c.drawString(MARGIN, y - 25, f"Full id (also in the QR code): {v['vial_id']}")
    fy = y - 39
    for label, value in vial_fields(v, data["beyond_use_days"]):
        c.setFont(BOLD, 9)
        c.drawString(MARGIN, fy, label)
        c.setFont(FONT, 9)
        c.drawString(MARGIN + 110, fy, _fit(value, FONT, 9, W - 2 * MARGIN - 110 - qr))
        fy -= 11.5
    c.setFont(FONT, 7.5)
    c.drawString(MARGIN, fy - 2, "One row per draw. mL left = the row above's mL left minus mL drawn. The performer and "
                                 "the witness of any waste sign by hand.")
    rows = [["from csledger", "", "", "", "", "", "", f"{v['ml_left']} mL"]]
    rows += [[""] * len(LOG_COLUMNS) for _ in range(LOG_ROWS)]
    _grid(c, LOG_COLUMNS, fy - 10, rows, ROW_H)
    _footer(c, "Entered into csledger by ______________________ on ______________ as entries #________  ·  "
               "csledger downtime form, not a signed report")


def render_vial_log(data: dict[str, Any], printed_at: str) -> bytes:
    """The paper log: one page per vial of ``paper_log_data`` (one page saying there are none
    when no vial may be drawn from). ``printed_at`` is UTC text (``format_time``)."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=LETTER, invariant=1)
    c.setTitle(f"Downtime paper log per vial, {data['registrant']['dea_number']}")
    c.setSubject("csledger downtime form (blank form, not a ledger record)")
    vials = data["vials"]
    if not vials:
        y = _header(c, "Downtime paper log: one vial", data, printed_at, 1, 1)
        c.setFont(FONT, 10)
        c.drawString(MARGIN, y - 14, "No vial on hand may be drawn from (none open or sealed out of a carton).")
        c.showPage()
    for i, v in enumerate(vials):
        _vial_page(c, data, v, printed_at, i + 1, len(vials))
        c.showPage()
    c.save()
    return buf.getvalue()


INFUSION_FIELDS = (
    ("Patient and order", (("Patient id", 1), ("Prescriber name", 1), ("Prescriber DEA number", 1), ("Weight (kg)", 1),
                           ("Ordered dose (mg/kg)", 1), ("Ordered mg (weight x mg/kg)", 1))),
    ("Preparation (a bag or syringe; leave empty for a direct dose)",
     (("Container: bag / syringe", 1), ("Diluent", 1), ("Diluent mL", 1), ("Final mL", 1),
      ("Preparation started", 1), ("Beyond use (started + 4 h)", 1))),
)
DRAW_COLUMNS = (("Vial id (copy from the table below)", 196), ("mL drawn", 70), ("First puncture? yes/no", 110),
                ("Beyond-use date written on it", 164))
GIVEN_FIELDS = (("mL given (mL infused, for a bag)", 1), ("mL wasted (the remainder)", 1), ("How it was wasted", 1),
                ("Infusion started", 1), ("Infusion ended", 1), ("Reason for a late entry", 1))
SIGN_FIELDS = (("Performed by (print and sign)", 1), ("Witness of the waste (print and sign)", 1))
ON_HAND_COLUMNS = (("Vial", 150), ("Product", 112), ("Lot", 80), ("Expiry", 50), ("State", 40), ("mL left", 40),
                   ("Beyond-use date", 68))


def _blanks(c: Canvas, y: float, title: str, fields: Sequence[tuple[str, int]]) -> float:
    """A titled group of labelled blank lines, two to a row."""
    c.setFont(BOLD, 10)
    c.drawString(MARGIN, y, title)
    y -= 17
    col_w = (W - 2 * MARGIN) / 2
    for i, (label, _) in enumerate(fields):
        x = MARGIN + (i % 2) * col_w
        c.setFont(FONT, 8.5)
        c.drawString(x, y, label)
        c.line(x + stringWidth(label, FONT, 8.5) + 4, y - 1.5, x + col_w - 10, y - 1.5)
        if i % 2 == 1 or i == len(fields) - 1:
            y -= 19
    return y - 4


def on_hand_rows(data: dict[str, Any]) -> list[list[str]]:
    """The vials-on-hand table's rows (the tests compare them to the book)."""
    return [[v["vial_id"], v["name"], v["lot"], v["expiry"], v["state"], v["ml_left"], v["beyond_use_date"] or "—"]
            for v in data["vials"]]


def render_infusion_form(data: dict[str, Any], printed_at: str) -> bytes:
    """The blank infusion record, then the vials on hand (as many pages as they take)."""
    rows = on_hand_rows(data)
    first, per_page = 14, 34  # rows of the on-hand table on page 1 and on each page after it
    pages = 1 + max(0, -(-(len(rows) - first) // per_page))
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=LETTER, invariant=1)
    c.setTitle(f"Downtime infusion form, {data['registrant']['dea_number']}")
    c.setSubject("csledger downtime form (blank form, not a ledger record)")
    y = _header(c, "Downtime infusion record", data, printed_at, 1, pages)
    for title, fields in INFUSION_FIELDS:
        y = _blanks(c, y, title, fields)
    c.setFont(BOLD, 10)
    c.drawString(MARGIN, y, "Vials drawn from")
    y = _grid(c, DRAW_COLUMNS, y - 6, [[""] * len(DRAW_COLUMNS) for _ in range(3)], 20.0) - 16
    y = _blanks(c, y, "Given and wasted", GIVEN_FIELDS)
    y = _blanks(c, y, "Signatures (by hand; csledger records them when this is entered)", SIGN_FIELDS)
    c.setFont(FONT, 8)
    c.drawString(MARGIN, y, "Entered into csledger by ______________________ on ______________ as entry #________")
    y -= 16

    def table(y: float, chunk: list[list[str]], title: str) -> None:
        c.setFont(BOLD, 10)
        c.drawString(MARGIN, y, title)
        _grid(c, ON_HAND_COLUMNS, y - 6, chunk or [["none", "", "", "", "", "", ""]], 14.0, size=7.0)

    table(y, rows[:first], f"Vials on hand when printed ({len(rows)}): copy the id and check the mL left")
    _footer(c, "csledger downtime infusion form, not a signed report")
    page, rest = 1, rows[first:]
    while rest:
        c.showPage()
        page += 1
        y = _header(c, "Downtime infusion record: vials on hand", data, printed_at, page, pages)
        table(y, rest[:per_page], "Vials on hand when printed (continued)")
        _footer(c, "csledger downtime infusion form, not a signed report")
        rest = rest[per_page:]
    c.showPage()
    c.save()
    return buf.getvalue()
