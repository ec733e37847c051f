"""The faster paths of ``verify --deep`` (issue 22, session 30) decide nothing the exact ones would
decide otherwise: the projection comparison's byte test (``_RowCodec.same``) says "equal" only
for rows that are equal, the batched scratch read answers as the keyed one, the rows' shapes
keep every Decimal normalized, and ``canonical.decode`` reads every byte string as
``json.loads`` does."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ledger.domain.projections import MemoryStateView, key_of
from ledger.integrity import canonical
from ledger.services.verify_scratch import ScratchStateView, _RowCodec


class _Dec(Decimal):
    """A Decimal subclass: still a quantity, normalized like one."""


def _vial(**change) -> dict:
    row = {"registrant": "AB1234563", "vial_id": "V1-1", "ml_left": Decimal("10.00"), "packaged": False,
           "state": "sealed", "opened_at": None, "last_seq": 7, "strength_mg_per_ml": Decimal("50.00")}
    row.update(change)
    return row


def test_same_says_equal_for_the_row_written():
    codec = _RowCodec()
    data = codec.enc(_vial())
    assert codec.same(data, _vial())
    assert codec.same(data, dict(reversed(list(_vial().items()))))  # column order is not a difference
    assert codec.dec(data) == _vial() and list(codec.dec(data)) == list(_vial())


@pytest.mark.parametrize("stored", [
    _vial(ml_left=Decimal("9.99")),  # another value
    _vial(ml_left=Decimal("10.0")),  # equal value, other text: the caller compares the decoded row
    _vial(ml_left="10.00"),  # the text where a Decimal was rebuilt
    _vial(state=Decimal("10.00")),  # a Decimal where text was rebuilt
    _vial(packaged=0),  # 0 == False, but not the same value written
    _vial(last_seq=True),
    _vial(last_seq=7.0),  # a float: never written by the rebuild
    _vial(opened_at=""),
    _vial(opened_at=b"x"),
    {k: v for k, v in _vial().items() if k != "state"},  # a column missing
    _vial(extra=None),  # a column more
    {**{k: v for k, v in _vial().items() if k != "state"}, "statE": "sealed"},  # same count, other name
])
def test_same_never_says_equal_for_a_row_not_written_so(stored):
    codec = _RowCodec()
    data = codec.enc(_vial())
    assert not codec.same(data, stored)


def test_same_refuses_bytes_of_another_shape_or_not_a_row():
    codec = _RowCodec()
    a = codec.enc(_vial())
    b = codec.enc(_vial(opened_at="2026-12-07T18:00:00.000000Z", ml_left=None))  # another shape
    assert not codec.same(a, _vial(opened_at="2026-12-07T18:00:00.000000Z", ml_left=None))
    assert codec.same(b, _vial(opened_at="2026-12-07T18:00:00.000000Z", ml_left=None))
    assert not codec.same(b, _vial())
    for junk in (b"", b"[", b"[\x01\x00\x00\x00i\x05\x00\x00\x00", b"x" * 40):
        assert not codec.same(junk, _vial())


def test_put_normalizes_every_decimal_whatever_the_shape():
    mem, scratch = MemoryStateView(), ScratchStateView(cache_rows=4)
    try:
        rows = [_vial(vial_id=f"V{i}", ml_left=v, strength_mg_per_ml=s)
                for i, (v, s) in enumerate([(Decimal("10"), Decimal("50.000")), (None, Decimal("5.5")),
                                            (_Dec("9.5"), None), ("10", Decimal("0.135")), (Decimal("9.635"), 3)])]
        for row in rows:
            mem.put("vials", row)
            scratch.put("vials", row)
        for row in rows:
            key = key_of("vials", row)
            got, want = scratch.get("vials", key), mem.get("vials", key)
            assert got == want
            assert {k: (type(v), str(v)) for k, v in got.items()} == {k: (type(v), str(v)) for k, v in want.items()}
        with pytest.raises(ValueError):  # a fourth decimal is refused at the put, as in memory
            scratch.put("vials", _vial(ml_left=Decimal("1.2345")))
    finally:
        scratch.close()


def test_lookup_many_answers_as_lookup():
    scratch = ScratchStateView(cache_rows=4)
    try:
        m = scratch.tables["vials"]
        for i in range(1200):
            scratch.put("vials", _vial(vial_id=f"V{i}", last_seq=i))
        scratch.delete("vials", ("AB1234563", "V5"))
        m.flush()
        keys = [("AB1234563", f"V{i}") for i in (3, 5, 1199, 3, 4000)] + [("AB1234563", f"V{i}") for i in range(1200)]
        got = m.lookup_many(keys)
        assert len(got) == len(keys)
        for key, found in zip(keys, got, strict=True):
            want = m.lookup(key)
            assert (found is None) == (want is None), key
            if found is not None:
                assert found[0] == want[0] and m.dec(found[1]) == want[1]
        assert got[1] is None and got[4] is None and got[0] == got[3]
    finally:
        scratch.close()


def test_projection_rows_are_found_after_spilling_without_the_bloom_filter():
    scratch = ScratchStateView(cache_rows=4)
    try:
        for i in range(100):
            scratch.put("vials", _vial(vial_id=f"V{i}", last_seq=i))
        assert scratch.get("vials", ("AB1234563", "V0"))["last_seq"] == 0  # long evicted: read from the file
        assert scratch.get("vials", ("AB1234563", "V100")) is None
        scratch.delete("vials", ("AB1234563", "V1"))
        assert scratch.get("vials", ("AB1234563", "V1")) is None
        assert len(scratch.tables["vials"]) == 99
    finally:
        scratch.close()


@pytest.mark.parametrize("data", [
    b'{"a":1}', b"{}", b"{", b'{"a":"\xc3\xa9"}', b'{"a":"\xed\xa0\x80"}',  # a lone surrogate (surrogatepass)
    '{"a":1}'.encode("utf-16-le"), '{"a":1}'.encode("utf-16"), '{"a":1}'.encode("utf-32-le"),
    b'\xef\xbb\xbf{"a":1}', b' {"a":1}', b'[1]', b'{"a":1.5}', b'{"a":1} x', b"{\x00", b"{\x00\x00\x00",
])
def test_decode_reads_bytes_as_json_loads_does(data):
    try:
        want = json.loads(data, parse_float=canonical._no_float)
    except Exception as exc:  # noqa: BLE001 - the same kind of failure is expected
        with pytest.raises(type(exc)):
            canonical.decode(data)
        return
    assert canonical.decode(data) == want


def test_a_stored_movement_before_seq_0_is_read(ledger):
    """The first page of copied movements has no lower bound: a row no entry can explain, at a
    negative seq, is still reported (as when the movements were read through the ORM)."""
    import sqlalchemy as sa

    from ledger.services.verify import verify
    from tests.conftest import Clinic

    clinic = Clinic(ledger)
    assert verify(ledger, deep=True).ok
    with ledger.engine.begin() as c:
        c.execute(sa.text("INSERT INTO entry_movements (registrant, seq, line, vial_id, ndc_key, ml) "
                          "VALUES (:r, -5, 0, 'V-GHOST', '00000000000', '1.00')"), {"r": clinic.dea})
    report = verify(ledger, deep=True)
    assert [str(p) for p in report.problems] == [f"{clinic.dea} seq -5: a stored stock movement is not in the "
                                                 "entry's bytes"]


def test_an_entry_row_before_seq_0_is_read(ledger):
    """Nor has the first page of entries a lower bound: a row at a negative seq is refused by both
    passes (it is no entry of the chain)."""
    import sqlalchemy as sa

    from ledger.services.verify import verify
    from tests.conftest import Clinic

    clinic = Clinic(ledger)
    with ledger.engine.begin() as c:
        c.execute(sa.text("INSERT INTO entries (registrant, seq, kind, schema_version, occurred_at, recorded_at, "
                          "prev_hash, leaf_hash, canonical, command_id) SELECT registrant, -1, kind, schema_version, occurred_at, "
                          "recorded_at, prev_hash, leaf_hash, canonical, command_id FROM entries WHERE registrant = :r AND seq = 0"),
                  {"r": clinic.dea})
    for deep in (False, True):
        report = verify(ledger, deep=deep)
        assert [str(p) for p in report.problems] == [f"{clinic.dea} seq 0: entry missing: found seq -1 where 0 was "
                                                     "expected"]
