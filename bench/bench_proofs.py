"""Proof benchmark for the verifiable ledger (issue 4): inclusion and consistency proofs read
from the stored Merkle nodes, at several tree sizes, plus the cost of signing a checkpoint in
every append transaction.

usage: python bench/bench_proofs.py [--sizes 1000,1000000] [--proofs 2000] [--appends 500] [--workdir DIR]

For each size a fresh SQLite file (built by the migrations) gets the perfect Merkle nodes of a
tree of that many synthetic leaves, written straight into ``merkle_nodes`` (a streaming RFC 9162
append with an O(log n) frontier, so filling 1,000,000 leaves takes seconds, not an hour of
commands). Proofs are then built exactly as the HTTP endpoints build them
(``merkle.inclusion_proof`` / ``consistency_proof`` over ``log.memo_reader``, one read
transaction per proof) at random positions, and each is verified, untimed, against the root.
Every figure printed is measured in this run.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.integrity import merkle  # noqa: E402
from ledger.storage.log import memo_reader  # noqa: E402
from ledger.storage.store import Ledger, make_engine, migrate  # noqa: E402

DEA = "AB1234563"


def fill_nodes(ledger: Ledger, size: int) -> bytes:
    """Write the perfect nodes of a ``size``-leaf tree; return its root (from an accumulator)."""
    frontier: dict[tuple[int, int], bytes] = {}
    acc = merkle.RootAccumulator()
    batch: list[tuple] = []
    raw = ledger.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        for i in range(size):
            leaf = hashlib.sha256(b"\x00" + b"bench entry %d" % i).digest()
            acc.push(leaf)
            for level, index, h in merkle.nodes_created_by_append(i, leaf, lambda lv, ix: frontier[(lv, ix)]):
                frontier[(level, index)] = h
                frontier.pop((level, index - 2), None)
                batch.append((DEA, level, index, h))
            if len(batch) >= 50_000:
                cur.executemany("INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES (?, ?, ?, ?)", batch)
                batch.clear()
        cur.executemany("INSERT INTO merkle_nodes (registrant, level, idx, hash) VALUES (?, ?, ?, ?)", batch)
        cur.execute("COMMIT")
    finally:
        raw.close()
    return acc.root()


def timed(fn, n: int) -> tuple[float, float, float]:
    """Median, p99 and mean milliseconds of ``n`` calls of ``fn(i)``."""
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1], statistics.fmean(out)


def bench_size(workdir: Path, size: int, proofs: int) -> dict:
    db = workdir / f"proofs-{size}.db"
    db.unlink(missing_ok=True)
    ledger = Ledger(make_engine(f"sqlite:///{db}"))
    migrate(ledger.engine)
    t = time.perf_counter()
    root = fill_nodes(ledger, size)
    fill_s = time.perf_counter() - t
    rng = random.Random(size)
    idx = [rng.randrange(size) for _ in range(proofs)]
    firsts = [rng.randrange(1, size) if size > 1 else 1 for _ in range(proofs)]
    made: dict[str, list] = {"inc": [], "con": []}

    def inclusion(i: int) -> None:
        with ledger.reading() as conn:
            made["inc"].append(merkle.inclusion_proof(idx[i], size, memo_reader(conn, DEA)))

    def consistency(i: int) -> None:
        with ledger.reading() as conn:
            made["con"].append(merkle.consistency_proof(firsts[i], size, memo_reader(conn, DEA)))

    inc = timed(inclusion, proofs)
    con = timed(consistency, proofs)
    # Untimed: every proof verifies against the independently accumulated root.
    for i, p in enumerate(made["inc"][:200]):
        merkle.verify_inclusion(hashlib.sha256(b"\x00" + b"bench entry %d" % idx[i]).digest(), idx[i], size, p, root)
    with ledger.reading() as conn:
        get = memo_reader(conn, DEA)
        for i, p in enumerate(made["con"][:50]):
            merkle.verify_consistency(firsts[i], size, p, merkle.root(firsts[i], get), root)
    ledger.dispose()
    return {"size": size, "fill_s": fill_s, "inc": inc, "con": con,
            "inc_len": statistics.fmean(len(p) for p in made["inc"]), "con_len": statistics.fmean(len(p) for p in made["con"])}


def bench_signing(workdir: Path, appends: int) -> tuple[float, float]:
    """Single-command durable appends/s without and with the checkpoint-signing hook."""
    from types import SimpleNamespace

    from api.cli.bench import _receipt, _seed
    from ledger import services
    from ledger.storage.log import attach

    out = []
    for signed in (False, True):
        db = workdir / f"sign-{signed}.db"
        db.unlink(missing_ok=True)
        ledger = Ledger(make_engine(f"sqlite:///{db}"))
        migrate(ledger.engine)
        if signed:
            attach(ledger, SimpleNamespace(key_dir=workdir / "bench-keys", origin_prefix="bench.test", log_keys=""))
        nurse, sup = _seed(ledger)
        t = time.perf_counter()
        for i in range(appends):
            services.receive_stock(ledger, nurse, _receipt(sup, i))
        out.append(appends / (time.perf_counter() - t))
        ledger.dispose()
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--appends", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="csledger-proofs-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [bench_size(work, int(s), args.proofs) for s in args.sizes.split(",")]
    print(f"{'tree size':>12} {'fill s':>8} {'inclusion p50/p99 ms':>22} {'hashes':>7} "
          f"{'consistency p50/p99 ms':>24} {'hashes':>7}")
    for r in rows:
        print(f"{r['size']:>12,} {r['fill_s']:>8.1f} {r['inc'][0]:>10.3f} / {r['inc'][1]:<9.3f} {r['inc_len']:>7.1f} "
              f"{r['con'][0]:>12.3f} / {r['con'][1]:<9.3f} {r['con_len']:>7.1f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['size']:,} / {a['size']:,}: inclusion p50 {b['inc'][0] / a['inc'][0]:.2f}x, "
              f"consistency p50 {b['con'][0] / a['con'][0]:.2f}x (target: at most 3x)")
    if args.appends:
        plain, signed = bench_signing(work, args.appends)
        print(f"durable single-command appends/s: {plain:,.0f} unsigned, {signed:,.0f} with a checkpoint signed "
              f"in each transaction ({signed / plain:.2f}x)")


if __name__ == "__main__":
    main()
