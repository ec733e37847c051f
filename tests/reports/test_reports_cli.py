"""Reports as a user meets them: ``csledger report`` and ``csledger verify-report`` run as
subprocesses on a hand-computed scenario (the worked example of docs/compliance.md for the beginning
inventory and receipts), the PDF read back with pypdf, page 1 rendered to PNG."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pypdf import PdfReader, PdfWriter

from ledger import services
from ledger.domain.commands import (
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    TakeInventory,
)
from ledger.integrity import canonical as canon
from ledger.integrity import checkpoints as cp
from ledger.integrity import merkle
from ledger.settings import Settings
from ledger.storage.log import WitnessEntry, attach
from ledger.storage.store import Ledger, make_engine, migrate
from reports import layout
from reports.base import render_data
from tests.cli.test_cli import run
from tests.conftest import DEA, KETAMINE_10, KETAMINE_50, Clinic
from tests.reports.report_keys import CLI_KEY_DIR, certify

TZ = zoneinfo.ZoneInfo("America/Chicago")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Initial inventory (4 sealed 50 mg/mL vials + one opened vial estimated at 6 mL = 2,300 mg),
    a receipt of 10 vials (5,000 mg) and a late receipt of 3 vials of 10 mg/mL (600 mg)."""
    tmp = tmp_path_factory.mktemp("reports")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    log = attach(ledger, Settings(database_url=url, key_dir=tmp / "keys"))  # checkpoints signed per command
    clinic = Clinic(ledger)
    certify(ledger, clinic.admin, tmp / CLI_KEY_DIR)  # reports are signed with it (issue 18)
    now = datetime.now(UTC)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", now - timedelta(days=3), late_reason="paper inventory typed in later",
        items=(InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=4),
               InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=False, ml="6.00",
                                  first_punctured_on=(now - timedelta(days=4)).date().isoformat()))), witness=clinic.nurse)
    services.receive_stock(ledger, clinic.nurse, ReceiveStock(
        supplier_id=clinic.supplier_id, invoice_number="GMS-0001", occurred_at=now - timedelta(hours=2),
        lines=(ReceivedLineInput(KETAMINE_50, 10, "KA2610", "2028-06-30"),)))
    services.receive_stock(ledger, clinic.pharmacist, ReceiveStock(
        supplier_id=clinic.supplier_id, invoice_number="GMS-0002", occurred_at=now - timedelta(days=2),
        late_reason="delivery arrived during an outage",
        lines=(ReceivedLineInput(KETAMINE_10, 3, "KB1001", "2027-12-31"),)))
    # A witness cosigns the latest checkpoint (as its add-checkpoint answer would be stored).
    witness = cp.Signer.generate("witness.example.org", cp.SIG_COSIGNATURE_V1)
    log.set_witnesses(DEA, [WitnessEntry(witness.verifier().to_string(), "https://witness.example.org")], 1)
    with engine.begin() as c:
        size, note = c.exec_driver_sql("SELECT tree_size, note FROM checkpoints WHERE registrant = ? "
                                       "ORDER BY tree_size DESC LIMIT 1", (DEA,)).one()
        line = cp.cosign(note.split("\n\n", 1)[0] + "\n", witness, int(now.timestamp()))
        c.exec_driver_sql("INSERT INTO cosignatures (registrant, tree_size, witness, key_id, line, received_at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (DEA, size, witness.name, witness.verifier().key_id_hex,
                                                       line.rstrip("\n"), canon.format_time(now)))
    ledger.dispose()
    today = now.astimezone(TZ).date()
    return {"db": url, "dir": tmp, "from": (today - timedelta(days=7)).isoformat(),
            "to": today.isoformat(), "now": now, "clinic": clinic}


def report(scenario, kind: str, name: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["report", kind, "--registrant", DEA, "--from", scenario["from"], "--to", scenario["to"],
                "--out", str(scenario["dir"] / name), "--db", scenario["db"], *extra], scenario["dir"], check=check)


def verify(scenario, path: Path, check: bool = False) -> subprocess.CompletedProcess:
    return run(["verify-report", str(path), "--db", scenario["db"]], scenario["dir"], check=check)


def text_of(path: Path) -> list[str]:
    """Each page's text, whitespace collapsed (a cell's wrapped lines read as one run)."""
    return [" ".join(p.extract_text().split()) for p in PdfReader(path).pages]


