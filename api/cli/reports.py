"""Commands of the `csledger` CLI for reports; registered on `cli.app` when `cli` is imported.

``csledger report KIND --registrant DEA --from DATE --to DATE --out FILE.pdf`` builds a report
from the ledger as it is now; ``csledger verify-report FILE.pdf`` rebuilds one from the ledger and
requires the same bytes.
The command line has no authenticated staff member, so reports made here say they were made by
"csledger CLI (operator)", and the patient access log names their reader ``cli:<user>``, the
operating-system user who ran the command.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from api.cli.main import DbOption, _fail, _open, app, err, out
from ledger.domain.errors import LedgerError


@app.command()
def report(
    kind: Annotated[str, typer.Argument(help="receiving | inventory | audit | waste | counts | form106 | vial | "
                                              "administrations")],
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    start: Annotated[str, typer.Option("--from", help="First day of the period, YYYY-MM-DD (registrant's local time).")],
    end: Annotated[str, typer.Option("--to", help="Last day of the period, YYYY-MM-DD (included).")],
    out_path: Annotated[Path, typer.Option("--out", help="PDF file to write.")],
    paper: Annotated[str, typer.Option(help="letter or a4.")] = "letter",
    vial: Annotated[str | None, typer.Option(help="The container, for the vial history (e.g. V19-1).")] = None,
    db: DbOption = None,
) -> None:
    """Build a compliance report PDF from the ledger, with the ledger state it was built from.

    Kinds: receiving, inventory, audit, waste (with Form 41 worksheets), counts, form106,
    vial (needs --vial), administrations."""
    from ledger.storage.patient_access import cli_reader
    from reports.base import build_report

    _, ledger = _open(db)
    t0 = time.perf_counter()
    try:
        pdf, data = build_report(ledger, kind, registrant.strip().upper(), start, end, paper=paper.lower(),
                                 params={"vial": vial} if vial else None, reader=cli_reader())
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out_path.write_bytes(pdf)
    s = data["state"]
    out.print(f"wrote {out_path} ({len(pdf):,} bytes) in {time.perf_counter() - t0:.1f} s: {data['title']} of "
              f"{data['registrant']['dea_number']}, {start} to {end}, ledger tree size {s['tree_size']} root {s['root']}",
              highlight=False)


@app.command("verify-report")
def verify_report(
    pdf_path: Annotated[Path, typer.Argument(help="A report PDF made by `csledger report`.")],
    db: DbOption = None,
) -> None:
    """Check a report against the ledger: its ledger state, every figure recomputed from the
    entries, and the file itself, rebuilt from the ledger and the inputs the report embeds and
    compared byte for byte (so an annotation, a font re-encoding or an appended update fails
    too). Exits 1 naming what differs: a figure, the first differing line of a page, or the
    first differing byte offset."""
    from ledger.storage.patient_access import cli_reader
    from reports.verify import verify_report as run

    if not pdf_path.is_file():
        _fail(f"no such file: {pdf_path}")
    _, ledger = _open(db)
    try:
        result = run(ledger, pdf_path.read_bytes(), reader=cli_reader())
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    if not result.ok:
        for p in result.problems:
            err.print(f"[bold red]FAIL[/] {p}", highlight=False)
        raise typer.Exit(1)
    out.print(f"OK {result.summary}: rebuilt from the ledger byte for byte; every figure "
              "and every page matches the ledger", highlight=False)


@app.command("report-bench")
def report_bench(
    receipts: Annotated[int, typer.Option(help="Receipts (one entry and one log row each) to seed.")] = 20000,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the throwaway database and PDF.")] = None,
    reuse: Annotated[bool, typer.Option(help="Reuse a database seeded by an earlier run in --workdir.")] = False,
) -> None:
    """Measure building and verifying a receiving log of N rows (time and peak memory)."""
    from reports.bench import run_report_bench

    run_report_bench(out, receipts=receipts, workdir=workdir, reuse=reuse)
