"""Issue 22: reports built in flat memory (entries streamed, rows on disk, pages drawn and
written as they are laid out) print every row, and are the same bytes as before.

Memory and time are measured by the benchmark (``csledger report-bench --kind administrations
--scale 10``, docs/benchmarks.md), never here."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from ledger.storage.store import Ledger
from reports import layout
from reports.base import build_report, build_report_file, compute_data, kind_named, render_data
from reports.bench import DEA, key_dir_of, seed_administrations
from reports.fmt import parse_period
from reports.rowfile import RowFile, dumps, json_chunks
from reports.signing import first_revision_end
from reports.source import EntryStream, load_snapshot
from reports.verify import verify_report

ROWS = 240  # about 27 landscape Letter pages of the administration log
NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Path]:
    folder = tmp_path_factory.mktemp("streamed")
    url = f"sqlite:///{folder / 'ledger.db'}"
    seed_administrations(url, ROWS, patients=7)
    ledger = Ledger.open(url)
    ledger.report_key_dir = key_dir_of(url)
    yield ledger, folder
    ledger.dispose()


def test_the_streamed_administration_log_prints_every_row_and_verifies(seeded):
    ledger, folder = seeded
    out = folder / "administrations.pdf"
    signed, data = build_report_file(ledger, "administrations", DEA, "2025-01-01", "2025-12-31", out, now=NOW)
    assert signed
    rows = data["figures"]["rows"]
    assert isinstance(rows, RowFile) and len(rows) == ROWS
    pdf = out.read_bytes()
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) > 10
    text = "\n".join(p.extract_text() for p in reader.pages)
    printed = re.findall(r"\bA(\d+)\n(\d+)\b", text)  # the last column: administration id over its entry
    ids = {int(a) for a, b in printed if a == b}
    assert ids == {r["seq"] for r in rows}, "every administration is printed once, on some page"
    assert f"Page {len(reader.pages)} of {len(reader.pages)}" in reader.pages[-1].extract_text()
    # The embedded data holds every row, as the ledger gives them.
    embedded = json.loads(reader.attachments[layout.DATA_FILE][0])
    assert [r["seq"] for r in embedded["figures"]["rows"]] == [r["seq"] for r in rows]
    assert embedded["figures"]["total"]["administrations"] == ROWS
    result = verify_report(ledger, pdf)
    assert result.ok, result.problems


def test_written_to_a_file_or_in_memory_the_report_is_the_same_bytes(seeded):
    ledger, folder = seeded
    for kind in ("administrations", "receiving", "waste"):
        in_memory, _ = build_report(ledger, kind, DEA, "2025-01-01", "2025-12-31", now=NOW)
        path = folder / f"{kind}.pdf"
        build_report_file(ledger, kind, DEA, "2025-01-01", "2025-12-31", path, now=NOW)
        on_disk = path.read_bytes()
        # The signature value differs from one signing to the next (ECDSA); the report does not.
        end = first_revision_end(in_memory)
        assert end == first_revision_end(on_disk) and in_memory[:end] == on_disk[:end], kind


def test_streamed_entries_give_the_same_figures_and_bytes_as_a_list(seeded):
    ledger, _ = seeded
    kind = kind_named("administrations")
    with ledger.reading() as conn:
        listed = load_snapshot(conn, DEA)
        streamed = load_snapshot(conn, DEA, stream=True)
        assert isinstance(streamed.entries, EntryStream) and len(streamed.entries) == len(listed.entries)
        assert streamed.state == listed.state and streamed.registrant_entry == listed.registrant_entry
        assert streamed.entries[5] == listed.entries[5] and list(streamed.entries) == listed.entries
        period = parse_period("2025-01-01", "2025-12-31", "America/Chicago")
        args = {"generated_at": "2026-01-05T12:00:00.000000Z", "generated_by": "Casey Compliance", "paper": "letter"}
        a = compute_data(kind, listed, period, **args)
        b = compute_data(kind, streamed, period, **args)
    assert isinstance(a["figures"]["rows"], list) and isinstance(b["figures"]["rows"], RowFile)
    assert b"".join(json_chunks(b)) == dumps(a).encode("utf-8")
    assert render_data(a) == render_data(b)


def test_row_file_reads_back_what_was_written():
    rows = [{"seq": i, "text": "é\n\"x\"" * (i % 3), "n": [i, {"b": 1, "a": None}]} for i in range(1000)]
    f = RowFile(rows)
    assert len(f) == 1000 and f[0] == rows[0] and f[-1] == rows[-1] and f[517] == rows[517]
    assert list(f) == rows and f == rows
    assert b"".join(json_chunks({"z": 1, "rows": f, "a": [f, 2]})) == dumps({"z": 1, "rows": rows, "a": [rows, 2]}).encode()
    with pytest.raises(IndexError):
        f[1000]


def test_the_layout_holds_one_page_at_a_time():
    """Pages are handed over as they are finished and dropped: the paginator never holds more
    than the page it is filling."""
    geo = layout._Geometry(792.0, 612.0, 60.0, 80.0)
    held: list[int] = []
    seen: list[int] = []

    def done(n: int, page: layout._Page) -> None:
        seen.append(n)
        held.append(len(page.ops))

    made = []

    def row(i: int) -> list[str]:
        made.append(i)
        return [f"row {i}", "x\ny\nz"]

    pager = layout._Paginator(geo, done)
    pager.place(layout.Table([layout.Column("A", 1), layout.Column("B", 1)],
                             layout.LazyRows(range(2000), row), title="T"))
    pager.finish()
    assert seen == list(range(1, len(seen) + 1)) and len(seen) > 20
    assert max(held) < 60 and pager.page is None
    assert sorted(set(made)) == list(range(2000))  # each printed row made when it was placed
