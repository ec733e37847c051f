"""``verify`` and ``verify --deep``, check by check, in-process (issue 14: mutation testing,
bench/mutation.py). tests/robustness/test_tampering.py drives the same checks through the
command line; here each check's exact finding is asserted (the registrant, the entry, the words a
user reads) on a copy of one small SQLite ledger per test, so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import (
    AddressInput,
    ChangePatientDetails,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPatient,
)
from ledger.domain.errors import InvalidInput
from ledger.integrity import canonical as canon
from ledger.integrity.checkpoints import Checkpoint, Signer, sign_checkpoint
from ledger.services import verify as verify_module
from ledger.services.verify import verify
from ledger.storage import checkpoint_store
from ledger.storage import log as tl
from ledger.storage.patient_keys import PatientKeys
from ledger.storage.store import Ledger, make_engine, migrate
from tests.conftest import DEA, DEA2, KETAMINE_50, Clinic

PATIENT_KEY_BYTES = bytes(range(32))
STOLEN = "another history"


def _root(leaves: list[bytes]) -> bytes:
    """RFC 9162 root over leaf hashes, written out here (not the code under test)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _root(leaves[:k]) + _root(leaves[k:])).digest()


def _receive(clinic: Clinic, invoice: str, containers: int = 2) -> None:
    services.receive_stock(clinic.ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, invoice, datetime.now(UTC) - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, containers, "KA1", "2028-06-30"),)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two registrants signing checkpoints; DEA with two patients in the registry (the second's
    details changed), three receipts of two vials; DEA2 with one receipt and no patient."""
    tmp = tmp_path_factory.mktemp("verify_base")
    engine = make_engine(f"sqlite:///{tmp / 'ledger.db'}")
    migrate(engine)
    lg = Ledger(engine)
    tl.attach(lg, SimpleNamespace(key_dir=tmp / "keys", origin_prefix="clinic.test", log_keys=""))
    keys = PatientKeys(PATIENT_KEY_BYTES)
    clinic = Clinic(lg)
    patients = [services.register_patient(lg, clinic.nurse, RegisterPatient(
        name, AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
        for name in ("Pat Example", "Sam Other")]
    services.change_patient_details(lg, clinic.nurse, ChangePatientDetails(
        patients[1], "Sam Other", AddressInput("2 Oak St", "Austin", "TX", "78701"), "moved"), keys=keys)
    for i in range(3):
        _receive(clinic, f"INV-{i}")
    _receive(Clinic(lg, DEA2), "INV-B")
    with lg.reading() as c:
        rows = {reg: [dict(r) for r in c.execute(sa.text(
            "SELECT seq, kind, canonical, leaf_hash, prev_hash FROM entries WHERE registrant = :r ORDER BY seq"),
            {"r": reg}).mappings()] for reg in (DEA, DEA2)}
        origin = tl.log_keys(c, DEA)[0].origin
    lg.dispose()
    return SimpleNamespace(dir=tmp, keys=keys, patients=patients, rows=rows, origin=origin)


@dataclass
class T:
    ledger: Ledger
    base: SimpleNamespace

    @property
    def rows(self) -> list[dict]:
        return self.base.rows[DEA]

    @property
    def n(self) -> int:
        return len(self.rows)

    def sql(self, text: str, **params) -> None:
        with self.ledger.engine.begin() as c:
            c.execute(sa.text(text), params)

    def one(self, text: str, **params):
        with self.ledger.engine.begin() as c:
            return c.execute(sa.text(text), params).first()

    def run(self, **kw) -> list[str]:
        kw.setdefault("patient_keys", self.base.keys)
        return [str(p) for p in verify(self.ledger, **kw).problems]

    def seq_of(self, kind: str, nth: int = 0) -> int:
        return [r["seq"] for r in self.rows if r["kind"] == kind][nth]

    def signer(self) -> Signer:
        """The log's private key, as a thief with the key folder would hold it."""
        files = [p for p in (self.base.dir / "keys").rglob("*") if p.is_file()]
        for f in files:
            s = _signer(f)
            if s is not None and s.name == self.base.origin:
                return s
        raise AssertionError(f"no key file for {self.base.origin} in {files}")

    def replace_last(self, **changes) -> int:
        """Rewrite DEA's last entry with ``changes`` (None drops a key), its leaf hash and kind
        column to match, and no copied movements: only the deep pass can object."""
        last = self.rows[-1]
        obj = canon.decode(bytes(last["canonical"]))
        for k, v in changes.items():
            if v is None:
                obj.pop(k, None)
            else:
                obj[k] = v
        data = canon.canonical_bytes(obj)
        self.set_last_bytes(data, kind=obj["kind"])
        return last["seq"]

    def set_last_bytes(self, data: bytes, kind: str | None = None) -> None:
        seq = self.rows[-1]["seq"]
        self.sql("UPDATE entries SET canonical = :c, leaf_hash = :h" + (", kind = :k" if kind else "")
                 + " WHERE registrant = :r AND seq = :s",
                 c=data, h=hashlib.sha256(b"\x00" + data).hexdigest(), k=kind, r=DEA, s=seq)
        self.sql("DELETE FROM entry_movements WHERE registrant = :r AND seq = :s", r=DEA, s=seq)


