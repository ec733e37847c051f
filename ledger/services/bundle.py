"""Offline bundles: everything an inspector needs to check a registrant's ledger with no
database and no server, and single-entry proofs (C2SP tlog-proof).

Bundle format (``csledger-bundle/v1``, one file, lines separated by ``\\n``):

* line 1, the **header**: RFC 8785 canonical JSON ``{"format", "registrant", "origin",
  "tree_size", "checkpoint" (the signed note with its cosignatures), "log_keys" (verifier keys,
  current first), "witness_keys", "witness_threshold"}``;
* lines 2 .. N+1: the **entries**, each line exactly the entry's canonical bytes (what is hashed:
  leaf hash = SHA-256(0x00 || line));
* last line, the **trailer**: ``{"bundle_sha256": <hex of every byte before this line>,
  "lines": N + 1}``. The digest is not a signature (whoever edits the bundle can recompute it);
  it only makes an accidental change to an unsigned header field fail instead of pass.

What :func:`verify_bundle` proves, naming the line of the first problem: every entry is
canonical JSON, numbered from 0 with no gap, of this registrant, linked to its predecessor's
leaf hash; the RFC 9162 root of the entries equals the root of the checkpoint; the checkpoint
carries a valid signature of a log key whose name is the origin; at least ``threshold`` valid
witness cosignatures; every checkpoint given with ``against`` (e.g. a witness's last cosigned
checkpoint, obtained from the witness) is a prefix of this history; every staff signature verifies
against the credential the bundle's own entries enrolled for that person at that point, from the
registrant's root credential on (``signature_check``, issue 17: the entries are their canonical
bytes, so this runs offline), naming the entry and the person, and the entries before the root are
reported once as unsigned history. It then replays the entries into the projections and reports
stock on hand per product.

Keys: pass the keys you obtained out of band (``trusted_log_keys``, ``trusted_witness_keys``);
without them the bundle's own keys are used and the report says that this proves only internal
consistency, not who signed. The same holds for staff: pass the root credential's fingerprint
(``trusted_staff_root``, the ``staff-root`` line ``csledger init`` printed) to hold the chain of
credentials to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from ledger.domain import projections
from ledger.domain.entries import EVENT_TYPES
from ledger.domain.errors import InvalidInput
from ledger.domain.quantities import fmt_volume
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.integrity.checkpoints import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteError,
    Verifier,
    open_checkpoint,
    split_note,
)
from ledger.services.signature_check import StaffSignatureCheck, StaffSignatureSummary

FORMAT = "csledger-bundle/v1"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


class BundleError(ValueError):
    """The bundle or proof is malformed or fails verification; ``where`` names the place."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")


@dataclass
class BundleReport:
    """Outcome of :func:`verify_bundle` or :func:`verify_entry_proof`."""

    ok: bool = False
    registrant: str | None = None
    origin: str | None = None
    tree_size: int = 0
    root: str | None = None
    keys_trusted: bool = False
    cosignatures: int = 0
    threshold: int = 0
    witnesses: list[str] = field(default_factory=list)
    stock: dict[str, dict[str, str]] = field(default_factory=dict)
    entry: dict[str, Any] | None = None
    #: The accountability audit recomputed from the bundle's entries (``audit_between``).
    audit: dict[str, Any] | None = None
    problem: BundleError | None = None
    notes: list[str] = field(default_factory=list)
    #: The staff signatures of the bundle's entries (issue 17): counts, root credential, time.
    staff: StaffSignatureSummary | None = None


# --------------------------------------------------------------------------- export


def write_bundle(out: IO[bytes], *, registrant: str, origin: str, checkpoint_note: bytes,
                 log_keys: list[str], witness_keys: list[str], threshold: int,
                 entries: Iterable[bytes]) -> int:
    """Write a bundle: header, entry lines (canonical bytes), trailer. Returns the entry count.

    ``entries`` must be exactly the checkpoint's ``tree_size`` entries in seq order.
    """
    cp_text, _ = split_note(checkpoint_note)
    size = Checkpoint.parse(cp_text).size
    header = canon.canonical_bytes({
        "format": FORMAT, "registrant": registrant, "origin": origin, "tree_size": size,
        "checkpoint": checkpoint_note.decode(), "log_keys": list(log_keys), "witness_keys": list(witness_keys),
        "witness_threshold": threshold,
    })
    digest = hashlib.sha256()
    n = 0

    def put(b: bytes) -> None:
        digest.update(b)
        out.write(b)

    put(header + b"\n")
    for data in entries:
        if b"\n" in data:
            raise ValueError("canonical entry bytes never contain a raw newline")
        put(bytes(data) + b"\n")
        n += 1
    if n != size:
        raise ValueError(f"{n} entries written but the checkpoint has size {size}")
    out.write(canon.canonical_bytes({"bundle_sha256": digest.hexdigest(), "lines": n + 1}) + b"\n")
    return n


