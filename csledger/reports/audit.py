"""The DEA-style accountability audit (DOMAIN.md), per NDC and in total, in mg, mL and containers:

    beginning inventory + receipts                                  = total to account for
    administered + wasted + destroyed + transferred/returned
      + reported losses + ending inventory                          = total accounted for
    difference = accounted for - to account for;  variance % = difference / to account for

Read model of its own until issue 3's ``ledger.audit`` lands: entries are decoded from the
canonical bytes and their stock movements come from ``ledger.projections.movements`` (the one
definition the ledger itself uses). Entry kinds are mapped to the audit's lines in ``CATEGORY``;
a kind that moves stock and is not mapped yet is never dropped silently: it lands in "other
movements", which is printed and flags the line.

Beginning inventory: the last 1304.11 inventory taken on or before the period's first day, or
the initial inventory when it falls inside the period (the audit then counts from it). Ending
inventory: a physical inventory taken on the period's last day when there is one; otherwise the
book figure, labelled "book".
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors

from ..ledger.canonical import parse_time
from ..ledger.projections import movements
from . import layout
from .base import ReportKind, register
from .errors import ReportError
from .fmt import Period, amount, dec, local, num
from .source import Snapshot

ZERO = Decimal("0.00")
#: Lines whose |variance| is above this are flagged. A registrant policy will set it (issue 3/7);
#: until then the default is the common "1 %" investigators use for a small practice.
VARIANCE_THRESHOLD_PCT = Decimal("1.00")
#: Entry kind -> audit line. Issue 3's kinds join here as they land.
CATEGORY = {
    "stock_received": "receipts",
    "dose_administered": "administered",
    "dose_wasted": "wasted",
    "stock_destroyed": "destroyed",
    "stock_transferred": "transferred",
    "stock_returned": "transferred",
    "loss_reported": "losses",
}
DISPOSITIONS = ("administered", "wasted", "destroyed", "transferred", "losses", "other")
LINE_LABELS = {
    "beginning": "Beginning inventory", "receipts": "Receipts", "to_account_for": "Total to account for",
    "administered": "Administered", "wasted": "Wasted (with the administration)", "destroyed": "Destroyed (Form 41)",
    "transferred": "Transferred and returned", "losses": "Reported losses (Form 106)",
    "other": "Other movements (kind not yet in the audit)", "ending": "Ending inventory",
    "accounted_for": "Total accounted for", "difference": "Difference",
}


def _containers(ml: Decimal, container_ml: Decimal) -> Decimal:
    return (ml / container_ml).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def _pct(diff: Decimal, base: Decimal) -> Decimal:
    if base == 0:
        return ZERO
    return (diff * 100 / base).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every audit figure per NDC and in total, with the stock series for the charts."""
    inventories = [e for e in snap.entries if e["kind"] == "inventory_taken"]
    before = [e for e in inventories if e["occurred_at"] < period.end_utc]
    at_start = [e for e in before if e["occurred_at"] < period.start_utc]
    begin = at_start[-1] if at_start else (before[0] if before else None)
    if begin is None:  # check_period makes this unreachable; kept so the audit never guesses
        raise ReportError("no inventory to begin the audit from", field="from")
    begin_at = begin["occurred_at"]
    end_inv = next((e for e in reversed(before) if e is not begin and e["occurred_at"] >= period.start_utc
                    and local(e["occurred_at"], period.tz)[:10] == period.end.isoformat()), None)

    products: dict[str, dict[str, Any]] = {}
    balance: dict[str, Decimal] = {}
    series: dict[str, list[tuple[str, Decimal]]] = {}

    def product(p: dict[str, Any]) -> dict[str, Any]:
        pr = products.get(p["ndc_key"])
        if pr is None:
            pr = products[p["ndc_key"]] = {
                "ndc": p["ndc"], "drug": p["name"], "form": p["form"], "strength_mg_per_ml": p["strength_mg_per_ml"],
                "container_ml": p["container_ml"], "ml": {k: ZERO for k in ("beginning", "receipts", *DISPOSITIONS)},
                "other_kinds": set(),
            }
            balance[p["ndc_key"]] = ZERO
            series[p["ndc_key"]] = []
        return pr

    for item in begin["items"]:
        pr = product(item["product"])
        pr["ml"]["beginning"] += dec(item["ml"])
        balance[item["product"]["ndc_key"]] += dec(item["ml"])
    for key in products:
        series[key].append((begin_at, balance[key]))

    prods_of: dict[str, dict[str, Any]] = {}
    for e in snap.entries:
        if e["kind"] in ("product_added",):
            prods_of[e["product"]["ndc_key"]] = e["product"]
        if not (begin_at < e["occurred_at"] < period.end_utc) or e["kind"] == "inventory_taken":
            continue
        cat = CATEGORY.get(e["kind"])
        for _vial, ndc_key, ml in movements(e):
            pr = product(prods_of[ndc_key])
            line = cat or "other"
            if line == "other":
                pr["other_kinds"].add(e["kind"])
            # movements are signed mL into stock; dispositions are reported as positive amounts out
            pr["ml"][line] += ml if line == "receipts" else -ml
            balance[ndc_key] += ml
            series[ndc_key].append((e["occurred_at"], balance[ndc_key]))

    if not products:
        raise ReportError("no stock to audit in the period", field="from/to")
    ending_counted: dict[str, Decimal] = {}
    if end_inv is not None:
        for item in end_inv["items"]:
            product(item["product"])
            key = item["product"]["ndc_key"]
            ending_counted[key] = ending_counted.get(key, ZERO) + dec(item["ml"])

    rows = []
    totals = {k: ZERO for k in ("beginning_mg", "receipts_mg", "to_account_for_mg", "dispositions_mg",
                                "ending_mg", "accounted_for_mg", "difference_mg")}
    for key, pr in sorted(products.items()):
        strength, cont = dec(pr["strength_mg_per_ml"]), dec(pr["container_ml"])
        ml = pr["ml"]
        to_account = ml["beginning"] + ml["receipts"]
        out_ml = sum((ml[k] for k in DISPOSITIONS), ZERO)
        counted = key in ending_counted
        ending = ending_counted[key] if counted else to_account - out_ml
        accounted = out_ml + ending
        diff = accounted - to_account
        pct = _pct(diff, to_account)
        lines = {}
        for name in ("beginning", "receipts", *DISPOSITIONS):
            lines[name] = ml[name]
        lines.update({"to_account_for": to_account, "ending": ending, "accounted_for": accounted,
                      "difference": diff})
        rows.append({
            "ndc": pr["ndc"], "drug": pr["drug"], "form": pr["form"], "strength_mg_per_ml": pr["strength_mg_per_ml"],
            "container_ml": pr["container_ml"],
            "lines": {k: {"ml": amount(v), "mg": amount(v * strength), "containers": amount(_containers(v, cont))}
                      for k, v in lines.items()},
            "ending_source": "counted" if counted else "book",
            "variance_pct": amount(pct),
            "flagged": abs(pct) > VARIANCE_THRESHOLD_PCT or bool(pr["other_kinds"]),
            "other_kinds": sorted(pr["other_kinds"]),
            "series": [[t, amount(b)] for t, b in _daily(series[key], period.tz)],
        })
        totals["beginning_mg"] += ml["beginning"] * strength
        totals["receipts_mg"] += ml["receipts"] * strength
        totals["to_account_for_mg"] += to_account * strength
        totals["dispositions_mg"] += out_ml * strength
        totals["ending_mg"] += ending * strength
        totals["accounted_for_mg"] += accounted * strength
        totals["difference_mg"] += diff * strength
    total = {k: amount(v) for k, v in totals.items()}
    total["variance_pct"] = amount(_pct(totals["difference_mg"], totals["to_account_for_mg"]))
    total["flagged"] = abs(dec(total["variance_pct"])) > VARIANCE_THRESHOLD_PCT or any(r["flagged"] for r in rows)
    return {
        "beginning_source": {"seq": begin["seq"], "type": begin["inventory_type"], "taken_at": begin["taken_at"],
                             "occurred_at": begin_at},
        "ending_source": ({"seq": end_inv["seq"], "occurred_at": end_inv["occurred_at"]} if end_inv else None),
        "threshold_pct": amount(VARIANCE_THRESHOLD_PCT),
        "products": rows,
        "total": total,
    }


