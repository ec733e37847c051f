"""Scratch storage for ``verify --deep`` (issue 22): the rebuilt projections and the rules
replay's per-vial (and per-package, -preparation, -count, -alert) state in a private temporary
SQLite database behind a small bounded cache, so the deep pass's peak memory stays flat in the
number of entries and vials.

The database is SQLite's own private temporary file (``sqlite3.connect("")``): created on disk
in the temporary directory, unlinked by SQLite as soon as it is opened (nobody else can open
it) and gone when the connection closes, even after a crash. Its page cache is bounded
(``CACHE_KIB``); pages beyond it live in the file. ``:memory:`` would not be flat.

Values are written with ``marshal`` (fast, C; projection rows in its format 0, ``_RowCodec``),
which handles what projection rows and replay state hold (str, int, bool, None, lists and dicts
decoded from entries, frozensets); a ``Decimal`` at the top level of a value or a row is
written as its exact text, tagged (a row: by its shape), and read back as the same ``Decimal`` (sign, digits and exponent: ``Decimal(str(d))`` is exact). Only
bytes this process wrote are read back, from a file no other process can open. Keys are written
as their ``repr`` (unambiguous and deterministic for the str / int / bool / None tuples keys are,
unlike ``marshal``'s output for equal strings).

``ScratchMap`` is a mapping (``get``, ``[]``, ``[]=``, ``in``, ``pop``) over one table. Its cache
is write-back: a value read or written stays in the cache (returned by reference, so the replay
may change it in place) and is written to the file when it is evicted (least recently used
first, a quarter of the cache at a time) or at ``flush``. ``ScratchStateView`` is the
``projections.StateView`` over one map per projection table, with ``MemoryStateView``'s
semantics (``get`` returns a copy, ``put`` keeps Decimals in the stored form) and its iteration
order (first insertion; a deleted and re-put key goes last), kept as an insertion number.
"""

from __future__ import annotations

import marshal
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from ledger.domain.projections import PRIMARY_KEYS, key_of
from ledger.domain.quantities import norm

#: Rows or values each map keeps in memory (the rest are in the file).
CACHE_ROWS = 2048
#: SQLite's page cache for the scratch file, in KiB.
CACHE_KIB = 4096
_PAGE = 1000
#: Keys per ``IN (...)`` list of ``lookup_many`` (well under SQLite's 32,766 parameters).
_IN = 500
_BLOOM_BITS = 1 << 22  # 512 KiB per map; two bits a key: 0.2 % false positives at 100,000 keys
_BLOOM_BYTES, _BLOOM_MASK = _BLOOM_BITS // 8, _BLOOM_BITS - 1
_DEC = "\x00decimal"  # a tag no JSON value decodes to (JSON never yields a tuple)


def _enc(value: Any) -> Any:
    if type(value) is Decimal:
        return (_DEC, str(value))
    if type(value) is dict:
        return {k: (_DEC, str(v)) if type(v) is Decimal else v for k, v in value.items()}
    return value


def _dec(value: Any) -> Any:
    if type(value) is tuple and len(value) == 2 and value[0] == _DEC:
        return Decimal(value[1])
    if type(value) is dict:
        for k, v in value.items():
            if type(v) is tuple and len(v) == 2 and v[0] == _DEC:
                value[k] = Decimal(v[1])
    return value


