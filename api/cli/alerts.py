"""``csledger alerts``: scan, list, acknowledge, resolve, record the DEA registration expiry,
print the alert report. Registered on ``cli.app`` when ``cli`` is imported.

Acknowledging and resolving are signed ledger entries, so the command line authenticates the
staff member the way the HTTP API does (username, password on standard input or a prompt, TOTP
code for managers); it never takes a typed name.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from api.cli.main import DbOption, _fail, _open, _require_registrant, app, out

alerts_app = typer.Typer(help="Discrepancy alerts, deadlines and diversion signals.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")

DeaOption = Annotated[str, typer.Option("--dea", help="The registrant's DEA number.")]


def _open_alerts(db: str | None):
    from ledger.services.alerts import attach_alert_rules

    settings, ledger = _open(db)
    attach_alert_rules(ledger)
    return settings, ledger


def _principal(ledger, settings, dea: str, username: str, password_stdin: bool, totp: str | None):
    """Authenticate a staff member at the console (same checks and lock-out as an HTTP login)."""
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.storage.store import utcnow

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else typer.prompt("Password", hide_input=True)
    auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
    return auth.console_principal(dea, username, password, totp)


@alerts_app.command("scan")
def scan_cmd(
    dea: Annotated[str | None, typer.Option("--dea", help="Only this registrant (default: every one).")] = None,
    notify: Annotated[bool, typer.Option("--notify/--no-notify", help="Send deadline e-mails and webhooks.")] = True,
    db: DbOption = None,
) -> None:
    """Run every alert rule (statistics included) and raise what is new; meant for a schedule
    (cron, systemd timer). Never holds a registrant's lock while computing."""

    from ledger.domain.errors import LedgerError
    from ledger.services.alerts import scan
    from ledger.services.notify import Notifier
    from ledger.storage.store import registrants_with_entries

    settings, ledger = _open_alerts(db)
    notifier = Notifier() if notify else None
    failed = False
    try:
        with ledger.reading() as conn:
            regs = [dea.strip().upper()] if dea else registrants_with_entries(conn)
        for reg in regs:
            try:
                res = scan(ledger, reg, notifier=notifier)
            except LedgerError as exc:
                _fail(str(exc))
            out.print(f"{reg}: {len(res.raised)} new alert(s) {' '.join(res.raised)}".rstrip())
            for alert_id, channel in res.notified:
                out.print(f"  notified {alert_id} by {channel}")
            for f in res.failures:
                failed = True
                out.print(f"  [yellow]notification failed[/] {f}", highlight=False)
    finally:
        ledger.dispose()
    if failed:
        raise typer.Exit(3)


