"""Side-by-side benchmarks of the Rust sketch store against plain Python baselines.

What is measured, in one run:

1. minhash: 128-permutation MinHash of word 3-shingles over real prompts (short CLINC/HWU64
   queries mixed with long instruction prompts, read at run time from ../shared/data).
   datasketch `MinHash` per prompt through its fastest path (`MinHash.generator`, which
   copies one initialized MinHash and calls `update_batch`) is timed on pre-built shingles
   (hashing only) and with the Python shingling included. spanwatch `SketchStore.update`
   is timed on the same prompts in batches, in child processes with RAYON_NUM_THREADS=1
   and RAYON_NUM_THREADS=<nproc>. Ratios use datasketch hashing only (the faster baseline).
2. coverage: numpy boolean arrays per level updated by fancy indexing, against the store
   fed one-word prompts. The store still does all of its sketch work per event (string id
   lookup, LRU, shingle hash, MinHash, bands, HLL, histogram, coverage), numpy only
   the coverage bits.
3. memory: RSS growth per client of a store holding N clients (fresh process per N),
   next to the store's own `bytes_per_client` estimate.
4. flood: 10M unique client ids into a store capped at 100k clients; RSS stays bounded.
5. strays: the same store with and without the stray tracker (`stray_dim=384`, int8
   reservoir of 64 and 32 open strays), fed the same real prompts with random unit
   embeddings (the tracker's cost does not depend on their values), 100 events per
   client so reservoirs fill; and `bytes_per_client` of both.

Timings use time.perf_counter, one warm-up, best of 3.

Run from the repo root:

    python bench/python/bench_sketch.py            # full run, a few minutes
    python bench/python/bench_sketch.py --quick    # smaller inputs, under a minute
    python bench/python/bench_sketch.py --only minhash
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import importlib.util
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from spanwatch._core import SketchStore

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LEVELS = [16, 256, 4096]
NUM_PERM = 128
REPS = 3
BATCH = 1024
ID_LEN = len("client-00000000")
TARGET = 30.0  # issue 2: the store's whole MinHash path, on 1 thread
TARGET_SIGNATURES = 50.0  # issue 5: MinHash signatures against datasketch's
OTHERS = "others' cpus"  # cpus kept busy by other processes while a row was measured
WORD = re.compile(r"[^\W_]+")

T = TypeVar("T")

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class Sizes:
    prompts: int
    minhash_clients: int
    coverage_events: int
    coverage_clients: int
    memory_clients: tuple[int, ...]


FULL = Sizes(20_000, 1_000, 200_000, 10_000, (10_000, 100_000, 1_000_000))
QUICK = Sizes(4_000, 1_000, 50_000, 10_000, (10_000, 100_000))


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    return (
        f"machine: {os.cpu_count()} cpus, {cpu_model()}, "
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.system()}"
    )


def cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies over all cpus, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def load_line(window: float = 1.0) -> str:
    """Load average and how many cpus sat idle over `window` seconds: timings are only
    trustworthy when no other process competes for the cores."""
    one, five, _ = os.getloadavg()
    try:
        idle0, total0 = cpu_ticks()
        time.sleep(window)
        idle1, total1 = cpu_ticks()
        idle = f"{(idle1 - idle0) / max(total1 - total0, 1) * (os.cpu_count() or 1):.1f}"
    except (OSError, ValueError, IndexError):
        idle = "?"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min); idle cpus over 1 s: {idle}"


def own_cpu() -> float:
    """CPU seconds used by this process and its finished children."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def with_others(run: Callable[[], T]) -> tuple[T, float]:
    """Calls `run`; also returns how many cpus other processes kept busy meanwhile."""
    idle0, total0 = cpu_ticks()
    own0, wall0 = own_cpu(), time.perf_counter()
    out = run()
    idle1, total1 = cpu_ticks()
    busy = (total1 - total0 - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK")
    others = max(busy - (own_cpu() - own0), 0.0) / (time.perf_counter() - wall0)
    return out, others


def status(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def read_json(path: Path) -> list[dict[str, str]]:
    return list(json.loads(path.read_text(encoding="utf-8")))


def with_input(rows: list[dict[str, str]]) -> list[str]:
    return [(r["instruction"] + "\n" + r.get("input", "")).strip() for r in rows]


def clinc() -> list[str]:
    data = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    return [text for split in data.values() for text, _intent in split]


def hwu64() -> list[str]:
    out = []
    for path in sorted((DATA / "hwu64_nlu_eval" / "KFold_1").glob("*/*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            out += [row["answer_from_user"] for row in csv.DictReader(f, delimiter=";")]
    return out


def gpteacher(name: str) -> list[str]:
    return with_input(read_json(DATA / "gpteacher" / name))


def alpaca() -> list[str]:
    return with_input(read_json(DATA / "llamafactory_alpaca_en_demo" / "alpaca_en_demo.json"))


def awesome() -> list[str]:
    path = DATA / "awesome_chatgpt_prompts" / "prompts_2026-03-20_pseudonymized.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return [row["prompt"] for row in csv.DictReader(f)]


def t0() -> list[str]:
    folder = DATA / "self_instruct" / "t0_train_50k_data_per_template_first20"
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            out += [json.loads(line)["prompt"] for line in f if line.strip()]
    return out


# Share of the prompt mix per source: half short assistant queries, half long prompts.
MIX: list[tuple[str, Callable[[], list[str]], float]] = [
    ("clinc150", clinc, 0.40),
    ("hwu64", hwu64, 0.10),
    ("gpteacher codegen", lambda: gpteacher("codegen-instruct.json"), 0.12),
    ("gpteacher toolformer", lambda: gpteacher("toolformer-dedupe-only-dataset.json"), 0.12),
    (
        "gpteacher roleplay",
        lambda: gpteacher("roleplay-simple-deduped-roleplay-instruct.json"),
        0.06,
    ),
    ("alpaca demo", alpaca, 0.05),
    ("awesome prompts", awesome, 0.05),
    ("t0 templates", t0, 0.10),
]


def load_prompts(n: int, seed: int = 0) -> list[str]:
    """A deterministic shuffled mix of n real prompts (sampled with replacement if short)."""
    rng = random.Random(seed)
    out: list[str] = []
    for _name, load, share in MIX:
        pool = [p for p in load() if p.strip()]
        k = round(n * share)
        out += rng.sample(pool, k) if k <= len(pool) else rng.choices(pool, k=k)
    rng.shuffle(out)
    return out[:n]


def shingles(text: str, k: int = 3) -> list[str]:
    """Word k-shingles as spanwatch builds them: lowercase alphanumeric runs."""
    words = WORD.findall(text.lower())
    if len(words) < k:
        return [" ".join(words)]
    return [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]


def encoded_shingles(prompts: Sequence[str]) -> list[list[bytes]]:
    return [[s.encode() for s in shingles(p)] for p in prompts]


# ---------------------------------------------------------------- timing


def best_of(
    run: Callable[[], object], reps: int = REPS, warmup: Callable[[], object] | None = None
) -> float:
    """Best wall time of `reps` calls after one warm-up call."""
    (warmup or run)()
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    run: Callable[[], object], warmup: Callable[[], object] | None = None
) -> tuple[float, float]:
    """(best time, other processes' cpus) of `run`, measured in this process."""
    return with_others(lambda: best_of(run, warmup=warmup))


def new_store(max_clients: int = 1_000_000) -> SketchStore:
    return SketchStore(secret=b"bench", levels=LEVELS, num_perm=NUM_PERM, max_clients=max_clients)


def random_cells(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([rng.integers(0, level, n) for level in LEVELS], axis=1).astype(np.int64)


@dataclass
class Events:
    ids: list[str]
    prompts: list[str]
    cells: np.ndarray
    ts: np.ndarray


def make_events(prompts: list[str], clients: int, seed: int = 1) -> Events:
    rng = np.random.default_rng(seed)
    n = len(prompts)
    ids = [f"client-{i:08d}" for i in rng.integers(0, clients, n)]
    return Events(ids, prompts, random_cells(rng, n), np.arange(n, dtype=np.float64))


def feed(store: SketchStore, ev: Events, batch: int = BATCH) -> None:
    for lo in range(0, len(ev.ids), batch):
        hi = lo + batch
        store.update(ev.ids[lo:hi], ev.prompts[lo:hi], ev.cells[lo:hi], ev.ts[lo:hi])


def time_store(ev: Events) -> float:
    """Best time to feed all events into a fresh store (store creation not timed)."""
    best = float("inf")
    for rep in range(REPS + 1):  # rep 0 is the warm-up
        store = new_store()
        gc.collect()
        start = time.perf_counter()
        feed(store, ev)
        took = time.perf_counter() - start
        del store
        if rep > 0:
            best = min(best, took)
    return best


# ---------------------------------------------------------------- child processes


def run_child(kind: str, threads: int, quick: bool, extra: Sequence[str] = ()) -> dict[str, float]:
    """Runs this script as `--child kind` with RAYON_NUM_THREADS set; returns its JSON."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *extra]
    if quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child_minhash(sizes: Sizes) -> dict[str, float]:
    prompts = load_prompts(sizes.prompts)
    return {"seconds": time_store(make_events(prompts, sizes.minhash_clients))}


def child_signatures(sizes: Sizes) -> dict[str, float]:
    """`store.minhash` on the same prompts in the same batches: signatures only."""
    prompts = load_prompts(sizes.prompts)
    store = new_store()

    def run() -> None:
        for lo in range(0, len(prompts), BATCH):
            store.minhash(prompts[lo : lo + BATCH])

    return {"seconds": best_of(run)}


def child_coverage(sizes: Sizes) -> dict[str, float]:
    ev = coverage_events(sizes)
    return {"seconds": time_store(ev)}


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def trimmed_rss() -> int:
    """RSS after handing freed heap pages back to the OS, so batch buffers do not count."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def child_memory(clients: int, per_client: int = 5, chunk: int = 2_000) -> dict[str, float]:
    """RSS growth of a store holding `clients` clients, each given `per_client` events."""
    rng = np.random.default_rng(2)
    warm = new_store(10)  # start rayon and numpy before the baseline
    warm.update(["w"], ["w"], random_cells(rng, 1), np.zeros(1))
    del warm
    store = new_store(max(clients, 1))
    before = trimmed_rss()
    for lo in range(0, clients, chunk):
        n = min(chunk, clients - lo)
        ids = [f"client-{i:08d}" for i in range(lo, lo + n)] * per_client
        prompts = [f"w{j}" for j in range(len(ids))]
        cells = random_cells(rng, len(ids))
        store.update(ids, prompts, cells, np.zeros(len(ids)))
        del ids, prompts, cells
    after = trimmed_rss()
    return {
        "clients": float(len(store)),
        "rss_growth": float(after - before),
        "estimate": float(store.bytes_per_client(ID_LEN)),
    }


def child_flood(ids: int, cap: int, chunk: int = 20_000) -> dict[str, float]:
    """A client-id flood: `ids` unique client ids, one event each, into a
    store capped at `cap` clients. RSS growth is sampled as the flood goes."""
    rng = np.random.default_rng(3)
    warm = new_store(10)
    warm.update(["w"], ["w"], random_cells(rng, 1), np.zeros(1))
    del warm
    store = new_store(cap)
    before = trimmed_rss()
    peak = 0
    t0 = time.perf_counter()
    for lo in range(0, ids, chunk):
        n = min(chunk, ids - lo)
        batch = [f"flood-{i:09d}" for i in range(lo, lo + n)]
        store.update(batch, batch, random_cells(rng, n), np.zeros(n))
        if (lo // chunk) % 25 == 0:
            peak = max(peak, rss_bytes() - before)
    seconds = time.perf_counter() - t0
    peak = max(peak, rss_bytes() - before)
    return {
        "ids": float(ids),
        "held": float(len(store)),
        "evictions": float(store.evictions),
        "peak_growth": float(peak),
        "cap_estimate": float(cap * store.bytes_per_client(15)),
        "seconds": seconds,
    }


# ---------------------------------------------------------------- benchmarks


def ds_hash(enc: list[list[bytes]]) -> None:
    """datasketch's fastest path: one initialized MinHash copied per prompt, update_batch."""
    from datasketch import MinHash

    for _ in MinHash.generator(enc, num_perm=NUM_PERM):
        pass


def ds_total(prompts: list[str]) -> None:
    ds_hash(encoded_shingles(prompts))


def ds_naive(enc: list[list[bytes]]) -> None:
    from datasketch import MinHash

    for sh in enc:
        MinHash(num_perm=NUM_PERM).update_batch(sh)


def shingle_check(prompts: list[str], pairs: int = 400) -> str:
    """Checks that spanwatch and the Python shingler build the same sets: the store's Jaccard
    estimate of (prompt, its first 70% of words) against the exact Jaccard of Python shingles."""
    long = [p for p in prompts if len(shingles(p)) > 12][:pairs]
    cut = [" ".join(p.split()[: int(len(p.split()) * 0.7)]) for p in long]
    store = new_store()
    ids = [f"{side}{i}" for i in range(len(long)) for side in "ab"]
    texts = [t for pair in zip(long, cut, strict=True) for t in pair]
    store.update(ids, texts, random_cells(np.random.default_rng(4), len(ids)), np.zeros(len(ids)))
    diffs = []
    for i, (p, q) in enumerate(zip(long, cut, strict=True)):
        a, b = set(shingles(p)), set(shingles(q))
        diffs.append(store.jaccard(f"a{i}", f"b{i}") - len(a & b) / len(a | b))
    d = np.array(diffs)
    return (
        f"same-shingles check over {len(d)} prompt pairs: spanwatch Jaccard estimate minus exact "
        f"Jaccard of the Python shingles, mean {d.mean():+.3f}, mean |diff| {np.abs(d).mean():.3f} "
        "(128-permutation noise alone is ~0.03)"
    )


def bench_minhash(sizes: Sizes, quick: bool) -> tuple[list[str], list[list[str]]]:
    status(f"loading {sizes.prompts} prompts from {DATA}")
    prompts = load_prompts(sizes.prompts)
    enc = encoded_shingles(prompts)
    n_sh = sum(len(s) for s in enc)
    chars = [len(p) for p in prompts]
    notes = [
        f"prompts: {len(prompts):,}, {n_sh:,} shingles, chars per prompt median "
        f"{int(np.median(chars))}, mean {np.mean(chars):.0f}, max {max(chars):,}",
        "mix: " + ", ".join(f"{share:.0%} {name}" for name, _load, share in MIX),
        shingle_check(prompts),
    ]
    status("datasketch, hashing only")
    t_hash = measure(lambda: ds_hash(enc), lambda: ds_hash(enc[:500]))
    status("datasketch, shingling + hashing")
    t_total = measure(lambda: ds_total(prompts), lambda: ds_total(prompts[:500]))
    status("datasketch, new MinHash per prompt")
    t_naive = measure(lambda: ds_naive(enc), lambda: ds_naive(enc[:500]))
    cores = os.cpu_count() or 1
    status("spanwatch, 1 thread")
    t_one = with_others(lambda: run_child("minhash", 1, quick)["seconds"])
    status(f"spanwatch, {cores} threads")
    t_all = with_others(lambda: run_child("minhash", cores, quick)["seconds"])
    status("spanwatch signatures only, 1 thread")
    s_one = with_others(lambda: run_child("signatures", 1, quick)["seconds"])
    status(f"spanwatch signatures only, {cores} threads")
    s_all = with_others(lambda: run_child("signatures", cores, quick)["seconds"])
    base = t_hash[0]
    met = "met" if base / t_one[0] >= TARGET else "NOT met"
    notes.append(
        f"store.update against the baseline, target >= {TARGET:.0f}x on 1 thread: {met} "
        f"({base / t_one[0]:.1f}x on 1 thread, {base / t_all[0]:.1f}x on {cores} threads)"
    )
    met = "met" if base / s_all[0] >= TARGET_SIGNATURES else "NOT met"
    notes.append(
        f"signatures (store.minhash) against the baseline, target >= {TARGET_SIGNATURES:.0f}x: "
        f"{met} ({base / s_one[0]:.1f}x on 1 thread, {base / s_all[0]:.1f}x on {cores} threads)"
    )

    n = len(prompts)
    rows = [
        ("datasketch: update_batch on shingles (baseline)", 1, t_hash),
        ("datasketch: Python shingling + update_batch", 1, t_total),
        ("datasketch: MinHash(num_perm=128) per prompt", 1, t_naive),
        ("spanwatch: store.update", 1, t_one),
        ("spanwatch: store.update", cores, t_all),
        ("spanwatch: store.minhash (signatures only)", 1, s_one),
        ("spanwatch: store.minhash (signatures only)", cores, s_all),
    ]
    return notes, [
        [
            name,
            str(k),
            f"{t:.3f}",
            f"{n / t:,.0f}",
            f"{n / t / k:,.0f}",
            f"{n_sh / t:,.0f}",
            f"{base / t:.1f}x",
            f"{others:.1f}",
        ]
        for name, k, (t, others) in rows
    ]


def coverage_events(sizes: Sizes) -> Events:
    words = [f"w{i}" for i in range(sizes.coverage_events)]
    return make_events(words, sizes.coverage_clients, seed=3)


def numpy_coverage(idx: np.ndarray, cells: np.ndarray, clients: int) -> None:
    cov = [np.zeros((clients, level), dtype=np.bool_) for level in LEVELS]
    for lo in range(0, len(idx), BATCH):
        rows, cols = idx[lo : lo + BATCH], cells[lo : lo + BATCH]
        for level, bits in enumerate(cov):
            bits[rows, cols[:, level]] = True


def numpy_coverage_ids(ids: list[str], cells: np.ndarray, clients: int) -> None:
    """Same, with a dict from string client id to row (as a service would need)."""
    index: dict[str, int] = {}
    cov = [np.zeros((clients, level), dtype=np.bool_) for level in LEVELS]
    for lo in range(0, len(ids), BATCH):
        rows = np.fromiter(
            (index.setdefault(c, len(index)) for c in ids[lo : lo + BATCH]), dtype=np.intp
        )
        cols = cells[lo : lo + BATCH]
        for level, bits in enumerate(cov):
            bits[rows, cols[:, level]] = True


def bench_coverage(sizes: Sizes, quick: bool) -> list[list[str]]:
    ev = coverage_events(sizes)
    idx = np.array([int(c.rsplit("-", 1)[1]) for c in ev.ids], dtype=np.intp)
    k = sizes.coverage_clients
    status("numpy coverage, integer rows")
    t_np = measure(lambda: numpy_coverage(idx, ev.cells, k))
    status("numpy coverage, string ids via dict")
    t_np_ids = measure(lambda: numpy_coverage_ids(ev.ids, ev.cells, k))
    cores = os.cpu_count() or 1
    status("spanwatch, 1 thread")
    t_one = with_others(lambda: run_child("coverage", 1, quick)["seconds"])
    status(f"spanwatch, {cores} threads")
    t_all = with_others(lambda: run_child("coverage", cores, quick)["seconds"])
    n = len(ev.ids)
    rows = [
        ("numpy: coverage bits only, integer rows (baseline)", 1, t_np),
        ("numpy: coverage bits only, dict of string ids", 1, t_np_ids),
        ("spanwatch: store.update, whole sketch", 1, t_one),
        ("spanwatch: store.update, whole sketch", cores, t_all),
    ]
    return [
        [name, str(k), f"{t:.3f}", f"{n / t:,.0f}", f"{t_np[0] / t:.2f}x", f"{others:.1f}"]
        for name, k, (t, others) in rows
    ]


def bench_memory(sizes: Sizes) -> list[list[str]]:
    rows = []
    for n in sizes.memory_clients:
        status(f"memory, {n:,} clients")
        got = run_child("memory", os.cpu_count() or 1, False, ["--clients", str(n)])
        per = got["rss_growth"] / got["clients"]
        est = got["estimate"]
        rows.append(
            [
                f"{n:,}",
                f"{got['rss_growth'] / 2**20:,.1f}",
                f"{per:,.0f}",
                f"{est:,.0f}",
                f"{per / est:.2f}",
            ]
        )
    return rows


def bench_flood(quick: bool) -> list[list[str]]:
    ids, cap = (1_000_000, 50_000) if quick else (10_000_000, 100_000)
    status(f"client-id flood, {ids:,} unique ids into a store capped at {cap:,}")
    got = run_child("flood", os.cpu_count() or 1, quick, ["--clients", str(cap)])
    return [
        [
            f"{got['ids']:,.0f}",
            f"{cap:,}",
            f"{got['held']:,.0f}",
            f"{got['evictions']:,.0f}",
            f"{got['peak_growth'] / 2**20:,.1f}",
            f"{got['cap_estimate'] / 2**20:,.1f}",
            f"{got['ids'] / got['seconds']:,.0f}",
        ]
    ]


def bench_strays(sizes: Sizes) -> list[list[str]]:
    prompts = load_prompts(sizes.prompts)
    ev = make_events(prompts, max(len(prompts) // 100, 1))
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(len(prompts), 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows, base = [], 0.0
    for label, dim in (("store", 0), ("store + strays", 384)):
        status(f"strays: {label}")

        def run(dim: int = dim) -> None:
            store = SketchStore(secret=b"bench", levels=LEVELS, num_perm=NUM_PERM, stray_dim=dim)
            for lo in range(0, len(ev.ids), BATCH):
                hi = lo + BATCH
                e = emb[lo:hi] if dim else None
                store.update(ev.ids[lo:hi], ev.prompts[lo:hi], ev.cells[lo:hi], ev.ts[lo:hi], 0, e)

        t, others = measure(run)
        base = base or t
        per = SketchStore(levels=LEVELS, num_perm=NUM_PERM, stray_dim=dim).bytes_per_client(ID_LEN)
        rows.append(
            [
                label,
                f"{t:.3f}",
                f"{len(prompts) / t:,.0f}",
                f"{base / t:.2f}",
                f"{per:,}",
                f"{others:.1f}",
            ]
        )
    return rows


# ---------------------------------------------------------------- output


def table(title: str, head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    print(f"\n{title}")
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, skip 1M clients")
    ap.add_argument("--only", choices=["minhash", "coverage", "memory", "flood", "strays"])
    ap.add_argument(
        "--child",
        choices=["minhash", "signatures", "coverage", "memory", "flood"],
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--clients", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    want = [args.only] if args.only else ["minhash", "coverage", "memory", "flood", "strays"]

    if args.child:
        children = {
            "minhash": lambda: child_minhash(sizes),
            "signatures": lambda: child_signatures(sizes),
            "coverage": lambda: child_coverage(sizes),
            "memory": lambda: child_memory(args.clients),
            "flood": lambda: child_flood(
                1_000_000 if args.quick else 10_000_000, args.clients or 100_000
            ),
        }
        print(json.dumps(children[args.child]()))
        return

    if {"minhash", "strays"} & set(want) and not DATA.is_dir():
        sys.exit(f"no prompt datasets at {DATA} (see the shared data README)")
    if "minhash" in want and importlib.util.find_spec("datasketch") is None:
        sys.exit("the minhash benchmark needs datasketch: pip install -e '.[dev]'")
    print(machine_line())
    print(f"mode: {'quick' if args.quick else 'full'}; best of {REPS} after one warm-up")
    print(load_line())
    if "minhash" in want:
        notes, rows = bench_minhash(sizes, args.quick)
        table(
            f"MinHash, {sizes.prompts:,} real prompts, num_perm={NUM_PERM}, word 3-shingles, "
            f"spanwatch in batches of {BATCH} over {sizes.minhash_clients:,} clients",
            [
                "path",
                "threads",
                "seconds",
                "prompts/s",
                "per core",
                "shingles/s",
                "vs baseline",
                OTHERS,
            ],
            rows,
        )
        print("\n".join(notes))
    if "coverage" in want:
        rows = bench_coverage(sizes, args.quick)
        table(
            f"Coverage update, {sizes.coverage_events:,} events over "
            f"{sizes.coverage_clients:,} clients, levels {LEVELS}, batches of {BATCH}, "
            "one-word prompts",
            ["path", "threads", "seconds", "events/s", "vs baseline", OTHERS],
            rows,
        )
    if "memory" in want:
        rows = bench_memory(sizes)
        table(
            f"Memory per client (fresh process per N, 5 events per client, {ID_LEN}-byte ids, "
            "RSS after malloc_trim)",
            ["clients", "RSS growth MiB", "RSS bytes/client", "bytes_per_client()", "RSS/est"],
            rows,
        )
    if "flood" in want:
        table(
            "Client-id flood (unique ids, one event each, fresh process; RSS growth sampled)",
            [
                "ids sent",
                "cap",
                "clients held",
                "evictions",
                "peak RSS growth MiB",
                "cap x bytes_per_client() MiB",
                "events/s",
            ],
            bench_flood(args.quick),
        )
    if "strays" in want:
        table(
            f"Stray tracker, {sizes.prompts:,} real prompts over {sizes.prompts // 100:,} clients, "
            f"batches of {BATCH}, all threads",
            ["path", "seconds", "events/s", "vs store", "bytes_per_client()", OTHERS],
            bench_strays(sizes),
        )
    print(f"\nat the end, {load_line()}")


if __name__ == "__main__":
    main()
