"""``csledger-witness``: an independent witness for registrants' logs (C2SP tlog-witness).

A witness is run by someone other than the clinic's server operator (the compliance officer's
machine, a sister clinic, a regulator). It holds its own Ed25519 cosigning key and its own state
file, never the clinic's database, and answers one request, ``POST <prefix>/add-checkpoint``:

* the checkpoint must be signed by a log key the witness operator added for that origin
  (``csledger witness add-log``), else 404 (unknown origin) or 403 (no trusted signature);
* ``old`` must equal the size the witness last cosigned for that origin, else 409 with its own
  size (``text/x.tlog.size``), so a log cannot skip past what was witnessed;
* the consistency proof from that size must verify against the witnessed root, else 422; at an
  equal size the roots must be equal, else 409.

Only then is the new checkpoint persisted (atomically, before answering) and cosigned
(``cosignature/v1``). A log that rewrote its history, even one holding its own signing key,
cannot obtain a cosignature for the rewritten tree from a witness that saw the original.

Files in the witness folder: ``witness.key`` (signer key string, mode 0600) and ``state.json``
(per origin: trusted log keys, last cosigned size, root and note). A file lock serialises the
check-and-persist across threads and processes (the race the spec warns about).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_signature_lines,
    cosign,
    open_note,
    split_note,
)

MAX_REQUEST = 1 << 20
DEFAULT_PORT = 7380
MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")


class WitnessError(Exception):
    """The witness folder is missing or broken (not a request error)."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer to an add-checkpoint request."""

    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, message: str) -> Answer:
        return cls(status, "text/plain; charset=utf-8", (message.rstrip("\n") + "\n").encode())


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself must survive a crash before we answer 200
    finally:
        os.close(dfd)


