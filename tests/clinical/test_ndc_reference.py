"""csledger's NDC reference (issue 19): the table's integrity, what it says of the NDCs the issue
names, and products refused over HTTP for figures their NDC does not have, or for Schedule II."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from importlib import resources

import pytest

from api.cli import demo
from api.http.schemas import ProductCreate
from ledger.domain import ndc_reference as ref
from ledger.domain.identifiers import parse_ndc
from tests.api.conftest import build_api, entry_count
from tests.api.test_auth import ptype
from tests.conftest import BACKENDS, KETAMINE_10, KETAMINE_50

PRODUCT_10 = {"ndc": "42023-0113-10", "name": "Ketalar (ketamine HCl injection) 10 mg/mL", "drug_code": "7285",
              "schedule": "III", "form": "injection", "strength_mg_per_ml": "10.00", "container_ml": "20.00"}


# --- the table ----------------------------------------------------------------------------------


def test_every_row_is_a_valid_package_ndc_once_with_consistent_figures():
    rows = ref.rows()
    assert len(rows) >= 10
    keys = [r.ndc_key for r in rows]
    assert len(keys) == len(set(keys)), "a package NDC twice"
    for r in rows:
        ndc = parse_ndc(r.ndc)
        assert (len(ndc.labeler), len(ndc.product), len(ndc.package)) == (5, 4, 2) and r.ndc_key == ndc.key
        assert len(re.sub(r"\D", "", r.ndc)) == 10, f"{r.ndc}: printed as FDA prints it, 10 digits"
        if r.unit_ndc:  # the unit's NDC is the same product's, another package code
            unit = parse_ndc(r.unit_ndc)
            assert (unit.labeler, unit.product) == (ndc.labeler, ndc.product) and unit.key != ndc.key
        assert r.substance in {"ketamine", "esketamine"} and r.dea_schedule == "CIII"
        assert r.strength_mg_per_ml > 0 and r.unit_ml > 0 and r.units_per_package >= 1
        assert r.mg_per_unit == r.strength_mg_per_ml * r.unit_ml, r.ndc
        assert r.unit_kind == ("nasal spray device" if r.route == "NASAL" else "vial")
        # the figures are FDA's own words in the package description
        assert re.match(rf"{r.units_per_package} ", r.package_description), r.ndc
        assert f" {_fda(r.unit_ml)} mL in 1 " in f" {r.package_description}", r.ndc
        assert r.labeler and r.product and r.source and "NDC Directory" in r.source
        for d in (r.source_date, r.read_on):
            date.fromisoformat(d)
        assert r.source_date == ref.SOURCE_DATE and r.read_on == ref.TABLE_DATE


def _fda(ml: Decimal) -> str:
    """A volume as FDA's package descriptions write it: ``20``, ``.2``."""
    s = f"{ml.normalize():f}"
    return s[1:] if s.startswith("0.") else s


def test_a_unit_ndc_means_the_same_figures_in_every_package():
    by_unit: dict[str, set] = {}
    for r in ref.rows():
        if r.unit_ndc:
            by_unit.setdefault(parse_ndc(r.unit_ndc).key, set()).add((r.strength_mg_per_ml, r.unit_ml, r.mg_per_unit))
    assert by_unit and all(len(v) == 1 for v in by_unit.values())


def test_the_data_file_names_its_date_and_source():
    text = resources.files("ledger.domain").joinpath(ref.DATA_FILE).read_text(encoding="utf-8")
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert any(f"Table date: {ref.TABLE_DATE}" in ln for ln in header)
    assert any("NDC Directory" in ln and ref.SOURCE_DATE in ln for ln in header)


def test_what_the_issue_says_of_its_ndcs():
    ketalar = ref.lookup("42023-0113-10")
    assert ketalar is not None and ketalar.product == "Ketalar" and ketalar.labeler.startswith("Par Pharmaceutical")
    assert (ketalar.strength_mg_per_ml, ketalar.unit_ml, ketalar.units_per_package) == (10, 20, 10)
    assert ketalar.describe() == "Ketalar 10 mg/mL, 20 mL per vial, 10 vials per carton"
    # Hospira labels ketamine only at 50 and 100 mg/mL: 0409-2051-05 cannot be "10 mg/mL, 20 mL"
    hospira = [r for r in ref.rows() if r.labeler.startswith("Hospira")]
    assert hospira and {r.strength_mg_per_ml for r in hospira} <= {Decimal(50), Decimal(100)}
    assert ref.lookup("0409-2051-05").strength_mg_per_ml == 100
    spravato = ref.lookup("50458-028-03")
    assert (spravato.substance, spravato.mg_per_unit, spravato.units_per_package) == ("esketamine", 28, 3)


@pytest.mark.parametrize("text", ["42023-0113-10", "42023-113-10", "42023011310", "042023011310",
                                  "042023-0113-10"])
def test_lookup_takes_any_layout_of_the_ndc(text):
    assert ref.lookup(text).ndc == "42023-113-10"


def test_lookup_finds_a_unit_ndc_and_nothing_else():
    assert ref.lookup("50458-0028-00").product == "Spravato"  # the device's own NDC
    assert ref.lookup("67457-001-00").ndc == "67457-001-10"
    for text in ("42023-2000-10", "0409-2051-99", "not an ndc", "", "4202311310"):
        assert ref.lookup(text) is None


