"""The report framework: one function builds any report kind from a ledger snapshot, and the
same pieces let ``verify-report`` recompute it.

A report kind is a module-level ``ReportKind``: ``compute(snapshot, period) -> figures`` (pure,
JSON-ready: decimals as canonical strings) and ``blocks(data) -> [Block]`` (what is printed,
drawn only from ``data``). The report data embedded in the PDF is the figures plus the request
(kind, period, who and when) and the ledger state; ``verify-report`` recomputes the figures from
the entries up to that state's tree size and re-draws the pages from them, so both the embedded
figures and the printed text are checked against the ledger.
"""

from __future__ import annotations

import functools
import zlib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ledger.domain.errors import LedgerError
from ledger.integrity.canonical import format_time, parse_time
from ledger.storage.patient_access import cli_reader, log_report_access
from ledger.storage.store import Ledger, utcnow
from reports import layout
from reports.errors import ReportError
from reports.fmt import Period, local, parse_period
from reports.source import LedgerState, Snapshot, load_snapshot, of_kinds

FORMAT = "csledger-report/1"
#: Who made a report from the command line: it has no authenticated staff member.
CLI_OPERATOR = "csledger CLI (operator)"


@dataclass(frozen=True)
class ReportKind:
    name: str  # as on the command line: "receiving"
    title: str
    orientation: str  # "portrait" | "landscape"
    compute: Callable[[Snapshot, Period], dict[str, Any]]
    blocks: Callable[[dict[str, Any]], list[layout.Block]]
    #: Meanings of the wet-signature lines printed at the end (e.g. "reviewed").
    wet_signatures: tuple[str, ...] = ("reviewed",)
    #: Extra request parameters the kind needs (e.g. ``("vial",)``); with any, ``compute`` is
    #: called as ``compute(snapshot, period, params)``. They are embedded with the data.
    params: tuple[str, ...] = ()
    #: Data from outside the entries printed beside the figures (patient names from the encrypted
    #: registry): ``annotate(ledger, registrant, figures) -> dict``, embedded as ``annotations``.
    annotate: Callable[[Any, str, dict[str, Any]], dict[str, Any]] | None = None
    #: Offline check of embedded annotations against the figures (``verify-report --bundle``):
    #: ``check_annotations(annotations, figures) -> (problems, checked, not_checkable)``.
    check_annotations: Callable[[dict[str, Any], dict[str, Any]], tuple[list[str], int, int]] | None = None
    #: The kind's layout version: raised when a change makes an older report of the kind draw
    #: differently from the same data. A report embeds it (from 2 on) and ``verify-report`` says
    #: which release to verify an older one with, instead of a bare byte difference.
    layout: int = 1
    #: Records start with the initial inventory (``check_period``); reports of what exists before
    #: any stock (staff and roles, the patient-access log) say False (issue 20).
    needs_inventory: bool = True
    #: Online re-check of annotations read from outside the chain (issue 20: the patient-access
    #: log): ``recheck(ledger, registrant, annotations, figures) -> (problems, note)``; the rebuild
    #: uses the embedded annotations, so a row changed since is named, not silently redrawn.
    recheck: Callable[[Any, str, dict[str, Any], dict[str, Any]], tuple[list[str], str]] | None = None
    #: Roles that may read this kind where reports are read (None: every role that reads reports).
    readers: frozenset[str] | None = None
    #: Issue 20, one period: "always" (the audit runs between two counts, ``audit_window``),
    #: "optional" (a log printed beside an audit may be asked for the audit's window, so its
    #: totals are the audit's figures) or "never" (the asked local days).
    audit_window: str = "never"


KINDS: dict[str, ReportKind] = {}


