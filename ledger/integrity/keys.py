"""C2SP signed-note keys: Ed25519 verifier and signer keys in the Go ``sumdb/note`` string
formats, key IDs, the cosignature message, and the strict checks every note parser shares.
Every malformed input raises :class:`NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

if TYPE_CHECKING:  # an annotation only: notes imports this module
    from ledger.integrity.notes import NoteSignature

SIG_ED25519 = 0x01


"""Signature type byte of plain Ed25519 note signatures (signed-note)."""


SIG_COSIGNATURE_V1 = 0x04


"""Signature type byte of timestamped Ed25519 witness cosignatures (tlog-cosignature)."""


MAX_NOTE_SIZE = 1 << 20


"""Notes larger than this (1 MiB) are refused before any parsing work."""


MAX_SIGNATURES = 100


"""Notes with more signature lines are refused (the spec requires accepting at least 16)."""


MAX_TIMESTAMP = (1 << 63) - 1


"""Largest cosignature timestamp allowed by tlog-cosignature."""


MAX_TREE_SIZE = (1 << 63) - 1


"""Largest checkpoint tree size accepted (int64, as Go's tlog parses it)."""


COSIGNATURE_V1_HEADER = b"cosignature/v1\n"


_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE


_PRIVATE_PREFIX = "PRIVATE+KEY+"


_ED25519_KEY_SIZE = 32


_ED25519_SIG_SIZE = 64


_ROOT_HASH_SIZE = 32


_SUPPORTED_TYPES = {SIG_ED25519: "Ed25519", SIG_COSIGNATURE_V1: "cosignature/v1 (Ed25519)"}


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(ValueError):
    """A key, note, signature line or checkpoint is malformed or fails to verify."""


class InvalidSignatureError(NoteError):
    """A signature from a known key does not verify."""

    def __init__(self, name: str, key_id: int, detail: str = "") -> None:
        self.name = name
        self.key_id = key_id
        msg = f"invalid signature from known key {name}+{key_id:08x}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class UnverifiedNoteError(NoteError):
    """No signature of the note comes from a known key."""

    def __init__(self, unverified: list[NoteSignature]) -> None:
        self.unverified = unverified
        names = ", ".join(sorted({f"{s.name}+{s.key_id:08x}" for s in unverified}))
        super().__init__(
            "note has no signature from a known key"
            + (f" (unknown signers: {names})" if names else "")
        )


def _b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 with padding, rejecting any non-canonical spelling.

    Accepting two spellings of the same bytes would let a note be altered without breaking
    its signatures; the round-trip check closes that (non-zero padding bits, whitespace).
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_text_chars(text: str, what: str) -> None:
    # signed-note: no ASCII control characters other than newline anywhere in a note.
    for ch in text:
        if ch < " " and ch != "\n":
            raise NoteError(f"{what} contains the control character U+{ord(ch):04X}")


def _decode_utf8(data: bytes | str, what: str) -> str:
    if isinstance(data, str):
        try:
            data.encode("utf-8")  # lone surrogates cannot be in a note
        except UnicodeEncodeError as exc:
            raise NoteError(f"{what} is not valid Unicode text") from exc
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NoteError(f"{what} must be bytes or str, got {type(data).__name__}")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"{what} is not valid UTF-8") from exc


def is_valid_key_name(name: object) -> bool:
    """True if ``name`` is a valid key name: non-empty, no Unicode space, no ``+``.

    Control characters are refused too, since they may not appear in a note at all.
    """
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(ch.isspace() or ch < " " for ch in name)
    )


def _check_key_name(name: object) -> str:
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    return name  # type: ignore[return-value]


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """Return the key ID: SHA-256(name || 0x0A || type || public key)[:4] as a uint32."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([sig_type]) + bytes(public_key)
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _check_type(sig_type: int) -> int:
    if sig_type not in _SUPPORTED_TYPES:
        raise NoteError(f"unsupported signature type 0x{sig_type:02x}")
    return sig_type


def _check_timestamp(timestamp: object) -> int:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise NoteError(f"timestamp must be an integer, got {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"timestamp {timestamp} is outside 0..2^63-1")
    return timestamp


def cosignature_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header line, time line, then the checkpoint body."""
    _check_timestamp(timestamp)
    return COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + bytes(checkpoint_body)


