"""The scratch state of ``verify --deep`` (issue 22) behaves as the in-memory one it replaced,
whatever its cache evicts: same rows, same values (Decimals exact), same iteration order."""

from __future__ import annotations

import random
from decimal import Decimal

from ledger.domain.projections import MemoryStateView
from ledger.services.verify_scratch import ScratchStateView


def _row(i: int, ml: str) -> dict:
    return {"registrant": "AB1234563", "vial_id": f"V{i}", "ml_left": Decimal(ml), "state": "sealed",
            "packaged": i % 2 == 0, "opened_at": None, "last_seq": i, "extra": [1, {"a": "b"}]}


def test_scratch_view_matches_memory_view_through_evictions():
    rnd = random.Random(22)
    mem, scratch = MemoryStateView(), ScratchStateView(cache_rows=8)  # a tiny cache: evictions all along
    try:
        for step in range(3000):
            i = rnd.randrange(200)
            op = rnd.random()
            if op < 0.5:
                row = _row(i, rnd.choice(["10.00", "9.635", "0.135", "0", "-1.5", "10"]))
                mem.put("vials", row)
                scratch.put("vials", row)
            elif op < 0.6:
                mem.delete("vials", ("AB1234563", f"V{i}"))
                scratch.delete("vials", ("AB1234563", f"V{i}"))
            else:
                got, want = scratch.get("vials", ("AB1234563", f"V{i}")), mem.get("vials", ("AB1234563", f"V{i}"))
                assert got == want, step
                if got is not None:  # a copy: changing it changes nothing stored
                    got["state"] = "changed"
                    assert scratch.get("vials", ("AB1234563", f"V{i}")) == want
        rebuilt = list(scratch.rows("vials"))
        assert rebuilt == list(mem.tables["vials"].values())  # same rows, same (insertion) order
        for row in rebuilt:
            for k in ("ml_left",):
                assert type(row[k]) is Decimal and str(row[k]) == str(mem.tables["vials"][("AB1234563", row["vial_id"])][k])
        assert len(scratch.tables["vials"]) == len(mem.tables["vials"])
    finally:
        scratch.close()


def test_scratch_map_values_changed_in_place_are_kept():
    scratch = ScratchStateView(cache_rows=4)
    try:
        m = scratch.map("packages", cache_rows=4)
        for i in range(50):
            m[f"P{i}"] = {"units": [f"U{i}"], "opened": None}
        for i in range(50):
            m[f"P{i}"]["opened"] = i  # as the rules replay does
        assert [m.get(f"P{i}")["opened"] for i in range(50)] == list(range(50))
        b = scratch.map("balance", cache_rows=4)
        for i in range(50):
            b[f"V{i}"] = b.get(f"V{i}", Decimal("0.00")) + Decimal("10.00")
        assert b.get("V3") == Decimal("10.00") and str(b.get("V49")) == "10.00" and b.get("nope") is None
        assert "V7" in b and "V77" not in b
        assert b.pop("V7") == Decimal("10.00") and "V7" not in b
    finally:
        scratch.close()
