"""Signed checkpoints: C2SP signed-note v1.0.0, tlog-checkpoint v1.0.0, tlog-cosignature v1.

Pure module (standard library + ``cryptography``), Ed25519 only.

* A **note** is UTF-8 text ending in a newline, a blank line, then one or more signature
  lines ``"\u2014 <key name> <base64(4-byte key ID || signature)>\\n"``.
* A **key ID** is the first 4 bytes (big-endian uint32) of
  ``SHA-256(name || 0x0A || signature type || public key)``; type ``0x01`` is a plain Ed25519
  note signature, ``0x04`` a timestamped ``cosignature/v1`` witness cosignature.
* A **verifier key** (public) is ``<name>+<8 hex key ID>+<base64(type || 32-byte key)>``; a
  **signer key** (secret) is ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(type || 32-byte
  seed)>``, the format of Go's ``golang.org/x/mod/sumdb/note``.
* A **checkpoint** body is ``<origin>\\n<decimal size>\\n<base64 root>\\n`` plus optional
  non-empty extension lines.
* A **cosignature/v1** signs ``"cosignature/v1\\ntime <t>\\n" + checkpoint body``; its
  signature bytes are ``uint64 big-endian t || Ed25519 signature``.

Every malformed input raises :class:`NoteError` (a ``ValueError``) with a message that says
what is wrong; nothing here lets a parsing problem escape as another exception type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Checkpoint",
    "InvalidSignatureError",
    "NoteError",
    "NoteSignature",
    "OpenedNote",
    "Signer",
    "UnverifiedNoteError",
    "Verifier",
    "add_signature_lines",
    "cosign",
    "cosignature_message",
    "format_signature_line",
    "generate_signer",
    "is_valid_key_name",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_signature_line",
    "sign_checkpoint",
    "sign_note",
    "split_note",
    "verify_cosignature",
]

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


# ------------------------------------------------------------------------ helpers


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


# --------------------------------------------------------------------------- keys


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


# ---------------------------------------------------------------- signature lines


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note.

    ``signature`` excludes the 4-byte key ID. ``verified`` is True only when a known key
    checked it; ``timestamp`` is set for verified cosignatures.
    """

    name: str
    key_id: int
    signature: bytes
    verified: bool = False
    timestamp: int | None = None

    @property
    def base64(self) -> str:
        """The line's base64 payload: key ID || signature."""
        return _b64(self.key_id.to_bytes(4, "big") + self.signature)

    def line(self) -> str:
        """The signature line, with its trailing newline."""
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"


def format_signature_line(name: str, key_id_: int, signature: bytes) -> str:
    """``"\u2014 <name> <base64(key ID || signature)>\\n"``."""
    _check_key_name(name)
    return NoteSignature(name, key_id_, bytes(signature)).line()


def parse_signature_line(line: str | bytes) -> NoteSignature:
    """Parse one signature line (trailing newline optional); the result is unverified."""
    line = _decode_utf8(line, "signature line")
    if line.endswith("\n"):
        line = line[:-1]
    if "\n" in line:
        raise NoteError("signature line contains a newline")
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("signature line must start with an em dash (U+2014) and a space")
    rest = line[len(_SIG_PREFIX) :]
    name, sep, b64 = rest.partition(" ")
    if not sep or not b64:
        raise NoteError("signature line must be '\u2014 <key name> <base64 signature>'")
    _check_key_name(name)
    raw = _b64decode_strict(b64, f"signature of {name}")
    if len(raw) < 5:
        raise NoteError(f"signature of {name} is too short ({len(raw)} bytes)")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


# -------------------------------------------------------------------------- notes


def _check_note_text(text: bytes | str) -> bytes:
    s = _decode_utf8(text, "note text")
    if not s:
        raise NoteError("note text is empty")
    if not s.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_text_chars(s, "note text")
    return s.encode("utf-8")


