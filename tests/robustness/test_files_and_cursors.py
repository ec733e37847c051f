"""Files at rest and crafted input (issue 16), the way a user meets them.

**Files at rest 0600.** ``csledger init``, a few commands, ``csledger backup`` and ``restore``
run as subprocesses under a permissive umask (022): the SQLite database, its WAL and shared-memory
files, the backup (SQLite's and ``pg_dump``'s) and the restored database are all ``-rw-------``.
A database file left 0644 by an older version is tightened when opened.

**Bad input never 500.** A table of crafted pagination cursors (a position of 2**63 or 10**40,
negative, a float, ``true``, ``null``, a string; another list's cursor; not base64, not JSON,
nested 100 deep, over 200 characters; a vial id with NUL, a lone surrogate or 129 characters),
entry ids and vial ids is sent over HTTP to ``/entries``, ``/vials``, ``/patient-access-log``,
``/entries/{seq}`` and ``/vials/{vial_id}`` on SQLite and PostgreSQL: each is a 422 problem
naming ``cursor`` (or ``seq``; a 404 or 422 naming ``vial_id``), never a 5xx. Before, a position
of 2**63 (or ``true``) in a cursor answered 500 on all three lists.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from ledger.storage.store import Ledger
from tests.api.conftest import build_api
from tests.cli.test_cli import INIT, run
from tests.conftest import BACKENDS, KETAMINE_50, an_hour_ago, fresh_database_url, wants_template

# --- files at rest -------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The umask most systems default to (022): files made without care would be 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_database_wal_and_backups_are_owner_only(tmp_path, open_umask):
    db = tmp_path / "ledger.db"
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{db}"}
    run(INIT, tmp_path, env)
    run(["verify", "--deep"], tmp_path, env)
    run(["backup", "--out", str(tmp_path / "ledger.backup")], tmp_path, env)
    restored = tmp_path / "restored.db"
    run(["restore", "--from", str(tmp_path / "ledger.backup"), "--db", f"sqlite:///{restored}"], tmp_path)
    # A reader holds the database open (as ``serve`` does), so its WAL and -shm files exist.
    lg = Ledger.open(f"sqlite:///{db}")
    try:
        with lg.reading() as c:
            c.exec_driver_sql("SELECT count(*) FROM entries").scalar()
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), tmp_path / "ledger.backup", restored]
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
        modes = {p.name: oct(mode(p)) for p in files + sorted(tmp_path.glob("restored.db-*"))}
    finally:
        lg.dispose()
    assert set(modes.values()) == {oct(0o600)}, modes


def test_a_world_readable_database_is_tightened_when_opened(tmp_path, open_umask):
    db = tmp_path / "old.db"
    run(INIT + ["--db", f"sqlite:///{db}"], tmp_path)
    for p in [db, *tmp_path.glob("old.db-*")]:
        p.chmod(0o644)  # as an older csledger left it
    run(["verify", "--db", f"sqlite:///{db}"], tmp_path)
    assert oct(mode(db)) == oct(0o600)


@pytest.mark.postgres
def test_pg_dump_backup_is_owner_only(tmp_path, open_umask):
    gen = fresh_database_url("postgresql", tmp_path)
    url = next(gen)
    try:
        run(INIT + ["--db", url], tmp_path)
        out = tmp_path / "ledger.dump"
        run(["backup", "--db", url, "--out", str(out)], tmp_path)
        assert oct(mode(out)) == oct(0o600)
    finally:
        next(gen, None)


# --- crafted cursors and ids ------------------------------------------------------------------------


def b64(raw: bytes | str) -> str:
    raw = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(kind: str, value) -> str:
    return b64(json.dumps([kind, value]))


#: Positions no list gives out, as the JSON text inside the cursor.
BAD_POSITIONS = {
    "2**63": str(2**63), "2**64": str(2**64), "10**40": str(10**40), "150 digits": "9" * 150, "-1": "-1",
    "-(2**63)-1": str(-(2**63) - 1), "float": "1.5", "1e400": "1e400", "NaN": "NaN", "true": "true",
    "null": "null", "string": '"12"', "list": "[1]", "object": '{"seq": 1}',
}


def crafted(kind: str) -> dict[str, str]:
    """Cursors for a list whose cursors are ``[kind, position]`` (``[kind, [position, id]]`` for vials)."""
    def at(position_json: str) -> str:
        inner = f"[{position_json}, \"V1-1\"]" if kind == "vial" else position_json
        return b64(f'["{kind}", {inner}]')

    out = {name: at(v) for name, v in BAD_POSITIONS.items()}
    other = "entry" if kind != "entry" else "vial"
    out.update({
        "another list's cursor": cursor(other, 1),
        "not base64": "%%%%", "not ascii": "é" * 8, "not JSON": b64(b"\xff\xfe\x00"), "empty": "",
        "JSON but no pair": b64("[1, 2, 3]"), "nested 100 deep": b64("[" * 100 + "]" * 100),
        "over 200 characters": "A" * 201,
    })
    if kind == "vial":
        out.update({"vial id with NUL": cursor("vial", [1, "V1\x00"]), "lone surrogate": b64('["vial", [1, "\\ud800"]]'),
                    "vial id of 129": cursor("vial", [1, "V" * 129]), "vial id a number": cursor("vial", [1, 7]),
                    "three parts": cursor("vial", [1, "V1-1", 3]), "huge and id": cursor("vial", [2**63, "V1-1"])})
    return out


ENDPOINTS = {"/entries": "entry", "/vials": "vial", "/patient-access-log": "access"}
BAD_SEQS = [str(2**63), str(2**64), "1" + "0" * 40, "-1", "abc", "1.5", "1e3", "٣", "0x10"]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    yield from fresh_database_url(request.param, tmp_path, migrated=wants_template(request))


@pytest.fixture
def api(ledger):
    api = build_api(ledger)
    body = {"supplier_id": api.clinic.supplier_id, "invoice_number": "INV-C1", "occurred_at": an_hour_ago().isoformat(),
            "lines": [{"ndc": KETAMINE_50, "containers": 3, "lot": "KA2611", "expiry": "2028-06-30"}]}
    r = api.client.post(api.url("/receipts"), json=body, headers=api.headers("nora"))
    assert r.status_code == 201, r.text
    p = api.client.post(api.url("/patients"), headers=api.headers("nora"), json={
        "name": "Jordan Example", "address": {"street": "12 Elm St", "city": "Austin", "state": "TX",
                                             "postal_code": "78702"}})
    assert p.status_code == 201, p.text
    for _ in range(2):  # two access-log rows, so a page of one has a cursor
        assert api.client.get(api.url(f"/patients/{p.json()['patient_id']}"), headers=api.headers("nora")).status_code == 200
    return api


def entry_total(api) -> int:
    with api.ledger.reading() as c:
        return c.exec_driver_sql("SELECT count(*) FROM entries").scalar()


def test_crafted_cursors_are_422_naming_the_cursor_never_500(api):
    h = api.headers("casey")
    before = entry_total(api)
    failures = []
    for path, kind in ENDPOINTS.items():
        first = api.client.get(api.url(path), params={"limit": 1}, headers=h)
        assert first.status_code == 200 and first.json()["next_cursor"], (path, first.text)
        again = api.client.get(api.url(path), params={"limit": 1, "cursor": first.json()["next_cursor"]}, headers=h)
        assert again.status_code == 200, (path, again.text)  # a cursor the list gave out still works
        for name, value in crafted(kind).items():
            r = api.client.get(api.url(path), params={"limit": 1, "cursor": value}, headers=h)
            fields = [e.get("field") for e in r.json().get("errors", [])] if r.headers.get(
                "content-type", "").startswith("application/problem+json") else []
            if r.status_code != 422 or "cursor" not in fields:
                failures.append(f"{path} {name}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert entry_total(api) == before


def test_crafted_entry_and_vial_ids_are_refused_naming_the_id_never_500(api):
    h = api.headers("casey")
    failures = []
    for seq in BAD_SEQS:
        for path in (f"/entries/{seq}",):
            r = api.client.get(api.url(path), headers=h)
            fields = [e.get("field") for e in r.json().get("errors", [])]
            if r.status_code != 422 or "seq" not in fields:
                failures.append(f"{path}: {r.status_code} {r.text[:200]}")
    for vial_id in ("V1%00", "%ED%A0%80", "%FF", "V" * 129, "%C2%A0"):
        r = api.client.get(api.url(f"/vials/{vial_id}"), headers=h)
        fields = [e.get("field") for e in r.json().get("errors", [])]
        if r.status_code not in (404, 422) or "vial_id" not in fields:
            failures.append(f"/vials/{vial_id}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert api.client.get(api.url("/entries/999999"), headers=h).status_code == 404
