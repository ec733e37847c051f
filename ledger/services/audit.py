"""The DEA-style accountability audit (docs/compliance.md), per NDC and in total, in mg, mL and containers:

    beginning inventory + receipts                                  = total to account for
    administered + wasted + destroyed + transferred/returned
      + breakage recorded at the time + theft or loss (Form 106)
      + ending inventory                                            = total accounted for
    difference = accounted for - to account for;  variance % = difference / to account for
    adjustments (loss adjustments, corrections, breakage recorded after a count)
    difference after adjustments = difference + adjustments

The **difference is taken before adjustments** (issue 15): a record that takes stock off the book
after a count found it short (a loss adjustment resolving a discrepancy, a correction, a
breakage recorded after a count that was taken after it) is listed after the difference, each
with who signed it, and never makes the shortage disappear from the difference or the variance
(which is what ``flagged`` judges). For a period ending in a count with every dose reconciled,
the difference is the count's counted figure minus the book at the count as it would be
without those adjustments, and the difference after adjustments is counted minus the book.

``accountability`` is pure: it reads only decoded entries (the dicts of the canonical bytes, in
``seq`` order), so a report or the offline bundle verifier recomputes every figure from the
entries alone; ``audit`` is the wrapper that reads them from the store. Decimal only.

Periods and boundaries (per NDC). An entry belongs to the period when its event time
``occurred_at`` is after ``start`` and at or before the period's effective end:
- **Ending inventory** is the latest physical count of the product (a ``stock_counted`` line or
  an ``inventory_taken``) after ``start`` and at or before ``end``; the period's activity then
  ends at that count (entries ordered by event time, then ``seq``). With no such count the
  ending figure is the book at ``end``, labelled ``book``. An initial inventory inside the
  period is never the ending count: it begins the records (see below).
- **Beginning inventory** is the book at ``start``; it is labelled ``counted`` when the latest
  physical count at or before ``start`` is followed by no movement of the product up to ``start``
  (then the counted figure is used), else ``book``. An initial inventory taken inside the period
  brings stock under account and is added to the beginning inventory.
- An esketamine session (issue 19) administers its devices whole: their mL is both drawn and
  administered (nothing is left to waste), and the containers column counts devices.
- Administered is what was **given** (from the administration); wasted comes from the
  ``dose_wasted`` entries only (counted once). A diluted preparation (issue 19) is drawn by its
  ``preparation_made`` entry; its infusion counts as administered the product mL its mg given
  stand for (``product_ml_given``) and its waste the rest (``preparation_wasted.product_ml``). A dose drawn but neither given nor wasted is
  therefore unaccounted for and shows in the difference, as it should.
- **Breakage** is the mL a ``breakage_recorded`` entry took off the book (not recoverable) when
  it was recorded at the time: before every count of the product taken after it. Recoverable
  breakage moves nothing until it is destroyed (then it is on the destroyed line). One recorded
  after a count that was taken after it (in the period) is an adjustment.
- **Theft or loss** is the mL a Form 106 report (``theft_or_loss_reported``) took off the book.
- **Adjustments** (positive: taken off the book): every ``loss_adjusted`` (a discrepancy
  accepted as a loss), every correction (mL removed, less mL added back) and every late
  breakage. ``adjustment_entries`` lists each one (seq, times, mL, what it refers to, every
  signature: who approved and who was the second person). A loss adjusted for a discrepancy of
  the count the beginning rests on (or an earlier one) is listed with ``in_counted_beginning``
  and left out of the sum: the counted beginning already found it gone.

Besides the lines, each product names where its figures came from (for a report to print):
``beginning_source`` (the count or inventory the beginning rests on, or the initial inventory
taken inside the period; ``None`` for a book figure) and ``ending_source`` (the count that ends
the period, ``None`` for the book), ``unreconciled`` (mL/mg/containers drawn in the period but
neither given nor wasted: part of the difference) and ``form``. With ``series=True`` each
product also carries ``series``: the book balance in mL after each movement across the period,
``[(occurred_at, ml), ...]`` after each entry that moves it, in event-time order, starting with
the book at ``start`` (time ``start``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ledger.domain.errors import InvalidInput
from ledger.domain.period import Period, Window
from ledger.domain.projections import movements
from ledger.integrity.canonical import format_time

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
_LAST = 1 << 62  # a seq after every real one: "everything at this instant"

LINES = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred",
         "breakage", "theft_or_loss", "ending", "accounted_for", "difference", "adjustments",
         "difference_after_adjustments")
OUT_LINES = ("administered", "wasted", "destroyed", "transferred", "breakage", "theft_or_loss")
#: Entry kind -> audit line (the book-side movements of these kinds are what the lines explain).
CATEGORY = {
    "stock_received": "receipts",
    "dose_wasted": "wasted",
    "stock_destroyed": "destroyed",
    "stock_transferred": "transferred",
    "stock_returned": "transferred",
    "theft_or_loss_reported": "theft_or_loss",
    "breakage_recorded": "breakage",
}
#: Entry kinds whose movements are adjustments, listed after the difference (a breakage is one
#: only when recorded after a count that was taken after it).
ADJUSTMENT_KINDS = frozenset({"loss_adjusted", "entry_corrected"})
DEFAULT_VARIANCE_THRESHOLD = Decimal("1.00")


@dataclass
class _Product:
    ndc: str
    ndc_key: str
    name: str
    strength: Decimal
    container_ml: Decimal
    ml: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(LINES, ZERO))
    form: str = ""
    beginning_basis: str = "book"
    ending_basis: str = "book"
    ending_as_of: str = ""
    drawn: Decimal = ZERO
    opening: dict[str, Any] | None = None  # an initial inventory taken inside the period
    #: seq -> the adjustment entry's item (see ``_adjustment``), its mL summed over the entry's vials
    adjustments: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: What a container is (issue 19): "vial" for products added before, "nasal_spray_device" ...
    unit_kind: str = "vial"


@dataclass(frozen=True)
class _Count:
    key: tuple[str, int]
    #: ndc_key -> counted mL (a product absent from an inventory counts as 0 mL)
    counted: dict[str, Decimal]
    scope: frozenset[str] | None  # None: every product (an inventory)
    source: dict[str, Any] = field(default_factory=dict)  # which entry (see ``_source``)


def _source(e: dict[str, Any]) -> dict[str, Any]:
    """The entry a physical figure came from: seq, kind, event time (and for an inventory its
    type and opening/close of business)."""
    out = {"seq": e["seq"], "kind": e["kind"], "occurred_at": e["occurred_at"]}
    if e["kind"] == "inventory_taken":
        out.update(inventory_type=e["inventory_type"], taken_at=e["taken_at"])
    return out


def _signers(e: dict[str, Any]) -> list[dict[str, str]]:
    """Who signed an entry and what each signature means (performed, approved, witnessed ...)."""
    return [{"staff_id": s["staff_id"], "printed_name": s["printed_name"], "meaning": s["meaning"]}
            for s in e.get("signatures", ())]


def _adjustment(e: dict[str, Any], late_after: tuple[int, ...] = ()) -> dict[str, Any]:
    """An adjustment listed after the difference: the entry, what it refers to, who signed it."""
    item: dict[str, Any] = {"seq": e["seq"], "kind": e["kind"], "occurred_at": e["occurred_at"],
                            "recorded_at": e["recorded_at"], "ml": ZERO, "signatures": _signers(e),
                            "in_counted_beginning": False}
    if e["kind"] == "loss_adjusted":
        item.update(category=e["category"], discrepancy_id=e["discrepancy_id"], count_seq=e.get("count_seq"),
                    resolution_seq=e.get("resolution_seq"))
        # issue 19: a package opened short raises discrepancy D<seq>-P (``services.packages``)
        raised_by = "package opening" if str(e["discrepancy_id"]).endswith("-P") else "count"
        item["description"] = (f"loss adjustment for discrepancy {e['discrepancy_id']}"
                               + (f" of {raised_by} entry {e['count_seq']}" if e.get("count_seq") is not None else "")
                               + f", resolved as {e['category'].replace('_', ' ')}"
                               + (f" (entry {e['resolution_seq']})" if e.get("resolution_seq") is not None else ""))
    elif e["kind"] == "entry_corrected":
        item.update(corrects_seq=e["corrects_seq"], corrects_kind=e["corrects_kind"], reason=e["reason"])
        item["description"] = f"correction of entry {e['corrects_seq']} ({e['corrects_kind']}): {e['reason']}"
    else:  # a breakage recorded after a count that was taken after it
        item.update(what=e["what"], after_counts=list(late_after), reason=e["description"])
        item["description"] = (f"{e['what']} recorded after count entr{'y' if len(late_after) == 1 else 'ies'} "
                               f"{', '.join(str(c) for c in late_after)}, taken after it: {e['description']}")
    return item


def _pct(diff: Decimal, base: Decimal) -> Decimal:
    if base == 0:
        return ZERO
    return (diff * 100 / base).quantize(CENT, ROUND_HALF_EVEN)


def _count_of(e: dict[str, Any]) -> _Count | None:
    """The physical count a ``stock_counted`` or ``inventory_taken`` entry records (None for
    another kind)."""
    key = (e["occurred_at"], e["seq"])
    if e["kind"] == "stock_counted":
        counted = {ln["product"]["ndc_key"]: Decimal(ln["counted_ml"]) for ln in e["lines"]}
        return _Count(key, counted, frozenset(counted), _source(e))
    if e["kind"] == "inventory_taken":
        counted = {}
        for it in e["items"]:
            k = it["product"]["ndc_key"]
            counted[k] = counted.get(k, ZERO) + Decimal(it["ml"])
        return _Count(key, counted, None, _source(e))
    return None


def _counts(entries: Iterable[dict[str, Any]]) -> list[_Count]:
    out = [c for c in map(_count_of, entries) if c is not None]
    return sorted(out, key=lambda c: c.key)


def _passes(entries: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Entries that can be read more than once, in ``seq`` order (issue 22): a streamed snapshot
    (an object with ``of_kinds``, like ``reports.source.EntryStream``, which reads them again from
    the database on each pass, in ``seq`` order) as it is, so no list of every entry is held;
    anything else as a list sorted by ``seq``."""
    if hasattr(entries, "of_kinds"):
        return entries
    return sorted(entries, key=lambda e: e["seq"])


