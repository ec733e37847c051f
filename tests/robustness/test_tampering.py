"""Tampering by someone with full SQL access (triggers dropped), on SQLite and PostgreSQL, as the
user meets it: ``csledger verify``, ``verify --deep``, ``verify-bundle`` and ``verify-report`` run
as subprocesses, each exiting 1 with a message that names the place (the entry's seq, the table
and key, the patient, the checkpoint's size, the bundle line, the report figure).

Issue 8's list, one test (or more) each:
  a field of the bytes changed ............ test_changed_byte_field_*
  a copied column changed ................. test_copied_*_column_*
  an entry deleted, inserted, reordered ... test_deleted_* / test_inserted_* / test_reordered_*
  a projection changed .................... test_changed_projection_*
  a patient's registry record changed ..... test_patient_registry_*
  the whole chain re-hashed and re-signed
  with the stolen log key ................. test_whole_chain_rehashed_and_resigned_*
  a checkpoint replaced ................... test_*checkpoint_replaced_*
  a report figure edited .................. test_report_figure_edited_*
plus the Merkle tree itself (test_changed_*merkle_node*, test_rehashed_tail_*).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import AddressInput, RegisterPatient, TakeInventory
from ledger.integrity.checkpoints import Checkpoint, Signer, sign_checkpoint
from ledger.services.verify import verify
from ledger.storage import log as tl
from ledger.storage.log import WitnessEntry, attach
from ledger.storage.patient_keys import PatientDetails, PatientKeys
from ledger.storage.store import Ledger, entries_t, movements_t, projection_tables
from tests.api.conftest import PATIENT_KEY
from tests.conftest import BACKENDS, DEA, Clinic, fresh_database_url
from tests.contract.test_ledger_contract import receipt
from tests.integrity.conftest import settings_for
from tests.integrity.test_forger import forge
from witness.server import Witness, serve_in_thread

CSLEDGER = [sys.executable, "-m", "api.cli"]
pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def drop_all_triggers(ledger: Ledger) -> None:
    with ledger.engine.begin() as c:
        for t in ("entries", "entry_movements", "merkle_nodes", "checkpoints"):
            if ledger.dialect == "sqlite":
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_update")
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_delete")
            else:
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")


@dataclass
class Tampered:
    ledger: Ledger
    url: str
    tmp: Path
    rows: list[dict]  # the registrant's entries before tampering, in seq order
    patients: list[str]
    keys: PatientKeys
    log: tl.TransparencyLog
    clinic: Clinic
    servers: list = field(default_factory=list)

    def cli(self, *args: str, patient_key: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "CSLEDGER_KEY_DIR": str(self.tmp / "keys")}
        env.pop("CSLEDGER_PATIENT_KEY", None)
        if patient_key:
            env["CSLEDGER_PATIENT_KEY"] = PATIENT_KEY
        return subprocess.run(CSLEDGER + list(args), cwd=self.tmp, capture_output=True, text=True, env=env, timeout=300)

    def passes(self, *args: str, **kw) -> subprocess.CompletedProcess:
        p = self.cli(*args, **kw)
        assert p.returncode == 0, f"{args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def fails(self, *args: str, says: str, **kw) -> str:
        """Run a check that must fail (exit 1) and print ``says``; returns its FAIL line."""
        p = self.cli(*args, **kw)
        assert p.returncode == 1, f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert says in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        return next(line for line in p.stderr.splitlines() if says in line)

    def verify(self, *extra: str, says: str, **kw) -> str:
        return self.fails("verify", *extra, "--db", self.url, says=says, **kw)

    def seq(self, i: int) -> int:
        return self.rows[i]["seq"]

    def update_entry(self, seq: int, **values) -> None:
        with self.ledger.engine.begin() as c:
            c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == seq).values(**values))

    def sql(self, text: str, **params) -> None:
        with self.ledger.engine.begin() as c:
            c.execute(sa.text(text), params)


def entry_rows(ledger: Ledger) -> list[dict]:
    with ledger.reading() as conn:
        rows = conn.execute(sa.select(entries_t).where(entries_t.c.registrant == DEA).order_by(entries_t.c.seq)).mappings()
        return [dict(r) for r in rows]


@pytest.fixture
def tampered(ledger, db_url, tmp_path) -> Iterator[Tampered]:
    """A clinic whose every command signs a checkpoint (log key in tmp/keys), two patients in the
    encrypted registry, an (empty) initial inventory and four receipts; verified clean, then the append-only triggers dropped."""
    log = attach(ledger, settings_for(tmp_path))
    clinic = Clinic(ledger)
    keys = PatientKeys.from_base64(PATIENT_KEY)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory(  # reports need one
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=3), items=()), witness=clinic.nurse)
    patients = [services.register_patient(ledger, clinic.nurse, RegisterPatient(
        name, AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
        for name in ("Pat Example", "Sam Other")]
    for i in range(4):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, f"INV-{i}"))
    assert verify(ledger, deep=True, patient_keys=keys).ok
    drop_all_triggers(ledger)
    t = Tampered(ledger, db_url, tmp_path, entry_rows(ledger), patients, keys, log, clinic)
    yield t
    for s in t.servers:
        s.shutdown()
        s.server_close()


def test_untouched_ledger_passes_every_check(tampered):
    t = tampered
    p = t.passes("verify", "--deep", "--db", t.url)
    assert f"verified {len(t.rows)} entries (deep): OK" in p.stdout
    p = t.passes("verify", "--deep", "--db", t.url, patient_key=False)
    assert "without decrypting" in p.stderr


# --- the entries ------------------------------------------------------------------------------------


def test_changed_byte_field_is_caught_by_verify(tampered):
    t = tampered
    seq = t.seq(-2)
    forged = t.rows[-2]["canonical"].replace(b'"containers":2', b'"containers":3')
    assert forged != t.rows[-2]["canonical"]
    t.update_entry(seq, canonical=forged)
    t.verify(says=f"{DEA} seq {seq}: canonical bytes do not hash to the stored leaf hash")


def test_copied_kind_column_is_caught_by_deep(tampered):
    t = tampered
    seq = t.seq(-1)
    t.update_entry(seq, kind="inventory_taken")
    assert verify(t.ledger).ok  # the fast pass reads only the bytes and hashes
    t.verify("--deep", says=f"{DEA} seq {seq}: copied column 'kind' is 'inventory_taken' but the entry says 'stock_received'")


def test_copied_movement_column_is_caught_by_deep(tampered):
    t = tampered
    seq = t.seq(-1)
    with t.ledger.engine.begin() as c:
        c.execute(sa.update(movements_t).where(movements_t.c.registrant == DEA, movements_t.c.seq == seq,
                                               movements_t.c.line == 0).values(ml=Decimal("9.00")))
    t.verify("--deep", says=f"{DEA} seq {seq}: copied stock movement line 0 says")


def test_deleted_entry_is_caught(tampered):
    t = tampered
    seq = t.seq(-3)
    t.sql("DELETE FROM entries WHERE registrant = :r AND seq = :s", r=DEA, s=seq)
    t.verify(says=f"{DEA} seq {seq}: entry missing: found seq {seq + 1} where {seq} was expected")


def test_inserted_entry_is_caught(tampered):
    """An entry slipped in mid-chain (later seqs shifted up) breaks the link after it."""
    t = tampered
    at = t.seq(-2)
    with t.ledger.engine.begin() as c:
        for r in reversed(t.rows[at:]):
            c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == r["seq"]).values(seq=r["seq"] + 1))
        c.execute(sa.insert(entries_t).values(**dict(t.rows[1], seq=at, command_id="forged")))
    t.verify(says=f"{DEA} seq {at}: chain broken: prev_hash is not the previous entry's leaf hash")


def test_reordered_entries_are_caught(tampered):
    t = tampered
    a, b = t.rows[-3], t.rows[-2]
    for src, dst in ((a, b), (b, a)):
        t.update_entry(dst["seq"], canonical=src["canonical"], leaf_hash=src["leaf_hash"], prev_hash=src["prev_hash"])
    t.verify(says=f"{DEA} seq {a['seq']}: chain broken: prev_hash is not the previous entry's leaf hash")


# --- projections -----------------------------------------------------------------------------------


def test_changed_projection_is_caught_by_deep(tampered):
    t = tampered
    vials = projection_tables["vials"]
    with t.ledger.engine.begin() as c:
        vial_id = c.execute(sa.select(vials.c.vial_id).where(vials.c.registrant == DEA).order_by(vials.c.vial_id)).scalars().first()
        c.execute(sa.update(vials).where(vials.c.registrant == DEA, vials.c.vial_id == vial_id).values(ml_left=Decimal("4.00")))
    assert verify(t.ledger).ok
    line = t.verify("--deep", says=f"projection vials row ('{DEA}', '{vial_id}') differs from its rebuild")
    assert "'ml_left'" in line


# --- the Merkle tree -------------------------------------------------------------------------------


def test_changed_inner_merkle_node_is_caught_by_deep(tampered):
    t = tampered
    t.sql("UPDATE merkle_nodes SET hash = (SELECT hash FROM merkle_nodes m2 WHERE m2.level = 0 AND m2.idx = 0 "
          "AND m2.registrant = merkle_nodes.registrant) WHERE level = 1 AND idx = 0")
    # Node (1, 0) is inside the left perfect subtree: not read by the root, so the fast pass
    # cannot see it, but an inclusion proof would carry it; the deep pass recomputes every node.
    assert verify(t.ledger).ok
    t.verify("--deep", says=f"{DEA} seq 1: stored Merkle node (level 1, index 0) differs from its recomputation")


def test_changed_root_merkle_node_is_caught_by_verify(tampered):
    t = tampered
    top = len(t.rows).bit_length() - 1  # the largest perfect subtree [0, 2^top) feeds the root directly
    t.sql(f"UPDATE merkle_nodes SET hash = (SELECT hash FROM merkle_nodes m2 WHERE m2.level = 0 AND m2.idx = 0 "
          f"AND m2.registrant = merkle_nodes.registrant) WHERE level = {top} AND idx = 0")
    t.verify(says=f"{DEA}: the root of the stored Merkle nodes differs from the root of the entries")
    t.verify("--deep", says=f"{DEA} seq {2 ** top - 1}: stored Merkle node (level {top}, index 0) differs from its "
                            "recomputation")


def test_rehashed_tail_is_caught_by_the_stored_merkle_nodes(tampered):
    """The last entry rewritten AND its leaf hash recomputed keeps the chain links consistent;
    the stored Merkle nodes (and the signed checkpoint) still commit to the old leaf."""
    t = tampered
    last = t.rows[-1]
    forged = last["canonical"].replace(b'"containers":2', b'"containers":1')
    t.update_entry(last["seq"], canonical=forged, leaf_hash=hashlib.sha256(b"\x00" + forged).hexdigest())
    t.verify(says=f"{DEA}: the root of the stored Merkle nodes differs from the root of the entries")
    t.verify("--deep", says=f"{DEA} seq {last['seq']}: ")  # the copied movements and the stored leaf disagree


# --- the patient registry --------------------------------------------------------------------------


def _registry_seq(t: Tampered, pid: str) -> int:
    return next(r["seq"] for r in t.rows if r["kind"] == "patient_registered" and f'"patient_id":"{pid}"'.encode() in r["canonical"])


def test_patient_registry_record_resealed_is_caught_by_deep(tampered):
    """A valid encryption (the forger has the patient key) of another address: the row no
    longer matches the commitment its entry recorded."""
    t = tampered
    pid = t.patients[0]
    fake = t.keys.seal(DEA, pid, PatientDetails("Pat Example", "2 Elm St", "Austin", "TX", "78701"))
    t.sql("UPDATE patient_registry SET sealed = :s WHERE registrant = :r AND patient_id = :p", s=fake, r=DEA, p=pid)
    assert verify(t.ledger).ok
    t.verify("--deep", says=f"{DEA} seq {_registry_seq(t, pid)}: patient {pid}'s registry row no longer matches "
                            "the commitment recorded in the ledger")


def test_patient_registry_ciphertext_swapped_is_caught_by_deep(tampered):
    t = tampered
    a, b = t.patients
    t.sql("UPDATE patient_registry SET sealed = (SELECT sealed FROM patient_registry WHERE patient_id = :b) "
          "WHERE patient_id = :a", a=a, b=b)
    t.verify("--deep", says=f"{DEA} seq {_registry_seq(t, a)}: patient {a}'s registry row does not decrypt under "
                            f"the patient key as {DEA}/{a}")


def test_patient_registry_ciphertext_changed_is_caught_without_the_key(tampered):
    """No patient key configured: the row is not opened, but its sealed bytes must hash to the
    ``sealed_sha256`` the patient's latest entry recorded."""
    t = tampered
    a, b = t.patients
    t.sql("UPDATE patient_registry SET sealed = (SELECT sealed FROM patient_registry WHERE patient_id = :b) "
          "WHERE patient_id = :a", a=a, b=b)
    t.verify("--deep", patient_key=False,
             says=f"{DEA} seq {_registry_seq(t, a)}: patient {a}'s registry row is not the sealed record its latest "
                  "entry committed to (sealed_sha256)")


