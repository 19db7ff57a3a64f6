"""Side-by-side benchmark of FAISS cell assignment: which index keeps `Space.assign` fast.

The issue asks for assignment at 20k events/s or more on 2 cores, for all three levels of a
`Space` (16, 256 and 4096 spherical k-means cells over 384-dim all-MiniLM-L6-v2 embeddings),
and for how often a faster index agrees with exact assignment.

What is measured, in one run, on real embeddings (prompts read at run time from
../shared/data, embedded with the bundled model through the on-disk embedding cache):

- a Space is fitted on one half of the prompts and the other half (held out) is assigned;
- candidates, each assigning all three levels, in batches of 1,024 events:
  1. exact `IndexFlatIP` per level (the baseline; what `Space.assign` does), 1 and 2 threads;
  2. `IndexHNSWFlat` per level, M=32, inner product, efSearch 16/32/64;
  3. `IndexIVFFlat` for the finest level (nlist ~ sqrt(k), nprobe 1/4/8), exact flat for the
     two coarser levels;
  4. hierarchical descent: level 1 exact, then levels 2 and 3 searched only among the
     children of the query's top-w level-1 cells (a centroid's parent is its nearest level-1
     centroid), w = 1/2/3, with one small `IndexFlatIP` per level-1 cell;
  5. spanwatch's batched inverted file (`spanwatch.ivf.InvertedFile`, what
     `space.assign = "ivf"` runs): FAISS's trained IVF lists, searched with one matrix
     product per list for all the queries of a batch that probe it, nprobe 1/4/8; and
     nprobe 8 on one thread beside FAISS's IVF on one thread (the service's setting);
  6. spanwatch's descent in Rust (`spanwatch._core.CellSearch`, what `space.assign =
     "descent"` runs): levels 1 and 2 exact, level 3 among the children of the query's
     8/16/24 best level-2 cells, one call for all levels on one core;
- events/s for all levels together and for each level alone, the ratio to the exact
  baseline at the same thread count, and agreement with exact assignment per level (share
  of held-out events given the same cell id).

Timings use time.perf_counter, one warm-up, best of 3. Run from the repo root:

    python bench/python/bench_assign.py            # 40k prompts (20k fit, 20k held out)
    python bench/python/bench_assign.py --quick    # 8k prompts
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np
import numpy.typing as npt
from bench_sketch import (
    DATA,
    OTHERS,
    alpaca,
    awesome,
    clinc,
    gpteacher,
    hwu64,
    load_line,
    machine_line,
    status,
    t0,
    table,
    with_others,
)
from threadpoolctl import threadpool_limits

from spanwatch._core import CellSearch
from spanwatch.embed import CachedEmbedder, SentenceTransformerEmbedder
from spanwatch.ivf import InvertedFile
from spanwatch.space import Space

Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
LevelFn = Callable[[Matrix], Ids]

LEVELS = (16, 256, 4096)
REPS = 3
BATCH = 1024
THREADS = 2
TARGET_RATE = 20_000.0
TARGET_AGREE = 0.95
HNSW_M = 32
EF_SEARCH = (16, 32, 64)
NPROBE = (1, 4, 8)
SERVICE_NPROBE = 8  # the default of space.nprobe
DESCENT_WIDEN = (8, 16, 24)
SERVICE_WIDEN = 16  # the default of space.widen
WIDEN = (1, 2, 3)
SEED = 7

SOURCES: list[tuple[str, Callable[[], list[str]]]] = [
    ("clinc150", clinc),
    ("gpteacher codegen", lambda: gpteacher("codegen-instruct.json")),
    ("gpteacher toolformer", lambda: gpteacher("toolformer-dedupe-only-dataset.json")),
    ("gpteacher roleplay", lambda: gpteacher("roleplay-simple-deduped-roleplay-instruct.json")),
    ("alpaca demo", alpaca),
    ("hwu64", hwu64),
    ("t0 templates", t0),
    ("awesome-chatgpt-prompts", awesome),
]


# ---------------------------------------------------------------- data


def load_prompts(n: int) -> tuple[list[str], dict[str, int]]:
    """`n` distinct non-empty prompts from all sources, shuffled with a fixed seed."""
    pool: dict[str, str] = {}
    for name, load in SOURCES:
        for text in load():
            if text.strip():
                pool.setdefault(text, name)
    texts = list(pool)
    random.Random(SEED).shuffle(texts)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct prompts in {DATA}, need {n}")
    chosen = texts[:n]
    mix: dict[str, int] = {}
    for text in chosen:
        mix[pool[text]] = mix.get(pool[text], 0) + 1
    return chosen, mix


def embed(prompts: list[str], chunk: int = 2_000) -> tuple[Matrix, str]:
    """Embeddings through the on-disk cache, with a progress line per chunk."""
    embedder = CachedEmbedder(SentenceTransformerEmbedder())
    start = time.perf_counter()
    parts = []
    for lo in range(0, len(prompts), chunk):
        parts.append(embedder.embed(prompts[lo : lo + chunk]))
        status(
            f"embedded {min(lo + chunk, len(prompts)):,}/{len(prompts):,} "
            f"({embedder.misses:,} not cached, {time.perf_counter() - start:.0f} s)"
        )
    note = (
        f"embeddings: {embedder.model_id}, {embedder.hits:,} from cache, "
        f"{embedder.misses:,} computed, {time.perf_counter() - start:.0f} s"
    )
    embedder.close()
    return np.ascontiguousarray(np.vstack(parts), dtype=np.float32), note


# ---------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One way to assign all levels: a function per level, or one for all levels at once."""

    name: str
    levels: list[LevelFn]
    threads: int = THREADS
    all_levels: Callable[[Matrix], Ids] | None = None

    def assign(self, x: Matrix) -> Ids:
        if self.all_levels is not None:
            return self.all_levels(x)
        return np.stack([fn(x) for fn in self.levels], axis=1)


