"""Signed checkpoints: C2SP signed-note v1.0.0, tlog-checkpoint v1.0.0, tlog-cosignature v1.

Pure module (standard library + ``cryptography``), Ed25519 only.

* A **note** is UTF-8 text ending in a newline, a blank line, then one or more signature
  lines ``"— <key name> <base64(4-byte key ID || signature)>\n"``.
* A **key ID** is the first 4 bytes (big-endian uint32) of
  ``SHA-256(name || 0x0A || signature type || public key)``; type ``0x01`` is a plain Ed25519
  note signature, ``0x04`` a timestamped ``cosignature/v1`` witness cosignature.
* A **verifier key** (public) is ``<name>+<8 hex key ID>+<base64(type || 32-byte key)>``; a
  **signer key** (secret) is ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(type || 32-byte
  seed)>``, the format of Go's ``golang.org/x/mod/sumdb/note``.
* A **checkpoint** body is ``<origin>\n<decimal size>\n<base64 root>\n`` plus optional
  non-empty extension lines.
* A **cosignature/v1** signs ``"cosignature/v1\ntime <t>\n" + checkpoint body``; its
  signature bytes are ``uint64 big-endian t || Ed25519 signature``.

Every malformed input raises :class:`NoteError` (a ``ValueError``) with a message that says
what is wrong; nothing here lets a parsing problem escape as another exception type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.integrity.keys import (  # noqa: F401  (re-exported)
    _DECIMAL,
    _ROOT_HASH_SIZE,
    COSIGNATURE_V1_HEADER,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    MAX_TREE_SIZE,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    InvalidSignatureError,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    _b64,
    _b64decode_strict,
    _check_text_chars,
    _check_timestamp,
    _decode_utf8,
    cosignature_message,
    generate_signer,
    is_valid_key_name,
    key_id,
)
from ledger.integrity.notes import (  # noqa: F401  (re-exported)
    NoteSignature,
    OpenedNote,
    add_signature_lines,
    format_signature_line,
    open_note,
    parse_signature_line,
    sign_note,
    split_note,
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