@alerts_app.command("list")
def list_cmd(
    dea: DeaOption,
    status: Annotated[str, typer.Option(help="open (default: not yet resolved), acknowledged, resolved or all.")] = "open",
    rule: Annotated[str | None, typer.Option(help="Only this rule, e.g. late_entry.")] = None,
    severity: Annotated[str | None, typer.Option(help="Only this severity.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only alerts about this staff id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    db: DbOption = None,
) -> None:
    """List alerts, newest first."""
    from ledger.services.alerts import list_alerts

    if status not in ("open", "acknowledged", "resolved", "all"):
        _fail("--status must be open, acknowledged, resolved or all")
    _, ledger = _open(db)
    _require_registrant(ledger, dea.strip().upper())
    try:
        rows = list_alerts(ledger, dea.strip().upper(), status=None if status == "all" else status, rule=rule,
                           severity=severity, subject=subject)
    finally:
        ledger.dispose()
    if as_json:
        for r in rows:
            out.print(json.dumps(r, sort_keys=True), highlight=False, markup=False, soft_wrap=True)
        return
    if not rows:
        out.print(f"no {'' if status == 'all' else status + ' '}alerts")
        return
    from rich.table import Table

    t = Table("id", "severity", "rule", "status", "raised", "about", "evidence", "summary")
    for r in rows:
        t.add_row(r["alert_id"], r["severity"], r["rule"], r["status"], r["raised_at"][:16].replace("T", " "),
                  ", ".join(r["subjects"]), ", ".join(str(s) for s in r["evidence_seqs"][:8])
                  + (" ..." if len(r["evidence_seqs"]) > 8 else ""), r["summary"])
    out.print(t)


def _close(op_name: str, dea: str, alert: str, username: str, category: str, explanation: str,
           password_stdin: bool, totp: str | None, db: str | None) -> None:
    from ledger.domain.errors import LedgerError
    from ledger.services import alerts as alert_service

    settings, ledger = _open_alerts(db)
    dea = dea.strip().upper()
    try:
        principal = _principal(ledger, settings, dea, username, password_stdin, totp)
        res = getattr(alert_service, op_name)(ledger, principal, alert.strip().upper(), category, explanation)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    verb = "acknowledged" if op_name == "acknowledge_alert" else "resolved"
    out.print(f"{res['alert_id']} {verb} by {principal.printed_name} (entry {res['entries'][0]['seq']})")


CategoryOption = Annotated[str, typer.Option(help="documentation_error, explained, policy_exception, reported_to_dea, "
                                                  "diversion_suspected, false_positive or other.")]
ExplanationOption = Annotated[str, typer.Option(help="What was found and done.")]
UserOption = Annotated[str, typer.Option(help="Your login name (manager or compliance officer).")]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]
TotpOption = Annotated[str | None, typer.Option(help="TOTP code (managers need one).")]


@alerts_app.command("ack")
def ack_cmd(dea: DeaOption, alert: Annotated[str, typer.Option(help="Alert id, e.g. AL57.")], username: UserOption,
            category: CategoryOption, explanation: ExplanationOption, password_stdin: PasswordStdin = False,
            totp: TotpOption = None, db: DbOption = None) -> None:
    """Acknowledge an alert (it stays open until resolved)."""
    _close("acknowledge_alert", dea, alert, username, category, explanation, password_stdin, totp, db)


@alerts_app.command("resolve")
def resolve_cmd(dea: DeaOption, alert: Annotated[str, typer.Option(help="Alert id, e.g. AL57.")], username: UserOption,
                category: CategoryOption, explanation: ExplanationOption, password_stdin: PasswordStdin = False,
                totp: TotpOption = None, db: DbOption = None) -> None:
    """Resolve an alert with its category and explanation."""
    _close("resolve_alert", dea, alert, username, category, explanation, password_stdin, totp, db)


@alerts_app.command("registration-expiry")
def registration_expiry_cmd(dea: DeaOption,
                            expires_on: Annotated[str, typer.Option(help="Expiry of the DEA registration, YYYY-MM-DD.")],
                            username: Annotated[str, typer.Option(help="Your login name (administrator, manager or compliance officer).")],
                            password_stdin: PasswordStdin = False, totp: TotpOption = None, db: DbOption = None) -> None:
    """Record the registrant's DEA registration expiry (again after each renewal)."""
    from ledger.domain.errors import LedgerError
    from ledger.services.alerts import record_registration_expiry

    settings, ledger = _open_alerts(db)
    dea = dea.strip().upper()
    try:
        principal = _principal(ledger, settings, dea, username, password_stdin, totp)
        res = record_registration_expiry(ledger, principal, expires_on)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out.print(f"DEA registration {dea} expires on {res['expires_on']} (entry {res['entries'][0]['seq']})")


@alerts_app.command("report")
def report_cmd(dea: DeaOption, start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")],
               end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD.")],
               out_path: Annotated[Path, typer.Option("--out", help="PDF file to write.")],
               paper: Annotated[str, typer.Option(help="letter or a4.")] = "letter", db: DbOption = None) -> None:
    """The alert report for a period: alerts raised, their evidence, and how each was closed."""
    from reports.base import build_report  # finds the "alerts" kind in reports/alerts_pdf.py
    from reports.errors import ReportError

    _, ledger = _open(db)
    try:
        pdf, data = build_report(ledger, "alerts", dea.strip().upper(), start, end, paper=paper,
                                 now=datetime.now(UTC))
    except ReportError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()
    out_path.write_bytes(pdf)
    out.print(f"wrote {out_path}: {len(data['figures']['alerts'])} alert(s), tree size {data['state']['tree_size']}")