def searcher(index: faiss.Index) -> LevelFn:
    def run(x: Matrix) -> Ids:
        _, ids = index.search(x, 1)
        return ids[:, 0].astype(np.int64)

    return run


def flat(c: Matrix) -> faiss.Index:
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    return index


def hnsw(c: Matrix, ef: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(c.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(c)
    index.hnsw.efSearch = ef
    return index


def ivf(c: Matrix, nprobe: int) -> faiss.Index:
    nlist = max(2, round(len(c) ** 0.5))
    quantizer = faiss.IndexFlatIP(c.shape[1])
    index = faiss.IndexIVFFlat(quantizer, c.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = SEED
    index.train(c)
    index.add(c)
    index.nprobe = nprobe
    return index


@dataclass
class Descent:
    """Levels 2.. searched among the children of the query's top-`widen` level-1 cells."""

    coarse: faiss.Index
    widen: int
    # per fine level: per coarse cell, (global ids of its children, a flat index over them)
    children: list[list[tuple[Ids, faiss.Index | None]]] = field(default_factory=list)

    @classmethod
    def build(cls, centroids: Sequence[Matrix], widen: int) -> Descent:
        coarse = flat(centroids[0])
        out = cls(coarse, widen)
        for c in centroids[1:]:
            _, parent = coarse.search(c, 1)
            cells = []
            for cell in range(len(centroids[0])):
                ids = np.flatnonzero(parent[:, 0] == cell).astype(np.int64)
                cells.append((ids, flat(c[ids]) if len(ids) else None))
            out.children.append(cells)
        return out

    def top_cells(self, x: Matrix) -> Ids:
        _, ids = self.coarse.search(x, self.widen)
        return ids.astype(np.int64)

    def fine(self, x: Matrix, top: Ids, level: int) -> Ids:
        """Best child over the top cells, queries grouped by cell (one search per cell)."""
        cells = self.children[level - 1]
        best = np.full(len(x), -np.inf, dtype=np.float32)
        out = np.zeros(len(x), dtype=np.int64)
        for r in range(top.shape[1]):
            order = np.argsort(top[:, r], kind="stable")
            bounds = np.searchsorted(top[order, r], np.arange(len(cells) + 1))
            for cell, (lo, hi) in enumerate(itertools.pairwise(bounds)):
                ids, index = cells[cell]
                if lo == hi or index is None:
                    continue
                rows = order[lo:hi]
                score, local = index.search(x[rows], 1)
                better = score[:, 0] > best[rows]
                best[rows[better]] = score[better, 0]
                out[rows[better]] = ids[local[better, 0]]
        return out

    def level_fn(self, level: int) -> LevelFn:
        if level == 0:
            return lambda x: self.top_cells(x)[:, 0]
        return lambda x: self.fine(x, self.top_cells(x), level)

    def assign(self, x: Matrix) -> Ids:
        top = self.top_cells(x)
        fine = [self.fine(x, top, j) for j in range(1, len(self.children) + 1)]
        return np.stack([top[:, 0], *fine], axis=1)


def rust_descent(cs: Sequence[Matrix], widen: int, threads: int) -> Candidate:
    """`space.assign = "descent"`: one Rust call assigns all levels (on one core,
    whatever the thread count); the per-level rows time the same call."""
    search = CellSearch(list(cs), widen=widen)
    fns = [lambda x, j=j: search.assign(x)[:, j] for j in range(len(cs))]
    name = f"Rust descent, widen {widen} of {len(cs[-2])} cells (finest)"
    return Candidate(name, fns, threads, all_levels=search.assign)


def candidates(space: Space) -> tuple[list[Candidate], list[str]]:
    """All candidates, with a note on what building their indexes cost."""
    cs = space.centroids
    flats = [searcher(flat(c)) for c in cs]
    out = [
        Candidate("exact IndexFlatIP (baseline)", flats, threads=1),
        Candidate("exact IndexFlatIP (baseline)", flats),
    ]
    notes = []
    start = time.perf_counter()
    for ef in EF_SEARCH:
        out.append(
            Candidate(f"HNSWFlat M={HNSW_M} efSearch={ef}", [searcher(hnsw(c, ef)) for c in cs])
        )
    notes.append(
        f"HNSW builds ({len(EF_SEARCH)} x {len(cs)} levels): {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    nlist = max(2, round(len(cs[-1]) ** 0.5))
    for nprobe in NPROBE:
        fns = [*flats[:-1], searcher(ivf(cs[-1], nprobe))]
        out.append(Candidate(f"flat + IVFFlat nlist={nlist} nprobe={nprobe} (finest)", fns))
    notes.append(f"IVF trainings ({len(NPROBE)}): {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for nprobe in NPROBE:
        lists = InvertedFile(cs[-1], nlist, nprobe, seed=SEED)
        fns = [*flats[:-1], lists.search]
        out.append(Candidate(f"flat + batched IVF nlist={nlist} nprobe={nprobe} (finest)", fns))
    # what the service runs (space.assign = "ivf", space.threads = 1), against FAISS's IVF
    faiss8 = [*flats[:-1], searcher(ivf(cs[-1], SERVICE_NPROBE))]
    batched8 = [*flats[:-1], InvertedFile(cs[-1], nlist, SERVICE_NPROBE, seed=SEED).search]
    out.append(
        Candidate(f"flat + IVFFlat nlist={nlist} nprobe={SERVICE_NPROBE} (finest)", faiss8, 1)
    )
    out.append(
        Candidate(f"flat + batched IVF nlist={nlist} nprobe={SERVICE_NPROBE} (finest)", batched8, 1)
    )
    notes.append(f"batched IVF builds: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    for w in DESCENT_WIDEN:
        out.append(rust_descent(cs, w, THREADS))
    out.append(rust_descent(cs, SERVICE_WIDEN, 1))
    notes.append(f"Rust descent builds: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    for w in WIDEN:
        d = Descent.build(cs, w)
        fns = [d.level_fn(j) for j in range(len(cs))]
        out.append(
            Candidate(f"descent from top-{w} of {len(cs[0])} cells", fns, all_levels=d.assign)
        )
    notes.append(f"descent builds ({len(WIDEN)}): {time.perf_counter() - start:.2f} s")
    return out, notes


# ---------------------------------------------------------------- timing


def in_batches(fn: Callable[[Matrix], object], x: Matrix) -> Callable[[], None]:
    """Runs `fn` over `x` in batches, as the stream does for each polled batch."""

    def run() -> None:
        for lo in range(0, len(x), BATCH):
            fn(x[lo : lo + BATCH])

    return run


def best_of(run: Callable[[], object]) -> float:
    """Best wall time of REPS calls after one warm-up call."""
    run()
    best = float("inf")
    for _ in range(REPS):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Result:
    name: str
    threads: int
    seconds: float  # all levels
    per_level: list[float]
    agree: list[float]
    others: float

    def rate(self, n: int) -> float:
        return n / self.seconds

    def meets(self, n: int) -> bool:
        return (
            self.threads == THREADS
            and self.rate(n) >= TARGET_RATE
            and min(self.agree) >= TARGET_AGREE
        )


def measure(c: Candidate, x: Matrix, exact: Ids) -> Result:
    faiss.omp_set_num_threads(c.threads)
    with threadpool_limits(limits=c.threads, user_api="blas"):  # numpy's products too
        return measure_on(c, x, exact)


def measure_on(c: Candidate, x: Matrix, exact: Ids) -> Result:
    got = np.vstack([c.assign(x[lo : lo + BATCH]) for lo in range(0, len(x), BATCH)])
    agree = [float(np.mean(got[:, j] == exact[:, j])) for j in range(exact.shape[1])]

    def timed() -> tuple[float, list[float]]:
        total = best_of(in_batches(c.assign, x))
        return total, [best_of(in_batches(fn, x)) for fn in c.levels]

    (total, per_level), others = with_others(timed)
    return Result(c.name, c.threads, total, per_level, agree, others)


# ---------------------------------------------------------------- output


def rows(results: list[Result], n: int) -> list[list[str]]:
    base = {r.threads: r.seconds for r in results if "(baseline)" in r.name}
    out = []
    for r in results:
        out.append(
            [
                r.name,
                str(r.threads),
                f"{r.rate(n):,.0f}",
                *[f"{n / t:,.0f}" for t in r.per_level],
                f"{base[r.threads] / r.seconds:.2f}x",
                *[f"{a:.4f}" for a in r.agree],
                "yes" if r.meets(n) else "no",
                f"{r.others:.1f}",
            ]
        )
    return out


def recommendation(results: list[Result], n: int) -> str:
    ok = [r for r in results if r.meets(n)]
    target = (
        f">= {TARGET_RATE:,.0f} events/s for all levels on {THREADS} threads "
        f"and agreement >= {TARGET_AGREE} at every level"
    )
    if not ok:
        return f"recommendation: no candidate meets the target ({target})"
    best = max(ok, key=lambda r: r.rate(n))
    agree = ", ".join(f"{a:.4f}" for a in best.agree)
    return (
        f"target: {target}; met by {len(ok)} of {len(results)} rows.\n"
        f"recommendation (fastest that meets it): {best.name}, {best.rate(n):,.0f} events/s "
        f"on {best.threads} threads, agreement per level {agree}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8k prompts instead of 40k")
    args = ap.parse_args(argv)
    total = 8_000 if args.quick else 40_000
    if not DATA.is_dir():
        sys.exit(f"no prompt datasets at {DATA} (see the shared data README)")

    print(machine_line() + f", faiss {faiss.__version__}")
    print(f"mode: {'quick' if args.quick else 'full'}; best of {REPS} after one warm-up")
    print(load_line())
    status(f"loading {total:,} prompts from {DATA}")
    prompts, mix = load_prompts(total)
    emb, emb_note = embed(prompts)
    fit_x, held = emb[: total // 2], emb[total // 2 :]
    status(f"fitting a Space on {len(fit_x):,} embeddings, levels {LEVELS}")
    faiss.omp_set_num_threads(THREADS)
    start = time.perf_counter()
    space = Space.fit(fit_x, levels=LEVELS)
    fit_s = time.perf_counter() - start
    exact = space.assign(held)
    cands, build_notes = candidates(space)
    results = []
    for c in cands:
        status(f"{c.name}, {c.threads} thread(s)")
        results.append(measure(c, held, exact))

    n = len(held)
    lv = space.levels
    table(
        f"Cell assignment of {n:,} held-out real prompt embeddings (dim {space.dim}), "
        f"levels {lv}, batches of {BATCH}; 'vs exact' is against exact flat at the same threads",
        [
            "index",
            "threads",
            "events/s all",
            *[f"L{j + 1} ({k}) ev/s" for j, k in enumerate(lv)],
            "vs exact",
            *[f"agree L{j + 1}" for j in range(len(lv))],
            "meets",
            OTHERS,
        ],
        rows(results, n),
    )
    print("mix: " + ", ".join(f"{k} {v:,}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])))
    print(emb_note)
    print(f"Space.fit on {len(fit_x):,} embeddings: {fit_s:.1f} s, levels {lv}")
    print("; ".join(build_notes))
    print(recommendation(results, n))
    print(f"\nat the end, {load_line()}")


if __name__ == "__main__":
    main()
