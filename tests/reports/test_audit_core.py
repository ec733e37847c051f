"""The audit PDF is the core audit: the worked example of docs/compliance.md recorded with the real services,
``csledger report audit`` and ``csledger verify-report`` run as subprocesses, and the PDF's
embedded figures compared with the worked example's figures computed by hand
(``tests/clinical/test_audit.py``: ``WORKED_EXAMPLE``, ``BOOK_ENDED``), never with the audit code's
own answer (issue 14). ``tests/clinical/test_audit_lines.py::test_pdf_by_hand`` does the same for a
period in which every line is non-zero."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from ledger.storage.store import Ledger, make_engine, migrate
from reports import audit as report_audit
from reports.fmt import Period
from reports.verify import read_report_data
from tests.cli.test_cli import run
from tests.clinical.test_audit import WORKED_EXAMPLE, figures, worked_example
from tests.conftest import DEA
from tests.reports.report_keys import CLI_KEY_DIR, admin_of, certify

TZ = "America/Chicago"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit_core")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    ops, t0, end = worked_example(ledger)
    certify(ledger, admin_of(ledger, DEA), tmp / CLI_KEY_DIR)  # reports are signed with it (issue 18)
    ledger.dispose()
    zone = zoneinfo.ZoneInfo(TZ)
    first = t0.astimezone(zone).date() - timedelta(days=1)
    last = datetime.now(UTC).astimezone(zone).date()
    pdf = tmp / "audit.pdf"
    run(["report", "audit", "--registrant", DEA, "--from", first.isoformat(), "--to", last.isoformat(),
         "--out", str(pdf), "--db", url], tmp)
    return {"url": url, "dir": tmp, "pdf": pdf, "first": first, "last": last, "t0": t0, "end": end}


def test_pdf_figures_are_the_core_audit(built):
    """The PDF's embedded figures are the worked example's, by hand, on every line and unit (the
    report's local days hold the same activity as the core test's instants). Catches
    administered taken from the draw, the ending from the book, the variance base, the total mg
    summed from mL, and a report that embeds other figures than the worked example's."""
    data, _ = read_report_data(built["pdf"].read_bytes())
    f = dict(data["figures"])
    charts = f.pop("charts")
    (p,) = f["products"]
    assert figures(p) == WORKED_EXAMPLE and figures(f["total"]) == WORKED_EXAMPLE
    assert all(isinstance(v, str) for u in ("ml", "mg", "containers") for v in p[u].values())
    # the worked example of docs/compliance.md, through the PDF path
    assert p["mg"]["beginning"] == "2300.00" and p["mg"]["receipts"] == "5000.00"
    assert p["mg"]["to_account_for"] == "7300.00" and p["mg"]["administered"] == "5400.00"
    assert p["mg"]["wasted"] == "350.00" and p["mg"]["ending"] == "1500.00" and p["ending_basis"] == "counted"
    assert p["mg"]["accounted_for"] == "7250.00" and p["mg"]["difference"] == "-50.00"
    assert p["variance_percent"] == "-0.68" and p["flagged"] is False
    assert p["ml"]["ending"] == "30.00" and p["containers"]["ending"] == "3.00"
    assert f["total"]["mg"]["difference"] == "-50.00" and f["total"]["variance_percent"] == "-0.68"
    # where the figures came from: the initial inventory (in the period) and the count
    assert p["beginning_source"]["kind"] == "inventory_taken"
    assert p["beginning_source"]["inventory_type"] == "initial"
    assert p["ending_source"]["kind"] == "stock_counted"
    assert p["unreconciled"]["ml"] == "0.00"
    # the chart: book balance from the initial inventory the window begins at (46 mL, issue 20)
    # to 31 mL left after 23 draws
    pts = charts[p["ndc_key"]]
    assert pts[0][1] == "46.00" and pts[-1][1] == "31.00"
    assert data["period"]["window"]["first_period"] is True


def _ledger(url: str) -> Ledger:
    return Ledger(make_engine(url))


def test_pdf_prints_the_figures(built):
    """The printed text carries the worked example's mg figures. Catches administered taken
    from the draw and the ending from the book."""
    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(built["pdf"]).pages)
    for s in ("2,300.00 mg", "5,000.00 mg", "7,300.00 mg", "5,400.00 mg", "350.00 mg", "1,500.00 mg",
              "7,250.00 mg", "-50.00 mg", "-0.68 %", "Ending inventory (counted)", "initial inventory taken at"):
        assert s in text, s


def test_verify_report_passes(built):
    p = run(["verify-report", str(built["pdf"]), "--db", built["url"]], built["dir"])
    assert p.stdout.startswith("OK"), p.stdout


def test_without_a_count_the_audit_is_refused(built):
    """Issue 20, one period: over the entries before the count (a smaller tree size) no count
    ends the window (the book-ended audit of ``BOOK_ENDED`` is the core's, per instant,
    tests/clinical/test_audit.py): the report is refused, offering the initial inventory."""
    from reports.errors import ReportError
    from reports.source import load_snapshot

    ledger = _ledger(built["url"])
    try:
        with ledger.reading() as conn:
            full = load_snapshot(conn, DEA)
            counted = next(e["seq"] for e in full.entries if e["kind"] == "stock_counted")
            snap = load_snapshot(conn, DEA, counted)
    finally:
        ledger.dispose()
    period = Period(built["first"], built["last"], TZ)
    with pytest.raises(ReportError) as exc:
        report_audit.compute(snap, period)
    assert exc.value.field == "to"
    assert [c["kind"] for c in exc.value.offers["from"]] == ["inventory_taken"]
