"""``verify-report`` rebuilds the report byte for byte (issue 18, first part).

Since reports are signed (issue 18, second part), each edit here is made to the report's first
revision (the unsigned report) and the result signed again with the registrant's own certified
report key, as an insider holding the key file could: the signature is then sound and the byte
for byte comparison of the first revision is what catches the edit. Edits made after signing
are in ``test_signed_reports.py``.

Comparing extracted page text let two edits through with the content streams untouched: an
annotation drawn over a figure, and a font ``/Encoding /Differences`` that draws a 1 for the
code of an 8. Now the report is built again from the ledger at its tree size and the inputs it
embeds (request, who and when, library versions, patient names) and the file must equal it byte
for byte. An untouched report of every kind passes; each edit below fails, naming what differs
(one of them through the command line). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import FreeText
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

from ledger.integrity.canonical import parse_time
from ledger.services.report_key import load_report_key
from reports import layout
from reports.base import build_report, build_versions, kind_named, render_data, with_layout
from reports.errors import ReportError
from reports.signing import first_revision_end, sign_report
from reports.verify import verify_report
from tests.api.conftest import PATIENT_KEY
from tests.cli.test_cli import run
from tests.conftest import BACKENDS, DEA
from tests.reports.report_keys import check
from tests.reports.test_report_access_log import floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

#: Kinds that report on something the floor fixture records (receipts, inventory, administrations).
MUST_BUILD = {"receiving", "inventory", "audit", "administrations", "vial"}
ALL_KINDS = ("receiving", "inventory", "audit", "waste", "counts", "form106", "vial", "administrations", "alerts")


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)


def build(api, kind: str = "receiving", **params: str) -> bytes:
    pdf, _ = build_report(api.ledger, kind, DEA, *api.period, params=params or None)
    return pdf


def a_vial(api) -> str:
    with api.ledger.reading() as conn:
        return conn.exec_driver_sql("SELECT vial_id FROM vials ORDER BY vial_id LIMIT 1").scalar()


def unsigned(pdf: bytes) -> bytes:
    """The report's first revision: the PDF as drawn, before its certification signature."""
    return pdf[:first_revision_end(pdf)]


def resign(api, pdf: bytes) -> bytes:
    """Sign ``pdf`` (an edited unsigned report) again with the registrant's certified report key,
    at the report's own generation time."""
    data = json.loads(PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0])
    key = load_report_key(api.ledger.report_key_dir, DEA)
    return sign_report(pdf, key, parse_time(data["generated"]["at"]))


