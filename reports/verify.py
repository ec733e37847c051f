"""``verify-report``: check a report PDF against the ledger.

1. Read the report data embedded in the PDF (``csledger-report.json``) and the state line in
   its document information; they must agree.
2. The ledger state: the entries ``0 .. tree_size-1`` of the registrant, read now, must hash to
   the root the report names (so the ledger was not rewritten under the report), and a signed
   checkpoint embedded in the report must verify and name the same size and root.
3. Every figure: recomputed from those entries with the report's own period and kind, compared
   with the embedded figures, naming each one that differs.
4. The printed text: the report is drawn again from the recomputed data and each page's text is
   compared with the PDF's, naming the first line that differs, so an edit to the visible page
   (not only to the embedded data) fails too.
"""

from __future__ import annotations

import difflib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ledger.storage.store import Ledger
from reports import checkpoint, layout
from reports.base import FORMAT, compute_data, kind_named, log_patient_reads, render_data
from reports.errors import ReportError
from reports.fmt import Period, parse_period
from reports.source import load_snapshot

MAX_PROBLEMS = 20


@dataclass
class ReportCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    summary: str = ""
    data: dict[str, Any] | None = None


def read_report_data(pdf: bytes) -> tuple[dict[str, Any], str | None]:
    """The embedded report data and the ``/CSLedgerState`` info line of a report PDF."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(pdf))
        attachments = reader.attachments
        blobs = attachments.get(layout.DATA_FILE) if layout.DATA_FILE in attachments else None
        info = reader.metadata or {}
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ReportError(f"not a readable PDF: {exc}") from None
    if not blobs:
        raise ReportError(f"this PDF carries no {layout.DATA_FILE}: it is not a csledger report")
    try:
        data = json.loads(blobs[0])
    except ValueError:
        raise ReportError(f"the embedded {layout.DATA_FILE} is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReportError(f"the embedded report data is not {FORMAT}")
    line = info.get("/" + layout.STATE_KEY)
    return data, (str(line) if line is not None else None)


def diff_values(ours: Any, theirs: Any, path: str = "figures") -> list[str]:
    """Paths where two JSON values differ, each with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for k in sorted(set(ours) | set(theirs), key=str):
            if k not in theirs:
                out.append(f"{path}.{k}: missing from the PDF; the ledger gives {json.dumps(ours[k])[:80]}")
            elif k not in ours:
                out.append(f"{path}.{k}: the PDF has {json.dumps(theirs[k])[:80]}, the ledger has no such figure")
            else:
                out.extend(diff_values(ours[k], theirs[k], f"{path}.{k}"))
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        out = []
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            out.extend(diff_values(a, b, f"{path}[{i}]"))
        if len(ours) != len(theirs):
            out.append(f"{path}: the PDF has {len(theirs)} items, the ledger gives {len(ours)}")
        return out
    if ours != theirs or type(ours) is not type(theirs):
        return [f"{path}: the PDF says {json.dumps(theirs)[:80]}, the ledger gives {json.dumps(ours)[:80]}"]
    return []


def _page_texts(pdf: bytes) -> list[str]:
    from pypdf import PdfReader

    return [p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages]


def _page_streams(pdf: bytes) -> list[bytes]:
    from pypdf import PdfReader

    out = []
    for p in PdfReader(io.BytesIO(pdf)).pages:
        c = p.get_contents()
        out.append(c.get_data() if c is not None else b"")
    return out


def compare_pages(expected: bytes, actual: bytes) -> list[str]:
    """Pages whose drawn content differs, naming the first differing line of text.

    Fast path: the decoded content streams are equal (the same ReportLab draws the same bytes).
    Where they differ (an edit, or another ReportLab version laying out the same text), the
    page's extracted text decides."""
    exp_streams, act_streams = _page_streams(expected), _page_streams(actual)
    problems = []
    if len(exp_streams) != len(act_streams):
        problems.append(f"the PDF has {len(act_streams)} pages; drawn from the ledger the report has {len(exp_streams)}")
    differing = [i for i, (a, b) in enumerate(zip(exp_streams, act_streams, strict=False)) if a != b]
    if not differing:
        return problems
    exp_text, act_text = _page_texts(expected), _page_texts(actual)
    for i in differing:
        a, b = exp_text[i].splitlines(), act_text[i].splitlines()
        if a == b:
            continue
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            was = " | ".join(a[i1:i2]) or "(nothing)"
            now = " | ".join(b[j1:j2]) or "(nothing)"
            problems.append(f"page {i + 1}: the PDF prints {now[:160]!r} where the ledger gives {was[:160]!r}")
            break
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


