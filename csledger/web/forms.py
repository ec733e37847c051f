"""Form bodies: parsed from ``application/x-www-form-urlencoded`` by hand (no multipart parser
needed), kept whole so a page re-rendered after an error shows everything that was typed."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from ..ledger.errors import InvalidInput

MAX_FIELDS = 400


class Form(dict[str, str]):
    """The submitted fields (the last value of a repeated name), and every value per name."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__()
        self.multi: dict[str, list[str]] = {}
        for k, v in pairs:
            self[k] = v
            self.multi.setdefault(k, []).append(v)

    def all(self, name: str) -> list[str]:
        return self.multi.get(name, [])

    def text(self, name: str) -> str:
        return self.get(name, "").strip()

    def optional(self, name: str) -> str | None:
        v = self.text(name)
        return v or None


async def read_form(request: Request) -> Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidInput("pages accept only HTML form posts", field="body")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form could not be read", field="body") from None
    return Form(pairs)


class Errors(dict[str, str]):
    """Field name -> message, shown next to the field; ``form`` for the whole form."""

    def add(self, field: str | None, message: str) -> None:
        self.setdefault(field or "form", message)
