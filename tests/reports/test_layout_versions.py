"""A report kind's layout version (issue 20): when a change makes older reports of a kind draw
differently from the same data (the audit's all-products total, the receiving log's invoiced
column), the kind's layout goes up; a report made at another layout is refused with the reason
and what to do, not with a bare byte difference."""

from __future__ import annotations

import dataclasses

import pytest
from pypdf import PdfReader

from reports import base
from reports.base import build_report
from tests.conftest import BACKENDS, DEA
from tests.reports.report_keys import check
from tests.reports.test_report_access_log import floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def test_a_report_of_another_layout_is_refused_with_the_reason(floor, monkeypatch):  # noqa: F811
    api = floor
    kind = base.kind_named("receiving")
    assert kind.layout == 3  # issue 20, one period: the all-products row adds mg only
    pdf, _ = build_report(api.ledger, "receiving", DEA, *api.period)
    assert check(api, pdf) == []  # this layout verifies
    # the same kind as an older release drew it
    monkeypatch.setitem(base.KINDS, "receiving", dataclasses.replace(kind, layout=1))
    old, _ = build_report(api.ledger, "receiving", DEA, *api.period)
    monkeypatch.setitem(base.KINDS, "receiving", kind)
    problems = check(api, old)
    assert any("made with layout 1 of the receiving report; this csledger draws layout 3" in p for p in problems), problems


def test_unchanged_kinds_embed_no_layout(floor):  # noqa: F811
    """A kind still at layout 1 embeds what it always did, so its older reports rebuild byte for byte."""
    import json

    api = floor
    pdf, _ = build_report(api.ledger, "administrations", DEA, *api.period)
    from reports import layout

    data = json.loads(PdfReader(__import__("io").BytesIO(pdf)).attachments[layout.DATA_FILE][0])
    assert "layout" not in data["build"]
    assert base.kind_named("administrations").layout == 1


def test_the_audit_total_adds_only_mg_across_strengths(floor):  # noqa: F811
    """Issue 20: "Total, all products" added mL of 10 mg/mL and 50 mg/mL together. With two
    strengths the total prints mg only; with one, mL and containers too."""
    import copy

    from reports import audit as report_audit
    from reports.verify import read_report_data
    from tests.reports.test_one_period import close_with_count

    api = floor
    close_with_count(api)  # issue 20: the audit runs between the initial inventory and a count
    pdf, _ = build_report(api.ledger, "audit", DEA, *api.period)
    data, _ = read_report_data(pdf)
    (one,) = data["figures"]["products"]
    total = report_audit.blocks(data)[-1]
    assert total.title == "Total, all products" and total.rows[0][2].endswith("mL")
    other = copy.deepcopy(one)
    other.update(ndc_key="52584003710", ndc="52584-0037-10", strength_mg_per_ml="10.00")
    data["figures"]["products"].append(other)
    data["figures"]["charts"][other["ndc_key"]] = data["figures"]["charts"][one["ndc_key"]]
    total = report_audit.blocks(data)[-1]
    assert total.title.startswith("Total, all products (in mg")
    assert all(row[2] in ("-", "") and row[3] in ("-", "") for row in total.rows), total.rows
    assert total.rows[0][1].endswith("mg")
