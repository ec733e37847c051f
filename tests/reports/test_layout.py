"""The page-by-page layout engine: wrapping never overflows a column, table headers repeat on
every page, a row taller than a page continues, every page says "Page N of M"."""

from __future__ import annotations

import io

from pypdf import PdfReader
from reportlab.pdfbase.pdfmetrics import stringWidth

from reports import layout

FRAME = layout.Frame(title="Test log", registrant_name="Calm Waters", address="100 Harbor Way, Austin, TX 78701",
                     dea="AB1234563", period="2026-09-01 to 2026-09-30 (America/Chicago)",
                     generated="2026-10-01 09:00 CDT by csledger CLI (operator)",
                     state_lines=("Built from the ledger of AB1234563 at tree size 5.", "Merkle root: " + "ab" * 32),
                     qr_text="csledger-state/AB1234563\n5\n" + "ab" * 32 + "\n")


def test_wrap_fits_every_line_even_unbroken_words():
    text = "short words then " + "X" * 300 + " and V1-1, V1-2, V1-3"
    for width in (20.0, 55.0, 140.0):
        lines = layout.wrap(text, layout.FONT, layout.BODY_SIZE, width)
        assert all(stringWidth(s, layout.FONT, layout.BODY_SIZE) <= width for s in lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_long_table_paginates_with_repeated_headers():
    cols = [layout.Column("Row label", 20), layout.Column("Quantity", 10, "R"), layout.Column("Notes", 40)]
    rows = [[f"row-{i:05d}", f"{i}.00 mL", "a note that is long enough to wrap onto a second line " * (i % 3)]
            for i in range(1200)]
    pdf = layout.render(FRAME, [layout.Para("intro"), layout.Table(cols, rows, title="Rows")],
                        paper="letter", orientation="landscape")
    pages = [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]
    assert len(pages) > 10
    for n, text in enumerate(pages, start=1):
        assert f"Page {n} of {len(pages)}" in text
        assert "Row label" in text and "Quantity" in text  # header repeated
        assert "DEA registration AB1234563" in text and "Calm Waters" in text
        if n > 1:
            assert "Rows (continued)" in text
    everything = "\n".join(pages)
    assert all(f"row-{i:05d}" in everything for i in range(1200))


def test_row_taller_than_a_page_continues_on_the_next():
    ids = ", ".join(f"V{i}-{k}" for i in range(40) for k in range(1, 31))  # 1,200 identities
    table = layout.Table([layout.Column("Receipt", 10), layout.Column("Container identities", 12)],
                         [["GMS-1", ids], ["GMS-2", "V99-1"]], title="Receipts")
    pdf = layout.render(FRAME, [table], paper="a4", orientation="portrait")
    pages = [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]
    assert len(pages) >= 2
    flat = " ".join(" ".join(pages).split())
    assert "V0-1," in flat and "V39-30" in flat and "V99-1" in flat