class _RowCodec:
    """Projection rows written compactly, in ``marshal`` format 0, as the list [shape number,
    values ...]. A row's shape is its column names and the positions of its Decimals (every row a
    projection writes has the same names and few combinations of empty columns, so there are a
    few; ``shapes``, written once per map); a Decimal is written as its exact text, read back as
    the same Decimal (``Decimal(str(d))`` is exact). Format 0 has no back-references and no
    interned-string codes, so the bytes are a function of the values alone: ``same`` compares a
    stored row with the written bytes by writing the stored row the same way (issue 22: nothing
    decoded per compared row)."""

    def __init__(self) -> None:
        self.numbers: dict[tuple, int] = {}
        #: shape number -> (column names, positions of the Decimals)
        self.shapes: list[tuple[tuple[str, ...], tuple[int, ...]]] = []

    def enc(self, row: dict[str, Any]) -> bytes:
        values = list(row.values())
        shape = (tuple(row), tuple(map(type, values)))
        n = self.numbers.get(shape)
        if n is None:
            n = self.numbers[shape] = len(self.shapes)
            self.shapes.append((shape[0], tuple(i for i, t in enumerate(shape[1]) if t is Decimal)))
        for i in self.shapes[n][1]:
            values[i] = str(values[i])
        values.insert(0, n)
        return marshal.dumps(values, 0)

    def dec(self, data: bytes) -> dict[str, Any]:
        values = marshal.loads(data)
        names, decimals = self.shapes[values[0]]
        for i in decimals:
            values[i + 1] = Decimal(values[i + 1])
        return dict(zip(names, values[1:], strict=True))

    def same(self, data: bytes, row: dict[str, Any]) -> bool:
        """True only if ``row`` (a stored projection row) is written as exactly ``data``, so that
        ``row == self.dec(data)``: the same column names, Decimals in the same columns with the
        same text, every other value of the same type and value. False may still mean equal
        (``1 == True``, ``Decimal("1.0") == Decimal("1.00")``): the caller then compares the
        decoded row."""
        # The shape number is the list's first item: format 0 writes a list as b"[", its length
        # (4 bytes), then b"i" and a 4-byte int. Only a hint: the bytes written below include it.
        if data[5:6] != b"i":
            return False
        n = int.from_bytes(data[6:10], "little", signed=True)
        if not 0 <= n < len(self.shapes):
            return False
        names, decimals = self.shapes[n]
        if len(names) != len(row):
            return False
        try:
            values = list(map(row.__getitem__, names))
        except KeyError:
            return False
        for i in decimals:
            v = values[i]
            if type(v) is not Decimal:
                return False
            values[i] = str(v)
        if Decimal in map(type, values):  # a Decimal where the rebuild had none
            return False
        values.insert(0, n)
        try:
            return marshal.dumps(values, 0) == data
        except ValueError:  # a value marshal cannot write: not what was written
            return False


class _ValueCodec:
    """Any other value: ``_enc`` / ``_dec`` around ``marshal``."""

    @staticmethod
    def enc(value: Any) -> bytes:
        return marshal.dumps(_enc(value))

    @staticmethod
    def dec(data: bytes) -> Any:
        return _dec(marshal.loads(data))


def _key(key: Any) -> str:
    """A key's text: ``repr`` of the str / int / None value or tuple (unambiguous and deterministic
    for those types; a list or dict key fails in the cache's dict first, as in memory). A bool is
    written as the int it equals, so keys equal in a dict are equal here (``True == 1``)."""
    t = type(key)
    if t is tuple:
        for k in key:
            if type(k) is bool:
                return repr(tuple(int(k) if type(k) is bool else k for k in key))
    elif t is bool:
        return repr(int(key))
    return repr(key)