@pytest.fixture
def t(base, tmp_path) -> T:
    for suffix in ("", "-wal", "-shm"):
        src = base.dir / f"ledger.db{suffix}"
        if src.exists():
            shutil.copy(src, tmp_path / f"ledger.db{suffix}")
    lg = Ledger(make_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    with lg.engine.begin() as c:
        for row in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").all():
            c.exec_driver_sql(f"DROP TRIGGER {row[0]}")
    yield T(lg, base)
    lg.dispose()


# --- an untouched ledger ------------------------------------------------------------------------


def test_untouched_ledger_passes_and_is_reported(t):
    n, n2 = t.n, len(t.base.rows[DEA2])
    calls: list[int] = []
    for deep in (False, True):
        r = verify(t.ledger, deep=deep, patient_keys=t.base.keys, progress=calls.append)
        assert r.ok and r.problems == [] and r.deep is deep
        assert r.entries == n + n2 and r.registrants == {DEA: n, DEA2: n2}
        assert r.roots == {reg: _root([bytes.fromhex(x["leaf_hash"]) for x in t.base.rows[reg]]).hex()
                           for reg in (DEA, DEA2)}
        for reg, size in ((DEA, n), (DEA2, n2)):
            assert r.checkpoints[reg].startswith(f"size {size} signed by ") and len(r.checkpoints[reg]) == len(
                f"size {size} signed by ") + 8
        assert r.held == {}
    assert calls == [n, n2, n, n2]  # fewer than 1,000 entries each: one call with the count
    one = verify(t.ledger, deep=True, registrant=DEA2)
    assert one.ok and one.registrants == {DEA2: n2} and one.entries == n2 and set(one.roots) == {DEA2}
    none = verify(t.ledger, registrant="ZZ9999999")
    assert none.ok and none.registrants == {} and none.entries == 0


def fake_log(t: T, reg: str, n: int, *, nodes: bool = True) -> list[bytes]:
    """``n`` made-up entries of ``reg``, chained and hashed (the fast pass reads nothing else), and
    with ``nodes`` the perfect Merkle nodes over them; returns the leaf hashes."""
    rows, leaves, prev = [], [], canon.ZERO_HASH
    for seq in range(n):
        data = b'{"n":%d}' % seq
        leaf = hashlib.sha256(b"\x00" + data).digest()
        rows.append({"registrant": reg, "seq": seq, "kind": "k", "schema_version": 1, "occurred_at": "x",
                     "recorded_at": "x", "prev_hash": prev, "leaf_hash": leaf.hex(), "canonical": data,
                     "command_id": "c"})
        leaves.append(leaf)
        prev = leaf.hex()
    with t.ledger.engine.begin() as c:
        c.execute(sa.text("INSERT INTO entries VALUES (:registrant, :seq, :kind, :schema_version, :occurred_at, "
                          ":recorded_at, :prev_hash, :leaf_hash, :canonical, :command_id)"), rows)
        if nodes:
            level, hashes = 0, leaves
            while hashes:
                c.execute(sa.text("INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES (:r, :l, :i, :h)"),
                          [{"r": reg, "l": level, "i": i, "h": h} for i, h in enumerate(hashes)])
                hashes = [hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                          for i in range(0, len(hashes) - 1, 2)]
                level += 1
    return leaves


def test_progress_and_pages_of_a_long_log(t):
    """3,000 entries (more than one page of 2,000): progress is told 1000 three times, then the
    remainder 0, and every entry is checked once (made up here, without Merkle nodes)."""
    reg = "ZZ9999999"
    fake_log(t, reg, 3000, nodes=False)
    calls: list[int] = []
    r = verify(t.ledger, registrant=reg, progress=calls.append)
    # a failed registrant is listed with 0 verified entries
    assert calls == [1000, 1000, 1000, 0] and r.entries == 3000 and r.registrants == {reg: 0}
    assert [str(p) for p in r.problems] == [f"{reg}: stored Merkle node (11, 0) is missing"]
    t.sql("UPDATE entries SET prev_hash = :p WHERE registrant = :r AND seq = 2300", p="00" * 32, r=reg)
    assert t.run(registrant=reg) == [f"{reg} seq 2300: chain broken: prev_hash is not the previous entry's leaf hash"]


def test_a_log_of_one_entry(t):
    reg = "ZZ9999999"
    (leaf,) = fake_log(t, reg, 1)
    r = verify(t.ledger, registrant=reg)
    assert r.ok and r.registrants == {reg: 1} and r.roots == {reg: leaf.hex()} and r.entries == 1


def test_deep_pass_of_a_registrant_without_stock(t):
    """No stock movement at all: nothing copied to compare, and no error."""
    Clinic(t.ledger, "BC1111119")
    r = verify(t.ledger, deep=True, registrant="BC1111119")
    assert r.ok, r.problems


def test_every_checkpoint_from_the_first_and_the_key_in_force(t):
    """The deep pass's checkpoint walk, on a made-up log of two entries: the checkpoint at size 1
    is checked too; with no key generation starting at or below a size, the first one signs it."""
    reg = "ZZ9999999"
    origin = "clinic.test/ZZ9999999/x"
    l0, l1 = fake_log(t, reg, 2)
    root2 = hashlib.sha256(b"\x01" + l0 + l1).digest()
    first, second = Signer.generate(origin), Signer.generate(origin)

    def keys(*rows):
        t.sql("DELETE FROM log_keys WHERE registrant = :r", r=reg)
        for gen, signer, first_size in rows:
            t.sql("INSERT INTO log_keys (registrant, generation, origin, verifier_key, first_size, created_at, reason) "
                  "VALUES (:r, :g, :o, :v, :f, 'x', 'x')", r=reg, g=gen, o=origin, v=signer.verifier().to_string(),
                  f=first_size)

    def checkpoint(size, root, signer):
        t.sql("DELETE FROM checkpoints WHERE registrant = :r AND tree_size = :s", r=reg, s=size)
        t.sql("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) VALUES (:r, :s, :h, :n, 'x')",
              r=reg, s=size, h=root.hex(), n=sign_checkpoint(Checkpoint(origin, size, root), signer).decode())

    def walk() -> list[str]:
        report = verify_module.VerifyReport(deep=True)
        with t.ledger.reading() as c:
            try:
                verify_module._verify_all_checkpoints(c, reg, 2, report)
            except verify_module._Stop:
                pass
        return [str(p) for p in report.problems]

    keys((1, first, 1))
    checkpoint(2, root2, first)
    checkpoint(1, l0, first)
    assert walk() == []
    checkpoint(1, hashlib.sha256(STOLEN.encode()).digest(), first)
    assert walk() == [f"{reg}: checkpoint at size 1 commits to a root the entries do not have"]
    checkpoint(1, l0, first)
    keys((1, first, 5), (2, second, 9))  # neither in force at 1 or 2: the first generation is
    assert walk() == []
    keys((1, second, 5), (2, first, 9))
    (p,) = walk()
    assert p.startswith(f"{reg}: checkpoint at size 1 is not signed by key generation 1, in force at that size (")


# --- the entries (the fast pass) ------------------------------------------------------------------


def test_missing_entry(t):
    seq = t.rows[-3]["seq"]
    t.sql("DELETE FROM entries WHERE registrant = :r AND seq = :s", r=DEA, s=seq)
    assert t.run() == [f"{DEA} seq {seq}: entry missing: found seq {seq + 1} where {seq} was expected"]
    r = verify(t.ledger, deep=True)
    assert r.registrants == {DEA: 0, DEA2: len(t.base.rows[DEA2])} and set(r.roots) == {DEA2}


def test_first_entry_missing(t):
    t.sql("DELETE FROM entries WHERE registrant = :r AND seq = 0", r=DEA)
    assert t.run() == [f"{DEA} seq 0: entry missing: found seq 1 where 0 was expected"]


def test_canonical_replaced_by_text(t):
    seq = t.rows[2]["seq"]
    t.sql("UPDATE entries SET canonical = CAST(canonical AS TEXT) WHERE registrant = :r AND seq = :s", r=DEA, s=seq)
    assert t.run() == [f"{DEA} seq {seq}: stored canonical bytes were replaced by a str value"]


def test_changed_bytes(t):
    row = t.rows[-2]
    forged = bytes(row["canonical"]).replace(b'"containers":2', b'"containers":3')
    assert forged != row["canonical"]
    t.sql("UPDATE entries SET canonical = :c WHERE registrant = :r AND seq = :s", c=forged, r=DEA, s=row["seq"])
    expected = [f"{DEA} seq {row['seq']}: canonical bytes do not hash to the stored leaf hash (bytes or hash altered)"]
    assert t.run() == expected and t.run(deep=True) == expected


def test_broken_chain(t):
    seq = t.rows[4]["seq"]
    t.sql("UPDATE entries SET prev_hash = :p WHERE registrant = :r AND seq = :s", p="00" * 32, r=DEA, s=seq)
    assert t.run() == [f"{DEA} seq {seq}: chain broken: prev_hash is not the previous entry's leaf hash"]


def test_first_entry_must_link_to_zero(t):
    t.sql("UPDATE entries SET prev_hash = :p WHERE registrant = :r AND seq = 0", p="11" * 32, r=DEA)
    assert t.run() == [f"{DEA} seq 0: chain broken: prev_hash is not the previous entry's leaf hash"]


def test_rehashed_last_entry_is_caught_by_the_root(t):
    t.replace_last(invoice_number="INV-FORGED")
    # the fast pass: every hash and link agrees; the stored nodes commit to the old leaf
    assert t.run() == [f"{DEA}: the root of the stored Merkle nodes differs from the root of the entries "
                       "(verify --deep names the first entry or node that differs)"]


def test_changed_merkle_node_read_by_the_root(t):
    top = (t.n - 1).bit_length() - 1  # the largest perfect subtree strictly inside the tree
    t.sql("UPDATE merkle_nodes SET hash = :h WHERE registrant = :r AND level = :l AND idx = 0",
          h=b"\x07" * 32, r=DEA, l=top)
    assert t.run() == [f"{DEA}: the root of the stored Merkle nodes differs from the root of the entries "
                       "(verify --deep names the first entry or node that differs)"]
    assert t.run(deep=True) == [f"{DEA} seq {2 ** top - 1}: stored Merkle node (level {top}, index 0) differs from "
                                "its recomputation"]


def test_missing_merkle_node(t):
    top = (t.n - 1).bit_length() - 1
    t.sql("DELETE FROM merkle_nodes WHERE registrant = :r AND level = :l AND idx = 0", r=DEA, l=top)
    assert t.run() == [f"{DEA}: stored Merkle node ({top}, 0) is missing"]
    assert t.run(deep=True) == [f"{DEA} seq {2 ** top - 1}: Merkle node (level {top}, index 0) is missing or out "
                                "of place"]


def test_extra_merkle_node(t):
    t.sql("INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES (:r, 0, :i, :h)",
          r=DEA, i=t.n + 5, h=b"\x01" * 32)
    assert t.run() == []
    assert t.run(deep=True) == [f"{DEA}: 1 stored Merkle node(s) not explained by the entries"]


# --- the entries (the deep pass) ------------------------------------------------------------------


@pytest.mark.parametrize("column, value", [
    ("kind", "inventory_taken"), ("schema_version", 7), ("occurred_at", "2026-01-01T00:00:00.000000Z"),
    ("recorded_at", "2026-01-02T00:00:00.000000Z"),
])
def test_copied_columns(t, column, value):
    row = t.rows[-1]
    was = canon.decode(bytes(row["canonical"]))[column]
    t.sql(f"UPDATE entries SET {column} = :v WHERE registrant = :r AND seq = :s", v=value, r=DEA, s=row["seq"])
    assert t.run() == []  # the fast pass reads the bytes and hashes only
    assert t.run(deep=True) == [f"{DEA} seq {row['seq']}: copied column {column!r} is {value!r} but the entry says {was!r}"]


def test_bytes_not_json(t):
    t.set_last_bytes(b"\x00not json")
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA} seq {t.rows[-1]['seq']}: canonical bytes are not valid entry JSON (") and p.endswith(")")


