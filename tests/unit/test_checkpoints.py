"""Signed notes, checkpoints, cosignatures: C2SP signed-note, tlog-checkpoint, tlog-cosignature."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.integrity import checkpoints as cp
from ledger.integrity.checkpoints import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    InvalidSignatureError,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_signature_lines,
    cosign,
    generate_signer,
    key_id,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_cosignature,
)

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_TEXT = b"This is an example message.\n"
SPEC_LINE = (
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
SPEC_NOTE = SPEC_TEXT + b"\n" + SPEC_LINE.encode()

ORIGIN = "csledger.example/AB1234563/3f2a9c"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def log_signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture(scope="module")
def witness_signer() -> Signer:
    return Signer.generate("witness.example/w1", SIG_COSIGNATURE_V1)


# ---------------------------------------------------------------- spec vector


def test_spec_vector_verifies() -> None:
    v = Verifier.from_string(SPEC_VKEY)
    assert v.name == "example.com/foo"
    assert v.key_id == 0x530D903A
    assert v.key_id_hex == "530d903a"
    assert v.sig_type == SIG_ED25519
    assert len(v.public_bytes) == 32
    assert str(v) == SPEC_VKEY
    assert v.fingerprint.startswith("SHA256:")
    text, sigs = open_note(SPEC_NOTE, [v])
    assert text == SPEC_TEXT
    assert [(s.name, s.key_id, s.verified) for s in sigs] == [("example.com/foo", 0x530D903A, True)]
    assert sigs[0].line() == SPEC_LINE


def test_spec_vector_key_id_formula() -> None:
    v = Verifier.from_string(SPEC_VKEY)
    digest = hashlib.sha256(b"example.com/foo\n\x01" + v.public_bytes).digest()
    assert key_id("example.com/foo", SIG_ED25519, v.public_bytes) == int.from_bytes(
        digest[:4], "big"
    )


def test_spec_vector_tampered_text_rejected() -> None:
    v = Verifier.from_string(SPEC_VKEY)
    with pytest.raises(InvalidSignatureError):
        open_note(SPEC_NOTE.replace(b"example", b"exampel", 1), [v])


# ----------------------------------------------------------------- keys


@pytest.mark.parametrize("attempt", range(20))  # base64 material often contains '+'
def test_generate_and_parse_keys(attempt: int) -> None:
    skey, vkey = generate_signer("example.com/log")
    assert skey.startswith("PRIVATE+KEY+example.com/log+")
    signer = Signer.from_string(skey)
    verifier = Verifier.from_string(vkey)
    assert signer.verifier() == verifier
    assert signer.to_string() == skey
    assert signer.key_id == verifier.key_id
    assert "PRIVATE" not in repr(signer)
    raw = base64.b64decode(vkey.split("+", 2)[2])
    assert raw[0] == SIG_ED25519 and len(raw) == 33


def test_cosigner_key_has_type_4(witness_signer: Signer) -> None:
    v = witness_signer.verifier()
    assert base64.b64decode(str(v).split("+", 2)[2])[0] == SIG_COSIGNATURE_V1
    assert v.key_id == key_id(v.name, SIG_COSIGNATURE_V1, v.public_bytes)
    # Same key as a plain Ed25519 signer gets a different key ID.
    assert v.key_id != key_id(v.name, SIG_ED25519, v.public_bytes)


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/foo",
        "example.com/foo+530d903a",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong id
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # short id
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",  # bad b64
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k+x",
        "example.com/fo o+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # type 0x02
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv",  # short key
        "PRIVATE+KEY+example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_string(vkey)


def test_bad_signer_keys(log_signer: Signer) -> None:
    good = log_signer.to_string()
    prefix, _, rest = good.partition("+KEY+")
    name, hex_id, material = rest.split("+", 2)
    wrong_id = f"{int(hex_id, 16) ^ 1:08x}"
    for bad in [
        "",
        Verifier.from_string(SPEC_VKEY).to_string(),
        f"PRIVATE+KEY+{name}+{wrong_id}+{material}",
        f"PRIVATE+KEY+other.example/log+{hex_id}+{material}",
        f"PRIVATE+KEY+{name}+{hex_id}+{material[:-4]}",
        f"PRIVATE+KEY+{name}+{hex_id}",
    ]:
        with pytest.raises(NoteError):
            Signer.from_string(bad)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\x01b"])
def test_invalid_key_names(name: str) -> None:
    assert not cp.is_valid_key_name(name)
    with pytest.raises(NoteError):
        Signer.generate(name)


# ---------------------------------------------------------------- notes


def test_sign_open_round_trip(log_signer: Signer) -> None:
    text = b"hello\n\nworld with an empty line\n"
    note = sign_note(text, [log_signer])
    assert note.startswith(text + "\n\u2014 ".encode())
    opened = open_note(note, [log_signer.verifier()])
    assert opened.text == text
    assert [s.name for s in opened.signatures] == [ORIGIN]
    assert opened.unverified == []


def test_two_signers_and_unknown_lines(log_signer: Signer) -> None:
    other = Signer.generate("other.example/k")
    note = sign_note(b"text\n", [log_signer, other])
    text, sigs = open_note(note, [log_signer.verifier()])
    assert text == b"text\n" and [s.name for s in sigs] == [ORIGIN]
    opened = open_note(note, [log_signer.verifier()])
    assert [(s.name, s.verified) for s in opened.unverified] == [("other.example/k", False)]
    # Only unknown keys: rejected by default, reported as unverified on request.
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [Verifier.from_string(SPEC_VKEY)])
    lax = open_note(note, [], require_known=False)
    assert lax.signatures == [] and len(lax.unverified) == 2


def test_unknown_key_sharing_name_is_not_checked(log_signer: Signer) -> None:
    impostor = Signer.generate(ORIGIN)  # same name, different key and key ID
    note = sign_note(b"text\n", [impostor])
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [log_signer.verifier()])


def test_tampered_signature_rejected(log_signer: Signer) -> None:
    note = sign_note(b"text\n", [log_signer])
    text, sig_block = note.split(b"\n\n")
    name_part, b64 = sig_block.decode().rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    bad = text + b"\n\n" + f"{name_part} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    with pytest.raises(InvalidSignatureError):
        open_note(bad, [log_signer.verifier()])


def test_bad_repeat_of_known_signature_rejected(log_signer: Signer) -> None:
    note = sign_note(b"text\n", [log_signer])
    good_line = note.split(b"\n\n")[1].decode()
    sig = cp.parse_signature_line(good_line)
    bad_line = cp.format_signature_line(sig.name, sig.key_id, b"\0" * 64)
    with pytest.raises(InvalidSignatureError):
        open_note(note + bad_line.encode(), [log_signer.verifier()])
    # An exact repeat is harmless and counted once.
    assert len(open_note(note + good_line.encode(), [log_signer.verifier()]).signatures) == 1


@pytest.mark.parametrize(
    "note",
    [
        b"",
        b"text\n",  # no blank line, no signatures
        b"text\n\n",  # no signatures
        SPEC_TEXT + SPEC_LINE.encode(),  # missing blank line
        SPEC_NOTE[:-1],  # last line without newline
        SPEC_NOTE[:-20],  # truncated
        SPEC_NOTE.replace("\u2014".encode(), b"-"),  # hyphen instead of em dash
        SPEC_NOTE.replace(b"foo Uw2", b"foo  Uw2"),  # two spaces
        SPEC_NOTE.replace(b"Uw2QOkn8", b"Uw2QOk!8"),  # bad base64
        SPEC_NOTE.replace(b"aQM=", b"aQN="),  # non-canonical base64
        SPEC_TEXT + "\n\u2014 example.com/foo AAAA\n".encode(),  # signature too short
        SPEC_NOTE.replace(b"This", b"Th\x01s"),  # control character
        SPEC_NOTE.replace(b"This", b"Th\xffs"),  # not UTF-8
        SPEC_NOTE.replace(b"This", b"Th\rs"),
        SPEC_NOTE + b"garbage\n",  # non-signature line after signatures
        SPEC_NOTE + b"\n",
        b"\xe2\x80\x94 example.com/foo x\n",
    ],
)
def test_malformed_notes_raise_note_error(note: bytes) -> None:
    with pytest.raises(NoteError):
        open_note(note, [Verifier.from_string(SPEC_VKEY)])


def test_str_notes_with_lone_surrogates_are_rejected() -> None:
    with pytest.raises(NoteError):
        open_note(SPEC_NOTE.decode().replace("This", "\ud800"), [Verifier.from_string(SPEC_VKEY)])


def test_size_and_count_limits(log_signer: Signer) -> None:
    with pytest.raises(NoteError, match="larger"):
        open_note(b"a" * (cp.MAX_NOTE_SIZE + 1), [log_signer.verifier()])
    line = SPEC_LINE.encode()
    many = SPEC_NOTE + line * cp.MAX_SIGNATURES
    with pytest.raises(NoteError, match="more than"):
        open_note(many, [Verifier.from_string(SPEC_VKEY)])
    # At least 16 signatures must be accepted.
    signers = [Signer.generate(f"k{i}.example") for i in range(16)]
    note = sign_note(b"t\n", signers)
    assert len(open_note(note, [s.verifier() for s in signers]).signatures) == 16


@pytest.mark.parametrize(
    "text", [b"", b"no newline", b"a\x00\n", b"\xff\n", "caf\u00e9", "\ud800\n", 5]
)
def test_sign_note_rejects_bad_text(log_signer: Signer, text) -> None:
    with pytest.raises(NoteError):
        sign_note(text, [log_signer])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    v = Verifier.from_string(SPEC_VKEY)
    for candidate in (data, SPEC_NOTE[: len(data) % len(SPEC_NOTE)] + data):
        try:
            open_note(candidate, [v])
        except NoteError:
            pass
        try:
            Checkpoint.parse(candidate)
        except NoteError:
            pass


# ------------------------------------------------------------ checkpoints


def test_checkpoint_body_and_parse() -> None:
    c = Checkpoint(ORIGIN, 42, ROOT)
    body = c.body()
    assert body == f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert Checkpoint.parse(body) == c
    assert cp.parse_checkpoint(body.decode()) == c
    ext = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(ext.body()) == ext
    assert ext.body().endswith(b"\next one\next two\n")


GOOD_ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ORIGIN}\n42\n{GOOD_ROOT_B64}", "newline"),
        (f"{ORIGIN}\n42\n", "three lines"),
        (f"\n42\n{GOOD_ROOT_B64}\n", "origin"),
        (f"{ORIGIN}\n042\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n-1\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n+1\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n 1\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n\u0661\n{GOOD_ROOT_B64}\n", "canonical decimal"),  # Arabic-Indic one
        (f"{ORIGIN}\n1.0\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n\n{GOOD_ROOT_B64}\n", "canonical decimal"),
        (f"{ORIGIN}\n{2**63}\n{GOOD_ROOT_B64}\n", "too large"),
        (f"{ORIGIN}\n{'9' * 40}\n{GOOD_ROOT_B64}\n", "too large"),
        (f"{ORIGIN}\n42\n{GOOD_ROOT_B64[:-1]}\n", "base64"),
        (f"{ORIGIN}\n42\n{GOOD_ROOT_B64[:-4]}\n", "32 bytes"),
        (f"{ORIGIN}\n42\n{base64.b64encode(ROOT + b'x').decode()}\n", "32 bytes"),
        (f"{ORIGIN}\n42\n{GOOD_ROOT_B64}\n\n", "extension line 1 is empty"),
        (f"{ORIGIN}\n42\n{GOOD_ROOT_B64}\nx\n\n", "extension line 2 is empty"),
        (f"{ORIGIN}\r\n42\n{GOOD_ROOT_B64}\n", "control character"),
        (b"\xff\n1\n" + GOOD_ROOT_B64.encode() + b"\n", "UTF-8"),
    ],
)
def test_checkpoint_parse_rejects(body, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(body if isinstance(body, bytes) else body.encode())


def test_checkpoint_constructor_validates() -> None:
    for args in [
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 1, ROOT[:31]),
        (ORIGIN, 1, ROOT, ("",)),
    ]:
        with pytest.raises(NoteError):
            Checkpoint(*args)


def test_signed_checkpoint_round_trip(log_signer: Signer) -> None:
    c = Checkpoint(ORIGIN, 7, ROOT)
    note = sign_checkpoint(c, log_signer)
    parsed, opened = open_checkpoint(note, [log_signer.verifier()])
    assert parsed == c
    assert opened.signatures[0].name == ORIGIN


@given(
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    exts=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), min_codepoint=0x20), min_size=1
        ),
        max_size=3,
    ),
)
@settings(max_examples=100, deadline=None)
def test_checkpoint_round_trip_property(size: int, root: bytes, exts: list[str]) -> None:
    c = Checkpoint(ORIGIN, size, root, tuple(exts))
    assert Checkpoint.parse(c.body()) == c


# ----------------------------------------------------------- cosignatures


def test_cosignature_round_trip(log_signer: Signer, witness_signer: Signer) -> None:
    body = Checkpoint(ORIGIN, 7, ROOT).body()
    line = cosign(body, witness_signer, 1_700_000_000)
    assert line.startswith("\u2014 witness.example/w1 ")
    assert line.endswith("\n")
    wv = witness_signer.verifier()
    assert verify_cosignature(body, line, wv) == 1_700_000_000

    # Wire format: key ID || uint64 BE timestamp || Ed25519 over the cosignature/v1 message.
    raw = base64.b64decode(line.split(" ")[-1])
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[:4], "big") == wv.key_id
    assert struct.unpack(">Q", raw[4:12])[0] == 1_700_000_000
    message = b"cosignature/v1\ntime 1700000000\n" + body
    Ed25519PublicKey.from_public_bytes(wv.public_bytes).verify(raw[12:], message)

    # In a note: the log verifies, the witness line is unknown unless its verifier is given.
    note = add_signature_lines(sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), log_signer), [line])
    _, opened = open_checkpoint(note, [log_signer.verifier()])
    assert [s.name for s in opened.unverified] == ["witness.example/w1"]
    _, opened = open_checkpoint(note, [log_signer.verifier(), wv])
    assert [(s.name, s.timestamp) for s in opened.signatures] == [
        (ORIGIN, None),
        ("witness.example/w1", 1_700_000_000),
    ]


def test_cosignature_tampering(witness_signer: Signer) -> None:
    body = Checkpoint(ORIGIN, 7, ROOT).body()
    wv = witness_signer.verifier()
    line = cosign(body, witness_signer, 1_700_000_000)
    sig = cp.parse_signature_line(line)

    with pytest.raises(InvalidSignatureError):
        verify_cosignature(Checkpoint(ORIGIN, 8, ROOT).body(), line, wv)
    moved_time = cp.format_signature_line(
        sig.name, sig.key_id, struct.pack(">Q", 1_700_000_001) + sig.signature[8:]
    )
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(body, moved_time, wv)
    flipped = bytearray(sig.signature)
    flipped[20] ^= 0x80
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(
            body, cp.format_signature_line(sig.name, sig.key_id, bytes(flipped)), wv
        )
    with pytest.raises(NoteError):
        verify_cosignature(
            body, cp.format_signature_line(sig.name, sig.key_id, sig.signature[:-1]), wv
        )
    other = Signer.generate("witness.example/w2", SIG_COSIGNATURE_V1)
    with pytest.raises(NoteError, match="not from"):
        verify_cosignature(body, line, other.verifier())
    with pytest.raises(NoteError):
        verify_cosignature(body, line.replace("\u2014", "-"), wv)
    with pytest.raises(NoteError):
        verify_cosignature(body[:-1], line, wv)  # malformed checkpoint


def test_cosign_needs_witness_key(log_signer: Signer, witness_signer: Signer) -> None:
    body = Checkpoint(ORIGIN, 7, ROOT).body()
    with pytest.raises(NoteError):
        cosign(body, log_signer, 1)
    with pytest.raises(NoteError):
        cosign(body, witness_signer, -1)
    with pytest.raises(NoteError):
        cosign(body, witness_signer, 2**63)
    with pytest.raises(NoteError):
        verify_cosignature(body, cosign(body, witness_signer, 5), log_signer.verifier())


def test_module_exports() -> None:
    for name in cp.__all__:
        assert hasattr(cp, name), name
