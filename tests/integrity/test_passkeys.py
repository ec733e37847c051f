"""Passkey signatures of staff statements (ledger.integrity.passkeys) with a software authenticator.

Round trip (options -> register -> verify_registration -> assert -> proof -> verify_assertion) and
every refusal, each naming its check. Pure and fast: no database, no browser.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from ledger.integrity import passkeys
from ledger.integrity.canonical import canonical_bytes
from ledger.integrity.passkeys import (
    DOMAIN,
    PasskeyError,
    authentication_options,
    b64url,
    challenge_for,
    proof_from_response,
    registration_options,
    verify_assertion,
    verify_registration,
)
from tests.support.soft_authenticator import SoftAuthenticator

RP_ID = "localhost"
ORIGIN = "http://localhost"
ORIGINS = [ORIGIN, "https://localhost:8443"]
USER_ID = b"\x01" * 16


def statement(nonce: str = "n-0001") -> bytes:
    return canonical_bytes({"registrant": "RX1234567", "kind": "dispense", "meaning": "witness",
                            "command": {"product": "p-1", "quantity": "2.000"}, "nonce": nonce})


@dataclasses.dataclass
class Enrolled:
    auth: SoftAuthenticator
    credential: dict  # verify_registration's answer: credential_id, public_key, algorithm


def enroll(auth: SoftAuthenticator, rp_id: str = RP_ID, origins: list[str] = ORIGINS) -> dict:
    challenge = b"registration-challenge-0123456789"
    options = registration_options(rp_id=rp_id, rp_name="Clinic", user_id=USER_ID,
                                   user_name="nurse.a", display_name="Nurse A", challenge=challenge,
                                   exclude_credential_ids=[])
    return verify_registration(auth.register(options), challenge=challenge, rp_id=rp_id,
                               origins=origins)


@pytest.fixture
def enrolled() -> Enrolled:
    auth = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    return Enrolled(auth, enroll(auth))


def sign(enrolled: Enrolled, stmt: bytes, **bad) -> dict:
    """The stored proof of the enrolled credential signing ``stmt`` via request options."""
    options = authentication_options(rp_id=RP_ID, challenge=challenge_for(stmt),
                                     credential_ids=[passkeys.b64url_decode(
                                         enrolled.credential["credential_id"], "id")])
    return proof_from_response(enrolled.auth.assert_(options, **bad))


def check(proof: dict, enrolled: Enrolled, stmt: bytes, public_key: str | None = None) -> None:
    verify_assertion(proof, statement_bytes=stmt, public_key=public_key or enrolled.credential["public_key"],
                     rp_id=RP_ID, origins=ORIGINS)


def refused(check_name: str, fn, *args, **kwargs) -> PasskeyError:
    with pytest.raises(PasskeyError) as info:
        fn(*args, **kwargs)
    assert info.value.check == check_name, info.value.reason
    assert info.value.reason.startswith(check_name + ":")
    return info.value


def reencode(proof: dict, field: str, change) -> dict:
    data = bytearray(passkeys.b64url_decode(proof[field], field))
    change(data)
    return {**proof, field: b64url(bytes(data))}


# --- challenge and options ---------------------------------------------------------------------


def test_challenge_is_domain_separated_sha256_of_the_statement():
    stmt = statement()
    assert DOMAIN == b"csledger-staff-signature-v1\n"
    assert challenge_for(stmt) == hashlib.sha256(DOMAIN + stmt).digest()
    assert len(challenge_for(stmt)) == 32
    assert challenge_for(stmt) != challenge_for(statement("n-0002"))


def test_registration_options_require_uv_on_a_roaming_authenticator():
    opts = registration_options(rp_id=RP_ID, rp_name="Clinic", user_id=USER_ID, user_name="nurse.a",
                                display_name="Nurse A", challenge=b"c" * 32,
                                exclude_credential_ids=[b"old-1", b"old-2"])
    json.dumps(opts)  # JSON-ready
    assert opts["challenge"] == b64url(b"c" * 32)
    assert opts["rp"] == {"id": RP_ID, "name": "Clinic"}
    assert opts["user"] == {"id": b64url(USER_ID), "name": "nurse.a", "displayName": "Nurse A"}
    assert opts["attestation"] == "none"
    sel = opts["authenticatorSelection"]
    assert sel["authenticatorAttachment"] == "cross-platform"
    assert sel["residentKey"] == "preferred"
    assert sel["userVerification"] == "required"
    algs = [p["alg"] for p in opts["pubKeyCredParams"]]
    assert -7 in algs and -8 in algs
    assert [c["id"] for c in opts["excludeCredentials"]] == [b64url(b"old-1"), b64url(b"old-2")]


def test_authentication_options_allow_only_the_given_credentials_with_uv():
    opts = authentication_options(rp_id=RP_ID, challenge=challenge_for(statement()),
                                  credential_ids=[b"cred-1"])
    json.dumps(opts)
    assert opts["rpId"] == RP_ID
    assert opts["challenge"] == b64url(challenge_for(statement()))
    assert opts["userVerification"] == "required"
    assert [(c["id"], c["type"]) for c in opts["allowCredentials"]] == [(b64url(b"cred-1"), "public-key")]


# --- registration ------------------------------------------------------------------------------


def test_registration_returns_the_cose_key(enrolled):
    cred = enrolled.credential
    assert set(cred) == {"credential_id", "public_key", "algorithm"}
    assert cred["algorithm"] == -7
    raw = passkeys.b64url_decode(cred["credential_id"], "id")
    assert cred["public_key"] == b64url(enrolled.auth.credentials[raw].cose_public_key())


def registration_case(**kwargs):
    auth = SoftAuthenticator()
    challenge = b"registration-challenge-0123456789"
    options = registration_options(rp_id=RP_ID, rp_name="Clinic", user_id=USER_ID,
                                   user_name="nurse.a", display_name="Nurse A", challenge=challenge,
                                   exclude_credential_ids=[])
    verify_kwargs = {"challenge": challenge, "rp_id": RP_ID, "origins": ORIGINS}
    verify_kwargs.update(kwargs.pop("verify", {}))
    return auth.register(options, **kwargs), verify_kwargs


@pytest.mark.parametrize(("name", "make", "check_name"), [
    ("wrong challenge", dict(verify={"challenge": b"another-challenge"}), "challenge"),
    ("wrong origin", dict(origin="http://evil.example"), "origin"),
    ("wrong rp id", dict(rp_id="evil.example"), "rp id"),
    ("no user verification", dict(user_verified=False), "user verification"),
])
def test_registration_refusals(name, make, check_name):
    response, verify_kwargs = registration_case(**make)
    refused(check_name, verify_registration, response, **verify_kwargs)


def test_registration_refuses_bad_ids_platform_passkeys_and_wrong_types(enrolled):
    response, verify_kwargs = registration_case()
    other = b64url(b"x" * 32)
    refused("credential id", verify_registration, {**response, "id": other, "rawId": other},
            **verify_kwargs)
    refused("attachment", verify_registration, {**response, "authenticatorAttachment": "platform"},
            **verify_kwargs)
    get = enrolled.auth.assert_(b"x" * 32)
    refused("response", verify_registration, {**get, "type": "other"}, **verify_kwargs)


# --- assertions --------------------------------------------------------------------------------


def test_round_trip(enrolled):
    stmt = statement()
    proof = sign(enrolled, stmt)
    assert set(proof) == {"credential_id", "authenticator_data", "client_data_json", "signature"}
    assert proof["credential_id"] == enrolled.credential["credential_id"]
    check(proof, enrolled, stmt)
    # Stored in an entry (canonical JSON) and read back years later: still verifies.
    stored = json.loads(canonical_bytes({"proof": proof}))["proof"]
    check(stored, enrolled, stmt)
    # Sign counters are ignored: a later (higher-counter) and an earlier proof both verify.
    check(sign(enrolled, stmt), enrolled, stmt)
    check(proof, enrolled, stmt)


def test_proof_from_response_normalizes_padding(enrolled):
    response = enrolled.auth.assert_(challenge_for(statement()))
    padded = dict(response, response={k: v + "=" * (-len(v) % 4)
                                      for k, v in response["response"].items()})
    assert proof_from_response(padded) == proof_from_response(response)


def flip_first_signature_bit(d: bytearray) -> None:
    d[len(d) // 2] ^= 0x01


def tamper_counter(d: bytearray) -> None:
    d[36] ^= 0x01  # last byte of the sign counter: rpIdHash and flags still pass


@pytest.mark.parametrize(("name", "bad_sign", "tamper", "check_name"), [
    ("wrong origin", {"origin": "http://evil.example"}, None, "origin"),
    ("wrong rp id", {"rp_id": "evil.example"}, None, "rp id"),
    ("UV flag clear", {"user_verified": False}, None, "user verification"),
    ("UP flag clear", {"user_present": False}, None, "user presence"),
    ("client data type create", {"client_data_type": "webauthn.create"}, None, "client data type"),
    ("signature bit flipped", {}, ("signature", flip_first_signature_bit), "signature"),
    ("authenticator data tampered", {}, ("authenticator_data", tamper_counter), "signature"),
    ("flags forged after signing", {"user_verified": False},
     ("authenticator_data", lambda d: d.__setitem__(32, d[32] | 0x04)), "signature"),
])
def test_assertion_refusals(enrolled, name, bad_sign, tamper, check_name):
    stmt = statement()
    proof = sign(enrolled, stmt, **bad_sign)
    if tamper:
        proof = reencode(proof, *tamper)
    refused(check_name, check, proof, enrolled, stmt)


def test_statement_changed_by_one_byte_is_refused(enrolled):
    stmt = statement()
    proof = sign(enrolled, stmt)
    changed = bytearray(stmt)
    changed[-3] ^= 0x01
    refused("challenge", check, proof, enrolled, bytes(changed))
    refused("challenge", check, proof, enrolled, statement("n-0002"))


def test_another_credentials_key_is_refused(enrolled):
    stmt = statement()
    other = enroll(enrolled.auth)  # a second credential, same person, same authenticator
    proof = sign(enrolled, stmt)
    check(proof, enrolled, stmt)
    refused("signature", check, proof, enrolled, stmt, public_key=other["public_key"])
    stranger = enroll(SoftAuthenticator())
    refused("signature", check, proof, enrolled, stmt, public_key=stranger["public_key"])


def test_malformed_proofs_are_refused(enrolled):
    stmt = statement()
    proof = sign(enrolled, stmt)
    refused("signature", check, {**proof, "signature": proof["signature"] + "="}, enrolled, stmt)
    refused("signature", check, {**proof, "signature": proof["signature"][:-1] + "*"}, enrolled, stmt)
    refused("client data", check, {**proof, "client_data_json": b64url(b"not json")}, enrolled, stmt)
    refused("client data", check, {**proof, "client_data_json": None}, enrolled, stmt)
    refused("authenticator data", check, {**proof, "authenticator_data": b64url(b"short")}, enrolled, stmt)
    refused("proof", check, {**proof, "user_handle": "AA"}, enrolled, stmt)
    refused("public key", check, proof, enrolled, stmt, public_key=b64url(b"\x04" + b"\x01" * 64))


def test_non_canonical_base64url_is_refused(enrolled):
    stmt = statement()
    proof = sign(enrolled, stmt)
    # Two characters differing only in bits that the last base64 digit does not carry. The
    # authenticator data is always 37 bytes (50 characters, 4 spare bits); an ES256 signature is
    # 70 to 72 bytes, and at 72 it has no spare bits at all (the test was flaky on it).
    data = proof["authenticator_data"]
    assert len(data) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = data[:-1] + alphabet[alphabet.index(data[-1]) ^ 0x0F]
    refused("authenticator data", check, {**proof, "authenticator_data": twin}, enrolled, stmt)


def test_cross_origin_and_duplicate_keys_in_client_data_are_refused(enrolled):
    stmt = statement()
    proof = sign(enrolled, stmt)
    data = json.loads(passkeys.b64url_decode(proof["client_data_json"], "cd"))
    cross = {**proof, "client_data_json": b64url(json.dumps({**data, "crossOrigin": True}).encode())}
    refused("cross origin", check, cross, enrolled, stmt)
    dup = passkeys.b64url_decode(proof["client_data_json"], "cd")[:-1] + b',"type":"webauthn.get"}'
    refused("client data", check, {**proof, "client_data_json": b64url(dup)}, enrolled, stmt)


# --- other algorithms (keys made here; the soft authenticator is ES256 only) -------------------


def hand_made_proof(stmt: bytes, sign_fn) -> dict:
    auth_data = hashlib.sha256(RP_ID.encode()).digest() + bytes([0x05]) + (0).to_bytes(4, "big")
    client_data = json.dumps({"type": "webauthn.get", "challenge": b64url(challenge_for(stmt)),
                              "origin": ORIGIN}).encode()
    sig = sign_fn(auth_data + hashlib.sha256(client_data).digest())
    return {"credential_id": b64url(b"hand-made"), "authenticator_data": b64url(auth_data),
            "client_data_json": b64url(client_data), "signature": b64url(sig)}


def test_eddsa_and_rs256_keys_verify_and_mismatched_curves_are_refused(enrolled):
    stmt = statement()
    ed = Ed25519PrivateKey.generate()
    ed_cose = b64url(cbor2.dumps({1: 1, 3: -8, -1: 6, -2: ed.public_key().public_bytes_raw()}))
    check(hand_made_proof(stmt, ed.sign), enrolled, stmt, public_key=ed_cose)

    rsa_key = generate_private_key(public_exponent=65537, key_size=2048)
    nums = rsa_key.public_key().public_numbers()
    rsa_cose = b64url(cbor2.dumps({1: 3, 3: -257, -1: nums.n.to_bytes(256, "big"),
                                   -2: nums.e.to_bytes(3, "big")}))
    proof = hand_made_proof(stmt, lambda m: rsa_key.sign(m, padding.PKCS1v15(), hashes.SHA256()))
    check(proof, enrolled, stmt, public_key=rsa_cose)

    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    bad_curve = b64url(cbor2.dumps({1: 2, 3: -7, -1: 2, -2: p384.x.to_bytes(48, "big"),
                                    -3: p384.y.to_bytes(48, "big")}))
    refused("public key", check, sign(enrolled, stmt), enrolled, stmt, public_key=bad_curve)
    off_curve = b64url(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}))
    refused("public key", check, sign(enrolled, stmt), enrolled, stmt, public_key=off_curve)