def test_bytes_not_an_object(t):
    t.set_last_bytes(b"[1,2]")
    assert t.run(deep=True) == [f"{DEA} seq {t.rows[-1]['seq']}: canonical bytes are not valid entry JSON "
                                "(not a JSON object)"]


def test_bytes_not_canonical(t):
    data = bytes(t.rows[-1]["canonical"]).replace(b'{"', b'{ "', 1)
    t.set_last_bytes(data)
    assert t.run(deep=True) == [f"{DEA} seq {t.rows[-1]['seq']}: bytes are not in RFC 8785 canonical form"]


def test_unknown_kind(t):
    seq = t.replace_last(kind="mystery_happened")
    assert t.run(deep=True) == [f"{DEA} seq {seq}: unknown entry kind 'mystery_happened'"]


def test_entry_that_cannot_be_replayed(t):
    seq = t.replace_last(kind="dose_wasted", administration_id="A-NONE", administration_seq=1, lines=None)
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA} seq {seq}: entry cannot be replayed into the projections (")


def test_copied_movement_changed(t):
    seq = t.rows[-2]["seq"]
    vial = t.one("SELECT vial_id FROM entry_movements WHERE registrant = :r AND seq = :s AND line = 1", r=DEA, s=seq)[0]
    t.sql("UPDATE entry_movements SET ml = '9.00' WHERE registrant = :r AND seq = :s AND line = 1", r=DEA, s=seq)
    assert t.run() == []
    assert t.run(deep=True) == [f"{DEA} seq {seq}: copied stock movement line 1 says {vial} 9.00 mL but the entry says "
                                f"{vial} 10.00 mL"]


def test_copied_movement_other_vial(t):
    seq = t.rows[-2]["seq"]
    vial = t.one("SELECT vial_id FROM entry_movements WHERE registrant = :r AND seq = :s AND line = 0", r=DEA, s=seq)[0]
    t.sql("UPDATE entry_movements SET vial_id = 'V-OTHER' WHERE registrant = :r AND seq = :s AND line = 0", r=DEA, s=seq)
    assert t.run(deep=True) == [f"{DEA} seq {seq}: copied stock movement line 0 says V-OTHER 10.00 mL but the entry "
                                f"says {vial} 10.00 mL"]


def test_copied_movement_other_product(t):
    seq = t.rows[-2]["seq"]
    t.sql("UPDATE entry_movements SET ndc_key = '0409205105' WHERE registrant = :r AND seq = :s AND line = 0",
          r=DEA, s=seq)
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA} seq {seq}: copied stock movement line 0 says ")


