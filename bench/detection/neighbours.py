"""What one stray statistic over exact neighbours catches on its own.

The stray tracker (`sketch.strays`) keeps a reservoir of 64 past queries per
client, and its `stray_mass` enters the CUSUM with the other signals under
one threshold. This script asks how far a single statistic could go with
every past query kept and nothing else in the way: for each query, the
cosine similarity of its k-th nearest other query of the same client, and
the client's *stray excess* at a checkpoint, the sum over its queries so far
of how far that similarity falls short of 1 - radius.

It builds the eval's streams as `draws.py` does, embeds their texts (no
sketches, no space), and then, for `--draws` calibrations of `--ref` +
`--ref` benign clients drawn from the calibration clients, measures two ways
to alarm on each statistic at `--target-fpr`:

- `end`: one look at the last checkpoint (a fixed window of the whole
  stream); the threshold is the conformal quantile of the calibration
  clients' values there.
- `every`: a look every 10 queries; a client's level at each checkpoint is
  its excess over the reference clients' `--level-quantile` at that count,
  its peak the highest level over its stream, and the threshold the
  conformal quantile of the calibration clients' peaks (cross-fitted: each
  half against the other's quantiles), as the scoring's threshold is.

With `--prada` it measures one more statistic the same two ways, in the
manner of PRADA (Juuti et al., 2019): each query's cosine distance to the
nearest earlier query of the client, and 1 - W of the Shapiro-Wilk test on
those distances so far. PRADA alarms when W falls (the distances stop
looking normal), so a high 1 - W is the suspicious side here too.

It prints, per statistic and way, the mean and range over the draws of the
held-out benign clients alerted, of each attack kind alerted and of the
harvesters' median queries to detect (`every` only), then each statistic's
quartiles at the last checkpoint by kind of client.

    python bench/detection/neighbours.py --seed 7 [--prada]

About 4 minutes at 200 queries, most of it embedding.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import numpy.typing as npt
from draws import add_stream_flags, build  # the streams draws.py builds
from scipy.stats import shapiro
from tqdm import tqdm

from spanwatch.config import load_settings
from spanwatch.detector import Detector
from spanwatch.evaluate import embed_texts
from spanwatch.thresholds import conformal_quantile

KINDS = (
    "harvester",
    "mixed_0.05",
    "mixed_0.10",
    "mixed_0.25",
    "mixed_same_0.05",
    "mixed_same_0.10",
)
EVERY = 10
F64 = npt.NDArray[np.float64]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stream_flags(ap)
    ap.add_argument(
        "--stat",
        action="append",
        metavar="K:RADIUS",
        help="k-th neighbour and radius (cosine distance) of a statistic; repeatable "
        "(default: 1:0.8, the tracker's radius, 1:0.75, 2:0.8, 2:0.75)",
    )
    ap.add_argument(
        "--prada", action="store_true", help="also measure a PRADA-style normality statistic"
    )
    ap.add_argument("--level-quantile", type=float, default=0.99)
    ap.add_argument("--target-fpr", type=float, default=0.005)
    args = ap.parse_args()
    stats = [_parse_stat(ap, s) for s in (args.stat or ["1:0.8", "1:0.75", "2:0.8", "2:0.75"])]
    if 2 * args.ref > args.calibration_clients:
        ap.error("--ref must be at most half of --calibration-clients")
    if args.draws < 1 or not 0 < args.level_quantile < 1:
        ap.error("--draws must be at least 1 and --level-quantile in (0, 1)")
    os.environ.setdefault("SPANWATCH_SECRET_KEY", "detection-bench")
    settings = load_settings(None)
    built = build(args)
    with tqdm(total=len(built.texts), desc="embed", unit="text") as bar:
        emb = embed_texts(Detector(settings).embedder, built.texts, bar.update)
    emb = emb.astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    names = [f"{_ordinal(k)} neighbour beyond {radius:g}" for k, radius in stats]
    if args.prada:
        names.append("PRADA 1 - W")
    excess = {
        id(s): _columns(emb[s.texts], stats, args.prada)
        for s in tqdm(built.streams, desc="neighbours", unit="stream")
    }
    cal = [excess[id(s)] for s in built.streams if s.kind == "calibration"]
    scored: dict[str, list[F64]] = {}
    for s in built.streams:
        if s.kind == "benign" or s.kind in KINDS:
            scored.setdefault(s.kind, []).append(excess[id(s)])
    rng = np.random.default_rng([args.seed, 2])  # the draws of draws.py
    table: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.draws):
        pick = rng.permutation(len(cal))
        ref = np.stack([cal[j] for j in pick[: args.ref]])
        thr = np.stack([cal[j] for j in pick[args.ref : 2 * args.ref]])
        for j, name in enumerate(names):
            for way, row in (
                ("end", _one_look(ref, thr, scored, j, args.target_fpr)),
                ("every", _every_look(ref, thr, scored, j, args.target_fpr, args.level_quantile)),
            ):
                for key, v in row.items():
                    table.setdefault(f"{name}, {way}", {}).setdefault(key, []).append(v)
    print(
        f"\nseed {args.seed}, {args.stream_length} queries, {args.draws} calibrations of "
        f"{args.ref} + {args.ref} clients drawn from {args.calibration_clients}; "
        f"{args.clients} held-out benign clients, {args.attackers} per attack kind; "
        f"target {args.target_fpr:.2%}; means over the draws (min-max)\n"
    )
    keys = ["benign", *KINDS, "harvester median queries"]
    print("| statistic, look | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, row in table.items():
        cells = []
        for key in keys:
            a = np.array(row.get(key, [np.nan]), dtype=np.float64)
            if np.isnan(a).all():
                cells.append("-")
            elif key.endswith("queries"):
                cells.append(f"{np.nanmean(a):.0f} ({np.nanmin(a):.0f}-{np.nanmax(a):.0f})")
            else:
                ends = ".1%" if np.max(a) < 0.1 else ".0%"  # 0.5% is not "0%"
                cells.append(f"{np.mean(a):.1%} ({np.min(a):{ends}}-{np.max(a):{ends}})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nMedian at the last checkpoint (25th-75th percentile):\n")
    kinds = ["benign", *KINDS]
    print("| statistic | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for j, name in enumerate(names):
        cells = []
        for kind in kinds:
            q1, q2, q3 = np.percentile([x[-1, j] for x in scored[kind]], [25, 50, 75])
            cells.append(f"{q2:.3g} ({q1:.3g}-{q3:.3g})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _parse_stat(ap: argparse.ArgumentParser, text: str) -> tuple[int, float]:
    try:
        k, radius = text.split(":")
        out = int(k), float(radius)
    except ValueError:
        ap.error(f"--stat takes K:RADIUS, got {text!r}")
    if out[0] < 1 or not 0 < out[1] < 2:
        ap.error(f"--stat needs K >= 1 and a radius in (0, 2), got {text!r}")
    return out


def _columns(x: npt.NDArray[np.float32], stats: list[tuple[int, float]], prada: bool) -> F64:
    out = stray_excess(x, stats)
    return np.column_stack([out, prada_statistic(x)]) if prada else out


def prada_statistic(x: npt.NDArray[np.float32]) -> F64:
    """(checkpoints,): at every EVERY-th query of a stream of unit vectors
    `x`, 1 - W of the Shapiro-Wilk test on each query's cosine distance to
    its nearest earlier query (0 while fewer than 3 distances or all equal)."""
    n = len(x) - len(x) % EVERY
    nearest = np.array([1.0 - float((x[:i] @ x[i]).max()) for i in range(1, n)])
    out = np.zeros(n // EVERY)
    for c in range(EVERY, n + 1, EVERY):
        d = nearest[: c - 1]
        if len(d) >= 3 and np.ptp(d) > 1e-9:
            out[c // EVERY - 1] = 1.0 - float(shapiro(d).statistic)
    return out


def stray_excess(x: npt.NDArray[np.float32], stats: list[tuple[int, float]]) -> F64:
    """(checkpoints, statistics): at every EVERY-th query of a stream of
    unit vectors `x`, for each (k, radius) the sum over the queries so far
    of max(0, 1 - radius - similarity of the k-th nearest other query).
    The k nearest similarities of each query are kept as queries arrive."""
    kmax = max(k for k, _ in stats)
    n = len(x) - len(x) % EVERY
    top = np.full((n, kmax), -1.0)  # -1: no neighbour yet, the farthest there is
    out = np.zeros((n // EVERY, len(stats)))
    for c in range(EVERY, n + 1, EVERY):
        a = c - EVERY
        sims = (x[a:c] @ x[:c].T).astype(np.float64)  # new queries against all so far
        sims[np.arange(EVERY), np.arange(a, c)] = -np.inf  # not their own neighbour
        # earlier queries gain the new ones as candidates; new ones see all
        old = np.concatenate([top[:a], sims[:, :a].T], axis=1)
        top[:a] = -np.sort(-old, axis=1)[:, :kmax]
        new = -np.sort(-sims, axis=1)[:, :kmax]
        top[a:c] = np.maximum(new, -1.0)
        for j, (k, radius) in enumerate(stats):
            out[c // EVERY - 1, j] = np.maximum(0.0, 1.0 - radius - top[:c, k - 1]).sum()
    return out


def _one_look(
    ref: F64, thr: F64, scored: dict[str, list[F64]], j: int, target: float
) -> dict[str, float]:
    """Alarms from one look at the last checkpoint."""
    values = np.concatenate([ref[:, -1, j], thr[:, -1, j]])
    t = conformal_quantile(values, target)
    return {kind: float(np.mean([x[-1, j] >= t for x in xs])) for kind, xs in scored.items()}


def _every_look(
    ref: F64, thr: F64, scored: dict[str, list[F64]], j: int, target: float, q: float
) -> dict[str, float]:
    """Alarms from a look at every checkpoint, each client's excess over the
    benign q quantile at that count; its peak over the stream against the
    conformal quantile of the calibration clients' cross-fitted peaks."""
    level_ref = np.quantile(ref[:, :, j], q, axis=0) + 1e-3
    level_thr = np.quantile(thr[:, :, j], q, axis=0) + 1e-3
    peaks = np.concatenate(
        [(thr[:, :, j] / level_ref).max(axis=1), (ref[:, :, j] / level_thr).max(axis=1)]
    )
    t = conformal_quantile(peaks, target)
    row: dict[str, float] = {}
    for kind, xs in scored.items():
        first = [np.flatnonzero(x[:, j] / level_ref >= t) for x in xs]
        row[kind] = float(np.mean([len(f) > 0 for f in first]))
        if kind == "harvester":
            at = [(f[0] + 1) * EVERY for f in first if len(f)]
            row["harvester median queries"] = float(np.median(at)) if at else math.nan
    return row


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


if __name__ == "__main__":
    main()