def test_patient_registry_columns_changed_are_caught_without_the_key(tampered):
    """No patient key configured: the rows are not opened, but each must belong to a registered
    patient and carry the time of that patient's latest entry."""
    t = tampered
    a, b = t.patients
    t.sql("UPDATE patient_registry SET updated_at = :u WHERE patient_id = :p", u="2026-01-01T00:00:00.000000Z", p=a)
    t.verify("--deep", patient_key=False,
             says=f"{DEA} seq {_registry_seq(t, a)}: patient {a}'s registry row says it was written at "
                  "2026-01-01T00:00:00.000000Z")
    t.sql("UPDATE patient_registry SET patient_id = 'P999' WHERE patient_id = :p", p=b)
    p = t.cli("verify", "--deep", "--db", t.url, patient_key=False)
    assert p.returncode == 1
    assert f"{DEA}: the patient registry holds a row for patient 'P999' that no entry registered" in p.stderr
    assert f"{DEA} seq {_registry_seq(t, b)}: patient {b} has no row in the patient registry" in p.stderr


# --- checkpoints -----------------------------------------------------------------------------------


def _latest(t: Tampered):
    with t.ledger.reading() as c:
        return tl.latest_checkpoint(c, DEA), tl.log_keys(c, DEA)[0]


def _stolen_key(t: Tampered) -> str:
    [key_file] = list((t.tmp / "keys").iterdir())
    return key_file.read_text().strip()


