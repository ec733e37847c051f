"""csledger's NDC reference: what FDA's NDC Directory says a ketamine or esketamine package NDC is.

21 CFR 1304.22(a)(2) has the record name each substance's finished form, strength and container
size; an NDC (21 CFR 207.35) names one package of one product, so a product added with an NDC
whose label says something else would make every later record wrong. The table
(``ndc_reference.csv`` beside this module, shipped in the wheel) holds the US ketamine (DEA drug
code 7285, Schedule III) and esketamine (Spravato) package NDCs read from FDA's NDC Directory,
each row with its source and the date it was taken; its header names the table's date.

Pure: no database, no settings. ``lookup`` finds a row by NDC (package or unit NDC, any printed
layout or normalised key); ``differences`` and ``check_product`` compare a product description
with it, naming each figure that differs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from ledger.domain.identifiers import IdentifierError, parse_ndc

__all__ = [
    "DATA_FILE",
    "SOURCE",
    "SOURCE_DATE",
    "TABLE_DATE",
    "Difference",
    "Row",
    "check_product",
    "differences",
    "lookup",
    "refusal",
    "rows",
    "unknown_ndc_warning",
]

DATA_FILE = "ndc_reference.csv"
#: Where the figures come from, as messages name it.
SOURCE = "FDA's NDC Directory"
#: The date of the NDC Directory files the rows were taken from.
SOURCE_DATE = "2019-04-29"
#: The date the table was built and its rows checked (also in the data file's header).
TABLE_DATE = "2026-12-07"

#: DEA controlled-substance code of ketamine, its salts and isomers (esketamine included).
KETAMINE_DRUG_CODE = "7285"


@dataclass(frozen=True)
class Row:
    """One package NDC as FDA lists it. Strength and volume are per unit (a vial, or a nasal
    spray device); ``mg_per_unit`` is their product, ``units_per_package`` the count per carton,
    box, bag or kit."""

    ndc: str  # the package NDC as FDA prints it (10 digits, hyphenated)
    ndc_key: str  # its normalised 11-digit (5-4-2) key
    unit_ndc: str | None  # the unit's own NDC where FDA lists one
    labeler: str
    product: str  # proprietary name
    substance: str  # "ketamine" or "esketamine"
    dosage_form: str  # FDA's dosage form, e.g. "INJECTION, SOLUTION"
    route: str
    package_description: str  # FDA's package description
    strength_mg_per_ml: Decimal
    unit_ml: Decimal
    mg_per_unit: Decimal
    unit_kind: str  # "vial" or "nasal spray device"
    units_per_package: int
    dea_schedule: str  # "CIII"
    source: str
    source_date: str
    read_on: str
    checked_against: str

    @property
    def package_kind(self) -> str:
        """What holds the units: the outer container of FDA's description (carton, box, bag, kit)."""
        m = re.search(r"\bin 1 ([A-Z][A-Z ]*)", self.package_description.split(">")[0])
        return m.group(1).strip().lower() if m else "package"

    def describe(self) -> str:
        """The row in words: ``Ketalar 10 mg/mL, 20 mL per vial, 10 vials per carton``."""
        if self.unit_kind == "vial":
            what = f"{self.product} {_num(self.strength_mg_per_ml)} mg/mL, {_num(self.unit_ml)} mL per vial"
        else:
            what = (f"{self.product} {_num(self.mg_per_unit)} mg per {self.unit_kind} "
                    f"({_num(self.unit_ml)} mL at {_num(self.strength_mg_per_ml)} mg/mL)")
        units = f"{self.units_per_package} {self.unit_kind}{'s' if self.units_per_package != 1 else ''}"
        return f"{what}, {units} per {self.package_kind}"


class Difference(NamedTuple):
    """One figure of a product that differs from the reference: the product's field and why."""

    field: str
    text: str


def _num(d: Decimal) -> str:
    """A figure as a label prints it: ``10``, ``0.2``, ``28`` (no trailing zeros, no exponent)."""
    s = f"{d.normalize():f}"
    return s


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, (bool, float)):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _key_12(text: str) -> str | None:
    """The 12-digit (6-4-2) key of an NDC given printed or as a normalised key, or None."""
    s = str(text).strip()
    if s.isdigit() and len(s) == 11:
        return "0" + s
    if s.isdigit() and len(s) == 12:
        return s
    try:
        return parse_ndc(s).key_12
    except IdentifierError:
        return None


