"""How much the eval's numbers move with the calibration clients drawn.

`spanwatch eval` calibrates once, on the first half of its calibration
clients for the reference tables and the second for the threshold. This
script builds the same streams (with more calibration clients), sketches them
once, then calibrates `--draws` times on random disjoint sets of `--ref` +
`--ref` of them and scores the same held-out benign clients and attackers
against each calibration. It prints, per metric, the mean, the standard
deviation and the range over the draws. Compare a change to the scoring by
this spread, not by one eval run.

    python bench/detection/draws.py --seed 7 --stream-length 200

Flags as run.sh's; `--calibration-clients` (2000) is the pool the draws take
from. About 3 minutes at 200 queries once the texts are embedded.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from spanwatch.calibrate import fit_calibration
from spanwatch.config import load_settings
from spanwatch.detector import Detector
from spanwatch.evaluate import _auc, _first_alert, build_streams, load_pool, sketch_streams

KINDS = ("harvester", "mixed_0.05", "mixed_0.10", "mixed_0.25", "mixed_same_0.10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pools", default="out/pools")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stream-length", type=int, default=200)
    ap.add_argument("--clients", type=int, default=400, help="held-out benign clients")
    ap.add_argument("--calibration-clients", type=int, default=2000)
    ap.add_argument("--attackers", type=int, default=100)
    ap.add_argument("--ref", type=int, default=400, help="clients per half of one calibration")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--target-fpr", type=float, default=0.005)
    args = ap.parse_args()
    if 2 * args.ref > args.calibration_clients:
        ap.error("--ref must be at most half of --calibration-clients")
    os.environ.setdefault("SPANWATCH_SECRET_KEY", "detection-bench")
    settings = load_settings(None)
    pools = {n: load_pool(f"{args.pools}/{n}.jsonl") for n in ("benign", "attack", "templates")}
    built = build_streams(
        np.random.default_rng(args.seed), pools["benign"], pools["attack"],
        templates=pools["templates"], stream_length=args.stream_length,
        n_clients=args.clients, n_calibration=args.calibration_clients,
        n_attackers=args.attackers, seed=args.seed,
    )  # fmt: skip
    print(f"sketching {len(built.streams)} streams ...", flush=True)
    sk = sketch_streams(built, Detector(settings).embedder, settings)
    cal_rows = [r for s, r in zip(built.streams, sk.rows, strict=True) if s.kind == "calibration"]
    pairs = list(zip(built.streams, sk.rows, strict=True))
    scored = [(s.kind, r) for s, r in pairs if s.kind != "calibration"]
    rng = np.random.default_rng([args.seed, 2])
    table: dict[str, list[float]] = {}
    for i in range(args.draws):
        pick = rng.permutation(len(cal_rows))
        cal = fit_calibration(
            sk.signals,
            [cal_rows[j] for j in pick[: args.ref]],
            [cal_rows[j] for j in pick[args.ref : 2 * args.ref]],
            every=settings.scoring.checkpoint_every,
            target_fpr=args.target_fpr,
            drift=settings.scoring.drift,
            max_surprise=settings.scoring.max_surprise,
        )
        peaks: dict[str, list[float]] = {}
        first: dict[str, list[float]] = {}
        for kind, rows in scored:
            pk, ft, _, _ = _first_alert(cal, sk.signals, rows)
            peaks.setdefault(kind, []).append(pk)
            first.setdefault(kind, []).append(ft)
        benign = np.array(peaks["benign"])
        row = {"threshold": cal.threshold}
        row["benign alerted"] = float(np.mean(benign >= cal.threshold))
        for kind in KINDS:
            pk_k, ft_k = np.array(peaks[kind]), np.array(first[kind])
            row[f"{kind} alerted"] = float(np.mean(~np.isnan(ft_k)))
            row[f"{kind} AUC"] = _auc(benign, pk_k)
        ft_h = np.array(first["harvester"])
        hit = ft_h[~np.isnan(ft_h)]
        row["harvester median queries"] = float(np.median(hit)) if len(hit) else np.nan
        for k, v in row.items():
            table.setdefault(k, []).append(v)
        print(f"draw {i + 1} of {args.draws}: threshold {cal.threshold:.2f}", flush=True)
    print(
        f"\nseed {args.seed}, {args.stream_length} queries, {args.draws} calibrations of "
        f"{args.ref} + {args.ref} clients drawn from {args.calibration_clients}; "
        f"{args.clients} held-out benign clients, {args.attackers} per attack kind\n"
    )
    print("| metric | mean | sd | min | max |")
    print("|---|---:|---:|---:|---:|")
    for k, v in table.items():
        a = np.array(v, dtype=np.float64)
        pct = "alerted" in k
        f = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:.3g}")
        stats = (np.nanmean(a), np.nanstd(a), np.nanmin(a), np.nanmax(a))
        print(f"| {k} | " + " | ".join(f(x) for x in stats) + " |")


if __name__ == "__main__":
    main()
