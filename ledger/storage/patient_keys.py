"""The encrypted patient registry.

Name and address are health data and are required on the administration record (21 CFR
1304.22(c)). They live only here, encrypted at rest with AES-GCM (``cryptography``), bound by the
associated data to (registrant, patient id) so a row cannot be moved to another patient. Entries
hold the patient id and a commitment to the name and address: a registry row changed without a
``patient_details_changed`` entry no longer matches its commitment (``check_registry``).

Two commitment schemes (``ledger.integrity.patient_commitments``): v1, an HMAC-SHA256 under the
commitment key, which only the key holder can check; and v2, which every new entry records, a
salted SHA-256 whose opening (salt) is derived here per patient and per details version, so an
inspector given a report's details and openings can check them offline without the key. Entries
already recorded keep their v1 commitments (never rewritten): every check accepts either
(``matches``).

The key is 32 random bytes (base64) from ``CSLEDGER_PATIENT_KEY`` or a 0600 key file, never the
database. Encryption and commitment keys are derived from it with HKDF, so neither is the other.
A key-check value (an HMAC of a fixed label under a third derived key, revealing nothing) is
stored at first use; a different key is refused before anything is written or read with it.

Nothing here puts a name or an address into a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.domain.errors import LedgerError
from ledger.integrity.patient_commitments import canonical_details, commitment_v2, opening_message

KEY_CHECK_NAME = "patient-key-v1"


class PatientKeyError(LedgerError):
    """The patient key is missing, malformed, or not the key the registry was written with."""

    status = 500
    type = "patient-key"


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"csledger/patients/" + label).derive(master)


@dataclass(frozen=True)
class PatientDetails:
    """A patient's name and address, and (issue 21) their date of birth when given: the second
    identifier a pick shows. Rows sealed before hold no date of birth and open with ``None``."""

    name: str
    street: str
    city: str
    state: str
    postal_code: str
    #: ISO date ("1984-03-07"), or None when not given (never "" in a sealed row).
    date_of_birth: str | None = None

    def __repr__(self) -> str:  # never print health data by accident
        return "PatientDetails(<redacted>)"

    def as_dict(self) -> dict[str, str]:
        """The five fields, and the date of birth when given, as a report embeds them beside their
        opening (without a date of birth exactly the five fields, as before issue 21)."""
        out = {"name": self.name, "street": self.street, "city": self.city, "state": self.state,
               "postal_code": self.postal_code}
        if self.date_of_birth is not None:
            out["date_of_birth"] = self.date_of_birth
        return out

    def canonical(self) -> bytes:
        """The committed (and sealed) bytes; unchanged since v1 for details without a date of
        birth, whose commitments depend on them."""
        return canonical_details(self.as_dict())


class PatientKeys:
    """The derived keys; build with ``from_settings`` or ``from_base64``."""

    def __init__(self, master: bytes):
        if len(master) != 32:
            raise PatientKeyError("the patient key must be 32 bytes (base64 of 32 random bytes)", field="patient_key")
        self._aead = AESGCM(_derive(master, b"aes-gcm"))
        self._mac = _derive(master, b"commitment")
        self._kcv = _derive(master, b"key-check")

    def __repr__(self) -> str:
        return "PatientKeys(<secret>)"

    @classmethod
    def from_base64(cls, text: str) -> PatientKeys:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (ValueError, TypeError):
            raise PatientKeyError("the patient key is not valid base64", field="patient_key") from None
        return cls(raw)

    @classmethod
    def from_settings(cls, settings: Any) -> PatientKeys:
        """From ``CSLEDGER_PATIENT_KEY`` when set, else the key file."""
        if settings.patient_key:
            return cls.from_base64(settings.patient_key)
        path = Path(settings.patient_key_file)
        if not path.exists():
            raise PatientKeyError(f"no patient key: set CSLEDGER_PATIENT_KEY or create {path} "
                                  "(csledger patient-key generate)", field="patient_key_file")
        try:
            text = path.read_bytes().decode("ascii")
        except UnicodeDecodeError:
            raise PatientKeyError(f"{path} is not a patient key file (not base64 text)",
                                  field="patient_key_file") from None
        except OSError as exc:
            raise PatientKeyError(f"cannot read the patient key file {path} ({exc.strerror or exc})",
                                  field="patient_key_file") from None
        return cls.from_base64(text)

    def commitment(self, registrant: str, patient_id: str, details: PatientDetails) -> str:
        """The v2 commitment every new entry records: SHA-256 over the derived ``opening``, the
        patient and the details (``open_commitment`` checks it with no key)."""
        opening = bytes.fromhex(self.opening(registrant, patient_id, details))
        return commitment_v2(registrant, patient_id, details.canonical(), opening)

    def commitment_v1(self, registrant: str, patient_id: str, details: PatientDetails) -> str:
        """The v1 commitment (HMAC-SHA256 under the commitment key) entries recorded before v2:
        kept to check them (``matches``), never to record a new one."""
        msg = registrant.encode() + b"\x00" + patient_id.encode() + b"\x00" + details.canonical()
        return hmac.new(self._mac, msg, hashlib.sha256).hexdigest()

    def opening(self, registrant: str, patient_id: str, details: PatientDetails) -> str:
        """The v2 opening (64 hex): HMAC-SHA256 under the commitment key of the labelled patient
        and details. Derived, not random, so the same details always give the same commitment
        (registering a patient is idempotent); a PRF output, so it reveals nothing about the key,
        other patients or other versions of this patient's details."""
        return hmac.new(self._mac, opening_message(registrant, patient_id, details.canonical()),
                        hashlib.sha256).hexdigest()

    def matched_version(self, registrant: str, patient_id: str, details: PatientDetails,
                        commitment: Any) -> int | None:
        """2 or 1 when ``commitment`` is the v2 or v1 commitment of these details, None when
        neither (or it is not a commitment at all). Constant-time comparisons."""
        if not isinstance(commitment, str):
            return None
        got = commitment.encode("ascii", "replace")
        if hmac.compare_digest(self.commitment(registrant, patient_id, details).encode(), got):
            return 2
        if hmac.compare_digest(self.commitment_v1(registrant, patient_id, details).encode(), got):
            return 1
        return None

    def matches(self, registrant: str, patient_id: str, details: PatientDetails, commitment: Any) -> bool:
        """Whether ``commitment`` (v1 or v2) commits to these details for this patient."""
        return self.matched_version(registrant, patient_id, details, commitment) is not None

    def seal(self, registrant: str, patient_id: str, details: PatientDetails) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, details.canonical(), f"{registrant}/{patient_id}".encode())

    def open(self, registrant: str, patient_id: str, sealed: bytes) -> PatientDetails:
        try:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], f"{registrant}/{patient_id}".encode())
        except InvalidTag:
            raise PatientKeyError(f"registry row of patient {patient_id} does not decrypt (wrong key or altered row)",
                                  field="patient_id") from None
        return PatientDetails(**json.loads(plain))

    def check_value(self) -> str:
        return hmac.new(self._kcv, b"csledger patient key check", hashlib.sha256).hexdigest()

    def registry_row_problem(self, registrant: str, patient_id: str, sealed: Any, commitment: str | None) -> str | None:
        """Why a registry row does not hold what the ledger committed to, or None when it does:
        it must decrypt under this key bound to (registrant, patient id), and the name and address
        must have the commitment of the patient's latest entry. The reason never holds health data."""
        if not isinstance(sealed, bytes | bytearray | memoryview) or len(sealed) < 12 + 16:
            return "is not a sealed record"
        try:
            details = self.open(registrant, patient_id, bytes(sealed))
        except PatientKeyError:
            return (f"does not decrypt under the patient key as {registrant}/{patient_id} "
                    "(the ciphertext was altered or moved from another patient)")
        if not self.matches(registrant, patient_id, details, commitment):
            return ("no longer matches the commitment recorded in the ledger (name or address changed "
                    "without a patient_details_changed entry)")
        return None


def generate_key_file(path: Path) -> None:
    """Write a new random key (base64) with mode 0600; refuses to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
