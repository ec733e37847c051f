"""Report rows kept on disk, not in memory (issue 22).

A year of a clinic group's administration log is 200,000 rows; as dictionaries in memory they
took about 3.5 KiB each. ``RowFile`` keeps each row as its canonical JSON (sorted keys, no
spaces: exactly the text ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` gives it
inside the report data) in an unnamed temporary file, and only an array of offsets in memory.
It reads as a sequence (``len``, ``[i]``, iteration); the embedded report data is written from
its text without decoding it (``json_chunks``).
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

#: Bytes read at a time when iterating.
BLOCK = 1 << 20


def dumps(value: Any) -> str:
    """The JSON text of ``value`` as the report data embeds it (see ``reports.layout``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class RowFile(Sequence[dict[str, Any]]):
    """Rows appended once, then read any number of times (the file is removed when closed or
    collected: ``tempfile.TemporaryFile``)."""

    def __init__(self, rows: Iterable[dict[str, Any]] = ()):
        self._file = tempfile.TemporaryFile(prefix="csledger-rows-")
        self._fd = self._file.fileno()
        self._offsets = array("q", [0])  # start of each row, and the end of the last one
        for r in rows:
            self.append(r)

    def append(self, row: dict[str, Any]) -> None:
        data = dumps(row).encode("utf-8") + b"\n"
        os.pwrite(self._fd, data, self._offsets[-1])
        self._offsets.append(self._offsets[-1] + len(data))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _text(self, i: int) -> bytes:
        start, end = self._offsets[i], self._offsets[i + 1]
        return os.pread(self._fd, end - start - 1, start)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(i, int):
            raise TypeError("rows are looked up by position")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return json.loads(self._text(i))

    def texts(self) -> Iterator[bytes]:
        """Each row's JSON text, in order, read a block at a time."""
        pos, end, rest = 0, self._offsets[-1], b""
        while pos < end:
            block = os.pread(self._fd, min(BLOCK, end - pos), pos)
            pos += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from lines

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for text in self.texts():
            yield json.loads(text)

    def json_chunks(self) -> Iterator[bytes]:
        """The rows as one JSON array, in pieces: what ``dumps(list(self))`` would give."""
        yield b"["
        for n, text in enumerate(self.texts()):
            yield b"," + text if n else text
        yield b"]"

    def close(self) -> None:
        self._file.close()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowFile | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def merged(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> RowFile:
    """Two row streams each sorted by ``key``, merged into one ``RowFile`` (stable: ``a`` first
    on a tie, as ``sorted(a + b)`` would keep them)."""
    return RowFile(heapq.merge(a, b, key=key))


def json_chunks(value: Any) -> Iterator[bytes]:
    """``dumps(value).encode()`` in pieces, with every ``RowFile`` inside written from its file:
    the same bytes, never the whole text in memory. Dictionaries are written with sorted keys
    and lists item by item, as ``json.dumps`` writes them."""
    if isinstance(value, RowFile):
        yield from value.json_chunks()
    elif isinstance(value, dict) and any(_holds_rows(v) for v in value.values()):
        yield b"{"
        for n, k in enumerate(sorted(value)):
            yield (b"," if n else b"") + dumps(k).encode("utf-8") + b":"
            yield from json_chunks(value[k])
        yield b"}"
    elif isinstance(value, list) and any(_holds_rows(v) for v in value):
        yield b"["
        for n, v in enumerate(value):
            if n:
                yield b","
            yield from json_chunks(v)
        yield b"]"
    else:
        yield dumps(value).encode("utf-8")


def _holds_rows(value: Any) -> bool:
    if isinstance(value, RowFile):
        return True
    if isinstance(value, dict):
        return any(_holds_rows(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_rows(v) for v in value)
    return False
