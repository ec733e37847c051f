"""Issue 20: an inventory compared with the book at that instant, product by product.

One implementation for the service (``services.receiving.take_inventory``), which writes the
comparison into the ``inventory_taken`` entry, and for ``verify --deep``
(``services.rules_replay``), which runs it again on the book replayed at the entry's seq and
requires the same lines: a hand-written inventory claiming no difference fails there.

The book here is the book a count compares with (``services.counts._book``): the vials on hand,
less any unit still "in" a package whose opening did not find it (that shortfall is already the
opening's discrepancy; expecting the unit again would report it twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledger.domain.projections import ON_HAND
from ledger.domain.quantities import norm

ZERO = Decimal("0.00")


class NotOnBook(ValueError):
    """An inventory lists a vial that is not on the book (by id)."""

    def __init__(self, vial_id: str):
        super().__init__(f"vial {vial_id} is not on the book")
        self.vial_id = vial_id


@dataclass(frozen=True)
class Listed:
    """One vial an inventory lists: its id, product (NDC key), sealed or opened, mL found."""

    vial_id: str
    ndc_key: str
    sealed: bool
    ml: Decimal


def book_vials(vials: Iterable[dict[str, Any]], package_opened: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The vial rows (``vials`` projection) an inventory expects to find, of one registrant."""
    out = []
    for v in vials:
        if v["state"] not in ON_HAND:
            continue
        if v.get("packaged") and v.get("package_id") and package_opened(v["package_id"]):
            continue
        out.append(v)
    return out


def is_sealed(v: dict[str, Any]) -> bool:
    """A vial row the book holds sealed: never opened and full (as counts tell it)."""
    return v["opened_at"] is None and Decimal(v["ml_left"]) == Decimal(v["container_ml"])


def compare(seq: int, book: Sequence[dict[str, Any]], listed: Sequence[Listed]) -> list[dict[str, Any]]:
    """The comparison lines of an inventory recorded at ``seq``: one per product on the book or
    listed, in NDC-key order, each with the book's figures, what was found, the difference, the
    vials on the book not found, and ``D<seq>-<i>`` when anything differs. Raises ``NotOnBook``
    for a listed vial the book does not hold."""
    by_id = {v["vial_id"]: v for v in book}
    for item in listed:
        v = by_id.get(item.vial_id)
        if v is None or v["ndc_key"] != item.ndc_key:
            raise NotOnBook(item.vial_id)
    keys = sorted({v["ndc_key"] for v in book} | {i.ndc_key for i in listed})
    seen = {i.vial_id for i in listed}
    lines = []
    for i, key in enumerate(keys):
        mine = [v for v in book if v["ndc_key"] == key]
        found = [x for x in listed if x.ndc_key == key]
        es = sum(1 for v in mine if is_sealed(v))
        eml = norm(sum((Decimal(v["ml_left"]) for v in mine), ZERO))
        fs = sum(1 for x in found if x.sealed)
        fml = norm(sum((x.ml for x in found), ZERO))
        missing = tuple(sorted(v["vial_id"] for v in mine if v["vial_id"] not in seen))
        diff = norm(fml - eml)
        differs = diff != 0 or fs != es or bool(missing)
        lines.append({"ndc_key": key, "expected_sealed_containers": es, "expected_open_containers": len(mine) - es,
                      "expected_ml": eml, "found_sealed_containers": fs, "found_open_containers": len(found) - fs,
                      "found_ml": fml, "difference_ml": diff, "vials_not_found": missing,
                      "discrepancy_id": f"D{seq}-{i}" if differs else None})
    return lines
