"""The DEA-style accountability audit (DOMAIN.md), per NDC and in total, in mg, mL and containers:

    beginning inventory + receipts                                  = total to account for
    administered + wasted + destroyed + transferred/returned
      + reported losses + ending inventory                          = total accounted for
    difference = accounted for - to account for;  variance % = difference / to account for

Read model of its own until issue 3's ``ledger.audit`` lands: entries are decoded from the
canonical bytes and each kind is mapped to the audit's lines in ``_outflows``; a kind that
moves stock (per the ledger's ``projections.movements``) and is not mapped yet is never dropped
silently: it lands in "other movements", which is printed and flags the line.

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
DISPOSITIONS = ("administered", "wasted", "destroyed", "transferred", "losses", "corrections", "other")
LINE_LABELS = {
    "beginning": "Beginning inventory", "receipts": "Receipts", "to_account_for": "Total to account for",
    "administered": "Administered (given)", "wasted": "Wasted (with the administration, witnessed)",
    "destroyed": "Destroyed (Form 41)", "transferred": "Transferred and returned",
    "losses": "Reported losses (adjusted and Form 106)", "corrections": "Corrections (net out of stock)",
    "other": "Other movements (kind not yet in the audit)", "ending": "Ending inventory",
    "accounted_for": "Total accounted for", "difference": "Difference",
    "unreconciled": "of which drawn but not yet given or wasted (unreconciled)",
}


def _outflows(e: dict[str, Any]) -> list[tuple[str, dict[str, Any], Decimal, Decimal]]:
    """(audit line, product, mL for the line, mL out of stock) for one entry.

    Read from the entry's own fields (issue 3's kinds): an administration takes what was
    drawn out of stock but is accounted as what was given; its waste is a separate entry that
    moves nothing (the waste left the vial with the draw). Unknown kinds fall back to the
    ledger's ``movements`` and land in "other"."""
    kind = e["kind"]
    out: list[tuple[str, dict[str, Any], Decimal, Decimal]] = []
    if kind == "stock_received":
        for ln in e["lines"]:
            ml = dec(ln["product"]["container_ml"]) * ln["containers"]
            out.append(("receipts", ln["product"], ml, -ml))
    elif kind == "dose_administered":
        given = dec(e["ml_given"])
        for d in e["draws"]:
            ml = dec(d["ml"])
            part = min(ml, given)  # what was given is allocated to the draws in order
            given -= part
            out.append(("administered", d["product"], part, ml))
    elif kind == "dose_wasted":
        out.append(("wasted", e["product"], dec(e["ml"]), ZERO))
    elif kind == "stock_destroyed":
        out += [("destroyed", i["product"], dec(i["ml"]), dec(i["ml"])) for i in e["items"]]
    elif kind in ("stock_transferred", "stock_returned"):
        out += [("transferred", v["product"], dec(v["ml"]), dec(v["ml"])) for v in e["vials"]]
    elif kind == "loss_adjusted":
        out += [("losses", a["product"], dec(a["ml"]), dec(a["ml"])) for a in e["adjustments"]]
    elif kind == "theft_or_loss_reported":
        out += [("losses", a["product"], dec(a["ml"]), dec(a["ml"])) for a in e["lost"]]
    elif kind == "entry_corrected":
        for ln in e["lines"]:
            ml = dec(ln["ml"]) if ln["direction"] == "remove" else -dec(ln["ml"])
            out.append(("corrections", ln["product"], ml, ml))
    elif kind not in ("inventory_taken", "stock_counted"):
        # A kind this audit does not know yet: if the ledger says it moves stock, show it.
        for _vial, ndc_key, ml in movements(e):
            out.append(("other", {"ndc_key": ndc_key}, -ml, -ml))
    return out


def _counted(e: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Decimal]]:
    """Physically counted mL per product of an inventory or a count."""
    out: dict[str, tuple[dict[str, Any], Decimal]] = {}
    if e["kind"] == "inventory_taken":
        for item in e["items"]:
            p = item["product"]
            out[p["ndc_key"]] = (p, out.get(p["ndc_key"], (p, ZERO))[1] + dec(item["ml"]))
    elif e["kind"] == "stock_counted":
        for ln in e["lines"]:
            p = ln["product"]
            out[p["ndc_key"]] = (p, out.get(p["ndc_key"], (p, ZERO))[1] + dec(ln["counted_ml"]))
    return out