def rewrite(api, pdf: bytes, edit) -> bytes:
    """The report's first revision rewritten by pypdf with ``edit``, then signed again."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(unsigned(pdf))))
    edit(writer)
    buf = io.BytesIO()
    writer.write(buf)
    return resign(api, buf.getvalue())


def test_every_kind_untouched_rebuilds_byte_for_byte(floor, keyed):  # noqa: F811
    from tests.reports.test_one_period import close_with_count

    api = floor
    close_with_count(api)  # issue 20: the audit runs from the initial inventory to this count
    built = set()
    for kind in ALL_KINDS:
        try:
            pdf = build(api, kind, **({"vial": a_vial(api)} if kind == "vial" else {}))
        except ReportError as exc:
            assert kind not in MUST_BUILD, exc
            assert "nothing to report" in str(exc) or "no " in str(exc), exc
            continue
        built.add(kind)
        data = json.loads(PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0])
        # the library versions, and from layout 2 on the kind's layout version (issue 20)
        assert data["build"] == with_layout(build_versions(), kind_named(kind))
        assert set(data["build"]) - {"layout"} == {"reportlab", "tzdata", "holidays", "zlib"}
        result = verify_report(api.ledger, pdf)
        assert result.ok, (kind, result.problems)
        if kind == "administrations":
            assert "patient names and addresses checked against the registry" in result.summary
    assert MUST_BUILD <= built


def test_annotation_over_a_figure_fails(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = build(api)
    assert verify_report(api.ledger, pdf).ok

    def overlay(w: PdfWriter) -> None:
        w.add_annotation(0, FreeText(text="1.00 mL", rect=(300, 300, 360, 312), font="Helvetica",
                                     font_size="7.5pt", background_color="ffffff", border_color=None))

    bad = rewrite(api, pdf, overlay)
    assert PdfReader(io.BytesIO(bad)).pages[0].extract_text() == PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    problems = check(api, bad)
    assert len(problems) == 1, problems
    assert problems[0].startswith("page 1: the text matches but the PDF bytes differ at offset ")
    assert "in the page's objects /Annots was added" in problems[0] and "an annotation, a font encoding" in problems[0]
    # The same from the command line, as an inspector runs it.
    path = tmp_path / "overlay.pdf"
    path.write_bytes(bad)
    p = run(["verify-report", str(path), "--db", api.db], tmp_path, check=False)
    assert p.returncode == 1, p.stdout
    assert "page 1: the text matches but the PDF bytes differ at offset" in p.stderr
    assert "Traceback" not in p.stderr
    path.write_bytes(pdf)
    ok = run(["verify-report", str(path), "--db", api.db], tmp_path)
    assert ok.stdout.startswith("OK Receiving log") and "byte for byte" in ok.stdout


def test_font_encoding_that_draws_1_for_8_fails(floor):  # noqa: F811
    api = floor
    pdf = build(api)
    assert b"8" in b"".join(p.get_contents().get_data() for p in PdfReader(io.BytesIO(pdf)).pages)

    def remap(w: PdfWriter) -> None:
        for font in w.pages[0]["/Resources"]["/Font"].values():
            font = font.get_object()
            if font["/BaseFont"] == "/Helvetica":
                font[NameObject("/Encoding")] = DictionaryObject({
                    NameObject("/Type"): NameObject("/Encoding"),
                    NameObject("/BaseEncoding"): NameObject("/WinAnsiEncoding"),
                    NameObject("/Differences"): ArrayObject([NumberObject(56), NameObject("/one")])})

    bad = rewrite(api, pdf, remap)
    raw = [p.get_contents().get_data() for p in PdfReader(io.BytesIO(bad)).pages]
    assert raw == [p.get_contents().get_data() for p in PdfReader(io.BytesIO(pdf)).pages]  # streams untouched
    problems = check(api, bad)
    assert problems and problems[0].startswith("page 1: "), problems
    # pypdf's text applies the encoding: the page now reads a 1 where the ledger gives an 8;
    # failing that, the font's /Encoding is named.
    assert "the PDF prints" in problems[0] or "/Encoding" in problems[0], problems
    assert any("offset" in p for p in problems)


def test_incremental_update_appended_fails(floor):  # noqa: F811
    """An update appended to the unsigned report, then signed: the first revision is the
    report, but a third revision sits between it and the signature."""
    api = floor
    pdf = build(api)
    writer = PdfWriter(io.BytesIO(unsigned(pdf)), incremental=True)
    writer.add_metadata({"/Note": "nothing visible"})
    buf = io.BytesIO()
    writer.write(buf)
    bad = resign(api, buf.getvalue())
    assert bad.startswith(unsigned(pdf))
    problems = check(api, bad)
    assert problems == ["the PDF has 3 revisions; a report has two (the report, then its signature)"], problems


def test_embedded_figure_edited_fails(floor):  # noqa: F811
    """The embedded data edited in place (pages untouched): the figure is named, and the bytes."""
    api = floor
    pdf = build(api)
    data = json.loads(PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0])
    assert data["figures"]["total"]["containers"] == 2
    data["figures"]["total"]["containers"] = 3
    forged = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def edit(w: PdfWriter) -> None:
        names = w.root_object["/Names"]["/EmbeddedFiles"]["/Names"]
        names[1].get_object()["/EF"]["/F"].get_object().set_data(forged)

    bad = rewrite(api, pdf, edit)
    assert json.loads(PdfReader(io.BytesIO(bad)).attachments[layout.DATA_FILE][0]) == data
    problems = check(api, bad)
    assert "figures.total.containers: the PDF says 3, the ledger gives 2" in problems, problems
    assert any(p.startswith("the page text matches but the PDF bytes differ from offset") for p in problems), problems


def test_other_library_version_cannot_rebuild(floor):  # noqa: F811
    api = floor
    pdf = build(api)
    data = json.loads(PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0])
    here = data["build"]["reportlab"]
    data["build"]["reportlab"] = "4.0.0"
    problems = check(api, resign(api, render_data(data)))
    assert problems[0] == (f"built with ReportLab 4.0.0, this verifier has ReportLab {here}: cannot rebuild byte for "
                           "byte (install the same version to verify this report)")


def test_administration_log_names_are_rebuilt_from_the_registry(floor, monkeypatch):  # noqa: F811
    """Names are not in the entries: the rebuild reads them again with the key; a report made
    without the key (ids only) still rebuilds when the verifier has one."""
    api = floor
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", "")
    ids_only = build(api, "administrations")
    monkeypatch.setenv("CSLEDGER_PATIENT_KEY", PATIENT_KEY)
    named = build(api, "administrations")
    assert check(api, ids_only) == [] and check(api, named) == []
    # The embedded names edited (the pages redrawn to match): the registry's differ.
    data = json.loads(PdfReader(io.BytesIO(named)).attachments[layout.DATA_FILE][0])
    pid = sorted(data["annotations"]["patients"])[0]
    data["annotations"]["patients"][pid]["name"] = "Someone Else"
    problems = check(api, resign(api, render_data(data)), offline_same=False)
    assert any(p.startswith(f"annotations.patients.{pid}.name: the PDF says \"Someone Else\"") for p in problems), \
        problems
    # Offline the registry is out of reach: the embedded details no longer give the printed name.
    assert f"patient {pid} (entry " in api.offline_problems[0] and "the printed name is not the one in the " \
        "embedded details" in api.offline_problems[0], api.offline_problems
