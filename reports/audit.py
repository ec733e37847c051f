"""The accountability audit report (docs/compliance.md), per NDC and in total, in mg, mL and containers.

Every figure is ``ledger.services.audit.accountability``'s: the same pure computation the HTTP
API's audit JSON (``GET .../audit?from=&to=``, ``audit_days``) uses, run on the snapshot's
entries over the **audit window** of the asked local days (issue 20, one period): after the
count or inventory that counted every product on hand, the first on the first day (else the
latest before it, else the first after it), up to the latest such count on or before the last
day. The header
prints the days asked and the window; every figure is of the window, and the administration and
waste logs made ``audit_window=True`` (``--audit-window``) for the same days total the same.
This module only turns those figures into report data (Decimal strings) and draws them;
``verify-report`` finds the window again and recomputes them through the same ``compute``.

A beginning that is the book, not a count, is refused unless the window is the registrant's
first period (then labelled). Containers print as whole containers + mL, never a fraction;
the stock chart moves in steps.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors

from ledger.domain.errors import InvalidInput
from ledger.integrity.canonical import parse_time
from ledger.services.audit import LINES, accountability, require_counted_beginnings
from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, dec, local, num, volume
from reports.source import Snapshot

LINE_LABELS = {
    "beginning": "Beginning inventory", "receipts": "Receipts", "to_account_for": "Total to account for",
    "administered": "Administered (given)", "wasted": "Wasted (with the administration, witnessed)",
    "destroyed": "Destroyed (Form 41)", "transferred": "Transferred and returned",
    "breakage": "Breakage and spills recorded at the time (two people)",
    "theft_or_loss": "Theft or loss (Form 106)",
    "ending": "Ending inventory", "accounted_for": "Total accounted for",
    "difference": "Difference (before adjustments)",
    "adjustments": "Adjustments after the difference (net out of stock, listed below)",
    "difference_after_adjustments": "Difference after adjustments",
    "unreconciled": "of which drawn but not yet given or wasted (unreconciled)",
}
#: Lines printed bold (the sums and the differences).
STRONG = ("to_account_for", "accounted_for", "difference", "difference_after_adjustments")
MEANINGS = {"performed": "recorded", "approved": "approved", "witnessed": "second person", "counted": "counted"}


def _jsonable(v: Any) -> Any:
    """Core figures as report data: Decimals as scale-2 strings (scale 3 for a volume with a third
    decimal, issue 19: the core's mg, containers and percentages are already at 0.01), tuples as
    lists."""
    if isinstance(v, Decimal):
        return volume(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def core_figures(snap: Snapshot, period: Period, *, series: bool = False) -> dict[str, Any]:
    """``ledger.audit.accountability`` over the snapshot for the period's audit window (issue 20:
    between the two counts ``audit_window`` finds for its local days; found here when the period
    carries none), with a book beginning refused unless it is the registrant's first period."""
    if period.window is None:
        from reports.base import with_audit_window

        period = with_audit_window(KIND, snap, period)
    try:
        # Issue 22: the entries are read pass by pass (a build streams them) and the stock series
        # is kept per local day (what ``_daily`` charts), so nothing grows with the entries.
        out = accountability(snap.entries, series=series, window=period.window,
                             series_days=period.tz if series else None)
        require_counted_beginnings(out)
    except InvalidInput as exc:
        raise ReportError(exc.reason, field=exc.field or "from/to") from None
    except ValueError as exc:  # a kind that moves stock with no audit line: never printed silently
        raise ReportError(str(exc), field="from/to") from None
    return out


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """The report data: the core audit's figures (as strings) plus a daily stock series per
    product for the charts (``charts``, keyed by NDC key)."""
    a = core_figures(snap, period, series=True)
    if not a["products"]:
        raise ReportError("no stock to audit in the period", field="from/to")
    charts = {p["ndc_key"]: [[t, volume(b)] for t, b in _daily(p.pop("series"), period.tz)] for p in a["products"]}
    out = _jsonable(a)
    out["charts"] = charts
    return out


