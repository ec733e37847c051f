"""``python bench/bench_http.py``: recording over HTTP on loopback beside the same command through the
service layer, at several numbers of concurrent clients, so the HTTP overhead shows as a ratio.

The command is a receipt of one container (``POST .../receipts`` / ``services.receive_stock``):
one durable transaction, one entry, checkpoint signed in it when the verifiable log is attached
(as ``csledger serve`` does). Each HTTP client is its own staff member with its own login and a
keep-alive connection to a real ``csledger serve`` subprocess; logins are not timed. Every figure
printed is measured in this run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __name__ == "__main__":  # run as a script from a checkout: the repository root holds ``bench``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from rich.console import Console
from rich.table import Table

from api.http.auth import Authenticator
from api.http.auth_store import AuthStore
from bench.loadtest import ServerProcess, percentile
from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    EnrollStaff,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPrescriber,
    RegisterRegistrant,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.settings import get_settings
from ledger.storage.store import Ledger, migrate, utcnow

DEA = "AB1234563"
NDC = "67457-0001-10"
PASSWORD = "quiet harbor lamps 2026"


def _run_clients(n: int, per_client: int, one: Callable[[int, int], float]) -> tuple[float, list[float]]:
    """Run ``n`` threads of ``per_client`` calls; returns (commands/s, latencies in ms)."""
    lat: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)

    def worker(c: int) -> None:
        barrier.wait()
        try:
            for i in range(per_client):
                lat[c].append(one(c, i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    flat = [x for xs in lat for x in xs]
    return len(flat) / wall, flat


def run_http_bench(out: Console, *, clients: tuple[int, ...] = (1, 4, 16), per_client: int = 40,
                   pg_url: str | None = None, workdir: Path | None = None, command: str = "receipt") -> list[dict]:
    """Measure and print; returns the rows (for tests). ``command`` is ``receipt`` (one entry,
    no second person: the bare HTTP overhead) or ``infusion`` (an infusion with its witnessed
    waste: over HTTP the witness signs in on the device first, then the command is sent)."""
    if command not in ("receipt", "infusion"):
        raise ValueError("command must be 'receipt' or 'infusion'")
    folder = Path(workdir or tempfile.mkdtemp(prefix="csledger-bench-http-"))
    folder.mkdir(parents=True, exist_ok=True)
    url = pg_url or f"sqlite:///{folder / 'bench-http.db'}"
    import base64
    import secrets as _secrets

    patient_key = base64.b64encode(_secrets.token_bytes(32)).decode()
    settings = get_settings(database_url=url, key_dir=folder / "keys", patient_key=patient_key)
    ledger = Ledger.open(url)
    migrate(ledger.engine)
    try:
        from ledger.storage.log import attach  # the verifiable log signs a checkpoint per command

        attach(ledger, settings)
    except ImportError:  # pragma: no cover - before the verifiable log existed
        pass
    res = services.register_registrant(ledger, RegisterRegistrant(
        DEA, "Bench Clinic", AddressInput("1 Main St", "Austin", "TX", "78701"), "America/Chicago", "Bench Admin", "admin"))
    admin = Principal(DEA, res["admin_staff_id"], "Bench Admin", AuthMethod.CONSOLE_BOOTSTRAP)
    services.add_product(ledger, admin, AddProduct(NDC, "Ketamine HCl injection 50 mg/mL", "7285", "III", "injection",
                                                   "50.00", "10.00"))
    supplier = services.add_supplier(ledger, admin, AddSupplier(
        "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
        registration_expires_on="2031-06-30", schedules=("2", "2N", "3", "3N", "4", "5"),
        authorized_trading_partner=True))["supplier_id"]
    # The prescriber the infusions name (issue 19: an administration names a registered one).
    services.register_prescriber(ledger, admin, RegisterPrescriber(
        "Dr. Fran Prescriber", "FB7654329", "TX", ("3N", "4", "5"), "2031-06-30", "TX-7654329", "TX"))
    auth = Authenticator(AuthStore(ledger), settings, clock=utcnow)
    nurses: list[Principal] = []
    for c in range(max(clients) + 1):
        sid = services.enroll_staff(ledger, admin, EnrollStaff(f"Bench Nurse {c}", f"nurse{c}", ("nurse",)))["staff_id"]
        nurses.append(Principal(DEA, sid, f"Bench Nurse {c}", AuthMethod.PASSWORD))
        auth.set_password(auth.store.staff_by_username(DEA, f"nurse{c}"), PASSWORD, must_change=False)

    vials: dict[tuple[str, int], list[str]] = {}
    patient_id = None
    if command == "infusion":
        from ledger.domain.commands import AdministerDose, DrawInput, RegisterPatient, WasteInput
        from ledger.storage.patient_keys import PatientKeys

        keys = PatientKeys.from_base64(patient_key)
        patient_id = services.register_patient(ledger, nurses[0], RegisterPatient(
            "Bench Patient", AddressInput("1 Main St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
        per_vial = 9  # 1.00 mL drawn per infusion from a 10 mL vial
        need = (per_client + per_vial - 1) // per_vial
        for phase in ("S", "H"):
            for n in clients:
                got = services.receive_stock(ledger, nurses[0], ReceiveStock(
                    supplier, f"V-{phase}{n}", datetime.now(UTC) - timedelta(minutes=10),
                    (ReceivedLineInput(NDC, need * n, "KB1", "2029-12-31"),)))["vial_ids"]
                for c in range(n):
                    vials[(f"{phase}{n}", c)] = got[c * need:(c + 1) * need]

        def infusion_body(tag: str, c: int, i: int) -> dict:
            now = datetime.now(UTC) - timedelta(minutes=1)
            return {"patient_id": patient_id, "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
                    "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vials[(tag, c)][i // per_vial], "ml": "1.00"}],
                    "ml_given": "0.80", "started_at": now.isoformat(), "ended_at": now.isoformat(),
                    "waste": {"ml": "0.20", "method": "sharps container"}}

    def body(tag: str, c: int, i: int) -> dict:
        return {"supplier_id": supplier, "invoice_number": f"{tag}-{c}-{i}",
                "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                "lines": [{"ndc": NDC, "containers": 1, "lot": "KB1", "expiry": "2029-12-31"}]}

    rows: list[dict] = []
    for n in clients:
        def via_service(c: int, i: int, n=n) -> float:
            if command == "infusion":
                b = infusion_body(f"S{n}", c, i)
                cmd = AdministerDose(b["patient_id"], b["prescriber_dea_number"], b["weight_kg"], b["ordered_mg_per_kg"],
                                     (DrawInput(b["draws"][0]["vial_id"], "1.00"),), b["ml_given"],
                                     datetime.fromisoformat(b["started_at"]), datetime.fromisoformat(b["ended_at"]),
                                     WasteInput("0.20", "sharps container"))
                t = time.perf_counter()
                services.administer_dose(ledger, nurses[c], cmd, witness=nurses[c + 1], idempotency_key=f"s{n}-{c}-{i}")
                return (time.perf_counter() - t) * 1000
            b = body(f"S{n}", c, i)
            cmd = ReceiveStock(b["supplier_id"], b["invoice_number"], datetime.fromisoformat(b["occurred_at"]),
                               (ReceivedLineInput(NDC, 1, "KB1", "2029-12-31"),))
            t = time.perf_counter()
            services.receive_stock(ledger, nurses[c], cmd, idempotency_key=f"s{n}-{c}-{i}")
            return (time.perf_counter() - t) * 1000

        tput, lat = _run_clients(n, per_client, via_service)
        rows.append({"clients": n, "service_per_s": tput, "service_p50": percentile(lat, 50), "service_p99": percentile(lat, 99)})

    # witness sign-off cost: the witness's argon2 password check happens once per witnessed command
    t = time.perf_counter()
    for _ in range(10):
        auth.check_credentials(DEA, "nurse0", PASSWORD, None)
    argon2_ms = (time.perf_counter() - t) * 100
    ledger.dispose()

    env = {**os.environ, "CSLEDGER_KEY_DIR": str(folder / "keys"), "CSLEDGER_PATIENT_KEY": patient_key}
    server = ServerProcess(url, env, cwd=folder)
    base = f"{server.base}/v1/registrants/{DEA}"
    try:
        server.start(timeout=60)
        for row in rows:
            n = row["clients"]
            sessions = []
            for c in range(n):
                s = httpx.Client(timeout=60)
                r = s.post(f"{base}/sessions", json={"username": f"nurse{c}", "password": PASSWORD})
                r.raise_for_status()
                s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                sessions.append(s)

            def via_http(c: int, i: int, n=n, sessions=sessions) -> float:
                if command == "infusion":
                    content = json.dumps(infusion_body(f"H{n}", c, i)).encode()
                    t = time.perf_counter()
                    a = sessions[c].post(f"{base}/witness-assertions", json={
                        "username": f"nurse{c + 1}", "password": PASSWORD,
                        "body_sha256": hashlib.sha256(content).hexdigest()})
                    a.raise_for_status()
                    r = sessions[c].post(f"{base}/administrations", content=content, headers={
                        "Content-Type": "application/json", "Idempotency-Key": f"h{n}-{c}-{i}",
                        "Witness-Assertion": a.json()["assertion"]})
                    if r.status_code != 201:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                    return (time.perf_counter() - t) * 1000
                t = time.perf_counter()
                r = sessions[c].post(f"{base}/receipts", json=body(f"H{n}", c, i),
                                     headers={"Idempotency-Key": f"h{n}-{c}-{i}"})
                if r.status_code != 201:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                return (time.perf_counter() - t) * 1000

            tput, lat = _run_clients(n, per_client, via_http)
            for s in sessions:
                s.close()
            row.update({"http_per_s": tput, "http_p50": percentile(lat, 50), "http_p99": percentile(lat, 99),
                        "ratio": tput / row["service_per_s"]})
    finally:
        server.stop()

    backend = "PostgreSQL" if pg_url else "SQLite"
    what = ("infusion with its witnessed waste (HTTP: witness sign-in + command)" if command == "infusion"
            else "receipt of one container")
    table = Table(title=f"{what}, {backend}, {per_client} commands per client")
    for col in ("clients", "service cmd/s", "service p50 / p99 ms", "HTTP cmd/s", "HTTP p50 / p99 ms",
                "HTTP / service"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["clients"]), f"{r['service_per_s']:,.0f}", f"{r['service_p50']:.1f} / {r['service_p99']:.1f}",
                      f"{r['http_per_s']:,.0f}", f"{r['http_p50']:.1f} / {r['http_p99']:.1f}", f"{r['ratio']:.2f}x")
    out.print(table)
    out.print(f"witness sign-off (argon2id password check, pwdlib recommended): {argon2_ms:.0f} ms each")
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console

    ap = argparse.ArgumentParser(description="Recording over HTTP (a real csledger serve on loopback) beside the service layer.")
    ap.add_argument("--clients", default="1,4,16", help="Comma-separated numbers of concurrent clients.")
    ap.add_argument("--per-client", type=int, default=40, help="Commands per client per run.")
    ap.add_argument("--db", default=None, help="An empty PostgreSQL database URL instead of a fresh SQLite file.")
    ap.add_argument("--command", choices=("receipt", "infusion"), default="receipt",
                    help="receipt (bare HTTP overhead) or infusion (with witnessed waste).")
    args = ap.parse_args(argv)
    counts = tuple(int(x) for x in args.clients.split(",") if x.strip())
    if not counts or min(counts) < 1:
        ap.error("--clients needs positive numbers, e.g. 1,4,16")
    run_http_bench(Console(), clients=counts, per_client=args.per_client, pg_url=args.db, command=args.command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
