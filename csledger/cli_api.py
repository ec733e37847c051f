"""Commands of the ``csledger`` CLI for the HTTP API; registered on ``cli.app`` when ``cli`` is
imported.

``csledger staff set-password`` is the console bootstrap: the operator at the server sets the
password of a staff member (typically the administrator ``csledger init`` enrolled), who can then
log in over HTTP and manage everyone else's credentials there. Credentials are not ledger
entries; nothing here writes to the ledger.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .cli import DbOption, _fail, _open, app, out

staff_app = typer.Typer(help="Staff logins for the HTTP API (console bootstrap).", no_args_is_help=True)
app.add_typer(staff_app, name="staff")


@staff_app.command("set-password")
def set_password(
    dea: Annotated[str, typer.Option(help="The registrant's DEA number.")],
    username: Annotated[str, typer.Option(help="The staff member's login name at that registrant.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    enroll_totp: Annotated[bool | None, typer.Option(
        "--totp/--no-totp", help="Create a new TOTP secret (default: when the roles need one and none exists).")] = None,
    must_change: Annotated[bool, typer.Option(help="Make the owner change it at first login.")] = False,
    db: DbOption = None,
) -> None:
    """Set a staff member's password from the server's console; prints a TOTP secret once when
    one is created (administrators and managers need one to log in)."""
    from .api.auth import Authenticator
    from .api.auth_store import AuthStore
    from .ledger.errors import LedgerError
    from .ledger.store import utcnow

    settings, ledger = _open(db, migrate_first=True)
    try:
        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        member = auth.store.staff_by_username(dea.strip().upper(), username.strip().lower())
        if member is None:
            _fail(f"no staff member {username!r} at {dea}")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        try:
            secret = auth.set_password(member, password, must_change=must_change, enroll_totp=enroll_totp)
        except LedgerError as exc:
            _fail(str(exc))
    finally:
        ledger.dispose()
    out.print(f"password set for {member.username} ({member.staff_id}) at {member.registrant}; their sessions ended")
    if secret:
        out.print(f"TOTP secret (shown once; add it to an authenticator app): {secret}")
        out.print(f"TOTP URI: {auth.totp_uri(member, secret)}", soft_wrap=True)
