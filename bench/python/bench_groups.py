"""Cost of group detection: what publishing a summary costs a consumer, and
what the group detector pays per summary and per client, on real prompts.

Clients send 5 real prompts each (cells drawn at random). A fifth of them
share an org with 4 others. Campaign accounts (1% or 10%) come in orgs of
20, and their sequential evidence is set to half their alarm bound, so they
take part, groups alarm and the whole judging path runs.

    python bench/python/bench_groups.py            # about two minutes on 2 cores
    python bench/python/bench_groups.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sketch import load_line, load_prompts, machine_line, status, table

from spanwatch.calibrate import Calibration, group_sums
from spanwatch.config import load_settings
from spanwatch.detector import store_for
from spanwatch.groups import GroupDetector, Summary
from spanwatch.space import Space

LEVELS = [16, 256, 4096]
PER_CLIENT = 5
BATCH = 1000


def rss_bytes() -> int:
    """Resident memory, after handing freed heap pages back to the system
    (glibc), so memory freed by the setup is not counted as reused."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def setup(clients: int, every: int) -> tuple[Space, Calibration, list[Summary], float]:
    """A space, a calibration, every client's summary, and the consumer's
    cost of one summary in microseconds."""
    rng = np.random.default_rng(0)
    space = Space.fit(rng.normal(size=(20_000, 8)).astype(np.float32), levels=LEVELS, niter=5)
    rng = np.random.default_rng(1)
    cal = Calibration(
        every=10,
        signals=["coverage_16"],
        directions=["up"],
        levels=space.levels,
        tables=np.zeros((1, 1, 1)),
        sizes=np.ones((1, 1), dtype=np.int64),
        scales=np.ones((1, 1)),
        drift=1.0,
        threshold=1.0,
        target_fpr=0.005,
        stream_length=100,
        clients_ref=100,
        clients_threshold=100,
        envelope=np.ones(1),
        group_sums=group_sums(rng.exponential(0.02, 1000), 0.001),
    )
    cfg = load_settings(secret_key="bench", sketch={"levels": LEVELS})
    store = store_for(space, cfg, max_clients=clients + 1)
    prompts = load_prompts(min(clients * PER_CLIENT, 200_000))
    ids = [f"client-{i:08d}" for i in range(clients)]
    n = clients * PER_CLIENT
    order = np.repeat(np.arange(clients), PER_CLIENT)
    cells = np.stack([rng.integers(0, lv, n) for lv in space.levels], axis=1).astype(np.int64)
    for lo in range(0, n, 8192):
        sel = order[lo : lo + 8192]
        store.update(
            [ids[i] for i in sel],
            [prompts[(lo + j) % len(prompts)] for j in range(len(sel))],
            cells[lo : lo + 8192],
            np.arange(lo, lo + len(sel), dtype=np.float64),
        )
    campaign = set(range(0, clients, every))
    for i in campaign:
        store.set_evidence(ids[i], 0.5)
    camp = sorted(campaign)
    org = {}
    for j, i in enumerate(camp):
        org[i] = f"org=campaign-{j // 20}"
    others = [i for i in range(clients) if i not in campaign][: clients // 5]
    for j, i in enumerate(others):
        org[i] = f"org=shared-{j // 5}"
    start = time.perf_counter()
    blobs = [store.summary(c) for c in ids]
    per_summary = (time.perf_counter() - start) / clients * 1e6
    out = [(b, (org[i],) if i in org else ()) for i, b in enumerate(blobs)]
    return space, cal, out, per_summary


def run(clients: int, every: int) -> list[str]:
    status(f"{clients:,} clients, 1 in {every} taking part: building summaries")
    space, cal, summaries, per_summary = setup(clients, every)
    cfg = load_settings(secret_key="bench", sketch={"levels": LEVELS})
    before = rss_bytes()
    det = GroupDetector(space, cfg, cal)
    status(f"{clients:,} clients: feeding the group detector")
    alerts = 0
    start = time.perf_counter()
    for lo in range(0, len(summaries), BATCH):
        alerts += len(det.update(summaries[lo : lo + BATCH]))
    first = time.perf_counter() - start
    grown = rss_bytes() - before
    # a second pass: every client already known, as at steady state
    start = time.perf_counter()
    for lo in range(0, len(summaries), BATCH):
        alerts += len(det.update(summaries[lo : lo + BATCH]))
    second = time.perf_counter() - start
    return [
        f"{clients:,}",
        f"{1 / every:.0%}",
        f"{per_summary:.1f}",
        f"{len(summaries) / first:,.0f}",
        f"{len(summaries) / second:,.0f}",
        f"{grown / clients:,.0f}",
        f"{len(summaries[0][0]):,}",
        str(alerts),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k clients only")
    args = ap.parse_args()
    print(machine_line())
    print(load_line())
    sizes = ((10_000, 100),) if args.quick else ((10_000, 100), (100_000, 100), (100_000, 10))
    rows = [run(n, every) for n, every in sizes]
    table(
        "group detection cost (one process, summaries in batches of 1,000)",
        [
            "clients",
            "taking part",
            "summary() us",
            "new summaries/s",
            "known summaries/s",
            "bytes/client",
            "summary bytes",
            "group alerts",
        ],
        rows,
    )
    print(load_line())


if __name__ == "__main__":
    main()
