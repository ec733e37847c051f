"""Report PDFs carry a certification signature (issue 18, second part).

Every report is signed with the registrant's report key, a PAdES certification signature that
allows no changes (DocMDP P=1), appended as a second revision; the key's certificate is a
``report_key_certified`` entry an administrator signed. ``verify-report`` requires the first
revision to be the rebuilt report byte for byte, the second to add only that signature and to
cover the whole file, and the signer to be a certified report key of the registrant at or before
the report's tree size. An untouched report passes; an annotation added after signing, a
signature by another key, an unsigned report and a key nobody certified each fail, naming what
is wrong. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import FreeText

from ledger.integrity.canonical import parse_time
from ledger.services.report_key import key_path, load_report_key, make_report_key
from reports import layout
from reports.base import build_report
from reports.errors import ReportError
from reports.signing import FIELD_NAME, first_revision_end, inspect_signature, sign_report
from reports.verify import verify_report
from tests.cli.test_cli import run
from tests.conftest import BACKENDS, DEA
from tests.reports.report_keys import CLI_KEY_DIR, certify, check
from tests.reports.test_report_access_log import floor  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def build(api, kind: str = "receiving") -> bytes:
    pdf, _ = build_report(api.ledger, kind, DEA, *api.period)
    return pdf


def problems_of(api, pdf: bytes) -> list[str]:
    """What verify-report names, online; offline (``--bundle``) it must name the same."""
    return check(api, pdf)


def generated_at(pdf: bytes) -> datetime:
    data = json.loads(PdfReader(io.BytesIO(pdf)).attachments[layout.DATA_FILE][0])
    return parse_time(data["generated"]["at"])


def test_untouched_signed_report_passes(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = build(api)
    sig = inspect_signature(pdf)
    assert sig.signed and sig.problems == []
    # The first revision is the unsigned report as drawn; the signature is a second revision.
    assert sig.first_revision == pdf[:first_revision_end(pdf)] and len(pdf) > len(sig.first_revision)
    assert sig.signer_der == load_report_key(api.ledger.report_key_dir, DEA).certificate_der
    assert sig.signing_time.replace(microsecond=0) == generated_at(pdf).replace(microsecond=0)
    result = verify_report(api.ledger, pdf)
    assert result.ok, result.problems
    assert "signed by the report key certified in entry" in result.summary
    # pyhanko reads a certification signature allowing no changes over the whole file.
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import MDPPerm

    emb = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    assert [e.field_name for e in emb] == [FIELD_NAME] and emb[0].docmdp_level == MDPPerm.NO_CHANGES
    # The key file is private; the certificate in the entry names the registrant.
    mode = stat.S_IMODE(os.stat(key_path(api.ledger.report_key_dir, DEA)).st_mode)
    assert mode == 0o600
    from reports.source import load_snapshot

    with api.ledger.reading() as conn:
        certified = load_snapshot(conn, DEA).entries
    certified = [e for e in certified if e["kind"] == "report_key_certified"]
    assert len(certified) == 1 and base64.b64decode(certified[0]["certificate"]) == sig.signer_der
    assert certified[0]["signatures"][0]["meaning"] == "performed"
    # From the command line too.
    path = tmp_path / "signed.pdf"
    path.write_bytes(pdf)
    ok = run(["verify-report", str(path), "--db", api.db], tmp_path)
    assert ok.stdout.startswith("OK Receiving log") and "certified" in ok.stdout


def test_annotation_added_after_signing_fails(floor, tmp_path):  # noqa: F811
    api = floor
    pdf = build(api)
    writer = PdfWriter(io.BytesIO(pdf), incremental=True)
    writer.add_annotation(0, FreeText(text="1.00 mL", rect=(300, 300, 360, 312), font="Helvetica",
                                      font_size="7.5pt", background_color="ffffff", border_color=None))
    buf = io.BytesIO()
    writer.write(buf)
    bad = buf.getvalue()
    assert bad.startswith(pdf) and len(bad) > len(pdf)
    problems = problems_of(api, bad)
    assert any(p.startswith(f"the signature does not cover the whole file: {len(bad) - len(pdf):,} bytes follow "
                            "the signed revision") for p in problems), problems
    assert "the PDF has 3 revisions; a report has two (the report, then its signature)" in problems, problems
    path = tmp_path / "annotated.pdf"
    path.write_bytes(bad)
    p = run(["verify-report", str(path), "--db", api.db], tmp_path, check=False)
    assert p.returncode == 1 and "the signature does not cover the whole file" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_signature_by_another_key_fails(floor):  # noqa: F811
    api = floor
    pdf = build(api)
    other = make_report_key(DEA, "Calm Waters Ketamine Clinic", datetime.now(UTC))
    forged = sign_report(pdf[:first_revision_end(pdf)], other, generated_at(pdf))
    problems = problems_of(api, forged)
    assert len(problems) == 1, problems
    assert problems[0].startswith("the signature is by ") and f"not a report key {DEA} certified at or before " \
        "tree size" in problems[0], problems


def test_unsigned_report_is_refused(floor):  # noqa: F811
    api = floor
    pdf = build(api)
    problems = problems_of(api, pdf[:first_revision_end(pdf)])
    assert len(problems) == 1 and problems[0].startswith("the PDF is not signed"), problems


def test_a_key_nobody_certified_signs_nothing(floor, tmp_path):  # noqa: F811
    """A key file put in the key folder without its entry: the build refuses it."""
    api = floor
    other = make_report_key(DEA, "Calm Waters Ketamine Clinic", datetime.now(UTC))
    with pytest.raises(ReportError, match="is not certified in the ledger"):
        build_report(api.ledger, "receiving", DEA, *api.period, report_key=other)


def test_a_new_key_signs_later_reports_and_old_reports_still_verify(floor, tmp_path):  # noqa: F811
    api = floor
    old = build(api)
    certify(api.ledger, api.clinic.admin, api.ledger.report_key_dir)  # rotation: a second entry
    new = build(api)
    assert inspect_signature(new).signer_der != inspect_signature(old).signer_der
    assert problems_of(api, old) == [] and problems_of(api, new) == []


def test_certifying_needs_an_administrator(floor, tmp_path):  # noqa: F811
    from ledger.domain.errors import Forbidden
    from ledger.services.report_key import certify_report_key

    with pytest.raises(Forbidden):
        certify_report_key(floor.ledger, floor.clinic.nurse, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_cli_certifies_a_report_key(floor, tmp_path):  # noqa: F811
    """``csledger keys report-key``: an administrator signs in at the console (password on
    standard input, TOTP code) and certifies a new key; reports made then verify under it."""
    import subprocess

    import pyotp

    from tests.api.conftest import PASSWORD, TOTP_KEY
    from tests.cli.test_cli import CSLEDGER

    api = floor
    keys = tmp_path / CLI_KEY_DIR  # beside the log key (the ledger refuses to record without it)
    before = load_report_key(keys, DEA).certificate_der
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(keys), "CSLEDGER_TOTP_KEY": TOTP_KEY}
    code = pyotp.TOTP(api.totp_secrets[(DEA, "avery")]).now()
    p = subprocess.run(CSLEDGER + ["keys", "report-key", "--registrant", DEA, "--username", "avery",
                                   "--password-stdin", "--totp", code, "--db", api.db],
                       cwd=tmp_path, input=PASSWORD + "\n", capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "certified in entry" in p.stdout and load_report_key(keys, DEA).certificate_der != before
    out = tmp_path / "r.pdf"
    p = subprocess.run(CSLEDGER + ["report", "receiving", "--registrant", DEA, "--from", api.period[0], "--to",
                                   api.period[1], "--out", str(out), "--db", api.db],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "UNSIGNED" not in p.stderr, p.stderr
    assert inspect_signature(out.read_bytes()).signer_der == load_report_key(keys, DEA).certificate_der
    assert problems_of(api, out.read_bytes()) == []
    # A nurse cannot: the command needs an administrator.
    p = subprocess.run(CSLEDGER + ["keys", "report-key", "--registrant", DEA, "--username", "nora",
                                   "--password-stdin", "--db", api.db],
                       cwd=tmp_path, input=PASSWORD + "\n", capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0 and "holds none of the roles this needs (administrator)" in p.stderr, p.stderr


def test_signing_revision_that_adds_an_annotation_fails(floor):  # noqa: F811
    """An insider with the key file adds an annotation in the very revision they sign (so the
    signature covers it and nothing follows): the signing revision is read object by object."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    api = floor
    pdf = build(api)
    key = load_report_key(api.ledger.report_key_dir, DEA)
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf[:first_revision_end(pdf)]), strict=False)
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    note = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/FreeText"),
        generic.NameObject("/Rect"): generic.ArrayObject([generic.NumberObject(x) for x in (300, 300, 360, 312)]),
        generic.NameObject("/Contents"): generic.TextStringObject("1.00 mL"),
        generic.NameObject("/DA"): generic.TextStringObject("/Helv 7.5 Tf 0 g")}))
    page[generic.NameObject("/Annots")] = generic.ArrayObject([note])
    writer.update_container(page)
    cert = asn1_x509.Certificate.load(key.certificate_der)
    signer = signers.SimpleSigner(
        signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs([cert]),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())))
    meta = signers.PdfSignatureMetadata(field_name=FIELD_NAME, certify=True, subfilter=fields.SigSeedSubFilter.PADES,
                                        docmdp_permissions=fields.MDPPerm.NO_CHANGES)
    bad = _in_a_thread_of_its_own(lambda: signers.PdfSigner(meta, signer).sign_pdf(writer).getvalue())
    problems = problems_of(api, bad)
    assert any("the signing revision adds object" in p and "/Annot" in p for p in problems), problems
    assert not any("does not cover the whole file" in p for p in problems), problems


def _in_a_thread_of_its_own(fn):
    """Run ``fn`` in a new thread, where no event loop runs. Why: the test calls pyhanko (or
    ``asyncio.run``) itself, and in a worker that ran the browser tests first their session-wide
    Playwright keeps an event loop running in this thread (the product's own calls cope with
    that: ``reports.signing._outside_event_loop``)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def test_signing_and_checking_work_inside_an_event_loop(floor):  # noqa: F811
    """pyhanko's synchronous calls run ``asyncio.run``: from a thread that runs an event loop (an
    async route, a browser-driving test) they must still sign and check, not fail."""
    import asyncio

    api = floor
    pdf = build(api)
    key = load_report_key(api.ledger.report_key_dir, DEA)

    async def inside() -> tuple[list[str], bytes]:
        return inspect_signature(pdf).problems, sign_report(pdf[:first_revision_end(pdf)], key, generated_at(pdf))

    problems, again = _in_a_thread_of_its_own(lambda: asyncio.run(inside()))
    assert problems == [] and inspect_signature(again).problems == []