def test_copied_movement_missing(t):
    seq = t.rows[-2]["seq"]
    t.sql("DELETE FROM entry_movements WHERE registrant = :r AND seq = :s AND line = 1", r=DEA, s=seq)
    assert t.run(deep=True) == [f"{DEA} seq {seq}: stock movement line 1 is missing from the copied movements"]


def test_copied_movements_of_the_last_entry_missing(t):
    seq = t.rows[-1]["seq"]
    t.sql("DELETE FROM entry_movements WHERE registrant = :r AND seq = :s", r=DEA, s=seq)
    assert t.run(deep=True) == [f"{DEA} seq {seq}: stock movement line 0 is missing from the copied movements"]


def test_copied_movement_extra_line(t):
    seq = t.rows[-2]["seq"]
    t.sql("INSERT INTO entry_movements (registrant, seq, line, vial_id, ndc_key, ml) "
          "SELECT registrant, seq, 2, vial_id, ndc_key, ml FROM entry_movements WHERE registrant = :r AND seq = :s "
          "AND line = 0", r=DEA, s=seq)
    assert t.run(deep=True) == [f"{DEA} seq {seq}: copied stock movement line 2 is not in the entry"]


def test_copied_movement_after_the_last_entry(t):
    seq = t.rows[-1]["seq"]
    t.sql("INSERT INTO entry_movements (registrant, seq, line, vial_id, ndc_key, ml) "
          "SELECT registrant, seq + 3, line, vial_id, ndc_key, ml FROM entry_movements WHERE registrant = :r "
          "AND seq = :s AND line = 0", r=DEA, s=seq)
    assert t.run() == []
    assert t.run(deep=True) == [f"{DEA} seq {seq + 3}: a stored stock movement is not in the entry's bytes"]


def test_copied_movement_of_an_entry_that_moves_nothing(t):
    seq = t.rows[3]["seq"]  # a reference entry: it moves no stock
    t.sql("INSERT INTO entry_movements (registrant, seq, line, vial_id, ndc_key, ml) VALUES (:r, :s, 0, 'V', 'K', '1.00')",
          r=DEA, s=seq)
    assert t.run(deep=True) == [f"{DEA} seq {seq}: copied stock movement line 0 is not in the entry"]


# --- projections ----------------------------------------------------------------------------------


def _first_vial(t: T) -> str:
    return t.one("SELECT vial_id FROM vials WHERE registrant = :r ORDER BY vial_id", r=DEA)[0]


def test_projection_row_differs(t):
    vial = _first_vial(t)
    t.sql("UPDATE vials SET ml_left = '4.00' WHERE registrant = :r AND vial_id = :v", r=DEA, v=vial)
    assert t.run() == []
    assert t.run(deep=True) == [f"projection vials row ('{DEA}', '{vial}') differs from its rebuild: "
                                "{'ml_left': (Decimal('4.00'), Decimal('10.00'))} (stored, rebuilt)"]


