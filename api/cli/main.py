"""The ``csledger`` command line (typer). Parses, calls one service, renders; records no
clinical event itself (only ``demo`` does, as its seeded staff, through the same services)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ledger.domain.errors import InvalidInput, LedgerError

# Start-up time: every ``csledger`` run (``--help`` too) imports this module and the command
# modules at its end, so SQLAlchemy, pydantic-settings, the services, reportlab and FastAPI are
# imported inside the commands that use them, not here.

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, without SQLAlchemy's SQL and background link."""
    import subprocess

    if isinstance(exc, subprocess.CalledProcessError):
        said = (exc.stderr or b"")
        said = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        first = next((x.strip() for x in said.splitlines() if x.strip()), f"exit status {exc.returncode}")
        return f"{Path(str(exc.cmd[0])).name if exc.cmd else 'tool'} failed: {first}"
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip()
    return next((x.strip() for x in text.splitlines() if x.strip()), type(exc).__name__)


class _App(typer.Typer):
    """The CLI app: errors of the environment (a database that cannot be reached, a file that
    cannot be read, a tool that failed) end the command with one line and exit 2, never a
    traceback. Other exceptions are bugs and keep theirs."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            _environment_error(exc)  # re-raises a bug's exception, traceback and all
        sys.exit(2)


def _environment_error(exc: Exception) -> None:
    """Print ``exc`` as one line if it is an error of the environment (see ``_App``); else re-raise
    it. SQLAlchemy's exceptions are looked up only if a command imported SQLAlchemy: one that did
    not (``--help``, the witness commands) cannot have raised them, and need not pay its import."""
    import sqlite3
    import subprocess

    sa_exc = sys.modules.get("sqlalchemy.exc")
    db_errors = (sqlite3.Error, *((sa_exc.DBAPIError,) if sa_exc is not None else ()))
    url_errors = (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) if sa_exc is not None else ()
    if isinstance(exc, LedgerError):
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
    elif isinstance(exc, db_errors):
        err.print(f"[bold red]error:[/] database: {type(getattr(exc, 'orig', None) or exc).__name__}: "
                  f"{_one_line(exc)}", highlight=False)
    elif isinstance(exc, url_errors):
        err.print(f"[bold red]error:[/] database URL: {_one_line(exc)}", highlight=False)
    elif isinstance(exc, subprocess.CalledProcessError):
        err.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False)
    elif isinstance(exc, OSError):
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
    else:
        raise exc


app = _App(help="csledger: controlled-substance ledger for ketamine clinics.", no_args_is_help=True,
           pretty_exceptions_enable=False)

DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (overrides CSLEDGER_DATABASE_URL).")]


def _open(db: str | None, *, migrate_first: bool = False):
    from sqlalchemy.exc import DBAPIError

    from ledger.settings import get_settings
    from ledger.storage.log import attach
    from ledger.storage.store import Ledger, migrate

    settings = get_settings(database_url=db)
    url = settings.database_url
    if not migrate_first and url.startswith("sqlite") and _sqlite_file(url) is not None \
            and not _sqlite_file(url).exists():
        _fail(f"cannot read the ledger at {_shown(url)}: no such database file; run `csledger init` or pass --db")
    try:
        ledger = Ledger.open(url)
        with ledger.engine.connect():
            pass
    except LedgerError as exc:
        _fail(str(exc))
    except DBAPIError as exc:
        _fail(f"cannot open the database at {_shown(url)}: {_one_line(exc)}")
    if migrate_first:
        migrate(ledger.engine)
    attach(ledger, settings)  # every write signs a checkpoint in its transaction (issue 4)
    # Cheap alert rules run in the transaction of the entry that triggers them (issue 7); they
    # put themselves ahead of checkpoint signing, so a command's alerts are inside its checkpoint.
    from ledger.services.alerts import attach_alert_rules

    attach_alert_rules(ledger)
    return settings, ledger


def _sqlite_file(url: str) -> Path | None:
    import sqlalchemy as sa

    try:
        database = sa.engine.make_url(url).database
    except Exception:
        return None
    return Path(database) if database and database != ":memory:" else None


def _shown(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the configured URL"


def _require_registrant(ledger, dea: str) -> None:
    """Refuse a DEA number with no entries here (a typo must not read as an empty, clean ledger)."""
    from ledger.storage.store import tree_size

    with ledger.reading() as conn:
        known = tree_size(conn, dea) > 0
    if not known:
        ledger.dispose()
        _fail(f"registrant: no registrant with DEA number {dea} in this ledger")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def migrate(db: DbOption = None) -> None:
    """Bring the database schema to the latest migration."""
    _, ledger = _open(db, migrate_first=True)
    out.print("schema at head")
    ledger.dispose()


#: The WebAuthn relying party a registrant's root fixes unless told otherwise: a server on this
#: machine (``csledger serve``'s default port). In production: the clinic's DNS name behind HTTPS.
DEFAULT_RP_ID = "localhost"
DEFAULT_ORIGINS = ("http://localhost:8000", "http://127.0.0.1:8000")

RpIdOption = Annotated[str, typer.Option(
    "--rp-id", help="WebAuthn relying-party id fixed by the root credential (production: the clinic's DNS name "
                    "served over HTTPS).")]
OriginOption = Annotated[list[str] | None, typer.Option(
    "--origin", help="Origin passkey sign-ins come from (repeatable; default http://localhost:8000 and "
                     "http://127.0.0.1:8000).")]


def read_password_stdin() -> str:
    """One line of standard input, without its line ending (the password; never echoed)."""
    return sys.stdin.readline().rstrip("\r\n")


def enrol_root_key(auth, member, password: str, *, rp_id: str, origins: tuple[str, ...]) -> dict:
    """Enrol the registrant's ROOT credential: the administrator's password key under the
    password their login has now, stored with that login; returns the service's response.

    The console acts as the administrator themself (they typed the password), so the principal is
    the console's bootstrap one; the enrolment entry is signed by the new key."""
    from ledger.domain.principal import AuthMethod, Principal

    principal = Principal(member.registrant, member.staff_id, member.printed_name, AuthMethod.CONSOLE_BOOTSTRAP)
    return auth.enrol_signing_key(member, principal, password, rp_id=rp_id, origins=origins)