ORDER = LINES


def _daily(points: list[tuple[str, Decimal]], tz: str) -> list[tuple[str, Decimal]]:
    """The balance at the window's beginning, then at the end of each local day that had a
    movement (keeps charts and the embedded data small for a year of entries; the beginning is
    kept so the first step starts from the counted stock, issue 20)."""
    out: dict[str, tuple[str, Decimal]] = {}
    for t, b in points[1:]:
        out[local(t, tz)[:10]] = (t, b)
    return points[:1] + list(out.values())


def step_points(pts: list[tuple[float, float]], until: float | None = None) -> list[tuple[float, float]]:
    """The stock as it moves: in steps, never slopes. From each point a horizontal line to the
    next movement's time, then a vertical jump to the new balance; after the last, horizontal up
    to ``until`` (the window's end). Drawing coordinates only (floats); no figure passes here."""
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(pts):
        if i:
            out.append((x, out[-1][1]))  # held until the movement...
        out.append((x, y))  # ...then the jump
    if out and until is not None and until > out[-1][0]:
        out.append((until, out[-1][1]))
    return out


def _chart(row: dict[str, Any], pts: list[list[str]], tz: str, end: str | None = None, width: float = 480,
           height: float = 150) -> Drawing:
    d = Drawing(width, height)
    if not pts:
        return d
    t0 = parse_time(pts[0][0])
    # Floats only as drawing coordinates (days since the first point, mL on the y axis); every
    # figure printed comes from the Decimal strings, never from these.
    def days(t: str) -> float:
        return (parse_time(t) - t0).total_seconds() / 86400.0

    data = step_points([(days(t), float(dec(b))) for t, b in pts], days(end) if end else None)
    if len(data) == 1:
        data.append((data[0][0] + 1.0, data[0][1]))
    lp = LinePlot()
    lp.x, lp.y, lp.width, lp.height = 45, 25, width - 60, height - 45
    lp.data = [data]
    lp.lines[0].strokeColor = colors.HexColor("#1f4e79")
    lp.lines[0].strokeWidth = 1.2
    lp.xValueAxis.valueMin = 0
    lp.yValueAxis.valueMin = 0
    lp.xValueAxis.labels.fontSize = 6.5
    lp.yValueAxis.labels.fontSize = 6.5
    lp.xValueAxis.labelTextFormat = "%d"
    # whole mL on the axis, tenths for a stock under 10 mL (a few nasal-spray devices)
    lp.yValueAxis.labelTextFormat = "%d" if max(y for _, y in data) >= 10 else "%.1f"
    d.add(lp)
    d.add(String(lp.x, height - 12, f"Stock of {row['ndc']} (mL, book balance: it steps at the last movement of "
                                    "each day with one, and holds between)", fontSize=7, fontName=layout.FONT))
    d.add(String(lp.x + lp.width / 2, 4, f"days since {local(pts[0][0], tz)}", fontSize=6.5,
                 fontName=layout.FONT, textAnchor="middle"))
    return d