def export_bundle(conn, registrant: str, out: IO[bytes]) -> int:
    """Export a registrant's ledger up to its latest signed checkpoint (read transaction)."""
    from ledger.domain.errors import NotFound
    from ledger.storage import log as tl
    from ledger.storage.store import raw

    found = tl.signed_checkpoint_with_cosignatures(conn, registrant)
    if found is None:
        raise NotFound(f"no signed checkpoint for {registrant}", field="registrant")
    cp, note = found
    keys = tl.log_keys(conn, registrant)
    policy = tl.witness_policy(conn, registrant)
    r = raw(conn)

    def rows() -> Iterator[bytes]:
        # Keyset pages: constant memory; only the entries the checkpoint covers, so entries
        # appended during the export do not make the bundle inconsistent.
        last = -1
        while last + 1 < cp.tree_size:
            page = r.rows(conn, "SELECT seq, canonical FROM entries WHERE registrant = :r AND seq > :l AND seq < :n "
                                "ORDER BY seq LIMIT 2000", {"r": registrant, "l": last, "n": cp.tree_size})
            if not page:
                return
            for row in page:
                yield bytes(row["canonical"])
            last = page[-1]["seq"]

    return write_bundle(out, registrant=registrant, origin=keys[0].origin, checkpoint_note=note,
                        log_keys=[k.verifier_key for k in keys],
                        witness_keys=[w.verifier_key for w in policy.witnesses] if policy else [],
                        threshold=policy.threshold if policy else 0, entries=rows())


def export_entry_proof(conn, registrant: str, seq: int) -> bytes:
    """A C2SP tlog-proof for one entry: its canonical bytes as ``extra``, its index, the
    inclusion proof, and the latest checkpoint with its cosignatures."""
    from ledger.domain.errors import NotFound
    from ledger.storage import log as tl
    from ledger.storage.store import raw

    found = tl.signed_checkpoint_with_cosignatures(conn, registrant)
    if found is None:
        raise NotFound(f"no signed checkpoint for {registrant}", field="registrant")
    cp, note = found
    if not isinstance(seq, int) or seq < 0 or seq >= cp.tree_size:
        raise InvalidInput(f"seq must be below the checkpoint's tree size {cp.tree_size}", field="seq")
    data = raw(conn).scalar(conn, "SELECT canonical FROM entries WHERE registrant = :r AND seq = :s",
                            {"r": registrant, "s": seq})
    proof = merkle.inclusion_proof(seq, cp.tree_size, tl.memo_reader(conn, registrant))
    lines = [TLOG_PROOF_HEADER, "extra " + base64.b64encode(bytes(data)).decode(), f"index {seq}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n").encode() + note


# --------------------------------------------------------------------------- verification


def _verifiers(keys: Iterable[str], sig_type: int, where: str) -> list[Verifier]:
    out = []
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise BundleError(where, f"key {i + 1} is not a string")
        try:
            v = Verifier.from_string(k)
        except NoteError as exc:
            raise BundleError(where, f"key {i + 1} is not a valid verifier key ({exc})") from None
        if v.sig_type != sig_type:
            raise BundleError(where, f"key {i + 1} ({v.name}) has signature type 0x{v.sig_type:02x}, "
                                     f"expected 0x{sig_type:02x}")
        out.append(v)
    return out


def _open_cp(note: str | bytes, log_vs: list[Verifier], wit_vs: list[Verifier], where: str) -> tuple[Checkpoint, int, list[str]]:
    """Open a checkpoint note; require a log signature; return it, the count and names of valid cosignatures."""
    try:
        body, opened = open_checkpoint(note, log_vs + wit_vs)
    except NoteError as exc:
        raise BundleError(where, f"checkpoint does not verify ({exc})") from None
    log_ids = {(v.name, v.key_id) for v in log_vs}
    wit_ids = {(v.name, v.key_id) for v in wit_vs}
    if not any((s.name, s.key_id) in log_ids for s in opened.signatures):
        raise BundleError(where, "checkpoint carries no valid signature of the log key")
    cos = sorted({s.name for s in opened.signatures if (s.name, s.key_id) in wit_ids})
    return body, len(cos), cos


