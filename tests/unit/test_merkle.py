"""RFC 9162 Merkle tree: golden vectors, storage model, and property tests."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.integrity import merkle
from ledger.integrity.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    RootAccumulator,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_created_by_append,
    root,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "rfc9162"


def _vector_files(kind: str) -> list[Path]:
    folder = VECTORS / kind
    return sorted(folder.rglob("*.json")) if folder.is_dir() else []


def _vector_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def _need_vectors() -> None:
    """The golden vectors sit beside the checkout (``../shared/vectors/rfc9162``); CI provides
    them and sets ``CSLEDGER_REQUIRE_VECTORS=1``, where their absence fails instead of skipping."""
    if not VECTORS.is_dir():
        if os.environ.get("CSLEDGER_REQUIRE_VECTORS") == "1":
            pytest.fail(f"the RFC 9162 vectors are not at {VECTORS} but CSLEDGER_REQUIRE_VECTORS=1")
        pytest.skip(f"the RFC 9162 vectors are not at {VECTORS} (../shared/vectors/rfc9162 beside the checkout)")


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(vector: dict) -> list[bytes]:
    return [_b64(p) for p in (vector["proof"] or [])]


# One placeholder param keeps the tests collected (and skipped) when the vectors are absent.
INCLUSION_FILES = _vector_files("inclusion") or [None]
CONSISTENCY_FILES = _vector_files("consistency") or [None]


@pytest.mark.parametrize(
    "path", INCLUSION_FILES, ids=lambda p: _vector_id(p) if p else "missing"
)
def test_inclusion_vector(path: Path | None) -> None:
    _need_vectors()
    assert path is not None
    v = json.loads(path.read_text())
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "path", CONSISTENCY_FILES, ids=lambda p: _vector_id(p) if p else "missing"
)
def test_consistency_vector(path: Path | None) -> None:
    _need_vectors()
    assert path is not None
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], _proof(v), _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vectors_are_all_found() -> None:
    _need_vectors()
    # Guard against a silently empty parametrization (e.g. a renamed folder).
    assert len(_vector_files("inclusion")) >= 80
    assert len(_vector_files("consistency")) >= 90


# ------------------------------------------------------------------- eight leaves

EIGHT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
EIGHT_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def test_empty_root() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert MemoryTree().root() == EMPTY_ROOT
    assert RootAccumulator().root() == EMPTY_ROOT
    assert root(0, lambda level, index: pytest.fail("size 0 reads no node")) == EMPTY_ROOT


def test_hash_functions() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b = b"a" * 32, b"b" * 32
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize("size", range(9))
def test_eight_leaf_roots_memory_tree(size: int) -> None:
    tree = MemoryTree(leaf_hash(d) for d in EIGHT_LEAVES)
    assert tree.root(size) == EIGHT_ROOTS[size]
    grown = MemoryTree(leaf_hash(d) for d in EIGHT_LEAVES[:size])
    assert grown.root() == EIGHT_ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_eight_leaf_roots_accumulator(size: int) -> None:
    acc = RootAccumulator()
    for d in EIGHT_LEAVES[:size]:
        acc.push(leaf_hash(d))
    assert acc.size == size
    assert acc.root() == EIGHT_ROOTS[size]


def test_eight_leaf_proofs_match_vectors() -> None:
    """Proofs *built* from stored nodes equal the golden ones over the eight leaves."""
    _need_vectors()
    tree = MemoryTree(leaf_hash(d) for d in EIGHT_LEAVES)
    checked = 0
    for path in _vector_files("inclusion"):
        v = json.loads(path.read_text())
        if (
            path.name == "happy-path.json"
            and v["treeSize"] <= 8
            and _b64(v["leafHash"]) == leaf_hash(EIGHT_LEAVES[v["leafIdx"]])
        ):
            assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == _proof(v)
            assert tree.root(v["treeSize"]) == _b64(v["root"])
            checked += 1
    for path in _vector_files("consistency"):
        v = json.loads(path.read_text())
        if (
            path.name == "happy-path.json"
            and v["size2"] <= 8
            and _b64(v["root2"]) == EIGHT_ROOTS[v["size2"]]
        ):
            assert tree.consistency_proof(v["size1"], v["size2"]) == _proof(v)
            checked += 1
    assert checked >= 8


# ----------------------------------------------------------------- storage model


def test_nodes_created_by_append() -> None:
    tree = MemoryTree()
    hashes = [leaf_hash(d) for d in EIGHT_LEAVES]
    for h in hashes[:7]:
        tree.append(h)
    created = nodes_created_by_append(7, hashes[7], tree.get)
    assert [(lvl, idx) for lvl, idx, _ in created] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert created[-1][2] == EIGHT_ROOTS[8]
    assert [(lvl, idx) for lvl, idx, _ in nodes_created_by_append(4, hashes[4], tree.get)] == [
        (0, 4)
    ]


def test_only_perfect_nodes_are_stored() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(13))
    for (level, index), h in tree.nodes.items():
        start, end = index << level, (index + 1) << level
        assert end <= 13
        assert h == naive_mth(tuple(leaf_hash(bytes([i])) for i in range(start, end)))
    # 13 leaves: 13 + 6 + 3 + 1 perfect nodes
    assert len(tree.nodes) == 23


class CountingReader:
    def __init__(self, tree: MemoryTree) -> None:
        self.tree = tree
        self.reads = 0

    def __call__(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.tree.get(level, index)


def test_reads_are_logarithmic() -> None:
    size = 1000
    tree = MemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    worst = 0
    for index in range(0, size, 7):
        reader = CountingReader(tree)
        inclusion_proof(index, size, reader)
        worst = max(worst, reader.reads)
    for first in range(1, size, 7):
        reader = CountingReader(tree)
        consistency_proof(first, size, reader)
        worst = max(worst, reader.reads)
    reader = CountingReader(tree)
    root(size, reader)
    assert reader.reads == bin(size).count("1")
    assert worst <= 3 * size.bit_length()


def test_missing_node_propagates_key_error() -> None:
    with pytest.raises(KeyError):
        root(3, lambda level, index: {}[(level, index)])


def test_subtree_hash_rejects_invalid_ranges() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(8))
    with pytest.raises(ProofError):
        subtree_hash(1, 3, tree.get)  # not aligned
    with pytest.raises(ProofError):
        subtree_hash(3, 3, tree.get)  # empty
    assert subtree_hash(4, 7, tree.get) == naive_mth(
        tuple(leaf_hash(bytes([i])) for i in range(4, 7))
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: inclusion_proof(0, 0, g), "empty tree"),
        (lambda g: inclusion_proof(5, 5, g), "not below"),
        (lambda g: inclusion_proof(-1, 5, g), "negative"),
        (lambda g: consistency_proof(6, 5, g), "larger"),
        (lambda g: consistency_proof(0, 5, g), "at least 1"),
    ],
)
def test_proof_builder_errors(call, message: str) -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    with pytest.raises(ProofError, match=message):
        call(tree.get)


def test_equal_sizes_give_empty_consistency_proof() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    assert consistency_proof(5, 5, tree.get) == []
    verify_consistency(5, 5, [], tree.root(), tree.root())


def test_memory_tree_rejects_sizes_beyond_its_leaves() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    with pytest.raises(ProofError):
        tree.root(6)


def test_verifier_rejects_wrong_hash_lengths() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    proof = tree.inclusion_proof(2)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(tree.get(0, 2), 2, 5, [*proof[:-1], proof[-1] + b"\0"], tree.root())
    with pytest.raises(ProofError):
        verify_inclusion(tree.get(0, 2), 2, 5, proof, tree.root()[:31])


# -------------------------------------------------------------------- properties


@lru_cache(maxsize=4096)
def naive_mth(leaves: tuple[bytes, ...]) -> bytes:
    """RFC 9162 MTH written directly from the recursive definition."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(naive_mth(leaves[:k]), naive_mth(leaves[k:]))


