"""RFC 9162 section 2.1 Merkle tree: hashing, proofs and proof verification.

Pure module (standard library only). The tree over a registrant's entries is the RFC 9162
tree over their leaf hashes in ``seq`` order::

    leaf hash  = SHA-256(0x00 || canonical entry bytes)
    node hash  = SHA-256(0x01 || left || right)
    empty tree = SHA-256("")

Storage model
-------------
Only *perfect* subtrees are ever stored, addressed by ``(level, index)``: level 0 index ``i``
is leaf ``i``'s hash, level ``L`` index ``i`` is the root of leaves ``[i*2^L, (i+1)*2^L)``.
Such a node never changes once its last leaf is appended, so the table is append-only like
the entries themselves. Every other hash the RFC needs (the root of any size, the right-edge
siblings of a proof) is the right-to-left fold of at most ``log2(n)`` perfect nodes, so all
functions here read O(log n) nodes through a :data:`NodeReader` and never walk the leaves.

Errors
------
Bad arguments to the proof builders and every failed verification raise :class:`ProofError`
(a ``ValueError``) with a human-readable reason. A ``NodeReader`` that lacks a node may raise
``KeyError``; it propagates unchanged, because a missing stored node is a storage fault, not
a bad proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryTree",
    "NodeReader",
    "ProofError",
    "RootAccumulator",
    "consistency_proof",
    "inclusion_proof",
    "is_valid_subtree",
    "leaf_hash",
    "node_hash",
    "nodes_created_by_append",
    "perfect_nodes",
    "root",
    "root_from_leaf_hashes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves: SHA-256 of the empty string (RFC 9162 2.1.1)."""

NodeReader = Callable[[int, int], bytes]
"""``get(level, index) -> hash`` of a stored perfect node; may raise ``KeyError``."""


class ProofError(ValueError):
    """A proof cannot be built from these arguments, or a proof failed to verify."""