@cache
def rows() -> tuple[Row, ...]:
    """Every row of the table, in file order (read once from the data file in the package)."""
    text = resources.files("ledger.domain").joinpath(DATA_FILE).read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    out = []
    for r in csv.DictReader(io.StringIO(body)):
        ndc = parse_ndc(r["package_ndc"], field="package_ndc")
        out.append(Row(
            ndc=r["package_ndc"], ndc_key=ndc.key, unit_ndc=r["unit_ndc"] or None, labeler=r["labeler"],
            product=r["product"], substance=r["substance"], dosage_form=r["dosage_form"], route=r["route"],
            package_description=r["package_description"], strength_mg_per_ml=Decimal(r["strength_mg_per_ml"]),
            unit_ml=Decimal(r["unit_ml"]), mg_per_unit=Decimal(r["mg_per_unit"]), unit_kind=r["unit_kind"],
            units_per_package=int(r["units_per_package"]), dea_schedule=r["dea_schedule"], source=r["source"],
            source_date=r["source_date"], read_on=r["read_on"], checked_against=r["checked_against"],
        ))
    return tuple(out)


@cache
def _index() -> dict[str, Row]:
    """Package NDCs first; a unit NDC (a vial's or a device's own) finds the first package of it:
    the per-unit figures are the same in every package of one unit."""
    by_key: dict[str, Row] = {}
    for row in rows():
        by_key.setdefault(parse_ndc(row.ndc).key_12, row)
    for row in rows():
        if row.unit_ndc:
            by_key.setdefault(parse_ndc(row.unit_ndc).key_12, row)
    return by_key


def lookup(ndc_key: str) -> Row | None:
    """The reference row of an NDC (package or unit NDC; printed in any layout, or its 11- or
    12-digit key), or None when the table does not hold it."""
    key = _key_12(ndc_key)
    return _index().get(key) if key else None


def _get(description: Any, name: str) -> Any:
    if isinstance(description, Mapping):
        return description.get(name)
    return getattr(description, name, None)


def _says(row: Row, ndc_text: str) -> str:
    return f"NDC {ndc_text} is {row.describe()}, by {SOURCE} ({row.source_date})"


_STATED_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*mg\s*/\s*(\d+(?:\.\d+)?)?\s*ml\b", re.IGNORECASE)


def _name_differences(row: Row, name: str) -> list[str]:
    low = name.lower()
    problems = []
    if row.substance == "esketamine":
        names_it = "esketamine" in low or row.product.lower() in low
        expected = f"esketamine or {row.product}"
    else:
        # "esketamine" is not ketamine: the racemate's name must stand on its own
        names_it = re.search(r"(?<![a-z])ketamine", low) is not None or row.product.lower() in low
        expected = "ketamine" if row.product.lower() == "ketamine hydrochloride" else f"ketamine or {row.product}"
    if not names_it:
        problems.append(f"the product's name does not name {expected}")
    for num, den in _STATED_STRENGTH.findall(name):
        if den and Decimal(den) == 0:
            continue  # "mg/0 mL" states no strength
        stated = Decimal(num) / Decimal(den) if den else Decimal(num)
        if stated != row.strength_mg_per_ml:
            problems.append(f"the product's name says {num} mg/{den + ' ' if den else ''}mL")
    return problems