def test_projection_row_missing(t):
    vial = _first_vial(t)
    t.sql("DELETE FROM vials WHERE registrant = :r AND vial_id = :v", r=DEA, v=vial)
    assert t.run(deep=True) == [f"projection vials lacks row ('{DEA}', '{vial}') that the entries imply"]


def test_projection_row_extra(t):
    vial = _first_vial(t)
    t.sql("CREATE TEMP TABLE extra AS SELECT * FROM vials WHERE registrant = :r AND vial_id = :v", r=DEA, v=vial)
    t.sql("UPDATE extra SET vial_id = 'V-EXTRA'")
    t.sql("INSERT INTO vials SELECT * FROM extra")
    assert t.run(deep=True) == [f"projection vials has row ('{DEA}', 'V-EXTRA') that no entry explains"]


def test_projection_of_another_registrant_is_left_alone(t):
    """Verifying one registrant compares only its rows (registrants by dea_number, others by registrant)."""
    vial = t.one("SELECT vial_id FROM vials WHERE registrant = :r", r=DEA2)[0]
    t.sql("UPDATE vials SET ml_left = '1.00' WHERE registrant = :r AND vial_id = :v", r=DEA2, v=vial)
    t.sql("UPDATE registrants SET name = 'Renamed' WHERE dea_number = :r", r=DEA2)
    assert t.run(deep=True, registrant=DEA) == []
    (p,) = t.run(deep=True, registrant=DEA2)
    assert p.startswith("projection registrants row (")
    t.sql("UPDATE registrants SET name = 'Renamed' WHERE dea_number = :r", r=DEA)
    (p,) = t.run(deep=True, registrant=DEA)
    assert p.startswith(f"projection registrants row ('{DEA}',) differs from its rebuild: {{'name': ('Renamed', ")


def test_deep_checks_stop_at_the_first_entry_problem(t):
    """A broken entry is reported alone: the projections and the registry are not compared."""
    vial = _first_vial(t)
    t.sql("UPDATE vials SET ml_left = '4.00' WHERE registrant = :r AND vial_id = :v", r=DEA, v=vial)
    t.sql("DELETE FROM patient_registry WHERE patient_id = :p", p=t.base.patients[0])
    t.sql("UPDATE entries SET prev_hash = :p WHERE registrant = :r AND seq = 3", p="00" * 32, r=DEA)
    assert t.run(deep=True) == [f"{DEA} seq 3: chain broken: prev_hash is not the previous entry's leaf hash"]


# --- the patient registry ------------------------------------------------------------------------------


def _patient_seqs(t: T, pid: str) -> list[int]:
    return [r["seq"] for r in t.rows if r["kind"] in ("patient_registered", "patient_details_changed")
            and f'"patient_id":"{pid}"'.encode() in bytes(r["canonical"])]


def test_registry_with_another_key(t):
    other = PatientKeys(bytes(range(1, 33)))
    assert t.run(deep=True, patient_keys=other) == [
        "the configured patient key is not the key this registry was written with: the registry rows were not decrypted"]
    assert t.run(deep=False, patient_keys=other) == []


def test_registry_row_of_no_patient(t):
    t.sql("UPDATE patient_registry SET patient_id = 'P999' WHERE patient_id = :p", p=t.base.patients[0])
    a = t.base.patients[0]
    assert t.run(deep=True) == [
        f"{DEA}: the patient registry holds a row for patient 'P999' that no entry registered",
        f"{DEA} seq {_patient_seqs(t, a)[0]}: patient {a} has no row in the patient registry (the name and address are gone)"]


def test_registry_row_of_no_patient_before_the_others(t):
    """A stray row sorting before the real ones: reported, and the rows after it still checked."""
    a = t.base.patients[0]
    t.sql("CREATE TEMP TABLE stray AS SELECT * FROM patient_registry WHERE patient_id = :p", p=a)
    t.sql("UPDATE stray SET patient_id = '0-STRAY'")
    t.sql("INSERT INTO patient_registry SELECT * FROM stray")
    assert t.run(deep=True) == [f"{DEA}: the patient registry holds a row for patient '0-STRAY' that no entry registered"]


def test_registry_row_written_outside_the_ledger_then_the_next(t):
    a = t.base.patients[0]
    t.sql("UPDATE patient_registry SET updated_at = :u WHERE patient_id = :p", u="2026-01-01T00:00:00.000000Z", p=a)
    (p,) = t.run(deep=True)  # one problem: the row after it is still seen
    assert p.startswith(f"{DEA} seq {_patient_seqs(t, a)[0]}: patient {a}'s registry row says it was written at ")


def test_registry_row_written_outside_the_ledger(t):
    b = t.base.patients[1]
    t.sql("UPDATE patient_registry SET updated_at = :u WHERE patient_id = :p", u="2026-01-01T00:00:00.000000Z", p=b)
    seq = _patient_seqs(t, b)[-1]  # the latest entry of the patient: the details change
    when = t.one("SELECT recorded_at FROM entries WHERE registrant = :r AND seq = :s", r=DEA, s=seq)[0]
    assert t.run(deep=True) == [
        f"{DEA} seq {seq}: patient {b}'s registry row says it was written at 2026-01-01T00:00:00.000000Z, but the "
        f"patient's latest entry was recorded at {when}: the row was changed outside the ledger"]


