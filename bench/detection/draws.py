"""How much the eval's numbers move with the calibration clients drawn.

`spanwatch eval` calibrates once, on the first half of its calibration
clients for the reference tables (in `scoring.bags` bags) and the second for
the threshold. This
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
from typing import Any

import numpy as np

from spanwatch.calibrate import Calibration, Signals, evidence_ratio, fit_calibration
from spanwatch.config import load_settings
from spanwatch.detector import Detector
from spanwatch.evaluate import (
    F64,
    Streams,
    _auc,
    _qtd,
    build_streams,
    load_pool,
    sketch_streams,
)
from spanwatch.thresholds import conformal_quantile

KINDS = ("harvester", "mixed_0.05", "mixed_0.10", "mixed_0.25", "mixed_same_0.10")


def add_stream_flags(ap: argparse.ArgumentParser) -> None:
    """The flags that say which streams to build and how many calibrations
    to draw from them (shared with neighbours.py)."""
    ap.add_argument("--pools", default="out/pools")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stream-length", type=int, default=200)
    ap.add_argument("--clients", type=int, default=400, help="held-out benign clients")
    ap.add_argument("--calibration-clients", type=int, default=2000)
    ap.add_argument("--attackers", type=int, default=100)
    ap.add_argument("--ref", type=int, default=400, help="clients per half of one calibration")
    ap.add_argument("--draws", type=int, default=5)


def build(args: argparse.Namespace) -> Streams:
    """The eval's streams for these flags, with `--calibration-clients`
    calibration clients to draw from."""
    pools = {n: load_pool(f"{args.pools}/{n}.jsonl") for n in ("benign", "attack", "templates")}
    return build_streams(
        np.random.default_rng(args.seed), pools["benign"], pools["attack"],
        templates=pools["templates"], stream_length=args.stream_length,
        n_clients=args.clients, n_calibration=args.calibration_clients,
        n_attackers=args.attackers, seed=args.seed,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stream_flags(ap)
    ap.add_argument(
        "--bag",
        type=int,
        default=0,
        metavar="B",
        help="also: the mean of the evidence ratios of B one-table calibrations on random "
        "halves of the reference (a CUSUM per calibration; not in the scoring)",
    )
    ap.add_argument(
        "--bags",
        type=int,
        default=0,
        metavar="B",
        help="also: the scoring with scoring.bags = B instead of the configured number",
    )
    ap.add_argument(
        "--bag-share",
        type=float,
        default=0.0,
        metavar="S",
        help="also: the scoring with scoring.bag_share = S (and --bags B if given) instead of "
        "the configured share",
    )
    ap.add_argument(
        "--drift-quantile",
        type=float,
        default=0.0,
        metavar="Q",
        help="also: the scoring with scoring.drift_quantile = Q instead of the configured one",
    )
    ap.add_argument("--target-fpr", type=float, default=0.005)
    args = ap.parse_args()
    if 2 * args.ref > args.calibration_clients:
        ap.error("--ref must be at most half of --calibration-clients")
    if args.draws < 1 or args.bag < 0:
        ap.error("--draws must be at least 1 and --bag at least 0")
    if not 0 <= args.drift_quantile < 1:
        ap.error("--drift-quantile must be in (0, 1)")
    if not 0 <= args.bag_share < 1:
        ap.error("--bag-share must be in (0, 1)")
    os.environ.setdefault("SPANWATCH_SECRET_KEY", "detection-bench")
    settings = load_settings(None)
    built = build(args)
    print(f"sketching {len(built.streams)} streams ...", flush=True)
    sk = sketch_streams(built, Detector(settings).embedder, settings)
    pairs = list(zip(built.streams, sk.rows, strict=True))
    cal_rows = [r for s, r in pairs if s.kind == "calibration"]
    scored = [(s.kind, r) for s, r in pairs if s.kind != "calibration"]
    rng = np.random.default_rng([args.seed, 2])
    bag_rng = np.random.default_rng([args.seed, 3])  # the draws are the same with or without
    tables: dict[str, dict[str, list[float]]] = {}
    fit: dict[str, Any] = {**settings.scoring.calibration_options(), "target_fpr": args.target_fpr}
    for i in range(args.draws):
        pick = rng.permutation(len(cal_rows))
        ref = [cal_rows[j] for j in pick[: args.ref]]
        thr = [cal_rows[j] for j in pick[args.ref : 2 * args.ref]]
        cal = fit_calibration(sk.signals, ref, thr, seed=i, **fit)
        ways = {f"as eval (scoring.bags = {fit['bags']})": ([cal], cal.threshold)}
        if args.bag:
            # B calibrations, each on a random half of the reference clients;
            # a client's evidence is the mean of its B ratios. Cross-fitted as
            # eval's threshold is: the threshold clients' peaks against bags of
            # the reference clients, and the other way round.
            bags = _bags(ref, thr, args.bag, bag_rng, sk.signals, fit)
            swapped = _bags(thr, ref, args.bag, bag_rng, sk.signals, fit)
            peaks = [float(_mean_ratio(bags, sk.signals, r).max()) for r in thr]
            peaks += [float(_mean_ratio(swapped, sk.signals, r).max()) for r in ref]
            ways[f"mean of {args.bag} half-reference calibrations"] = (
                bags,
                conformal_quantile(peaks, args.target_fpr),
            )
        if args.bags or args.bag_share:
            alt = {
                "bags": args.bags or fit["bags"],
                "bag_share": args.bag_share or fit["bag_share"],
            }
            bagged = fit_calibration(sk.signals, ref, thr, seed=i, **{**fit, **alt})
            way = f"scoring.bags = {alt['bags']}"
            if args.bag_share:
                way += f", bag_share = {args.bag_share:g}"
            ways[way] = ([bagged], bagged.threshold)
        if args.drift_quantile:
            q = args.drift_quantile
            other = fit_calibration(sk.signals, ref, thr, seed=i, **{**fit, "drift_quantile": q})
            ways[f"scoring.drift_quantile = {q:g}"] = ([other], other.threshold)
        for way, (cals, threshold) in ways.items():
            row = _measure(cals, threshold, sk.signals, scored)
            for k, v in row.items():
                tables.setdefault(way, {}).setdefault(k, []).append(v)
        lo, hi = cal.threshold_range()
        print(
            f"draw {i + 1} of {args.draws}: threshold {cal.threshold:.2f} "
            f"(resampled peaks: {lo:.2f}-{hi:.2f})",
            flush=True,
        )
    print(
        f"\nseed {args.seed}, {args.stream_length} queries, {args.draws} calibrations of "
        f"{args.ref} + {args.ref} clients drawn from {args.calibration_clients}; "
        f"{args.clients} held-out benign clients, {args.attackers} per attack kind\n"
    )
    for way, table in tables.items():
        print(f"{way}:\n")
        print("| metric | mean | sd | min | max |")
        print("|---|---:|---:|---:|---:|")
        for k, v in table.items():
            a = np.array(v, dtype=np.float64)
            f = (lambda x: f"{x:.1%}") if "alerted" in k else (lambda x: f"{x:.3g}")
            stats = (np.nanmean(a), np.nanstd(a), np.nanmin(a), np.nanmax(a))
            print(f"| {k} | " + " | ".join(f(x) for x in stats) + " |")
        print()


def _bags(
    ref: list[F64],
    thr: list[F64],
    b: int,
    rng: np.random.Generator,
    signals: Signals,
    fit: dict[str, Any],
) -> list[Calibration]:
    """b calibrations, each with one set of reference tables from a random
    half of `ref`."""
    half = len(ref) // 2
    one = {**fit, "bags": 1}
    return [
        fit_calibration(
            signals, [ref[j] for j in rng.permutation(len(ref))[:half]], thr, cross_fit=False, **one
        )
        for _ in range(b)
    ]


def _mean_ratio(cals: list[Calibration], signals: Signals, rows: F64) -> F64:
    """A client's evidence ratio at each checkpoint, averaged over `cals`."""
    return np.mean([evidence_ratio(c, signals, rows) for c in cals], axis=0)


def _measure(
    cals: list[Calibration], threshold: float, signals: Signals, scored: list[tuple[str, F64]]
) -> dict[str, float]:
    """Alert rates, AUCs against the benign clients and the harvesters'
    median queries to detect, for evidence averaged over `cals`."""
    peaks: dict[str, list[float]] = {}
    first: dict[str, list[float]] = {}
    for kind, rows in scored:
        ratio = _mean_ratio(cals, signals, rows)
        hit = np.flatnonzero(ratio >= threshold)
        peaks.setdefault(kind, []).append(float(ratio.max()) if len(ratio) else 0.0)
        at = float(rows[hit[0], signals.col["count"]]) if len(hit) else np.nan
        first.setdefault(kind, []).append(at)
    benign = np.array(peaks["benign"])
    row = {"threshold": threshold, "benign alerted": float(np.mean(benign >= threshold))}
    for kind in KINDS:
        row[f"{kind} alerted"] = float(np.mean(~np.isnan(np.array(first[kind]))))
        row[f"{kind} AUC"] = _auc(benign, np.array(peaks[kind]))
    median = _qtd(np.array(first["harvester"]))["median"]
    row["harvester median queries"] = np.nan if median is None else median
    return row


if __name__ == "__main__":
    main()
