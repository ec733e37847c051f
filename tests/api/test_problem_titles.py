"""One title per problem type (RFC 9457 section 3.1.3; issue 20): ``invalid-input`` came back titled
"IdentifierError", "InvalidInput" and "Invalid input" depending on which layer refused the
request. Every way of producing a problem type must now give the same title, and the specifics
go in ``detail``."""

from __future__ import annotations

import re

from api.http.problems import PROBLEM_TITLES, problem_title
from tests.api.conftest import Api


def _problems(api: Api) -> list[dict]:
    """Every layer that refuses input: the core (a distributor's DEA number named as a
    prescriber), the raw-body middleware (a key twice), the JSON parser (a broken body),
    pydantic (an empty password), and a lookup the core answers (an unknown vial)."""
    h = api.headers("nora")
    prescriber = {"name": "Dr. Nobody", "dea_number": "RP1234563", "registration_state": "TX", "schedules": ["3"],
                  "expires_on": "2031-01-31", "state_license_number": "Q1", "state_license_state": "TX"}
    out = [
        api.client.post(api.url("/prescribers"), json=prescriber, headers={**api.headers("morgan"), **api.key()}),
        api.client.post(api.url("/counts"), content=b'{"method": "blind", "method": "blind"}',
                        headers={**h, **api.key(), "Content-Type": "application/json"}),
        api.client.post(api.url("/counts"), content=b'{"method": ', headers={**h, **api.key(),
                                                                              "Content-Type": "application/json"}),
        api.client.get(api.url("/vials/%20bad%20id%20"), headers=h),
        api.client.post(api.url("/sessions"), json={"username": "nora", "password": ""}),
    ]
    return [r.json() | {"_status": r.status_code} for r in out]


def test_invalid_input_has_one_title_from_every_layer(api: Api) -> None:
    problems = [p for p in _problems(api) if p["type"].endswith("/invalid-input")]
    assert len(problems) == 4, problems  # several layers produced invalid-input
    assert {p["title"] for p in problems} == {"Invalid input"}, problems
    # the specifics are in the detail, which does vary
    assert len({p["detail"] for p in problems}) == len(problems)


def test_title_is_a_function_of_the_type_only(api: Api) -> None:
    seen: dict[str, set[str]] = {}
    for p in _problems(api):
        seen.setdefault(p["type"], set()).add(p["title"])
    for r in (api.client.get(api.url("/vials/V-none"), headers=api.headers("nora")),
              api.client.get(api.url("/vials/V-other"), headers=api.headers("pia")),
              api.client.get(api.url("/counts"), headers={"Authorization": "Bearer nope"}),
              api.client.get(api.url("/counts"))):
        p = r.json()
        seen.setdefault(p["type"], set()).add(p["title"])
    for type_, titles in seen.items():
        assert titles == {problem_title(type_.rsplit("/", 1)[1])}, (type_, titles)


def test_titles_read_as_words_not_class_names() -> None:
    for type_ in ["invalid-input", "not-found", "conflict", "idempotency-key-reused", "witness-is-actor",
                  "csrf-rejected", "totp-required", *PROBLEM_TITLES]:
        title = problem_title(type_)
        assert not re.fullmatch(r"([A-Z][a-z]+){2,}", title), f"{title} reads as a class name"
        assert title[0].isupper() and "-" not in title.replace("Idempotency-Key", ""), title
    assert problem_title("witness-is-actor") == "Witness is actor"
