"""The registrant's report key (issue 18): the key every report PDF's certification signature is
made with, and the ``report_key_certified`` entry that makes its certificate trusted.

The key is an ECDSA P-256 key in ``<key_dir>/<DEA>-report.key`` (PEM: the PKCS#8 private key, then
its self-signed X.509 certificate naming the registrant; mode 0600 from the first byte, like the
log keys beside it), never in the database. An administrator certifies it with a signed command
(``certify_report_key``; ``csledger report-key`` at the console): the entry carries the certificate
(DER, base64) and its fingerprint. ``verify-report`` accepts a report's signer only if its
certificate is such an entry of that registrant at or before the report's tree size, so whoever
copies the key file without an administrator's signature cannot make a report that verifies
under a certificate of their own, and a certificate is never trusted from the PDF alone.
Rotation is certifying a new key: the file is replaced and older reports keep verifying under the
older entry.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ledger.domain import entries as ev
from ledger.domain.errors import InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal
from ledger.storage.store import CommandContext, Ledger

#: Who certifies a report key: an administrator (the registrant's own voice on every report).
CERTIFIERS = frozenset({"administrator"})
#: How long a report certificate is valid for; reports are checked against the certified entry,
#: not against the clock, so this only has to outlast every report it signs.
VALIDITY = timedelta(days=365 * 30)


@dataclass(frozen=True)
class ReportKey:
    """A report signing key: its private key and its self-signed certificate (DER)."""

    private_key: ec.EllipticCurvePrivateKey
    certificate_der: bytes

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.certificate_der)


def certificate_fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of a DER certificate (what the entry records and messages print)."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def key_path(key_dir: Path, registrant: str) -> Path:
    """Where a registrant's report key file lives."""
    return Path(key_dir) / f"{registrant}-report.key"


def make_report_key(registrant: str, name: str, now: datetime) -> ReportKey:
    """A new ECDSA P-256 key and a self-signed certificate naming the registrant (its name as
    the common name, its DEA number as the serial number attribute)."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{name[:40]} report signing"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name[:64] or registrant),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, registrant),
    ])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            # A day back: a report generated moments before on a clock a little behind still falls inside.
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(private, hashes.SHA256()))
    return ReportKey(private, cert.public_bytes(serialization.Encoding.DER))


def _pem(key: ReportKey) -> bytes:
    return (key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
            + x509.load_der_x509_certificate(key.certificate_der).public_bytes(serialization.Encoding.PEM))


def write_report_key(path: Path, key: ReportKey) -> None:
    """Write the key file, mode 0600 from the first byte (via a temporary file and a rename, so a
    crash never leaves half a key where the old one was)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_report_key(key_dir: Path, registrant: str) -> ReportKey | None:
    """The registrant's report key from its file; None when there is none."""
    path = key_path(key_dir, registrant)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(f"cannot read the report key {path}: {exc}", field="key_dir") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
        cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----"):])
    except ValueError as exc:
        raise InvalidInput(f"the report key file {path} is malformed ({exc})", field="key_dir") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or cert.public_key() != private.public_key():
        raise InvalidInput(f"the report key file {path} holds a certificate of another key", field="key_dir")
    return ReportKey(private, cert.public_bytes(serialization.Encoding.DER))


def certified_certificates(entries: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """(seq, DER) of every ``report_key_certified`` entry among decoded ``entries``, in order."""
    out = []
    for e in entries:
        if e.get("kind") == ev.ReportKeyCertified.kind:
            try:
                out.append((int(e["seq"]), base64.b64decode(e["certificate"], validate=True)))
            except (KeyError, ValueError, TypeError):
                continue  # a malformed entry certifies nothing (verify --deep reports it)
    return out


def certify_report_key(ledger: Ledger, admin: Principal, key_dir: Path, *,
                       idempotency_key: str | None = None) -> dict:
    """Make a new report key for ``admin``'s registrant, record its certificate as a
    ``report_key_certified`` entry signed by the administrator, and write the key file.

    The file is written after the entry commits (a failed command leaves no key that signs); if
    writing it then fails, the entry certifies a key nobody holds and certifying again makes
    another. Returns {seq, fingerprint, path}."""
    made: dict[str, ReportKey] = {}

    def build(ctx: CommandContext) -> dict:
        registrant = ctx.view.get("registrants", (admin.registrant,))
        if registrant is None:
            raise NotFound(f"no registrant {admin.registrant}", field="registrant")
        key = make_report_key(admin.registrant, str(registrant["name"]), ctx.now)
        made["key"] = key
        sig = ctx.signature(admin, Meaning.PERFORMED, roles=CERTIFIERS)
        e = ctx.append(ev.ReportKeyCertified(certificate=base64.b64encode(key.certificate_der).decode(),
                                             fingerprint=key.fingerprint),
                       signatures=[sig], occurred_at=ctx.now)
        return {"seq": e.seq, "fingerprint": key.fingerprint}

    res = ledger.execute(admin.registrant, "certify_report_key", {"type": "CertifyReportKey"}, build,
                         principal_id=admin.staff_id, idempotency_key=idempotency_key)
    path = key_path(key_dir, admin.registrant)
    if "key" in made:  # None on an idempotent replay: the key was written by the first call
        write_report_key(path, made["key"])
    return {**res, "path": str(path)}


__all__ = ["CERTIFIERS", "ReportKey", "certified_certificates", "certificate_fingerprint", "certify_report_key",
           "key_path", "load_report_key", "make_report_key", "write_report_key"]
