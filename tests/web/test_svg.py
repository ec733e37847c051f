"""Issue 21: the overview's charts are drawn by pure functions (api/web/svg.py). A balance is a
step line: horizontal while nothing moves, vertical at each movement, never a slope; text in a
chart is escaped; every chart scales to its box and says what it shows."""

from __future__ import annotations

import re
from decimal import Decimal as D

from api.web import svg


def _points(d: str) -> list[tuple[D, D]]:
    nums = [D(n) for n in re.findall(r"-?[0-9]+\.[0-9]", d)]
    return list(zip(nums[::2], nums[1::2], strict=True))


def test_a_step_path_has_only_horizontal_and_vertical_segments():
    d = svg.step_path([(D(0), D(50)), (D(10), D(30)), (D("10.04"), D(40)), (D(25), D(40)), (D(30), D(0))], D(60))
    assert d == "M 0.0 50.0 L 10.0 50.0 L 10.0 30.0 L 10.0 40.0 L 25.0 40.0 L 30.0 40.0 L 30.0 0.0 L 60.0 0.0"
    pts = _points(d)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        assert (x0 == x1) != (y0 == y1), (x0, y0, x1, y1)


def test_a_step_path_never_goes_backwards_and_holds_the_last_balance():
    d = svg.step_path([(D(5), D(1)), (D(3), D(2))], D(4))  # out of order: held at x=5, and x_end before it
    assert d == "M 5.0 1.0 L 5.0 2.0"
    assert svg.step_path([], D(10)) == ""
    assert svg.step_path([(D(0), D(7))], D(9)) == "M 0.0 7.0 L 9.0 7.0"


def test_charts_scale_say_what_they_show_and_escape_their_text():
    chart = svg.step_chart('<script>"x"</script> & co', D(0), D(100), [(D(0), D(10)), (D(50), D(4))], unit="mL",
                           ticks=[(D(0), "<b>1 Dec</b>")])
    assert chart.startswith('<svg class="chart steps" role="img" aria-label="&lt;script&gt;&quot;x&quot;')
    assert 'width="100%"' in chart and 'viewBox="0 0 600.0 160.0"' in chart and "style" not in chart
    assert "<script>" not in chart and "<b>" not in chart and "&lt;b&gt;1 Dec&lt;/b&gt;" in chart
    bars = svg.bar_chart("use", [("1 Dec", D("3.50")), ("8 Dec", D(0))], unit="mL", marks=["12.5%", ""])
    assert bars.count("<rect ") == 2 and ">3.5<" in bars and ">12.5%<" in bars and 'role="img"' in bars