def _of_kinds(entries: Iterable[dict[str, Any]], *kinds: str) -> Iterable[dict[str, Any]]:
    """The entries of these kinds, in the order given (a streamed snapshot decodes no other)."""
    if hasattr(entries, "of_kinds"):
        return entries.of_kinds(*kinds)  # type: ignore[attr-defined,no-any-return]
    wanted = set(kinds)
    return (e for e in entries if e["kind"] in wanted)


def _local_day(t: str, tz: Any) -> str:
    """The local day (YYYY-MM-DD) of an entry time in the zone ``tz`` (a ``ZoneInfo``)."""
    from ledger.integrity.canonical import parse_time

    return parse_time(t).astimezone(tz).strftime("%Y-%m-%d")


def accountability(entries: Iterable[dict[str, Any]], start: datetime | None = None, end: datetime | None = None, *,
                   variance_threshold: Decimal | None = None, series: bool = False,
                   window: Window | None = None, series_days: str | None = None) -> dict[str, Any]:
    """Every audit figure for ``start`` < event time <= ``end``, per NDC and in total, from
    decoded entries of one registrant (pure; see the module docstring for the boundaries).
    ``series=True`` adds each product's book balance across the period (for a stock chart).

    With ``window`` (issue 20, ``audit_window``) the period is exactly the window, placed by
    ``(event time, seq)``: every product begins at the window's beginning count (a product it
    did not count was not on hand: "none") and ends at its ending count, so every figure is of
    the same window and the logs printed for it total the same.

    ``series_days`` (a time zone, with ``series``): each product's series keeps only the book at
    ``start`` and after the last movement of each local day that has one (what a report charts;
    the same points as the full series reduced to its last point per local day), so memory grows
    with the days, not with the entries (issue 22).

    ``entries`` may be a streamed snapshot (``_passes``): it is then read once for the products,
    policies and counts (those kinds only) and once whole, never held."""
    entries = _passes(entries)
    if window is not None:
        start_key, end_key = window.begin, window.end
    elif start is None or end is None:
        raise TypeError("accountability needs start and end, or a window")
    else:
        start_key = (format_time(start), _LAST)
        end_key = (format_time(end), _LAST)
    products: dict[str, _Product] = {}
    threshold = variance_threshold
    policy: dict[str, Any] | None = None  # the last policy recorded by the period's end
    count_list: list[_Count] = []
    # Which count raised each discrepancy: a loss adjusted in the period for a discrepancy of the
    # count the beginning rests on (or of an earlier one) is already out of the counted beginning.
    raised_by: dict[str, tuple[str, int]] = {}
    # One pass, in seq order, over the few kinds the rest depends on (a streamed snapshot decodes
    # no other entry here).
    for e in _of_kinds(entries, "product_added", "policy_set", "stock_counted", "inventory_taken"):
        if e["kind"] == "product_added":
            p = e["product"]
            products[p["ndc_key"]] = _Product(p["ndc"], p["ndc_key"], p["name"], Decimal(p["strength_mg_per_ml"]),
                                              Decimal(p["container_ml"]), form=p.get("form", ""),
                                              unit_kind=p.get("unit_kind", "vial"))
        elif e["kind"] == "policy_set":
            if e["recorded_at"] <= end_key[0]:
                policy = e
        else:
            count_list.append(_count_of(e))  # type: ignore[arg-type]
            if e["kind"] == "stock_counted":
                raised_by.update((ln["discrepancy_id"], (e["occurred_at"], e["seq"])) for ln in e["lines"]
                                 if ln.get("discrepancy_id"))
    if threshold is None:
        threshold = Decimal(policy["variance_threshold_percent"]) if policy else DEFAULT_VARIANCE_THRESHOLD
    counts = sorted(count_list, key=lambda c: c.key)

    # Per NDC: the count that ends the period (if any) and the one the beginning may rest on.
    ending: dict[str, _Count] = {}
    begin_count: dict[str, _Count] = {}
    for c in counts:
        for k in products:
            if c.scope is not None and k not in c.scope:
                continue
            if window is not None:
                # One window for every product: its two counts, never a partial count between
                if c.key == window.begin:
                    begin_count[k] = c
                elif c.key == window.end:
                    ending[k] = c
                continue
            if start_key < c.key <= end_key:
                if c.source.get("inventory_type") == "initial":
                    continue  # it begins the records (added to the beginning), it cannot also end them
                ending[k] = c
            elif c.key <= start_key:
                begin_count[k] = c
    for k, p in products.items():
        c = ending.get(k)
        p.ending_basis = "counted" if c else "book"
        p.ending_as_of = c.key[0] if c else end_key[0]

    book_at_start: dict[str, Decimal] = dict.fromkeys(products, ZERO)
    book_at_end: dict[str, Decimal] = dict.fromkeys(products, ZERO)
    moved_after_begin_count: set[str] = set()
    points: dict[str, list[tuple[tuple[str, int], Decimal]]] = {k: [] for k in products}
    # series_days: per product, local day -> [the day's last (event time, seq), the mL it moved]
    zone = None
    if series_days is not None:
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(series_days)
    days: dict[str, dict[str, list[Any]]] = {k: {} for k in products}
    day_of: dict[str, str] = {}  # event time -> local day (entries of one command share a time)

    def end_of(k: str) -> tuple[str, int]:
        c = ending.get(k)
        return c.key if c else end_key

    def late_after(e: dict[str, Any], k: str) -> tuple[int, ...]:
        """The counts of ``k`` in the period's activity that were taken at or after the event of
        ``e`` but recorded before it: they could not see it (empty: recorded at the time)."""
        return tuple(c.key[1] for c in counts if (c.scope is None or k in c.scope) and c.key[1] < e["seq"]
                     and e["occurred_at"] <= c.key[0] and c.key <= end_of(k))

    for e in entries:
        key = (e["occurred_at"], e["seq"])
        kind = e["kind"]
        for _vial, k, ml in movements(e):
            if k not in products:
                continue
            if key <= start_key:
                book_at_start[k] += ml
                bc = begin_count.get(k)
                if bc is not None and key > bc.key:
                    moved_after_begin_count.add(k)
            if key <= end_of(k):
                book_at_end[k] += ml
            if start_key < key <= end_key and series:
                if zone is None:
                    points[k].append((key, ml))
                else:
                    day = day_of.get(key[0])
                    if day is None:
                        if len(day_of) > 4096:
                            day_of.clear()
                        day = day_of[key[0]] = _local_day(key[0], zone)
                    agg = days[k].get(day)
                    if agg is None:
                        days[k][day] = [key, ml]
                    else:
                        agg[0] = max(agg[0], key)
                        agg[1] += ml
            if not (start_key < key <= end_of(k)):
                continue
            p = products[k]
            if kind == "inventory_taken":
                p.ml["beginning"] += ml  # an initial inventory inside the period brings stock under account
                if p.opening is None:
                    p.opening = _source(e)
            elif kind in ("dose_administered", "preparation_made"):
                p.drawn -= ml  # the draw; what it explains is counted from ml_given and the waste entries
            elif kind == "esketamine_session_recorded":  # issue 19: devices used whole, nothing left to waste
                p.drawn -= ml
                p.ml["administered"] -= ml
            elif kind in ADJUSTMENT_KINDS or (kind == "breakage_recorded" and late_after(e, k)):
                # After the difference: taken off the book (ml < 0) counts positive
                item = p.adjustments.get(e["seq"])
                if item is None:
                    item = p.adjustments[e["seq"]] = _adjustment(e, late_after(e, k))
                item["ml"] -= ml
                bc = begin_count.get(k)
                raised = raised_by.get(e.get("discrepancy_id")) if kind == "loss_adjusted" else None
                if raised is not None and bc is not None and raised <= bc.key:
                    item["in_counted_beginning"] = True  # the count already found it gone: not a loss twice
            elif kind in CATEGORY:
                line = CATEGORY[kind]
                p.ml[line] += ml if line == "receipts" else -ml
            else:  # a kind that moves stock and has no line would be a silent hole: refuse
                raise ValueError(f"entry kind {kind!r} moves stock but has no audit line")
        if kind == "dose_administered":
            k = e["draws"][0]["product"]["ndc_key"]
            if k in products and start_key < key <= end_of(k):
                products[k].ml["administered"] += Decimal(e["ml_given"])
        elif kind == "dose_wasted":
            k = e["product"]["ndc_key"]
            if k in products and start_key < key <= end_of(k):
                products[k].ml["wasted"] += Decimal(e["ml"])
        elif kind in ("preparation_infused", "preparation_wasted"):
            # Issue 19: a preparation's draw is split in product mL as its mg are (given: mL drawn
            # x mg given / mg; wasted: the rest), so drawn = administered + wasted exactly.
            k = e["product"]["ndc_key"]
            if k in products and start_key < key <= end_of(k):
                line, ml = (("administered", e["product_ml_given"]) if kind == "preparation_infused"
                            else ("wasted", e["product_ml"]))
                products[k].ml[line] += Decimal(ml)

    lines_out = []
    totals = {u: dict.fromkeys(LINES, ZERO) for u in ("ml", "mg", "containers")}
    for k in sorted(products):
        p = products[k]
        bc = begin_count.get(k)
        if bc is not None and k not in moved_after_begin_count:
            p.ml["beginning"] += bc.counted.get(k, ZERO)
            p.beginning_basis = "counted"
        else:
            for item in p.adjustments.values():
                item["in_counted_beginning"] = False  # a book beginning still holds what the loss took
            p.ml["beginning"] += book_at_start[k]
        c = ending.get(k)
        p.ml["ending"] = c.counted.get(k, ZERO) if c else book_at_end[k]
        if window is not None:
            # The window's counts cover every product on hand: one they left out had none
            if p.beginning_basis == "book" and p.ml["beginning"] == 0 and p.opening is None:
                p.beginning_basis = "none"
            if p.ending_basis == "book" and p.ml["ending"] == 0:
                p.ending_basis = "none"
        p.ml["to_account_for"] = p.ml["beginning"] + p.ml["receipts"]
        p.ml["accounted_for"] = sum((p.ml[x] for x in OUT_LINES), ZERO) + p.ml["ending"]
        p.ml["difference"] = p.ml["accounted_for"] - p.ml["to_account_for"]
        items = [p.adjustments[s] for s in sorted(p.adjustments, key=lambda s: (p.adjustments[s]["occurred_at"], s))]
        p.ml["adjustments"] = sum((i["ml"] for i in items if not i["in_counted_beginning"]), ZERO)
        p.ml["difference_after_adjustments"] = p.ml["difference"] + p.ml["adjustments"]
        if all(v == 0 for v in p.ml.values()):
            continue  # a product never stocked in or before the period
        mg = {x: (v * p.strength).quantize(CENT) for x, v in p.ml.items()}
        containers = {x: (v / p.container_ml).quantize(CENT, ROUND_HALF_EVEN) for x, v in p.ml.items()}
        variance = _pct(p.ml["difference"], p.ml["to_account_for"])
        for i in items:
            i["mg"] = (i["ml"] * p.strength).quantize(CENT)
        for x in LINES:
            totals["ml"][x] += p.ml[x]
            totals["mg"][x] += mg[x]
            totals["containers"][x] += containers[x]
        unreconciled = p.drawn - p.ml["administered"] - p.ml["wasted"]
        out = {
            "ndc": p.ndc, "ndc_key": p.ndc_key, "name": p.name, "strength_mg_per_ml": p.strength,
            "container_ml": p.container_ml, "ml": dict(p.ml), "mg": mg, "containers": containers,
            "variance_percent": variance, "flagged": abs(variance) > threshold,
            "variance_after_adjustments_percent": _pct(p.ml["difference_after_adjustments"], p.ml["to_account_for"]),
            "adjustment_entries": items,
            "beginning_basis": p.beginning_basis, "ending_basis": p.ending_basis, "ending_as_of": p.ending_as_of,
            "book_at_end_ml": book_at_end[k],
            "form": p.form,
            "beginning_source": bc.source if p.beginning_basis == "counted" else p.opening,
            "ending_source": c.source if c else None,
            "unreconciled": {"ml": unreconciled, "mg": (unreconciled * p.strength).quantize(CENT),
                             "containers": (unreconciled / p.container_ml).quantize(CENT, ROUND_HALF_EVEN)},
            # issue 19: a device product's containers are its devices (present only for them, so
            # reports of vial products made before rebuild to the same figures)
            **({"unit_kind": p.unit_kind} if p.unit_kind != "vial" else {}),
        }
        if series and zone is not None:
            balance = book_at_start[k]
            pts = [(start_key[0], balance)]
            for _day, (key, ml) in sorted(days[k].items()):  # local days sort as time does
                balance += ml
                pts.append((key[0], balance))
            out["series"] = pts
        elif series:
            balance = book_at_start[k]
            pts = [(start_key[0], balance)]
            last = None
            for key, ml in sorted(points[k]):  # one point per entry (its vials summed)
                balance += ml
                if key == last:
                    pts[-1] = (key[0], balance)
                else:
                    pts.append((key[0], balance))
                last = key
            out["series"] = pts
        lines_out.append(out)
    total_variance = _pct(totals["mg"]["difference"], totals["mg"]["to_account_for"])
    return {
        "start": start_key[0] if window is not None else format_time(start),
        "end": end_key[0] if window is not None else format_time(end), "variance_threshold_percent": threshold,
        **({"window": window.to_json()} if window is not None else {}),
        "products": lines_out,
        "total": {**totals, "variance_percent": total_variance, "flagged": abs(total_variance) > threshold,
                  "variance_after_adjustments_percent": _pct(totals["mg"]["difference_after_adjustments"],
                                                             totals["mg"]["to_account_for"])},
    }


