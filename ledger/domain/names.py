"""Printed names and usernames a reader can tell apart.

A printed name is what a signature shows (21 CFR 11.50: the printed name of the signer). Two
staff members whose names look alike on the page are one person to whoever reads the record, so:

- a printed name may not mix scripts (``Nеd`` with a Cyrillic ``е`` is Latin and Cyrillic in one
  name). The script combinations of Unicode TS #39's *highly restrictive* level are one script
  in effect and are allowed: Latin with Han, Hiragana and Katakana (Japanese), with Han and
  Bopomofo (Chinese), with Han and Hangul (Korean). Common characters (spaces, punctuation,
  digits) and inherited ones (combining accents) belong to no script and are always allowed.
- a printed name whose *skeleton* equals an existing one's (Unicode confusables, via the
  ``confusable-homoglyphs`` data: ``𝐍ed Nurse``, ``Ned Nurse``, ``NED NURSE``, ``Ned Nursé``) is
  refused until it carries a distinguishing suffix that is visible (``Ned Nurse (2)``): the
  skeleton keeps only letters and digits after mapping look-alikes together, so a suffix of
  punctuation, accents, invisible or look-alike characters distinguishes nothing.
- usernames are ASCII already (``[a-z0-9._-]``); the same skeleton refuses the look-alikes
  left there (``l``/``1``/``I``, ``O``/``0``, ``rn``/``m``).

Pure functions over strings; the service passes the existing names from the staff projection.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

#: Scripts that may share one name (UTS #39 section 5.2, "highly restrictive"); any single
#: script is allowed too.
_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_NO_SCRIPT = frozenset({"COMMON", "INHERITED"})
#: Direction marks the confusables data wraps right-to-left glyphs in; not part of any glyph.
_MARKS = str.maketrans("", "", "\u200e\u200f")


def scripts(name: str) -> frozenset[str]:
    """The scripts of the letters in ``name`` (common and inherited characters belong to none)."""
    from confusable_homoglyphs import categories

    return frozenset(categories.alias(c) for c in name) - _NO_SCRIPT


def mixed_scripts(name: str) -> frozenset[str] | None:
    """The scripts ``name`` mixes when they may not share one name, else None."""
    found = scripts(name)
    if len(found) <= 1 or any(found <= allowed for allowed in _SCRIPT_SETS):
        return None
    return found


@functools.cache
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """(character -> prototype character, character -> multi-character prototype), built once
    from the confusables data: look-alike characters form groups (``l``, ``1``, ``I``, ``|``,
    mathematical and full-width forms ...); each group's prototype is its smallest ASCII letter
    or digit when it has one, so a skeleton reads as plain text. A character that looks like a
    sequence (``m`` and ``rn``, ``æ`` and ``ae``) maps to that sequence."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    multi: dict[str, str] = {}
    for key, glyphs in confusables_data.items():
        k = key.translate(_MARKS)
        if len(k) != 1:
            continue
        for g in glyphs:
            c = g["c"].translate(_MARKS)
            if len(c) == 1:
                parent[find(k)] = find(c)
            elif c.isascii() and c.isalnum() and k not in multi:
                multi[k] = c
    groups: dict[str, list[str]] = {}
    for ch in list(parent):
        groups.setdefault(find(ch), []).append(ch)
    single: dict[str, str] = {}
    for members in groups.values():
        plain = sorted(c for c in members if c.isascii() and c.isalnum())
        proto = plain[0] if plain else min(members)
        for c in members:
            single[c] = proto
    return single, multi


def _map(text: str) -> str:
    single, multi = _tables()
    out = []
    for ch in text:
        proto = single.get(ch, ch)
        seq = multi.get(proto) or multi.get(ch)
        out.append("".join(single.get(c, c) for c in seq) if seq else proto)
    return "".join(out)


def skeletons(name: str) -> tuple[str, str, str]:
    """Keys under which look-alike names are equal: the confusable skeleton of the name
    (compatibility-decomposed, only letters and digits kept, look-alikes mapped to one
    prototype), the skeleton of the case-folded name, and the case-folded skeleton. ``Ned
    Nurse`` and ``NED NURSE`` are one name in print; ``Il`` and ``ll`` are one name to the eye;
    ``𝐍ed`` (mathematical bold) has no lower case of its own until it is mapped to ``N``."""
    s = unicodedata.normalize("NFKD", name)
    # Letters and digits only: spaces, punctuation, accents (Mn, Me) and invisible characters
    # (Cf) are dropped before look-alikes are mapped together.
    s = "".join(c for c in s if unicodedata.category(c)[0] in "LN")
    return _map(s), _map(s.casefold()), _map(_map(s).casefold())


@dataclass(frozen=True)
class LookAlike:
    """An existing name the new one cannot be told apart from."""

    staff_id: str
    name: str


def look_alike(name: str, existing: Iterable[tuple[str, str]]) -> LookAlike | None:
    """The first ``(staff_id, name)`` of ``existing`` that ``name`` looks like, else None."""
    mine = skeletons(name)
    for staff_id, other in existing:
        if any(a == b for a, b in zip(mine, skeletons(other), strict=True)):
            return LookAlike(staff_id, other)
    return None


def suffixed(name: str, existing: Iterable[tuple[str, str]]) -> str:
    """``name (n)`` with the smallest n >= 2 that looks like none of ``existing`` (a suffix in
    parentheses that ``name`` already ends with is replaced, not nested)."""
    taken = list(existing)
    base = re.sub(r"\s*\([^()]*\)$", "", name) or name
    n = 2
    while look_alike(f"{base} ({n})", taken) is not None:
        n += 1
    return f"{base} ({n})"