class Scratch:
    """The private temporary database the maps of one ``verify --deep`` run share."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        # 16 KiB pages (before the first table): batched upserts of sorted keys ~15 % faster than
        # with 4 KiB pages (measured, issue 22); the cache is still CACHE_KIB.
        for pragma in ("page_size=16384", "journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       f"cache_size=-{CACHE_KIB}", "locking_mode=EXCLUSIVE"):
            self.db.execute(f"PRAGMA {pragma}")
        # One transaction for the whole run, never committed (the file is thrown away): a commit
        # per batch would write every dirty page of the cache back each time (measured: the
        # cost of a batch then grows with the cache); in one transaction pages reach the file
        # only when the bounded cache spills.
        self.db.execute("BEGIN")
        self._tables = 0

    def map(self, name: str, cache_rows: int = CACHE_ROWS, *, rows: bool = False) -> ScratchMap:
        """A new, empty map in its own table (``rows``: its values are projection rows, dicts of
        the same few sets of column names, written compactly)."""
        self._tables += 1
        table = f"m{self._tables}"
        self.db.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, ins INTEGER NOT NULL, v BLOB NOT NULL) "
                        "WITHOUT ROWID")
        return ScratchMap(self.db, table, name, cache_rows, _RowCodec() if rows else _ValueCodec(), bloom=not rows)

    def close(self) -> None:
        self.db.close()


class ScratchMap:
    """A mapping over one scratch table with a bounded write-back cache (see the module)."""

    def __init__(self, db: sqlite3.Connection, table: str, name: str, cache_rows: int, codec: Any,
                 bloom: bool = True):
        self.db, self.table, self.name, self.cap = db, table, name, max(cache_rows, 4)
        self.codec = codec
        self.enc, self.dec = codec.enc, codec.dec  # value -> bytes, bytes -> value
        #: key -> [value, insertion number, dirty]; dict order is recency (oldest first).
        self.cache: dict[Any, list] = {}
        #: A Bloom filter (fixed size) of the keys written to the file: a key it lacks is not
        #: there, and is not looked for (a new vial's balance, say). Python's ``hash``: keys
        #: equal in a dict hash alike, as ``_key`` writes them alike. Made at the first write
        #: (most maps never spill).
        self.written: bytearray | None = None
        #: Without the filter (projection rows: read back only when they exist, written once
        #: each), every key missing from the cache is looked for in the file.
        self.bloom = bloom
        self.ins = 0
        self.spilled = False  # anything written to the file yet
        self._get = f"SELECT v, ins FROM {table} WHERE k = ?"
        self._upsert = (f"INSERT INTO {table} (k, ins, v) VALUES (?, ?, ?) "
                        "ON CONFLICT (k) DO UPDATE SET v = excluded.v")

    def _load(self, key: Any) -> list | None:
        entry = self.cache.pop(key, None)
        if entry is None:
            h = hash(key)
            a, b = h & _BLOOM_MASK, (h >> 24) & _BLOOM_MASK
            written = self.written
            if written is None:
                if self.bloom or not self.spilled:
                    return None
            elif not (written[a >> 3] >> (a & 7) & 1 and written[b >> 3] >> (b & 7) & 1):
                return None
            row = self.db.execute(self._get, (_key(key),)).fetchone()
            if row is None:
                return None
            entry = [self.dec(row[0]), row[1], False]
        self.cache[key] = entry  # most recent last
        if len(self.cache) > self.cap:
            self._evict(self.cap // 4)
        return entry

    def get(self, key: Any, default: Any = None) -> Any:
        """The value (by reference: the caller may change it in place), or ``default``."""
        entry = self._load(key)
        if entry is None:
            return default
        entry[2] = True  # read values may be changed in place by the caller: written back
        return entry[0]

    def __getitem__(self, key: Any) -> Any:
        entry = self._load(key)
        if entry is None:
            raise KeyError(key)
        entry[2] = True
        return entry[0]

    def peek(self, key: Any) -> Any:
        """The value, for reading only (not written back for this read)."""
        entry = self._load(key)
        return None if entry is None else entry[0]

    def __contains__(self, key: Any) -> bool:
        return self._load(key) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        entry = self.cache.pop(key, None)
        if entry is None:
            # New here; if the file already holds the key, the upsert keeps its insertion number.
            self.ins += 1
            entry = [value, self.ins, True]
        else:
            entry[0], entry[2] = value, True
        self.cache[key] = entry
        if len(self.cache) > self.cap:
            self._evict(self.cap // 4)

    def add(self, key: Any) -> None:
        """As a set's ``add``: ``key in`` the map from now on."""
        self[key] = True

    def pop(self, key: Any, default: Any = None) -> Any:
        entry = self._load(key)
        if entry is None:
            return default
        del self.cache[key]
        self.db.execute(f"DELETE FROM {self.table} WHERE k = ?", (_key(key),))
        return entry[0]

    def _evict(self, n: int) -> None:
        out, keys = [], []
        for key in list(self.cache)[:n]:
            value, ins, dirty = self.cache.pop(key)
            if dirty:
                out.append((_key(key), ins, self.enc(value)))
                keys.append(key)
        if out:
            self.spilled = True
            if not self.bloom:
                out.sort()
                self.db.executemany(self._upsert, out)
                return
            if self.written is None:
                self.written = bytearray(_BLOOM_BYTES)
            written = self.written
            for key in keys:
                h = hash(key)
                a, b = h & _BLOOM_MASK, (h >> 24) & _BLOOM_MASK
                written[a >> 3] |= 1 << (a & 7)
                written[b >> 3] |= 1 << (b & 7)
            out.sort()  # in key order: each b-tree page is visited once per batch
            self.db.executemany(self._upsert, out)

    def flush(self) -> None:
        """Write every changed value to the file and empty the cache."""
        self._evict(len(self.cache))

    def __len__(self) -> int:
        self.flush()
        return self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def values(self) -> Iterator[Any]:
        """Every value in insertion order, streamed from the file (the cache is flushed first;
        do not change the map while iterating)."""
        self.flush()
        last = -1
        while True:
            rows = self.db.execute(f"SELECT ins, v FROM {self.table} WHERE ins > ? ORDER BY ins LIMIT {_PAGE}",
                                   (last,)).fetchall()
            for _ins, v in rows:
                yield self.dec(v)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def items_with_ins(self) -> Iterator[tuple[int, Any]]:
        """(insertion number, value) in insertion order (as ``values``)."""
        self.flush()
        last = -1
        while True:
            rows = self.db.execute(f"SELECT ins, v FROM {self.table} WHERE ins > ? ORDER BY ins LIMIT {_PAGE}",
                                   (last,)).fetchall()
            for ins, v in rows:
                yield ins, self.dec(v)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def lookup(self, key: Any) -> tuple[int, Any] | None:
        """(insertion number, value) of ``key`` read from the file, bypassing the cache (call
        ``flush`` first); for the comparison that streams the stored tables."""
        row = self.db.execute(self._get, (_key(key),)).fetchone()
        return None if row is None else (row[1], self.dec(row[0]))

    def lookup_many(self, keys: list[Any]) -> list[tuple[int, bytes] | None]:
        """(insertion number, written bytes) of each key, in the keys' order, or None for a key
        the file lacks; one query per ``_IN`` keys (call ``flush`` first). ``self.dec`` reads the
        bytes; ``codec.same`` (rows maps) compares them with a stored row without reading them."""
        texts = [_key(k) for k in keys]
        found: dict[str, tuple[int, bytes]] = {}
        for i in range(0, len(texts), _IN):
            part = texts[i:i + _IN]
            sql = f"SELECT k, ins, v FROM {self.table} WHERE k IN ({','.join('?' * len(part))})"
            for k, ins, v in self.db.execute(sql, part):
                found[k] = (ins, v)
        get = found.get
        return [get(text) for text in texts]


