"""Form bodies: parsed from ``application/x-www-form-urlencoded`` by hand (no multipart parser
needed), kept whole so a page re-rendered after an error shows everything that was typed."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from ledger.domain.errors import InvalidInput

#: A bound on parsing work only; the body-size limit already bounds the bytes. The infusion page
#: sends two fields per usable vial (its id and the mL box), so 400 stopped a clinic holding about
#: 190 vials from recording any infusion ("the form could not be read").
MAX_FIELDS = 20_000


class Form(dict[str, str]):
    """The submitted fields (the last value of a repeated name), and every value per name.

    A name sent twice with different values is refused when a page reads it as one value
    (``form[name]``, ``get``, ``text``, ``optional``): the page cannot know which one the person
    meant (the API refuses a JSON key given twice alike). Checkbox groups read every value with
    ``all``."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__()
        self.multi: dict[str, list[str]] = {}
        for k, v in pairs:
            super().__setitem__(k, v)
            self.multi.setdefault(k, []).append(v)

    def _one(self, name: str) -> None:
        values = self.multi.get(name, [])
        if len(set(values)) > 1:
            raise InvalidInput(f"the field {name} was sent {len(values)} times with different values; "
                               "reload the page and send the form once", field=name)

    def __getitem__(self, name: str) -> str:
        self._one(name)
        return super().__getitem__(name)

    def get(self, name: str, default=None):  # type: ignore[override]
        self._one(name)
        return super().get(name, default)

    def all(self, name: str) -> list[str]:
        return self.multi.get(name, [])

    def text(self, name: str) -> str:
        return self.get(name, "").strip()

    def optional(self, name: str) -> str | None:
        v = self.text(name)
        return v or None


def _shown(name: str) -> str:
    return name if name.isprintable() and len(name) <= 64 and not _broken(name) else "with a damaged name"


def _broken(text: str) -> bool:
    """Bytes that were not UTF-8 (kept as lone surrogates by ``surrogateescape``)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


async def read_form(request: Request) -> Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidInput("pages accept only HTML form posts", field="body")
    body = await request.body()
    try:
        # Percent-encoded bytes that are not UTF-8 (a lone surrogate's %ED%A0%80) are kept as
        # surrogates and refused below, naming the field: decoded with the default "replace"
        # they became U+FFFD and were recorded as if the person had typed that.
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FIELDS, errors="surrogateescape")
    except UnicodeDecodeError:
        raise InvalidInput("the form could not be read: it is not UTF-8 text", field="body") from None
    except ValueError:
        raise InvalidInput(f"the form could not be read: more than {MAX_FIELDS} fields", field="body") from None
    for k, v in pairs:
        # No field has a use for NUL, and PostgreSQL text cannot hold it (the API refuses it alike).
        if "\x00" in k or "\x00" in v:
            raise InvalidInput(f"the field {_shown(k)} must not contain the NUL character", field=k)
        if _broken(k) or _broken(v):
            raise InvalidInput(f"the field {_shown(k)} is not valid UTF-8 text; reload the page and type it again",
                               field=k)
    return Form(pairs)


def whole_number(text: str, *, digits: int = 18) -> int | None:
    """``text`` as a whole number of ASCII digits (at most ``digits`` of them), else None.

    Not ``str.isdigit``: it is true for "²" (on which ``int`` raises) and for fullwidth and
    other scripts' digits, which a number field never sends and the API refuses; and a bound,
    so a 20-digit number never reaches a database integer column."""
    if not text or len(text) > digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


class Errors(dict[str, str]):
    """Field name -> message, shown next to the field; ``form`` for the whole form."""

    def add(self, field: str | None, message: str) -> None:
        self.setdefault(field or "form", message)
