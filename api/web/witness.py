"""The witness on the same screen: the second person types their own username, password and
(where their role needs one) TOTP code into the form the first person is filling in.

This goes through exactly the API's witness path: ``Authenticator.issue_assertion`` checks the
witness's credentials (lock-out and all) and that they are not the person recording, and binds a
single-use assertion to the SHA-256 of this very command; ``redeem_assertion`` consumes it for
that command. The witness's principal then goes to the service, which checks their role and
signs ``witnessed`` with their printed name from the staff projection, never a typed name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from api.http.auth import Witness
from api.web.core import Page, auth_of
from api.web.forms import Errors, Form
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.storage.store import check_idempotency_key


def command_body(request: dict[str, Any]) -> bytes:
    """The bytes the assertion is bound to: the command's fields as canonical-ish JSON."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()


def witness_from_form(page: Page, form: Form, request: dict[str, Any], errors: Errors, *, prefix: str = "witness",
                      idempotency_key: str | None = None) -> Witness | None:
    """Authenticate the witness typed into ``<prefix>_username`` / ``_password`` / ``_totp``;
    errors go next to those fields. None when the witness could not be established."""
    user = form.text(f"{prefix}_username")
    password = form.get(f"{prefix}_password", "")
    totp = form.optional(f"{prefix}_totp")
    if not user:
        errors.add(f"{prefix}_username", "the witness enters their own username")
    if not password:
        errors.add(f"{prefix}_password", "the witness enters their own password")
    if not user or not password:
        return None
    try:
        # The ledger refuses such a key too, but only after the witness's assertion was stored
        # with it: a 100 kB one failed PostgreSQL's index, a 500 page.
        check_idempotency_key(idempotency_key)
    except InvalidInput:
        errors.add("form", "the form's key (form_key) is damaged; reload the page and fill in the form again")
        return None
    body = command_body(request)
    auth = auth_of(page.request)
    try:
        token, _member, _method, _exp = auth.issue_assertion(page.session, user, password, totp,
                                                             hashlib.sha256(body).hexdigest())
        return auth.redeem_assertion(page.session, token, body, idempotency_key)
    except LedgerError as exc:
        where = {"username": f"{prefix}_username", "totp": f"{prefix}_totp"}.get(exc.field or "", f"{prefix}_password")
        if getattr(exc, "type", "") == "witness-is-actor":
            where = f"{prefix}_username"
        errors.add(where, exc.reason)
        return None