def print_root(res: dict) -> None:
    """The root credential's fingerprint and the line to pin it with the verifier keys."""
    out.print(f"root signing key of {res['staff_id']} enrolled (entry {res['seq']}): {res['fingerprint']}",
              highlight=False)
    out.print("keep this line with the pinned verifier keys (`csledger keys show` output, the file passed to "
              "`verify --pinned-keys`):", highlight=False)
    out.print(f"staff-root {res['fingerprint']}", highlight=False)


def certify_first_report_key(ledger, auth, member, password: str, key_dir: Path) -> None:
    """The registrant's first report key (issue 18), certified by the administrator just enrolled,
    so the first report made is signed. Their root key signs the ``report_key_certified`` entry."""
    from api.http.auth_store import AuthStore
    from ledger.domain.principal import AuthMethod, Principal
    from ledger.integrity import staff_signatures as ss
    from ledger.services.report_key import certify_report_key

    record = AuthStore.signing_record(auth.store.credential(member.registrant, member.staff_id))
    key = ss.open_key(record, password) if record is not None else None
    if key is None:  # cannot happen right after the root enrolment; say what to do rather than crash
        _fail("the administrator's signing key did not open; certify the report key with `csledger keys report-key`")
    admin = Principal(member.registrant, member.staff_id, member.printed_name, AuthMethod.CONSOLE_BOOTSTRAP,
                      signer=ss.PasswordKeySigner(key, record["credential_id"]))
    res = certify_report_key(ledger, admin, Path(key_dir))
    out.print(f"report key certified (entry {res['seq']}): {res['fingerprint']}; key file {res['path']}",
              highlight=False)