def verify_report(ledger: Ledger, pdf: bytes, *, reader: str | None = None) -> ReportCheck:
    """Check a report PDF against the ledger (see the module docstring). Never raises for a
    report that fails; raises ``ReportError`` only when the file is not a csledger report or
    the ledger cannot be read. Re-reading patient names from the registry writes one access-log
    row naming ``reader`` (None: the command line's operator)."""
    data, info_line = read_report_data(pdf)
    problems: list[str] = []
    state = data.get("state") or {}
    try:
        registrant, size, root = state["registrant"], int(state["tree_size"]), str(state["root"])
        kind = kind_named(data["kind"])
        period_in = data["period"]
    except (KeyError, TypeError, ValueError):
        raise ReportError("the embedded report data lacks its kind, period or ledger state") from None
    expected_line = f"csledger-state/1 {registrant} {size} {root}"
    if info_line != expected_line:
        problems.append(f"document information {layout.STATE_KEY} says {info_line!r}, the embedded data "
                        f"says {expected_line!r}")
    with ledger.reading() as conn:
        snap = load_snapshot(conn, registrant, size)
        cp_problems, cp_summary = checkpoint.check(conn, registrant, state)
    if snap.state.root != root:
        problems.append(f"ledger state: the first {size} entries of {registrant} now hash to root "
                        f"{snap.state.root}, the report names {root}: the ledger was rewritten after the "
                        "report was made, or the report was altered")
        return ReportCheck(False, problems, data=data)
    problems.extend(cp_problems)
    period: Period = parse_period(period_in["from"], period_in["to"], snap.registrant_entry["time_zone"])
    if period_in.get("time_zone") != period.tz:
        problems.append(f"period.time_zone: the PDF says {period_in.get('time_zone')!r}, the ledger gives {period.tz!r}")
    try:
        ours = compute_data(kind, snap, period, generated_at=data["generated"]["at"],
                            generated_by=data["generated"]["by"], paper=data.get("paper", "letter"),
                            params=data.get("params") if isinstance(data.get("params"), dict) else None)
    except ReportError as exc:
        return ReportCheck(False, problems + [f"the ledger gives no such report: {exc}"], data=data)
    del snap  # free the decoded entries before the pages are drawn again
    # The state recomputed may carry a checkpoint the report did not (signed later); compare
    # only what the report claims about the entries.
    ours["state"] = {**ours["state"], "checkpoint": state.get("checkpoint"),
                     "verifier_keys": state.get("verifier_keys", []), "witness_keys": state.get("witness_keys", [])}
    for key in ("registrant", "period", "title", "kind", "params", "figures"):
        problems.extend(diff_values(ours[key], data.get(key), key))
    if "annotations" in data:
        # Not derivable from the entries: re-read them (patient registry, with the key) where
        # this machine can, and compare; the page text is then checked against the PDF's own.
        ours["annotations"] = data["annotations"]
        fresh = kind.annotate(ledger, registrant, ours["figures"]) if kind.annotate else {}
        log_patient_reads(ledger, registrant, {**ours, "annotations": fresh}, reader, action="verify-report")
        if fresh:
            problems.extend(diff_values(fresh, data["annotations"], "annotations"))
            cp_summary += "; patient names and addresses checked against the registry"
        elif data["annotations"]:
            cp_summary += "; patient names and addresses NOT checked (no patient key here)"
    if len(problems) < MAX_PROBLEMS:
        problems.extend(compare_pages(render_data(ours), pdf))
    summary = (f"{kind.title} of {registrant}, {period.start} to {period.end}, built from tree size {size} "
               f"root {root}" + (f" ({cp_summary})" if cp_summary else ""))
    return ReportCheck(not problems, problems[:MAX_PROBLEMS], summary, data)
