"""The witness on the same screen: the second person types their own username, password and
(where their role needs one) TOTP code into the form the first person is filling in, or, with a
passkey (issue 17), only their username, then confirms with their security key or phone.

This goes through exactly the API's witness path: ``Authenticator.issue_assertion`` checks the
witness's credentials (lock-out and all) and that they are not the person recording, and binds a
single-use assertion to the SHA-256 of this very command; ``redeem_assertion`` consumes it for
that command. The witness's principal then goes to the service, which checks their role and
signs ``witnessed`` with their printed name from the staff projection, never a typed name.

A passkey witness takes two submissions of the same form (same values, same form key):

1. ``issue_passkey_assertion`` names the witness and binds the body; the command, run with their
   passkey signer still unanswered, refuses with :class:`SignatureNeeded` (nothing is recorded)
   carrying the statement to sign and the WebAuthn options. The page comes back with the values
   kept, the assertion token in a hidden field and the challenge in a data attribute
   (:func:`passkey_prompt`).
2. ``static/passkey.js`` runs ``navigator.credentials.get`` and sends the form again with the
   authenticator's answer in ``<prefix>_passkey``; ``redeem_assertion(..., passkey_responses=[it])``
   uses the same assertion (an unanswered passkey assertion is not used up), and the command
   checks the answer over the statement before anything is recorded.

On a form with two witnesses (a destruction), a witness who already signed in this exchange keeps
their assertion in the page too: it is redeemed again by the same form key (a retry of the same
command), so a password witness does not type their password twice while the other confirms with
a passkey. An assertion is bound to this login's session and this very body, and expires in two
minutes; any other error drops it (the witness confirms again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from api.http.auth import Witness
from api.web.core import Page, auth_of
from api.web.forms import Errors, Form
from ledger.domain.errors import InvalidInput, LedgerError, SignatureNeeded
from ledger.storage.store import check_idempotency_key

#: An AuthenticationResponseJSON is a few hundred bytes; this bounds what is parsed.
MAX_ANSWER = 20_000
PASSKEY = "passkey"


@dataclass
class FormWitness:
    """A witness established on this request's form: their assertion token (kept in the page when
    the command asks a passkey witness to confirm) and, for a passkey, the answer sent, if any."""

    token: str
    staff_id: str
    printed_name: str
    method: str
    answer: str = ""


def command_body(request: dict[str, Any]) -> bytes:
    """The bytes the assertion is bound to: the command's fields as canonical-ish JSON."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()


def uses_passkey(form: Form, prefix: str) -> bool:
    """Did the person tick "<who> uses a passkey" for this witness (any value: a ticked box)?"""
    return bool(form.get(f"{prefix}_method", ""))


def keep_witness(values: dict[str, Any], form: Form, *prefixes: str) -> dict[str, Any]:
    """What a re-rendered form keeps of each witness: their username and passkey choice (never a
    password, never an assertion: a failed attempt starts the witness's confirmation again)."""
    for p in prefixes:
        values[f"{p}_username"] = form.text(f"{p}_username")
        values[f"{p}_method"] = PASSKEY if uses_passkey(form, p) else ""
        for k in ("assertion", "passkey", "password", "totp"):
            values.pop(f"{p}_{k}", None)
    return values


def _field_of(exc: LedgerError, prefix: str) -> str:
    where = {"username": f"{prefix}_username", "totp": f"{prefix}_totp"}.get(exc.field or "", f"{prefix}_password")
    if getattr(exc, "type", "") == "witness-is-actor":
        where = f"{prefix}_username"
    return where


def witness_from_form(page: Page, form: Form, request: dict[str, Any], errors: Errors, *, prefix: str = "witness",
                      idempotency_key: str | None = None, passkey: bool = True) -> Witness | None:
    """Authenticate the witness typed into ``<prefix>_username`` / ``_password`` / ``_totp``;
    errors go next to those fields. None when the witness could not be established.

    With ``<prefix>_method`` ticked (and ``passkey``), the witness confirms with their passkey
    instead (see the module's docstring): the returned witness signs only once the form comes
    back with their authenticator's answer; until then the command answers SignatureNeeded."""
    user = form.text(f"{prefix}_username")
    if passkey and uses_passkey(form, prefix):
        return _passkey_witness(page, form, request, errors, prefix=prefix, user=user, idempotency_key=idempotency_key)
    password = form.get(f"{prefix}_password", "")
    totp = form.optional(f"{prefix}_totp")
    kept = form.text(f"{prefix}_assertion") if passkey else ""
    if not user:
        errors.add(f"{prefix}_username", "the witness enters their own username")
    if not password and not kept:
        errors.add(f"{prefix}_password", "the witness enters their own password")
    if not user or not (password or kept):
        return None
    if not _key_ok(idempotency_key, errors):
        return None
    body = command_body(request)
    auth = auth_of(page.request)
    try:
        if password:
            token, _member, _method, _exp = auth.issue_assertion(page.session, user, password, totp,
                                                                 hashlib.sha256(body).hexdigest())
        else:  # signed already in this exchange, while another witness confirmed with a passkey
            token = kept
        w = auth.redeem_assertion(page.session, token, body, idempotency_key)
        if not password:
            _same_person(page, user, w)
    except LedgerError as exc:
        errors.add(_field_of(exc, prefix) if password else f"{prefix}_password",
                   exc.reason if password else f"{exc.reason}; type the password again")
        return None
    page.witnesses[prefix] = FormWitness(token, w.principal.staff_id, w.principal.printed_name, "password")
    return w