@app.command()
def init(
    dea: Annotated[str, typer.Option(help="The location's DEA registration number, e.g. AB1234563.")],
    name: Annotated[str, typer.Option(help="Registrant name as on the DEA registration.")],
    street: Annotated[str, typer.Option()],
    city: Annotated[str, typer.Option()],
    state: Annotated[str, typer.Option(help="Two-letter state code.")],
    postal_code: Annotated[str, typer.Option("--zip", help="ZIP code.")],
    time_zone: Annotated[str, typer.Option(help="IANA time zone of the clinic, e.g. America/New_York.")],
    admin_name: Annotated[str, typer.Option(help="Printed name of the first administrator.")],
    admin_username: Annotated[str, typer.Option(help="Login name of the first administrator.")],
    admin_password_stdin: Annotated[bool, typer.Option(
        "--admin-password-stdin", help="Read the administrator's password from standard input: sets their login "
                                       "and enrols the registrant's root signing key.")] = False,
    rp_id: RpIdOption = DEFAULT_RP_ID,
    origin: OriginOption = None,
    db: DbOption = None,
) -> None:
    """Migrate to head and register a registrant with its first administrator (with
    --admin-password-stdin: their login and the root signing key too)."""
    from ledger import services
    from ledger.domain.commands import AddressInput, RegisterRegistrant

    password = None
    if admin_password_stdin:
        from api.http.auth import check_password_rules

        password = read_password_stdin()
        try:  # before anything is recorded: a refused password must not leave a registrant without its root
            check_password_rules(password, username=admin_username.strip().lower(), printed_name=admin_name,
                                 field="admin_password")
        except LedgerError as exc:
            _fail(str(exc))
    settings, ledger = _open(db, migrate_first=True)
    try:
        res = services.register_registrant(ledger, RegisterRegistrant(
            dea_number=dea, name=name, address=AddressInput(street, city, state, postal_code),
            time_zone=time_zone, admin_printed_name=admin_name, admin_username=admin_username,
        ))
        out.print(f"registered {res['registrant']}: entries 0..{res['entries'][-1]['seq']}, "
                  f"administrator {res['admin_staff_id']}")
        if password is None:
            out.print(f"next: `csledger staff set-password --dea {res['registrant']} --username "
                      f"{admin_username.strip().lower()}` sets their login and enrols the root signing key "
                      "(from it on, every entry is signed by its people's own keys)", highlight=False)
            return
        from api.http.auth import Authenticator
        from api.http.auth_store import AuthStore
        from ledger.storage.store import utcnow

        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        member = auth.store.staff(res["registrant"], res["admin_staff_id"])
        secret = auth.set_password(member, password, must_change=False)
        out.print(f"password set for {member.username} ({member.staff_id})")
        if secret:
            out.print(f"TOTP secret (shown once; add it to an authenticator app): {secret}")
            out.print(f"TOTP URI: {auth.totp_uri(member, secret)}", soft_wrap=True)
        root = enrol_root_key(auth, member, password, rp_id=rp_id, origins=tuple(origin or DEFAULT_ORIGINS))
        print_root(root)
        certify_first_report_key(ledger, auth, member, password, settings.key_dir)
    except LedgerError as exc:
        _fail(str(exc))
    finally:
        ledger.dispose()