def containers_text(ml: str | Decimal, container_ml: str | Decimal) -> str:
    """A volume in containers, never fractional (issue 20: "10.51 containers" puzzled the
    inspector): whole containers of the product's size, and what is left over in mL (an opened
    container's worth; a device product's mL are whole devices)."""
    v, size = dec(ml), dec(container_ml)
    if size <= 0:
        return ""
    whole = int(abs(v) // size)
    rest = abs(v) - whole * size
    text = f"{whole:,}" + (f" + {num(rest, 'mL')}" if rest else "")
    if v >= 0:
        return text
    return f"-({text})" if rest else f"-{text}"


def _what(src: dict[str, Any], tz: str) -> str:
    what = (f"{src['inventory_type']} inventory taken at {src['taken_at'].replace('_', ' ')}"
            if src["kind"] == "inventory_taken" else "count")
    return f"the {what} of {local(src['occurred_at'], tz)} (ledger entry {src['seq']})"


def _signed(sigs: list[dict[str, Any]]) -> str:
    """Who signed an adjustment, each with what the signature means."""
    return "; ".join(f"{MEANINGS.get(x['meaning'], x['meaning'])}: {x['printed_name']}" for x in sigs) or "unsigned"


def _adjustments_table(r: dict[str, Any], tz: str) -> layout.Table:
    """Every adjustment after the difference: the entry, when, what it refers to, mL and mg
    taken off the book (negative: put back), and who approved it and who was the second person."""
    cols = [layout.Column("Entry", 6, "R"), layout.Column("When (local)", 13), layout.Column("What", 33),
            layout.Column("mL", 9, "R"), layout.Column("mg", 11, "R"), layout.Column("Signed by", 28)]
    rows, flagged = [], set()
    for a in r["adjustment_entries"]:
        what = a["description"] + (" (already out of the counted beginning: not in the sum)"
                                   if a["in_counted_beginning"] else "")
        if a["in_counted_beginning"]:
            flagged.add(len(rows))
        rows.append([str(a["seq"]), local(a["occurred_at"], tz), what, num(a["ml"], "mL"), num(a["mg"], "mg"),
                     _signed(a["signatures"])])
    return layout.Table(cols, rows, flagged=frozenset(flagged),
                        title=f"{r['ndc']}: adjustments after the difference, each with who signed it")


_BASIS = {"counted": "counted", "book": "book", "none": "none on hand", "book (first period)": "BOOK, first period"}


def _sources(r: dict[str, Any], tz: str) -> str:
    b, e = r["beginning_source"], r["ending_source"]
    if b:
        begin = _what(b, tz) + ("" if r["beginning_basis"] == "counted" else ", taken inside the period")
    elif r["beginning_basis"] == "none":
        begin = "none on hand at the window's beginning count (it counted every product on hand)"
    elif r["beginning_basis"] == "book (first period)":
        begin = "the BOOK figure at the beginning of the registrant's first period (labelled book)"
    else:
        begin = "the BOOK figure at the period start (labelled book)"
    if e:
        end = _what(e, tz)
    elif r["ending_basis"] == "none":
        end = "none on hand at the window's ending count (it counted every product on hand)"
    else:
        end = "no physical count in the period, so the BOOK figure at the period end (labelled book)"
    return f"{r['ndc']}: beginning inventory from {begin}. Ending inventory: {end}."


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the audit prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = [layout.Para(
        "Figures per the DEA-style accountability audit (beginning inventory + receipts = total to account for; "
        "administered + wasted + destroyed + transferred and returned + breakage and spills recorded at the time + "
        "theft or loss + ending inventory = total accounted for; difference = accounted for - to account for), "
        "the ledger's own audit computation. The difference is taken BEFORE adjustments: loss adjustments that "
        "resolve count discrepancies, corrections and breakage recorded after a count that was taken after it "
        "are listed after the difference, each with who signed it, and never reduce the difference or its "
        "variance. One period (issue 20): the audit runs between two counts or inventories that counted every "
        "product on hand, the first on the first day asked (else the latest before it) and the latest on or "
        "before the last day asked (named in the header); every figure is of exactly that window, and the administration and waste "
        "logs made for the audit's window total the same. Containers are whole containers of the product's size "
        "and the rest in mL, never a fraction. "
        f"Lines whose variance (before adjustments) exceeds {num(f['variance_threshold_percent'], '%')} are "
        "flagged (shaded).")]
    cols = [layout.Column("Line", 30), layout.Column("mg", 16, "R"), layout.Column("mL", 14, "R"),
            layout.Column("Containers (whole + mL)", 16, "R")]
    for r in f["products"]:
        out.append(layout.Para(_sources(r, tz)))
        rows, strong, flagged = [], set(), set()
        order = [*ORDER[:ORDER.index("difference") + 1], "unreconciled", *ORDER[ORDER.index("difference") + 1:]]
        for name in order:
            label = LINE_LABELS[name]
            if name == "ending":
                label += f" ({_BASIS.get(r['ending_basis'], r['ending_basis'])})"
            if name == "beginning":
                label += f" ({_BASIS.get(r['beginning_basis'], r['beginning_basis'])})"
            if name in STRONG:
                strong.add(len(rows))
            if name == "difference" and r["flagged"]:
                flagged.add(len(rows))
            v = r["unreconciled"] if name == "unreconciled" else {u: r[u][name] for u in ("mg", "ml", "containers")}
            rows.append([label, num(v["mg"], "mg"), num(v["ml"], "mL"), containers_text(v["ml"], r["container_ml"])])
            if name == "unreconciled":
                rows.append(["Variance (before adjustments)", num(r["variance_percent"], "%"), "", ""])
                if r["flagged"]:
                    flagged.add(len(rows) - 1)
        rows.append(["Variance after adjustments", num(r["variance_after_adjustments_percent"], "%"), "", ""])
        form = f"{r['form']}, " if r["form"] else ""
        unit = f"{num(r['container_ml'], 'mL')} container"
        table_cols = cols
        if r.get("unit_kind") == "nasal_spray_device":  # issue 19: counted in devices, each whole
            per_device = (dec(r["strength_mg_per_ml"]) * dec(r["container_ml"])).quantize(Decimal("0.01"))
            unit = f"{num(r['container_ml'], 'mL')} = {num(per_device, 'mg')} per nasal-spray device"
            table_cols = [*cols[:3], layout.Column("Devices", 16, "R")]
        out.append(layout.Table(table_cols, rows, strong=frozenset(strong), flagged=frozenset(flagged),
                                title=f"{r['ndc']}  {r['name']}  ({form}{num(r['strength_mg_per_ml'], 'mg/mL')}, "
                                      f"{unit})"))
        if r["adjustment_entries"]:
            out.append(_adjustments_table(r, tz))
        out.append(layout.Chart(_chart(r, f["charts"].get(r["ndc_key"], []), tz, f["end"])))
    t = f["total"]
    trows, strong, tflagged = [], set(), set()
    # mL of 10 mg/mL and of 50 mg/mL are different amounts of drug, and a vial is not a device
    # (issue 20): across products only mg adds up; mL and containers only when every product
    # has the same strength and the same kind of unit.
    same_ml = len({dec(r["strength_mg_per_ml"]) for r in f["products"]}) <= 1
    same_unit = (same_ml and len({r.get("unit_kind", "vial") for r in f["products"]}) <= 1
                 and len({dec(r["container_ml"]) for r in f["products"]}) <= 1)
    size = f["products"][0]["container_ml"] if f["products"] else "0"
    for name in ORDER:
        if name in STRONG:
            strong.add(len(trows))
        trows.append([LINE_LABELS[name], num(t["mg"][name], "mg"), num(t["ml"][name], "mL") if same_ml else "-",
                      containers_text(t["ml"][name], size) if same_unit else "-"])
        if name == "difference":
            trows.append(["Variance (of mg, before adjustments)", num(t["variance_percent"], "%"), "", ""])
            if t["flagged"]:
                tflagged |= {len(trows) - 2, len(trows) - 1}
    trows.append(["Variance after adjustments (of mg)", num(t["variance_after_adjustments_percent"], "%"), "", ""])
    title = "Total, all products" if same_unit else (
        "Total, all products (in mg: mL and containers of different strengths, sizes or units do not add up)")
    out.append(layout.Table(cols, trows, title=title, strong=frozenset(strong), flagged=frozenset(tflagged)))
    return out


#: Layout 2 (issue 20): the all-products total no longer adds mL across strengths. Layout 3
#: (issue 20, one period): the audit window between two counts in the header, whole containers
#: + mL, the stock chart in steps.
KIND = register(ReportKind("audit", "Accountability audit", "portrait", compute, blocks, layout=3,
                           audit_window="always"))
