"""Issue 20, one period: inclusive local days everywhere; an audit runs between two counts and
every figure of it, and of the logs made for its window, is of exactly that window.

A small clinic recorded through the services on a moving clock (America/Chicago): the initial
inventory on day 0 (3 sealed vials of ketamine 50 mg/mL, 30.00 mL), a count on day 1 (30.00),
a receipt of 5 vials on day 2 (50.00), doses on days 3 to 18 (each 4.00 drawn, 3.50 given, 0.50
wasted: 8 doses, 28.00 given, 4.00 wasted), a count on day 20 (80.00 - 32.00 = 48.00), then a
dose on day 21 after the last count, which must NOT be in the audit. Expected figures by hand.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from ledger import services
from ledger.domain.commands import (
    AdministerDose,
    CountLineInput,
    DrawInput,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    StartCount,
    SubmitCount,
    TakeInventory,
    WasteInput,
)
from ledger.domain.errors import InvalidInput
from ledger.domain.period import Period, Window
from ledger.services import audit as audit_core
from reports.audit import containers_text, step_points
from reports.base import build_report
from reports.errors import ReportError
from tests.api.conftest import api as api  # noqa: F401  (the API fixture, on each backend)
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import KETAMINE_50

D = Decimal
TZ = "America/Chicago"
ZONE = zoneinfo.ZoneInfo(TZ)
DAY0 = date(2026, 10, 1)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """Local time on day ``day`` after DAY0, as an aware UTC datetime."""
    return datetime.combine(DAY0 + timedelta(days=day), time(hh, mm), ZONE).astimezone(UTC)


class Clock:
    """The ledger's clock, moved by the test: entries are recorded just after their events."""

    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def day_text(day: int) -> str:
    return (DAY0 + timedelta(days=day)).isoformat()


@pytest.fixture
def small(ledger):
    clock = Clock(at(0, 7))
    ledger.clock = clock
    ops = Ops(ledger)

    def now(day: int, hh: int, mm: int = 0) -> datetime:
        clock.t = at(day, hh, mm) + timedelta(hours=1)  # recorded after the event (an infusion has ended)
        return at(day, hh, mm)

    def count(day: int, sealed: int, open_ml: str = "0.00") -> dict:
        t = now(day, 7, 45)
        s = services.start_count(ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))  # K10: none on hand
        lines = [CountLineInput(KETAMINE_50, sealed, 1 if D(open_ml) else 0, open_ml)]
        return services.submit_count(ledger, ops.nurse, SubmitCount(s["session_id"], tuple(lines), t),
                                     second_counter=ops.nurse2)

    inv = services.take_inventory(ledger, ops.pharmacist, TakeInventory(
        "initial", "opening_of_business", now(0, 8),
        (InventoryItemInput(KETAMINE_50, "KA1", "2028-01-31", sealed=True, containers=3),)), witness=ops.nurse2)
    c1 = count(1, 3)
    received = services.receive_stock(ledger, ops.nurse, ReceiveStock(
        ops.supplier_id, "INV-OP-1", now(2, 9), (ReceivedLineInput(KETAMINE_50, 5, "KA2", "2028-06-30"),)))
    vials = [*inv["vial_ids"], *received["vial_ids"]]
    left = {v: D("10.00") for v in vials}

    def dose(day: int) -> dict:
        t = now(day, 10)
        v = next(v for v in vials if left[v] >= 4)
        left[v] -= 4
        return services.administer_dose(ledger, ops.nurse, AdministerDose(
            ops.patient_id, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(v, "4.00"),), "3.50", t,
            t + timedelta(minutes=40), waste=WasteInput("0.50", "syringe to disposal container")), witness=ops.nurse2)

    for day in (3, 5, 7, 9, 11, 13, 15, 18):
        dose(day)
    c20 = count(20, 4, "8.00")  # 80.00 - 8 x 4.00 = 48.00 mL: 4 sealed + 8.00 mL open
    dose(21)  # after the last count: not in an audit ending at it
    clock.t = at(23, 12)
    return {"ops": ops, "ledger": ledger, "inventory": inv, "c1": c1, "c20": c20}


