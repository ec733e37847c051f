"""Commands of the `csledger` CLI for reports; registered on `cli.app` when `cli` is imported.

``csledger report KIND --registrant DEA --from DATE --to DATE --out FILE.pdf`` builds a report
from the ledger as it is now; ``csledger verify-report FILE.pdf`` rebuilds one from the ledger and
requires the same bytes, and its certification signature by a report key the ledger certifies.
``csledger keys report-key --registrant DEA --username ADMIN`` makes that key (an administrator signs
in at the console and signs the ``report_key_certified`` entry); until it exists reports are
written unsigned and ``verify-report`` refuses them ("not signed").
The command line has no authenticated staff member, so reports made here say they were made by
"csledger CLI (operator)", and the patient access log names their reader ``cli:<user>``, the
operating-system user who ran the command.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from api.cli.integrity import keys_app
from api.cli.main import DbOption, _fail, _open, app, err, out
from ledger.domain.errors import LedgerError


@app.command()
def report(
    kind: Annotated[str, typer.Argument(help="receiving | inventory | audit | waste | counts | form106 | vial | "
                                              "administrations | transfers | corrections | breakage | roles | "
                                              "patient_access")],
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    start: Annotated[str, typer.Option("--from", help="First day of the period, YYYY-MM-DD (registrant's local time).")],
    end: Annotated[str, typer.Option("--to", help="Last day of the period, YYYY-MM-DD (included).")],
    out_path: Annotated[Path, typer.Option("--out", help="PDF file to write.")],
    paper: Annotated[str, typer.Option(help="letter or a4.")] = "letter",
    vial: Annotated[str | None, typer.Option(help="The container, for the vial history (e.g. V19-1).")] = None,
    audit_window: Annotated[bool, typer.Option(
        "--audit-window", help="administrations or waste: for the audit window of the same days (between two "
                               "counts), so its totals are the audit's figures.")] = False,
    db: DbOption = None,
) -> None:
    """Build a compliance report PDF from the ledger, with the ledger state it was built from.

    Kinds: receiving, inventory, audit, waste (with Form 41 worksheets), counts, form106,
    vial (needs --vial), administrations."""
    from ledger.storage.patient_access import cli_reader
    from reports.base import build_report_file

    _, ledger = _open(db)
    t0 = time.perf_counter()
    try:
        # Written to the file as it is drawn and signed (issue 22: memory flat in the rows).
        signed, data = build_report_file(ledger, kind, registrant.strip().upper(), start, end, out_path,
                                         paper=paper.lower(), params={"vial": vial} if vial else None,
                                         reader=cli_reader(), audit_window=audit_window)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    s = data["state"]
    out.print(f"wrote {out_path} ({out_path.stat().st_size:,} bytes) in {time.perf_counter() - t0:.1f} s: {data['title']} of "
              f"{data['registrant']['dea_number']}, {start} to {end}, ledger tree size {s['tree_size']} root {s['root']}",
              highlight=False)
    window = data["period"].get("window")
    if window:  # issue 20: the figures are of the audit window, not the whole days
        out.print(f"audit window: after entry {window['begin']['seq']} ({window['begin']['kind']} at "
                  f"{window['begin']['occurred_at']}) up to entry {window['end']['seq']} ({window['end']['kind']} at "
                  f"{window['end']['occurred_at']})", highlight=False)
    if not signed:
        err.print(f"[bold yellow]UNSIGNED[/] {registrant.strip().upper()} has no certified report key in the key folder: "
                  "verify-report refuses this report until an administrator runs `csledger keys report-key` and it "
                  "is made again", highlight=False)


@keys_app.command("report-key")
def report_key(
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    username: Annotated[str, typer.Option(help="An administrator's username; they sign the certification.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    totp: Annotated[str | None, typer.Option(help="The administrator's TOTP code.")] = None,
    db: DbOption = None,
) -> None:
    """Make the registrant's report signing key (ECDSA P-256, in the key folder, mode 0600) and
    record its self-signed certificate as a ``report_key_certified`` entry the administrator
    signs. Reports made from then on carry a certification signature by it; running it again
    replaces the key (reports already made keep verifying under the older entry)."""
    from api.cli.alerts import _principal
    from ledger.services.report_key import certify_report_key

    settings, ledger = _open(db)
    try:
        admin = _principal(ledger, settings, registrant.strip().upper(), username, password_stdin, totp)
        res = certify_report_key(ledger, admin, settings.key_dir)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out.print(f"report key of {registrant.strip().upper()} certified in entry {res['seq']}: {res['fingerprint']} "
              f"(key file {res['path']})", highlight=False)


@app.command("verify-report")
def verify_report(
    pdf_path: Annotated[Path, typer.Argument(help="A report PDF made by `csledger report`.")],
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", help="Check offline against this bundle (`csledger export`) instead of a database.")] = None,
    log_key: Annotated[list[str] | None, typer.Option(
        "--log-key", help="With --bundle: the log's verifier key, obtained out of band (repeatable).")] = None,
    witness_key: Annotated[list[str] | None, typer.Option(
        "--witness-key", help="With --bundle: a witness's verifier key, obtained out of band (repeatable).")] = None,
    staff_root: Annotated[str | None, typer.Option(
        "--staff-root", help="With --bundle: the root staff credential's fingerprint (sha256:...), out of band.")] = None,
    db: DbOption = None,
) -> None:
    """Check a report against the ledger: its ledger state, every figure recomputed from the
    entries, and the file itself, rebuilt from the ledger and the inputs the report embeds and
    compared byte for byte (so an annotation, a font re-encoding or an appended update fails
    too), and its certification signature by a report key the ledger certifies. Exits 1 naming
    what differs: a figure, the first differing line of a page, or the first differing byte
    offset. With --bundle the same checks run offline, from an exported bundle."""
    from ledger.storage.patient_access import cli_reader
    from reports.verify import verify_report as run
    from reports.verify import verify_report_offline

    if not pdf_path.is_file():
        _fail(f"no such file: {pdf_path}")
    if bundle is None and (log_key or witness_key or staff_root):
        _fail("--log-key, --witness-key and --staff-root go with --bundle (online, the ledger's own keys are used; "
              "hold them against pinned keys with `csledger verify --pinned-keys`)")
    if bundle is not None:
        if not bundle.is_file():
            _fail(f"no such bundle: {bundle}")
        try:
            result = verify_report_offline(pdf_path, bundle, trusted_log_keys=log_key or None,
                                           trusted_witness_keys=witness_key or None, trusted_staff_root=staff_root)
        except LedgerError as exc:
            _fail(str(exc))
        source = f"the bundle {bundle.name}"
    else:
        _, ledger = _open(db)
        try:
            # The path, not the bytes (issue 22): a long report is read a piece at a time.
            result = run(ledger, pdf_path, reader=cli_reader())
        except LedgerError as exc:
            _fail(str(exc))
        finally:
            ledger.dispose()
        source = "the ledger"
    for n in result.notes:
        err.print(f"[yellow]note[/] {n}", highlight=False)
    if not result.ok:
        for p in result.problems:
            err.print(f"[bold red]FAIL[/] {p}", highlight=False)
        raise typer.Exit(1)
    out.print(f"OK {result.summary}: rebuilt from {source} byte for byte; every figure "
              "and every page matches the ledger; certified (no changes allowed) by the registrant's report key",
              highlight=False)


@app.command("report-bench")
def report_bench(
    receipts: Annotated[int, typer.Option("--receipts", "--rows",
                                          help="Rows of the log to seed (receipts, or infusions).")] = 20000,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the throwaway database and PDF.")] = None,
    reuse: Annotated[bool, typer.Option(help="Reuse a database seeded by an earlier run in --workdir.")] = False,
    kind: Annotated[str, typer.Option(help="receiving, administrations (an infusion with its witnessed "
                                           "waste per row) or audit (the accountability audit of those "
                                           "infusions, the year closed by a count).")] = "receiving",
    scale: Annotated[int, typer.Option(help="Also build a log of SCALE times the rows, and print the ratios "
                                            "against issue 22's targets (time linear, peak RSS within 300 MiB).")] = 1,
    verify: Annotated[bool, typer.Option(help="Also run verify-report on each PDF.")] = True,
) -> None:
    """Measure building (and verifying) a receiving or administration log, or the audit, of N
    rows, and of SCALE x N rows: time and peak memory of each build in its own child process."""
    from reports.bench import run_report_bench

    run_report_bench(out, receipts=receipts, workdir=workdir, reuse=reuse, kind=kind, scale=scale, verify=verify)


# --- downtime paper (issue 21) --------------------------------------------------------------------
# The server may be down: these read the database directly, as ``csledger report`` does.
reports_app = typer.Typer(help="Downtime paper forms, printed from the database (the server may be down).",
                          no_args_is_help=True)
app.add_typer(reports_app, name="reports")


@reports_app.command("paper-log")
def paper_log(
    registrant: Annotated[str, typer.Option(help="DEA number of the registrant.")],
    out_path: Annotated[Path, typer.Option("--out", help="PDF file to write.")],
    vial: Annotated[str | None, typer.Option(help="One vial (e.g. V19-1); default: every vial that may be "
                                                  "drawn from, one page each.")] = None,
    form: Annotated[str, typer.Option(help="vial-log (one page per vial) or infusion (the blank infusion "
                                           "record with the vials on hand).")] = "vial-log",
    db: DbOption = None,
) -> None:
    """Print the downtime paper: a log per vial prefilled with its id (and QR code), product, lot,
    expiry, mL left and beyond-use date, or the blank infusion record. Each sheet says when it was
    printed and the last ledger entry (where paper begins). Blank forms, not ledger records."""
    from api.web.labels import paper_pdf
    from ledger.storage.store import utcnow

    which = {"vial-log": "vial-log", "infusion": "infusion-form", "infusion-form": "infusion-form"}.get(form)
    if which is None:
        _fail("--form is vial-log or infusion")
    if vial is not None and which != "vial-log":
        _fail("--vial goes with the vial log (--form vial-log)")
    _, ledger = _open(db)
    try:
        pdf, data = paper_pdf(ledger, registrant.strip().upper(), which, now=utcnow(), vial=vial)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    try:
        out_path.write_bytes(pdf)
    except OSError as exc:
        _fail(f"cannot write {out_path}: {exc.strerror or exc}")
    what = f"{len(data['vials'])} vial page(s)" if which == "vial-log" else "infusion record"
    last = "no entries" if data["last_seq"] is None else f"last entry #{data['last_seq']}"
    out.print(f"wrote {out_path} ({len(pdf):,} bytes): downtime {what} of {data['registrant']['dea_number']}, "
              f"{last}; blank forms, not ledger records", highlight=False)