def _same_person(page: Page, user: str, w: Witness) -> None:
    member = auth_of(page.request).store.staff_by_username(page.dea, user.lower())
    if member is None or member.staff_id != w.principal.staff_id:
        raise InvalidInput("the username was changed after the witness signed; they confirm again", field="username")


def _key_ok(idempotency_key: str | None, errors: Errors) -> bool:
    try:
        # The ledger refuses such a key too, but only after the witness's assertion was stored
        # with it: a 100 kB one failed PostgreSQL's index, a 500 page.
        check_idempotency_key(idempotency_key)
    except InvalidInput:
        errors.add("form", "the form's key (form_key) is damaged; reload the page and fill in the form again")
        return False
    return True


def _answer(text: str) -> dict:
    """The authenticator's answer sent back in ``<prefix>_passkey`` (AuthenticationResponseJSON)."""
    try:
        value = json.loads(text) if len(text) <= MAX_ANSWER else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise InvalidInput("the passkey's answer could not be read; confirm with the passkey again", field="username")
    return value


def _passkey_witness(page: Page, form: Form, request: dict[str, Any], errors: Errors, *, prefix: str, user: str,
                     idempotency_key: str | None) -> Witness | None:
    if not user:
        errors.add(f"{prefix}_username", "the witness enters their own username")
        return None
    if not _key_ok(idempotency_key, errors):
        return None
    body = command_body(request)
    auth = auth_of(page.request)
    token = form.text(f"{prefix}_assertion")
    answer = form.get(f"{prefix}_passkey", "").strip()
    try:
        if token and answer:
            w = auth.redeem_assertion(page.session, token, body, idempotency_key, passkey_responses=[_answer(answer)])
            _same_person(page, user, w)
            if getattr(w.principal.signer, "response", None) is None:
                raise InvalidInput(f"that passkey is not one of {w.principal.printed_name}'s; they use their own",
                                   field="username")
        else:
            token, _member, _exp = auth.issue_passkey_assertion(page.session, user, hashlib.sha256(body).hexdigest())
            answer = ""
            w = auth.redeem_assertion(page.session, token, body, idempotency_key)
    except LedgerError as exc:
        errors.add(f"{prefix}_username", exc.reason)
        return None
    page.witnesses[prefix] = FormWitness(token, w.principal.staff_id, w.principal.printed_name, PASSKEY, answer)
    return w


def passkey_prompt(page: Page, exc: SignatureNeeded, values: dict[str, Any]) -> bool:
    """The command asked a passkey witness of this form to sign: put their challenge (and every
    witness's assertion, with any passkey answer already given) into ``values`` for the page to
    show again. False when no witness of this form was asked (the caller shows ``exc``)."""
    asked = exc.challenge.get("staff_id") if isinstance(exc.challenge, dict) else None
    target = next((p for p, w in page.witnesses.items()
                   if w.method == PASSKEY and w.staff_id == asked and not w.answer), None)
    if target is None:
        return False
    for prefix, w in page.witnesses.items():
        values[f"{prefix}_assertion"] = w.token
        values[f"{prefix}_passkey"] = w.answer
        values[f"{prefix}_signed"] = w.method if w.answer or w.method != PASSKEY else ""
    w = page.witnesses[target]
    values[f"{target}_challenge"] = json.dumps(exc.challenge["public_key"], separators=(",", ":"))
    values[f"{target}_name"] = w.printed_name
    values[f"{target}_statement"] = statement_rows(exc.challenge.get("statement") or {}, page)
    return True


def passkey_error(page: Page, exc: LedgerError, errors: Errors) -> bool:
    """An authenticator's answer the command refused (it does not verify over the statement):
    shown next to the username of the witness whose answer it was. False when not such an error."""
    if getattr(exc, "type", "") != "signature-invalid":
        return False
    answered = [(p, w) for p, w in page.witnesses.items() if w.answer]
    if not answered:
        return False
    prefix = next((p for p, w in answered if exc.reason.startswith(w.printed_name)), answered[0][0])
    errors.add(f"{prefix}_username", exc.reason + "; confirm with the passkey again")
    return True


def passkey_outcome(page: Page, exc: LedgerError, values: dict[str, Any], errors: Errors) -> int | None:
    """A command's refusal that concerns a witness confirming with a passkey: the status to show
    the form again with (the challenge in ``values``, or the error next to the witness), or None
    when ``exc`` is another refusal, for the page's own handling."""
    if isinstance(exc, SignatureNeeded):
        if passkey_prompt(page, exc, values):
            return 200
        errors.add("form", exc.reason)
        return exc.status
    if passkey_error(page, exc, errors):
        return exc.status
    return None


def statement_rows(statement: dict[str, Any], page: Page) -> list[tuple[str, str]]:
    """What a person signs, as readable rows: the command's fields (times in the clinic's zone)."""
    from api.web.readable import command_rows

    return command_rows(statement.get("command") or {}, page.tz)
