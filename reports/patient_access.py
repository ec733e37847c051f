"""Patient-access log: who read patients' names and addresses when (issue 16's log), printed with
patient ids only, never names.

The log is not part of the hash-chained ledger: it is the ``patient_access_log`` table beside it,
append-only (the database refuses UPDATE, DELETE and TRUNCATE on it by triggers, migration 0004).
So its rows cannot be recomputed from the entries. The report therefore embeds every row it prints
as annotations (``access_log``: the rows, the highest row id it read, and the SHA-256 of the rows),
and the rebuild draws from those, deterministically. ``verify-report`` (online) re-reads the rows
of the period up to that row id from the database and names any row changed, removed or added
since; offline (``--bundle``) the rows cannot be checked (bundles carry entries only) and it says
so. The figures proper (the period's bounds and the staff names readers are printed with) come
from the entries, as every report's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, count, local
from reports.source import Snapshot

PROTECTION = ("This log is not part of the hash-chained ledger. It is kept in the same database, append-only: the "
              "database refuses to change, delete or truncate its rows. This report embeds every row it prints, up "
              "to row {through}, with their SHA-256 ({digest}); csledger verify-report re-reads those rows from the "
              "database and names any row changed, removed or added since. Patients are printed by id only; their "
              "names are never printed here.")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """What the entries give: the period's bounds (UTC) and the printed name of every staff
    member enrolled by its end, to name the readers. The rows themselves are annotations."""
    staff = {e["staff_id"]: e["printed_name"] for e in snap.entries
             if e["kind"] == "staff_enrolled" and e["occurred_at"] < period.end_utc}
    return {"window": {"from_utc": period.start_utc, "to_utc": period.end_utc}, "staff": staff}


def _rows(ledger: Any, registrant: str, window: dict[str, str], through: int | None) -> tuple[list[dict], int]:
    """The log's rows of ``registrant`` in ``window`` with id up to ``through`` (None: the
    highest now), in id order, and that highest id."""
    from ledger.storage.patient_access import access_t

    with ledger.reading() as conn:
        if through is None:
            through = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(access_t.c.id), 0))
                                       .where(access_t.c.registrant == registrant)).scalar_one())
        found = conn.execute(
            sa.select(access_t.c.id, access_t.c.accessed_at, access_t.c.staff_id, access_t.c.action,
                      access_t.c.patient_id, access_t.c.report, access_t.c.patient_ids)
            .where(access_t.c.registrant == registrant, access_t.c.id <= through,
                   access_t.c.accessed_at >= window["from_utc"], access_t.c.accessed_at < window["to_utc"])
            .order_by(access_t.c.id)).all()
    rows = []
    for r in found:
        try:
            ids = json.loads(r.patient_ids) if r.patient_ids else []
        except ValueError:  # a row that is not what the log writes: print it as stored
            ids = [str(r.patient_ids)]
        rows.append({"id": int(r.id), "accessed_at": r.accessed_at, "staff_id": r.staff_id, "action": r.action,
                     "patient_id": r.patient_id, "report": r.report, "patient_ids": ids})
    return rows, through


def _digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def annotate(ledger: Any, registrant: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The rows of the period as the database holds them now (embedded in the report)."""
    rows, through = _rows(ledger, registrant, figures["window"], None)
    if not rows:
        raise ReportError(f"no one read patients' names or addresses at {registrant} in this period; nothing to "
                          "report", field="from/to")
    return {"access_log": {"through_id": through, "rows": rows, "sha256": _digest(rows)}}


def recheck(ledger: Any, registrant: str, annotations: dict[str, Any], figures: dict[str, Any]) -> tuple[list[str], str]:
    """Re-read the embedded rows from the database: (problems, note)."""
    log = (annotations or {}).get("access_log") if isinstance(annotations, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("through_id"), int) or not isinstance(log.get("rows"), list):
        return ["annotations.access_log: the report embeds no readable patient-access rows"], ""
    problems = []
    if _digest(log["rows"]) != log.get("sha256"):
        problems.append("annotations.access_log.sha256 does not match the rows the report embeds")
    now, _ = _rows(ledger, registrant, figures["window"], log["through_id"])
    theirs = {r.get("id"): r for r in log["rows"] if isinstance(r, dict)}
    ours = {r["id"]: r for r in now}
    for rid in sorted(set(theirs) | set(ours), key=lambda x: (str(type(x)), x)):
        if rid not in ours:
            problems.append(f"patient-access log row {rid}: printed in the report, not in the database now")
        elif rid not in theirs:
            problems.append(f"patient-access log row {rid}: in the database, missing from the report")
        elif theirs[rid] != ours[rid]:
            problems.append(f"patient-access log row {rid}: the report says {json.dumps(theirs[rid])[:120]}, the "
                            f"database has {json.dumps(ours[rid])[:120]}")
    return problems, f"patient-access log rows up to {log['through_id']} checked against the database"


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the access log prints, drawn only from the report data (with its annotations)."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    log = data["annotations"]["access_log"]
    staff = f["staff"]
    rows = []
    readers: set[str] = set()
    patients: set[str] = set()
    for r in log["rows"]:
        who = staff.get(r["staff_id"])
        readers.add(r["staff_id"])
        if r["report"]:
            ids = r["patient_ids"]
            what = f"{r['report']}"
        else:
            ids = [r["patient_id"]]
            what = "one patient's record"
        patients.update(ids)
        rows.append([local(r["accessed_at"], tz, seconds=True),
                     f"{who}\n{r['staff_id']}" if who else r["staff_id"], r["action"], what,
                     f"{count(len(ids))}: " + ", ".join(ids), str(r["id"])])
    out: list[layout.Block] = [
        layout.Para("Who read patients' names and addresses in the period: every read of one patient's record and every "
                    "report that printed patients' names (one row per report, naming every patient it included). "
                    + PROTECTION.format(through=log["through_id"], digest=log["sha256"])),
        layout.Para(f"{count(len(rows))} reads by {count(len(readers))} readers, of {count(len(patients))} patients.",
                    bold=True),
        layout.Table([layout.Column("When (local)", 70), layout.Column("Reader", 96), layout.Column("Action", 60),
                      layout.Column("What was read", 200), layout.Column("Patients (ids)", 240),
                      layout.Column("Row", 34, "R")], rows, title="Reads"),
    ]
    return out


KIND = register(ReportKind("patient_access", "Patient-access log", "landscape", compute, blocks,
                           annotate=annotate, recheck=recheck, needs_inventory=False,
                           readers=frozenset({"compliance_officer"})))
