"""``csledger-witness`` (also ``csledger witness``): run an independent witness (C2SP
tlog-witness) with its own key and state folder, on a machine the clinic's server operator does
not control. Imports only ``witness.server`` and ``ledger.integrity``."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(help="Run an independent witness (C2SP tlog-witness) with its own key and state.",
                  no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


WitnessDir = Annotated[str, typer.Option("--dir", help="The witness folder (its key and state file).")]


def _witness(directory: str):
    from witness.server import Witness, WitnessError

    try:
        return Witness(directory)
    except WitnessError as exc:
        _fail(str(exc))


@app.command("init")
def witness_init(directory: WitnessDir,
                 name: Annotated[str, typer.Option(help="The witness's key name, e.g. witness.sister-clinic.example.")]) -> None:
    """Create a witness folder with a new cosigning key (mode 0600)."""
    from ledger.integrity.checkpoints import NoteError
    from witness.server import Witness, WitnessError

    try:
        w = Witness.init(directory, name)
    except (WitnessError, NoteError) as exc:
        _fail(str(exc))
    out.print(w.verifier.to_string(), highlight=False)
    out.print(f"  fingerprint {w.verifier.fingerprint}", highlight=False)


@app.command("add-log")
def witness_add_log(directory: WitnessDir,
                    vkey: Annotated[str, typer.Option("--vkey", help="The log's verifier key (csledger keys show).")]) -> None:
    """Trust a log's verifier key; its name is the log's origin. Check its fingerprint out of band."""
    from ledger.integrity.checkpoints import NoteError, Verifier
    from witness.server import WitnessError

    w = _witness(directory)
    try:
        origin = w.add_log(vkey)
    except (NoteError, WitnessError) as exc:
        _fail(str(exc))
    out.print(f"witnessing {origin} with key {Verifier.from_string(vkey).fingerprint}", highlight=False)


@app.command("show")
def witness_show(directory: WitnessDir) -> None:
    """Print the witness's verifier key and what it last cosigned for each log."""
    from witness.server import WitnessError

    w = _witness(directory)
    try:
        logs = w.state()["logs"]
    except WitnessError as exc:
        _fail(str(exc))
    out.print(w.verifier.to_string(), highlight=False)
    out.print(f"  fingerprint {w.verifier.fingerprint}", highlight=False)
    for origin, log in sorted(logs.items()):
        out.print(f"{origin}: cosigned size {log['size']}, {len(log['keys'])} log key(s)", highlight=False)


@app.command("latest")
def witness_latest(directory: WitnessDir, origin: Annotated[str, typer.Option(help="The log's origin.")]) -> None:
    """Print the last checkpoint this witness cosigned for ``origin`` (for verify-bundle --checkpoint)."""
    from witness.server import WitnessError

    try:
        note = _witness(directory).latest(origin)
    except WitnessError as exc:
        _fail(str(exc))
    if not note:
        _fail(f"this witness has cosigned nothing for {origin}")
    typer.echo(note, nl=False)


@app.command("serve")
def witness_serve(directory: WitnessDir,
                  host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
                  port: Annotated[int, typer.Option(help="Port.")] = 7380) -> None:  # witness.DEFAULT_PORT
    """Serve ``POST /add-checkpoint`` (C2SP tlog-witness) until interrupted."""
    from witness.server import make_server

    w = _witness(directory)
    server = make_server(w, host, port)
    h, p = server.server_address[:2]
    err.print(f"witness {w.verifier.name} listening on http://{h}:{p}", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    """The ``csledger-witness`` console script."""
    app(prog_name="csledger-witness")


if __name__ == "__main__":
    main()