def _replace_checkpoint(t: Tampered, size: int, note: bytes, root: bytes) -> None:
    t.sql("UPDATE checkpoints SET note = :n, root_hash = :h WHERE registrant = :r AND tree_size = :s",
          n=note.decode(), h=root.hex(), r=DEA, s=size)


def _witness(t: Tampered) -> tuple[Path, str]:
    """An independent witness (its own folder and key, an HTTP server) cosigns the latest
    checkpoint; returns the file holding its cosigned checkpoint, as `csledger witness latest`
    prints it, which an inspector holds the history against, and the witness's verifier key."""
    w = Witness.init(t.tmp / "witness", "compliance-officer.clinic.test")
    server, url = serve_in_thread(w)
    t.servers.append(server)
    cp, key = _latest(t)
    w.add_log(key.verifier_key)
    t.log.set_witnesses(DEA, [WitnessEntry(w.verifier.to_string(), url)], threshold=1)
    assert all(r.ok for r in t.log.push(DEA))
    path = t.tmp / "witnessed.checkpoint"
    path.write_text(w.latest(key.origin))
    return path, w.verifier.to_string()


def test_latest_checkpoint_replaced_by_another_signer_is_caught_by_verify(tampered):
    t = tampered
    cp, key = _latest(t)
    forger = Signer.generate(key.origin)  # the right name, not the log's key
    root = hashlib.sha256(b"another history").digest()
    _replace_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint(key.origin, cp.tree_size, root), forger), root)
    t.verify(says=f"{DEA}: latest checkpoint (size {cp.tree_size}) does not verify")