class ScratchStateView:
    """``projections.StateView`` over scratch maps: ``MemoryStateView``'s semantics in flat memory."""

    def __init__(self, scratch: Scratch | None = None, cache_rows: int = CACHE_ROWS):
        self.scratch = scratch or Scratch()
        self.tables: dict[str, ScratchMap] = {t: self.scratch.map(t, cache_rows, rows=True) for t in PRIMARY_KEYS}
        #: (column names, their values' types) -> the columns holding Decimals (issue 22: found
        #: once per shape of row, not by testing every value of every row put).
        self._decimals: dict[tuple, tuple[str, ...]] = {}

    def get(self, table: str, key: tuple) -> dict[str, Any] | None:
        row = self.tables[table].peek(key)
        return dict(row) if row is not None else None

    def put(self, table: str, row: dict[str, Any]) -> None:
        # As ``MemoryStateView.put``: a copy, quantities (every Decimal, subclasses too) in the
        # one form the database gives back.
        shape = (tuple(row), tuple(map(type, row.values())))
        decimals = self._decimals.get(shape)
        if decimals is None:
            decimals = self._decimals[shape] = tuple(k for k, t in zip(*shape, strict=True) if issubclass(t, Decimal))
        new = dict(row)
        for k in decimals:
            new[k] = norm(new[k])
        self.tables[table][key_of(table, row)] = new

    def delete(self, table: str, key: tuple) -> None:
        self.tables[table].pop(key, None)

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """Every rebuilt row of ``table``, in insertion order, streamed."""
        return self.tables[table].values()

    def map(self, name: str, cache_rows: int = CACHE_ROWS) -> ScratchMap:
        """A scratch map for other state of the same run (the rules replay's balances ...)."""
        return self.scratch.map(name, cache_rows)

    def close(self) -> None:
        self.scratch.close()
