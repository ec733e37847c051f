"""Patient-name commitments an inspector can open offline (issue 18).

Entries never hold a patient's name or address, only a commitment to them. The first scheme
(v1) was an HMAC under a key derived from the clinic's secret patient key: only the key holder
could check it, and handing the key to an inspector would let them test guesses for every
patient. The second scheme (v2), which every new entry records, is a salted hash commitment::

    commitment = SHA-256("csledger/patient-commitment/v2" 0x00 || opening (32 bytes)
                         || registrant 0x00 || patient id 0x00 || canonical details)

The opening (salt) is derived by the key holder per patient and per details version (an HMAC
under the commitment key, so registering the same details twice gives the same commitment), and
is given out with a report beside the name and address it opens. With it, and without any key,
anyone can check that the printed details are the committed ones (``open_commitment``); without
it the commitment reveals nothing (the 256-bit opening cannot be guessed), and an opening is
good for one patient's one version of their details only.

Like the rest of this package it imports no other csledger module: an inspector's offline check
depends on this file alone. Nothing here puts a name or an address into an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

#: Domain-separation label of a v2 commitment (the hash input starts with it).
COMMITMENT_LABEL_V2 = b"csledger/patient-commitment/v2\x00"
#: Domain-separation label of the message the key holder MACs to derive an opening.
OPENING_LABEL_V2 = b"csledger/patient-opening/v2\x00"
#: The details a commitment covers, the keys of the canonical JSON object.
DETAIL_FIELDS = ("name", "street", "city", "state", "postal_code")
#: Details a commitment covers when they were given (issue 21: the date of birth, the second
#: identifier of a pick). Absent, the canonical bytes are exactly the five fields' bytes, so every
#: commitment recorded before stays the commitment of the same details.
OPTIONAL_DETAIL_FIELDS = ("date_of_birth",)
#: Bytes of an opening (and of a SHA-256 commitment).
OPENING_BYTES = 32

_HEX = frozenset("0123456789abcdef")


def canonical_details(details: Mapping[str, str]) -> bytes:
    """The bytes both schemes commit to: the five fields, and the optional ones given
    (``OPTIONAL_DETAIL_FIELDS``), as compact JSON with sorted keys, UTF-8 (not ASCII-escaped).
    v1 commitments already recorded depend on these exact bytes (the five fields alone).

    Raises ``ValueError`` (naming no value) unless ``details`` has the five fields, no field
    other than the optional ones, and each a string."""
    if not isinstance(details, Mapping) or not set(DETAIL_FIELDS) <= set(details) or \
            not set(details) <= set(DETAIL_FIELDS) | set(OPTIONAL_DETAIL_FIELDS):
        raise ValueError(f"patient details must have exactly the fields {', '.join(DETAIL_FIELDS)} "
                         f"(and optionally {', '.join(OPTIONAL_DETAIL_FIELDS)})")
    if not all(isinstance(details[k], str) for k in details):
        raise ValueError("every patient detail must be a string")
    try:
        return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: not text that can have been registered
        raise ValueError("a patient detail is not valid Unicode text") from None


def _subject(registrant: str, patient_id: str) -> bytes:
    # NUL separates the fields: one inside a field would let (r, p) and (r', p') share bytes.
    if not isinstance(registrant, str) or not isinstance(patient_id, str):
        raise ValueError("registrant and patient id must be strings")
    if "\x00" in registrant or "\x00" in patient_id:
        raise ValueError("registrant and patient id must not contain NUL")
    return registrant.encode() + b"\x00" + patient_id.encode() + b"\x00"


def opening_message(registrant: str, patient_id: str, canonical: bytes) -> bytes:
    """What the key holder MACs to derive a v2 opening: the opening label, then registrant,
    patient id and canonical details. The label keeps it apart from a v1 commitment's message
    (which starts with the registrant) under the same key."""
    return OPENING_LABEL_V2 + _subject(registrant, patient_id) + canonical


def commitment_v2(registrant: str, patient_id: str, canonical: bytes, opening: bytes) -> str:
    """The v2 commitment (64 lowercase hex) of ``canonical`` (``canonical_details`` bytes) for
    the patient, with the 32-byte ``opening``. The one implementation: the key holder commits
    with it and ``open_commitment`` checks with it."""
    if not isinstance(opening, bytes | bytearray) or len(opening) != OPENING_BYTES:
        raise ValueError(f"an opening is {OPENING_BYTES} bytes")
    if not isinstance(canonical, bytes | bytearray):
        raise ValueError("canonical details must be bytes")
    return hashlib.sha256(COMMITMENT_LABEL_V2 + bytes(opening) + _subject(registrant, patient_id)
                          + bytes(canonical)).hexdigest()


def _hex32(text: Any) -> bytes | None:
    """32 bytes from exactly 64 lowercase hex digits (the form this package writes), else None."""
    if not isinstance(text, str) or len(text) != 2 * OPENING_BYTES or not set(text) <= _HEX:
        return None
    return bytes.fromhex(text)


def open_commitment(registrant: str, patient_id: str, details: Mapping[str, str], opening_hex: str,
                    commitment_hex: str) -> bool:
    """Whether ``details`` (name, street, city, state, postal_code, and date_of_birth if given) with ``opening_hex`` open the
    v2 ``commitment_hex`` of ``patient_id`` at ``registrant``. Needs no key. The comparison is
    constant time; malformed input of any kind (wrong fields or types, hex of the wrong length or
    case, a v1 commitment) gives False, never an exception."""
    try:
        opening = _hex32(opening_hex)
        committed = _hex32(commitment_hex)
        if opening is None or committed is None:
            return False
        ours = commitment_v2(registrant, patient_id, canonical_details(details), opening)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(bytes.fromhex(ours), committed)