class StoredEntries:
    """A registrant's stored entries, decoded, read again from the database on each pass, a page
    at a time in ``seq`` order (issue 22: a year of a clinic group's entries decoded into one list
    took about 7 KiB each), inside the caller's read transaction so every pass reads the same
    ones. Iterable; ``of_kinds`` decodes only the entries of the kinds asked for (their canonical
    bytes carry ``"kind":"NAME"``; what is decoded is still checked by its own ``kind``)."""

    PAGE = 2000

    def __init__(self, conn: Any, registrant: str):
        self._conn, self._registrant = conn, registrant

    def _rows(self) -> Iterator[bytes]:
        from ledger.storage.store import raw

        start = 0
        while True:
            rows = raw(self._conn).rows(
                self._conn, "SELECT seq, canonical FROM entries WHERE registrant = :r AND seq >= :s "
                            "ORDER BY seq LIMIT :n", {"r": self._registrant, "s": start, "n": self.PAGE})
            for r in rows:
                yield bytes(r["canonical"])
            if len(rows) < self.PAGE:
                return
            start = int(rows[-1]["seq"]) + 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from ledger.integrity.canonical import decode

        return map(decode, self._rows())

    def of_kinds(self, *kinds: str) -> Iterator[dict[str, Any]]:
        from ledger.integrity.canonical import decode

        marks = [f'"kind":"{k}"'.encode() for k in kinds]
        for data in self._rows():
            if any(m in data for m in marks):
                e = decode(data)
                if e.get("kind") in kinds:
                    yield e