def register(kind: ReportKind) -> ReportKind:
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> ReportKind:
    import importlib

    from reports import (  # noqa: F401  (registers the kinds)
        administrations,
        audit,
        breakage,
        corrections,
        counts,
        form106,
        inventory,
        patient_access,
        receiving,
        roles,
        transfers,
        vial,
        waste,
    )

    if name not in KINDS and name.isidentifier():
        # Kinds defined in other modules of this package (e.g. ``alerts_pdf``) register when
        # imported; a kind named on the command line or in a PDF is looked up by module name.
        for module in (f"{name}_pdf", name):
            try:
                importlib.import_module(f"{__package__}.{module}")
            except ModuleNotFoundError:
                continue
            if name in KINDS:
                break
    if name not in KINDS:
        raise ReportError(f"no report kind {name!r}; one of {', '.join(sorted(KINDS))}", field="kind")
    return KINDS[name]


def registrant_of(snap: Snapshot) -> dict[str, Any]:
    e = snap.registrant_entry
    return {"dea_number": e["dea_number"], "name": e["name"], "address": e["address"], "time_zone": e["time_zone"]}


def address_text(a: dict[str, str]) -> str:
    return f"{a['street']}, {a['city']}, {a['state']} {a['postal_code']}"


def first_inventory_at(snap: Snapshot) -> str | None:
    times = [e["occurred_at"] for e in of_kinds(snap.entries, "inventory_taken")]
    return min(times) if times else None


def check_period(snap: Snapshot, period: Period) -> None:
    """Records start with the initial inventory (21 CFR 1304.11(b)): a period that ends before
    it, or a ledger without one, has nothing a report could vouch for."""
    first = first_inventory_at(snap)
    if first is None:
        raise ReportError(f"{snap.state.registrant} has no initial inventory yet; take it before reporting",
                          field="registrant")
    if period.end_utc <= first:
        raise ReportError(f"the period ends before the first inventory ({local(first, period.tz)}); "
                          "choose a period from that day on", field="to")


def with_audit_window(kind: ReportKind, snap: Snapshot, period: Period, wanted: bool = False) -> Period:
    """The period as the kind reads it (issue 20): the audit always, and a log asked for it
    (``wanted``), over the audit's window between two counts (``ledger.services.audit.audit_window``,
    the same for the same days and entries, so ``verify-report`` finds it again); otherwise the
    asked local days. No window: a ``ReportError`` carrying the counts it could use (``offers``)."""
    if kind.audit_window == "never" or (kind.audit_window == "optional" and not wanted):
        if wanted:
            raise ReportError(f"the {kind.name} report is not made for an audit's window", field="window")
        return period
    from ledger.services.audit import NoAuditWindow, audit_window

    try:
        return period.with_window(audit_window(snap.entries, period))
    except NoAuditWindow as exc:
        err = ReportError(exc.reason, field=exc.field)
        err.offers = exc.offers  # type: ignore[attr-defined]
        err.problem_extra = exc.problem_extra  # type: ignore[attr-defined]
        raise err from None


def window_text(period: dict[str, Any], tz: str) -> str:
    """The audit window as printed: which count or inventory begins and ends it (local time, entry)."""
    w = period["window"]

    def what(src: dict[str, Any]) -> str:
        name = f"{src['inventory_type']} inventory" if src["kind"] == "inventory_taken" else "count"
        return f"the {name} of {local(src['occurred_at'], tz)}, entry {src['seq']}"

    first = " (the registrant's first period)" if w.get("first_period") else ""
    return f"from {what(w['begin'])} to {what(w['end'])}{first}"


def tzdata_version() -> str:
    """The IANA time zone database release ``zoneinfo`` reads: the system's (``tzdata.zi`` in
    the first ``TZPATH`` folder that has one, as ``zoneinfo`` itself searches ``TZPATH``
    first), else the ``tzdata`` package's; local times printed in a report depend on it."""
    for folder in zoneinfo.TZPATH:
        zi = Path(folder, "tzdata.zi")
        if zi.is_file():
            with zi.open("rb") as f:
                first = f.readline().decode("ascii", "replace").strip()
            return first.removeprefix("# version ").strip() or "unknown"
        if Path(folder, "UTC").is_file():
            return f"unknown (system zone files in {folder}, no tzdata.zi)"
    try:
        import tzdata  # type: ignore[import-not-found]
    except ImportError:
        return "none"
    return str(tzdata.IANA_VERSION)