class Verifier:
    """A public key that verifies note signatures of one ``(name, key ID)``.

    Build one with :meth:`from_string` (a verifier key string) or :meth:`from_public_bytes`.
    Type ``0x01`` verifies plain note signatures; type ``0x04`` verifies witness
    cosignatures (the signed bytes are then the cosignature/v1 message).
    """

    __slots__ = ("name", "key_id", "sig_type", "public_bytes", "_key")

    def __init__(self, name: str, sig_type: int, public_bytes: bytes, key_id_: int) -> None:
        self.name: str = _check_key_name(name)
        self.sig_type: int = _check_type(sig_type)
        if len(public_bytes) != _ED25519_KEY_SIZE:
            raise NoteError(
                f"Ed25519 public key must be {_ED25519_KEY_SIZE} bytes, got {len(public_bytes)}"
            )
        self.public_bytes: bytes = bytes(public_bytes)
        expected = key_id(name, sig_type, self.public_bytes)
        if key_id_ != expected:
            raise NoteError(
                f"key ID {key_id_:08x} does not match the key (expected {expected:08x})"
            )
        self.key_id: int = key_id_
        try:
            self._key = Ed25519PublicKey.from_public_bytes(self.public_bytes)
        except ValueError as exc:  # pragma: no cover - cryptography only checks length today
            raise NoteError(f"invalid Ed25519 public key: {exc}") from exc

    @classmethod
    def from_public_bytes(
        cls, name: str, public_bytes: bytes, sig_type: int = SIG_ED25519
    ) -> Verifier:
        """Build a verifier from a name and a raw 32-byte Ed25519 public key."""
        _check_key_name(name)
        _check_type(sig_type)
        return cls(name, sig_type, public_bytes, key_id(name, sig_type, public_bytes))

    @classmethod
    def from_string(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex8 key ID>+<base64(type || public key)>``."""
        if not isinstance(vkey, str):
            raise NoteError("verifier key must be a string")
        vkey = vkey.strip()
        if vkey.startswith(_PRIVATE_PREFIX):
            raise NoteError("this is a signer (private) key, not a verifier key")
        # Only the first two '+' separate fields: base64 key material may itself contain '+'.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must have the form <name>+<hex8 key ID>+<base64 key>")
        name, hex_id, b64 = parts
        _check_key_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"verifier key ID {hex_id!r} is not 8 hexadecimal digits")
        raw = _b64decode_strict(b64, "verifier key material")
        if len(raw) < 1:
            raise NoteError("verifier key material is empty")
        return cls(name, _check_type(raw[0]), raw[1:], int(hex_id, 16))

    def to_string(self) -> str:
        """The verifier key string (safe to publish)."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.sig_type]) + self.public_bytes)}"

    __str__ = to_string

    @property
    def key_id_hex(self) -> str:
        """The key ID as 8 lowercase hex digits."""
        return f"{self.key_id:08x}"

    @property
    def fingerprint(self) -> str:
        """Human-comparable fingerprint: ``SHA256:`` + unpadded base64 of SHA-256(type||key).

        Displayed when keys are compared out of band (like an SSH key fingerprint); the
        4-byte key ID is an identifier, too short to authenticate a key.
        """
        digest = hashlib.sha256(bytes([self.sig_type]) + self.public_bytes).digest()
        return "SHA256:" + _b64(digest).rstrip("=")

    @property
    def algorithm(self) -> str:
        """Readable name of the signature type."""
        return _SUPPORTED_TYPES[self.sig_type]

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """Verify raw signature bytes (without the key ID) over note text.

        Returns the timestamp for a cosignature, ``None`` for a plain signature. Raises
        :class:`InvalidSignatureError` if the signature does not verify.
        """
        text = bytes(text)
        signature = bytes(signature)
        timestamp: int | None = None
        if self.sig_type == SIG_COSIGNATURE_V1:
            if len(signature) != 8 + _ED25519_SIG_SIZE:
                raise InvalidSignatureError(
                    self.name, self.key_id, f"cosignature must be 72 bytes, got {len(signature)}"
                )
            (timestamp,) = struct.unpack(">Q", signature[:8])
            if timestamp > MAX_TIMESTAMP:
                raise InvalidSignatureError(self.name, self.key_id, "timestamp exceeds 2^63-1")
            message = cosignature_message(text, timestamp)
            signature = signature[8:]
        else:
            if len(signature) != _ED25519_SIG_SIZE:
                raise InvalidSignatureError(
                    self.name, self.key_id, f"signature must be 64 bytes, got {len(signature)}"
                )
            message = text
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise InvalidSignatureError(self.name, self.key_id) from None
        return timestamp

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return (self.name, self.sig_type, self.public_bytes) == (
            other.name,
            other.sig_type,
            other.public_bytes,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.sig_type, self.public_bytes))

    def __repr__(self) -> str:
        return f"Verifier({self.to_string()!r})"


