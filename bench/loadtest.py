"""A clinic network's mixed workload over HTTP, for the load run and the crash tests (issue 8).

``build_network`` registers N clinics (registrants) with their staff, product, supplier, one
patient and logins, straight through the services (setup is not measured). ``ServerProcess``
runs ``csledger serve`` as a child process (so it can be SIGKILLed and its memory read from
``/proc``). ``ClinicClient`` is one workstation at one clinic: it logs in and then, in a closed
loop, records infusions (the witness signs on the same device, then the administration with its
witnessed waste is sent), receipts when its vials run out, and reads what nurses and compliance
officers read: stock on hand, vial lists, entry pages, inclusion proofs and the accountability
audit.

Every command carries an ``Idempotency-Key``. When the server is unreachable (killed, restarting,
its database down) the client keeps retrying **the same request with the same key** until it is
answered, exactly what a workstation must do when it cannot know whether its last command
committed, and reports each acknowledged command (``on_ack``) so a crash test can check that every
2xx it saw is in the ledger exactly once.

``run_load`` drives the workload for a duration against a fresh database and returns
throughput, p50/p99 per operation, errors and the server's memory over time; the command-line
front end is ``bench/load_network.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    CountLineInput,
    EnrollStaff,
    RegisterPatient,
    RegisterPrescriber,
    RegisterRegistrant,
    StartCount,
    SubmitCount,
    TakeInventory,
)
from ledger.domain.identifiers import dea_check_digit
from ledger.domain.principal import AuthMethod, Principal, Role
from ledger.settings import get_settings
from ledger.storage.patient_keys import PatientKeys
from ledger.storage.store import Ledger, migrate, utcnow

NDC = "67457-0001-10"  # ketamine HCl 50 mg/mL, 10 mL vials, carton of 10 (Mylan; FDA NDC Directory)
PASSWORD = "quiet harbor lamps 2026"
CLINIC_TZ = ZoneInfo("America/Chicago")  # every load clinic's time zone (build_network)
ML_PER_INFUSION = "1.00"  # drawn; 0.80 given, 0.20 wasted in front of the witness
INFUSIONS_PER_VIAL = 9  # a 10 mL vial; the last mL stays as the margin a count would find

#: Operation weights of one workstation's loop (infusions dominate a ketamine clinic's day;
#: receipts also happen whenever a workstation runs out of vials).
DEFAULT_MIX: dict[str, int] = {
    "infusion": 80, "receipt": 8, "stock": 32, "vials": 24, "entries": 20, "proof": 24, "audit": 8, "login": 1,
}
COMMANDS = frozenset({"infusion", "receipt"})


def dea_number(i: int) -> str:
    """A valid DEA number (registrant type B, a hospital/clinic) for clinic ``i``."""
    body = f"{700000 + i:06d}"
    return f"B{chr(ord('A') + i % 26)}{body}{dea_check_digit(body)}"


@dataclass
class Clinic:
    dea: str
    supplier_id: str
    patient_id: str
    workstations: int

    def nurse(self, w: int) -> str:
        return f"nurse{w}"

    def witness(self, w: int) -> str:
        return f"nurse{(w + 1) % (self.workstations + 1)}"


@dataclass
class Network:
    url: str
    folder: Path
    patient_key: str
    clinics: list[Clinic]

    def server_env(self) -> dict[str, str]:
        return {**os.environ, "CSLEDGER_KEY_DIR": str(self.folder / "keys"), "CSLEDGER_PATIENT_KEY": self.patient_key,
                "CSLEDGER_ORIGIN_PREFIX": "load.csledger.test"}


def build_network(url: str, folder: Path, *, clinics: int, workstations: int) -> Network:
    """Register ``clinics`` registrants, each with ``workstations + 1`` nurses (the extra one so
    every workstation has a second person to witness), a compliance officer, the ketamine
    product, a supplier and one patient. Checkpoints are signed from the first entry on."""
    from api.http.auth import Authenticator
    from api.http.auth_store import AuthStore
    from ledger.storage.log import attach

    folder.mkdir(parents=True, exist_ok=True)
    patient_key = base64.b64encode(secrets.token_bytes(32)).decode()
    net = Network(url, folder, patient_key, [])
    settings = get_settings(database_url=url, key_dir=folder / "keys", patient_key=patient_key,
                            origin_prefix="load.csledger.test")
    ledger = Ledger.open(url)
    try:
        migrate(ledger.engine)
        attach(ledger, settings)
        auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
        keys = PatientKeys.from_base64(patient_key)
        for i in range(clinics):
            dea = dea_number(i)
            res = services.register_registrant(ledger, RegisterRegistrant(
                dea, f"Clinic {i:02d}", AddressInput(f"{i + 1} Main St", "Austin", "TX", "78701"), "America/Chicago",
                f"Admin {i:02d}", "admin"))
            admin = Principal(dea, res["admin_staff_id"], f"Admin {i:02d}", AuthMethod.CONSOLE_BOOTSTRAP)
            services.add_product(ledger, admin, AddProduct(NDC, "Ketamine HCl injection 50 mg/mL", "7285", "III",
                                                           "injection", "50.00", "10.00"))
            supplier = services.add_supplier(ledger, admin, AddSupplier(
                "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
                registration_expires_on="2031-06-30", schedules=("2", "2N", "3", "3N", "4", "5"),
                authorized_trading_partner=True))["supplier_id"]
            # The prescriber the infusions name (issue 19: an administration names a registered one).
            services.register_prescriber(ledger, admin, RegisterPrescriber(
                "Dr. Fran Prescriber", "FB7654329", "TX", ("3N", "4", "5"), "2031-06-30", "TX-7654329", "TX"))
            people = [(f"Nurse {i:02d}-{n}", f"nurse{n}", (Role.NURSE.value,)) for n in range(workstations + 1)]
            people.append((f"Compliance {i:02d}", "compliance", (Role.COMPLIANCE_OFFICER.value,)))
            staff = []
            for printed, username, roles in people:
                sid = services.enroll_staff(ledger, admin, EnrollStaff(printed, username, roles))["staff_id"]
                auth.set_password(auth.store.staff_by_username(dea, username), PASSWORD, must_change=False)
                staff.append(Principal(dea, sid, printed, AuthMethod.PASSWORD))
            first, second = staff[0], staff[1]  # two nurses (workstations + 1 of them)
            # The records begin with an (empty) initial inventory, witnessed, and a count: the two
            # ends of the window the "audit" read runs over (issue 20: an audit runs between counts).
            now = utcnow()
            services.take_inventory(ledger, first, TakeInventory("initial", "opening_of_business",
                                                                 now - timedelta(minutes=2), ()), witness=second)
            session = services.start_count(ledger, first, StartCount(ndcs=(NDC,), blind=False))["session_id"]
            services.submit_count(ledger, first, SubmitCount(session, (CountLineInput(NDC, 0),),
                                                             now - timedelta(minutes=1)), second_counter=second)
            patient = services.register_patient(ledger, first, RegisterPatient(
                f"Load Patient {i:02d}", AddressInput("9 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
            net.clinics.append(Clinic(dea, supplier, patient, workstations))
    finally:
        ledger.dispose()
    return net


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``csledger serve`` as a child process: started, waited for, killed, its RSS read."""

    def __init__(self, url: str, env: dict[str, str], *, cwd: Path, port: int | None = None,
                 log_path: Path | None = None):
        self.url, self.env, self.cwd = url, env, cwd
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--db", self.url, "--port", str(self.port)],
                                     stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"csledger serve exited with {self.proc.returncode} at start"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if time.monotonic() > deadline:
                raise RuntimeError("csledger serve did not answer /healthz in time")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, in-flight requests die with the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mib(self) -> float | None:
        """Resident memory of the server process, from ``/proc`` (Linux)."""
        if not self.proc or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