def read_bundle_prefix(path: Path | str, size: int) -> tuple[dict, list[bytes]]:
    """The header and the canonical bytes of the first ``size`` entries of a bundle file, for
    whoever rebuilds something from a bundle :func:`verify_bundle` has already accepted (e.g.
    ``verify-report --bundle``). Raises ``BundleError`` when the bundle holds fewer entries."""
    out: list[bytes] = []
    with open(path, "rb") as f:
        lines = _lines(f)
        first = next(lines, None)
        if first is None:
            raise BundleError("line 1 (header)", "the bundle is empty")
        header = _header(first[1])
        if size > header["tree_size"]:
            raise BundleError("line 1 (header)", f"the bundle holds {header['tree_size']} entries, fewer than {size}")
        for _lineno, line in lines:
            if len(out) == size:
                break
            out.append(line[:-1] if line.endswith(b"\n") else line)
    if len(out) != size:
        raise BundleError("entries", f"read {len(out)} of {size} entries")
    return header, out


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(f, start=1)


def _audit(entries: list[dict], between: tuple[Any, Any], accountability: Any) -> dict[str, Any]:
    """The audit of ``between``: local days ``(from, to)`` (``date``; ``to`` None: today), over
    the window between the counts nearest them, as ``csledger audit`` and the pages compute it
    (one period rule, issue 20); or, for library callers, aware datetimes ``(start, end)``."""
    from datetime import date, datetime

    first, last = between
    if isinstance(first, datetime):
        return accountability(entries, first, last)
    from zoneinfo import ZoneInfo

    from ledger.domain.period import Period
    from ledger.services.audit import audit_window, require_counted_beginnings, window_offers

    tz = next((e["time_zone"] for e in entries if e["kind"] == "registrant_registered"), "UTC")
    if last is None:
        last = datetime.now(ZoneInfo(tz)).date()
    if not isinstance(first, date) or not isinstance(last, date):
        raise InvalidInput("give the audit's days as dates (YYYY-MM-DD)", field="audit_between")
    period = Period.from_local_days(first, last, tz)
    result = accountability(entries, window=audit_window(entries, period))
    require_counted_beginnings(result)
    result["asked"] = period.to_json()
    result["offers"] = window_offers(entries, period)
    return result


def verify_bundle(path: Path | str | IO[bytes], *, trusted_log_keys: list[str] | None = None,
                  trusted_witness_keys: list[str] | None = None, threshold: int | None = None,
                  against: Iterable[str | bytes] = (), audit_between: tuple[Any, Any] | None = None,
                  trusted_staff_root: str | None = None) -> BundleReport:
    """Verify a bundle offline; never raises for bad input: the report says ok or names where.

    ``trusted_staff_root`` (``sha256:<hex>``, obtained out of band) must be the fingerprint of the
    registrant's root staff credential in the bundle.

    With ``audit_between=(start, end)`` (aware datetimes) the accountability audit of that
    period is recomputed from the verified entries (``ledger.audit``); this keeps the decoded
    entries in memory, which the plain verification does not.
    """
    rep = BundleReport()
    keep: list[dict] | None = [] if audit_between is not None else None
    try:
        if isinstance(path, (str, Path)):
            with open(path, "rb") as f:
                _verify_bundle(f, rep, trusted_log_keys, trusted_witness_keys, threshold, list(against), keep,
                               trusted_staff_root)
        else:
            _verify_bundle(path, rep, trusted_log_keys, trusted_witness_keys, threshold, list(against), keep,
                           trusted_staff_root)
        if keep is not None:
            try:
                from ledger.services.audit import (
                    accountability,  # the same pure computation the reports use
                )
            except ImportError:
                raise BundleError("audit", "this build has no accountability audit module") from None
            try:
                rep.audit = _audit(keep, audit_between, accountability)
            except InvalidInput as exc:  # no window between counts, a book beginning: said as the audit says it
                raise BundleError("audit", exc.reason) from None
            except Exception as exc:  # a verified log the audit cannot read is still a finding
                raise BundleError("audit", f"the accountability audit could not be computed ({exc})") from None
        rep.ok = True
    except BundleError as exc:
        rep.problem = exc
    except OSError as exc:
        rep.problem = BundleError("file", f"cannot read the bundle ({exc})")
    return rep


