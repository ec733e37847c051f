"""C2SP signed notes v1.0.0: signature lines, splitting and opening a note against trusted
verifier keys, signing and adding signature lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ledger.integrity.keys import (
    _SIG_PREFIX,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    SIG_COSIGNATURE_V1,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    _b64,
    _b64decode_strict,
    _check_key_name,
    _check_text_chars,
    _decode_utf8,
)


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