@app.command()
def verify(
    deep: Annotated[bool, typer.Option("--deep", help="Also re-canonicalize, check copied columns, rebuild projections.")] = False,
    registrant: Annotated[str | None, typer.Option(help="Only this registrant (DEA number).")] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="A signed checkpoint kept outside this database (e.g. `csledger witness latest`, or one saved "
             "from GET /checkpoint) that the entries must reach (repeatable).")] = None,
    pinned_keys: Annotated[Path | None, typer.Option(
        "--pinned-keys", help="The log's verifier keys kept outside this database (the output of `csledger keys "
                              "show`): every checkpoint must be signed by one. Default: CSLEDGER_PINNED_KEYS_FILE.")] = None,
    db: DbOption = None,
) -> None:
    """Check the hash chain and Merkle tree (and with --deep everything derived from it).
    Exits 1 and names the first bad entry on any integrity failure.

    With --checkpoint, also hold the ledger against checkpoints kept elsewhere: whoever holds the
    log's signing key can make a database agree with itself, but not with a copy they don't hold."""
    from rich.progress import Progress

    from ledger.services.verify import verify as run_verify
    from ledger.storage.store import entry_count

    settings, ledger = _open(db)
    try:
        with ledger.reading() as conn:
            total = entry_count(conn)
    except Exception as exc:  # no schema: say so plainly
        _fail(f"cannot read the ledger at {ledger.engine.url.render_as_string(hide_password=True)}: {type(exc).__name__}")
    held = []
    for path in checkpoint or []:
        try:
            held.append((f"--checkpoint {path}", path.read_bytes()))
        except OSError as exc:
            ledger.dispose()
            _fail(f"--checkpoint {path}: cannot read: {exc.strerror or exc}")
    from api.cli.integrity import check_pinned_for_verify, pinned_keys_for_verify, trust_line

    pinned = pinned_keys_for_verify(pinned_keys or settings.pinned_keys_file)
    keys = _patient_keys_for_verify(settings) if deep else None
    if registrant is not None:
        _require_registrant(ledger, registrant)
    with Progress(console=err, disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("verify --deep" if deep else "verify", total=total)
        try:
            report = run_verify(ledger, deep=deep, registrant=registrant, progress=lambda n: bar.advance(task, n),
                                patient_keys=keys, held_checkpoints=held)
        except InvalidInput as exc:
            ledger.dispose()
            _fail(str(exc))
    check_pinned_for_verify(ledger, pinned, report)
    ledger.dispose()
    if not report.ok:
        for p in report.problems:
            err.print(f"[bold red]FAIL[/] {p}", highlight=False)
        raise typer.Exit(1)
    for reg, size in report.registrants.items():
        out.print(f"ok {reg}: {size} entries, root {report.roots.get(reg, '-')}")
    for label, where in report.held.items():
        out.print(f"ok {label}: the entries reach its root ({where})", highlight=False)
    for line in report.staff_lines():  # issue 17: unsigned history once, signatures, root credential
        out.print(line, highlight=False)
    out.print(f"verified {report.entries} entries{' (deep)' if deep else ''}: OK")
    out.print(trust_line(pinned, report), highlight=False)  # last: on whose keys the result rests


def _patient_keys_for_verify(settings):
    """The patient key for ``verify --deep`` (to open the registry rows), or None with a note
    when none is configured; a configured key that cannot be read is an error."""
    from ledger.storage.patient_keys import PatientKeyError, PatientKeys

    try:
        return PatientKeys.from_settings(settings)
    except PatientKeyError as exc:
        if settings.patient_key or Path(settings.patient_key_file).exists():
            _fail(str(exc))
        err.print("[yellow]note:[/] no patient key configured (CSLEDGER_PATIENT_KEY or the key file): the patient "
                  "registry is checked against the entries without decrypting its rows", highlight=False)
        return None


def _check_patient_key_at_start(settings, ledger) -> None:
    """A wrong patient-data key is refused at start, not on the first infusion; a missing key is
    refused when the registry already holds patients (their names could not be read)."""
    from ledger.services import verify_patient_key
    from ledger.storage.patient_keys import PatientKeyError, PatientKeys
    from ledger.storage.store import has_entry_of_kind

    try:
        keys = PatientKeys.from_settings(settings)
    except PatientKeyError as exc:
        with ledger.reading() as conn:
            has_patients = has_entry_of_kind(conn, "patient_registered")
        if has_patients:
            _fail(f"{exc}; the patient registry cannot be read without it")
        err.print(f"[yellow]note:[/] {exc.reason}: patient endpoints will refuse until a key is configured",
                  highlight=False)
        return
    try:
        verify_patient_key(ledger, keys)
    except LedgerError as exc:
        _fail(f"{exc}; refusing to start")


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
) -> None:
    """Run the HTTP API (uvicorn) after migrating to head."""
    import uvicorn

    from api.http.app import create_app

    settings, ledger = _open(db, migrate_first=True)
    _check_patient_key_at_start(settings, ledger)
    log = ledger.transparency_log  # issue 4: refuse appends if a witness saw more; push to witnesses
    for reg, results in log.check_rollback().items():
        for r in results:
            if not r.ok:
                err.print(f"[yellow]witness[/] {reg} {r.witness}: {r.detail}", highlight=False)
    from ledger.services.startup_check import start_chain_checks  # issue 16: check before writing

    start_chain_checks(ledger, settings, say=lambda m: err.print(f"[bold red]chain[/] {m}", highlight=False))
    log.start_pusher()
    uvicorn.run(create_app(ledger, settings), host=host or settings.host, port=port or settings.port,
                log_level="info", access_log=False)  # the app writes its own structured access log