def current_root(db: str) -> tuple[int, str]:
    eng = sa.create_engine(db)
    with eng.connect() as c:
        rows = c.exec_driver_sql("SELECT canonical FROM entries WHERE registrant = ? ORDER BY seq", (DEA,)).all()
    eng.dispose()
    return len(rows), merkle.root_from_leaf_hashes(canon.leaf_hash(bytes(r[0])) for r in rows).hex()


def test_receiving_log_prints_every_required_element(scenario):
    p = report(scenario, "receiving", "receiving.pdf")
    assert "wrote" in p.stdout
    path = scenario["dir"] / "receiving.pdf"
    pages = text_of(path)
    text = "\n".join(pages)
    # the frame, on every page
    size, root = current_root(scenario["db"])
    for i, page in enumerate(pages, start=1):
        for must in ("Calm Waters Ketamine Clinic", "100 Harbor Way, Austin, TX 78701", "DEA registration AB1234563",
                     f"Period: {scenario['from']} to {scenario['to']} (America/Chicago)", "csledger CLI (operator)",
                     f"Page {i} of {len(pages)}", f"tree size {size}", root):
            assert must in page, (i, must)
    # 1304.22(c): drug, form and strength, container volume, containers, date, supplier name/address/DEA
    for must in ("Ketamine HCl injection 50 mg/mL", "injection, 50.00 mg/mL", "10.00 mL", "GMS-0001",
                 "Gulf Medical Supply", "5 Depot Rd, Houston, TX", "DEA PB1234563", "KA2610", "exp 2028-06-30",
                 "Nora Nurse", "Pia Pharmacist", "LATE ENTRY", "delivery arrived during an outage"):
        assert must in text, must
    # figures computed by hand: 10 x 10 mL x 50 mg/mL and 3 x 20 mL x 10 mg/mL
    for must in ("100.00 mL", "5,000.00 mg", "60.00 mL", "600.00 mg", "5,600.00 mg", "13"):
        assert must in text, must
    # issue 20: mL of 50 mg/mL and of 10 mg/mL do not add up: the all-products row is in mg
    assert "160.00 mL" not in text and "(in mg: mL of different strengths do not add up)" in text
    assert "Meaning: prepared" in pages[-1] and "Signature (reviewed)" in pages[-1]
    # the state is in the metadata and the embedded data, for verify-report and other tools
    reader = PdfReader(path)
    assert reader.metadata["/CSLedgerState"] == f"csledger-state/1 {DEA} {size} {root}"
    data = json.loads(reader.attachments[layout.DATA_FILE][0])
    assert data["state"]["tree_size"] == size and data["state"]["root"] == root
    assert data["figures"]["total"] == {"containers": 13, "receipts": 2, "total_ml": "160.00", "total_mg": "5600.00"}


def test_inventory_record_as_1304_11(scenario):
    report(scenario, "inventory", "inventory.pdf", "--paper", "a4")
    text = "\n".join(text_of(scenario["dir"] / "inventory.pdf"))
    for must in ("Initial inventory taken at opening of business", "Finished form and strength",
                 "Volume per container", "Number of containers", "sealed", "opened", "ESTIMATED", "exact",
                 "2,000.00 mg", "300.00 mg", "2,300.00 mg", "6.00 mL", "46.00 mL", "LATE ENTRY",
                 "paper inventory typed in later", "Signature (inventory taken by)", "Signature (witnessed by)",
                 "Pia Pharmacist"):
        assert must in text, must
    reader = PdfReader(scenario["dir"] / "inventory.pdf")
    w, h = reader.pages[0].mediabox.width, reader.pages[0].mediabox.height
    assert (round(w), round(h)) == (595, 842)  # A4 portrait


def test_verify_report_accepts_an_untouched_report(scenario):
    report(scenario, "receiving", "ok.pdf")
    p = verify(scenario, scenario["dir"] / "ok.pdf", check=True)
    assert p.stdout.startswith("OK Receiving log of AB1234563")


def test_edited_printed_figure_fails_verify_report(scenario):
    report(scenario, "receiving", "tamper-text.pdf")
    src = scenario["dir"] / "tamper-text.pdf"
    writer = PdfWriter(clone_from=PdfReader(src))
    content = writer.pages[0].get_contents()
    raw = content.get_data()
    assert raw.count(b"(5,000.00 mg)") == 2  # the receipt's row and its NDC's total
    content.set_data(raw.replace(b"(5,000.00 mg)", b"(5,900.00 mg)", 1))
    writer.pages[0].replace_contents(content)
    bad = scenario["dir"] / "tampered-text.pdf"
    with open(bad, "wb") as f:
        writer.write(f)
    p = verify(scenario, bad)
    assert p.returncode == 1, p.stdout
    assert "page 1" in p.stderr and "5,900.00 mg" in p.stderr and "5,000.00 mg" in p.stderr
    assert "Traceback" not in p.stderr