def test_registry_rows_swapped(t):
    a, b = t.base.patients
    t.sql("UPDATE patient_registry SET sealed = (SELECT sealed FROM patient_registry WHERE patient_id = :b) "
          "WHERE patient_id = :a", a=a, b=b)
    assert t.run(deep=True) == [
        f"{DEA} seq {_patient_seqs(t, a)[-1]}: patient {a}'s registry row does not decrypt under the patient key as "
        f"{DEA}/{a} (the ciphertext was altered or moved from another patient)"]
    # without the key the row is not opened, but it is not the sealed record its entry committed to
    assert t.run(deep=True, patient_keys=None) == [
        f"{DEA} seq {_patient_seqs(t, a)[-1]}: patient {a}'s registry row is not the sealed record its latest entry "
        "committed to (sealed_sha256): the row was replaced outside the ledger"]


def test_registry_resealed_with_the_key(t):
    from ledger.storage.patient_keys import PatientDetails

    a = t.base.patients[0]
    fake = t.base.keys.seal(DEA, a, PatientDetails("Pat Example", "9 Elm St", "Austin", "TX", "78701"))
    t.sql("UPDATE patient_registry SET sealed = :s WHERE patient_id = :p", s=fake, p=a)
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA} seq {_patient_seqs(t, a)[-1]}: patient {a}'s registry row no longer matches the "
                        "commitment recorded in the ledger")
    (p,) = t.run(deep=True, patient_keys=None)  # the hash of the sealed bytes differs too
    assert "(sealed_sha256)" in p


def test_registry_row_replaced_by_text(t):
    a = t.base.patients[0]
    t.sql("UPDATE patient_registry SET sealed = 'plain text' WHERE patient_id = :p", p=a)
    assert t.run(deep=True, patient_keys=None) == [
        f"{DEA} seq {_patient_seqs(t, a)[-1]}: patient {a}'s registry row is not the sealed record its latest entry "
        "committed to (sealed_sha256): the row was replaced outside the ledger"]


def test_registry_problems_are_all_reported_and_per_registrant(t, monkeypatch):
    a, b = t.base.patients
    t.sql("DELETE FROM patient_registry WHERE patient_id = :p", p=a)
    t.sql("UPDATE patient_registry SET updated_at = :u WHERE patient_id = :p", u="2026-01-01T00:00:00.000000Z", p=b)
    monkeypatch.setattr(verify_module, "BATCH", 1)  # page the registry one row at a time
    problems = t.run(deep=True)
    assert len(problems) == 2
    assert problems[0].startswith(f"{DEA} seq {_patient_seqs(t, b)[-1]}: patient {b}'s registry row says it was ")
    assert problems[1] == (f"{DEA} seq {_patient_seqs(t, a)[0]}: patient {a} has no row in the patient registry "
                           "(the name and address are gone)")
    assert t.run(deep=True, registrant=DEA2) == []  # DEA2's registry is empty and whole


def test_registry_pages(t, monkeypatch):
    """More rows than one page: each row checked once, none missed."""
    monkeypatch.setattr(verify_module, "BATCH", 1)
    assert t.run(deep=True) == []
    monkeypatch.setattr(verify_module, "BATCH", 2)
    assert t.run(deep=True) == []
    t.sql("DELETE FROM patient_registry WHERE patient_id = :p", p=t.base.patients[1])
    assert len(t.run(deep=True)) == 1


def test_everything_pages(t, monkeypatch):
    """Entries, movements, Merkle nodes and checkpoints read in pages of 3: the same verdicts."""
    monkeypatch.setattr(verify_module, "BATCH", 3)
    r = verify(t.ledger, deep=True, patient_keys=t.base.keys)
    assert r.ok and r.registrants == {DEA: t.n, DEA2: len(t.base.rows[DEA2])}
    seq = t.rows[-2]["seq"]
    t.sql("UPDATE entry_movements SET ml = '9.00' WHERE registrant = :r AND seq = :s AND line = 1", r=DEA, s=seq)
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA} seq {seq}: copied stock movement line 1 says ")


def test_everything_pages_and_finds_a_late_node(t, monkeypatch):
    monkeypatch.setattr(verify_module, "BATCH", 2)
    t.sql("UPDATE merkle_nodes SET hash = :h WHERE registrant = :r AND level = 0 AND idx = :i",
          h=b"\x07" * 32, r=DEA, i=t.n - 2)
    assert t.run(deep=True) == [f"{DEA} seq {t.n - 2}: stored Merkle node (level 0, index {t.n - 2}) differs from its "
                                "recomputation"]


# --- checkpoints ----------------------------------------------------------------------------------------


def _latest(t: T):
    with t.ledger.reading() as c:
        return checkpoint_store.latest_checkpoint(c, DEA)


def _store_checkpoint(t: T, row_size: int, note: bytes, root: bytes) -> None:
    t.sql("UPDATE checkpoints SET note = :n, root_hash = :h WHERE registrant = :r AND tree_size = :s",
          n=note.decode(), h=root.hex(), r=DEA, s=row_size)


def _true_root(t: T, size: int) -> bytes:
    return _root([bytes.fromhex(r["leaf_hash"]) for r in t.rows[:size]])


def test_latest_checkpoint_by_another_signer(t):
    cp = _latest(t)
    forger = Signer.generate(t.base.origin)
    root = hashlib.sha256(STOLEN.encode()).digest()
    _store_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint(t.base.origin, cp.tree_size, root), forger), root)
    (p,) = t.run()
    assert p.startswith(f"{DEA}: latest checkpoint (size {cp.tree_size}) does not verify: ")


def test_latest_checkpoint_with_another_root(t):
    cp = _latest(t)
    root = hashlib.sha256(STOLEN.encode()).digest()
    _store_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint(t.base.origin, cp.tree_size, root), t.signer()), root)
    assert t.run() == [f"{DEA}: latest checkpoint's root (size {cp.tree_size}) differs from the root recomputed from "
                       "the entries"]


