"""Passkey (WebAuthn) signatures of staff statements: options, registration, offline verification.

A person signs a *statement* (canonical JSON bytes, see ``staff_signatures``) with a passkey by
using ``challenge_for(statement)`` as the WebAuthn challenge: the authenticator signs
``authenticatorData || SHA-256(clientDataJSON)``, and clientDataJSON carries that challenge, so
the stored assertion (``proof``) binds the person's credential to exactly that statement.

Everything here is pure (no database, no clock, no settings). ``verify_assertion`` works from
the stored proof, the statement bytes and the registered COSE public key alone, so an auditor can
re-check an entry years later without the server. The sign counter is ignored on purpose: an
offline check has no "last seen" counter, and many passkeys always report 0. Attestation is not
requested or relied on (``attestation: none``); trust comes from the registration ceremony.

Every failure raises :class:`PasskeyError` whose ``reason`` starts with the name of the failed
check (``"challenge: ..."``, ``"origin: ..."``, ``"signature: ..."``).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import webauthn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from webauthn.helpers import (
    bytes_to_base64url,
    parse_attestation_object,
    parse_authenticator_data,
    parse_cbor,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialHint,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

# DOMAIN prefixes every staff signature, so a passkey challenge for a statement is never a challenge
# another protocol would use. staff_signatures imports this module only inside functions, so this
# top-level import cannot be circular.
from ledger.integrity.staff_signatures import DOMAIN

__all__ = [
    "ALGORITHMS", "DOMAIN", "PasskeyError", "authentication_options", "b64url", "b64url_decode",
    "challenge_for", "load_public_key", "proof_from_response", "registration_options",
    "verify_assertion", "verify_registration",
]

ES256 = -7
EDDSA = -8
RS256 = -257
ALGORITHMS = (ES256, EDDSA, RS256)
"""COSE algorithms accepted for staff passkeys, in the order offered to the browser."""

MAX_CREDENTIAL_ID = 1023
"""WebAuthn caps credential IDs at 1023 bytes; longer ones are refused at registration."""

_MIN_RSA_BITS = 2048

# Authenticator data flag bits (WebAuthn §6.1).
_FLAG_UP = 0x01
_FLAG_UV = 0x04

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PROOF_FIELDS = ("credential_id", "authenticator_data", "client_data_json", "signature")


class PasskeyError(ValueError):
    """A passkey registration or assertion was refused; ``reason`` names the failed check first."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    @property
    def check(self) -> str:
        """The name of the failed check: the part of ``reason`` before the first colon."""
        return self.reason.split(":", 1)[0]


def challenge_for(statement_bytes: bytes) -> bytes:
    """The WebAuthn challenge for a statement: SHA-256(DOMAIN + statement_bytes) (32 bytes)."""
    if not isinstance(statement_bytes, bytes | bytearray):
        raise TypeError("statement_bytes must be bytes")
    return hashlib.sha256(DOMAIN + bytes(statement_bytes)).digest()


def b64url(data: bytes) -> str:
    """Base64url without padding (the only encoding of bytes in options, responses and proofs)."""
    return bytes_to_base64url(data)


def b64url_decode(text: Any, what: str) -> bytes:
    """Decode canonical unpadded base64url strictly; ``what`` names the field in the error.

    Strict (alphabet, no padding, canonical trailing bits) so a stored proof has exactly one
    spelling: the lenient stdlib decoder would accept many strings for the same bytes.
    """
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise PasskeyError(f"{what}: not unpadded base64url")
    try:
        data = binascii.a2b_base64(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                                   strict_mode=True)
    except binascii.Error as exc:
        raise PasskeyError(f"{what}: not unpadded base64url") from exc
    if b64url(data) != text:
        raise PasskeyError(f"{what}: not canonical base64url")
    return data


# --- options ---------------------------------------------------------------------------------