@functools.cache
def build_versions() -> dict[str, str]:
    """What, besides the ledger and the request, decides a report's bytes: the ReportLab that
    draws it, the time zone data its local times come from, the ``holidays`` release (business-day
    deadlines) and the zlib that compresses its streams. Embedded as ``build``; ``verify-report``
    refuses to rebuild byte for byte under different ones. Cached: fixed for a process."""
    import holidays
    import reportlab

    return {"reportlab": str(reportlab.Version), "tzdata": tzdata_version(),
            "holidays": str(holidays.__version__), "zlib": zlib.ZLIB_RUNTIME_VERSION}


def compute_data(kind: ReportKind, snap: Snapshot, period: Period, *, generated_at: str, generated_by: str,
                 paper: str, params: dict[str, str] | None = None,
                 build: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole report data (what is embedded and what ``verify-report`` recomputes).

    Everything a build reads besides the entries is here, so the PDF is a function of (ledger at
    ``state.tree_size``, this data): the request (kind, period, params, paper), who and when
    (``generated``), the library versions (``build``, default: this process's), and, added by
    ``build_report``, the patient annotations."""
    if kind.needs_inventory:
        check_period(snap, period)
    params = {k: v for k, v in (params or {}).items() if v is not None}
    missing = [p for p in kind.params if not params.get(p)]
    if missing:
        raise ReportError(f"the {kind.name} report needs --{missing[0]}", field=missing[0])
    extra = sorted(set(params) - set(kind.params))
    if extra:
        raise ReportError(f"the {kind.name} report takes no --{extra[0]}", field=extra[0])
    figures = kind.compute(snap, period, params) if kind.params else kind.compute(snap, period)
    return {
        "format": FORMAT,
        "kind": kind.name,
        "title": kind.title,
        "registrant": registrant_of(snap),
        "period": period.to_json(),
        "generated": {"at": generated_at, "by": generated_by},
        "paper": paper,
        "state": snap.state.to_json(),
        "params": params,
        "figures": figures,
        "build": dict(build if build is not None else with_layout(build_versions(), kind)),
    }


def with_layout(build: dict[str, str], kind: ReportKind) -> dict[str, str]:
    """The build versions with the kind's layout version (only from layout 2: the data of a report
    of a kind never changed stays what it was, so older reports still rebuild byte for byte)."""
    return {**build, "layout": str(kind.layout)} if kind.layout > 1 else dict(build)


def state_lines(state: dict[str, Any]) -> tuple[str, ...]:
    """The ledger state as printed in every page footer."""
    lines = [
        f"Built from the ledger of {state['registrant']} at tree size {state['tree_size']:,} (entries 0 to "
        f"{state['tree_size'] - 1:,}).",
        f"Merkle root (RFC 9162, SHA-256): {state['root']}",
    ]
    if state.get("checkpoint"):
        from reports.checkpoint import describe

        lines.extend(describe(state))
    else:
        lines.append("Checkpoint: none signed at this tree size; the root above is recomputed from the entries.")
    lines.append("Check this report against the ledger: csledger verify-report FILE.pdf "
                 "(recomputes every figure from the entries).")
    return tuple(lines)


def frame_of(kind: ReportKind, data: dict[str, Any]) -> layout.Frame:
    reg = data["registrant"]
    period = data["period"]
    gen = data["generated"]
    st = data["state"]
    state = LedgerState(st["registrant"], st["tree_size"], st["root"], st.get("checkpoint"))
    return layout.Frame(
        title=kind.title,
        registrant_name=reg["name"],
        address=address_text(reg["address"]),
        dea=reg["dea_number"],
        period=f"{period['from']} to {period['to']} ({period['time_zone']})"
               + (f"; every figure is of the audit window {window_text(period, reg['time_zone'])}"
                  if period.get("window") else ""),
        generated=f"{local(gen['at'], reg['time_zone'])} by {gen['by']}",
        state_lines=state_lines(data["state"]),
        qr_text=state.qr_text(),
    )


def metadata_of(kind: ReportKind, data: dict[str, Any]) -> layout.Metadata:
    s = data["state"]
    line = f"csledger-state/1 {s['registrant']} {s['tree_size']} {s['root']}"
    created = parse_time(data["generated"]["at"]).strftime("D:%Y%m%d%H%M%SZ")
    return layout.Metadata(
        title=f"{kind.title}, {data['registrant']['dea_number']}, {data['period']['from']} to {data['period']['to']}",
        author=data["generated"]["by"],
        subject=f"csledger {kind.name} report built from ledger {s['registrant']} at tree size {s['tree_size']}, "
                f"root {s['root']}",
        keywords=f"csledger, {kind.name}, {line}",
        state_line=line,
        created=created,
    )


def render_data(data: dict[str, Any], out: BinaryIO | None = None) -> bytes:
    """Draw a report from its data alone (the build and ``verify-report`` both call this); given
    ``out`` (a file open for writing), the PDF is written there as it is made (``b""`` returned)."""
    kind = kind_named(data["kind"])
    blocks = list(kind.blocks(data))
    gen = data["generated"]
    blocks.append(layout.Signatures(
        signed=[(gen["by"], local(gen["at"], data["registrant"]["time_zone"], seconds=True),
                 "prepared (generated from the ledger state printed below)")],
        wet=list(kind.wet_signatures),
    ))
    return layout.render(frame_of(kind, data), blocks, paper=data["paper"], orientation=kind.orientation,
                         metadata=metadata_of(kind, data), data=data, out=out)


def log_patient_reads(ledger: Ledger, registrant: str, data: dict[str, Any], reader: str | None, *,
                      action: str) -> None:
    """One patient-access-log row for a report whose annotations decrypted patients' names and
    addresses (issue 16): ``reader`` (a staff id; None for the command line, which has no login:
    ``cli:<operating-system user>``), the report (kind, period, tree size) and every patient
    included. Written before the names leave this process; nothing when none were decrypted."""
    patients = (data.get("annotations") or {}).get("patients") or {}
    if not patients:
        return
    p = data["period"]
    report = (f"{data['kind']} {p['from']} to {p['to']} ({p['time_zone']}), "
              f"ledger tree size {data['state']['tree_size']}")
    log_report_access(ledger.engine, registrant, reader or cli_reader(), action=action, report=report,
                      patient_ids=patients, now=format_time(ledger.clock()))


def build_report_file(ledger: Ledger, kind_name: str, registrant: str, start: str, end: str, path: Path, *,
                      generated_by: str = CLI_OPERATOR, paper: str = "letter", params: dict[str, str] | None = None,
                      now: datetime | None = None, reader: str | None = None, report_key: Any = None,
                      audit_window: bool = False) -> tuple[bool, dict[str, Any]]:
    """``build_report`` into the file ``path``, never holding the PDF in memory (issue 22: a
    year's administration log of a clinic group runs to 100 MB): the unsigned report is written
    as its pages are drawn into a temporary file beside ``path``, and the certification signature
    is appended as pyhanko copies it into ``path``. Returns (signed, data); same bytes as
    ``build_report``'s."""
    import os
    import tempfile

    data, key = _report_data(ledger, kind_name, registrant, start, end, generated_by=generated_by, paper=paper,
                             params=params, now=now, reader=reader, report_key=report_key,
                             audit_window=audit_window)
    folder = Path(path).resolve().parent
    fd, unsigned = tempfile.mkstemp(prefix=".csledger-report-", suffix=".pdf", dir=folder)
    signed = f"{unsigned}.signed"
    try:
        with os.fdopen(fd, "wb") as f:
            render_data(data, out=f)
        if key is None:
            os.replace(unsigned, path)
            return False, data
        from reports.signing import sign_report_file

        sign_report_file(Path(unsigned), Path(signed), key, parse_time(data["generated"]["at"]))
        os.replace(signed, path)  # only a whole, signed report ever takes the file's name
        return True, data
    finally:
        for leftover in (unsigned, signed):
            if os.path.exists(leftover):
                os.unlink(leftover)


def build_report(ledger: Ledger, kind_name: str, registrant: str, start: str, end: str, *,
                 generated_by: str = CLI_OPERATOR, paper: str = "letter", params: dict[str, str] | None = None,
                 now: datetime | None = None, reader: str | None = None,
                 report_key: Any = None, audit_window: bool = False) -> tuple[bytes, dict[str, Any]]:
    """Build one report from the ledger as it is now; return the PDF bytes and its data.

    The PDF is signed with the registrant's certified report key (``signing_key``): a PAdES
    certification signature allowing no changes, appended to the unsigned report as a second
    revision (``reports.signing``).

    ``audit_window``: a log printed beside an audit (administrations, waste) is made for the
    audit's window of the same days (issue 20), so its totals are the audit's figures.

    ``reader`` is who the patient access log names when the report decrypts patient names (the
    signed-in staff id; None for the command line's operator, see ``log_patient_reads``).

    Raises ``ReportError`` with a clear message for an unknown registrant or kind, an empty or
    inverted period, a period before the first inventory, or nothing to report.
    """
    data, key = _report_data(ledger, kind_name, registrant, start, end, generated_by=generated_by, paper=paper,
                             params=params, now=now, reader=reader, report_key=report_key,
                             audit_window=audit_window)
    pdf = render_data(data)
    if key is None:
        return pdf, data
    from reports.signing import sign_report

    return sign_report(pdf, key, parse_time(data["generated"]["at"])), data


def _report_data(ledger: Ledger, kind_name: str, registrant: str, start: str, end: str, *, generated_by: str,
                 paper: str, params: dict[str, str] | None, now: datetime | None, reader: str | None,
                 report_key: Any, audit_window: bool) -> tuple[dict[str, Any], Any]:
    """The report data of a new report (with its annotations, their reads logged) and the key
    that signs it (None: unsigned); see ``build_report``."""
    kind = kind_named(kind_name)
    if paper not in layout.PAPERS:
        raise ReportError(f"paper must be one of {', '.join(layout.PAPERS)}", field="paper")
    # Issue 22: the entries are streamed, never held (``EntryStream``): each pass of the kind's
    # computation reads them again in this one read transaction, so memory stays flat in them.
    with ledger.reading() as conn:
        snap = load_snapshot(conn, registrant, stream=True)
        period = parse_period(start, end, snap.registrant_entry["time_zone"])
        if kind.needs_inventory:
            check_period(snap, period)  # before the window: a ledger with no inventory says so
        period = with_audit_window(kind, snap, period, audit_window)
        data = compute_data(kind, snap, period, generated_at=format_time(now or utcnow()),
                            generated_by=generated_by, paper=paper, params=params)
        key = signing_key(ledger, registrant, snap, report_key)
    del snap
    if kind.annotate is not None:
        data["annotations"] = kind.annotate(ledger, registrant, data["figures"])
        log_patient_reads(ledger, registrant, data, reader, action="report")
    return data, key


def signing_key(ledger: Ledger, registrant: str, snap: Snapshot, report_key: Any = None) -> Any:
    """The report key a new report is signed with (issue 18): ``report_key`` if given, else the
    registrant's key file in the ledger's key folder (``ledger.report_key_dir``, set by
    ``ledger.storage.log.attach`` from the settings' ``key_dir``); None when there is none (the
    report is then unsigned, and ``verify-report`` refuses it as "not signed"). A key whose
    certificate no ``report_key_certified`` entry records is refused: it would sign reports no
    verifier accepts."""
    from ledger.services.report_key import certified_certificates, load_report_key

    if report_key is None:
        key_dir = getattr(ledger, "report_key_dir", None)
        if key_dir is None:
            return None
        try:
            report_key = load_report_key(Path(key_dir), registrant)
        except LedgerError as exc:
            raise ReportError(str(exc), field="key_dir") from None
        if report_key is None:
            return None
    if report_key.certificate_der not in {der for _, der in certified_certificates(
            of_kinds(snap.entries, "report_key_certified"))}:
        raise ReportError(f"the report key of {registrant} ({report_key.fingerprint}) is not certified in the ledger: "
                          "an administrator certifies a new one with `csledger keys report-key`", field="key_dir")
    return report_key