def test_forged_figures_in_data_and_text_fail_verify_report(scenario):
    """A forger who edits the embedded figures and re-draws the pages to match: the figures
    recomputed from the ledger name the one that changed."""
    report(scenario, "receiving", "forge.pdf")
    data = json.loads(PdfReader(scenario["dir"] / "forge.pdf").attachments[layout.DATA_FILE][0])
    row = next(i for i, r in enumerate(data["figures"]["rows"]) if r["invoice"] == "GMS-0001")
    data["figures"]["rows"][row]["containers"] = 9
    forged = scenario["dir"] / "forged.pdf"
    forged.write_bytes(render_data(data))
    p = verify(scenario, forged)
    assert p.returncode == 1
    assert f"figures.rows[{row}].containers: the PDF says 9, the ledger gives 10" in p.stderr


def test_report_on_a_rewritten_ledger_fails(scenario, tmp_path):
    db_file = tmp_path / "copy.db"
    shutil.copy(scenario["dir"] / "ledger.db", db_file)
    url = f"sqlite:///{db_file}"
    run(["report", "receiving", "--registrant", DEA, "--from", scenario["from"], "--to", scenario["to"],
         "--out", str(tmp_path / "r.pdf"), "--db", url], tmp_path)
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.exec_driver_sql("DROP TRIGGER entries_no_update")
        c.exec_driver_sql("UPDATE entries SET canonical = CAST(replace(CAST(canonical AS TEXT), 'GMS-0001', "
                          "'GMS-0009') AS BLOB) WHERE kind = 'stock_received'")
    eng.dispose()
    p = run(["verify-report", str(tmp_path / "r.pdf"), "--db", url], tmp_path, check=False)
    assert p.returncode != 0
    assert "hash" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args, message", [
    (["--registrant", "FB7654329"], "no registrant with DEA number FB7654329"),
    (["--from", "2026-02-01", "--to", "2026-01-01"], "the period is empty"),
    (["--from", "2020-01-01", "--to", "2020-01-31"], "the period ends before the first inventory"),
    (["--from", "2026-13-01"], "YYYY-MM-DD"),
])
def test_bad_requests_are_clear_errors(scenario, args, message):
    base = {"--registrant": DEA, "--from": scenario["from"], "--to": scenario["to"]}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    p = run(["report", "receiving", *[x for kv in base.items() for x in kv], "--out", "x.pdf",
             "--db", scenario["db"]], scenario["dir"], check=False)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_nothing_to_report_and_unknown_kind(scenario, tmp_path):
    later = (datetime.now(UTC) + timedelta(days=30)).astimezone(TZ).date().isoformat()
    p = run(["report", "receiving", "--registrant", DEA, "--from", later, "--to", later, "--out", "x.pdf",
             "--db", scenario["db"]], scenario["dir"], check=False)
    assert p.returncode == 2 and "nothing to report" in p.stderr
    p = run(["report", "sales", "--registrant", DEA, "--from", scenario["from"], "--to", scenario["to"],
             "--out", "x.pdf", "--db", scenario["db"]], scenario["dir"], check=False)
    assert p.returncode == 2 and "no report kind 'sales'" in p.stderr
    (tmp_path / "plain.pdf").write_bytes(render_plain_pdf())
    p = run(["verify-report", str(tmp_path / "plain.pdf"), "--db", scenario["db"]], tmp_path, check=False)
    assert p.returncode == 2 and "not a csledger report" in p.stderr


def render_plain_pdf() -> bytes:
    from reportlab.pdfgen.canvas import Canvas

    buf = io.BytesIO()
    c = Canvas(buf)
    c.drawString(72, 720, "just a PDF")
    c.save()
    return buf.getvalue()