def _seq(res: dict) -> int:
    """The seq of the entry a command appended."""
    (e,) = res["entries"]
    return e["seq"]


def _entries(ledger, dea):
    from ledger.integrity.canonical import decode
    from ledger.storage.store import raw

    with ledger.reading() as conn:
        rows = raw(conn).rows(conn, "SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq", {"r": dea})
    return [decode(bytes(r["canonical"])) for r in rows]


def test_a_period_across_the_november_dst_change_is_inclusive_local_days():
    """2026-10-31 to 2026-11-01 in Chicago: from local midnight CDT (05:00 UTC) to local midnight
    after 11-01, which is CST (06:00 UTC): 49 hours, the last instant of 11-01 included."""
    p = Period.from_local_days("2026-10-31", "2026-11-01", TZ)
    assert p.start_utc.startswith("2026-10-31T05:00:00") and p.end_utc.startswith("2026-11-02T06:00:00")
    assert p.contains("2026-11-02T05:59:59.999999Z") and not p.contains(p.end_utc)
    assert not p.contains("2026-10-31T04:59:59.999999Z") and p.contains(p.start_utc)
    spring = Period.from_local_days("2026-03-08", "2026-03-08", TZ)  # a 23-hour day
    hours = (datetime.fromisoformat(spring.end_utc.replace("Z", "+00:00"))
             - datetime.fromisoformat(spring.start_utc.replace("Z", "+00:00")))
    assert hours == timedelta(hours=23)
    with pytest.raises(InvalidInput) as exc:
        Period.from_local_days("2026-11-02", "2026-11-01", TZ)
    assert exc.value.field == "to"


def test_containers_are_never_fractional():
    assert containers_text("105.10", "10.00") == "10 + 5.10 mL"
    assert containers_text("30.00", "10.00") == "3"
    assert containers_text("-0.50", "10.00") == "-(0 + 0.50 mL)"
    assert containers_text("-20.00", "10.00") == "-2"
    assert containers_text("0.365", "10.00") == "0 + 0.365 mL"


def test_the_stock_chart_moves_in_steps():
    """Each movement: first horizontal to its time at the old balance, then vertical to the new."""
    pts = step_points([(0.0, 30.0), (2.0, 80.0), (3.0, 76.0)], until=5.0)
    assert pts == [(0.0, 30.0), (2.0, 30.0), (2.0, 80.0), (3.0, 80.0), (3.0, 76.0), (5.0, 76.0)]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        assert x0 == x1 or y0 == y1  # never a slope