def test_latest_checkpoint_with_another_origin(t):
    cp = _latest(t)
    root = _true_root(t, cp.tree_size)
    _store_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint("elsewhere/x", cp.tree_size, root), t.signer()), root)
    assert t.run() == [f"{DEA}: latest checkpoint names origin 'elsewhere/x', not the log's {t.base.origin!r}"]


def test_latest_checkpoint_of_another_size(t):
    cp = _latest(t)
    size = cp.tree_size - 1
    root = _true_root(t, size)
    _store_checkpoint(t, cp.tree_size, sign_checkpoint(Checkpoint(t.base.origin, size, root), t.signer()), root)
    assert t.run() == [f"{DEA}: latest checkpoint claims size {size} but the log holds {t.n} entries"]


def test_latest_checkpoint_beyond_the_log(t):
    size = t.n + 2
    root = hashlib.sha256(STOLEN.encode()).digest()
    note = sign_checkpoint(Checkpoint(t.base.origin, size, root), t.signer())
    t.sql("INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) VALUES (:r, :s, :h, :n, :a)",
          r=DEA, s=size, h=root.hex(), n=note.decode(), a="2026-01-01T00:00:00.000000Z")
    assert t.run() == [f"{DEA}: latest checkpoint claims size {size} but the log holds {t.n} entries"]


def test_latest_checkpoint_of_a_prefix(t):
    """The latest checkpoint below the log's size is proved a prefix; a wrong root is not."""
    size = t.n - 3
    t.sql("DELETE FROM checkpoints WHERE registrant = :r AND tree_size > :s", r=DEA, s=size)
    r = verify(t.ledger)
    assert r.ok and r.checkpoints[DEA].startswith(f"size {size} signed by ")
    root = hashlib.sha256(STOLEN.encode()).digest()
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size, root), t.signer()), root)
    (p,) = t.run()
    assert p.startswith(f"{DEA}: latest checkpoint (size {size}) is not a prefix of the entries' tree (")


def test_latest_checkpoint_without_keys(t):
    cp = _latest(t)
    t.sql("DELETE FROM log_keys WHERE registrant = :r", r=DEA)
    assert t.run() == [f"{DEA}: checkpoint at size {cp.tree_size} exists but no log verifier key is recorded"]


def test_older_checkpoint_with_another_root(t):
    size = t.n - 3
    root = hashlib.sha256(STOLEN.encode()).digest()
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size, root), t.signer()), root)
    assert t.run() == []  # the fast pass checks the latest only
    assert t.run(deep=True) == [f"{DEA}: checkpoint at size {size} commits to a root the entries do not have"]


def test_older_checkpoint_row_disagrees(t):
    size = t.n - 3
    t.sql("UPDATE checkpoints SET root_hash = :h WHERE registrant = :r AND tree_size = :s", h="ab" * 32, r=DEA, s=size)
    assert t.run(deep=True) == [f"{DEA}: checkpoint at size {size} disagrees with its row or exceeds the log ({t.n})"]


def test_older_checkpoint_of_another_size(t):
    size = t.n - 3
    root = _true_root(t, size - 1)
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size - 1, root), t.signer()), root)
    assert t.run(deep=True) == [f"{DEA}: checkpoint at size {size} disagrees with its row or exceeds the log ({t.n})"]


def test_older_checkpoint_by_another_signer(t):
    size = t.n - 3
    root = _true_root(t, size)
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size, root), Signer.generate(t.base.origin)),
                      root)
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA}: checkpoint at size {size} is not signed by key generation 1, in force at that size (")


def test_checkpoints_without_keys_in_the_deep_pass(t, monkeypatch):
    """The deep pass's own guard (the fast pass would stop first; here it is reached directly)."""
    t.sql("DELETE FROM log_keys WHERE registrant = :r", r=DEA)
    report = verify_module.VerifyReport(deep=True)
    with t.ledger.reading() as c, pytest.raises(verify_module._Stop):
        verify_module._verify_all_checkpoints(c, DEA, t.n, report)
    first = t.one("SELECT min(tree_size) FROM checkpoints WHERE registrant = :r", r=DEA)[0]
    assert [str(p) for p in report.problems] == [f"{DEA}: checkpoint at size {first} exists but no log key is recorded"]


def test_checkpoints_after_a_key_rotation(t, tmp_path, monkeypatch):
    """Each checkpoint is checked against the key generation in force at its size, across pages."""
    from ledger.domain.principal import AuthMethod, Principal

    shutil.copytree(t.base.dir / "keys", tmp_path / "keys")
    log = tl.attach(t.ledger, SimpleNamespace(key_dir=tmp_path / "keys", origin_prefix="clinic.test", log_keys=""))
    new, old = log.rotate(DEA, reason="scheduled")
    assert (new.generation, old.generation, new.first_size) == (2, 1, t.n + 1)
    with t.ledger.reading() as c:
        nurse = c.execute(sa.text("SELECT staff_id FROM staff WHERE registrant = :r AND username = 'nora'"),
                          {"r": DEA}).scalar()
        supplier = c.execute(sa.text("SELECT supplier_id FROM suppliers WHERE registrant = :r"), {"r": DEA}).scalar()
    clinic = SimpleNamespace(ledger=t.ledger, nurse=Principal(DEA, nurse, "Nora Nurse", AuthMethod.PASSWORD),
                             supplier_id=supplier)
    _receive(clinic, "INV-AFTER-ROTATION")
    _receive(clinic, "INV-AFTER-ROTATION-2")
    monkeypatch.setattr(verify_module, "BATCH", 2)
    r = verify(t.ledger, deep=True, patient_keys=t.base.keys)
    assert r.ok, r.problems
    signers = [s for s in (_signer(p) for p in (tmp_path / "keys").rglob("*") if p.is_file()) if s is not None]
    new_signer = next(s for s in signers if s.key_id == new.verifier.key_id)
    old_signer = t.signer()  # the retired key's private half is destroyed by the rotation; the thief kept a copy
    assert old_signer.key_id == old.verifier.key_id
    # an old checkpoint re-signed with the new key: not the generation in force at its size
    size = t.n - 1
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size, _true_root(t, size)), new_signer),
                      _true_root(t, size))
    (p,) = t.run(deep=True)
    assert p.startswith(f"{DEA}: checkpoint at size {size} is not signed by key generation 1, in force at that size (")
    # the same checkpoint signed by the generation in force at its size (the retired key): passes
    _store_checkpoint(t, size, sign_checkpoint(Checkpoint(t.base.origin, size, _true_root(t, size)), old_signer),
                      _true_root(t, size))
    assert t.run(deep=True) == []
    newest = t.n + 2
    t.sql("UPDATE checkpoints SET note = (SELECT note FROM checkpoints WHERE registrant = :r AND tree_size = :s) "
          "WHERE registrant = :r AND tree_size = :s2", r=DEA, s=t.n, s2=newest)
    assert t.run(deep=True) != []  # the newest row now holds an older note