def differences(description: Any) -> list[Difference]:
    """How a product description (a ``ProductDescription``, a command or a mapping with ``ndc``
    or ``ndc_key``, ``name``, ``form``, ``strength_mg_per_ml``, ``container_ml``, ``drug_code``
    and ``schedule``) differs from the reference row of its NDC, one ``Difference`` per field.
    Empty when the NDC is not in the table (see ``unknown_ndc_warning``) or nothing differs.
    Fields the description lacks are not compared."""
    ndc_text = _get(description, "ndc") or _get(description, "ndc_key")
    row = lookup(_get(description, "ndc_key") or ndc_text or "")
    if row is None:
        return []
    says = _says(row, ndc_text)
    out: list[Difference] = []
    strength = _decimal(_get(description, "strength_mg_per_ml"))
    if strength is not None and strength != row.strength_mg_per_ml:
        out.append(Difference("strength_mg_per_ml", f"{says}; the product says {_num(strength)} mg/mL"))
    container = _decimal(_get(description, "container_ml"))
    if container is not None and container != row.unit_ml:
        out.append(Difference("container_ml", f"{says}; the product says {_num(container)} mL per container"))
    # Package figures, once products record them (issue 19's package hierarchy). A product added
    # by the unit's own NDC is one unit: its "package" is the unit itself.
    is_unit = bool(row.unit_ndc) and _key_12(row.unit_ndc) == _key_12(_get(description, "ndc_key") or ndc_text or "")
    expected_units = 1 if is_unit else row.units_per_package
    units = _get(description, "units_per_package")
    if isinstance(units, int) and not isinstance(units, bool) and units != expected_units:
        out.append(Difference("units_per_package", f"{says}; the product says {units} per package"))
    unit_kind = _get(description, "unit_kind")
    if isinstance(unit_kind, str) and unit_kind.replace("_", " ") != row.unit_kind:
        out.append(Difference("unit_kind", f"{says}; the product says its unit is a {unit_kind.replace('_', ' ')}"))
    unit_ndc = _get(description, "unit_ndc")
    if isinstance(unit_ndc, str) and row.unit_ndc and _key_12(unit_ndc) != _key_12(row.unit_ndc):
        out.append(Difference("unit_ndc", f"{says}, its unit NDC {row.unit_ndc}; the product says unit NDC {unit_ndc}"))
    mg_unit = _decimal(_get(description, "mg_per_device"))
    if mg_unit is not None and mg_unit != row.mg_per_unit:
        out.append(Difference("mg_per_device", f"{says}; the product says {_num(mg_unit)} mg per device"))
    name = _get(description, "name")
    if isinstance(name, str):
        out.extend(Difference("name", f"{says}; {p}") for p in _name_differences(row, name))
    form = _get(description, "form")
    if isinstance(form, str) and form.strip():
        low = form.lower()
        if row.route == "NASAL" and not ("nasal" in low or "spray" in low):
            out.append(Difference("form", f"{says} (a nasal spray); the product's form is {form!r}"))
        elif "INJECTION" in row.dosage_form and "inject" not in low:
            out.append(Difference("form", f"{says} (an injection); the product's form is {form!r}"))
    drug_code = _get(description, "drug_code")
    if isinstance(drug_code, str) and drug_code.strip() != KETAMINE_DRUG_CODE:
        out.append(Difference("drug_code", f"NDC {ndc_text} is {row.substance}, DEA drug code {KETAMINE_DRUG_CODE}; "
                                           f"the product says {drug_code.strip()}"))
    schedule = _get(description, "schedule")
    expected_schedules = {row.dea_schedule.removeprefix("C"), row.dea_schedule.removeprefix("C") + "N"}
    if isinstance(schedule, str) and schedule.strip().upper() not in expected_schedules:
        out.append(Difference("schedule", f"NDC {ndc_text} is Schedule {row.dea_schedule.removeprefix('C')} "
                                          f"by {SOURCE} ({row.source_date}); the product says {schedule.strip()}"))
    return out


def refusal(description: Any) -> Difference | None:
    """One ``Difference`` that names every differing figure in a sentence (its field: the first
    that differs), for refusing the product; None when nothing differs."""
    diffs = differences(description)
    if not diffs:
        return None
    head, _, first = diffs[0].text.partition("; ")
    details = [first]
    for d in diffs[1:]:
        before, _, detail = d.text.partition("; ")
        details.append(detail if before == head else d.text)
    return Difference(diffs[0].field, f"{head}; {'; '.join(details)}")


def check_product(description: Any) -> list[str]:
    """The differences between a product description and the reference, as sentences that name
    each figure, e.g. "NDC 42023-0113-10 is Ketalar 10 mg/mL, 20 mL per vial, 10 vials per carton,
    by FDA's NDC Directory (2019-04-29); the product says 50 mg/mL". Empty when it agrees or the
    NDC is not in the table."""
    return [d.text for d in differences(description)]


def unknown_ndc_warning(ndc_text: str) -> str | None:
    """The warning for a product whose NDC the table does not hold (None when it does)."""
    if lookup(ndc_text) is not None:
        return None
    return (f"NDC {ndc_text} is not in csledger's NDC reference ({SOURCE}, taken {SOURCE_DATE}; table of "
            f"{TABLE_DATE}): check its strength and volume against the package")
