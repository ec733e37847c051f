"""A small page-by-page layout engine on the ReportLab canvas.

Why not Platypus ``LongTable``: ReportLab splits one huge table across pages in superlinear time
(docs/architecture.md: 27 s for 20,000 rows against 6.6 s as a table per page). Here every row is
wrapped once, placed on the current page or the next, and drawn: cost is linear in the rows.
It also gives "page N of M" without rendering twice: pass 1 paginates (measures only), pass 2
draws with M known.

What every page carries (the frame): the report title, registrant name, address and DEA number,
the period, when and by whom the report was made, the ledger state it was built from (tree size,
root, checkpoint key fingerprints) printed and as a QR code, and "Page N of M". Table headers
repeat on every page; text is wrapped to its column, never clipped: a word longer than its
column is broken by characters; a row taller than a page continues on the next.
"""

from __future__ import annotations

import io
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from reportlab import rl_config
from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.pagesizes import A4, LETTER, landscape
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfdoc import (
    PDFArray,
    PDFBase85Encode,
    PDFCrossReferenceTable,
    PDFDictionary,
    PDFFile,
    PDFIndirectObject,
    PDFInfo,
    PDFName,
    PDFStream,
    PDFString,
    PDFTrailer,
    PDFZCompress,
)
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from reports.rowfile import json_chunks

#: Name of the embedded file holding the report's data (figures, period, state) as JSON.
DATA_FILE = "csledger-report.json"
#: Custom document-information key holding the ledger state line, for tools that read only
#: the info dictionary.
STATE_KEY = "CSLedgerState"

MARGIN = 36.0
FONT = "Helvetica"
BOLD = "Helvetica-Bold"
MONO = "Courier"
BODY_SIZE = 7.5
LEADING = 9.0
PAD = 2.5
QR_SIZE = 62.0
GREY = (0.88, 0.88, 0.88)
FLAG = (1.0, 0.86, 0.86)

PAPERS = {"letter": LETTER, "a4": A4}


def page_size(paper: str, orientation: str) -> tuple[float, float]:
    size = PAPERS[paper]
    return landscape(size) if orientation == "landscape" else size


# --- blocks -----------------------------------------------------------------------------------


@dataclass
class Column:
    header: str
    weight: float
    align: str = "L"  # "L" text, "R" numbers (right-aligned, with their unit)
    mono: bool = False


class LazyRows(Sequence[list[str]]):
    """A table's printed rows, each made from its source row when asked for (issue 22: the
    layout asks for a row while placing it and while drawing its page, so no report holds all
    its printed rows at once)."""

    def __init__(self, source: Sequence[Any], make: Callable[[Any], list[str]]):
        self._source, self._make = source, make

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> list[str]:  # type: ignore[override]
        return self._make(self._source[i])

    def __iter__(self) -> Iterator[list[str]]:
        return (self._make(r) for r in self._source)


@dataclass
class Table:
    """Rows of strings under repeated headers. ``strong`` rows (totals) print bold; ``flagged``
    rows are shaded (variance past the threshold, unreconciled, open)."""

    columns: list[Column]
    rows: Sequence[list[str]]
    title: str | None = None
    strong: frozenset[int] = frozenset()
    flagged: frozenset[int] = frozenset()


@dataclass
class Heading:
    text: str
    size: float = 10.5


@dataclass
class Para:
    text: str
    size: float = BODY_SIZE
    bold: bool = False


@dataclass
class Signatures:
    """Electronic signatures (printed name, time, meaning: 21 CFR 11.50) and blank lines for
    wet signatures, each with its meaning."""

    signed: list[tuple[str, str, str]] = field(default_factory=list)
    wet: list[str] = field(default_factory=list)
    title: str = "Signatures"


@dataclass
class Chart:
    drawing: Drawing
    title: str | None = None


@dataclass
class PageBreak:
    pass


Block = Table | Heading | Para | Signatures | Chart | PageBreak


@dataclass(frozen=True)
class Frame:
    """What every page repeats."""

    title: str
    registrant_name: str
    address: str
    dea: str
    period: str
    generated: str  # "2026-11-25 16:34 CST by csledger CLI (operator)"
    state_lines: tuple[str, ...]
    qr_text: str