@dataclass
class Ack:
    """A command the server answered with 2xx: what a workstation would show as recorded."""

    registrant: str
    op: str
    idempotency_key: str
    marker: str  # the invoice number or the administration's start time + workstation
    entries: list[dict]


@dataclass
class Stats:
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, t: float, ms: float) -> None:
        with self.lock:
            self.latencies[op].append((t, ms))

    def retry(self, op: str) -> None:
        with self.lock:
            self.retries[op] += 1

    def error(self, op: str, what: str) -> None:
        with self.lock:
            self.errors[(op, what)] += 1


class ClinicClient(threading.Thread):
    """One workstation at one clinic, in a closed loop until ``stop`` is set. A command in
    flight when ``stop`` is set is still carried to an answer (retried with its key)."""

    def __init__(self, base: Callable[[], str], clinic: Clinic, workstation: int, *, stats: Stats,
                 stop: threading.Event, on_ack: Callable[[Ack], None] | None = None, seed: int = 0,
                 mix: dict[str, int] | None = None, give_up_after: float = 300.0, think_ms: float = 0.0):
        super().__init__(daemon=True, name=f"{clinic.dea}-ws{workstation}")
        self.base, self.clinic, self.w = base, clinic, workstation
        self.stats, self.stop, self.on_ack = stats, stop, on_ack
        self.rng = random.Random(f"{seed}-{clinic.dea}-{workstation}")
        mix = mix or DEFAULT_MIX
        self.ops, self.weights = list(mix), list(mix.values())
        self.give_up_after = give_up_after
        self.think_ms = think_ms  # mean pause between operations (0: a closed loop at full speed)
        self.http = httpx.Client(timeout=120)
        self.token: dict[str, str] = {}
        self.vials: list[str] = []
        self.current: str | None = None  # the vial being drawn from
        self.draws_left = 0
        self.n = 0
        self.known_size = 4  # the registrant, its administrator, the product, the supplier
        self.failure: BaseException | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.base()}/v1/registrants/{self.clinic.dea}{path}"

    def _send(self, method: str, path: str, *, who: str, op: str, **kw) -> httpx.Response:
        """Send until the server answers (transport errors and 503 are retried with the same
        request, after the server is back); re-login on 401 for an expired/unknown token."""
        started = time.monotonic()
        extra = kw.pop("headers", {})
        while True:
            if who not in self.token:
                self._login(who)
            headers = {**extra, "Authorization": f"Bearer {self.token[who]}"}
            try:
                r = self.http.request(method, self.url(path), headers=headers, **kw)
            except httpx.TransportError:
                r = None
            if r is None or r.status_code == 503:
                self.stats.retry(op)
                self._pause(started)
                continue
            if r.status_code == 401 and r.json().get("type", "").endswith(("token-invalid", "token-expired")):
                self.token.pop(who, None)
                continue
            return r

    def _pause(self, started: float) -> None:
        if time.monotonic() - started > self.give_up_after:
            raise RuntimeError(f"server unreachable for {self.give_up_after:.0f} s")
        time.sleep(0.05)

    def _login(self, who: str) -> None:
        started = time.monotonic()
        while True:
            t = time.monotonic()
            try:
                r = self.http.post(self.url("/sessions"), json={"username": who, "password": PASSWORD})
            except httpx.TransportError:
                self.stats.retry("login")
                self._pause(started)
                continue
            if r.status_code == 503:
                self._pause(started)
                continue
            if r.status_code != 201:
                raise RuntimeError(f"login {who} at {self.clinic.dea}: HTTP {r.status_code} {r.text[:200]}")
            self.stats.record("login", t, (time.monotonic() - t) * 1000)
            self.token[who] = r.json()["access_token"]
            return

    # -- operations ----------------------------------------------------------------------------
    def receipt(self, containers: int) -> None:
        invoice = f"INV-{self.clinic.dea}-{self.w}-{uuid.uuid4().hex[:12]}"
        key = "rcpt-" + invoice
        body = {"supplier_id": self.clinic.supplier_id, "invoice_number": invoice,
                "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                "lines": [{"ndc": NDC, "containers": containers, "lot": "LOAD-LOT", "expiry": "2030-12-31"}]}
        t = time.monotonic()
        r = self._send("POST", "/receipts", who=self.clinic.nurse(self.w), op="receipt", json=body,
                       headers={"Idempotency-Key": key})
        if r.status_code != 201:
            self.stats.error("receipt", f"HTTP {r.status_code} {r.json().get('type', '')}")
            return
        self.stats.record("receipt", t, (time.monotonic() - t) * 1000)
        got = r.json()
        self.vials.extend(got["vial_ids"])
        self.known_size = max(self.known_size, *(e["seq"] + 1 for e in got["entries"]))
        if self.on_ack:
            self.on_ack(Ack(self.clinic.dea, "receipt", key, invoice, got["entries"]))

    def infusion(self) -> None:
        if self.draws_left == 0:
            if not self.vials:
                self.receipt(5)
                if not self.vials:
                    return
            self.current = self.vials.pop(0)
            self.draws_left = INFUSIONS_PER_VIAL
        now = datetime.now(UTC) - timedelta(minutes=1)
        key = f"inf-{self.clinic.dea}-{self.w}-{uuid.uuid4().hex[:12]}"
        body = {"patient_id": self.clinic.patient_id, "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
                "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": self.current, "ml": ML_PER_INFUSION}],
                "ml_given": "0.80", "started_at": now.isoformat(), "ended_at": now.isoformat(),
                "waste": {"ml": "0.20", "method": "sharps container"}}
        content = json.dumps(body).encode()
        nurse = self.clinic.nurse(self.w)
        t = time.monotonic()
        a = self._send("POST", "/witness-assertions", who=nurse, op="infusion", json={
            "username": self.clinic.witness(self.w), "password": PASSWORD,
            "body_sha256": hashlib.sha256(content).hexdigest()})
        if a.status_code != 201:
            self.stats.error("infusion", f"witness HTTP {a.status_code} {a.json().get('type', '')}")
            return
        assertion = a.json()["assertion"]
        while True:
            r = self._send("POST", "/administrations", who=nurse, op="infusion", content=content, headers={
                "Content-Type": "application/json", "Idempotency-Key": key, "Witness-Assertion": assertion})
            if r.status_code == 401 and r.json().get("type", "").endswith("witness-assertion-expired"):
                # The server was down longer than an assertion lives: the witness signs again
                # for the same body; the idempotency key still makes the retry exactly-once.
                a = self._send("POST", "/witness-assertions", who=nurse, op="infusion", json={
                    "username": self.clinic.witness(self.w), "password": PASSWORD,
                    "body_sha256": hashlib.sha256(content).hexdigest()})
                assertion = a.json()["assertion"]
                continue
            break
        if r.status_code != 201:
            self.stats.error("infusion", f"HTTP {r.status_code} {r.json().get('type', '')}")
            self.draws_left = 0  # do not keep drawing from a vial the ledger refused
            return
        self.stats.record("infusion", t, (time.monotonic() - t) * 1000)
        self.draws_left -= 1
        self.known_size = max(self.known_size, *(e["seq"] + 1 for e in r.json()["entries"]))
        if self.on_ack:
            self.on_ack(Ack(self.clinic.dea, "infusion", key, key, r.json()["entries"]))

    def read(self, op: str) -> None:
        nurse, officer = self.clinic.nurse(self.w), "compliance"
        now = datetime.now(UTC)
        if op == "stock":
            who, path, params = nurse, "/stock", {}
        elif op == "vials":
            who, path, params = nurse, "/vials", {"state": "open", "limit": 50}
        elif op == "entries":
            who, path, params = officer, "/entries", {"limit": 50}
        elif op == "audit":
            # Local days (issue 20's one period rule): yesterday and today at the clinic
            today = now.astimezone(CLINIC_TZ).date()
            who, path, params = officer, "/audit", {"from": (today - timedelta(days=1)).isoformat(),
                                                    "to": today.isoformat()}
        elif op == "proof":
            # An entry this workstation saw recorded (or one of the set-up entries before any).
            who, path, params = nurse, "/proofs/inclusion", {"seq": self.rng.randrange(0, self.known_size)}
        else:
            raise ValueError(op)
        t = time.monotonic()
        r = self._send("GET", path, who=who, op=op, params=params)
        if r.status_code != 200:
            self.stats.error(op, f"HTTP {r.status_code}")
            return
        self.stats.record(op, t, (time.monotonic() - t) * 1000)

    def run(self) -> None:
        try:
            # A shift starts with its logins (timed as "login", not as the first read).
            self._login(self.clinic.nurse(self.w))
            if any(self.weights[i] for i, op in enumerate(self.ops) if op in ("entries", "audit")):
                self._login("compliance")
            while not self.stop.is_set():
                op = self.rng.choices(self.ops, self.weights)[0]
                if op == "infusion":
                    self.infusion()
                elif op == "receipt":
                    self.receipt(1)
                elif op == "login":
                    self.token.pop(self.clinic.nurse(self.w), None)
                    self._login(self.clinic.nurse(self.w))
                else:
                    self.read(op)
                self.n += 1
                if self.think_ms:
                    self.stop.wait(self.rng.expovariate(1000.0 / self.think_ms))
        except BaseException as exc:  # noqa: BLE001 - reported by the driver
            self.failure = exc
        finally:
            self.http.close()


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summarize(stats: Stats, wall: float) -> dict[str, Any]:
    """Per operation: count, per second, p50 and p99 in ms; plus errors and retries."""
    ops = {}
    for op, xs in sorted(stats.latencies.items()):
        ms = [m for _, m in xs]
        if not ms:
            continue
        ops[op] = {"count": len(ms), "per_s": len(ms) / wall, "p50_ms": percentile(ms, 50),
                   "p99_ms": percentile(ms, 99), "max_ms": max(ms)}
    total = sum(o["count"] for o in ops.values())
    commands = sum(o["count"] for k, o in ops.items() if k in COMMANDS)
    return {"wall_s": wall, "requests": total, "requests_per_s": total / wall, "commands": commands,
            "commands_per_s": commands / wall, "ops": ops,
            "errors": {f"{op}: {what}": n for (op, what), n in sorted(stats.errors.items())},
            "retries": dict(stats.retries)}