def _daily(points: list[tuple[str, Decimal]], tz: str) -> list[tuple[str, Decimal]]:
    """The balance at the end of each local day that had a movement (keeps charts and the
    embedded data small for a year of entries)."""
    out: dict[str, tuple[str, Decimal]] = {}
    for t, b in points:
        out[local(t, tz)[:10]] = (t, b)
    return list(out.values())


ORDER = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred", "losses",
         "other", "ending", "accounted_for", "difference")


def _chart(row: dict[str, Any], tz: str, width: float = 480, height: float = 150) -> Drawing:
    pts = row["series"]
    d = Drawing(width, height)
    if not pts:
        return d
    t0 = parse_time(pts[0][0])
    # Floats only as drawing coordinates (days since the first point, mL on the y axis); every
    # figure printed comes from the Decimal strings, never from these.
    data = [((parse_time(t) - t0).total_seconds() / 86400.0, float(dec(b))) for t, b in pts]
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
    lp.yValueAxis.labelTextFormat = "%d"
    d.add(lp)
    d.add(String(lp.x, height - 12, f"Stock of {row['ndc']} (mL, book balance at the end of each day with a movement)",
                 fontSize=7, fontName=layout.FONT))
    d.add(String(lp.x + lp.width / 2, 4, f"days since {local(pts[0][0], tz)[:10]}", fontSize=6.5,
                 fontName=layout.FONT, textAnchor="middle"))
    return d


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the audit prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    b = f["beginning_source"]
    out: list[layout.Block] = [layout.Para(
        f"Beginning inventory: the {b['type']} inventory taken at {b['taken_at'].replace('_', ' ')}, "
        f"{local(b['occurred_at'], tz)} (ledger entry {b['seq']}); movements are counted from it to the end of the "
        f"period. Ending inventory: "
        + (f"the physical inventory of {local(f['ending_source']['occurred_at'], tz)} (entry {f['ending_source']['seq']})."
           if f["ending_source"] else "no physical inventory on the period's last day, so the BOOK figure is shown "
                                      "and labelled book.")
        + f" Lines whose variance exceeds {num(f['threshold_pct'], '%')} are flagged (shaded).")]
    cols = [layout.Column("Line", 30), layout.Column("mg", 16, "R"), layout.Column("mL", 14, "R"),
            layout.Column("Containers", 12, "R")]
    for r in f["products"]:
        rows, strong, flagged = [], set(), set()
        for name in ORDER:
            v = r["lines"][name]
            label = LINE_LABELS[name]
            if name == "ending":
                label += f" ({r['ending_source']})"
            if name == "other" and r["other_kinds"]:
                label += ": " + ", ".join(r["other_kinds"])
            if name in ("to_account_for", "accounted_for", "difference"):
                strong.add(len(rows))
            if name == "difference" and r["flagged"]:
                flagged.add(len(rows))
            rows.append([label, num(v["mg"], "mg"), num(v["ml"], "mL"), num(v["containers"])])
        rows.append(["Variance", num(r["variance_pct"], "%"), "", ""])
        if r["flagged"]:
            flagged.add(len(rows) - 1)
        out.append(layout.Table(cols, rows, strong=frozenset(strong), flagged=frozenset(flagged),
                                title=f"{r['ndc']}  {r['drug']}  ({r['form']}, {num(r['strength_mg_per_ml'], 'mg/mL')}, "
                                      f"{num(r['container_ml'], 'mL')} container)"))
        out.append(layout.Chart(_chart(r, tz)))
    t = f["total"]
    trows = [["Beginning inventory", num(t["beginning_mg"], "mg")], ["Receipts", num(t["receipts_mg"], "mg")],
             ["Total to account for", num(t["to_account_for_mg"], "mg")],
             ["Administered, wasted, destroyed, transferred, lost, other", num(t["dispositions_mg"], "mg")],
             ["Ending inventory", num(t["ending_mg"], "mg")], ["Total accounted for", num(t["accounted_for_mg"], "mg")],
             ["Difference", num(t["difference_mg"], "mg")], ["Variance", num(t["variance_pct"], "%")]]
    out.append(layout.Table([layout.Column("All products (mg)", 50), layout.Column("mg", 20, "R")], trows,
                            title="Total, all products", strong=frozenset({2, 5, 6}),
                            flagged=frozenset({6, 7}) if t["flagged"] else frozenset()))
    return out


KIND = register(ReportKind("audit", "Accountability audit", "portrait", compute, blocks))
