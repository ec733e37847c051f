"""Beyond-use labels and downtime paper (issue 21), on SQLite and PostgreSQL.

Labels: for a serialized vial (GS1 id), a unit of a serialized carton (``...:08``), a csledger
vial (``V<seq>-n``) and a preparation (``P<seq>``), the PDF's text is read back (pypdf) and
every field compared with the book and the entry that punctured or prepared it (the signer's
name and initials, the local times, the beyond-use date or time); the page is rendered at 300 dpi
(pdftoppm) and its QR code DECODED (zxing-cpp): it must be exactly the container id. Refusals:
sealed (409 naming it), empty, already infused, unknown (404), a malformed id. The API route and
the page's route serve the same label, with the GS1 id's parentheses quoted or not; the stock and
downtime pages link it.

Downtime paper: the per-vial log has one page per vial that may be drawn from, each prefilled
with figures equal to the book (lot, expiry, mL left, beyond-use date) and its QR code, and the
infusion form lists the vials on hand; both print the last entry and say they are not ledger
records. ``csledger reports paper-log`` runs as a subprocess on the database alone.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import PIL.Image
import pytest
import zxingcpp
from pypdf import PdfReader

from api.web.labels import label_pdf, paper_pdf
from ledger import services
from ledger.domain import gs1
from ledger.domain.commands import (
    DrawInput,
    InfusePreparation,
    MakePreparation,
    OpenPackage,
    ReceivedLineInput,
    ReceiveStock,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.services import stock
from ledger.services.labels import container_label, initials
from ledger.storage.store import tree_size
from tests.api.conftest import build_api
from tests.clinical.conftest import PRESCRIBER_DEA, Ops
from tests.conftest import BACKENDS, DEA, KETAMINE_50, an_hour_ago
from tests.web.test_pages_http import login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
TZ = zoneinfo.ZoneInfo("America/Chicago")
GTIN = gs1.gtin_for_ndc10("6745700110")  # KETAMINE_50's NDC, 10 digits


def pdf_text(pdf: bytes) -> list[str]:
    return [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]


def decode_qr(pdf: bytes, tmp: Path, page: int = 1, dpi: int = 300) -> list[str]:
    """Render one page to PNG with pdftoppm and read every barcode on it with zxing-cpp."""
    src = tmp / "in.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile", str(src),
                    str(tmp / "page")], check=True)
    return [r.text for r in zxingcpp.read_barcodes(PIL.Image.open(tmp / "page.png"))]


def local(utc_text: str) -> str:
    return datetime.fromisoformat(utc_text.replace("Z", "+00:00")).astimezone(TZ).strftime("%Y-%m-%d %H:%M %Z")


class World:
    """A clinic with a punctured GS1 vial, a punctured unit of a serialized carton, a punctured
    and a sealed ``V`` vial, a bag prepared (not yet infused) and one infused."""

    def __init__(self, ops: Ops):
        self.ops = o = ops
        led = o.ledger
        self.gs1_vial = o.receive(1, gtin=GTIN, serials=("SN20260001",))[0]
        res = services.receive_stock(led, o.nurse, ReceiveStock(o.supplier_id, "INV-CARTON", an_hour_ago() - timedelta(hours=3), (
            ReceivedLineInput(KETAMINE_50, None, "KA2611", "2028-06-30", gtin=GTIN, serials=("C0000123456",), packages=1),)))
        services.open_package(led, o.nurse, OpenPackage(res["package_ids"][0], 10, an_hour_ago() - timedelta(hours=2)),
                              witness=o.nurse2)
        self.unit = res["vial_ids"][7]
        self.v_open, self.v_prep, self.v_sealed, self.v_empty = o.receive(4)
        o.dose(self.gs1_vial, "1.00", "1.00")
        o.dose(self.unit, "1.00", "1.00")
        o.dose(self.v_open, "2.50", "2.50")
        o.dose(self.v_empty, "10.00", "10.00")
        started = datetime.now(UTC) - timedelta(minutes=40)
        self.prep = services.make_preparation(led, o.pharmacist, MakePreparation(
            o.patient_id, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(self.v_prep, "0.70"),), "0.9% sodium chloride",
            "100.00", "bag", "100.70", started))["preparation_id"]
        self.infused = services.make_preparation(led, o.nurse, MakePreparation(
            o.patient_id, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(self.v_prep, "0.70"),), "0.9% sodium chloride",
            "100.00", "bag", "100.70", started))["preparation_id"]
        services.infuse_preparation(led, o.nurse, InfusePreparation(self.infused, "50.00", started + timedelta(minutes=5),
                                                                    started + timedelta(minutes=20)))

    def vial(self, vial_id: str) -> dict:
        return next(v for v in stock.vials(self.ops.ledger, DEA) if v["vial_id"] == vial_id)


@pytest.fixture
def world(ledger) -> World:
    return World(Ops(ledger))


def test_vial_labels_read_back_and_their_qr_code_is_the_container_id(world, tmp_path):
    for vid, short in ((world.gs1_vial, "serial"), (world.unit, "carton …123456 · vial 08"), (world.v_open, None)):
        pdf, data = label_pdf(world.ops.ledger, DEA, vid)
        page = PdfReader(io.BytesIO(pdf)).pages[0]
        assert (float(page.mediabox.width), float(page.mediabox.height)) == (144.0, 72.0)  # 2 x 1 inch
        text = page.extract_text()
        v = world.vial(vid)
        assert "Ketamine HCl injection 50 mg/mL" in text and "50.00 mg/mL, 10.00 mL vial, NDC 67457-0001-10" in text
        assert f"Lot {v['lot']} · exp {v['expiry']}" in text
        assert f"Punctured {local(v['opened_at'])}" in text
        # USP <797>: 28 days from the first puncture (the clinic's local day), as the book has it
        first_day = datetime.fromisoformat(v["opened_at"].replace("Z", "+00:00")).astimezone(TZ).date()
        assert v["beyond_use_date"] == (first_day + timedelta(days=28)).isoformat()
        assert f"BEYOND USE\n{v['beyond_use_date']} (end of day)" in text
        assert "By Nora Nurse (NN)" in text  # from the puncturing entry's signature
        assert data["short_id"] in text and (short is None or data["short_id"].startswith(short))
        if vid.startswith("(01)"):
            assert vid in text  # the whole GS1 id under the code, for when no scanner is at hand
        assert decode_qr(pdf, tmp_path) == [vid]


def test_preparation_label_reads_back_and_scans(world, tmp_path):
    pdf, _ = label_pdf(world.ops.ledger, DEA, world.prep)
    text = pdf_text(pdf)[0]
    with world.ops.ledger.reading() as c:
        from ledger.storage.store import projection_tables

        t = projection_tables["preparations"]
        row = c.execute(t.select().where(t.c.preparation_id == world.prep)).mappings().one()
    assert "35.00 mg in 100.70 mL bag, 0.9% sodium chloride" in text
    assert f"0.3475 mg/mL · patient {world.ops.patient_id}" in text
    assert f"Prepared {local(row['started_at'])}" in text
    # 4 hours after the start of preparation (ledger.domain.preparations.BEYOND_USE)
    assert row["beyond_use_at"] > row["started_at"]
    assert f"BEYOND USE\n{local(row['beyond_use_at'])}" in text
    started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
    assert local(row["beyond_use_at"]) == (started + timedelta(hours=4)).astimezone(TZ).strftime("%Y-%m-%d %H:%M %Z")
    assert "By Pia Pharmacist (PP)" in text
    assert decode_qr(pdf, tmp_path) == [world.prep]


def test_no_label_for_a_sealed_empty_or_infused_container_nor_for_nothing(world):
    led = world.ops.ledger
    with pytest.raises(Conflict) as exc:
        container_label(led, DEA, world.v_sealed)
    assert exc.value.field == "container_id" and f"vial {world.v_sealed} is sealed" in exc.value.reason
    with pytest.raises(Conflict, match="empty, no longer on hand"):
        container_label(led, DEA, world.v_empty)
    with pytest.raises(Conflict, match="already infused"):
        container_label(led, DEA, world.infused)
    with pytest.raises(NotFound) as nf:
        container_label(led, DEA, "V999999-1")
    assert nf.value.field == "container_id"
    for bad in ("", "V1/2", "V1\u200b", "x" * 65):
        with pytest.raises(InvalidInput):
            container_label(led, DEA, bad)
    assert initials("Nora Nurse") == "NN" and initials("Mary-Jo O'Neil") == "MJO" and initials("Dr. Dee Prescriber") == "DDP"


def test_label_routes_serve_it_quoted_or_not(ledger, tmp_path):
    api = build_api(ledger)
    from api.web.settings import WebSettings
    from ledger.storage.patient_keys import PatientKeys

    ops = api.clinic
    keys = api.client.app.state.patient_keys = PatientKeys.from_settings(api.client.app.state.settings)
    from ledger.domain.commands import AddressInput, RegisterPatient

    patient = services.register_patient(ledger, ops.nurse, RegisterPatient(
        "Pat Example", AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
    gs1_vial = services.receive_stock(ledger, ops.nurse, ReceiveStock(ops.supplier_id, "INV-1", an_hour_ago(), (
        ReceivedLineInput(KETAMINE_50, 2, "KA2610", "2028-06-30", gtin=GTIN, serials=("SN1", "SN2")),)))["vial_ids"]
    from ledger.domain.commands import AdministerDose

    services.administer_dose(ledger, ops.nurse, AdministerDose(
        patient, PRESCRIBER_DEA, "70.00", "0.50", (DrawInput(gs1_vial[0], "0.70"),), "0.70", an_hour_ago(), an_hour_ago()))
    for path in (quote(gs1_vial[0], safe=""), gs1_vial[0]):
        r = api.client.get(api.url(f"/containers/{path}/label"), headers=api.headers("nora"))
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
        assert decode_qr(r.content, tmp_path) == [gs1_vial[0]]
    r = api.client.get(api.url(f"/containers/{quote(gs1_vial[1], safe='')}/label"), headers=api.headers("pia"))
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "container_id", r.text
    assert "is sealed" in r.json()["detail"]
    r = api.client.get(api.url("/containers/V999999-1/label"), headers=api.headers("morgan"))
    assert r.status_code == 404
    r = api.client.get(api.url(f"/containers/{quote(gs1_vial[0], safe='')}/label"), headers=api.headers("ari"))
    assert r.status_code == 403  # an auditor reads the book; labels are for those who draw

    # The pages: the stock page and the downtime page link the label, the link quoted; it opens.
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    assert login(api, "nora").status_code == 303
    link = f"/ui/{DEA}/containers/{quote(gs1_vial[0], safe='/')}/label"
    for page in ("stock", "downtime"):
        html = api.client.get(f"/ui/{DEA}/{page}").text
        assert f'href="{link}"' in html and "Print beyond-use label" in html, page
    r = api.client.get(link)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert decode_qr(r.content, tmp_path) == [gs1_vial[0]]
    r = api.client.get(f"/ui/{DEA}/containers/{quote(gs1_vial[1], safe='')}/label")
    assert r.status_code == 409 and "is sealed" in r.text and "beyond-use label" in r.text
    for form in ("vial-log", "infusion-form"):
        r = api.client.get(f"/ui/{DEA}/downtime/{form}.pdf")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert "NOT A LEDGER RECORD" in pdf_text(r.content)[0]


def test_vial_log_is_prefilled_from_the_book_one_page_per_vial(world, tmp_path):
    led = world.ops.ledger
    pdf, data = paper_pdf(led, DEA, "vial-log", now=datetime.now(UTC))
    pages = pdf_text(pdf)
    drawable = [v for v in stock.vials(led, DEA) if v["state"] in ("open", "sealed") and not v["packaged"]]
    assert len(pages) == len(drawable) == len(data["vials"])
    with led.reading() as c:
        last = tree_size(c, DEA) - 1
    by_id = {v["vial_id"]: v for v in drawable}
    for text, v in zip(pages, data["vials"], strict=True):
        book = by_id[v["vial_id"]]
        assert f"(also in the QR code): {book['vial_id']}" in text
        assert f"Lot {book['lot']}" in text.replace("\n", " ").replace("Lot\n", "Lot ") or book["lot"] in text
        for figure in (book["lot"], book["expiry"], f"{book['ml_left']} mL", book["state"]):
            assert figure in text, (figure, text)
        assert (book["beyond_use_date"] or "at first puncture write the day + 28 days") in text
        assert f"last ledger entry #{last} (tree size {last + 1})" in text
        assert "BLANK FORM, NOT A LEDGER RECORD" in text and "not a signed report" in text
        for column in ("Date and time", "Patient id", "mL drawn", "mL given", "mL wasted", "Performed by (sign)",
                       "Witness (sign)", "mL left"):
            assert column in text
    assert pages[0].count(data["vials"][0]["vial_id"]) >= 1 and data["vials"][0]["state"] == "open"  # open first
    assert decode_qr(pdf, tmp_path, page=1, dpi=150) == [data["vials"][0]["vial_id"]]
    # one vial, by its id; a vial that cannot be drawn from has no log
    one, d1 = paper_pdf(led, DEA, "vial-log", now=datetime.now(UTC), vial=world.unit)
    assert len(pdf_text(one)) == 1 and d1["vials"][0]["ml_left"] == str(world.vial(world.unit)["ml_left"])
    with pytest.raises(Conflict, match="empty"):
        paper_pdf(led, DEA, "vial-log", now=datetime.now(UTC), vial=world.v_empty)
    with pytest.raises(NotFound):
        paper_pdf(led, DEA, "vial-log", now=datetime.now(UTC), vial="V999999-1")


def test_infusion_form_asks_the_infusion_fields_and_lists_the_vials(world):
    led = world.ops.ledger
    pdf, data = paper_pdf(led, DEA, "infusion-form", now=datetime.now(UTC))
    text = "\n".join(pdf_text(pdf))
    for field in ("Patient id", "Prescriber name", "Prescriber DEA number", "Weight (kg)", "Ordered dose (mg/kg)",
                  "Vials drawn from", "mL drawn", "mL given", "mL wasted", "How it was wasted", "Infusion started",
                  "Infusion ended", "Witness of the waste", "Performed by", "Beyond use (started + 4 h)"):
        assert field in text, field
    assert "BLANK FORM, NOT A LEDGER RECORD" in text
    for v in data["vials"]:
        book = world.vial(v["vial_id"])
        assert f"{book['vial_id']}" in text and str(book["ml_left"]) in text
    assert len(data["vials"]) == 14  # 1 GS1 vial, 10 carton units, 3 V vials with liquid (one empty)


def test_cli_prints_the_paper_log_from_the_database(db_url, ledger, tmp_path):
    from tests.cli.test_cli import run

    w = World(Ops(ledger))
    out = tmp_path / "vials.pdf"
    p = run(["reports", "paper-log", "--registrant", DEA, "--out", str(out), "--db", db_url], tmp_path)
    assert "blank forms, not ledger records" in p.stdout
    pages = pdf_text(out.read_bytes())
    assert len(pages) == 14 and all("NOT A LEDGER RECORD" in t for t in pages)
    p = run(["reports", "paper-log", "--registrant", DEA, "--vial", w.gs1_vial, "--out", str(out), "--db", db_url],
            tmp_path)
    assert decode_qr(out.read_bytes(), tmp_path, dpi=150) == [w.gs1_vial]
    run(["reports", "paper-log", "--registrant", DEA, "--form", "infusion", "--out", str(out), "--db", db_url], tmp_path)
    assert "Downtime infusion record" in pdf_text(out.read_bytes())[0]
    bad = run(["reports", "paper-log", "--registrant", DEA, "--vial", w.v_empty, "--out", str(tmp_path / "x.pdf"),
               "--db", db_url], tmp_path, check=False)
    assert bad.returncode == 2 and "empty" in bad.stderr and not (tmp_path / "x.pdf").exists()
    # bad input: refused with a line naming it, no traceback, nothing written (the ledger neither);
    # on SQLite only (each run is a process start: the refusals do not depend on the backend)
    if not db_url.startswith("sqlite"):
        return
    with ledger.reading() as c:
        before = tree_size(c, DEA)
    for args, expect in ((["--registrant", "\u0410B1234563"], "no registrant"), (["--registrant", "FB7654329"], "no registrant"),
                         (["--registrant", DEA, "--vial", "V1\u200b"], "no vial"),
                         (["--registrant", DEA, "--form", "nonsense"], "--form"),
                         (["--registrant", DEA, "--form", "infusion", "--vial", w.gs1_vial], "--vial"),
                         (["--registrant", DEA, "--out", str(tmp_path / "no-such-folder" / "x.pdf")], "cannot write")):
        cmd = ["reports", "paper-log", *args, "--db", db_url]
        if "--out" not in args:
            cmd += ["--out", str(tmp_path / "y.pdf")]
        p = run(cmd, tmp_path, check=False)
        assert p.returncode != 0 and expect in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert not (tmp_path / "y.pdf").exists()
    with ledger.reading() as c:
        assert tree_size(c, DEA) == before


def test_pages_render_to_png(world, tmp_path):
    """Page 1 of each form and a label rendered to PNG (looked at while writing this, see the notes)."""
    assert shutil.which("pdftoppm")
    for name, pdf in (("label", label_pdf(world.ops.ledger, DEA, world.unit)[0]),
                      ("vials", paper_pdf(world.ops.ledger, DEA, "vial-log", now=datetime.now(UTC))[0]),
                      ("infusion", paper_pdf(world.ops.ledger, DEA, "infusion-form", now=datetime.now(UTC))[0])):
        (tmp_path / f"{name}.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(tmp_path / f"{name}.pdf"),
                        str(tmp_path / name)], check=True)
        assert PIL.Image.open(tmp_path / f"{name}.png").size[0] > 100


def test_a_vial_opened_before_the_ledger_says_so(ledger, tmp_path):
    """An initial inventory listed the vial open, with the day of its first puncture: the label
    prints that day and no signer (nobody punctured it in csledger)."""
    from ledger.domain.commands import InventoryItemInput, TakeInventory

    ops = Ops(ledger)
    day = (datetime.now(UTC) - timedelta(days=3)).astimezone(TZ).date()
    res = services.take_inventory(ledger, ops.pharmacist, TakeInventory(
        "initial", "opening_of_business", an_hour_ago(), items=(InventoryItemInput(
            KETAMINE_50, "KA2601", "2028-03-31", sealed=False, ml="6.00", first_punctured_on=day.isoformat()),)),
        witness=ops.nurse)
    vid = res["vial_ids"][0]
    pdf, data = label_pdf(ledger, DEA, vid)
    text = pdf_text(pdf)[0]
    assert data["by"] is None and data["opened"]["day"] == day.isoformat()
    assert f"Punctured {day.isoformat()}" in text and "By not recorded (before the ledger)" in text
    assert f"{world_bud(ledger, vid)} (end of day)" in text
    assert decode_qr(pdf, tmp_path) == [vid]


def world_bud(ledger, vial_id: str) -> str:
    return next(v for v in stock.vials(ledger, DEA) if v["vial_id"] == vial_id)["beyond_use_date"]
