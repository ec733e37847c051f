"""Issue 22: ``verify-report`` in flat memory (the report read from its file, the entries streamed
in one read transaction, the embedded figures parsed as they are decompressed with long arrays
kept on disk, the rebuild compared block by block) refuses what it refused when it held them all,
and the audit streams its entries with the same figures.

Memory and time are measured by the benchmark (``csledger report-bench --kind administrations``
or ``--kind audit``), never here."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.services.audit import accountability, audit_window, covering_counts
from ledger.services.report_key import load_report_key
from ledger.storage.store import Ledger
from reports import verify
from reports.audit import _daily
from reports.base import build_report_file, render_data
from reports.bench import DEA, add_closing_count, key_dir_of, seed_administrations
from reports.fmt import parse_period
from reports.rowfile import RowFile
from reports.signing import first_revision_end, sign_report
from reports.source import load_snapshot
from reports.verify import verify_report
from tests.reports.test_clinical_reports import PERIOD, clinic_entries, with_counts_and_losses

ROWS = 200  # fewer spread over the year would draw from vials past their beyond-use date
NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Path]:
    folder = tmp_path_factory.mktemp("streamed-verify")
    url = f"sqlite:///{folder / 'ledger.db'}"
    seed_administrations(url, ROWS, patients=5)
    add_closing_count(url)  # the audit's window ends here
    ledger = Ledger.open(url)
    ledger.report_key_dir = key_dir_of(url)
    yield ledger, folder
    ledger.dispose()


@pytest.fixture
def spill_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long arrays of embedded figures go to disk from 10 items (1,000 in use), so a small report
    takes the path a year's log takes."""
    monkeypatch.setattr(verify, "SPILL_AT", 10)


def _forged(ledger: Ledger, pdf: bytes, change) -> bytes:
    """The report with its data changed by ``change``, drawn again and signed with the
    registrant's own certified report key: only the ledger can tell."""
    data, _ = verify.read_report_data(pdf[:first_revision_end(pdf)])
    data = json.loads(json.dumps({**data, "figures": {k: list(v) if isinstance(v, RowFile) else v
                                                      for k, v in data["figures"].items()}}))
    change(data)
    key = load_report_key(Path(ledger.report_key_dir), DEA)
    return sign_report(render_data(data), key, NOW)


@pytest.mark.parametrize("kind", ["administrations", "audit"])
def test_a_report_verifies_from_its_file_as_from_its_bytes(seeded, spill_early, kind):
    ledger, folder = seeded
    path = folder / f"{kind}.pdf"
    signed, _ = build_report_file(ledger, kind, DEA, "2025-01-01", "2025-12-31", path, now=NOW)
    assert signed
    from_file, from_bytes = verify_report(ledger, path), verify_report(ledger, path.read_bytes())
    assert from_file.ok and from_bytes.ok, (from_file.problems, from_bytes.problems)
    assert from_file.summary == from_bytes.summary
    if kind == "administrations":  # the embedded rows were parsed onto disk, and compared from there
        assert isinstance(from_file.data["figures"]["rows"], RowFile)
        assert len(from_file.data["figures"]["rows"]) == ROWS


def test_forged_and_tampered_reports_fail_from_the_file_as_from_the_bytes(seeded, spill_early, tmp_path):
    ledger, folder = seeded
    path = folder / "genuine.pdf"
    build_report_file(ledger, "administrations", DEA, "2025-01-01", "2025-12-31", path, now=NOW)
    genuine = path.read_bytes()

    def given_more(data):
        data["figures"]["rows"][37]["ml_given"] = "0.70"

    def one_row_less(data):
        del data["figures"]["rows"][-1]

    cases = {
        "a figure changed and signed again": (_forged(ledger, genuine, given_more),
                                             "figures.rows[37].ml_given: the PDF says \"0.70\""),
        "a row left out and signed again": (_forged(ledger, genuine, one_row_less),
                                            f"figures.rows: the PDF has {ROWS - 1} items, the ledger gives {ROWS}"),
        "bytes appended after the signature": (genuine + b"\n% appended\n", "does not cover the whole file"),
        "a byte of a page changed": (genuine.replace(b"Administration log", b"Administration lag", 1),
                                     "the signature does not verify"),
    }
    for name, (pdf, expected) in cases.items():
        forged = tmp_path / "forged.pdf"
        forged.write_bytes(pdf)
        from_file, from_bytes = verify_report(ledger, forged), verify_report(ledger, pdf)
        assert not from_file.ok and not from_bytes.ok, name
        assert from_file.problems == from_bytes.problems, name
        assert any(expected in p for p in from_file.problems), (name, from_file.problems)


