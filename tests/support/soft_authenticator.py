"""A software WebAuthn authenticator (ES256 / P-256) for tests: no browser, no hardware.

It plays both the authenticator and the browser: ``register`` answers creation options with a
RegistrationResponseJSON (attestation "none"), ``assert_`` answers request options (or a bare
challenge) with an AuthenticationResponseJSON. Keyword arguments make deliberately bad answers:
no user verification or presence, another origin or RP ID, another clientData type.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40
ES256 = -7
AAGUID = bytes(16)  # all zero, as authenticators send with attestation "none"


@dataclass
class SoftCredential:
    """One credential: its id, P-256 private key, RP ID, user handle and sign counter."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        """The COSE_Key (EC2, P-256, ES256) of this credential, CTAP2 canonical CBOR."""
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")}, canonical=True)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else base64url_to_bytes(value)


class SoftAuthenticator:
    """A roaming authenticator with user verification, holding P-256 keys per credential."""

    def __init__(self, rp_id: str = "localhost", origin: str = "http://localhost") -> None:
        self.rp_id = rp_id
        self.origin = origin
        self.credentials: dict[bytes, SoftCredential] = {}

    def _client_data(self, ctype: str, challenge: str, origin: str) -> bytes:
        # Member order as browsers serialize it (type, challenge, origin, crossOrigin).
        return json.dumps({"type": ctype, "challenge": challenge, "origin": origin,
                           "crossOrigin": False}, separators=(",", ":")).encode()

    def register(self, options: dict, *, user_verified: bool = True, origin: str | None = None,
                 rp_id: str | None = None) -> dict:
        """Create a credential for PublicKeyCredentialCreationOptions JSON; a RegistrationResponseJSON."""
        rp_id = rp_id or options.get("rp", {}).get("id") or self.rp_id
        if ES256 not in [p.get("alg") for p in options.get("pubKeyCredParams", [])]:
            raise ValueError("NotSupportedError: ES256 not offered")
        excluded = {base64url_to_bytes(c["id"]) for c in options.get("excludeCredentials", [])}
        if excluded & set(self.credentials):
            raise ValueError("InvalidStateError: a credential of this authenticator is excluded")
        cred = SoftCredential(credential_id=os.urandom(32),
                              private_key=ec.generate_private_key(ec.SECP256R1()),
                              rp_id=rp_id, user_handle=base64url_to_bytes(options["user"]["id"]))
        self.credentials[cred.credential_id] = cred
        flags = FLAG_UP | FLAG_AT | (FLAG_UV if user_verified else 0)
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
                     + struct.pack(">I", cred.sign_count) + AAGUID
                     + struct.pack(">H", len(cred.credential_id)) + cred.credential_id
                     + cred.cose_public_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin or self.origin)
        cid = bytes_to_base64url(cred.credential_id)
        return {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["usb"],
            },
        }

    def assert_(self, options_or_challenge: dict | bytes, credential_id: bytes | str | None = None, *,
                user_verified: bool = True, user_present: bool = True, origin: str | None = None,
                rp_id: str | None = None, client_data_type: str = "webauthn.get") -> dict:
        """Sign a challenge (request options JSON or raw bytes); an AuthenticationResponseJSON.

        The credential is ``credential_id`` if given, else the first of ``allowCredentials`` this
        authenticator holds, else its only (first) credential. ``rp_id`` / ``origin`` override
        what a browser would use; the flags and clientData type can be set wrong on purpose.
        """
        if isinstance(options_or_challenge, dict):
            challenge = options_or_challenge["challenge"]
            rp_id = rp_id or options_or_challenge.get("rpId")
            allowed = [base64url_to_bytes(c["id"])
                       for c in options_or_challenge.get("allowCredentials", [])]
        else:
            challenge = bytes_to_base64url(options_or_challenge)
            allowed = []
        cred = self._pick(credential_id, allowed)
        rp_id = rp_id or cred.rp_id
        cred.sign_count += 1
        flags = (FLAG_UP if user_present else 0) | (FLAG_UV if user_verified else 0)
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
                     + struct.pack(">I", cred.sign_count))
        client_data = self._client_data(client_data_type, challenge, origin or self.origin)
        signature = cred.private_key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                          ec.ECDSA(hashes.SHA256()))
        cid = bytes_to_base64url(cred.credential_id)
        return {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "authenticatorData": bytes_to_base64url(auth_data),
                "clientDataJSON": bytes_to_base64url(client_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(cred.user_handle),
            },
        }

    def _pick(self, credential_id: bytes | str | None, allowed: list[bytes]) -> SoftCredential:
        if credential_id is not None:
            return self.credentials[_as_bytes(credential_id)]
        for cid in allowed:
            if cid in self.credentials:
                return self.credentials[cid]
        if allowed or not self.credentials:
            raise ValueError("NotAllowedError: no matching credential on this authenticator")
        return next(iter(self.credentials.values()))
