"""Staff signatures: what a person signs, and the password-wrapped Ed25519 keys they sign with.

A person's signature on an entry covers a **statement**, the RFC 8785 bytes of::

    {"registrant": DEA number, "kind": the command (e.g. "administer_dose"), "meaning": "witnessed",
     "command": the command's fields as submitted, "nonce": single-use, from the server}

stored in the entry beside the signature. ``seq``, ``prev`` and ``recorded_at`` are not in it: they
do not exist yet when a witness confirms; the chain binds them. A verifier checks the signature
against the credential enrolled for that person at that point of the chain, that the statement's
registrant and meaning are the entry's and the signature's, and that every signature of one entry
signed the same command (``check_statement``).

Two kinds of credential sign:

* ``passkey`` (WebAuthn, ``ledger.integrity.passkeys``): the assertion's challenge is
  ``SHA-256(DOMAIN + statement)``, so the authenticator's signature is the signature.
* ``password_key``: an Ed25519 key made for the person, kept only wrapped (AES-GCM) under a key
  derived from their password. One argon2id run per sign-in gives 32 bytes; HKDF turns them into
  the password verifier and, separately, the wrapping key, so checking the password and opening the
  key cost one run. The opened key is then kept only sealed under the session's bearer token (which
  the server stores as a hash), so neither the database nor the server's files can sign without the
  person's password or live session.

The ledger's log key signs checkpoints only; it can add no credential and sign as nobody.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.integrity.canonical import canonical_bytes

#: Prefixed to every statement before it is signed (or hashed into a WebAuthn challenge), so a
#: staff signature can never be replayed as a signature over anything else.
DOMAIN = b"csledger-staff-signature-v1\n"
STATEMENT_FIELDS = ("command", "kind", "meaning", "nonce", "registrant")
PASSWORD_KEY = "password_key"
PASSKEY = "passkey"
METHODS = (PASSWORD_KEY, PASSKEY)


class SignatureInvalid(ValueError):
    """A staff signature or statement that does not verify; ``reason`` says which check failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- statements ----------------------------------------------------------------------------------


def new_nonce() -> str:
    """A single-use statement nonce (128 random bits, hex)."""
    return secrets.token_hex(16)