class Signer:
    """A private Ed25519 key that signs notes as one ``(name, key ID)``.

    ``repr`` never shows the secret; :meth:`to_string` does, so store its result as a secret.
    """

    __slots__ = ("name", "key_id", "sig_type", "_seed", "_key", "_verifier")

    def __init__(self, name: str, sig_type: int, seed: bytes) -> None:
        self.name: str = _check_key_name(name)
        self.sig_type: int = _check_type(sig_type)
        if len(seed) != _ED25519_KEY_SIZE:
            raise NoteError(f"Ed25519 seed must be {_ED25519_KEY_SIZE} bytes, got {len(seed)}")
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._verifier = Verifier.from_public_bytes(name, public, sig_type)
        self.key_id: int = self._verifier.key_id

    @classmethod
    def generate(cls, name: str, sig_type: int = SIG_ED25519) -> Signer:
        """A new random key."""
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(name, sig_type, seed)

    @classmethod
    def from_string(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex8 key ID>+<base64(type || 32-byte seed)>``."""
        if not isinstance(skey, str):
            raise NoteError("signer key must be a string")
        skey = skey.strip()
        if not skey.startswith(_PRIVATE_PREFIX):
            raise NoteError("signer key must start with PRIVATE+KEY+")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)  # base64 may contain '+'
        if len(parts) != 3:
            raise NoteError(
                "signer key must have the form PRIVATE+KEY+<name>+<hex8 key ID>+<base64 key>"
            )
        name, hex_id, b64 = parts
        _check_key_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"signer key ID {hex_id!r} is not 8 hexadecimal digits")
        raw = _b64decode_strict(b64, "signer key material")
        if len(raw) < 1:
            raise NoteError("signer key material is empty")
        signer = cls(name, _check_type(raw[0]), raw[1:])
        if signer.key_id != int(hex_id, 16):
            raise NoteError(
                f"signer key ID {hex_id} does not match the key (expected {signer.key_id:08x})"
            )
        return signer

    def to_string(self) -> str:
        """The secret signer key string. Treat the result as a secret."""
        material = _b64(bytes([self.sig_type]) + self._seed)
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{material}"

    def verifier(self) -> Verifier:
        """The matching public verifier."""
        return self._verifier

    def sign(self, text: bytes, timestamp: int | None = None) -> bytes:
        """Raw signature bytes (without key ID) over note text.

        A cosigner (type ``0x04``) needs ``timestamp`` and returns ``uint64 t || signature``
        over the cosignature/v1 message; a plain signer takes no timestamp.
        """
        text = bytes(text)
        if self.sig_type == SIG_COSIGNATURE_V1:
            if timestamp is None:
                raise NoteError("a cosignature needs a timestamp")
            message = cosignature_message(text, timestamp)
            return struct.pack(">Q", timestamp) + self._key.sign(message)
        if timestamp is not None:
            raise NoteError("a plain Ed25519 note signature takes no timestamp")
        return self._key.sign(text)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x}, type=0x{self.sig_type:02x})"


def generate_signer(name: str, sig_type: int = SIG_ED25519) -> tuple[str, str]:
    """Generate a new key; return ``(signer key string, verifier key string)``.

    Use ``sig_type=SIG_COSIGNATURE_V1`` for a witness key.
    """
    signer = Signer.generate(name, sig_type)
    return signer.to_string(), signer.verifier().to_string()