def _signer(p: Path) -> Signer | None:
    try:
        return Signer.from_string(p.read_text().strip())
    except Exception:  # noqa: BLE001 - not a key file
        return None


# --- checkpoints held outside the database ------------------------------------------------------------


def _note(t: T, size: int, root: bytes | None = None, signer: Signer | None = None, origin: str | None = None) -> bytes:
    return sign_checkpoint(Checkpoint(origin or t.base.origin, size, root if root is not None else _true_root(t, size)),
                           signer or t.signer())


def test_held_checkpoints_reached(t):
    n = t.n
    r = verify(t.ledger, held_checkpoints=[("latest", _latest(t).note), ("older", _note(t, n - 4)),
                                           ("older-again", _note(t, n - 4).decode())])
    assert r.ok, r.problems
    assert r.held == {"latest": f"{DEA} size {n}", "older": f"{DEA} size {n - 4}", "older-again": f"{DEA} size {n - 4}"}
    r = verify(t.ledger, deep=True, registrant=DEA, held_checkpoints=[("older", _note(t, n - 4))])
    assert r.ok and r.held == {"older": f"{DEA} size {n - 4}"}


def test_held_checkpoint_of_a_rewritten_history(t):
    size = t.n - 4
    root = hashlib.sha256(STOLEN.encode()).digest()
    assert t.run(held_checkpoints=[("held", _note(t, size, root))]) == [
        f"{DEA}: held: the root of entries 0..{size - 1} is {_true_root(t, size).hex()[:16]}..., the held checkpoint "
        f"of size {size} signed {root.hex()[:16]}...: history was rewritten"]


def test_held_checkpoint_beyond_the_log(t):
    size = t.n + 3
    root = hashlib.sha256(STOLEN.encode()).digest()
    assert t.run(held_checkpoints=[("held", _note(t, size, root)), ("held-2", _note(t, size + 1, root))]) == [
        f"{DEA}: held: a checkpoint of size {size} was signed, but the log holds only {t.n} entries: entries were "
        "removed or an older backup restored"]


def test_held_checkpoint_of_another_log(t):
    r = verify(t.ledger, held_checkpoints=[("held", _note(t, 2, origin="elsewhere/x")), ("good", _note(t, 3))])
    assert [str(p) for p in r.problems] == [
        "held: no registrant in this database has the log origin 'elsewhere/x' (another log's checkpoint, or the "
        "recorded log keys were replaced)"]
    assert r.held == {"good": f"{DEA} size 3"}  # the next held checkpoint is still checked


def test_held_checkpoint_signed_by_another_key(t):
    r = verify(t.ledger, held_checkpoints=[("held", _note(t, 2, signer=Signer.generate(t.base.origin))),
                                           ("good", _note(t, 3))])
    (p,) = [str(p) for p in r.problems]
    assert p.startswith(f"{DEA}: held: not signed by any log key recorded for this registrant (")
    assert p.endswith("); the recorded keys were replaced, or the file is not this log's")
    assert r.held == {"good": f"{DEA} size 3"}


def test_held_checkpoint_refused(t):
    with pytest.raises(InvalidInput) as e:
        verify(t.ledger, held_checkpoints=[("held", b"not a note")])
    assert e.value.field == "checkpoint" and e.value.reason.startswith("held: not a signed checkpoint note (")
    with t.ledger.reading() as c:
        origin2 = checkpoint_store.log_keys(c, DEA2)[0].origin
    with pytest.raises(InvalidInput) as e:
        verify(t.ledger, registrant=DEA, held_checkpoints=[("held", _note(t, 1, origin=origin2))])
    assert e.value.field == "checkpoint"
    assert e.value.reason == f"held: is {DEA2}'s checkpoint; that registrant is not being verified"


def test_registry_row_with_an_empty_registrant_and_patient_id(t):
    """It sorts before any keyset bound: the first page must have none (issue 22 review)."""
    a = t.base.patients[0]
    t.sql("CREATE TEMP TABLE stray AS SELECT * FROM patient_registry WHERE patient_id = :p", p=a)
    t.sql("UPDATE stray SET registrant = '', patient_id = ''")
    t.sql("INSERT INTO patient_registry SELECT * FROM stray")
    assert t.run(deep=True) == [": the patient registry holds a row for patient '' that no entry registered"]