def test_check_product_names_each_figure():
    said = ref.check_product({"ndc": "42023-0113-10", "name": "Ketamine HCl injection 50 mg/mL", "form": "injection",
                              "strength_mg_per_ml": "50.00", "container_ml": "10.00", "drug_code": "7285",
                              "schedule": "III"})
    head = ("NDC 42023-0113-10 is Ketalar 10 mg/mL, 20 mL per vial, 10 vials per carton, by FDA's NDC Directory "
            f"({ref.SOURCE_DATE})")
    assert said == [f"{head}; the product says 50 mg/mL", f"{head}; the product says 10 mL per container",
                    f"{head}; the product's name says 50 mg/mL"]
    assert [d.field for d in ref.differences({"ndc": "50458-028-02", "name": "Ketamine 28 mg", "form": "injection",
                                              "drug_code": "7286", "schedule": "II"})] == [
        "name", "form", "drug_code", "schedule"]
    assert ref.check_product({**PRODUCT_10, "name": "Ketalar 200 mg/20 mL"}) == []  # 10 mg/mL, written per vial
    assert ref.check_product({**PRODUCT_10, "ndc": "42023-2000-10", "strength_mg_per_ml": "1.00"}) == []  # unknown
    assert ref.check_product({"ndc": "50458-028-02", "name": "Spravato (esketamine) 28 mg nasal spray",
                              "form": "nasal spray", "strength_mg_per_ml": "140.00", "container_ml": "0.20",
                              "drug_code": "7285", "schedule": "IIIN"}) == []


def test_the_demo_the_examples_and_the_test_products_have_their_ndcs_true_figures():
    for ndc, name, strength, container in demo.PRODUCTS:
        assert ref.lookup(ndc) is not None
        assert ref.check_product({"ndc": ndc, "name": name, "form": "injection", "strength_mg_per_ml": strength,
                                  "container_ml": container, "drug_code": "7285", "schedule": "III"}) == []
    assert demo.K50_NDC10 == re.sub(r"\D", "", ref.lookup(demo.K50).ndc)
    example = ProductCreate.model_config["json_schema_extra"]["examples"][0]
    assert ref.lookup(example["ndc"]) is not None and ref.check_product(example) == []
    for ndc, strength, container in ((KETAMINE_50, "50.00", "10.00"), (KETAMINE_10, "10.00", "20.00")):
        assert ref.lookup(ndc) is not None
        assert ref.check_product({"ndc": ndc, "strength_mg_per_ml": strength, "container_ml": container}) == []


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestAddProduct:
    def _post(self, api, body):
        return api.client.post(api.url("/products"), json=body, headers=api.headers("pia", **api.key()))

    @pytest.mark.parametrize(("change", "field", "says"), [
        ({"strength_mg_per_ml": "50.00", "name": "Ketalar (ketamine HCl injection)"}, "strength_mg_per_ml",
         "the product says 50 mg/mL"),
        ({"container_ml": "10.00"}, "container_ml", "the product says 10 mL per container"),
        ({"name": "Ketamine HCl injection 50 mg/mL"}, "name", "the product's name says 50 mg/mL"),
    ])
    def test_figures_the_ndc_does_not_have_are_refused(self, ledger, change, field, says):
        api = build_api(ledger)
        n = entry_count(api)
        r = self._post(api, {**PRODUCT_10, **change})
        assert r.status_code == 422 and ptype(r) == "invalid-input", r.text
        assert r.json()["errors"][0]["field"] == field
        assert "NDC 42023-0113-10 is Ketalar 10 mg/mL, 20 mL per vial" in r.text and says in r.text
        assert f"FDA's NDC Directory ({ref.SOURCE_DATE})" in r.text
        assert entry_count(api) == n

    def test_both_wrong_figures_are_named_in_one_refusal(self, ledger):
        api = build_api(ledger)
        r = self._post(api, {**PRODUCT_10, "name": "Ketalar", "strength_mg_per_ml": "50.00", "container_ml": "10.00"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "strength_mg_per_ml"
        assert "the product says 50 mg/mL; the product says 10 mL per container" in r.text

    @pytest.mark.parametrize("schedule", ["II", "IIN", "ii"])
    def test_schedule_ii_is_refused(self, ledger, schedule):
        api = build_api(ledger)
        n = entry_count(api)
        r = self._post(api, {**PRODUCT_10, "ndc": "42023-2000-10", "schedule": schedule})
        assert r.status_code == 422 and ptype(r) == "invalid-input", r.text
        assert r.json()["errors"][0]["field"] == "schedule"
        assert ("csledger keeps Schedule III-V records only; Schedule II records need DEA Form 222/CSOS and must be "
                "kept separately (21 CFR 1304.04(f))") in r.text
        assert entry_count(api) == n

    def test_an_ndc_not_in_the_reference_is_added_with_a_warning(self, ledger):
        api = build_api(ledger)
        r = self._post(api, {**PRODUCT_10, "ndc": "42023-2000-10", "strength_mg_per_ml": "50.00"})
        assert r.status_code == 201, r.text
        assert r.json()["warnings"] == [
            f"NDC 42023-2000-10 is not in csledger's NDC reference (FDA's NDC Directory, taken {ref.SOURCE_DATE}; "
            f"table of {ref.TABLE_DATE}): check its strength and volume against the package"]
        listed = api.client.get(api.url("/products"), headers=api.headers("nora")).json()
        assert any(p["ndc"] == "42023-2000-10" for p in listed)

    def test_true_figures_are_added_without_a_warning(self, ledger):
        api = build_api(ledger)
        r = self._post(api, PRODUCT_10)
        assert r.status_code == 201 and r.json()["warnings"] == [], r.text
        spravato = {"ndc": "50458-0028-02", "name": "Spravato (esketamine) nasal spray 28 mg", "drug_code": "7285",
                    "schedule": "III", "form": "nasal spray", "strength_mg_per_ml": "140.00", "container_ml": "0.20"}
        r = self._post(api, spravato)
        assert r.status_code == 201 and r.json()["warnings"] == [], r.text