def split_note(note: bytes | str) -> tuple[bytes, list[NoteSignature]]:
    """Split a note into its text and (unverified) signature lines, checking syntax only.

    The text is everything up to and including the newline before the *last* blank line.
    """
    if isinstance(note, (bytes, bytearray, memoryview)) and len(note) > MAX_NOTE_SIZE:
        raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    s = _decode_utf8(note, "note")
    if len(s) > MAX_NOTE_SIZE:
        raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    _check_text_chars(s, "note")
    split = s.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line between its text and its signatures")
    text, sig_block = s[: split + 1], s[split + 2 :]
    if not sig_block:
        raise NoteError("note has no signature lines")
    if not sig_block.endswith("\n"):
        raise NoteError("note's last signature line does not end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return text.encode("utf-8"), [parse_signature_line(line) for line in lines]


@dataclass(frozen=True)
class OpenedNote:
    """Result of :func:`open_note`; unpacks as ``text, signatures = open_note(...)``.

    ``signatures`` are the verified ones (each from a known key, once per key);
    ``unverified`` are the lines from unknown keys, which prove nothing.
    """

    text: bytes
    signatures: list[NoteSignature]
    unverified: list[NoteSignature]

    def __iter__(self) -> Iterator[bytes | list[NoteSignature]]:
        # Two-item unpacking as the API promises; unknown-key lines stay an attribute so
        # that no caller can mistake them for verified ones by unpacking.
        return iter((self.text, self.signatures))


def open_note(
    note: bytes | str, verifiers: Iterable[Verifier], *, require_known: bool = True
) -> OpenedNote:
    """Parse a note and verify its signatures against the known ``verifiers``.

    * Malformed notes raise :class:`NoteError`.
    * A line whose ``(name, key ID)`` matches a known verifier must verify, else the whole
      note is rejected with :class:`InvalidSignatureError`.
    * Lines from unknown keys (even sharing a name *or* a key ID with a known key) are
      returned in ``unverified`` and never counted as valid.
    * With ``require_known`` (the default, as the spec requires), a note with no verified
      signature raises :class:`UnverifiedNoteError`.
    """
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        if not isinstance(v, Verifier):
            raise NoteError(f"verifiers must be Verifier objects, got {type(v).__name__}")
        other = known.get((v.name, v.key_id))
        if other is not None and other != v:
            raise NoteError(
                f"two different verifiers share the name and key ID {v.name}+{v.key_id:08x}"
            )
        known[(v.name, v.key_id)] = v

    text, lines = split_note(note)
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen_known: set[tuple[str, int]] = set()
    seen_unknown: set[str] = set()
    for sig in lines:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            # Duplicate identical unknown lines carry no information; keep one.
            if sig.base64 + sig.name not in seen_unknown:
                seen_unknown.add(sig.base64 + sig.name)
                unverified.append(sig)
            continue
        # Verify every line of a known key, even repeats: a bad repeat is still tampering.
        timestamp = verifier.verify(text, sig.signature)
        if (sig.name, sig.key_id) not in seen_known:
            seen_known.add((sig.name, sig.key_id))
            verified.append(
                NoteSignature(sig.name, sig.key_id, sig.signature, True, timestamp)
            )
    if require_known and not verified:
        raise UnverifiedNoteError(unverified)
    return OpenedNote(text, verified, unverified)


def sign_note(
    text: bytes | str, signers: Iterable[Signer] | Signer, *, timestamp: int | None = None
) -> bytes:
    """Sign note text with each signer; return the whole note (text, blank line, lines).

    ``timestamp`` is used (and required) only by cosigners (type ``0x04``).
    """
    body = _check_note_text(text)
    if isinstance(signers, Signer):
        signers = [signers]
    lines = []
    for signer in signers:
        ts = timestamp if signer.sig_type == SIG_COSIGNATURE_V1 else None
        lines.append(format_signature_line(signer.name, signer.key_id, signer.sign(body, ts)))
    if not lines:
        raise NoteError("a note needs at least one signer")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    note = body + b"\n" + "".join(lines).encode("utf-8")
    if len(note) > MAX_NOTE_SIZE:
        raise NoteError(f"signed note would be larger than {MAX_NOTE_SIZE} bytes")
    return note


def add_signature_lines(note: bytes | str, lines: Iterable[str]) -> bytes:
    """Append signature lines (e.g. witness cosignatures) to a signed note.

    Checks the syntax of the result, not the signatures; lines already present are skipped.
    """
    text, existing = split_note(note)
    present = {s.line() for s in existing}
    out = [s.line() for s in existing]
    for line in lines:
        sig = parse_signature_line(line)
        if sig.line() not in present:
            present.add(sig.line())
            out.append(sig.line())
    merged = text + b"\n" + "".join(out).encode("utf-8")
    split_note(merged)  # size and count limits
    return merged


# -------------------------------------------------------------------- checkpoints


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise NoteError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise NoteError(f"{what} is empty")
    if "\n" in value:
        raise NoteError(f"{what} contains a newline")
    _check_text_chars(value, what)
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise NoteError("checkpoint tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint tree size {self.size} is outside 0..2^63-1")
        if not isinstance(self.root, (bytes, bytearray)):
            raise NoteError("checkpoint root hash must be bytes")
        if len(self.root) != _ROOT_HASH_SIZE:
            raise NoteError(
                f"checkpoint root hash must be {_ROOT_HASH_SIZE} bytes, got {len(self.root)}"
            )
        object.__setattr__(self, "root", bytes(self.root))
        exts = tuple(self.extensions)
        for i, ext in enumerate(exts):
            _check_line(ext, f"checkpoint extension line {i + 1}")
        object.__setattr__(self, "extensions", exts)

    def body(self) -> bytes:
        """The note text: each line ending in a newline, UTF-8."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, body: bytes | str) -> Checkpoint:
        """Parse a checkpoint body strictly; raise :class:`NoteError` naming the problem."""
        s = _decode_utf8(body, "checkpoint")
        if len(s) > MAX_NOTE_SIZE:
            raise NoteError(f"checkpoint is larger than {MAX_NOTE_SIZE} bytes")
        if not s.endswith("\n"):
            raise NoteError("checkpoint must end with a newline")
        lines = s[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(
                "checkpoint needs at least three lines: origin, tree size, root hash"
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise NoteError("checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size_text):
            raise NoteError(
                f"checkpoint tree size {size_text!r} is not a canonical decimal number"
            )
        if len(size_text) > 19 or int(size_text) > MAX_TREE_SIZE:
            raise NoteError(f"checkpoint tree size {size_text} is too large")
        root_hash = _b64decode_strict(root_text, "checkpoint root hash")
        if len(root_hash) != _ROOT_HASH_SIZE:
            raise NoteError(
                f"checkpoint root hash must be {_ROOT_HASH_SIZE} bytes, got {len(root_hash)}"
            )
        for i, ext in enumerate(extensions):
            if not ext:
                raise NoteError(f"checkpoint extension line {i + 1} is empty")
        return cls(origin, int(size_text), root_hash, tuple(extensions))


def parse_checkpoint(body: bytes | str) -> Checkpoint:
    """Same as :meth:`Checkpoint.parse`."""
    return Checkpoint.parse(body)


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[Signer] | Signer) -> bytes:
    """Sign a checkpoint body as a note (the log key's name should equal the origin)."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(
    note: bytes | str, verifiers: Iterable[Verifier], *, require_known: bool = True
) -> tuple[Checkpoint, OpenedNote]:
    """Open a signed checkpoint note and parse its body.

    Pass the log's verifier (and witness verifiers, whose cosignatures then come back
    verified with their timestamps).
    """
    opened = open_note(note, verifiers, require_known=require_known)
    return Checkpoint.parse(opened.text), opened


# ------------------------------------------------------------------ cosignatures


def _body_bytes(checkpoint_body: bytes | str | Checkpoint) -> bytes:
    if isinstance(checkpoint_body, Checkpoint):
        return checkpoint_body.body()
    # Only well-formed checkpoints are cosigned or accepted as cosigned.
    return Checkpoint.parse(checkpoint_body).body()


def cosign(
    checkpoint_body: bytes | str | Checkpoint, witness_signer: Signer, timestamp: int
) -> str:
    """Return a cosignature/v1 signature line over a checkpoint body at ``timestamp``."""
    if witness_signer.sig_type != SIG_COSIGNATURE_V1:
        raise NoteError("a cosignature needs a witness key of type 0x04 (cosignature/v1)")
    _check_timestamp(timestamp)
    body = _body_bytes(checkpoint_body)
    return format_signature_line(
        witness_signer.name, witness_signer.key_id, witness_signer.sign(body, timestamp)
    )


def verify_cosignature(
    checkpoint_body: bytes | str | Checkpoint, line: str | bytes, witness_verifier: Verifier
) -> int:
    """Verify one cosignature/v1 line over a checkpoint body; return its timestamp.

    Raises :class:`NoteError` if the line is malformed or from another key, and
    :class:`InvalidSignatureError` if the signature does not verify.
    """
    if witness_verifier.sig_type != SIG_COSIGNATURE_V1:
        raise NoteError("witness verifier must be of type 0x04 (cosignature/v1)")
    body = _body_bytes(checkpoint_body)
    sig = parse_signature_line(line)
    if (sig.name, sig.key_id) != (witness_verifier.name, witness_verifier.key_id):
        raise NoteError(
            f"cosignature is from {sig.name}+{sig.key_id:08x}, "
            f"not from {witness_verifier.name}+{witness_verifier.key_id:08x}"
        )
    timestamp = witness_verifier.verify(body, sig.signature)
    if timestamp is None:  # pragma: no cover - type 0x04 always yields one
        raise NoteError("cosignature carries no timestamp")
    return timestamp