def naive_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_mth(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: tuple[bytes, ...], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return naive_subproof(m, leaves[:k], whole) + [naive_mth(leaves[k:])]
    return naive_subproof(m - k, leaves[k:], False) + [naive_mth(leaves[:k])]


def _flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def trees(draw):
    size = draw(st.integers(min_value=1, max_value=200))
    seed = draw(st.binary(min_size=0, max_size=8))
    leaves = tuple(leaf_hash(seed + i.to_bytes(2, "big")) for i in range(size))
    return leaves


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(leaves=trees(), data=st.data())
def test_roots_match_naive_mth(leaves: tuple[bytes, ...], data) -> None:
    tree = MemoryTree(leaves)
    acc = RootAccumulator()
    for i, h in enumerate(leaves):
        acc.push(h)
        assert acc.root() == naive_mth(leaves[: i + 1])
    for size in data.draw(st.lists(st.integers(0, len(leaves)), max_size=10)):
        assert tree.root(size) == naive_mth(leaves[:size])


@FAST
@given(leaves=trees(), data=st.data())
def test_every_inclusion_proof_verifies(leaves: tuple[bytes, ...], data) -> None:
    tree = MemoryTree(leaves)
    n = len(leaves)
    sizes = {n, *data.draw(st.lists(st.integers(1, n), max_size=3))}
    for size in sizes:
        expected_root = naive_mth(leaves[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == naive_path(index, leaves[:size])
            verify_inclusion(leaves[index], index, size, proof, expected_root)


@FAST
@given(leaves=trees(), data=st.data())
def test_every_consistency_proof_verifies(leaves: tuple[bytes, ...], data) -> None:
    tree = MemoryTree(leaves)
    n = len(leaves)
    seconds = {n, *data.draw(st.lists(st.integers(1, n), max_size=3))}
    for second in seconds:
        root2 = naive_mth(leaves[:second])
        for first in range(1, second + 1):
            proof = tree.consistency_proof(first, second)
            if first < second:
                assert proof == naive_subproof(first, leaves[:second], True)
            else:
                assert proof == []
            verify_consistency(first, second, proof, naive_mth(leaves[:first]), root2)


@FAST
@given(leaves=trees(), data=st.data())
def test_flipped_bit_breaks_inclusion(leaves: tuple[bytes, ...], data) -> None:
    n = len(leaves)
    tree = MemoryTree(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(index)
    good_root = tree.root()
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_inclusion(_flip(leaves[index], bit), index, n, proof, good_root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, n, proof, _flip(good_root, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[k] = _flip(bad[k], bit)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, n, bad, good_root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, n, proof[:-1], good_root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, n, [*proof, good_root], good_root)


@FAST
@given(leaves=trees(), data=st.data())
def test_flipped_bit_breaks_consistency(leaves: tuple[bytes, ...], data) -> None:
    n = len(leaves)
    if n < 2:
        return
    tree = MemoryTree(leaves)
    first = data.draw(st.integers(1, n - 1))
    proof = tree.consistency_proof(first, n)
    root1, root2 = tree.root(first), tree.root()
    bit = data.draw(st.integers(0, 255))
    k = data.draw(st.integers(0, len(proof) - 1))
    bad = [*proof]
    bad[k] = _flip(bad[k], bit)
    for args in [
        (first, n, bad, root1, root2),
        (first, n, proof, _flip(root1, bit), root2),
        (first, n, proof, root1, _flip(root2, bit)),
        (first, n, proof[:-1], root1, root2),
        (first, n, [*proof, root2], root1, root2),
    ]:
        with pytest.raises(ProofError):
            verify_consistency(*args)


def test_module_exports() -> None:
    for name in merkle.__all__:
        assert hasattr(merkle, name), name
