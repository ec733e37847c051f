"""Small charts drawn on the server as SVG markup (issue 21: the overview page). Pure functions:
figures in, a markup string out, every text escaped. Each chart is ``role="img"`` with an
``aria-label`` saying what it shows; the page puts a table with the same numbers after it (the
chart is a picture of the table, never the only place a number is).

The charts scale with their box: ``width="100%"`` and a ``viewBox``, no fixed pixel width (the
tablet and phone layouts). No ``style`` attribute: the pages' CSP allows no inline style;
``fill`` and ``stroke`` are presentation attributes, which it does not govern.

Coordinates are computed in ``Decimal`` like every figure here, and written with one decimal.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from html import escape

#: The drawing area of every chart, in viewBox units (the SVG scales to its box).
WIDTH, HEIGHT = Decimal(600), Decimal(160)
#: Room for the axis labels: left (balances), bottom (dates), top (so the top label is not cut).
LEFT, BOTTOM, TOP, RIGHT = Decimal(56), Decimal(22), Decimal(10), Decimal(8)
_TENTH = Decimal("0.1")
INK, BAR, WASTE, GRID = "#1f4e79", "#2e75b6", "#c55a11", "#c8ced6"


def _n(v: Decimal) -> str:
    """A coordinate as text: one decimal, no exponent, no "-0.0"."""
    q = v.quantize(_TENTH, rounding=ROUND_HALF_EVEN)
    if q == 0:
        q = Decimal("0.0")
    return format(q, "f")


def step_path(points: Sequence[tuple[Decimal, Decimal]], x_end: Decimal) -> str:
    """The ``d`` of a step line through ``points`` (x, y) sorted by x: from each point a
    horizontal segment at its y to the next point's x, then a vertical one to the next y, and
    the last y held to ``x_end``. Only horizontal and vertical segments (a balance stays what it
    is until a movement changes it); segments of no length are left out.

    >>> step_path([(Decimal(0), Decimal(5)), (Decimal(3), Decimal(2))], Decimal(4))
    'M 0.0 5.0 L 3.0 5.0 L 3.0 2.0 L 4.0 2.0'
    """
    if not points:
        return ""

    def q(v: Decimal) -> Decimal:  # compared as written: two x that print alike are one x
        return Decimal(_n(v))

    x, y = q(points[0][0]), q(points[0][1])
    x_end = q(x_end)
    out = [(x, y)]
    for nx, ny in ((q(a), q(b)) for a, b in points[1:]):
        nx = max(nx, x)  # never backwards (points are sorted; rounding must not reverse them)
        if nx != x:
            out.append((nx, y))
            x = nx
        if ny != y:
            out.append((x, ny))
            y = ny
    if x_end > x:
        out.append((x_end, y))
    return "M " + " L ".join(f"{_n(px)} {_n(py)}" for px, py in out)


def _scale(top: Decimal) -> Decimal:
    """A round upper bound for the y axis (1, 2 or 5 times a power of ten), at least ``top``."""
    if top <= 0:
        return Decimal(1)
    p = Decimal(1)
    while p * 10 <= top:
        p *= 10
    while p > top:
        p /= 10
    for m in (1, 2, 5, 10):
        if m * p >= top:
            return m * p
    return 10 * p  # pragma: no cover


def _open(label: str, height: Decimal, css: str) -> str:
    return (f'<svg class="chart {css}" role="img" aria-label="{escape(label)}" width="100%" '
            f'viewBox="0 0 {_n(WIDTH)} {_n(height)}" preserveAspectRatio="xMidYMid meet" '
            f'xmlns="http://www.w3.org/2000/svg">')


def _text(x: Decimal, y: Decimal, s: str, anchor: str = "start") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="13" fill="#333" text-anchor="{anchor}" '
            f'aria-hidden="true">{escape(s)}</text>')


def step_chart(label: str, start: Decimal, end: Decimal, steps: Sequence[tuple[Decimal, Decimal]],
               *, unit: str, ticks: Sequence[tuple[Decimal, str]] = ()) -> str:
    """A balance over time as steps. ``steps`` are (time, balance after) with time in any unit
    between ``start`` and ``end`` (seconds), the first one the balance at ``start``; ``ticks``
    are (time, text) labels under the axis."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = (end - start) or Decimal(1)
    top = _scale(max((b for _, b in steps), default=Decimal(0)))

    def x(t: Decimal) -> Decimal:
        return LEFT + plot_w * (min(max(t, start), end) - start) / span

    def y(b: Decimal) -> Decimal:
        return TOP + plot_h - plot_h * max(b, Decimal(0)) / top

    parts = [_open(label, HEIGHT, "steps")]
    for v in (Decimal(0), top / 2, top):
        parts.append(f'<line x1="{_n(LEFT)}" x2="{_n(WIDTH - RIGHT)}" y1="{_n(y(v))}" y2="{_n(y(v))}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
        parts.append(_text(LEFT - 4, y(v) + 4, f"{v.normalize():f} {unit}", "end"))
    for t, s in ticks:
        parts.append(_text(x(t), HEIGHT - 6, s, "middle"))
    d = step_path([(x(t), y(b)) for t, b in steps], x(end))
    if d:
        parts.append(f'<path d="{d}" fill="none" stroke="{INK}" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(label: str, bars: Sequence[tuple[str, Decimal]], *, unit: str,
              marks: Sequence[str] = ()) -> str:
    """Vertical bars, one per (text, value), the value written above each bar and ``marks[i]``
    (e.g. a waste share) under its value when given."""
    head = Decimal(24)  # room above the bars: the marks, then each bar's value
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM - head
    top = _scale(max((v for _, v in bars), default=Decimal(0)))
    n = len(bars) or 1
    slot = plot_w / n
    parts = [_open(label, HEIGHT, "bars"),
             f'<line x1="{_n(LEFT)}" x2="{_n(WIDTH - RIGHT)}" y1="{_n(TOP + head + plot_h)}" '
             f'y2="{_n(TOP + head + plot_h)}" stroke="{GRID}" stroke-width="1"/>',
             _text(LEFT - 4, TOP + head + plot_h, f"0 {unit}", "end"),
             _text(LEFT - 4, TOP + head + 4, f"{top.normalize():f} {unit}", "end")]
    for i, (text, v) in enumerate(bars):
        h = plot_h * max(v, Decimal(0)) / top
        bx = LEFT + slot * i + slot / 8
        by = TOP + head + plot_h - h
        parts.append(f'<rect x="{_n(bx)}" y="{_n(by)}" width="{_n(slot * 3 / 4)}" height="{_n(h)}" fill="{BAR}"/>')
        mid = LEFT + slot * i + slot / 2
        parts.append(_text(mid, by - 2, f"{v.normalize():f}" if v else "0", "middle"))
        if i < len(marks) and marks[i]:
            parts.append(_text(mid, TOP + 8, marks[i], "middle"))
        parts.append(_text(mid, HEIGHT - 6, text, "middle"))
    parts.append("</svg>")
    return "".join(parts)