def test_latest_checkpoint_replaced_with_the_stolen_key_is_caught_by_verify_and_verify_bundle(tampered):
    """Well signed with the real (stolen) key, but committing to another root: verify recomputes
    the root; an exported bundle's entries do not reach the signed root, and held against the
    witness's cosigned checkpoint the bundle fails the same way."""
    t = tampered
    witnessed, _ = _witness(t)
    services.receive_stock(t.ledger, t.clinic.nurse, receipt(t.clinic, "INV-AFTER-WITNESS"))
    cp, key = _latest(t)
    root = hashlib.sha256(b"another history").digest()
    _replace_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint(key.origin, cp.tree_size, root),
                                                         Signer.from_string(_stolen_key(t))), root)
    t.verify(says=f"{DEA}: latest checkpoint's root (size {cp.tree_size}) differs from the root recomputed from the entries")
    bundle = t.tmp / "replaced.bundle"
    t.passes("export", "--registrant", DEA, "--out", str(bundle), "--db", t.url)
    t.fails("verify-bundle", str(bundle), "--log-key", key.verifier_key, "--checkpoint", str(witnessed),
            says=f"line 1 (header) checkpoint: the root of the {cp.tree_size} entries differs from the signed "
                 f"checkpoint's root")


def test_older_checkpoint_replaced_is_caught_by_deep(tampered):
    t = tampered
    cp, key = _latest(t)
    size = cp.tree_size - 3
    root = hashlib.sha256(b"another history").digest()
    _replace_checkpoint(t, size, sign_checkpoint(Checkpoint(key.origin, size, root), Signer.from_string(_stolen_key(t))), root)
    assert verify(t.ledger).ok  # the fast pass checks the latest checkpoint only
    t.verify("--deep", says=f"{DEA}: checkpoint at size {size} commits to a root the entries do not have")