class OnePeriodContract:
    """Over the small clinic, on each backend."""

    backend: str

    def test_audit_window_is_the_counts_and_every_figure_is_of_it(self, small):
        """Asked 10-02 to 10-23: the window runs from the count of day 1 (the first on 10-02) to
        the count of day 20 (the latest on or before 10-23); the dose of day 21 is not
        in it. By hand: beginning 30.00 counted, receipts 50.00, administered 8 x 3.50 = 28.00,
        wasted 8 x 0.50 = 4.00, ending 48.00 counted, difference 0."""
        a = audit_core.audit_days(small["ledger"], small["ops"].dea, day_text(1), day_text(22))
        (p,) = [p for p in a["products"] if p["ndc"] == KETAMINE_50]
        assert a["window"]["begin"]["kind"] == "stock_counted" and a["window"]["end"]["kind"] == "stock_counted"
        assert a["window"]["begin"]["occurred_at"].startswith(at(1, 7, 45).strftime("%Y-%m-%dT%H:%M"))
        assert a["window"]["end"]["occurred_at"].startswith(at(20, 7, 45).strftime("%Y-%m-%dT%H:%M"))
        assert a["asked"] == {"from": day_text(1), "to": day_text(22), "time_zone": TZ}
        assert (p["ml"]["beginning"], p["ml"]["receipts"], p["ml"]["administered"], p["ml"]["wasted"],
                p["ml"]["ending"], p["ml"]["difference"]) == (D("30.00"), D("50.00"), D("28.00"), D("4.00"),
                                                              D("48.00"), D("0.00"))
        assert p["beginning_basis"] == "counted" and p["ending_basis"] == "counted"
        assert a["start"] == a["window"]["begin"]["occurred_at"] and a["end"] == a["window"]["end"]["occurred_at"]
        # offers: the counts nearest each asked day, for a page to offer
        assert [c["kind"] for c in a["offers"]["to"]][-1] == "stock_counted"


    def test_the_beginning_is_the_first_count_of_the_day_else_the_latest_before(self, small):
        ledger, dea = small["ledger"], small["ops"].dea
        a = audit_core.audit_days(ledger, dea, day_text(2), day_text(22))  # no count on 10-03: day 1's
        assert a["window"]["begin"]["seq"] == _seq(small["c1"]) and a["window"]["end"]["seq"] == _seq(small["c20"])
        b = audit_core.audit_days(ledger, dea, day_text(0), day_text(22))  # 10-01: the initial inventory
        assert b["window"]["begin"]["kind"] == "inventory_taken" and b["window"]["first_period"] is True
        (p,) = [p for p in b["products"] if p["ndc"] == KETAMINE_50]
        assert p["ml"]["beginning"] == D("30.00") and p["ml"]["receipts"] == D("50.00")

    def test_header_shows_the_days_asked_and_the_window(self, small, tmp_path):
        from pypdf import PdfReader

        pdf, data = build_report(small["ledger"], "audit", small["ops"].dea, day_text(1), day_text(22))
        assert data["period"]["from"] == day_text(1) and data["period"]["to"] == day_text(22)
        w = data["period"]["window"]
        assert w["end"]["seq"] == data["figures"]["window"]["end"]["seq"]
        path = tmp_path / "audit.pdf"
        path.write_bytes(pdf)
        text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(path).pages)
        assert f"{day_text(1)} to {day_text(22)} ({TZ})" in text
        assert (f"audit window from the count of {day_text(1)} 07:45 CDT, entry {w['begin']['seq']} to the count of "
                f"{day_text(20)} 07:45 CDT, entry {w['end']['seq']}") in text
        assert "10.51" not in text and "Containers (whole + mL)" in text
        assert "4 + 8.00 mL" in text  # the ending: 4 whole containers and 8.00 mL, never "4.80"


    def test_logs_for_the_audit_window_total_the_audit(self, small):
        """The administration and waste logs made for the audit's window total exactly the audit's
        administered and wasted figures; made for the days asked they hold the day-21 dose too."""
        ledger, dea = small["ledger"], small["ops"].dea
        _, audit = build_report(ledger, "audit", dea, day_text(1), day_text(22))
        (p,) = [p for p in audit["figures"]["products"] if p["ndc"] == KETAMINE_50]
        _, adm = build_report(ledger, "administrations", dea, day_text(1), day_text(22), audit_window=True)
        _, waste = build_report(ledger, "waste", dea, day_text(1), day_text(22), audit_window=True)
        assert adm["period"]["window"] == audit["period"]["window"] == waste["period"]["window"]
        assert adm["figures"]["total"]["ml_given"] == p["ml"]["administered"] == "28.00"
        assert adm["figures"]["total"]["mg_given"] == p["mg"]["administered"] == "1400.00"
        assert waste["figures"]["total"]["wasted_ml"] == p["ml"]["wasted"] == "4.00"
        assert waste["figures"]["total"]["wasted_mg"] == p["mg"]["wasted"] == "200.00"
        # the same days without the window: the day-21 dose, after the last count, is in the log
        _, adm_days = build_report(ledger, "administrations", dea, day_text(1), day_text(22))
        assert adm_days["figures"]["total"]["ml_given"] == "31.50" and "window" not in adm_days["period"]
        # a kind not printed beside the audit is not made for its window
        with pytest.raises(ReportError) as exc:
            build_report(ledger, "receiving", dea, day_text(1), day_text(22), audit_window=True)
        assert exc.value.field == "window"


    def test_logs_for_the_window_verify(self, small):
        """``verify-report`` finds the same window again from the days and the entries (the report
        is unsigned here: no report key, so only that is named)."""
        from reports.verify import verify_report

        for kind in ("audit", "administrations"):
            pdf, _ = build_report(small["ledger"], kind, small["ops"].dea, day_text(1), day_text(22),
                                  audit_window=kind != "audit")
            check = verify_report(small["ledger"], pdf)
            assert [p for p in check.problems if "signed" not in p] == [], check.problems


    def test_no_count_to_end_at_is_refused_with_offers(self, small):
        """Asked days with no covering count after the beginning: a clear error offering counts."""
        with pytest.raises(InvalidInput) as exc:
            audit_core.audit_days(small["ledger"], small["ops"].dea, day_text(21), day_text(22))
        assert exc.value.field == "to" and "nearest counts" in exc.value.reason
        offers = exc.value.offers
        assert any(c["seq"] == _seq(small["c20"]) for c in offers["from"] + offers["to"]), offers


    def test_first_period_begins_at_the_initial_inventory(self, small):
        """Asked from day 0: the beginning is the initial inventory, the registrant's first period."""
        a = audit_core.audit_days(small["ledger"], small["ops"].dea, day_text(0), day_text(1))
        assert a["window"]["first_period"] is True and a["window"]["begin"]["kind"] == "inventory_taken"
        (p,) = [p for p in a["products"] if p["ndc"] == KETAMINE_50]
        assert p["beginning_basis"] == "counted" and p["ml"]["beginning"] == D("30.00")


    def test_a_book_beginning_is_refused_unless_first_period(self, small):
        """A window that does not begin at a count (the receipt of day 2, say) has a book
        beginning: refused; the same as the registrant's first period is kept and labelled."""
        entries = _entries(small["ledger"], small["ops"].dea)
        receipt = next(e for e in entries if e["kind"] == "stock_received")
        end = next(e for e in entries if e["seq"] == _seq(small["c20"]))
        w = Window((receipt["occurred_at"], receipt["seq"]), (end["occurred_at"], end["seq"]),
                   {"seq": receipt["seq"], "kind": receipt["kind"], "occurred_at": receipt["occurred_at"]},
                   {"seq": end["seq"], "kind": end["kind"], "occurred_at": end["occurred_at"]})
        a = audit_core.accountability(entries, window=w)
        with pytest.raises(InvalidInput) as exc:
            audit_core.require_counted_beginnings(a)
        assert exc.value.field == "from" and "book" in exc.value.reason
        first = audit_core.accountability(entries, window=Window(w.begin, w.end, w.begin_source, w.end_source,
                                                                 first_period=True))
        audit_core.require_counted_beginnings(first)
        (p,) = [p for p in first["products"] if p["ndc"] == KETAMINE_50]
        assert p["beginning_basis"] == "book (first period)" and p["ml"]["beginning"] == D("80.00")


    def test_the_chart_drawn_is_the_steps(self, small):
        """The drawing in the audit's PDF path: its line's points are horizontal-then-vertical."""
        from reports.audit import _chart

        _, data = build_report(small["ledger"], "audit", small["ops"].dea, day_text(1), day_text(22))
        f = data["figures"]
        (r,) = [r for r in f["products"] if r["ndc"] == KETAMINE_50]
        d = _chart(r, f["charts"][r["ndc_key"]], TZ, f["end"])
        (plot,) = [x for x in d.contents if hasattr(x, "data")]
        line = plot.data[0]
        assert len(line) >= 4
        for (x0, y0), (x1, y1) in zip(line, line[1:], strict=False):
            assert x0 == x1 or y0 == y1

    def test_api_audit_takes_local_days_and_refuses_the_old_parameters(self, api):
        """GET .../audit?from=&to= (local days): 422 offering counts while the period has no count
        to end at; then, with the initial inventory and a count, 200 over exactly that window.
        ``start``/``end`` date-times: 422 naming them, never reinterpreted."""
        from tests.api.test_spills import ago, count, opening

        zone = zoneinfo.ZoneInfo(TZ)
        first = (datetime.now(UTC) - timedelta(hours=4)).astimezone(zone).date().isoformat()
        today = datetime.now(UTC).astimezone(zone).date().isoformat()
        opening(api)  # initial inventory 3 h ago (30.00 mL), an infusion: book 29.00
        days = {"from": first, "to": today}
        none = api.client.get(api.url("/audit"), headers=api.headers("casey"), params=days)
        assert none.status_code == 422, none.text
        assert none.json()["errors"][0]["field"] == "to"
        assert [c["kind"] for c in none.json()["offers"]["from"]] == ["inventory_taken"]
        c = count(api, "9.00", ago(hours=1))  # 2 sealed + 9.00 mL open = the book
        a = api.client.get(api.url("/audit"), headers=api.headers("casey"), params=days)
        assert a.status_code == 200, a.text
        body = a.json()
        assert body["asked"]["from"] == first and body["window"]["end"]["seq"] == c["seq"]
        assert body["window"]["first_period"] is True
        (p,) = body["products"]
        assert (p["ml"]["beginning"], p["ml"]["administered"], p["ml"]["wasted"], p["ml"]["ending"],
                p["beginning_basis"], p["ending_basis"]) == ("30.00", "0.80", "0.20", "29.00", "counted", "counted")

        def no_floats(x):
            assert not isinstance(x, float), x
            for v in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()):
                no_floats(v)

        no_floats(body)
        for old in ({"start": "2026-01-01T00:00:00Z", "end": "2026-12-31T00:00:00Z"},
                    {**days, "start": "2026-01-01T00:00:00Z"}):
            r = api.client.get(api.url("/audit"), headers=api.headers("casey"), params=old)
            assert r.status_code == 422, r.text
            fields = [e["field"] for e in r.json()["errors"]]
            assert "start" in fields or "from" in fields, r.text
        r = api.client.get(api.url("/audit"), headers=api.headers("casey"), params={**days, "end": "2026-12-31T00:00:00Z"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "end" and "from and to" in r.json()["detail"]
        # the reports route makes the logs for the same window
        log = api.client.get(api.url(f"/reports/administrations?from={first}&to={today}&window=audit"),
                             headers=api.headers("casey"))
        assert log.status_code == 200, log.text


class TestSQLite(OnePeriodContract):
    backend = "sqlite"


class TestPostgres(OnePeriodContract):
    backend = "postgresql"



def close_with_count(api) -> int:
    """A two-person count of every product now, matching the book (the ``floor`` fixture of
    tests/reports/test_report_access_log.py: two 50 mg/mL vials each drawn 1.00 mL): the count
    an audit of the floor's days ends at (issue 20). Returns its seq."""
    s = services.start_count(api.ledger, api.clinic.nurse, StartCount(ndcs=(KETAMINE_50,)))
    res = services.submit_count(api.ledger, api.clinic.nurse, SubmitCount(
        s["session_id"], (CountLineInput(KETAMINE_50, 0, 2, "18.00"),), datetime.now(UTC) - timedelta(minutes=1)),
        second_counter=api.clinic.nurse2)
    assert res["discrepancy_ids"] == [], res
    return _seq(res)


def test_the_reports_page_offers_the_counts_an_audit_can_run_between(ledger):
    """The reports page: an audit with no count to end at comes back with the counts it could
    use as choices (links that fill the form's days); a log can be asked for the audit window."""
    from api.web.settings import WebSettings
    from tests.api.conftest import build_api
    from tests.web.test_pages_http import UI, csrf_of, login

    web = build_api(ledger)  # as tests/web/test_pages_http.py's ``web`` fixture
    web.client.app.state.web_settings = WebSettings(cookie_secure=False)
    services.take_inventory(ledger, web.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=2),
        (InventoryItemInput(KETAMINE_50, "KA1", "2028-01-31", sealed=True, containers=2),)), witness=web.clinic.nurse2)
    login(web, "casey")
    today = datetime.now(UTC).astimezone(ZONE).date().isoformat()
    page = web.client.get(UI + f"reports?kind=administrations&start={today}&end={today}&window=audit")
    assert page.status_code == 200 and 'name="window" value="audit" checked' in page.text
    r = web.client.post(UI + "reports", data={"csrf_token": csrf_of(page.text), "kind": "audit", "start": today,
                                               "end": today, "paper": "letter"})
    assert r.status_code == 422, r.text[:500]
    assert "Counts an audit can run between" in r.text and "initial inventory of" in r.text
    assert f"reports?kind=audit&amp;start={today}&amp;end={today}" in r.text