def registration_options(*, rp_id: str, rp_name: str, user_id: bytes, user_name: str,
                         display_name: str, challenge: bytes,
                         exclude_credential_ids: list[bytes]) -> dict:
    """PublicKeyCredentialCreationOptions for ``navigator.credentials.create``, as a JSON-ready dict.

    User verification is required (a PIN or biometric on the key: the signature must mean *this
    person*, not whoever touches it). Attachment is cross-platform: a roaming security key or the
    person's own phone, never a passkey kept on a shared clinic tablet. Attestation is ``none``.
    """
    options = webauthn.generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_id,
        user_name=user_name,
        user_display_name=display_name,
        challenge=challenge,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            authenticator_attachment=AuthenticatorAttachment.CROSS_PLATFORM,
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=cid) for cid in exclude_credential_ids],
        supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in ALGORITHMS],
        # Hints agree with the cross-platform attachment; browsers that know them open the
        # security-key / phone (hybrid) flow first instead of offering this device.
        hints=[PublicKeyCredentialHint.SECURITY_KEY, PublicKeyCredentialHint.HYBRID],
    )
    return json.loads(webauthn.options_to_json(options))


def authentication_options(*, rp_id: str, challenge: bytes, credential_ids: list[bytes]) -> dict:
    """PublicKeyCredentialRequestOptions for ``navigator.credentials.get``, as a JSON-ready dict.

    ``allowCredentials`` lists exactly the person's credentials (so a discoverable passkey of
    someone else cannot answer); user verification is required.
    """
    options = webauthn.generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        allow_credentials=[PublicKeyCredentialDescriptor(id=cid) for cid in credential_ids],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return json.loads(webauthn.options_to_json(options))


# --- shared checks ---------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _check_client_data(client_data_json: bytes, *, expected_type: str, challenge: bytes,
                       origins: list[str]) -> None:
    """clientDataJSON checks shared by registration and assertion (WebAuthn §7.1 / §7.2)."""
    try:
        data = json.loads(client_data_json.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PasskeyError(f"client data: not a UTF-8 JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise PasskeyError("client data: not a JSON object")
    ctype = data.get("type")
    if ctype != expected_type:
        raise PasskeyError(f"client data type: {ctype!r}, expected {expected_type!r}")
    got = data.get("challenge")
    if not isinstance(got, str) or got != b64url(challenge):
        # Compared as the exact unpadded string browsers produce: one spelling per challenge.
        raise PasskeyError("challenge: client data challenge is not the expected challenge "
                           "(the signed statement differs)")
    origin = data.get("origin")
    if not isinstance(origin, str) or origin not in origins:
        raise PasskeyError(f"origin: {origin!r} is not one of {list(origins)!r}")
    # A ceremony run inside a cross-origin iframe was started by another site's page.
    if data.get("crossOrigin") is True:
        raise PasskeyError("cross origin: the ceremony ran in a cross-origin frame")


def _check_auth_data(auth_data: Any, rp_id: str) -> None:
    """rpIdHash and the UP and UV flags of parsed authenticator data."""
    if auth_data.rp_id_hash != hashlib.sha256(rp_id.encode("utf-8")).digest():
        raise PasskeyError(f"rp id: authenticator data rpIdHash is not SHA-256 of {rp_id!r}")
    if not auth_data.flags.up:
        raise PasskeyError("user presence: the UP flag is not set")
    if not auth_data.flags.uv:
        raise PasskeyError("user verification: the UV flag is not set (no PIN or biometric)")


def _bytes_field(d: dict, key: Any, length: int | None = None) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        raise PasskeyError(f"public key: COSE parameter {key} is missing or malformed")
    return value


def _key_material(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ValueError as exc:  # a point off the curve, impossible RSA numbers
        raise PasskeyError(f"public key: invalid key material ({exc})") from exc


def load_public_key(cose_key: bytes) -> tuple[int, Any]:
    """(COSE algorithm, cryptography public key) of a COSE_Key; only ES256, EdDSA and RS256.

    Stricter than the library's decoder: the key must be a CBOR map whose kty and curve match
    its algorithm (so an "ES256" key on another curve, or a bare U2F point, is refused).
    """
    try:
        d = parse_cbor(cose_key)
    except WebAuthnException as exc:
        raise PasskeyError("public key: not CBOR") from exc
    if not isinstance(d, dict):
        raise PasskeyError("public key: not a COSE_Key map")
    alg, kty = d.get(3), d.get(1)
    if alg == ES256 and kty == 2 and d.get(-1) == 1:
        point = b"\x04" + _bytes_field(d, -2, 32) + _bytes_field(d, -3, 32)
        return alg, _key_material(lambda: ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), point))
    if alg == EDDSA and kty == 1 and d.get(-1) == 6:
        x = _bytes_field(d, -2, 32)
        return alg, _key_material(lambda: Ed25519PublicKey.from_public_bytes(x))
    if alg == RS256 and kty == 3:
        n = int.from_bytes(_bytes_field(d, -1), "big")
        e = int.from_bytes(_bytes_field(d, -2), "big")
        if n.bit_length() < _MIN_RSA_BITS:
            raise PasskeyError(f"public key: RSA modulus shorter than {_MIN_RSA_BITS} bits")
        return alg, _key_material(lambda: rsa.RSAPublicNumbers(e, n).public_key())
    raise PasskeyError(f"public key: unsupported COSE key (alg {alg!r}, kty {kty!r}); "
                       f"accepted algorithms are {list(ALGORITHMS)}")


def _verify_signature(alg: int, key: Any, signature: bytes, data: bytes) -> None:
    try:
        if alg == ES256:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif alg == EDDSA:
            key.verify(signature, data)
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError) as exc:
        raise PasskeyError("signature: does not verify with the credential's public key") from exc