def run_load(url: str, folder: Path, *, clinics: int = 20, workstations: int = 2, seconds: float = 600.0,
             sample_every: float = 10.0, seed: int = 1, think_ms: float = 0.0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the network on ``url`` (an empty database), serve it, run the workload for
    ``seconds`` and return the figures; afterwards ``verify --deep`` is run and reported."""
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    net = build_network(url, folder, clinics=clinics, workstations=workstations)
    say(f"network of {clinics} clinics built in {time.monotonic() - t0:.1f} s")
    server = ServerProcess(url, net.server_env(), cwd=folder, log_path=folder / "server.log")
    server.start()
    stats, stop = Stats(), threading.Event()
    clients = [ClinicClient(lambda: server.base, c, w, stats=stats, stop=stop, seed=seed, think_ms=think_ms)
               for c in net.clinics for w in range(workstations)]
    memory: list[dict[str, float]] = []
    try:
        start = time.monotonic()
        for c in clients:
            c.start()
        next_sample = start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_sample:
                done = sum(len(v) for v in stats.latencies.values())
                memory.append({"t_s": round(now - start, 1), "server_rss_mib": server.rss_mib() or 0.0,
                               "requests_done": done})
                say(f"{now - start:6.0f} s  server RSS {memory[-1]['server_rss_mib']:.0f} MiB  {done} requests")
                next_sample += sample_every
            if any(c.failure for c in clients):
                break
            time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
        stop.set()
        for c in clients:
            c.join(timeout=300)
        wall = time.monotonic() - start
        memory.append({"t_s": round(wall, 1), "server_rss_mib": server.rss_mib() or 0.0,
                       "requests_done": sum(len(v) for v in stats.latencies.values())})
    finally:
        stop.set()
        server.stop()
    failures = [f"{c.name}: {c.failure!r}" for c in clients if c.failure]
    result = summarize(stats, wall)
    # The same figures without the first minute, when every workstation logs in at once (80
    # argon2id checks queue behind each other): the network's steady state.
    warm = start + min(60.0, wall / 2)
    steady = Stats(latencies=defaultdict(list, {op: [x for x in xs if x[0] >= warm]
                                               for op, xs in stats.latencies.items()}))
    result["after_first_minute"] = summarize(steady, start + wall - warm)["ops"]
    result.update({"clinics": clinics, "workstations_per_clinic": workstations, "clients": len(clients),
                   "think_ms": think_ms,
                   "memory": memory, "client_failures": failures,
                   "backend": "PostgreSQL" if url.startswith("postgresql") else "SQLite"})
    # Throughput over time (per sample window) shows whether the service slows as the ledger grows.
    windows = []
    for a, b in zip(memory, memory[1:], strict=False):
        if b["t_s"] > a["t_s"]:
            windows.append({"t_s": b["t_s"], "requests_per_s": (b["requests_done"] - a["requests_done"]) / (b["t_s"] - a["t_s"])})
    result["throughput_over_time"] = windows
    v = subprocess.run([sys.executable, "-m", "api.cli", "verify", "--deep", "--db", url], capture_output=True,
                       text=True, env=net.server_env(), cwd=folder)
    result["verify_deep"] = {"exit": v.returncode, "output": (v.stdout + v.stderr).strip()[-2000:]}
    return result
