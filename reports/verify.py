"""``verify-report``: rebuild a report PDF from the ledger and require the same bytes.

1. Read the report data embedded in the PDF (``csledger-report.json``) and the state line in
   its document information; they must agree. The data holds every input of the build besides
   the entries: the request (kind, period, params, paper), who and when it was made for
   (``generated``), the ReportLab, tzdata, ``holidays`` and zlib versions (``build``) and the
   patient annotations.
2. The ledger state: the entries ``0 .. tree_size-1`` of the registrant, read now, must hash to
   the root the report names (so the ledger was not rewritten under the report), and a signed
   checkpoint embedded in the report must verify and name the same size and root.
3. Every figure: recomputed from those entries with the report's own period and kind, compared
   with the embedded figures, naming each one that differs (patient names re-read from the
   registry where the patient key is configured).
4. The bytes: the PDF is built again (deterministic: ReportLab's invariant mode, same versions,
   same inputs) and the file must equal it byte for byte. Comparing extracted text is not enough:
   an annotation drawn over a figure, or a font ``/Encoding /Differences`` that draws the glyph of
   8 for the code of a 1, leaves the content streams and often the extracted text untouched. On a
   difference the first differing offset is named, with the page text that differs (the first
   differing line) or, where the text matches, what in the page's objects changed.

5. The certification signature (``reports.signing``): the report is two revisions, the unsigned
   report (what step 4 compares: the bytes up to the first ``%%EOF``) and one incremental update
   adding only a PAdES certification signature allowing no changes (DocMDP P=1) that covers the
   whole file, so nothing follows it. Its signer certificate must be one a
   ``report_key_certified`` entry of the registrant recorded at or before the report's tree size
   (an administrator signed it); a certificate is never trusted from the PDF alone. An unsigned
   report is refused ("not signed").

6. Offline (``verify_report_offline``, ``csledger verify-report FILE --bundle BUNDLE``): the same
   checks with no database. The bundle must verify whole (``verify-bundle``: hashes, chain, signed
   checkpoint, staff signatures; under the keys given out of band, else its own, and then a note
   says so); the report's entries are the bundle's first ``tree_size`` entries, its checkpoint is
   checked under the same keys, and the certified report keys are read from those entries. Patient
   names cannot be re-read (bundles carry none): the report embeds each patient's name and address
   fields with the opening of the entries' salted commitment, and each must open it.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import io
import json
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ledger.integrity.canonical import parse_time
from ledger.storage.store import Ledger
from reports import checkpoint, layout
from reports.base import (
    FORMAT,
    ReportKind,
    build_versions,
    compute_data,
    kind_named,
    log_patient_reads,
    render_data,
    with_audit_window,
)
from reports.errors import ReportError
from reports.fmt import Period, parse_period
from reports.rowfile import RowFile, json_chunks
from reports.source import LedgerState, Snapshot, load_snapshot, of_kinds

MAX_PROBLEMS = 20


@dataclass
class ReportCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    summary: str = ""
    data: dict[str, Any] | None = None
    #: What the reader should know that is not a failure (e.g. keys taken from the bundle itself).
    notes: list[str] = field(default_factory=list)


def read_report_data(pdf: bytes | BinaryIO) -> tuple[dict[str, Any], str | None]:
    """The embedded report data and the ``/CSLedgerState`` info line of a report PDF (its bytes,
    or the file open for reading: then the data is decompressed and parsed as it is read, and
    its long arrays of figures kept on disk, issue 22)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(pdf) if isinstance(pdf, bytes | bytearray) else pdf)
        stream = _embedded_stream(reader)
        if stream is None:
            attachments = reader.attachments
            blobs = attachments.get(layout.DATA_FILE) if layout.DATA_FILE in attachments else None
            pieces: Iterator[bytes] | None = iter(blobs[:1]) if blobs else None
        else:
            pieces = stream
        info = reader.metadata or {}
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ReportError(f"not a readable PDF: {exc}") from None
    if pieces is None:
        raise ReportError(f"this PDF carries no {layout.DATA_FILE}: it is not a csledger report")
    try:
        data = _parse_data(pieces)
    except (ValueError, UnicodeDecodeError, zlib.error):
        raise ReportError(f"the embedded {layout.DATA_FILE} is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReportError(f"the embedded report data is not {FORMAT}")
    line = info.get("/" + layout.STATE_KEY)
    return data, (str(line) if line is not None else None)


def _embedded_stream(reader: Any) -> Iterator[bytes] | None:
    """The embedded report data as ``reports.layout`` writes it (one name in the catalog's
    ``/EmbeddedFiles``, a stream compressed with ``/FlateDecode`` alone), decompressed a piece at
    a time; None for any other shape (``read_report_data`` then asks pypdf for the whole file)."""
    from pypdf.generic import ArrayObject, StreamObject

    try:
        names = reader.trailer["/Root"]["/Names"]["/EmbeddedFiles"]["/Names"]
        if not isinstance(names, ArrayObject) or len(names) != 2 or str(names[0]) != layout.DATA_FILE:
            return None
        obj = names[1].get_object()["/EF"]["/F"].get_object()
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
    filters = obj.get("/Filter") if isinstance(obj, StreamObject) else None
    if isinstance(filters, ArrayObject) and len(filters) == 1:
        filters = filters[0]
    if filters != "/FlateDecode" or "/DecodeParms" in obj or "/DP" in obj:
        return None
    raw = obj._data  # the compressed bytes (a long report's data is ten times as long decompressed)

    def pieces() -> Iterator[bytes]:
        z = zlib.decompressobj()
        for at in range(0, len(raw), 1 << 16):
            yield z.decompress(raw[at:at + (1 << 16)])
        yield z.flush()

    return pieces()


#: Arrays of figures longer than this are kept on disk (``RowFile``) as they are parsed.
SPILL_AT = 1000
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


class _Text:
    """JSON text decoded from UTF-8 pieces, consumed from the front (``buf[pos:]`` is unread)."""

    def __init__(self, pieces: Iterator[bytes]):
        import codecs

        self._pieces, self._utf8 = pieces, codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.done = "", 0, False

    def more(self, at_least: int = 1) -> bool:
        """Read at least ``at_least`` more characters (fewer at the end); False at the end."""
        if self.done:
            return False
        got: list[str] = [self.buf[self.pos:]]
        want = len(got[0]) + at_least
        have = len(got[0])
        while have < want:
            piece = next(self._pieces, None)
            if piece is None:
                got.append(self._utf8.decode(b"", final=True))
                self.done = True
                break
            text = self._utf8.decode(piece)
            got.append(text)
            have += len(text)
        self.buf, self.pos = "".join(got), 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, expected: str) -> str:
        c = self.peek()
        if c not in expected or not c:
            raise ValueError(f"expected one of {expected!r}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """The next whole JSON value (``json``'s own decoder, on as much text as it needs)."""
        self.peek()
        while True:
            try:
                v, end = _DECODER.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.done:  # a number at the end may go on
                    self.pos = end
                    return v
            except ValueError:
                if self.done:
                    raise
            # Grow the unread text geometrically: a long value is decoded O(its length) times.
            self.more(max(len(self.buf) - self.pos, 1 << 16))


def _parse_data(pieces: Iterator[bytes]) -> Any:
    """``json.loads`` of the text in ``pieces``, read as it comes: the figures' arrays go to disk
    (``RowFile``) once longer than ``SPILL_AT``; every other value is decoded by ``json`` itself.
    Duplicate keys keep the last value, as ``json.loads`` does."""
    t = _Text(pieces)
    if t.peek() != "{":
        v = t.value()
    else:
        v = _object(t)
    if t.peek():
        raise ValueError("extra data after the report data")
    return v


def _object(t: _Text) -> dict[str, Any]:
    """The report data's top-level object at ``t`` (its ``{`` next), the figures read by
    ``_figures``."""
    return _members(t, lambda key: _figures(t) if key == "figures" and t.peek() == "{" else t.value())


def _figures(t: _Text) -> dict[str, Any]:
    """The figures object: each array in it parsed item by item, long ones kept on disk."""
    return _members(t, lambda _key: _array(t) if t.peek() == "[" else t.value())


def _members(t: _Text, value: Callable[[str], Any]) -> dict[str, Any]:
    """An object at ``t`` (its ``{`` next), each member's value read by ``value(key)``."""
    t.take("{")
    out: dict[str, Any] = {}
    if t.peek() == "}":
        t.pos += 1
        return out
    while True:
        key = t.value()
        if not isinstance(key, str):
            raise ValueError("an object key is not a string")
        t.take(":")
        out[key] = value(key)
        if t.take(",}") == "}":
            return out


def _array(t: _Text) -> list[Any] | RowFile:
    t.take("[")
    items: list[Any] | RowFile = []
    if t.peek() == "]":
        t.pos += 1
        return items
    while True:
        items.append(t.value())
        if isinstance(items, list) and len(items) > SPILL_AT:
            items = RowFile(items)
        if t.take(",]") == "]":
            return items


def _short(value: Any) -> str:
    """The JSON text of a value as a problem names it (its first 80 characters; a ``RowFile`` is
    read no further than that)."""
    if not isinstance(value, RowFile):
        return json.dumps(value)[:80]
    text = ""
    for piece in json_chunks(value):
        text += piece.decode("utf-8", "replace")
        if len(text) >= 80:
            break
    return text[:80]


def diff_values(ours: Any, theirs: Any, path: str = "figures") -> list[str]:
    """Paths where two JSON values differ, each with both values (``path`` "": the top level).
    Arrays may be ``RowFile``s (kept on disk, issue 22): compared row by row as they are read, two
    rows of the same JSON text without decoding them."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for k in sorted(set(ours) | set(theirs), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in theirs:
                out.append(f"{sub}: missing from the PDF; the ledger gives {_short(ours[k])}")
            elif k not in ours:
                out.append(f"{sub}: the PDF has {_short(theirs[k])}, the ledger has no such figure")
            else:
                out.extend(diff_values(ours[k], theirs[k], sub))
        return out
    if isinstance(ours, list | RowFile) and isinstance(theirs, list | RowFile):
        out = []
        if isinstance(ours, RowFile) and isinstance(theirs, RowFile):
            for i, (a, b) in enumerate(zip(ours.texts(), theirs.texts(), strict=False)):
                if a != b:  # the same canonical text is the same value, types included
                    out.extend(diff_values(json.loads(a), json.loads(b), f"{path}[{i}]"))
        else:
            for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
                out.extend(diff_values(a, b, f"{path}[{i}]"))
        if len(ours) != len(theirs):
            out.append(f"{path}: the PDF has {len(theirs)} items, the ledger gives {len(ours)}")
        return out
    if ours != theirs or type(ours) is not type(theirs):
        return [f"{path}: the PDF says {_short(theirs)}, the ledger gives {_short(ours)}"]
    return []


def _page_texts(pdf: bytes) -> list[str]:
    from pypdf import PdfReader

    return [p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf)).pages]


def compare_pages(expected: bytes, actual: bytes) -> list[str]:
    """Pages whose extracted text differs, naming the first differing line of each (and a page
    count that differs). Text extraction applies the fonts' encodings, so a ``/Differences``
    remap of a glyph shows here as the figure it now draws."""
    exp_text, act_text = _page_texts(expected), _page_texts(actual)
    problems = []
    if len(exp_text) != len(act_text):
        problems.append(f"the PDF has {len(act_text)} pages; drawn from the ledger the report has {len(exp_text)}")
    for i, (exp, act) in enumerate(zip(exp_text, act_text, strict=False)):
        a, b = exp.splitlines(), act.splitlines()
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


def first_difference(a: bytes, b: bytes) -> int:
    """The first offset at which two byte strings differ (the shorter length if one is a prefix)."""
    n = min(len(a), len(b))
    lo = 0
    # Compare in blocks first: reports run to megabytes and usually differ late.
    step = 1 << 16
    while lo < n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return min(lo, n)


_OBJ = re.compile(rb"(\d+) (\d+) obj\b")


def _object_at(pdf: bytes, offset: int) -> str:
    """Where ``offset`` falls in ``pdf``: " (in object N)", " (in the file header)" or "" (between
    objects: the cross-reference table, the trailer)."""
    last = None
    for m in _OBJ.finditer(pdf, 0, offset + 1):
        last = m
    if last is None:
        return " (in the file header)"
    if pdf.find(b"endobj", last.end(), offset) != -1:
        return ""
    return f" (in object {int(last.group(1))})"


def _plain(obj: Any, depth: int = 0) -> Any:
    """A pypdf object as plain, comparable values: references resolved (``/Parent`` skipped, a
    page's resources reach fonts and forms), streams by their decoded bytes."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, StreamObject

    if isinstance(obj, IndirectObject):
        obj = obj.get_object()
    if depth > 8:
        return repr(obj)[:200]
    if isinstance(obj, DictionaryObject):
        out: dict[str, Any] = {str(k): _plain(v, depth + 1) for k, v in obj.items() if k != "/Parent"}
        if isinstance(obj, StreamObject):
            try:
                out["(stream)"] = obj.get_data()
            except Exception:  # an undecodable stream: compare its raw bytes
                out["(stream)"] = bytes(obj._data or b"")
        return out
    if isinstance(obj, ArrayObject):
        return [_plain(v, depth + 1) for v in obj]
    return repr(obj)


def _first_path(a: Any, b: Any, path: str = "") -> str | None:
    """The first key path at which two ``_plain`` values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}{k} was {'added' if k not in a else 'removed'}"
            found = _first_path(a[k], b[k], f"{path}{k} " if k != "(stream)" else f"{path}content ")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path.strip()} has {len(b)} items (the rebuilt report has {len(a)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_path(x, y, f"{path}[{i}] ")
            if found:
                return found
        return None
    if a != b:
        return f"{path.strip() or 'the page dictionary'} differs"
    return None


def _page_object_changes(expected: bytes, actual: bytes) -> list[tuple[int, str]]:
    """(page number, what differs) for each page whose objects differ from the rebuilt ones:
    an added ``/Annots``, a font's ``/Encoding``, a content stream."""
    from pypdf import PdfReader

    exp, act = PdfReader(io.BytesIO(expected)).pages, PdfReader(io.BytesIO(actual)).pages
    out = []
    for i, (pe, pa) in enumerate(zip(exp, act, strict=False)):
        where = _first_path(_plain(pe), _plain(pa))
        if where:
            out.append((i + 1, where))
    return out


EDIT_KINDS = "an edit that does not change the extracted text (an annotation, a font encoding, an appended update)"


def explain_bytes(rebuilt: bytes, pdf: bytes, *, data_differs: bool) -> list[str]:
    """Why a PDF that is not the rebuilt report differs from it: an appended update, the page
    text (first differing line), or, where the text matches, the page objects that changed,
    always with the first differing byte offset."""
    off = first_difference(rebuilt, pdf)
    if len(pdf) > len(rebuilt) and pdf.startswith(rebuilt):
        return [f"the PDF is the rebuilt report followed by {len(pdf) - len(rebuilt):,} more bytes from offset "
                f"{off:,} (after its %%EOF): an "
                "appended (incremental) update, which can add annotations or replace pages without touching the "
                "report's own bytes"]
    at = f"offset {off:,}{_object_at(pdf, off)}"
    if len(pdf) < len(rebuilt) and rebuilt.startswith(pdf):
        return [f"the PDF ends at offset {len(pdf):,}; the rebuilt report is {len(rebuilt):,} bytes: it was cut short"]
    try:
        text = compare_pages(rebuilt, pdf)
    except Exception as exc:  # a PDF pypdf cannot read back in full: the offset still says it differs
        text = [f"the PDF's pages cannot be read back ({type(exc).__name__})"]
    if text:
        return [*text, f"the PDF bytes differ from the report rebuilt from the ledger from {at}"]
    if data_differs:
        return [f"the page text matches but the PDF bytes differ from {at}: the embedded report data "
                "differs from the ledger (above)"]
    try:
        changes = _page_object_changes(rebuilt, pdf)
    except Exception:
        changes = []
    if changes:
        return [f"page {n}: the text matches but the PDF bytes differ at {at}: in the page's objects {what}: "
                f"{EDIT_KINDS}" for n, what in changes[:MAX_PROBLEMS]]
    return [f"the text matches but the PDF bytes differ from the rebuilt report at {at}: {EDIT_KINDS}"]


def check_build(built: Any, kind: Any = None) -> str | None:
    """Why this verifier cannot rebuild the report byte for byte (other library versions, or an
    earlier layout of the report's kind), or None."""
    here = build_versions()
    if not isinstance(built, dict):
        return ("the report embeds no build versions (made before reports recorded them): cannot rebuild it "
                "byte for byte; make it again with this csledger")
    names = {"reportlab": "ReportLab", "tzdata": "tzdata", "holidays": "holidays", "zlib": "zlib"}
    for key, name in names.items():
        if built.get(key) != here[key]:
            return (f"built with {name} {built.get(key)}, this verifier has {name} {here[key]}: cannot rebuild "
                    "byte for byte (install the same version to verify this report)")
    made = str(built.get("layout", "1"))
    if kind is not None and made != str(kind.layout):
        return (f"made with layout {made} of the {kind.name} report; this csledger draws layout {kind.layout}: "
                "verify it with the csledger release that made it (the entries it cites still verify with "
                "csledger verify --deep)")
    return None


class _Online:
    """Where ``verify_report`` reads the ledger from: the live database."""

    def __init__(self, ledger: Ledger, reader: str | None):
        self.ledger, self.reader = ledger, reader

    def load(self, registrant: str, size: int, state: dict[str, Any],
             held: contextlib.ExitStack) -> tuple[Snapshot | None, list[str], str]:
        """The snapshot at ``size``, streamed (issue 22: its entries are read again on each pass,
        never held) inside a read transaction ``held`` keeps open until the figures are
        recomputed, so every pass reads the entries whose root was checked."""
        from ledger.services.signature_check import StaffSignatureCheck

        conn = held.enter_context(self.ledger.reading())
        snap = load_snapshot(conn, registrant, size, stream=True)
        problems, summary = checkpoint.check(conn, registrant, state)
        # The people's own signatures over the entries the report is built from (issue 17), as
        # ``--bundle`` checks them: a report key certification, or any entry, that no
        # administrator's credential signed must not vouch for a report, whoever holds the log key.
        staff = StaffSignatureCheck(registrant)
        bad = staff.feed_all(snap.entries)
        problems += [f"staff signatures: entry {p.seq}: {p.text}" for p in bad[:5]]
        if len(bad) > 5:
            problems.append(f"staff signatures: {len(bad) - 5} more entries fail (run csledger verify)")
        return snap, problems, summary

    def annotations(self, kind: ReportKind, registrant: str, data: dict[str, Any],
                    ours: dict[str, Any]) -> tuple[Any, list[str], str]:
        if kind.recheck is not None:  # rows kept beside the chain (issue 20): re-read, named if changed
            problems, note = kind.recheck(self.ledger, registrant, data["annotations"], ours["figures"])
            return data["annotations"], problems, note
        # Not derivable from the entries: re-read them (patient registry, with the key) where
        # this machine can; without the key the embedded ones are rebuilt with, unchecked.
        embedded_names = bool((data["annotations"] or {}).get("patients")) if isinstance(data["annotations"], dict) \
            else True
        # A report made without the key prints ids only and claims no names: nothing to re-read.
        fresh = kind.annotate(self.ledger, registrant, ours["figures"]) if kind.annotate and embedded_names else {}
        log_patient_reads(self.ledger, registrant, {**ours, "annotations": fresh}, self.reader, action="verify-report")
        if fresh:
            return fresh, [], "patient names and addresses checked against the registry"
        return data["annotations"], [], ("patient names and addresses NOT checked (no patient key here)"
                                         if data["annotations"] else "")


class _Offline:
    """Where ``verify_report`` reads the ledger from with ``--bundle``: an exported bundle, which
    must verify as ``verify-bundle`` checks it (under the keys obtained out of band when given)."""

    def __init__(self, bundle: Path, trusted_log_keys: list[str] | None, trusted_witness_keys: list[str] | None,
                 trusted_staff_root: str | None):
        self.bundle, self.log_keys, self.witness_keys = Path(bundle), trusted_log_keys, trusted_witness_keys
        self.staff_root = trusted_staff_root
        self.notes: list[str] = []

    def load(self, registrant: str, size: int, state: dict[str, Any],
             held: contextlib.ExitStack) -> tuple[Snapshot | None, list[str], str]:
        from ledger.integrity import canonical as canon
        from ledger.integrity import checkpoints as cp
        from ledger.integrity import merkle
        from ledger.services.bundle import BundleError, read_bundle_prefix, verify_bundle

        rep = verify_bundle(self.bundle, trusted_log_keys=self.log_keys, trusted_witness_keys=self.witness_keys,
                            trusted_staff_root=self.staff_root)
        self.notes.extend(rep.notes)
        if not rep.ok:
            return None, [f"the bundle {self.bundle.name} does not verify: {rep.problem}"], ""
        if rep.registrant != registrant:
            return None, [f"the bundle is the ledger of {rep.registrant}; the report is of {registrant}"], ""
        if size > rep.tree_size:
            return None, [f"the bundle ends at tree size {rep.tree_size}; the report was built at {size}: export a "
                          "newer bundle (`csledger export`)"], ""
        try:
            header, lines = read_bundle_prefix(self.bundle, size)
        except (BundleError, OSError) as exc:
            return None, [f"the bundle cannot be read again: {exc}"], ""
        acc = merkle.RootAccumulator()
        entries = []
        for line in lines:
            acc.push(canon.leaf_hash(line))
            entries.append(canon.decode(line))
        snap = Snapshot(LedgerState(registrant, size, acc.root().hex(), None, tuple(header["log_keys"]),
                                    tuple(header["witness_keys"])), entries)
        problems: list[str] = []
        summary = ""
        note = state.get("checkpoint")
        if note:
            log_vs = checkpoint.verifiers(self.log_keys or header["log_keys"])
            wit_vs = checkpoint.verifiers(self.witness_keys if self.witness_keys is not None
                                          else header["witness_keys"])
            problems, summary = checkpoint.check_note(note, size, str(state.get("root")), log_vs,
                                                      {(v.name, v.key_id): v for v in wit_vs
                                                       if v.sig_type == cp.SIG_COSIGNATURE_V1},
                                                      keys="the pinned log keys" if self.log_keys
                                                      else "the bundle's log keys")
        # The bundle's checkpoint (verified above) covers every one of its entries, and the
        # report's entries are its first ``size``: the log was not forked after the report.
        summary += ("; " if summary else "") + (f"the bundle's checkpoint (size {rep.tree_size}, log key "
                                                f"{'pinned' if rep.keys_trusted else 'from the bundle'}) extends it")
        return snap, problems, summary

    def annotations(self, kind: ReportKind, registrant: str, data: dict[str, Any],
                    ours: dict[str, Any]) -> tuple[Any, list[str], str]:
        annotations = data["annotations"]
        if kind.recheck is not None:  # kept beside the chain, not in a bundle (issue 20)
            return annotations, [], (f"{kind.name}: the rows it prints are kept beside the ledger, not in the bundle: "
                                     "NOT checked offline (check online)")
        patients = annotations.get("patients") if isinstance(annotations, dict) else None
        if not patients:
            return annotations, [], ""
        if kind.check_annotations is None:
            return annotations, [f"{kind.name}: this report kind's annotations cannot be checked offline"], ""
        problems, checked, unopenable = kind.check_annotations(annotations, ours["figures"])
        note = f"{checked} patient name(s) and address(es) open the commitments in the entries"
        if unopenable:
            note += (f"; {unopenable} NOT checked offline (their commitments were recorded before openable "
                     "commitments; check online)")
        return annotations, problems, note


def verify_report(ledger: Ledger, pdf: bytes | Path, *, reader: str | None = None) -> ReportCheck:
    """Check a report PDF against the ledger (see the module docstring). Never raises for a
    report that fails; raises ``ReportError`` only when the file is not a csledger report or
    the ledger cannot be read. Re-reading patient names from the registry writes one access-log
    row naming ``reader`` (None: the command line's operator).

    ``pdf``: the report's bytes, or its path (issue 22: then memory stays flat in the report's
    length: the file, the entries and the rebuilt report are read a piece at a time)."""
    return _verify(pdf, _Online(ledger, reader))


def verify_report_offline(pdf: bytes | Path, bundle: Path, *, trusted_log_keys: list[str] | None = None,
                          trusted_witness_keys: list[str] | None = None,
                          trusted_staff_root: str | None = None) -> ReportCheck:
    """Check a report PDF against an exported bundle, with no database (``--bundle``): the same
    checks as :func:`verify_report`, the entries, keys and certified report keys read from the
    bundle (after it verifies whole), patient names checked by opening the entries' commitments.
    ``trusted_*`` are what the inspector obtained out of band (else the bundle's own keys, and a
    note says so)."""
    source = _Offline(bundle, trusted_log_keys, trusted_witness_keys, trusted_staff_root)
    result = _verify(pdf, source)
    result.notes = source.notes + result.notes
    return result


class _Window(io.RawIOBase):
    """The first ``end`` bytes of a file, as a file of their own (the first revision of a
    report given as a file, read without copying it)."""

    def __init__(self, f: BinaryIO, end: int):
        super().__init__()
        self._f, self._end, self._pos = f, end, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._end - self._pos))
        self._f.seek(self._pos)
        data = self._f.read(n)
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return f.read(end - start)


def _same_file(a: BinaryIO, b: BinaryIO, end: int) -> bool:
    """Whether the file ``a`` is exactly the first ``end`` bytes of ``b``, read a block at a time."""
    if a.seek(0, io.SEEK_END) != end:
        return False
    a.seek(0)
    b.seek(0)
    left = end
    while left:
        block = a.read(min(1 << 20, left))
        if not block or block != b.read(len(block)):
            return False
        left -= len(block)
    return True


def _verify(pdf: bytes | Path, source: _Online | _Offline) -> ReportCheck:
    """``verify_report`` of a PDF given as bytes, or as a file path (issue 22: a long report is
    read, rebuilt and compared a block at a time, never held in memory)."""
    with contextlib.ExitStack() as files:
        file = None if isinstance(pdf, bytes | bytearray) else files.enter_context(Path(pdf).open("rb"))
        return _check(pdf if file is None else file, source, files)  # type: ignore[arg-type]


def _check(pdf: bytes | BinaryIO, source: _Online | _Offline, files: contextlib.ExitStack) -> ReportCheck:
    from ledger.services.report_key import certified_certificates
    from reports.signing import certificate_summary, inspect_signature

    signature = inspect_signature(pdf)
    # The report proper is the first revision; an unsigned file is compared whole (so an update
    # appended to it is named as such), and refused for want of a signature anyway.
    if isinstance(pdf, bytes | bytearray):
        report_pdf: bytes | BinaryIO = signature.first_revision if signature.signed else pdf
        end = len(report_pdf)  # type: ignore[arg-type]
    else:
        end = signature.first_end if signature.signed else pdf.seek(0, io.SEEK_END)
        report_pdf = io.BufferedReader(_Window(pdf, end), 1 << 16)  # type: ignore[arg-type]

    def report_bytes() -> bytes:  # a report that differs is explained from its bytes
        return report_pdf if isinstance(report_pdf, bytes) else _read(pdf, 0, end)  # type: ignore[arg-type]

    data, info_line = read_report_data(report_pdf)
    # pyhanko's and pypdf's readers are cycles (each object points back at its reader) holding
    # the parsed cross-reference tables and the compressed report data: freed now, not during
    # the rebuild, where a long report's peak is (issue 22).
    gc.collect()
    problems: list[str] = list(signature.problems)
    state = data.get("state") or {}
    try:
        registrant, size, root = state["registrant"], int(state["tree_size"]), str(state["root"])
        kind = kind_named(data["kind"])
        period_in = data["period"]
        generated = {"at": str(data["generated"]["at"]), "by": str(data["generated"]["by"])}
    except (KeyError, TypeError, ValueError):
        raise ReportError("the embedded report data lacks its kind, period, who/when or ledger state") from None
    if data.get("paper", "letter") not in layout.PAPERS:
        raise ReportError(f"the embedded report data names paper {str(data.get('paper'))[:40]!r}, not one of "
                          f"{', '.join(layout.PAPERS)}")
    build_problem = check_build(data.get("build"), kind)
    if build_problem:
        problems.append(build_problem)
    expected_line = f"csledger-state/1 {registrant} {size} {root}"
    if info_line != expected_line:
        problems.append(f"document information {layout.STATE_KEY} says {info_line!r}, the embedded data "
                        f"says {expected_line!r}")
    # Issue 22: the read transaction the entries are streamed in is held up to the recomputed
    # figures, then ended (annotations and the rebuild read no entry).
    reading = files.enter_context(contextlib.ExitStack())
    snap, cp_problems, cp_summary = source.load(registrant, size, state, reading)
    if snap is None:
        return ReportCheck(False, problems + cp_problems, data=data)
    certified = certified_certificates(of_kinds(snap.entries, "report_key_certified"))
    if snap.state.root != root:
        problems.append(f"ledger state: the first {size} entries of {registrant} now hash to root "
                        f"{snap.state.root}, the report names {root}: the ledger was rewritten after the "
                        "report was made, or the report was altered")
        return ReportCheck(False, problems, data=data)
    problems.extend(cp_problems)
    signer_note = ""
    if signature.signed and signature.signer_der is not None:
        seqs = [seq for seq, der in certified if der == signature.signer_der]
        if seqs:
            signer_note = f"signed by the report key certified in entry {seqs[-1]}"
        else:
            have = ", ".join(f"entry {q}" for q, _ in certified) or "none"
            problems.append(f"the signature is by {certificate_summary(signature.signer_der)}, not a report key "
                            f"{registrant} certified at or before tree size {size} (certified: {have})")
        if signature.signing_time is not None:
            try:
                at = parse_time(generated["at"]).replace(microsecond=0)
                if signature.signing_time.replace(microsecond=0) != at:
                    problems.append(f"the signature's signing time {signature.signing_time.isoformat()} is not the "
                                    f"report's generation time {generated['at']}")
            except ValueError:
                problems.append(f"generated.at {generated['at'][:40]!r} is not a time")
    period: Period = parse_period(period_in["from"], period_in["to"], snap.registrant_entry["time_zone"])
    try:  # the audit's window (issue 20) is found again from the same days and entries
        period = with_audit_window(kind, snap, period, isinstance(period_in, dict) and "window" in period_in)
    except ReportError as exc:
        return ReportCheck(False, problems + [f"the ledger gives no such report: {exc}"], data=data)
    if period_in.get("time_zone") != period.tz:
        problems.append(f"period.time_zone: the PDF says {period_in.get('time_zone')!r}, the ledger gives {period.tz!r}")
    # The rebuild's inputs besides the entries are the embedded ones (checked above or below).
    build = data.get("build") if isinstance(data.get("build"), dict) else build_versions()
    try:
        ours = compute_data(kind, snap, period, generated_at=generated["at"], generated_by=generated["by"],
                            paper=str(data.get("paper", "letter")), build=build,
                            params=data.get("params") if isinstance(data.get("params"), dict) else None)
    except ReportError as exc:
        return ReportCheck(False, problems + [f"the ledger gives no such report: {exc}"], data=data)
    del snap  # free the decoded entries (or end the read they are streamed in) before the rebuild
    reading.close()
    gc.collect()  # what the recomputation left in cycles, before the rebuild's peak
    # The state recomputed may carry a checkpoint the report did not (signed later); the
    # report's own checkpoint and keys were checked above (checkpoint.check): rebuild with them.
    ours["state"] = {**ours["state"], "checkpoint": state.get("checkpoint"),
                     "verifier_keys": state.get("verifier_keys", []), "witness_keys": state.get("witness_keys", [])}
    if "annotations" in data:
        ours["annotations"], ann_problems, ann_note = source.annotations(kind, registrant, data, ours)
        problems.extend(ann_problems)
        if ann_note:
            cp_summary += ("; " if cp_summary else "") + ann_note
    # Every embedded value, figures first (the usual forgery), then the rest of the data.
    data_problems = diff_values(ours["figures"], data.get("figures"), "figures")
    data_problems += [p for p in diff_values({k: v for k, v in ours.items() if k != "figures"},
                                             {k: v for k, v in data.items() if k != "figures"}, "")
                      if not p.startswith(("build.", "build:"))]
    problems.extend(data_problems)
    if len(problems) < MAX_PROBLEMS:
        # Rebuilt into a temporary file as the pages are drawn (issue 22), compared a block at a
        # time; only a report that differs is read into memory to say where and how.
        rebuilt_file = files.enter_context(tempfile.TemporaryFile(prefix="csledger-verify-"))
        try:
            render_data(ours, out=rebuilt_file)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # an embedded input no build accepts
            return ReportCheck(False, problems + [f"the report cannot be rebuilt from its embedded inputs: "
                                                  f"{type(exc).__name__}: {str(exc)[:120]}"], data=data)
        same = _same_file(rebuilt_file, io.BytesIO(report_pdf) if isinstance(report_pdf, bytes) else pdf,  # type: ignore[arg-type]
                          end)
        if build_problem:
            # Another ReportLab lays out differently: the bytes cannot decide; the text explains.
            problems.extend(compare_pages(_read(rebuilt_file, 0, rebuilt_file.seek(0, io.SEEK_END)), report_bytes()))
        elif not same:
            # Signed: ``report_pdf`` is the first revision, so the offsets named are the file's too.
            problems.extend(explain_bytes(_read(rebuilt_file, 0, rebuilt_file.seek(0, io.SEEK_END)), report_bytes(),
                                          data_differs=bool(data_problems)))
    notes = "; ".join(x for x in (cp_summary, signer_note) if x)
    summary = (f"{kind.title} of {registrant}, {period.start} to {period.end}, built from tree size {size} "
               f"root {root}" + (f" ({notes})" if notes else ""))
    return ReportCheck(not problems, problems[:MAX_PROBLEMS], summary, data)
