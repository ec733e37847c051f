"""The checks shared by the clinic-floor forms that pick a patient and a prescriber and draw from
vials (issue 21): the infusion page, the backfill of a downtime sheet (``routes_clinic``,
``routes_backfill``), the preparation and the Spravato forms (``routes_preparations``).

Each checks only what the page can see (picked, typed, a number, a vial still in its row) so every
such error shows at once beside its field; the service checks everything again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

from api.web import queries
from api.web.core import Page
from api.web.forms import Errors, Form
from api.web.witness import uses_passkey
from ledger.domain.commands import DrawInput
from ledger.domain.errors import InvalidInput
from ledger.domain.quantities import parse_volume


def number(values: dict[str, Any], name: str, parse: Callable[..., Decimal], empty: str, errors: Errors,
           **kw: Any) -> Decimal | None:
    """The field ``name`` parsed with ``parse`` (``**kw`` passed on), or None with its error added:
    ``empty`` when nothing was typed, else the parser's reason."""
    text = str(values.get(name, "")).strip()
    if not text:
        errors.add(name, empty)
        return None
    try:
        return parse(text, field=name, **kw)
    except InvalidInput as exc:
        errors.add(name, exc.reason)
        return None


def check_patient_and_prescriber(page: Page, values: dict[str, Any], errors: Errors, *, ordered: str = "it") -> None:
    """The picked patient exists here and the picked prescriber is registered here and not blocked;
    ``ordered`` names what the prescriber ordered in the page's words ("the dose")."""
    ledger = page.request.app.state.ledger
    pid = values["patient_id"].strip()
    if not pid:
        errors.add("patient_id", "find the patient (name or chart number) and pick them")
    elif not queries.patient_exists(ledger, page.dea, pid):
        errors.add("patient_id", f"no patient {pid[:32]} here; find the patient again and pick them")
    dea = values["prescriber_dea_number"].strip()
    registered = {p["dea_number"]: p for p in queries.prescribers(ledger, page.dea, page.local_now().date())}
    if not dea:
        errors.add("prescriber_dea_number", f"pick the prescriber who ordered {ordered}")
    elif dea not in registered:
        errors.add("prescriber_dea_number", f"DEA {dea[:9]} is not a prescriber registered here; pick one from the list")
    elif registered[dea]["blocked"]:
        errors.add("prescriber_dea_number", f"{registered[dea]['name']}: {registered[dea]['blocked']}; pick another")


def check_draws(form: Form, values: dict[str, Any], vials: list[dict], errors: Errors, *,
                blank: Collection[str] = ("",)) -> tuple[list[DrawInput], list[int], Decimal, bool]:
    """The ticked vials with the mL drawn from each (the page's rows ``vials-<i>-...``, one per vial
    of ``vials`` in order).

    An mL in ``blank`` beside a vial not ticked counts as nothing typed. Returns (the draws, the
    page row of each draw, the mL drawn in all, whether every ticked row was right)."""
    draws: list[DrawInput] = []
    used: list[int] = []
    drawn, draws_ok = Decimal("0"), True
    for i, v in enumerate(vials):
        ml_text = values[f"vials-{i}-ml"].strip()
        if not values[f"vials-{i}-use"]:
            if ml_text not in blank:  # an mL typed next to a vial not ticked would be left out silently
                errors.add(f"vials-{i}-use", "tick this vial too, or clear its mL")
                draws_ok = False
            continue
        sent = form.get(f"vials-{i}-id", "")
        if sent != v["vial_id"]:
            # The list changed since the page was opened (or the id was altered): refused, where the
            # ticked row used to be dropped silently and the dose recorded without it.
            errors.add(f"vials-{i}-use", f"vial {sent[:64] or '(none)'} is no longer in this row; check the ticked "
                                         "vials and send again")
            draws_ok = False
            continue
        if v["blocked"]:
            errors.add(f"vials-{i}-use", f"cannot be drawn from: {v['blocked']}")
            draws_ok = False
            continue
        ml = number(values, f"vials-{i}-ml", parse_volume, "enter the mL drawn from this vial", errors)
        if ml is not None and ml > v["ml_left"]:
            errors.add(f"vials-{i}-ml", f"only {v['ml_left']} mL is left in this vial")
            ml = None
        if ml is None:
            draws_ok = False
            continue
        used.append(i)
        draws.append(DrawInput(v["vial_id"], ml_text))
        drawn += ml
    if not draws and draws_ok:
        errors.add("draws", "tick the vial(s) drawn from and give the mL drawn from each")
    return draws, used, drawn, draws_ok


def usable_vial_rows(page: Page, form: Form, values: dict[str, Any]) -> list[dict]:
    """The vials the page listed (the usable ones, in the page's order), with each row's tick and mL
    as sent copied into ``values`` (``vials-<i>-use``, ``vials-<i>-ml``) to show again on an error."""
    vials = queries.usable_vials(page.request.app.state.ledger, page.dea, page.local_now().date())
    for i in range(len(vials)):
        values[f"vials-{i}-use"] = form.get(f"vials-{i}-use", "")
        values[f"vials-{i}-ml"] = form.get(f"vials-{i}-ml", "")
    return vials


def draw_error_field(name: str, used: list[int]) -> str:
    """The page's field for the service's error ``name``: a draw's (``draws-<k>-...``, the k-th draw
    sent) is shown on the row it came from (``used[k]``); any other name is kept."""
    if not name.startswith("draws-"):
        return name
    k = int(name.split("-")[1])
    row = used[k] if k < len(used) else 0
    return f"vials-{row}-ml" if name.endswith("-ml") else f"vials-{row}-use"


def check_witness_there(form: Form, errors: Errors) -> None:
    """The witness of a waste is named and has typed a password (or used a passkey); the password
    itself is checked only once the rest is right (``witness_from_form``)."""
    if not form.text("witness_username"):
        errors.add("witness_username", "the witness enters their own username")
    if not uses_passkey(form, "witness") and not form.get("witness_password", "") and \
            not form.text("witness_assertion"):
        errors.add("witness_password", "the witness enters their own password")


def note_witness_not_checked(form: Form, errors: Errors, notes: dict[str, str]) -> None:
    """With errors, a witness password typed is not checked and not kept: say so beside it, so the
    witness knows to type it again once the rest is fixed."""
    if errors and form.get("witness_password", "") and "witness_password" not in errors:
        notes["witness_password"] = ("The witness's password was not checked yet (nothing was recorded): fix what "
                                     "is marked, then the witness types their password again.")
