"""Commands of the `csledger` CLI for clinic operations; registered on `cli.app` when `cli` is
imported. Read-only (the command line records no clinical event): the patient key, the
accountability audit, stock and open work (unreconciled infusions, open discrepancies)."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from api.cli.main import DbOption, _fail, _open, _require_registrant, app, err, out
from ledger.domain.errors import LedgerError
from ledger.settings import get_settings

patient_key = typer.Typer(help="The patient registry key (never stored in the database).", no_args_is_help=True)
app.add_typer(patient_key, name="patient-key")


@patient_key.command("generate")
def patient_key_generate(
    path: Annotated[Path | None, typer.Option("--out", help="Key file to create (default: the configured one).")] = None,
) -> None:
    """Create a new random patient key file (mode 0600). Back it up offline: losing it loses the
    patient names and addresses the law requires on administration records."""
    from ledger.storage.patient_keys import generate_key_file

    target = path or get_settings().patient_key_file
    try:
        generate_key_file(Path(target))
    except FileExistsError:
        _fail(f"{target} already exists; a new key would make the registry unreadable")
    out.print(f"patient key written to {target} (mode 0600). Back it up now: copy it to offline storage "
              "kept apart from database backups.")


@patient_key.command("check")
def patient_key_check(db: DbOption = None) -> None:
    """Check the configured patient key against the registry's key-check value."""
    from ledger.services import verify_patient_key
    from ledger.storage.patient_keys import PatientKeys

    settings, ledger = _open(db)
    try:
        verify_patient_key(ledger, PatientKeys.from_settings(settings))
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out.print("patient key matches the registry")


def _day_bounds(registrant_tz: str, start: str, end: str) -> tuple[datetime, datetime]:
    tz = zoneinfo.ZoneInfo(registrant_tz)
    try:
        d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        _fail("--from and --to are dates YYYY-MM-DD")
    # the period runs from the start of the first day to the end of the last (local time)
    return (datetime.combine(d0, time(0), tz) - timedelta(microseconds=1),
            datetime.combine(d1 + timedelta(days=1), time(0), tz) - timedelta(microseconds=1))


@app.command()
def audit(
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (registrant's local time).")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (included).")],
    db: DbOption = None,
) -> None:
    """The accountability audit per NDC and in total (mg, mL, containers), between the two
    counts or inventories the days give (the first on --from, else the latest before it; the
    latest on or before --to)."""
    from ledger.services import audit as audit_math
    from ledger.storage.store import registrant_row

    _, ledger = _open(db)
    try:
        with ledger.reading() as c:
            row = registrant_row(c, registrant)
        if row is None:
            _fail(f"no registrant {registrant}")
        _day_bounds(row["time_zone"], start, end)  # the same refusals as before for malformed days
        # Issue 20, one period: between the two counts the asked local days give (``audit_days``)
        a = audit_math.audit_days(ledger, registrant, start, end)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    w = a["window"]
    err.print(f"{start} to {end} ({row['time_zone']}): every figure is of the audit window after entry "
              f"{w['begin']['seq']} ({w['begin']['kind']} at {w['begin']['occurred_at']}) up to entry "
              f"{w['end']['seq']} ({w['end']['kind']} at {w['end']['occurred_at']})"
              + (", the registrant's first period" if w["first_period"] else ""), highlight=False)
    for p in [*a["products"], {"ndc": "TOTAL", "name": "", **a["total"], "ending_basis": "", "beginning_basis": ""}]:
        table = Table(title=f"{p['ndc']} {p['name']}".strip(), show_lines=False)
        for col in ("line", "mg", "mL", "containers"):
            table.add_column(col, justify="right" if col != "line" else "left")
        for line in audit_math.LINES:
            label = line.replace("_", " ")
            if line == "beginning" and p["beginning_basis"]:
                label += f" ({p['beginning_basis']})"
            if line == "ending" and p["ending_basis"]:
                label += f" ({p['ending_basis']})"
            table.add_row(label, str(p["mg"][line]), str(p["ml"][line]), str(p["containers"][line]))
        table.add_row("variance %", str(p["variance_percent"]) + (" FLAGGED" if p["flagged"] else ""), "", "")
        table.add_row("variance after adjustments %", str(p["variance_after_adjustments_percent"]), "", "")
        out.print(table)
        if p.get("adjustment_entries"):  # issue 15: each adjustment after the difference, with who signed it
            adj = Table(title=f"{p['ndc']} adjustments after the difference", show_lines=False)
            for col in ("entry", "what", "mL", "mg", "signed by"):
                adj.add_column(col, justify="right" if col in ("entry", "mL", "mg") else "left")
            for a in p["adjustment_entries"]:
                signed = "; ".join(f"{s['meaning']}: {s['printed_name']}" for s in a["signatures"])
                what = a["description"] + (" (in the counted beginning: not summed)" if a["in_counted_beginning"] else "")
                adj.add_row(str(a["seq"]), what, str(a["ml"]), str(a["mg"]), signed)
            out.print(adj)


@app.command("stock")
def stock_cmd(
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    db: DbOption = None,
) -> None:
    """Stock on hand per product and lot, unreconciled infusions and open discrepancies."""
    from ledger.services import stock

    _, ledger = _open(db)
    _require_registrant(ledger, registrant)
    try:
        lots = stock.stock_by_lot(ledger, registrant)
        unreconciled = stock.unreconciled_administrations(ledger, registrant)
        open_d = stock.discrepancies(ledger, registrant)
    finally:
        ledger.dispose()
    table = Table(title=f"{registrant}: on hand")
    for col in ("NDC key", "lot", "expiry", "sealed", "open", "quarantined", "mL", "mg"):
        table.add_column(col)
    for g in lots:
        table.add_row(g["ndc_key"], g["lot"], g["expiry"], str(g["sealed_containers"]), str(g["open_containers"]),
                      str(g["quarantined_containers"]), str(g["ml"]), str(g["mg"]))
    out.print(table)
    out.print(f"unreconciled infusions: {len(unreconciled)}; open discrepancies: {len(open_d)}")