@app.command()
def bench(
    entries: Annotated[int, typer.Option(help="Entries to append (one command each).")] = 2000,
    verify_entries: Annotated[int, typer.Option(help="Entries in the verify run.")] = 20000,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the throwaway databases.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Benchmark against this (empty) PostgreSQL URL instead of a fresh SQLite file.")] = None,
    production: Annotated[bool, typer.Option("--production/--ledger-only", help="With checkpoint signing and alert rules, as served (default), or the bare ledger path.")] = True,
    staff_signatures: Annotated[bool, typer.Option("--staff-signatures/--no-staff-signatures", help="Also measure staff signatures (issue 17): signing and verifying costs, and a signed chain beside the unsigned one.")] = True,
) -> None:
    """Measure durable appends/s and verify entries/s against a bare sqlite3+hashlib loop,
    and (by default) what staff signatures cost, on a signed chain beside the unsigned one."""
    from api.cli.bench import run_bench

    run_bench(out, entries=entries, verify_entries=verify_entries, workdir=workdir, pg_url=db, production=production,
              staff_signatures=staff_signatures)


@app.command()
def demo(
    db: DbOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic data set.")] = 1,
) -> None:
    """Build a realistic demo data set on a fresh database, then verify it deeply."""
    from api.cli.demo import run_demo
    from ledger.settings import get_settings

    settings = get_settings(database_url=db)
    try:
        run_demo(settings, seed=seed, console=out)
    except LedgerError as exc:
        _fail(str(exc))



@app.command()
def backup(
    out_path: Annotated[Path, typer.Option("--out", help="Backup file to write (must not exist).")],
    db: DbOption = None,
) -> None:
    """Consistent online backup: SQLite's backup API, or pg_dump (custom format) for PostgreSQL.
    Prints the tree size and root of every registrant so the restore can be checked against it."""
    from ledger.services.backup import backup_database
    from ledger.settings import get_settings

    settings = get_settings(database_url=db)
    try:
        roots = backup_database(settings.database_url, out_path)
    except LedgerError as exc:
        _fail(str(exc))
    for reg, (size, root) in roots.items():
        out.print(f"{reg}: {size} entries, root {root}")
    out.print(f"backup written to {out_path}")


@app.command()
def restore(
    from_path: Annotated[Path, typer.Option("--from", help="Backup file made by `csledger backup`.")],
    db: DbOption = None,
) -> None:
    """Restore a backup into an EMPTY database (never over an existing ledger), then verify it."""
    from ledger.services.backup import restore_database
    from ledger.settings import get_settings

    settings = get_settings(database_url=db)
    try:
        roots = restore_database(from_path, settings.database_url)
    except LedgerError as exc:
        _fail(str(exc))
    for reg, (size, root) in roots.items():
        out.print(f"{reg}: {size} entries, root {root}")
    out.print("restored and verified; run `csledger verify --deep` for the full check")


# Commands defined in their own modules register themselves on ``app`` when imported.
from api.cli import alerts, clinic, integrity, reports, staff  # noqa: E402,F401
