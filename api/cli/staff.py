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

from api.cli.main import DbOption, _fail, _open, app, out

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
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.domain.errors import LedgerError
    from ledger.storage.store import utcnow

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


#: The password every demo login gets from ``csledger staff demo-logins`` (demo data only).
DEMO_PASSWORD = "calm waters demo 2026"


@staff_app.command("demo-logins")
def demo_logins(db: DbOption = None) -> None:
    """Give every seeded staff member of a ``csledger demo`` database a login (one shared demo
    password; TOTP secrets printed for administrators and managers). Refuses any registrant whose
    staff were not seeded by the demo."""
    import json

    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.storage.store import entries_of_kind, utcnow

    settings, ledger = _open(db, migrate_first=True)
    try:
        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        with ledger.reading() as c:
            regs = entries_of_kind(c, "staff_enrolled")
        staff: dict[str, list[str]] = {}
        seeded: set[str] = set()
        for reg, canonical in regs:
            data = json.loads(canonical)
            method = data["signatures"][0]["auth_method"]
            if method not in ("demo_seed", "console_bootstrap"):  # the first admin is enrolled at init
                _fail(f"{reg} holds staff not seeded by `csledger demo`; demo-logins only runs on demo data")
            seeded |= {reg} if method == "demo_seed" else set()
            staff.setdefault(reg, []).append(data["username"])
        if not staff or set(staff) != seeded:
            _fail("no demo staff found; run `csledger demo` first")
        out.print(f"every demo login's password: {DEMO_PASSWORD}")
        for reg, users in staff.items():
            for username in users:
                member = auth.store.staff_by_username(reg, username)
                secret = auth.set_password(member, DEMO_PASSWORD, must_change=False)
                roles = ", ".join(sorted(member.roles)) or "no role"
                extra = f"  TOTP secret {secret}" if secret else ""
                out.print(f"{reg} {username:8} {roles:20}{extra}")
    finally:
        ledger.dispose()
    out.print("TOTP code now: python -c \"import pyotp,sys; print(pyotp.TOTP(sys.argv[1]).now())\" <secret>")
