"""Commands of the ``csledger`` CLI for the HTTP API; registered on ``cli.app`` when ``cli`` is
imported.

``csledger staff set-password`` is the console bootstrap: the operator at the server sets the
password of a staff member (typically the administrator ``csledger init`` enrolled), who can then
log in over HTTP and manage everyone else's credentials there. Logins are not ledger entries;
the one entry written here is the registrant's root signing key (issue 17), enrolled with the
first administrator's password when none exists yet. Everyone else's signing key is approved
by a manager or administrator at sign-in, which the console cannot do.
"""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.main import (
    DEFAULT_ORIGINS,
    DEFAULT_RP_ID,
    DbOption,
    OriginOption,
    RpIdOption,
    _fail,
    _open,
    app,
    certify_first_report_key,
    enrol_root_key,
    out,
    print_root,
    read_password_stdin,
)

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
    rp_id: RpIdOption = DEFAULT_RP_ID,
    origin: OriginOption = None,
    db: DbOption = None,
) -> None:
    """Set a staff member's password from the server's console; prints a TOTP secret once when
    one is created (administrators and managers need one to log in). For an administrator of a
    registrant with no root signing key yet, also enrols the root under this password
    (--rp-id/--origin fix its WebAuthn relying party)."""
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.domain.errors import LedgerError
    from ledger.storage.authority import authority_at
    from ledger.storage.store import utcnow

    settings, ledger = _open(db, migrate_first=True)
    root = None
    try:
        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        member = auth.store.staff_by_username(dea.strip().upper(), username.strip().lower())
        if member is None:
            _fail(f"no staff member {username!r} at {dea}")
        password = read_password_stdin() if password_stdin else \
            typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        had_key = AuthStore.signing_record(auth.store.credential(member.registrant, member.staff_id)) is not None
        try:
            secret = auth.set_password(member, password, must_change=must_change, enroll_totp=enroll_totp)
            with ledger.reading() as conn:
                needs_root = not authority_at(conn, member.registrant).signing_required
            # A temporary password must not wrap the root: whoever set it could open the key.
            if needs_root and "administrator" in member.roles and not must_change:
                root = enrol_root_key(auth, member, password, rp_id=rp_id, origins=tuple(origin or DEFAULT_ORIGINS))
                certify_first_report_key(ledger, auth, member, password, settings.key_dir)
        except LedgerError as exc:
            _fail(str(exc))
        has_key = AuthStore.signing_record(auth.store.credential(member.registrant, member.staff_id)) is not None
    finally:
        ledger.dispose()
    out.print(f"password set for {member.username} ({member.staff_id}) at {member.registrant}; their sessions ended")
    if secret:
        out.print(f"TOTP secret (shown once; add it to an authenticator app): {secret}")
        out.print(f"TOTP URI: {auth.totp_uri(member, secret)}", soft_wrap=True)
    if root is not None:
        print_root(root)
    elif needs_root and "administrator" in member.roles:
        out.print(f"no root signing key yet at {member.registrant}: this password is temporary; once "
                  f"{member.username} has replaced it, run this command again without --must-change to enrol "
                  "the root with their password", highlight=False)
    elif not has_key:
        # The console cannot approve a credential: a manager or administrator does, at sign-in.
        lost = " (the one they had does not open with this password)" if had_key else ""
        out.print(f"{member.username} holds no signing key on this login{lost}: they enrol one when they sign in "
                  "(POST /v1/registrants/{dea}/me/signing-key), approved by a manager or administrator; "
                  "until then they can sign nothing".replace("{dea}", member.registrant), highlight=False)


@staff_app.command("demo-logins")
def demo_logins(db: DbOption = None) -> None:
    """Give every seeded staff member of a ``csledger demo`` database a login (one shared demo
    password; TOTP secrets printed for administrators and managers), keeping the signing key the
    demo stored with it. Refuses any registrant the demo did not register; staff enrolled later
    (over HTTP) are left alone."""
    import json

    from api.cli.demo import DEMO_PASSWORD, STAFF
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.integrity.canonical import format_time
    from ledger.integrity.staff_signatures import open_key
    from ledger.storage.store import entries_of_kind, utcnow

    seeded = ["avery", *(user for _, user, _ in STAFF)]
    settings, ledger = _open(db, migrate_first=True)
    try:
        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        with ledger.reading() as c:
            regs = entries_of_kind(c, "registrant_registered")
        if not regs:
            _fail("no demo staff found; run `csledger demo` first")
        for reg, canonical in regs:
            # The demo registers its clinics signed ``demo_seed``; `csledger init` never does.
            if json.loads(canonical)["signatures"][0]["auth_method"] != "demo_seed":
                _fail(f"{reg} was not registered by `csledger demo`; demo-logins only runs on demo data")
        out.print(f"every demo login's password: {DEMO_PASSWORD}")
        for reg, _ in regs:
            for username in seeded:
                member = auth.store.staff_by_username(reg, username)
                if member is None:
                    continue
                before = AuthStore.signing_record(auth.store.credential(reg, member.staff_id))
                secret = auth.set_password(member, DEMO_PASSWORD, must_change=False)
                after = AuthStore.signing_record(auth.store.credential(reg, member.staff_id))
                if before is not None and after is None and open_key(before, DEMO_PASSWORD) is not None:
                    # The demo's key still opens with the demo password: keep it (they sign with it).
                    auth.store.set_signing_key(reg, member.staff_id, before, format_time(utcnow()))
                roles = ", ".join(sorted(member.roles)) or "no role"
                extra = f"  TOTP secret {secret}" if secret else ""
                out.print(f"{reg} {username:8} {roles:20}{extra}")
    finally:
        ledger.dispose()
    out.print("TOTP code now: python -c \"import pyotp,sys; print(pyotp.TOTP(sys.argv[1]).now())\" <secret>")
