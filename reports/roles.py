"""Role history: who held which role when (issue 20). Every enrolment, role grant and revocation,
and every signing credential enrolled or revoked (issue 17) in the period, with who performed and
who approved each (from the entries' signatures) and when; then, as of the end of the period, who
holds which role, since when and granted by whom, and their signing credentials in force.

Staff and roles exist before any stock, so this report does not wait for the initial inventory.
"""

from __future__ import annotations

from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, count, local
from reports.signers import others
from reports.source import Snapshot

KINDS = ("staff_enrolled", "role_granted", "role_revoked", "staff_credential_enrolled", "staff_credential_revoked")


def _event(e: dict[str, Any]) -> str:
    """What the entry did, in words (no secrets: a credential by its method and fingerprint)."""
    k = e["kind"]
    if k == "staff_enrolled":
        return f"enrolled, username {e['username']}"
    if k == "role_granted":
        return f"role granted: {e['role']}"
    if k == "role_revoked":
        return f"role revoked: {e['role']}; reason: {e['reason']}"
    if k == "staff_credential_enrolled":
        text = f"signing credential enrolled: {e['method']} {e['credential_id']}, {e['fingerprint']}"
        return text + (f", replacing {e['replaces']}" if e.get("replaces") else "")
    return f"signing credential revoked: {e['credential_id']}; reason: {e['reason']}"


def _who(e: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(who performed, who approved): a revocation is signed by its actor with the meaning
    "approved" and no "performed" signature, so the first signature is then the actor."""
    sigs = list(e.get("signatures") or ())
    performed = [s["printed_name"] for s in sigs if s.get("meaning") == "performed"]
    approvals = [s for s in sigs if s.get("meaning") == "approved"]
    if not performed and approvals:
        performed, approvals = [approvals[0]["printed_name"]], approvals[1:]
    return performed, [s["printed_name"] for s in approvals]


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """The events of the period in ledger order, and the holders at the period's end."""
    names: dict[str, str] = {}
    usernames: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    # (staff, role) -> the grant in force: when and by whom
    held: dict[tuple[str, str], dict[str, Any]] = {}
    credentials: dict[tuple[str, str], dict[str, Any]] = {}
    for e in snap.entries:
        k = e["kind"]
        if k not in KINDS or e["occurred_at"] >= period.end_utc:
            continue
        sid = e["staff_id"]
        if k == "staff_enrolled":
            names[sid] = e["printed_name"]
            usernames[sid] = e["username"]
        performed, approved = _who(e)
        if k == "role_granted":
            held[(sid, e["role"])] = {"since": e["occurred_at"], "seq": e["seq"], "granted_by": performed,
                                      "approved_by": approved}
        elif k == "role_revoked":
            held.pop((sid, e["role"]), None)
        elif k == "staff_credential_enrolled":
            if e.get("replaces"):
                credentials.pop((sid, e["replaces"]), None)
            credentials[(sid, e["credential_id"])] = {"method": e["method"], "credential_id": e["credential_id"],
                                                      "fingerprint": e["fingerprint"], "since": e["occurred_at"]}
        elif k == "staff_credential_revoked":
            credentials.pop((sid, e["credential_id"]), None)
        if period.contains(e["occurred_at"]):
            events.append({"seq": e["seq"], "at": e["occurred_at"], "kind": k, "staff_id": sid,
                           "event": _event(e), "performed_by": performed, "approved_by": approved,
                           "other_signers": others(e, "performed", "approved")})
    if not names:
        raise ReportError(f"no staff is enrolled at {snap.state.registrant} by {period.end}; nothing to report",
                          field="to")
    holders = []
    for sid in sorted(names, key=lambda s: (names[s].casefold(), s)):
        roles = [{"role": role, **g} for (s, role), g in sorted(held.items()) if s == sid]
        creds = [c for (s, _), c in sorted(credentials.items()) if s == sid]
        holders.append({"staff_id": sid, "printed_name": names[sid], "username": usernames[sid], "roles": roles,
                        "credentials": creds})
    for ev in events:
        ev["printed_name"] = names.get(ev["staff_id"], "?")
    return {"events": events, "holders": holders,
            "total": {"events": len(events), "staff": len(holders),
                      "holding_roles": sum(1 for h in holders if h["roles"])}}


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the role history prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    end = data["period"]["to"]
    out: list[layout.Block] = [layout.Para(
        "Who held which role when: every enrolment, role grant and revocation and every signing credential enrolled "
        "or revoked in the period, with the person who performed it and the second manager or administrator who "
        "approved it (from the entries' signatures). Then who holds which role at the end of the period. Times are "
        "local; 'Entry' is the ledger sequence number.")]
    rows = [[local(ev["at"], tz), f"{ev['printed_name']}\n{ev['staff_id']}", ev["event"],
             "\n".join(ev["performed_by"] + ev["other_signers"]), "\n".join(ev["approved_by"]) or "(none)",
             str(ev["seq"])] for ev in f["events"]]
    if not rows:
        rows = [["", "", "No enrolment, role or credential changed in the period.", "", "", ""]]
    out.append(layout.Table(
        [layout.Column("Date (local)", 70), layout.Column("Staff member", 90), layout.Column("What changed", 236),
         layout.Column("Performed by", 90), layout.Column("Approved by", 90), layout.Column("Entry", 36, "R")],
        rows, title=f"Changes in the period ({count(f['total']['events'])})"))
    holders = []
    for h in f["holders"]:
        roles = "\n".join(f"{r['role']}: since {local(r['since'], tz)} (entry {r['seq']}), granted by "
                          f"{', '.join(r['granted_by']) or '?'}"
                          + (f", approved by {', '.join(r['approved_by'])}" if r["approved_by"] else "")
                          for r in h["roles"]) or "no role"
        creds = "\n".join(f"{c['method']} {c['credential_id']}, since {local(c['since'], tz)}"
                          for c in h["credentials"]) or "none"
        holders.append([f"{h['printed_name']}\n{h['staff_id']}, {h['username']}", roles, creds])
    out.append(layout.Table(
        [layout.Column("Staff member", 110), layout.Column("Roles held, since, granted by", 330),
         layout.Column("Signing credentials in force", 172)],
        holders, title=f"Role holders at the end of {end} ({count(f['total']['holding_roles'])} with a role)"))
    return out


KIND = register(ReportKind("roles", "Role history", "landscape", compute, blocks, needs_inventory=False))