def _verify_bundle(f: IO[bytes], rep: BundleReport, trusted_log: list[str] | None, trusted_wit: list[str] | None,
                   threshold: int | None, against: list[str | bytes], keep: list[dict] | None = None,
                   trusted_staff_root: str | None = None) -> None:
    lines = _lines(f)
    first = next(lines, None)
    if first is None:
        raise BundleError("line 1 (header)", "the bundle is empty")
    if first[1].startswith(TLOG_PROOF_HEADER.encode()):
        raise BundleError("line 1", "this is a single-entry proof (tlog-proof); verify it as such")
    header = _header(first[1])
    digest = hashlib.sha256(first[1])
    reg, origin, size = header["registrant"], header["origin"], header["tree_size"]
    rep.registrant, rep.origin, rep.tree_size = reg, origin, size
    if origin.split("/")[-2:-1] != [reg]:
        raise BundleError("line 1 (header)", f"origin {origin!r} does not name registrant {reg}")
    bundle_log = _verifiers(header["log_keys"], SIG_ED25519, "line 1 (header) log_keys")
    bundle_wit = _verifiers(header["witness_keys"], SIG_COSIGNATURE_V1, "line 1 (header) witness_keys")
    if not bundle_log:
        raise BundleError("line 1 (header)", "no log key")
    for v in bundle_log:
        if v.name != origin:
            raise BundleError("line 1 (header) log_keys", f"key {v.key_id_hex} is named {v.name!r}, not the origin")
    bt = header["witness_threshold"]
    if not (0 <= bt <= len(bundle_wit)) or (bundle_wit and bt < 1):
        raise BundleError("line 1 (header)", f"witness threshold {bt} is impossible with {len(bundle_wit)} witness(es)")
    log_vs = _verifiers(trusted_log, SIG_ED25519, "--log-key") if trusted_log else bundle_log
    wit_vs = _verifiers(trusted_wit, SIG_COSIGNATURE_V1, "--witness-key") if trusted_wit is not None else bundle_wit
    rep.keys_trusted = bool(trusted_log)
    if not rep.keys_trusted:
        rep.notes.append("keys taken from the bundle itself: this proves the bundle is internally consistent, "
                         "not who signed it; pin the keys with --log-key / --witness-key")
    rep.threshold = bt if threshold is None else threshold
    cp, rep.cosignatures, rep.witnesses = _open_cp(header["checkpoint"], log_vs, wit_vs, "line 1 (header) checkpoint")
    if cp.origin != origin:
        raise BundleError("line 1 (header) checkpoint", f"origin {cp.origin!r} is not the bundle's {origin!r}")
    if cp.size != size:
        raise BundleError("line 1 (header) checkpoint", f"size {cp.size} is not the bundle's tree_size {size}")
    # Other checkpoints to hold this history against (e.g. the witness's last cosigned one).
    targets: dict[int, list[tuple[str, bytes]]] = {}
    for i, note in enumerate(against):
        where = f"--checkpoint {i + 1}"
        other, _, names = _open_cp(note, log_vs, wit_vs, where)
        if other.origin != origin:
            raise BundleError(where, f"is for origin {other.origin!r}, not {origin!r}")
        if other.size > size:
            raise BundleError(where, f"a checkpoint of size {other.size} exists (signed{' and cosigned by ' + ', '.join(names) if names else ''}) "
                                     f"but the bundle ends at {size}: entries were withheld or history rewritten")
        targets.setdefault(other.size, []).append((where, other.root))

    acc = merkle.RootAccumulator()
    staff = StaffSignatureCheck(reg)
    state = projections.MemoryStateView()
    prev_hex = canon.ZERO_HASH
    seq = 0
    trailer = None
    for lineno, line in lines:
        if seq == size:
            trailer = (lineno, line)
            if next(lines, None) is not None:
                raise BundleError(f"line {lineno + 1}", "unexpected data after the trailer")
            break
        where = f"line {lineno} (seq {seq})"
        if not line.endswith(b"\n"):
            raise BundleError(where, "truncated: the line does not end with a newline")
        data = line[:-1]
        digest.update(line)
        try:
            obj = canon.decode(data)
        except Exception as exc:  # any parse failure is a bad entry, named by its line
            raise BundleError(where, f"not valid entry JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, dict):
            raise BundleError(where, "not a JSON object")
        try:
            again = canon.canonical_bytes(obj)
        except Exception as exc:
            raise BundleError(where, f"cannot be canonicalized ({exc})") from None
        if again != data:
            raise BundleError(where, "bytes are not in RFC 8785 canonical form")
        if obj.get("seq") != seq:
            raise BundleError(where, f"entry says seq {obj.get('seq')!r}")
        if obj.get("registrant") != reg:
            raise BundleError(where, f"entry is of registrant {obj.get('registrant')!r}, not {reg}")
        if obj.get("prev") != prev_hex:
            raise BundleError(where, f"prev does not equal the leaf hash of seq {seq - 1} (line {lineno - 1}): "
                                     f"one of these two entries was altered" if seq else "prev of seq 0 is not 64 zeros")
        if obj.get("kind") not in EVENT_TYPES:
            raise BundleError(where, f"unknown entry kind {obj.get('kind')!r}")
        signed = staff.feed(obj, seq=seq)  # issue 17: the person's own signatures, not the log key's
        if signed is not None:
            raise BundleError(where, signed.text)
        leaf = hashlib.sha256(b"\x00" + data).digest()
        acc.push(leaf)
        seq += 1
        for w, root in targets.get(seq, ()):
            if acc.root() != root:
                raise BundleError(w, f"the bundle's first {seq} entries (through line {lineno}) do not match this "
                                     "checkpoint: history was rewritten")
        try:
            projections.apply(obj, state)
        except Exception as exc:
            raise BundleError(where, f"entry cannot be replayed into the projections ({exc})") from None
        prev_hex = leaf.hex()
        if keep is not None:
            keep.append(obj)
    if seq < size:
        raise BundleError(f"line {seq + 2}", f"truncated: {seq} entries where the checkpoint has {size}")
    root = acc.root()
    if root != cp.root:
        raise BundleError("line 1 (header) checkpoint",
                          f"the root of the {size} entries differs from the signed checkpoint's root: the last entry "
                          f"(line {size + 1}) or the checkpoint was altered")
    rep.root = root.hex()
    if trailer is None:
        raise BundleError(f"line {size + 2} (trailer)", "missing: the bundle is truncated")
    _trailer(trailer, digest.hexdigest(), size)
    if rep.cosignatures < rep.threshold:
        raise BundleError("line 1 (header) checkpoint",
                          f"witnessed by {rep.cosignatures} of the {rep.threshold} cosignatures required")
    rep.staff = staff.summary()
    if trusted_staff_root is not None and rep.staff.root_fingerprint != trusted_staff_root:
        raise BundleError("--staff-root", f"the bundle's root staff credential is {rep.staff.root_fingerprint or 'none'} "
                                          f"(entry {rep.staff.root_seq}), not the pinned {trusted_staff_root}")
    rep.notes.extend(rep.staff.lines())
    rep.notes.append(f"staff signatures checked in {rep.staff.seconds:.3f} s")
    rep.stock = _stock(state)


def _header(line: bytes) -> dict:
    where = "line 1 (header)"
    if not line.endswith(b"\n"):
        raise BundleError(where, "truncated: the line does not end with a newline")
    data = line[:-1]
    try:
        h = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(where, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(where, "not a bundle header: JSON nested too deeply") from None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise BundleError(where, f"not a {FORMAT} bundle")
    want = {"format": str, "registrant": str, "origin": str, "tree_size": int, "checkpoint": str,
            "log_keys": list, "witness_keys": list, "witness_threshold": int}
    if set(h) != set(want):
        raise BundleError(where, f"fields must be exactly {sorted(want)}")
    for k, t in want.items():
        if not isinstance(h[k], t) or isinstance(h[k], bool):
            raise BundleError(where, f"{k} must be a {t.__name__}")
    try:
        again = canon.canonical_bytes(h)
    except Exception as exc:  # e.g. a lone surrogate or a number RFC 8785 cannot write
        raise BundleError(where, f"cannot be canonicalized ({exc})") from None
    if again != data:
        raise BundleError(where, "not in RFC 8785 canonical form (the header was edited)")
    if h["tree_size"] < 1:
        raise BundleError(where, "tree_size must be at least 1")
    return h


def _trailer(trailer: tuple[int, bytes], digest: str, size: int) -> None:
    lineno, line = trailer
    where = f"line {lineno} (trailer)"
    try:
        t = json.loads(line.rstrip(b"\n").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError(where, "not valid JSON") from None
    if not line.endswith(b"\n") or not isinstance(t, dict) or set(t) != {"bundle_sha256", "lines"}:
        raise BundleError(where, "malformed trailer")
    if t["lines"] != size + 1:
        raise BundleError(where, f"says {t['lines']} lines before it, found {size + 1}")
    if t["bundle_sha256"] != digest:
        raise BundleError(where, "checksum differs: an unsigned part of the header (line 1) was changed; every "
                                 "signed and hashed part verified")


def _stock(state: projections.MemoryStateView) -> dict[str, dict[str, str]]:
    """Stock on hand per product (NDC key): containers not emptied and mL left, from the replay."""
    out: dict[str, dict[str, Any]] = {}
    for row in state.tables.get("vials", {}).values():
        s = out.setdefault(row["ndc_key"], {"containers": 0, "ml": Decimal("0.00")})
        if row["ml_left"] > 0:
            s["containers"] += 1
        s["ml"] += row["ml_left"]
    # mL by the 2-or-3 rule (issue 19): "9.635" stays exact; every 2-decimal total reads as before.
    return {k: {"containers": str(v["containers"]), "ml": fmt_volume(v["ml"])} for k, v in sorted(out.items())}


# --------------------------------------------------------------------------- single-entry proof


def verify_entry_proof(data: bytes, *, trusted_log_keys: list[str], trusted_witness_keys: list[str] = (),
                       threshold: int = 0) -> BundleReport:
    """Verify a C2SP tlog-proof whose ``extra`` is the entry's canonical bytes. Needs the log's
    verifier key (and the witness keys to count cosignatures); never raises for bad input."""
    rep = BundleReport(keys_trusted=True, threshold=threshold)
    try:
        _verify_entry_proof(data, rep, list(trusted_log_keys), list(trusted_witness_keys))
        rep.ok = True
    except BundleError as exc:
        rep.problem = exc
    return rep


def _verify_entry_proof(data: bytes, rep: BundleReport, log_keys: list[str], wit_keys: list[str]) -> None:
    if not log_keys:
        raise BundleError("--log-key", "a single-entry proof carries no keys: give the log's verifier key")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("proof", "not UTF-8 text") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise BundleError("proof", "no empty line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise BundleError("line 1", f"must be {TLOG_PROOF_HEADER!r}")
    if len(lines) < 3 or not lines[1].startswith("extra "):
        raise BundleError("line 2", "must be 'extra <base64 canonical entry bytes>'")
    entry = _b64_canonical(lines[1][6:], "line 2", "extra")
    if not lines[2].startswith("index ") or not lines[2][6:].isdigit() or (lines[2][6:] != "0" and lines[2][6] == "0"):
        raise BundleError("line 3", "must be 'index <decimal>'")
    index = int(lines[2][6:])
    proof = []
    for i, b64 in enumerate(lines[3:], start=4):
        h = _b64_canonical(b64, f"line {i}", "proof hash")
        if len(h) != 32:
            raise BundleError(f"line {i}", "proof hash is not 32 bytes")
        proof.append(h)
    log_vs = _verifiers(log_keys, SIG_ED25519, "--log-key")
    wit_vs = _verifiers(wit_keys, SIG_COSIGNATURE_V1, "--witness-key")
    cp, rep.cosignatures, rep.witnesses = _open_cp(note, log_vs, wit_vs, f"line {len(lines) + 2} (checkpoint)")
    rep.origin, rep.tree_size, rep.root = cp.origin, cp.size, cp.root.hex()
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry), index, cp.size, proof, cp.root)
    except merkle.ProofError as exc:
        raise BundleError("inclusion proof", f"entry {index} is not in the checkpointed tree ({exc})") from None
    try:
        obj = canon.decode(entry)
    except Exception as exc:
        raise BundleError("line 2", f"the entry is not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("seq") != index:
        raise BundleError("line 2", f"the entry's seq is not the proof's index {index}")
    if cp.origin.split("/")[-2:-1] != [obj.get("registrant")]:
        raise BundleError("line 2", "the entry's registrant is not the one named by the checkpoint's origin")
    rep.registrant, rep.entry = obj["registrant"], obj
    if rep.cosignatures < rep.threshold:
        raise BundleError("checkpoint", f"witnessed by {rep.cosignatures} of the {rep.threshold} cosignatures required")


def _b64_canonical(text: str, where: str, what: str) -> bytes:
    # Only the one canonical spelling: otherwise a changed padding bit would still "verify".
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(where, f"{what} is not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise BundleError(where, f"{what} is not canonical base64")
    return raw


def is_entry_proof(data: bytes) -> bool:
    return bytes(data[: len(TLOG_PROOF_HEADER) + 1]) == (TLOG_PROOF_HEADER + "\n").encode()


__all__ = ["BundleError", "BundleReport", "export_bundle", "export_entry_proof", "is_entry_proof", "read_bundle_prefix",
           "verify_bundle", "verify_entry_proof", "write_bundle"]