def test_whole_chain_rehashed_and_resigned_is_caught_against_the_witness(tampered, request):
    """The forger holds the log's signing key: one receipt altered, every later hash redone, the
    Merkle nodes rebuilt and a new checkpoint signed (tests/integrity/test_forger.py's ``forge``,
    into a fresh database on the same backend). Everything in that database agrees with itself,
    so `verify` passes there; the witness's cosigned checkpoint, held outside it, does not, under
    `verify --checkpoint` and `verify-bundle --checkpoint`."""
    t = tampered
    witnessed, witness_vkey = _witness(t)
    cp, key = _latest(t)
    backend = "sqlite" if t.ledger.dialect == "sqlite" else "postgresql"
    (t.tmp / "forged").mkdir()
    urls = fresh_database_url(backend, t.tmp / "forged")
    forged_url = next(urls)
    request.addfinalizer(lambda: next(urls, None))  # drops the PostgreSQL database
    forge(t.ledger, _stolen_key(t), "http://127.0.0.1:9", forged_url, witness_vkey, cp.tree_size - 2).dispose()
    t.passes("verify", "--db", forged_url)  # the chain, the tree and the signature agree with each other
    # Held against the witness's cosigned checkpoint, the genuine ledger passes and the forged one
    # fails, naming the registrant, the entries and the held file.
    ok = t.passes("verify", "--db", t.url, "--checkpoint", str(witnessed))
    assert f"ok --checkpoint {witnessed}: the entries reach its root ({DEA} size {cp.tree_size})" in ok.stdout
    line = t.fails("verify", "--db", forged_url, "--checkpoint", str(witnessed), says=f"--checkpoint {witnessed}: ")
    assert (f"{DEA}: --checkpoint {witnessed}: the root of entries 0..{cp.tree_size - 1} is " in line
            and "history was rewritten" in line), line
    bundle = t.tmp / "forged.bundle"
    t.passes("export", "--registrant", DEA, "--out", str(bundle), "--db", forged_url)
    line = t.fails("verify-bundle", str(bundle), "--log-key", key.verifier_key, "--checkpoint", str(witnessed),
                   says="--checkpoint 1: the bundle's first")
    assert (f"first {cp.tree_size} entries (through line {cp.tree_size + 1}) do not match this checkpoint: "
            "history was rewritten") in line


# --- reports -------------------------------------------------------------------------------------------


def _receiving_report(t: Tampered, name: str) -> Path:
    from ledger.services.report_key import certify_report_key, load_report_key

    if load_report_key(t.tmp / "keys", DEA) is None:  # reports are signed with it (issue 18)
        certify_report_key(t.ledger, t.clinic.admin, t.tmp / "keys")
    today = datetime.now(UTC).astimezone(zoneinfo.ZoneInfo("America/Chicago")).date()
    out = t.tmp / name
    t.passes("report", "receiving", "--registrant", DEA, "--from", (today - timedelta(days=7)).isoformat(),
             "--to", today.isoformat(), "--out", str(out), "--db", t.url)
    return out


def test_report_figure_edited_is_caught_by_verify_report(tampered):
    """A printed figure edited in the PDF's page content: verify-report re-renders the pages
    from the ledger and names the page and both texts."""
    from pypdf import PdfReader, PdfWriter

    t = tampered
    src = _receiving_report(t, "receiving.pdf")
    t.passes("verify-report", str(src), "--db", t.url)
    writer = PdfWriter(clone_from=PdfReader(src))
    content = writer.pages[0].get_contents()
    raw = content.get_data()
    assert b"(1,000.00 mg)" in raw  # each receipt: 2 vials x 10 mL x 50 mg/mL
    content.set_data(raw.replace(b"(1,000.00 mg)", b"(1,900.00 mg)", 1))
    writer.pages[0].replace_contents(content)
    bad = t.tmp / "edited.pdf"
    with open(bad, "wb") as f:
        writer.write(f)
    line = t.fails("verify-report", str(bad), "--db", t.url, says="page 1")
    assert "1,900.00 mg" in line and "1,000.00 mg" in line


def test_report_embedded_figure_forged_is_caught_by_verify_report(tampered):
    """The forger edits the embedded figures and re-draws every page to match: the figures
    recomputed from the ledger name the one that changed."""
    from pypdf import PdfReader

    from reports import layout
    from reports.base import render_data

    t = tampered
    src = _receiving_report(t, "receiving.pdf")
    data = json.loads(PdfReader(src).attachments[layout.DATA_FILE][0])
    row = next(i for i, r in enumerate(data["figures"]["rows"]) if r["invoice"] == "INV-1")
    data["figures"]["rows"][row]["containers"] = 9
    forged = t.tmp / "forged.pdf"
    forged.write_bytes(render_data(data))
    t.fails("verify-report", str(forged), "--db", t.url,
            says=f"figures.rows[{row}].containers: the PDF says 9, the ledger gives 2")