class Witness:
    """A witness over one folder (its key and its state)."""

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)
        self.key_path = self.dir / "witness.key"
        self.state_path = self.dir / "state.json"
        self._lock = threading.Lock()
        try:
            self.signer = Signer.from_string(self.key_path.read_text().strip())
        except FileNotFoundError:
            raise WitnessError(f"{self.dir} is not a witness folder (no witness.key); run `csledger witness init`") from None
        except UnicodeDecodeError:
            raise WitnessError(f"{self.key_path} is not a witness signer key (not text)") from None
        except OSError as exc:
            raise WitnessError(f"{self.dir} is not a witness folder ({exc.strerror or exc})") from None
        except NoteError as exc:
            raise WitnessError(f"{self.key_path} is not a witness signer key ({exc})") from None
        if self.signer.sig_type != SIG_COSIGNATURE_V1:
            raise WitnessError(f"{self.key_path} is not a cosignature/v1 key")

    @classmethod
    def init(cls, directory: Path | str, name: str) -> Witness:
        """Create a witness folder with a new cosigning key named ``name``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = Signer.generate(name, SIG_COSIGNATURE_V1)
        try:
            fd = os.open(d / "witness.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise WitnessError(f"{d} already holds a witness key") from None
        try:
            os.write(fd, (signer.to_string() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        _write_atomic(d / "state.json", json.dumps({"name": name, "logs": {}}, indent=1).encode())
        return cls(d)

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier()

    # -- state ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        with self._lock, open(self.dir / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"name": self.signer.name, "logs": {}}
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise WitnessError(f"{self.state_path} is damaged ({exc}); restore it from a backup") from None
        if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
            raise WitnessError(f"{self.state_path} is damaged (not a witness state); restore it from a backup")
        return state

    def state(self) -> dict:
        with self._locked():
            return self._read()

    def add_log(self, vkey: str) -> str:
        """Trust a log's verifier key for its origin (the key's name). Returns the origin."""
        v = Verifier.from_string(vkey)
        if v.sig_type != SIG_ED25519:
            raise NoteError("a log key must be an Ed25519 (type 0x01) verifier key")
        with self._locked():
            st = self._read()
            log = st["logs"].setdefault(v.name, {"keys": [], "size": 0, "root": None, "checkpoint": None})
            if v.to_string() not in log["keys"]:
                log["keys"].append(v.to_string())
            _write_atomic(self.state_path, json.dumps(st, indent=1).encode())
        return v.name

    def latest(self, origin: str) -> str | None:
        """The last checkpoint this witness cosigned for ``origin`` (note with its cosignature)."""
        log = self.state()["logs"].get(origin)
        return log["checkpoint"] if log else None

    # -- add-checkpoint ------------------------------------------------------------------

    def add_checkpoint(self, body: bytes, *, now: int | None = None) -> Answer:
        """Handle one C2SP tlog-witness add-checkpoint request body."""
        if len(body) > MAX_REQUEST:
            return Answer.text(413, "request too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Answer.text(400, "request is not UTF-8")
        head, sep, note = text.partition("\n\n")
        if not sep:
            return Answer.text(400, "request has no empty line before the checkpoint")
        lines = head.split("\n")
        m = _OLD.fullmatch(lines[0])
        if not m:
            return Answer.text(400, "first line must be 'old <size>'")
        old = int(m.group(1))
        if len(lines) - 1 > MAX_PROOF_LINES:
            return Answer.text(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof = []
        for i, b64 in enumerate(lines[1:]):
            try:
                h = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                return Answer.text(400, f"proof line {i + 1} is not base64")
            if len(h) != 32 or base64.b64encode(h).decode() != b64:
                return Answer.text(400, f"proof line {i + 1} is not one canonical SHA-256 hash")
            proof.append(h)
        try:
            cp_text, _ = split_note(note)
            cp = Checkpoint.parse(cp_text)
        except NoteError as exc:
            return Answer.text(400, f"malformed checkpoint: {exc}")
        with self._locked():
            st = self._read()
            log = st["logs"].get(cp.origin)
            if log is None:
                return Answer.text(404, f"unknown log origin {cp.origin}")
            try:
                open_note(note, [Verifier.from_string(k) for k in log["keys"]])
            except UnverifiedNoteError:
                return Answer.text(403, "no signature from a trusted key of this log")
            except NoteError as exc:
                return Answer.text(403, f"signature does not verify: {exc}")
            if old > cp.size:
                return Answer.text(400, f"old size {old} is larger than the checkpoint size {cp.size}")
            if old != log["size"]:
                return Answer(409, "text/x.tlog.size", f"{log['size']}\n".encode())
            witnessed_root = base64.b64decode(log["root"]) if log["root"] else None
            if old == cp.size and old > 0:
                if proof:
                    return Answer.text(422, "sizes are equal; the proof must be empty")
                if witnessed_root != cp.root:
                    # The same size with another root: a fork. Refused, and answered with our size.
                    return Answer(409, "text/x.tlog.size", f"{log['size']}\n".encode())
            elif old == 0:
                if proof:
                    return Answer.text(422, "old size is 0; the proof must be empty")
            else:
                try:
                    merkle.verify_consistency(old, cp.size, proof, witnessed_root, cp.root)
                except merkle.ProofError as exc:
                    return Answer.text(422, f"consistency proof from {old} does not verify: {exc}")
            ts = int(time.time()) if now is None else now
            line = cosign(cp, self.signer, ts)
            log.update(size=cp.size, root=base64.b64encode(cp.root).decode(),
                       checkpoint=add_signature_lines(note, [line]).decode())
            _write_atomic(self.state_path, json.dumps(st, indent=1).encode())  # persist before answering
        return Answer(200, "text/plain; charset=utf-8", line.encode())


# --------------------------------------------------------------------------- HTTP server


def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``witness``: ``POST /add-checkpoint``, ``GET /latest?origin=``,
    ``GET /healthz``. ``port=0`` picks a free port (``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

        def _send(self, a: Answer) -> None:
            self.send_response(a.status)
            self.send_header("Content-Type", a.content_type)
            self.send_header("Content-Length", str(len(a.body)))
            self.end_headers()
            self.wfile.write(a.body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if urlparse(self.path).path.rstrip("/") != "/add-checkpoint":
                self._send(Answer.text(404, "not found"))
                return
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(Answer.text(411, "Content-Length required"))
                return
            if n < 0 or n > MAX_REQUEST:
                self.close_connection = True
                self._send(Answer.text(413, "request too large"))
                return
            body = self.rfile.read(n)
            try:
                answer = witness.add_checkpoint(body)
            except Exception as exc:  # never leak a traceback to a client; the state is untouched
                answer = Answer.text(500, f"internal error ({type(exc).__name__})")
            self._send(answer)

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == "/healthz":
                self._send(Answer.text(200, witness.verifier.to_string()))
            elif url.path == "/latest":
                origin = parse_qs(url.query).get("origin", [""])[0]
                note = witness.latest(origin)
                self._send(Answer(200, "text/plain; charset=utf-8", note.encode()) if note
                           else Answer.text(404, f"nothing cosigned for {origin!r}"))
            else:
                self._send(Answer.text(404, "not found"))

        def log_message(self, fmt: str, *args) -> None:  # quiet by default; the CLI prints a line
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a witness server on a daemon thread; return it and its URL (for tests and the demo)."""
    server = make_server(witness, host, port)
    threading.Thread(target=server.serve_forever, name="witness", daemon=True).start()
    h, p = server.server_address[:2]
    return server, f"http://{h}:{p}"
