"""The certification signature of a report PDF (issue 18): PAdES, DocMDP P=1, by the registrant's
report key (``ledger.services.report_key``), whose certificate is a ``report_key_certified`` entry.

A report is two revisions: the unsigned PDF exactly as ``render_data`` draws it (``verify-report``
rebuilds it byte for byte), then one incremental update written by pyhanko that adds only the
certification signature (an invisible signature field, its widget, the signature dictionary and the
catalog's ``/Perms`` and ``/AcroForm``), covering the whole file. A certification signature that
allows no changes makes any PDF reader flag an annotation or an edit added afterwards; the checks
here make ``verify-report`` fail on them too, naming what is wrong.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

#: The name of the signature field every report's certification signature fills.
FIELD_NAME = "csledger-certification"


@dataclass
class SignatureCheck:
    """What ``inspect_signature`` found: the first revision's bytes (what must equal the rebuilt
    report), the signer certificate (DER) and every problem (empty: the signature is sound)."""

    signed: bool
    #: The first revision's bytes (``b""`` when the report was given as a file: issue 22, a long
    #: report is never read into memory; ``first_end`` says where it ends).
    first_revision: bytes
    signer_der: bytes | None = None
    signing_time: datetime | None = None
    problems: list[str] = field(default_factory=list)
    #: The offset just past the first revision (its length).
    first_end: int = 0


def _outside_event_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` here, or in a worker thread when this thread runs an asyncio event loop:
    pyhanko's synchronous signing and validation call ``asyncio.run``, which refuses to run
    inside a loop (an async route, a test driving a browser)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def first_revision_end(pdf: bytes) -> int:
    """The offset just past the first ``%%EOF`` marker and its end of line (the end of the first
    revision); the file length if there is none."""
    at = pdf.find(b"%%EOF")
    if at < 0:
        return len(pdf)
    end = at + len(b"%%EOF")
    while end < len(pdf) and pdf[end:end + 1] in (b"\r", b"\n"):
        end += 1
    return end


def first_revision_end_in(f: BinaryIO) -> int:
    """``first_revision_end`` of a file read a block at a time (issue 22: not into memory)."""
    f.seek(0)
    pos, tail = 0, b""
    while True:
        block = f.read(1 << 20)
        if not block:
            return pos
        window = tail + block
        at = window.find(b"%%EOF")
        if at >= 0:
            end = pos - len(tail) + at + len(b"%%EOF")
            f.seek(end)
            while f.read(1) in (b"\r", b"\n"):
                end += 1
            return end
        tail = window[-4:]
        pos += len(block)


def sign_report(pdf: bytes, key: Any, signing_time: datetime) -> bytes:
    """Append the certification signature (PAdES, DocMDP P=1, no changes) to an unsigned report.

    ``key`` is a ``ledger.services.report_key.ReportKey``. The signing time written in the signed
    attributes is ``signing_time`` (the report's embedded generation time), so the only part that
    changes from one signing to the next is the ECDSA signature value itself."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    pdf_signer = _signer(key, signing_time)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    return _outside_event_loop(lambda: pdf_signer.sign_pdf(writer).getvalue())


def _signer(key: Any, signing_time: datetime) -> Any:
    """pyhanko's signer of a report: certification (DocMDP P=1), PAdES, at ``signing_time``."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.sign import fields, signers
    from pyhanko.sign.signers.pdf_signer import PdfSigningSession
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    cert = asn1_x509.Certificate.load(key.certificate_der)
    private = asn1_keys.PrivateKeyInfo.load(key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signer = signers.SimpleSigner(signing_cert=cert, signing_key=private,
                                  cert_registry=SimpleCertificateStore.from_certs([cert]))
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME, certify=True, docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        subfilter=fields.SigSeedSubFilter.PADES, md_algorithm="sha256", reason="csledger report, certified")

    class _AtReportTime(signers.PdfSigner):
        # pyhanko takes the signing time from the clock; the report's own time makes the signed
        # attributes a function of the report (no public parameter for it, hence the override).
        def init_signing_session(self, *args: Any, **kw: Any) -> PdfSigningSession:
            session = super().init_signing_session(*args, **kw)
            session.system_time = signing_time
            return session

    return _AtReportTime(meta, signer, new_field_spec=fields.SigFieldSpec(FIELD_NAME))


def sign_report_file(unsigned: Path, signed: Path, key: Any, signing_time: datetime) -> None:
    """``sign_report`` from file to file (issue 22): pyhanko reads the unsigned report's
    cross-reference table and the objects it updates, copies the file in chunks and digests it
    in chunks, so a long report is never held in memory. The same bytes as ``sign_report``."""
    pdf_signer = _signer(key, signing_time)
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    with unsigned.open("rb") as src, signed.open("w+b") as dst:
        writer = IncrementalPdfFileWriter(src, strict=False)
        _outside_event_loop(lambda: pdf_signer.sign_pdf(writer, output=dst))


def inspect_signature(pdf: bytes | BinaryIO) -> SignatureCheck:
    """Check the structure and integrity of a report's certification signature (not who signed:
    the caller compares ``signer_der`` with the certified report keys).

    Required: exactly one signature, a certification signature allowing no changes (DocMDP P=1),
    valid over the bytes it covers, covering the entire file (nothing appended after it), made in
    the second and last revision, which adds only that signature to the first.

    ``pdf``: the file's bytes, or the file open for reading (then ``first_revision`` is ``b""``
    and only ``first_end`` says where the report proper ends)."""
    if isinstance(pdf, bytes | bytearray):
        end = first_revision_end(pdf)
        first, size, stream = pdf[:end], len(pdf), io.BytesIO(pdf)
    else:  # a file (issue 22): read by pyhanko as it needs, never whole
        end, first = first_revision_end_in(pdf), b""
        size, stream = pdf.seek(0, io.SEEK_END), pdf
        pdf.seek(0)
    problems, check = _inspect(stream, size, first)
    check.problems, check.first_end = problems, end
    return check


def _inspect(stream: BinaryIO, size: int, first: bytes) -> tuple[list[str], SignatureCheck]:
    """``inspect_signature`` of a PDF read from ``stream`` (``size`` bytes): its problems and
    what it found."""
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import MDPPerm
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    try:
        reader = PdfFileReader(stream, strict=False)
        sigs = reader.embedded_signatures
        revisions = reader.xrefs.total_revisions
    except Exception as exc:  # noqa: BLE001  (pyhanko cannot parse it: named, never a traceback)
        bad = [f"the PDF's signatures cannot be read: {str(exc)[:120]}"]
        return bad, SignatureCheck(False, first, problems=bad)
    if not sigs:
        more = f" (and it has {revisions} revisions: something was appended)" if revisions > 1 else ""
        bad = ["the PDF is not signed: a report carries the registrant's certification signature (made by "
               f"`csledger report` with a certified report key){more}"]
        return bad, SignatureCheck(False, first, problems=bad)
    problems: list[str] = []
    if len(sigs) != 1:
        problems.append(f"the PDF has {len(sigs)} signatures; a report has exactly one, its certification")
    sig = sigs[0]
    check = SignatureCheck(True, first)
    try:
        check.signer_der = sig.signer_cert.dump()
        # Trust is decided by the caller against the ledger's certified keys, never by a chain
        # of certificate authorities: the signer's own (self-signed) certificate is the root here,
        # so pyhanko checks the mathematics and the coverage only.
        context = ValidationContext(trust_roots=[sig.signer_cert], allow_fetching=False)
        status = _outside_event_loop(
            lambda: validate_pdf_signature(sig, signer_validation_context=context, skip_diff=True))
    except (SignatureValidationError, PdfError, ValueError, KeyError) as exc:
        return problems + [f"the signature cannot be checked: {str(exc)[:160]}"], check
    except Exception as exc:  # noqa: BLE001  (odd structures pyhanko does not expect: fail, never crash)
        return problems + [f"the signature cannot be checked: {type(exc).__name__}: {str(exc)[:120]}"], check
    check.signing_time = status.signer_reported_dt
    if not (status.intact and status.valid):
        problems.append("the signature does not verify: the signed bytes were changed after signing, or it was "
                        "not made by the key its certificate names")
    if sig.docmdp_level != MDPPerm.NO_CHANGES:
        level = "none (an approval signature, not a certification)" if sig.docmdp_level is None \
            else f"P={sig.docmdp_level.value}"
        problems.append(f"the signature's DocMDP permission is {level}; a report is certified with P=1 (no changes)")
    if sig.field_name != FIELD_NAME:
        problems.append(f"the signature fills field {sig.field_name!r}, not {FIELD_NAME!r}")
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        after = size - max(sig.byte_range[2] + sig.byte_range[3], 0)
        problems.append(f"the signature does not cover the whole file: {after:,} bytes follow the signed revision "
                        "(an incremental update appended after signing, e.g. an annotation)"
                        if after > 0 else f"the signature covers the file only partly ({status.coverage.name})")
    if revisions != 2:
        problems.append(f"the PDF has {revisions} revisions; a report has two (the report, then its signature)")
    elif sig.signed_revision != 1:
        problems.append("the signature was made in the first revision, not in an update after the report")
    else:
        try:
            problems.extend(signing_revision_changes(reader))
        except Exception as exc:  # noqa: BLE001  (an unreadable signing revision fails the report)
            problems.append(f"the signing revision cannot be read object by object: {type(exc).__name__}: "
                            f"{str(exc)[:120]}")
    return problems, check


#: What the signing revision may add to the catalog: the form holding the signature field, the
#: DocMDP permission, pyhanko's PDF 2.0 / ESIC extension markers and its XMP metadata.
CATALOG_ADDITIONS = frozenset({"/AcroForm", "/Perms", "/Extensions", "/Metadata", "/Version"})
#: What the signing revision may change in the document information: pyhanko stamps these.
INFO_CHANGES = frozenset({"/ModDate", "/Producer"})


def _type_of(obj: Any) -> str:
    try:
        return str(obj.get("/Type") or obj.get("/Subtype") or obj.get("/FT") or type(obj).__name__)
    except AttributeError:
        return type(obj).__name__


def _is_signature_widget(obj: Any) -> bool:
    return hasattr(obj, "get") and obj.get("/FT") == "/Sig" and obj.get("/T") == FIELD_NAME


def signing_revision_changes(reader: Any) -> list[str]:
    """What the second revision writes beyond the certification signature (empty: nothing).

    pyhanko's own difference analysis judges updates *after* a signature; the signing revision
    itself is read object by object here: new objects may only be the signature dictionary, its
    field (an invisible widget), the form dictionary and the XMP metadata; of the report's own
    objects only the catalog (gaining the form, ``/Perms`` and markers), the document information
    (pyhanko's ``/ModDate`` and ``/Producer``) and a page gaining the signature widget in
    ``/Annots`` may change."""
    from pyhanko.pdf_utils import generic

    problems: list[str] = []
    old_at = reader.get_historical_resolver(0)
    root_ref = reader.root_ref
    info = reader.trailer_view.raw_get("/Info") if "/Info" in reader.trailer_view else None
    info_ref = info.reference if isinstance(info, generic.IndirectObject) else None
    for ref in sorted(reader.xrefs.explicit_refs_in_revision(1), key=lambda r: (r.idnum, r.generation)):
        new = reader.get_object(ref)
        if reader.xrefs.get_introducing_revision(ref) == 1:
            if _is_signature_widget(new) or _type_of(new) in ("/Sig", "/Metadata") or (
                    isinstance(new, generic.DictionaryObject) and set(new) <= {"/Fields", "/SigFlags"}
                    and [f.get_object() for f in new.get("/Fields", [])] and all(
                        _is_signature_widget(f.get_object()) for f in new["/Fields"])):
                continue
            problems.append(f"the signing revision adds object {ref.idnum} ({_type_of(new)}), which is not part of "
                            "the certification signature")
            continue
        old = old_at(ref)
        if not isinstance(new, generic.DictionaryObject) or not isinstance(old, generic.DictionaryObject):
            problems.append(f"the signing revision replaces object {ref.idnum} of the report")
            continue
        changed = {k for k in set(old) | set(new) if k not in old or k not in new or old.raw_get(k) != new.raw_get(k)}
        if ref == root_ref:
            bad = {k for k in changed if k in old or k not in CATALOG_ADDITIONS}
        elif ref == info_ref:
            bad = changed - INFO_CHANGES
        elif new.get("/Type") == "/Page":
            bad = changed - {"/Annots"}
            if "/Annots" in changed:
                before = {a.reference for a in old.raw_get("/Annots") or [] if isinstance(a, generic.IndirectObject)} \
                    if "/Annots" in old else set()
                added = [a for a in new.raw_get("/Annots") if not (isinstance(a, generic.IndirectObject)
                                                                   and a.reference in before)]
                if not all(_is_signature_widget(a.get_object()) for a in added):
                    bad.add("/Annots (an annotation besides the signature field)")
        else:
            bad = changed or {"(its contents)"}
        if bad:
            problems.append(f"the signing revision changes object {ref.idnum} ({_type_of(new)}) of the report: "
                            f"{', '.join(sorted(bad))}")
    return problems


def certificate_summary(der: bytes) -> str:
    """Subject and SHA-256 fingerprint of a certificate, for messages."""
    import hashlib

    from cryptography import x509

    try:
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        subject = "(unreadable certificate)"
    return f"{subject} (sha256:{hashlib.sha256(der).hexdigest()[:16]}...)"