def test_page_one_renders_to_png(scenario):
    """Rendered with poppler's pdftoppm (Debian poppler-utils, installed by .ci/run). The PNG is
    kept in the test's folder for a human to look at; it is never committed."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not found: install Debian's poppler-utils to render report pages")
    report(scenario, "receiving", "png.pdf")
    out = scenario["dir"] / "page"
    subprocess.run(["pdftoppm", "-r", "50", "-f", "1", "-l", "1", "-png", str(scenario["dir"] / "png.pdf"), str(out)],
                   check=True, timeout=60)
    png = next(scenario["dir"].glob("page*.png"))
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (550, 425)  # Letter landscape at 50 dpi


def test_signed_checkpoint_fingerprints_and_cosignatures_are_printed_and_checked(scenario):
    report(scenario, "receiving", "cp.pdf")
    pages = text_of(scenario["dir"] / "cp.pdf")
    size, _ = current_root(scenario["db"])
    for page in pages:
        assert f"Signed checkpoint: origin csledger.local/{DEA}/" in page and f"tree size {size}" in page
        assert "fingerprint SHA256:" in page
        assert "Witness cosignatures: witness.example.org (key ID" in page
    p = verify(scenario, scenario["dir"] / "cp.pdf", check=True)
    assert "checkpoint signature OK, 1 witness cosignature(s) OK" in p.stdout
    assert f"consistent with the ledger's latest checkpoint (size {size})" in p.stdout


def test_report_stays_valid_as_the_ledger_grows(scenario, tmp_path):
    report(scenario, "receiving", "grow.pdf")
    shutil.copy(scenario["dir"] / "ledger.db", tmp_path / "ledger.db")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(make_engine(url))
    attach(ledger, Settings(database_url=url, key_dir=scenario["dir"] / "keys"))
    services.receive_stock(ledger, scenario["clinic"].nurse, ReceiveStock(
        supplier_id=scenario["clinic"].supplier_id, invoice_number="GMS-0003",
        occurred_at=datetime.now(UTC) - timedelta(minutes=5),
        lines=(ReceivedLineInput(KETAMINE_50, 1, "KA2611", "2028-06-30"),)))
    ledger.dispose()
    size, _ = current_root(url)
    p = run(["verify-report", str(scenario["dir"] / "grow.pdf"), "--db", url], tmp_path, check=True)
    assert f"consistent with the ledger's latest checkpoint (size {size})" in p.stdout


def test_forged_checkpoint_fails_verify_report(scenario):
    report(scenario, "receiving", "cpforge.pdf")
    data = json.loads(PdfReader(scenario["dir"] / "cpforge.pdf").attachments[layout.DATA_FILE][0])
    body = data["state"]["checkpoint"].split("\n\n", 1)[0] + "\n"
    origin = body.split("\n", 1)[0]
    forger = cp.Signer.generate(origin)
    data["state"]["checkpoint"] = cp.sign_note(body, forger).decode()
    data["state"]["verifier_keys"] = [forger.verifier().to_string()]
    forged = scenario["dir"] / "cpforged.pdf"
    forged.write_bytes(render_data(data))
    p = verify(scenario, forged)
    assert p.returncode == 1 and "does not verify under the ledger's log keys" in p.stderr


def test_an_audit_with_no_count_to_end_at_is_refused_with_the_counts_it_could_use(scenario):
    """Issue 20, one period: an audit runs between two counts or inventories. This ledger has
    the initial inventory and no count after it, so ``csledger report audit`` refuses, naming
    the inventory it could begin at (the worked example's figures through the PDF, with a
    closing count, are tests/reports/test_audit_core.py's)."""
    p = report(scenario, "audit", "audit.pdf", check=False)
    assert p.returncode != 0 and not (scenario["dir"] / "audit.pdf").exists()
    msg = " ".join((p.stderr + p.stdout).split())
    assert "an audit runs between two counts or inventories" in msg and "nearest counts: entry" in msg, msg


def test_vial_history_from_the_command_line(scenario):
    eng = sa.create_engine(scenario["db"])
    with eng.connect() as c:
        vial = c.exec_driver_sql("SELECT vial_id FROM vials WHERE lot = 'KA2610' ORDER BY vial_id LIMIT 1").scalar()
    eng.dispose()
    p = report(scenario, "vial", "vial.pdf", check=False)
    assert p.returncode == 2 and "the vial report needs --vial" in p.stderr
    report(scenario, "vial", "vial.pdf", "--vial", vial)
    text = " ".join(text_of(scenario["dir"] / "vial.pdf"))
    for must in (f"Container {vial}", "received", "invoice GMS-0001 from Gulf Medical Supply (DEA PB1234563)",
                 "10.00 mL", "Nora Nurse (received)", "Now: SEALED"):
        assert must in text, must
    assert verify(scenario, scenario["dir"] / "vial.pdf").returncode == 0