@pytest.mark.parametrize("text", [
    '{"a":1,"figures":{"rows":[{"x":1},{"x":2}],"t":{"n":[1,2]},"e":[]},"z":"\\u00e9\\"}"}',
    '  { "figures" : { "rows" : [ 1 , 2.5 , "three" , null , true , [4] ] } , "a" : [ ] }  ',
    '{"figures":{"rows":[1]},"figures":{"rows":[2,3]}}',  # the last of a repeated key, as json.loads
    '{"figures":[1,2],"b":{}}', '{"figures":{}}', '[1,2]', '"text"', '{"n":12345678901234567890}',
])
def test_the_streamed_parse_is_json_loads(text, spill_early):
    data = (text.replace("1,2.5", ",".join(str(i) for i in range(25)) + ",2.5")).encode()
    for size in (1, 3, 7, len(data)):  # every way the pieces can cut the text
        parsed = verify._parse_data(iter([data[i:i + size] for i in range(0, len(data), size)]))
        plain = json.loads(data)
        if isinstance(parsed, dict) and isinstance(parsed.get("figures"), dict):
            parsed["figures"] = {k: list(v) if isinstance(v, RowFile) else v for k, v in parsed["figures"].items()}
        assert parsed == plain, (text, size)


@pytest.mark.parametrize("text", ['{"figures":{"rows":[1,2}}', '{"a":1} x', '{"a" 1}', '{1:2}', "", '{"a":"\\x"}'])
def test_text_that_is_not_json_is_refused(text):
    with pytest.raises(ValueError):
        verify._parse_data(iter([text.encode()]))


class _Streamed:
    """Entries read again on each pass, like ``reports.source.EntryStream``."""

    def __init__(self, entries):
        self._entries, self.passes = sorted(entries, key=lambda e: e["seq"]), 0

    def __iter__(self):
        self.passes += 1
        return iter(self._entries)

    def of_kinds(self, *kinds):
        self.passes += 1
        return (e for e in self._entries if e["kind"] in kinds)


@pytest.mark.parametrize("make", [clinic_entries, with_counts_and_losses])
def test_the_audit_streamed_gives_the_figures_it_gave_from_a_list(make):
    entries, period = make().entries, PERIOD
    stream = _Streamed(entries)
    assert covering_counts(stream) == covering_counts(list(reversed(entries)))
    window = audit_window(entries, period)
    assert audit_window(stream, period) == window
    assert stream.passes == 4  # twice (the counts, then every entry) for each: never a list of them all
    listed = accountability(entries, series=True, window=window)
    streamed = accountability(stream, series=True, series_days=period.tz, window=window)
    assert stream.passes == 6
    for a, b in zip(listed["products"], streamed["products"], strict=True):
        assert _daily(a.pop("series"), period.tz) == b.pop("series")
    assert listed == streamed
    assert accountability(stream, window=window) == accountability(iter(entries), window=window)


def test_the_audit_of_a_seeded_year_streams(seeded):
    ledger, _ = seeded
    with ledger.reading() as conn:
        snap = load_snapshot(conn, DEA, stream=True)
        listed = load_snapshot(conn, DEA)
        period = parse_period("2025-01-01", "2025-12-31", snap.registrant_entry["time_zone"])
        window = audit_window(snap.entries, period)
        assert window == audit_window(listed.entries, period)
        a = accountability(snap.entries, window=window, series=True, series_days=period.tz)
        b = accountability(listed.entries, window=window, series=True)
    (pa,), (pb,) = a.pop("products"), b.pop("products")
    assert pa.pop("series") == _daily(pb.pop("series"), period.tz)
    assert pa == pb and a == b
    assert pa["ml"]["administered"] == Decimal("0.80") * ROWS


def test_the_report_bench_measures_the_audit_and_its_verification(tmp_path):
    from io import StringIO

    from rich.console import Console

    from reports.bench import run_report_bench

    console = Console(file=StringIO(), width=200)
    figures = run_report_bench(console, receipts=ROWS, workdir=tmp_path, kind="audit", verify=True)
    assert figures["kind"] == "audit" and figures["pages"] >= 1
    assert figures["build_peak_mib"] > 0 and figures["verify_peak_mib"] > 0 and figures["verify_cpu_s"] > 0
    assert "audit of the administrations, 200 rows" in console.file.getvalue()