# --- text measurement ---------------------------------------------------------------------------


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Lines of ``text`` that each fit ``width``; words too long are broken by characters."""
    out: list[str] = []
    for para in str(text).split("\n"):
        if stringWidth(para, font, size) <= width:
            out.append(para)
            continue
        for line in simpleSplit(para, font, size, width) or [""]:
            while stringWidth(line, font, size) > width and len(line) > 1:
                # binary search the longest prefix that fits
                lo, hi = 1, len(line)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if stringWidth(line[:mid], font, size) <= width:
                        lo = mid
                    else:
                        hi = mid - 1
                out.append(line[:lo])
                line = line[lo:]
            out.append(line)
    return out or [""]


# --- pagination ----------------------------------------------------------------------------------


@dataclass
class _Geometry:
    width: float
    height: float
    header_h: float
    footer_h: float

    @property
    def body_top(self) -> float:
        return self.height - MARGIN - self.header_h

    @property
    def body_bottom(self) -> float:
        return MARGIN + self.footer_h

    @property
    def body_w(self) -> float:
        return self.width - 2 * MARGIN


class _Laid:
    """A table with column widths and its rows wrapped (done once, in pass 1)."""

    def __init__(self, table: Table, body_w: float):
        self.table = table
        total = sum(c.weight for c in table.columns)
        self.widths = [body_w * c.weight / total for c in table.columns]
        self.header = [wrap(c.header, BOLD, BODY_SIZE, w - 2 * PAD) for c, w in zip(table.columns, self.widths, strict=True)]
        self.header_h = max(len(h) for h in self.header) * LEADING + 2 * PAD

    def row(self, i: int) -> list[list[str]]:
        font = BOLD if i in self.table.strong else FONT
        out = []
        for c, w, cell in zip(self.table.columns, self.widths, self.table.rows[i], strict=True):
            out.append(wrap(cell, MONO if c.mono else font, BODY_SIZE, w - 2 * PAD))
        return out


class _Page:
    def __init__(self) -> None:
        self.ops: list[tuple] = []


class _Paginator:
    """Places blocks page by page. Each finished page goes to ``done`` (page number, page) and is
    then dropped: ``render`` lays the report out twice, once to count the pages and once to draw
    each page as it is finished, so no more than one page of laid-out rows is ever held
    (issue 22). The layout is a pure function of the blocks, so both passes agree."""

    def __init__(self, geo: _Geometry, done: Callable[[int, _Page], None] | None = None):
        self.geo = geo
        self.done = done
        self.count = 0
        self.page: _Page | None = None
        self.new_page()

    def new_page(self) -> None:
        if self.page is not None and self.done is not None:
            self.done(self.count, self.page)
        self.page = _Page()
        self.count += 1
        self.y = self.geo.body_top

    def finish(self) -> None:
        """Hand over the last page."""
        if self.page is not None and self.done is not None:
            self.done(self.count, self.page)
        self.page = None

    @property
    def room(self) -> float:
        return self.y - self.geo.body_bottom

    def ensure(self, h: float) -> None:
        if h > self.room and self.y < self.geo.body_top:
            self.new_page()

    def add(self, op: tuple, h: float) -> None:
        self.page.ops.append((op, self.y))  # type: ignore[union-attr]
        self.y -= h

    def place(self, block: Block) -> None:
        g = self.geo
        if isinstance(block, PageBreak):
            if self.y < g.body_top:
                self.new_page()
        elif isinstance(block, Heading):
            lines = wrap(block.text, BOLD, block.size, g.body_w)
            h = len(lines) * block.size * 1.3 + 4
            self.ensure(h + 3 * LEADING)  # keep a heading with what follows
            self.add(("lines", lines, BOLD, block.size, block.size * 1.3), h)
        elif isinstance(block, Para):
            font = BOLD if block.bold else FONT
            lines = wrap(block.text, font, block.size, g.body_w)
            lead = block.size * 1.25
            i = 0
            while i < len(lines):
                fit = max(1, int((self.room - 2) // lead))
                chunk = lines[i:i + fit]
                self.add(("lines", chunk, font, block.size, lead), len(chunk) * lead + 2)
                i += len(chunk)
                if i < len(lines):
                    self.new_page()
        elif isinstance(block, Signatures):
            h = 14 + len(block.signed) * (LEADING + 3) + len(block.wet) * 30 + 6
            self.ensure(h)
            self.add(("signatures", block), h)
        elif isinstance(block, Chart):
            h = block.drawing.height + (14 if block.title else 0) + 6
            self.ensure(h)
            self.add(("chart", block), h)
        elif isinstance(block, Table):
            self.place_table(block)
        else:  # pragma: no cover
            raise TypeError(type(block))

    def place_table(self, table: Table) -> None:
        laid = _Laid(table, self.geo.body_w)
        title_h = 13.0 if table.title else 0.0
        first = laid.row(0) if table.rows else [[""]]
        first_h = max(len(c) for c in first) * LEADING + 2 * PAD
        self.ensure(title_h + laid.header_h + min(first_h, 3 * LEADING + 2 * PAD))
        if table.title:
            self.add(("lines", [table.title], BOLD, 8.5, 11.0), title_h)
        self.add(("thead", laid), laid.header_h)
        for i in range(len(table.rows)):
            cells = first if i == 0 else laid.row(i)
            while True:
                n = max(len(c) for c in cells)
                h = n * LEADING + 2 * PAD
                if h <= self.room:
                    self.add(("row", laid, i, cells, n), h)
                    break
                fit = int((self.room - 2 * PAD) // LEADING)
                full_page = self.geo.body_top - self.geo.body_bottom - laid.header_h - 13.0
                if h <= full_page or fit < 2:
                    # the row fits on a fresh page: move it there, under a repeated header
                    self._continue_table(laid)
                    continue
                # a row taller than a page: print what fits, continue the rest
                self.add(("row", laid, i, [c[:fit] for c in cells], fit), fit * LEADING + 2 * PAD)
                cells = [c[fit:] or [""] for c in cells]
                self._continue_table(laid)

    def _continue_table(self, laid: _Laid) -> None:
        self.new_page()
        if laid.table.title:
            self.add(("lines", [laid.table.title + " (continued)"], BOLD, 8.5, 11.0), 13.0)
        self.add(("thead", laid), laid.header_h)


# --- drawing -----------------------------------------------------------------------------------


def _header_lines(frame: Frame, body_w: float) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    left_w, right_w = body_w * 0.56, body_w * 0.42
    left = [(t, BOLD, 12.0) for t in wrap(frame.title, BOLD, 12.0, left_w)]
    left += [(t, BOLD, 9.0) for t in wrap(frame.registrant_name, BOLD, 9.0, left_w)]
    left += [(t, FONT, 8.0) for t in wrap(frame.address, FONT, 8.0, left_w)]
    right = [(t, BOLD, 10.0) for t in wrap(f"DEA registration {frame.dea}", BOLD, 10.0, right_w)]
    right += [(t, FONT, 8.0) for t in wrap(f"Period: {frame.period}", FONT, 8.0, right_w)]
    right += [(t, FONT, 8.0) for t in wrap(f"Made {frame.generated}", FONT, 8.0, right_w)]
    return left, right


def _lines_h(lines: Sequence[tuple[str, str, float]]) -> float:
    return sum(s * 1.25 for _, _, s in lines)


def _draw_header(c: Canvas, frame: Frame, geo: _Geometry) -> None:
    left, right = _header_lines(frame, geo.body_w)
    top = geo.height - MARGIN
    y = top
    for text, font, size in left:
        y -= size * 1.25
        c.setFont(font, size)
        c.drawString(MARGIN, y + size * 0.25, text)
    y = top
    for text, font, size in right:
        y -= size * 1.25
        c.setFont(font, size)
        c.drawRightString(geo.width - MARGIN, y + size * 0.25, text)
    c.setLineWidth(0.8)
    line_y = top - geo.header_h + 5
    c.line(MARGIN, line_y, geo.width - MARGIN, line_y)


def _footer_text(frame: Frame, text_w: float) -> list[str]:
    out: list[str] = []
    for line in frame.state_lines:
        out.extend(wrap(line, FONT, 6.8, text_w))
    return out


def _draw_footer(c: Canvas, frame: Frame, geo: _Geometry, page: int, pages: int) -> None:
    c.setLineWidth(0.5)
    c.line(MARGIN, MARGIN + geo.footer_h - 4, geo.width - MARGIN, MARGIN + geo.footer_h - 4)
    c.saveState()
    c.translate(MARGIN, MARGIN)
    c.doForm("ledger_state_qr")
    c.restoreState()
    x = MARGIN + QR_SIZE + 8
    text_w = geo.body_w - QR_SIZE - 8 - 70
    y = MARGIN + geo.footer_h - 14
    c.setFont(FONT, 6.8)
    for line in _footer_text(frame, text_w):
        c.drawString(x, y, line)
        y -= 8.2
    c.setFont(BOLD, 8.5)
    c.drawRightString(geo.width - MARGIN, MARGIN + 2, f"Page {page} of {pages}")


def _draw_qr_form(c: Canvas, text: str) -> None:
    widget = QrCodeWidget(text, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    # Drawing coordinates are floats by nature (points on the page); no figure passes here.
    d = Drawing(QR_SIZE, QR_SIZE, transform=[QR_SIZE / (x1 - x0), 0, 0, QR_SIZE / (y1 - y0), 0, 0])
    d.add(widget)
    c.beginForm("ledger_state_qr")
    renderPDF.draw(d, c, 0, 0)
    c.endForm()


def _draw_op(c: Canvas, op: tuple, y: float, geo: _Geometry) -> None:
    kind = op[0]
    if kind == "lines":
        _, lines, font, size, lead = op
        c.setFont(font, size)
        for i, t in enumerate(lines):
            c.drawString(MARGIN, y - (i + 1) * lead + size * 0.25, t)
    elif kind == "thead":
        laid: _Laid = op[1]
        c.setFillColorRGB(*GREY)
        c.rect(MARGIN, y - laid.header_h, geo.body_w, laid.header_h, stroke=0, fill=1)
        c.setFillColorRGB(0, 0, 0)
        _draw_cells(c, laid, laid.header, y, BOLD, header=True)
    elif kind == "row":
        _, laid, i, cells, n = op
        h = n * LEADING + 2 * PAD
        if i in laid.table.flagged:
            c.setFillColorRGB(*FLAG)
            c.rect(MARGIN, y - h, geo.body_w, h, stroke=0, fill=1)
            c.setFillColorRGB(0, 0, 0)
        _draw_cells(c, laid, cells, y, BOLD if i in laid.table.strong else FONT, header=False)
        c.setStrokeColorRGB(0.7, 0.7, 0.7)
        c.setLineWidth(0.3)
        c.line(MARGIN, y - h, MARGIN + geo.body_w, y - h)
        c.setStrokeColorRGB(0, 0, 0)
    elif kind == "signatures":
        _draw_signatures(c, op[1], y, geo)
    elif kind == "chart":
        block: Chart = op[1]
        top = y
        if block.title:
            c.setFont(BOLD, 8.5)
            c.drawString(MARGIN, y - 10, block.title)
            top -= 14
        renderPDF.draw(block.drawing, c, MARGIN, top - block.drawing.height)


def _draw_cells(c: Canvas, laid: _Laid, cells: list[list[str]], y: float, font: str, *, header: bool) -> None:
    x = MARGIN
    for col, w, lines in zip(laid.table.columns, laid.widths, cells, strict=True):
        f = BOLD if header else (MONO if col.mono else font)
        c.setFont(f, BODY_SIZE)
        for k, t in enumerate(lines):
            ty = y - PAD - (k + 1) * LEADING + 2.2
            if col.align == "R":
                c.drawRightString(x + w - PAD, ty, t)
            else:
                c.drawString(x + PAD, ty, t)
        x += w


def _draw_signatures(c: Canvas, block: Signatures, y: float, geo: _Geometry) -> None:
    c.setFont(BOLD, 8.5)
    c.drawString(MARGIN, y - 10, block.title)
    y -= 14
    c.setFont(FONT, 7.5)
    for name, when, meaning in block.signed:
        c.drawString(MARGIN, y - LEADING, f"{name}    {when}    Meaning: {meaning}")
        y -= LEADING + 3
    w = geo.body_w
    for meaning in block.wet:
        y -= 22
        c.setLineWidth(0.5)
        for x0, x1, label in ((0, 0.38, "Signature"), (0.41, 0.72, "Printed name"), (0.75, 1.0, "Date and time")):
            c.line(MARGIN + w * x0, y, MARGIN + w * x1, y)
            c.setFont(FONT, 6.5)
            c.drawString(MARGIN + w * x0, y - 7.5, f"{label} ({meaning})" if x0 == 0 else label)
        y -= 8


# --- the document --------------------------------------------------------------------------------


class _Info(PDFInfo):
    """Document information with our custom key beside the standard ones."""

    extra: dict[str, str] = {}
    created: str = ""

    def format(self, document):
        d = {"Title": PDFString(self.title), "Author": PDFString(self.author),
             "Subject": PDFString(self.subject), "Keywords": PDFString(self.keywords),
             "Creator": PDFString(self.creator), "Producer": PDFString(self.producer)}
        if self.created:
            d["CreationDate"] = PDFString(self.created)
        for k, v in self.extra.items():
            d[k] = PDFString(v)
        return PDFDictionary(d).format(document)


def _embed(c: Canvas, name: str, data: Iterable[bytes]) -> None:
    """Attach ``data`` (the file's bytes, in pieces) as an embedded file (PDF 1.7 section
    7.11.4), readable with pypdf (``reader.attachments``) or ``pdfdetach``.

    Compressed as the pieces come (issue 22: a long report's data is never held as one text),
    into the very bytes ``PDFZCompress`` gives for the whole (zlib's default level, one stream,
    no flush until the end); ``Filter`` set beforehand makes ReportLab write them as they are."""
    doc = c._doc
    z = zlib.compressobj()
    packed = [z.compress(piece) for piece in data]
    packed.append(z.flush())
    stream = _SealedStream(PDFDictionary({"Type": PDFName("EmbeddedFile"), "Subtype": PDFName("application#2Fjson"),
                                          "Filter": PDFArray([PDFName(PDFZCompress.pdfname)])}),
                           b"".join(packed))
    spec = PDFDictionary({"Type": PDFName("Filespec"), "F": PDFString(name), "UF": PDFString(name),
                          "EF": PDFDictionary({"F": doc.Reference(stream)}),
                          "Desc": PDFString("csledger report data: figures, period and ledger state")})
    doc.Catalog.Names = PDFDictionary({"EmbeddedFiles": PDFDictionary({"Names": PDFArray([PDFString(name), doc.Reference(spec)])})})


class _SealedStream(PDFStream):
    """A page's content stream, encoded when the page is done and dropped once written.

    Why: ReportLab keeps every page's drawing operators as uncompressed text until the file is
    saved (it compresses in ``PDFStream.format``), so a long report held tens of kilobytes per
    page for all its pages (issue 22). Encoding each page as it is finished, with the very
    filters ReportLab would apply at save time, keeps only the compressed bytes; the file is the
    same byte for byte (``Filter`` already set makes ``PDFStream.format`` skip its own encoding,
    and the dictionary is written with sorted keys either way)."""

    #: Where the encoded content waits when the report is written to a file: (file, offset,
    #: length) in a temporary spill file, read back when the stream is written.
    spilled: tuple[Any, int, int] | None = None

    def format(self, document):
        if self.spilled is not None:
            f, offset, length = self.spilled
            f.seek(offset)
            self.content = f.read(length)
        out = super().format(document)
        self.content = b""  # formatted once, into the file being assembled: no second copy
        return out


def _seal_page(c: Canvas, spill: Any = None) -> None:
    """Encode the content stream of the page ``showPage`` just finished (see ``_SealedStream``);
    with ``spill`` (a temporary file), park the encoded bytes there until the file is written,
    so a report written to a file holds no page's drawing in memory."""
    page = c._doc.Pages.pages[-1]
    if page.Contents is not None or not page.stream or not page.compression:
        return
    filters = [PDFBase85Encode, PDFZCompress] if rl_config.useA85 else [PDFZCompress]
    content = page.stream
    for f in reversed(filters):  # as PDFStream.format applies them: the last listed first
        content = f.encode(content)
    stream = _SealedStream(content=content)
    stream.dictionary["Filter"] = PDFArray([PDFName(f.pdfname) for f in filters])
    stream.__Comment__ = "page stream"
    if spill is not None:
        data = content if isinstance(content, bytes) else content.encode("latin-1")
        offset = spill.seek(0, io.SEEK_END)
        spill.write(data)
        stream.spilled, stream.content = (spill, offset, len(data)), b""
    page.Contents = stream
    page.stream = None


class _FileOut(PDFFile):
    """ReportLab's output collector, writing each piece to a file as it comes instead of keeping
    the pieces to join at the end (issue 22: a long report is never held whole in memory)."""

    def __init__(self, out: BinaryIO, pdf_version: Any):
        super().__init__(pdf_version)  # writes the header into ``strings``
        self.out = out
        for piece in self.strings:
            out.write(piece)
        self.strings = []
        self.write = out.write

    def format(self, document):
        return b""


def _format_into(doc: Any, out: BinaryIO) -> None:
    """``PDFDocument.format`` of ReportLab 5 (the version ``build_versions`` pins a report to),
    with the objects written to ``out`` as they are formatted: the same bytes, in the same order.
    Only what a csledger report uses is kept (no encryption, no digital signature fields, no
    comments: invariant mode)."""
    doc.encrypt.prepare(doc)
    if doc.encrypt.info():  # pragma: no cover  (reports are never encrypted)
        raise ValueError("an encrypted report cannot be written as it is formatted")
    cat, info = doc.Catalog, doc.info
    doc.Reference(cat)
    doc.Reference(info)
    counter, ids = 0, []
    doc._PDFDocument__accum__ = file = _FileOut(out, doc._pdfVersion)
    while True:
        counter += 1
        if counter not in doc.numberToId:
            break
        oid = doc.numberToId[counter]
        doc.idToOffset[oid] = file.add(PDFIndirectObject(oid, doc.idToObject[oid]).format(doc))
        ids.append(oid)
    del doc._PDFDocument__accum__
    if counter - 1 != len(doc.numberToId):  # pragma: no cover  (ReportLab's own sanity check)
        raise ValueError("object numbering changed while the report was written")
    xref = PDFCrossReferenceTable()
    xref.addsection(0, ids)
    offset = file.add(xref.format(doc))
    file.add(PDFTrailer(startxref=offset, Size=len(doc.numberToId) + 1, Root=doc.Reference(cat),
                        Info=doc.Reference(info), Encrypt=None, ID=doc.ID()).format(doc))


@dataclass
class Metadata:
    title: str
    author: str
    subject: str
    keywords: str
    state_line: str
    created: str  # PDF date "D:20261125163400Z"


def render(frame: Frame, blocks: Sequence[Block], *, paper: str, orientation: str,
           metadata: Metadata | None = None, data: dict[str, Any] | None = None,
           out: BinaryIO | None = None) -> bytes:
    """Lay out and draw the blocks page by page; return the PDF bytes, or, given ``out`` (a file
    open for writing), write them there as they are made and return ``b""``.

    ``data`` is embedded as ``csledger-report.json``; ``metadata`` fills the document
    information (with the ledger state under ``/CSLedgerState``). Output is byte-for-byte
    reproducible (ReportLab's invariant mode), so ``verify-report`` can re-render and compare.
    """
    width, height = page_size(paper, orientation)
    body_w = width - 2 * MARGIN
    left, right = _header_lines(frame, body_w)
    header_h = max(_lines_h(left), _lines_h(right)) + 10
    footer_lines = _footer_text(frame, body_w - QR_SIZE - 8 - 70)
    footer_h = max(QR_SIZE, len(footer_lines) * 8.2 + 6) + 8
    geo = _Geometry(width, height, header_h, footer_h)

    counting = _Paginator(geo)  # pass 1: how many pages ("Page N of M" is on every page)
    for block in blocks:
        counting.place(block)
    total = counting.count

    c = Canvas(io.BytesIO(), pagesize=(width, height), invariant=1, pageCompression=1)
    if metadata is not None:
        info = _Info()
        info.title, info.author, info.subject, info.keywords = (metadata.title, metadata.author,
                                                                metadata.subject, metadata.keywords)
        info.creator = "csledger"
        info.created = metadata.created
        info.extra = {STATE_KEY: metadata.state_line}
        c._doc.info = info
    if data is not None:
        _embed(c, DATA_FILE, json_chunks(data))
    _draw_qr_form(c, frame.qr_text)

    spill = tempfile.TemporaryFile(prefix="csledger-pages-") if out is not None else None

    def draw(n: int, page: _Page) -> None:
        _draw_header(c, frame, geo)
        for op, y in page.ops:
            _draw_op(c, op, y, geo)
        _draw_footer(c, frame, geo, n, total)
        c.showPage()
        _seal_page(c, spill)

    drawing = _Paginator(geo, draw)  # pass 2: the same layout, each page drawn as it is finished
    for block in blocks:
        drawing.place(block)
    drawing.finish()
    if drawing.count != total:  # pragma: no cover  (the layout is deterministic)
        raise RuntimeError(f"the report laid out to {total} pages, then to {drawing.count}")
    # The file's bytes as ReportLab assembles them (``save`` would copy them into the buffer once
    # more, and ``getvalue`` again: issue 22 counts each copy of a long report).
    if out is None:
        return c.getpdfdata()
    # ``getpdfdata`` with the document formatted into ``out`` (its steps before ``format``).
    doc = c._doc
    for font in doc.delayedFonts:
        font.addObjects(doc)
    doc.info.invariant = doc.invariant
    doc.info.digest(doc.signature)
    doc.Reference(doc.Catalog)
    doc.Reference(doc.info)
    doc.Outlines.prepare(doc, c)
    if doc.Outlines.ready < 0:
        doc.Catalog.Outlines = None
    try:
        _format_into(doc, out)
    finally:
        spill.close()  # type: ignore[union-attr]
    return b""