def statement(registrant: str, kind: str, meaning: str, command: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The statement a person signs (JSON-ready)."""
    return {"registrant": registrant, "kind": kind, "meaning": meaning, "command": command, "nonce": nonce}


def statement_bytes(st: Any) -> bytes:
    """RFC 8785 bytes of a statement; refuses anything that is not exactly a statement."""
    if not isinstance(st, dict) or tuple(sorted(st)) != STATEMENT_FIELDS:
        raise SignatureInvalid("the statement must have exactly the fields " + ", ".join(STATEMENT_FIELDS))
    if not all(isinstance(st[k], str) and st[k] for k in ("registrant", "kind", "meaning", "nonce")):
        raise SignatureInvalid("the statement's registrant, kind, meaning and nonce must be non-empty text")
    if not isinstance(st["command"], dict):
        raise SignatureInvalid("the statement's command must be an object")
    return canonical_bytes(st)


def signed_message(st_bytes: bytes) -> bytes:
    return DOMAIN + st_bytes


# --- credentials -------------------------------------------------------------------------------------


def fingerprint(method: str, public_key: str) -> str:
    """``sha256:<hex>`` of a credential's method and public key: what is printed and pinned."""
    return "sha256:" + hashlib.sha256(f"{method}:{public_key}".encode()).hexdigest()


def public_key_text(private: Ed25519PrivateKey) -> str:
    """The raw Ed25519 public key, base64url."""
    return b64u(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def password_key_credential_id(public_key: str) -> str:
    """A password key's credential id: ``pk-`` and 24 hex digits of its fingerprint."""
    return "pk-" + fingerprint(PASSWORD_KEY, public_key)[7:31]


def sign_with(private: Ed25519PrivateKey, st_bytes: bytes) -> dict[str, str]:
    """The proof stored for a ``password_key`` signature."""
    return {"signature": b64u(private.sign(signed_message(st_bytes)))}


def verify_password_key(proof: Any, st_bytes: bytes, public_key: str) -> None:
    """Check a ``password_key`` proof over a statement; raises :class:`SignatureInvalid`."""
    if not isinstance(proof, dict) or set(proof) != {"signature"} or not isinstance(proof["signature"], str):
        raise SignatureInvalid("a password-key proof is exactly {signature}")
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64u(public_key))
        key.verify(unb64u(proof["signature"]), signed_message(st_bytes))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureInvalid("the Ed25519 signature does not verify with the enrolled password key") from exc


# --- password-wrapped keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost. The default matches pwdlib's recommendation; tests pass tiny ones."""

    time_cost: int = 3
    memory_cost: int = 65536  # KiB
    parallelism: int = 4

    def as_dict(self) -> dict[str, int]:
        return {"t": self.time_cost, "m": self.memory_cost, "p": self.parallelism}


TEST_KDF = KdfParams(time_cost=1, memory_cost=1024, parallelism=1)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _derive(password: str, salt: bytes, params: dict[str, int]) -> tuple[bytes, bytes]:
    """(password verifier, wrapping key) from one argon2id run."""
    raw = hash_secret_raw(password.encode(), salt, time_cost=int(params["t"]), memory_cost=int(params["m"]),
                          parallelism=int(params["p"]), hash_len=32, type=Type.ID)
    return _hkdf(raw, b"csledger password verifier v1"), _hkdf(raw, b"csledger signing-key wrap v1")


def wrap_key(private: Ed25519PrivateKey, password: str, *, bound_to: str, params: KdfParams) -> dict[str, Any]:
    """The stored record of a password key: salt, cost, verifier, and the key sealed under the
    password-derived key (AES-GCM, associated data ``bound_to``: registrant, staff id, credential)."""
    salt = secrets.token_bytes(16)
    verifier, wrap = _derive(password, salt, params.as_dict())
    nonce = secrets.token_bytes(12)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return {"v": 1, "salt": b64u(salt), "kdf": params.as_dict(), "verifier": b64u(verifier),
            "wrapped": b64u(nonce + AESGCM(wrap).encrypt(nonce, raw, bound_to.encode())),
            "public_key": public_key_text(private), "bound_to": bound_to}


def open_key(record: dict[str, Any], password: str) -> Ed25519PrivateKey | None:
    """The private key of a record if ``password`` is right, else None (one argon2id run)."""
    verifier, wrap = _derive(password, unb64u(record["salt"]), record["kdf"])
    if not hmac.compare_digest(verifier, unb64u(record["verifier"])):
        return None
    blob = unb64u(record["wrapped"])
    try:
        raw = AESGCM(wrap).decrypt(blob[:12], blob[12:], record["bound_to"].encode())
    except InvalidTag:
        return None
    return Ed25519PrivateKey.from_private_bytes(raw)


def seal_for_token(private: Ed25519PrivateKey, token: str, *, bound_to: str) -> str:
    """The opened key sealed under a bearer token or witness assertion (never stored in the clear;
    the server keeps only the token's hash, so the sealed key is useless without the token)."""
    key = _hkdf(token.encode(), b"csledger session key v1")
    nonce = secrets.token_bytes(12)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return b64u(nonce + AESGCM(key).encrypt(nonce, raw, bound_to.encode()))


def open_with_token(sealed: str, token: str, *, bound_to: str) -> Ed25519PrivateKey | None:
    key = _hkdf(token.encode(), b"csledger session key v1")
    try:
        blob = unb64u(sealed)
        return Ed25519PrivateKey.from_private_bytes(AESGCM(key).decrypt(blob[:12], blob[12:], bound_to.encode()))
    except (InvalidTag, ValueError):
        return None


# --- signers ---------------------------------------------------------------------------------------------


class PasswordKeySigner:
    """Signs as one person with their opened password key (held for one request or witness sign-off)."""

    method = PASSWORD_KEY

    def __init__(self, private: Ed25519PrivateKey, credential_id: str):
        self._private = private
        self.credential_id = credential_id
        self.nonce: str | None = None  # the server chooses a fresh one per signature

    def sign(self, st_bytes: bytes, credential: Any = None, relying_party: Any = None) -> dict[str, str]:
        return sign_with(self._private, st_bytes)


class PasskeySigner:
    """Signs as one person with their passkey: without ``response`` it only describes the
    challenge (the command then answers 428 and records nothing); with the authenticator's
    assertion it checks it over the statement and returns the proof kept in the entry."""

    method = PASSKEY

    def __init__(self, nonce: str, response: dict | None = None):
        self.nonce = nonce
        self.response = response
        cid = response.get("id") if isinstance(response, dict) else None
        self.credential_id: str | None = cid if isinstance(cid, str) else None
        #: (credential id, public key, proof, signed challenge) once ``preverify`` passed.
        self._checked: tuple[str, str, dict, bytes] | None = None

    def preverify(self, credential: Any, relying_party: Any) -> None:
        """Verify the authenticator's signature (the costly part) before the registrant's lock is
        taken; ``sign`` then only checks that the signed challenge is the statement's."""
        from ledger.integrity import passkeys

        if relying_party is None:
            raise SignatureInvalid("this registrant fixed no WebAuthn relying party at init")
        try:
            proof = passkeys.proof_from_response(self.response)
            challenge = passkeys.signed_challenge(proof, public_key=credential.public_key,
                                                  rp_id=relying_party.rp_id, origins=list(relying_party.origins))
        except passkeys.PasskeyError as exc:
            raise SignatureInvalid(f"the passkey assertion does not verify: {exc.reason}") from None
        self._checked = (credential.credential_id, credential.public_key, proof, challenge)

    def challenge(self, staff_id: str, st: dict, credentials: list, relying_party: Any) -> dict:
        from ledger.integrity import passkeys

        st_bytes = statement_bytes(st)
        options = passkeys.authentication_options(
            rp_id=relying_party.rp_id, challenge=passkeys.challenge_for(st_bytes),
            credential_ids=[unb64u(c.credential_id) for c in credentials])
        return {"staff_id": staff_id, "statement": st, "public_key": options}

    def sign(self, st_bytes: bytes, credential: Any = None, relying_party: Any = None) -> dict:
        from ledger.integrity import passkeys

        checked = self._checked
        if checked is not None and checked[:2] == (credential.credential_id, credential.public_key):
            # Verified before the lock; the credential is still this one (the caller checked it is
            # enrolled and active under the lock): only the statement binding is left.
            if not hmac.compare_digest(checked[3], passkeys.challenge_for(st_bytes)):
                raise SignatureInvalid("the passkey assertion does not verify: challenge: the signed statement "
                                       "differs")
            return checked[2]
        if relying_party is None:
            raise SignatureInvalid("this registrant fixed no WebAuthn relying party at init")
        try:
            proof = passkeys.proof_from_response(self.response)
            passkeys.verify_assertion(proof, statement_bytes=st_bytes, public_key=credential.public_key,
                                      rp_id=relying_party.rp_id, origins=list(relying_party.origins))
        except passkeys.PasskeyError as exc:
            raise SignatureInvalid(f"the passkey assertion does not verify: {exc.reason}") from None
        return proof


__all__ = [
    "DOMAIN", "KdfParams", "PasskeySigner", "METHODS", "PASSKEY", "PASSWORD_KEY", "PasswordKeySigner", "STATEMENT_FIELDS",
    "SignatureInvalid", "TEST_KDF", "b64u", "fingerprint", "new_nonce", "open_key", "open_with_token",
    "password_key_credential_id", "public_key_text", "seal_for_token", "sign_with", "signed_message", "statement",
    "statement_bytes", "unb64u", "verify_password_key", "wrap_key",
]