def _containers(ml: Decimal, container_ml: Decimal) -> Decimal:
    return (ml / container_ml).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def _pct(diff: Decimal, base: Decimal) -> Decimal:
    if base == 0:
        return ZERO
    return (diff * 100 / base).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def _threshold(snap: Snapshot, period: Period) -> Decimal:
    """The registrant's variance threshold in force at the period's end (``policy_set``)."""
    t = VARIANCE_THRESHOLD_PCT
    for e in snap.entries:
        if e["kind"] == "policy_set" and e["occurred_at"] < period.end_utc:
            t = dec(e["variance_threshold_percent"])
    return t


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every audit figure per NDC and in total, with the stock series for the charts."""
    physical = [e for e in snap.entries if e["kind"] in ("inventory_taken", "stock_counted")
                and e["occurred_at"] < period.end_utc]
    inventories = [e for e in physical if e["kind"] == "inventory_taken"]
    at_start = [e for e in physical if e["occurred_at"] < period.start_utc]
    begin = at_start[-1] if at_start else (inventories[0] if inventories else None)
    if begin is None:  # check_period makes this unreachable; kept so the audit never guesses
        raise ReportError("no inventory to begin the audit from", field="from")
    begin_at = begin["occurred_at"]
    last_day = period.end.isoformat()
    end_src = next((e for e in reversed(physical) if e is not begin and e["occurred_at"] > begin_at
                    and local(e["occurred_at"], period.tz)[:10] == last_day), None)
    threshold = _threshold(snap, period)

    products: dict[str, dict[str, Any]] = {}
    balance: dict[str, Decimal] = {}
    series: dict[str, list[tuple[str, Decimal]]] = {}
    known: dict[str, dict[str, Any]] = {}

    def product(p: dict[str, Any]) -> dict[str, Any]:
        p = known.get(p["ndc_key"], p)
        pr = products.get(p["ndc_key"])
        if pr is None:
            pr = products[p["ndc_key"]] = {
                "ndc": p["ndc"], "drug": p["name"], "form": p["form"], "strength_mg_per_ml": p["strength_mg_per_ml"],
                "container_ml": p["container_ml"],
                "ml": {k: ZERO for k in ("beginning", "receipts", *DISPOSITIONS, "drawn")}, "other_kinds": set(),
            }
            balance[p["ndc_key"]] = ZERO
            series[p["ndc_key"]] = []
        return pr

    for e in snap.entries:
        if e["kind"] == "product_added":
            known[e["product"]["ndc_key"]] = e["product"]
    for key, (p, ml) in _counted(begin).items():
        product(p)["ml"]["beginning"] += ml
        balance[key] += ml
    for key in products:
        series[key].append((begin_at, balance[key]))
    for e in snap.entries:
        if not (begin_at < e["occurred_at"] < period.end_utc):
            continue
        for line, p, ml, out_ml in _outflows(e):
            pr = product(p)
            pr["ml"][line] += ml
            if line == "administered":
                pr["ml"]["drawn"] += out_ml
            if line == "other":
                pr["other_kinds"].add(e["kind"])
            if out_ml:
                balance[p["ndc_key"]] -= out_ml
                series[p["ndc_key"]].append((e["occurred_at"], balance[p["ndc_key"]]))
    if not products:
        raise ReportError("no stock to audit in the period", field="from/to")
    counted_end = {k: ml for k, (p, ml) in _counted(end_src).items()} if end_src else {}
    if end_src:
        for _k, (p, _ml) in _counted(end_src).items():
            product(p)

    rows = []
    totals = {k: ZERO for k in ("beginning_mg", "receipts_mg", "to_account_for_mg", "dispositions_mg",
                                "ending_mg", "accounted_for_mg", "difference_mg")}
    for key, pr in sorted(products.items()):
        strength, cont = dec(pr["strength_mg_per_ml"]), dec(pr["container_ml"])
        ml = pr["ml"]
        to_account = ml["beginning"] + ml["receipts"]
        out_ml = sum((ml[k] for k in DISPOSITIONS), ZERO)
        counted = end_src is not None
        # the book: everything that left stock, with administrations at what was drawn
        book = to_account - ml["drawn"] - sum((ml[k] for k in DISPOSITIONS if k not in ("administered", "wasted")), ZERO)
        ending = counted_end.get(key, ZERO) if counted else book
        accounted = out_ml + ending
        diff = accounted - to_account
        pct = _pct(diff, to_account)
        lines = {name: ml[name] for name in ("beginning", "receipts", *DISPOSITIONS)}
        lines.update({"to_account_for": to_account, "ending": ending, "accounted_for": accounted,
                      "difference": diff, "unreconciled": ml["drawn"] - ml["administered"] - ml["wasted"]})
        rows.append({
            "ndc": pr["ndc"], "drug": pr["drug"], "form": pr["form"], "strength_mg_per_ml": pr["strength_mg_per_ml"],
            "container_ml": pr["container_ml"],
            "lines": {k: {"ml": amount(v), "mg": amount(v * strength), "containers": amount(_containers(v, cont))}
                      for k, v in lines.items()},
            "ending_source": "counted" if counted else "book",
            "variance_pct": amount(pct),
            "flagged": abs(pct) > threshold or bool(pr["other_kinds"]),
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
    total["flagged"] = abs(dec(total["variance_pct"])) > threshold or any(r["flagged"] for r in rows)

    def source(e: dict[str, Any] | None) -> dict[str, Any] | None:
        if e is None:
            return None
        what = (f"{e['inventory_type']} inventory taken at {e['taken_at'].replace('_', ' ')}"
                if e["kind"] == "inventory_taken" else "count")
        return {"seq": e["seq"], "what": what, "occurred_at": e["occurred_at"]}

    return {
        "beginning_source": source(begin),
        "ending_source": source(end_src),
        "threshold_pct": amount(threshold),
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
         "corrections", "other", "ending", "accounted_for", "difference", "unreconciled")


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
        f"Beginning inventory: the {b['what']}, {local(b['occurred_at'], tz)} (ledger entry {b['seq']}); movements "
        f"are counted from it to the end of the period. Ending inventory: "
        + (f"the {f['ending_source']['what']} of {local(f['ending_source']['occurred_at'], tz)} "
           f"(entry {f['ending_source']['seq']})."
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
