"""Scaling curves of the Rust sketch store: events/s against batch size, and
against the number of active clients, on the same real prompts, with PNG plots.

Run from the repo root (writes out/bench/scaling_*.png):

    python bench/python/bench_scaling.py            # a minute or two on 2 cores
    python bench/python/bench_scaling.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sketch import (
    load_line,
    load_prompts,
    machine_line,
    new_store,
    random_cells,
    status,
    table,
)

from spanwatch._core import SketchStore

OUT = Path("out/bench")


def rate(store: SketchStore, ids: list[str], prompts: list[str], batch: int) -> float:
    """Events/s of feeding all events once in batches of `batch` (best of 3)."""
    rng = np.random.default_rng(0)
    cells = random_cells(rng, len(ids))
    ts = np.arange(len(ids), dtype=np.float64)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for lo in range(0, len(ids), batch):
            hi = lo + batch
            store.update(ids[lo:hi], prompts[lo:hi], cells[lo:hi], ts[lo:hi])
        best = min(best, time.perf_counter() - t0)
    return len(ids) / best


def by_batch(prompts: list[str], sizes: list[int]) -> list[tuple[int, float]]:
    ids = [f"client-{i % 10_000:08d}" for i in range(len(prompts))]
    out = []
    for b in sizes:
        status(f"batch size {b}")
        out.append((b, rate(new_store(), ids, prompts, b)))
    return out


def by_clients(prompts: list[str], counts: list[int]) -> list[tuple[int, float]]:
    out = []
    for c in counts:
        status(f"{c:,} active clients")
        store = new_store(max(c, 1))
        # fill the store first, so every event lands on a client it already holds
        fill = [f"client-{i:08d}" for i in range(c)]
        for lo in range(0, c, 20_000):
            part = fill[lo : lo + 20_000]
            store.update(
                part, part, random_cells(np.random.default_rng(1), len(part)), np.zeros(len(part))
            )
        ids = [f"client-{i % c:08d}" for i in range(len(prompts))]
        out.append((c, rate(store, ids, prompts, 1024)))
    return out


def plot(points: list[tuple[int, float]], xlabel: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events/s (real prompts, whole sketch update)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 60_000
    prompts = load_prompts(n)
    print(machine_line())
    print(load_line())
    batches = by_batch(prompts, [16, 64, 256, 1024, 4096, 16384])
    clients = by_clients(
        prompts, [100, 10_000, 100_000] if args.quick else [100, 10_000, 100_000, 1_000_000]
    )
    table(
        f"Events/s against batch size ({n:,} real prompts over 10,000 clients)",
        ["batch", "events/s"],
        [[f"{b:,}", f"{r:,.0f}"] for b, r in batches],
    )
    table(
        f"Events/s against active clients ({n:,} real prompts, batches of 1,024)",
        ["clients", "events/s", "vs 100 clients"],
        [[f"{c:,}", f"{r:,.0f}", f"{r / clients[0][1]:.2f}x"] for c, r in clients],
    )
    plot(
        batches,
        "events per update call",
        "Store throughput against batch size",
        OUT / "scaling_batch.png",
    )
    plot(
        clients,
        "active clients in the store",
        "Store throughput against active clients",
        OUT / "scaling_clients.png",
    )
    print(f"\nplots: {OUT / 'scaling_batch.png'}, {OUT / 'scaling_clients.png'}")
    print(f"at the end, {load_line()}")


if __name__ == "__main__":
    main()