def audit(ledger: Any, registrant: str, start: datetime, end: datetime, *,
          variance_threshold: Decimal | None = None, series: bool = False) -> dict[str, Any]:
    """The audit of one registrant over a period, from its stored entries (read-only, streamed)."""
    with ledger.reading() as conn:
        return accountability(StoredEntries(conn, registrant), start, end,
                              variance_threshold=variance_threshold, series=series)


# --- the audit window (issue 20: one period, one meaning) -------------------------------------
#: How many counts an error or an answer offers on each side of an asked day.
OFFERS_EACH_SIDE = 3


def covering_counts(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The counts and inventories an audit can run between: every inventory, and every count
    that counted each product then on hand (book not zero at its event time, in event-time
    order). Each as its ``_source`` (seq, kind, occurred_at; an inventory's type), in event-time
    order.

    Issue 22: no entry is held. The counts are read first (those kinds only), then every
    entry's movements are added to the book of the first count after it in event-time order, so
    the book at each count is a running sum over the counts (memory in counts, not entries; the
    same exact Decimal sums as adding in event-time order)."""
    entries = _passes(entries)
    found = sorted(((e["occurred_at"], e["seq"]), _source(e),
                    None if e["kind"] == "inventory_taken" else frozenset(ln["product"]["ndc_key"] for ln in e["lines"]))
                   for e in _of_kinds(entries, "inventory_taken", "stock_counted"))
    keys = [key for key, _, _ in found]
    # moved[i]: mL per product moved after count i-1 and before count i (the last: after all)
    moved: list[dict[str, Decimal]] = [{} for _ in range(len(found) + 1)]
    for e in entries:
        changes = movements(e)
        first = next(changes, None)
        if first is None:
            continue
        before = moved[bisect.bisect_right(keys, (e["occurred_at"], e["seq"]))]
        for _vial, k, ml in itertools.chain((first,), changes):
            before[k] = before.get(k, ZERO) + ml
    book: dict[str, Decimal] = {}
    out = []
    for (_key, source, counted), delta in zip(found, moved, strict=False):
        for k, ml in delta.items():
            book[k] = book.get(k, ZERO) + ml
        if counted is None or all(k in counted for k, ml in book.items() if ml != 0):
            out.append(source)
    return out


def _key(src: dict[str, Any]) -> tuple[str, int]:
    return (src["occurred_at"], src["seq"])


def window_offers(entries: Iterable[dict[str, Any]], period: Period,
                  candidates: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The counts nearest each asked day that an audit could begin or end at (up to
    ``OFFERS_EACH_SIDE`` before the end of the day and as many after), for a page or an error to
    offer: ``{"from": [...], "to": [...]}``."""
    if candidates is None:
        candidates = covering_counts(entries)
    out = {}
    for name, day in (("from", period.start), ("to", period.end)):
        day_end = Period(day, day, period.tz).end_utc
        before = [c for c in candidates if c["occurred_at"] < day_end]
        after = [c for c in candidates if c["occurred_at"] >= day_end]
        out[name] = before[-OFFERS_EACH_SIDE:] + after[:OFFERS_EACH_SIDE]
    return out


class NoAuditWindow(InvalidInput):
    """No two counts or inventories frame the asked days; ``offers`` lists the nearest ones
    (the HTTP answer carries them, so a page can offer them)."""

    type = "audit-window-unavailable"

    def __init__(self, reason: str, *, offers: dict[str, list[dict[str, Any]]], field: str | None = None):
        super().__init__(reason, field=field)
        self.offers = offers
        self.problem_extra = {"offers": offers}


def _local(source: dict[str, Any], period: Period) -> str:
    """A count's time as the clinic reads it (the error names it to a person): local, to the
    minute, with the zone's abbreviation."""
    from zoneinfo import ZoneInfo

    from ledger.integrity.canonical import parse_time

    at = source["occurred_at"]
    at = parse_time(at) if isinstance(at, str) else at
    return at.astimezone(ZoneInfo(period.tz)).strftime("%Y-%m-%d %H:%M %Z")


def audit_window(entries: Iterable[dict[str, Any]], period: Period,
                 candidates: list[dict[str, Any]] | None = None) -> Window:
    """The window an audit of the asked local days runs over: it **begins** at the first count
    or inventory covering every product on hand taken on the ``from`` day, else the latest one
    before that day, else the first one after it (the records begin later), and **ends** at the
    latest such count on or before the ``to`` day, after the beginning. Every figure of the audit, and of the logs
    printed for its window, is of exactly that window. None to end at: ``NoAuditWindow``
    offering the nearest counts. The window is the registrant's first period when it begins at
    their initial inventory. ``candidates``: ``covering_counts(entries)`` when the caller has them.

    The entries are read by ``covering_counts`` only (issue 22: never held)."""
    if candidates is None:
        candidates = covering_counts(entries)
    from_start, from_end = period.start_utc, Period(period.start, period.start, period.tz).end_utc
    to_end = period.end_utc
    on_day = [c for c in candidates if from_start <= c["occurred_at"] < from_end]
    before = [c for c in candidates if c["occurred_at"] < from_start]
    after = [c for c in candidates if c["occurred_at"] >= from_start]
    # the first count of the from-day (an opening count), else the last before it, else the
    # first after it (the records begin later)
    begin = on_day[0] if on_day else before[-1] if before else next(iter(after), None)
    end = None
    if begin is not None:
        ends = [c for c in candidates if _key(begin) < _key(c) and c["occurred_at"] < to_end]
        end = ends[-1] if ends else None
    if begin is None or end is None:
        offers = window_offers(entries, period, candidates)
        near = {c["seq"]: c for c in offers["from"] + offers["to"]}  # the two lists may share counts
        have = ", ".join(f"entry {c['seq']} at {_local(c, period)}" for _, c in sorted(near.items())) or "none"
        why = ("no inventory or count covering every product on hand was recorded" if begin is None else
               f"no count covering every product on hand was taken after entry {begin['seq']} "
               f"({_local(begin, period)}) and on or before {period.end.isoformat()}")
        raise NoAuditWindow(f"an audit runs between two counts or inventories, and {why}; choose days that have "
                            f"a count at each end (nearest counts: {have})", offers=offers, field="to")
    initial = [c for c in candidates if c["kind"] == "inventory_taken" and c.get("inventory_type") == "initial"]
    first = bool(initial) and _key(initial[0]) == _key(begin)
    return Window(_key(begin), _key(end), begin, end, first_period=first)


def require_counted_beginnings(result: dict[str, Any]) -> None:
    """Refuse an audit whose beginning inventory of a product on hand is the book, not a count
    or inventory (issue 20), unless the window is the registrant's first period: there the
    figure stays, labelled ``book (first period)``."""
    first = bool((result.get("window") or {}).get("first_period"))
    for p in result["products"]:
        if p["beginning_basis"] != "book":
            continue
        if not first:
            raise InvalidInput(f"the beginning inventory of {p['ndc']} would be the book figure "
                               f"({p['ml']['beginning']} mL), not a counted inventory; an audit begins at a count "
                               "or inventory", field="from")
        p["beginning_basis"] = "book (first period)"


def audit_days(ledger: Any, registrant: str, from_day: Any, to_day: Any, *, series: bool = False) -> dict[str, Any]:
    """The audit of the asked local days (``Period.from_local_days`` in the registrant's time
    zone), over its window between two counts (``audit_window``), with the days asked, the window
    and the counts offered near each day (``offers``). Read-only; the entries are streamed
    (``StoredEntries``) in one read transaction, never held."""
    with ledger.reading() as conn:
        entries = StoredEntries(conn, registrant)
        first = next(iter(entries), None)
        if first is None:
            from ledger.domain.errors import NotFound

            raise NotFound(f"no registrant {registrant}", field="registrant")
        period = Period.from_local_days(from_day, to_day, first["time_zone"])
        candidates = covering_counts(entries)
        window = audit_window(entries, period, candidates)
        result = accountability(entries, window=window, series=series)
    require_counted_beginnings(result)
    result["asked"] = period.to_json()
    result["offers"] = window_offers(entries, period, candidates)
    return result