# --- registration ----------------------------------------------------------------------------


def _robust(check):
    """Any malformed input a check meets (bad JSON nesting, wrong types) is a refusal naming it,
    never an exception of another kind: these run on untrusted answers and on stored proofs a
    database writer may have forged."""

    @functools.wraps(check)
    def wrapped(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except PasskeyError:
            raise
        except (RecursionError, ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as exc:
            raise PasskeyError(f"malformed: {type(exc).__name__}") from None

    return wrapped


@_robust
def verify_registration(response: dict, *, challenge: bytes, rp_id: str, origins: list[str]) -> dict:
    """Verify a ``navigator.credentials.create`` RegistrationResponseJSON dict; UV is required.

    Returns ``{"credential_id": b64url, "public_key": b64url COSE key, "algorithm": int}``.
    Raises :class:`PasskeyError` naming the failed check.
    """
    if not isinstance(response, dict):
        raise PasskeyError("response: not a JSON object")
    if response.get("type") != "public-key":
        raise PasskeyError(f"response: type {response.get('type')!r}, expected 'public-key'")
    raw_id = b64url_decode(response.get("rawId"), "credential id")
    if response.get("id") != response.get("rawId"):
        raise PasskeyError("credential id: id and rawId differ")
    # The browser reports where the credential lives; the options asked for cross-platform, so a
    # platform passkey (one kept on this device, e.g. a shared clinic tablet) is refused outright.
    if response.get("authenticatorAttachment") == "platform":
        raise PasskeyError("attachment: a platform passkey on this device; use a security key "
                           "or your own phone")
    inner = response.get("response")
    if not isinstance(inner, dict):
        raise PasskeyError("response: missing 'response' object")
    client_data = b64url_decode(inner.get("clientDataJSON"), "client data")
    attestation = b64url_decode(inner.get("attestationObject"), "attestation object")

    _check_client_data(client_data, expected_type="webauthn.create", challenge=challenge,
                       origins=origins)
    try:
        att = parse_attestation_object(attestation)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError(f"attestation object: malformed ({exc})") from exc
    _check_auth_data(att.auth_data, rp_id)
    cred = att.auth_data.attested_credential_data
    if cred is None or not cred.credential_id or not cred.credential_public_key:
        raise PasskeyError("credential: no attested credential data (AT flag clear)")
    if cred.credential_id != raw_id:
        raise PasskeyError("credential id: rawId is not the attested credential id")
    if len(raw_id) > MAX_CREDENTIAL_ID:
        raise PasskeyError(f"credential id: longer than {MAX_CREDENTIAL_ID} bytes")
    algorithm, _ = load_public_key(cred.credential_public_key)

    # The library re-checks all of the above and verifies any attestation statement it was sent
    # (we ask for none, but a browser may still pass "packed" self attestation through).
    try:
        verified = webauthn.verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=[COSEAlgorithmIdentifier(a) for a in ALGORITHMS],
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError(f"registration: {exc}") from exc
    if verified.credential_public_key != cred.credential_public_key:
        raise PasskeyError("public key: library and parser disagree on the credential key")
    return {
        "credential_id": b64url(raw_id),
        "public_key": b64url(cred.credential_public_key),
        "algorithm": algorithm,
    }


# --- assertions ------------------------------------------------------------------------------


@_robust
def proof_from_response(response: dict) -> dict:
    """The stored proof (credential_id, authenticator_data, client_data_json, signature) of a
    browser AuthenticationResponseJSON dict, each re-encoded as canonical unpadded base64url.

    ``userHandle`` and client extension results are not kept: the signature does not cover them.
    """
    if not isinstance(response, dict) or not isinstance(response.get("response"), dict):
        raise PasskeyError("response: not an AuthenticationResponseJSON object")
    if response.get("type") != "public-key":
        raise PasskeyError(f"response: type {response.get('type')!r}, expected 'public-key'")
    if response.get("id") != response.get("rawId"):
        raise PasskeyError("credential id: id and rawId differ")
    inner = response["response"]

    def field(value: Any, what: str) -> str:
        # Browsers send unpadded base64url; tolerate stray padding from a client library only.
        text = value.rstrip("=") if isinstance(value, str) else value
        return b64url(b64url_decode(text, what))

    return {
        "credential_id": field(response.get("rawId"), "credential id"),
        "authenticator_data": field(inner.get("authenticatorData"), "authenticator data"),
        "client_data_json": field(inner.get("clientDataJSON"), "client data"),
        "signature": field(inner.get("signature"), "signature"),
    }


@_robust
def verify_assertion(proof: dict, *, statement_bytes: bytes, public_key: str, rp_id: str,
                     origins: list[str]) -> None:
    """Check a stored passkey signature of a statement, offline, from the proof alone.

    Checks, in order: clientData type is ``webauthn.get``; its challenge is
    ``challenge_for(statement_bytes)``; its origin is one of ``origins`` (and not cross-origin);
    rpIdHash is SHA-256(rp_id); flags UP and UV are set; the signature over
    ``authenticator_data || SHA-256(client_data_json)`` verifies with the COSE ``public_key``.
    The sign counter and attestation are not used. Raises :class:`PasskeyError` naming the check.
    """
    _verify(proof, challenge_for(statement_bytes), public_key=public_key, rp_id=rp_id, origins=origins)


@_robust
def signed_challenge(proof: dict, *, public_key: str, rp_id: str, origins: list[str]) -> bytes:
    """Every check of :func:`verify_assertion` but the statement's: returns the challenge the
    authenticator signed, which the caller compares with ``challenge_for(statement)`` later (a hash
    and a comparison). Lets the server verify a passkey's signature before it takes the
    registrant's lock, when the statement's fields are not all known yet."""
    if not isinstance(proof, dict):
        raise PasskeyError("proof: not a JSON object")
    client_data = b64url_decode(proof.get("client_data_json"), "client data")
    try:
        claimed = json.loads(client_data.decode("utf-8")).get("challenge")
        challenge = b64url_decode(claimed, "challenge")
    except (UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise PasskeyError(f"client data: no challenge ({exc})") from exc
    _verify(proof, challenge, public_key=public_key, rp_id=rp_id, origins=origins)
    return challenge


def _verify(proof: dict, challenge: bytes, *, public_key: str, rp_id: str, origins: list[str]) -> None:
    if not isinstance(proof, dict):
        raise PasskeyError("proof: not a JSON object")
    extra = set(proof) - set(_PROOF_FIELDS)
    if extra:
        raise PasskeyError(f"proof: unexpected fields {sorted(extra)}")
    # The credential id is not signed (the caller picked public_key by it); check its encoding.
    b64url_decode(proof.get("credential_id"), "credential id")
    auth_bytes = b64url_decode(proof.get("authenticator_data"), "authenticator data")
    client_data = b64url_decode(proof.get("client_data_json"), "client data")
    signature = b64url_decode(proof.get("signature"), "signature")

    _check_client_data(client_data, expected_type="webauthn.get", challenge=challenge,
                       origins=origins)
    try:
        auth_data = parse_authenticator_data(auth_bytes)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError(f"authenticator data: malformed ({exc})") from exc
    _check_auth_data(auth_data, rp_id)
    cose_key = b64url_decode(public_key, "public key")
    alg, key = load_public_key(cose_key)
    _verify_signature(alg, key, signature, auth_bytes + hashlib.sha256(client_data).digest())

    # Second opinion from py_webauthn on the same stored bytes (sign counter 0: not used).
    try:
        webauthn.verify_authentication_response(
            credential={
                "id": proof["credential_id"],
                "rawId": proof["credential_id"],
                "type": "public-key",
                "response": {
                    "authenticatorData": proof["authenticator_data"],
                    "clientDataJSON": proof["client_data_json"],
                    "signature": proof["signature"],
                },
            },
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            credential_public_key=cose_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError(f"webauthn: {exc}") from exc