# --------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """Return SHA-256(0x00 || data), the RFC 9162 hash of one leaf's bytes."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the RFC 9162 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Fold subtree roots (left to right, sizes strictly decreasing) right to left.

    This is MTH's recursion unrolled: MTH splits at the largest power of two below n, so the
    left part is one perfect subtree and the right part recurses on the remaining bits.
    """
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


# ------------------------------------------------------------------- argument checks


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass; a True tree size is a caller bug, not size 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} must not be negative, got {value}")
    return value


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ProofError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be {HASH_SIZE} bytes, got {len(value)}")
    return value


def _check_proof(proof: Iterable[bytes] | None) -> list[bytes]:
    # JSON vectors encode an empty proof as null, so None is accepted as [].
    if proof is None:
        return []
    if isinstance(proof, (bytes, bytearray, str)):
        raise ProofError("proof must be a sequence of hashes, not a single byte string")
    return [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]


# ------------------------------------------------------------------ stored nodes


def perfect_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Return the ``(level, index)`` perfect nodes whose fold is MTH(D[start:end]).

    Valid for any range accepted by :func:`is_valid_subtree`; the nodes are listed left to
    right with strictly decreasing levels (one per set bit of ``end - start``).
    """
    out: list[tuple[int, int]] = []
    pos, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        # pos is a multiple of 2**level because start is aligned to the subtree's width
        # and every earlier chunk was a larger power of two.
        out.append((level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    return out


def is_valid_subtree(start: int, end: int) -> bool:
    """True if ``[start, end)`` is a subtree that MTH's recursion can produce.

    That is: non-empty, and ``start`` is a multiple of the smallest power of two that is
    at least ``end - start`` (so the range is the left-aligned part of an aligned block).
    """
    if start < 0 or end <= start:
        return False
    width = 1 << (end - start - 1).bit_length()  # smallest power of two >= end - start
    return start % width == 0


def nodes_created_by_append(
    leaf_index: int, leaf: bytes, get: NodeReader
) -> list[tuple[int, int, bytes]]:
    """Return the ``(level, index, hash)`` nodes that become complete when a leaf is appended.

    ``leaf`` is the new leaf's *hash* (see :func:`leaf_hash`) and ``leaf_index`` its index,
    i.e. the tree size before the append. The first item is ``(0, leaf_index, leaf)``; then,
    for every trailing 1 bit of ``leaf_index``, the parent that this leaf completes, reading
    its left sibling through ``get``. At most ``log2(n) + 1`` nodes, ``log2(n)`` reads.
    """
    _check_int("leaf_index", leaf_index)
    h = _check_hash("leaf hash", leaf)
    out = [(0, leaf_index, h)]
    level, index = 0, leaf_index
    # A node at (level, index) with an odd index is a right child: its parent is complete
    # as soon as it is, and the left sibling (index - 1) was completed earlier.
    while index & 1:
        h = node_hash(get(level, index - 1), h)
        level, index = level + 1, index >> 1
        out.append((level, index, h))
    return out


def subtree_hash(start: int, end: int, get: NodeReader) -> bytes:
    """Return MTH(D[start:end]) from O(log n) stored perfect nodes.

    The range must be a valid RFC 9162 subtree (:func:`is_valid_subtree`); the whole tree
    ``[0, size)`` always is.
    """
    _check_int("start", start)
    _check_int("end", end)
    if not is_valid_subtree(start, end):
        raise ProofError(f"[{start}, {end}) is not a valid Merkle subtree")
    return _fold([get(level, index) for level, index in perfect_nodes(start, end)])


def root(size: int, get: NodeReader) -> bytes:
    """Return the root hash of the first ``size`` leaves (``EMPTY_ROOT`` for size 0).

    Reads one stored node per set bit of ``size``.
    """
    _check_int("size", size)
    if size == 0:
        return EMPTY_ROOT
    return subtree_hash(0, size, get)


def _largest_power_of_two_below(n: int) -> int:
    """k of RFC 9162: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# ------------------------------------------------------------------------- proofs


def inclusion_proof(index: int, size: int, get: NodeReader) -> list[bytes]:
    """Return the RFC 9162 2.1.3.1 inclusion proof PATH(index, D[0:size]).

    Hashes are ordered from the leaf's sibling up to the root's child, as the RFC's
    recursion emits them. Reads O(log n) nodes: every sibling is one perfect node except
    at most one right-edge sibling, which is a fold of O(log n) perfect nodes.
    """
    _check_int("index", index)
    _check_int("size", size)
    if size == 0:
        raise ProofError("no inclusion proof exists in an empty tree")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    top_down: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _largest_power_of_two_below(end - start)
        if index < mid:
            top_down.append(subtree_hash(mid, end, get))
            end = mid
        else:
            top_down.append(subtree_hash(start, mid, get))
            start = mid
    top_down.reverse()
    return top_down


def consistency_proof(first: int, second: int, get: NodeReader) -> list[bytes]:
    """Return the RFC 9162 2.1.4.1 consistency proof PROOF(first, D[0:second]).

    Requires ``1 <= first <= second``; ``first == second`` gives ``[]``. Reads O(log n)
    nodes for the same reason as :func:`inclusion_proof`.
    """
    _check_int("first", first)
    _check_int("second", second)
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first < 1:
        raise ProofError("a consistency proof needs a first tree size of at least 1")
    # Iterative SUBPROOF(m, D[start:end], b): siblings collected top-down, emitted after
    # the terminal node, i.e. in the order the RFC's recursion appends them.
    top_down: list[bytes] = []
    terminal: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                terminal.append(subtree_hash(start, end, get))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            top_down.append(subtree_hash(start + k, end, get))
            end = start + k
        else:
            top_down.append(subtree_hash(start, start + k, get))
            start, m, whole = start + k, m - k, False
    top_down.reverse()
    return terminal + top_down


# ---------------------------------------------------------------------- verifiers


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes] | None, root: bytes
) -> None:
    """Check an inclusion proof per RFC 9162 2.1.3.2; raise :class:`ProofError` if invalid.

    ``leaf_hash`` is the already-hashed leaf. All hashes must be 32 bytes.
    """
    index = _check_int("leaf index", index)
    size = _check_int("tree size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    r = _check_hash("leaf hash", leaf_hash)
    expected = _check_hash("root hash", root)
    path = _check_proof(proof)

    fn, sn = index, size - 1
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof has more hashes than the tree has levels")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # fn is the last node of its level with no right sibling: climb the
                # levels where it is promoted unchanged.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has too few hashes for this tree size")
    if r != expected:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    first: int,
    second: int,
    proof: Sequence[bytes] | None,
    root1: bytes,
    root2: bytes,
) -> None:
    """Check a consistency proof per RFC 9162 2.1.4.2; raise :class:`ProofError` if invalid.

    Requires ``1 <= first <= second``. When ``first == second`` the proof must be empty and
    the two roots equal (they are then only compared, as in the reference implementation,
    not length-checked). Otherwise both roots and every proof hash must be 32 bytes.
    """
    first = _check_int("first size", first)
    second = _check_int("second size", second)
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first < 1:
        # An empty tree is trivially a prefix of every tree; a "proof" of it proves nothing.
        raise ProofError("a consistency proof needs a first tree size of at least 1")
    path = _check_proof(proof)
    if first == second:
        if path:
            raise ProofError("tree sizes are equal but the consistency proof is not empty")
        if not all(isinstance(r, (bytes, bytearray, memoryview)) for r in (root1, root2)):
            raise ProofError("roots must be bytes")
        if bytes(root1) != bytes(root2):
            raise ProofError("tree sizes are equal but the roots differ")
        return
    first_root = _check_hash("first root", root1)
    second_root = _check_hash("second root", root2)
    if not path:
        raise ProofError("consistency proof is empty but the tree sizes differ")

    # Step 2: when the old tree is a perfect subtree its root is not sent; start from it.
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof has more hashes than the tree has levels")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has too few hashes for these tree sizes")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")


# ---------------------------------------------------------------- in-memory helpers


class RootAccumulator:
    """Streaming root computation over leaf hashes with O(log n) memory.

    Keeps one hash per set bit of the size (the perfect subtrees of the tree so far), like
    a binary counter; ``push`` is amortised O(1) hashes and ``root`` folds O(log n).
    """

    __slots__ = ("_stack", "_size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves pushed so far."""
        return self._size

    def push(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (32 bytes)."""
        h = _check_hash("leaf hash", leaf_hash)
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            level += 1
        self._stack.append((level, h))
        self._size += 1

    def root(self) -> bytes:
        """Root of the leaves pushed so far (``EMPTY_ROOT`` when none)."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold([h for _, h in self._stack])


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """Root of the tree over an iterable of leaf hashes, in O(log n) memory."""
    acc = RootAccumulator()
    for h in leaf_hashes:
        acc.push(h)
    return acc.root()


class MemoryTree:
    """A dict-backed tree using the same storage model as the database.

    For tests and for offline verification of an exported bundle: append leaf hashes, then
    ask for roots and proofs of any size up to :attr:`size`.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._size = 0
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        """Number of leaves appended."""
        return self._size

    @property
    def nodes(self) -> dict[tuple[int, int], bytes]:
        """A copy of the stored perfect nodes, ``{(level, index): hash}``."""
        return dict(self._nodes)

    def get(self, level: int, index: int) -> bytes:
        """The :data:`NodeReader` of this tree; raises ``KeyError`` for a missing node."""
        return self._nodes[(level, index)]

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash; return its index."""
        index = self._size
        for level, i, h in nodes_created_by_append(index, leaf_hash, self.get):
            self._nodes[(level, i)] = h
        self._size += 1
        return index

    def _check_size(self, size: int) -> int:
        _check_int("size", size)
        if size > self._size:
            raise ProofError(f"tree size {size} is larger than the tree ({self._size} leaves)")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (default: all of them)."""
        return root(self._size if size is None else self._check_size(size), self.get)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the tree of ``size`` leaves (default: all)."""
        return inclusion_proof(
            index, self._size if size is None else self._check_size(size), self.get
        )

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """Consistency proof from size ``first`` to ``second`` (default: all)."""
        second = self._size if second is None else self._check_size(second)
        return consistency_proof(first, second, self.get)
