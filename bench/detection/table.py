"""Prints the README's detection tables from the eval runs of run.sh:
out/eval-1500 and out/eval-200 (seed 0), and, when present, the same two
runs at a second seed (out/eval-seed7-1500, out/eval-seed7-200). With
`--fpr`, the benign false-positive rates of `run.sh --fpr`'s runs
(out/fpr2000-*); with `--confident`, `run.sh --confident`'s runs, the plain
threshold beside the one with confidence 0.9; with `--bags`, `run.sh --bags`'s
runs, the default 16 bags of reference tables beside one set."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spanwatch.thresholds import wilson_interval


def _qtd(q: dict[str, float | None]) -> str:
    return "-" if q["median"] is None else f"{q['median']:.0f} / {q['p90']:.0f}"


def _harvester(r: dict[str, Any]) -> str:
    """Harvesters alerted, and their median queries to detect."""
    h = r["queries_to_detect"]["harvester"]["median"]
    return f"{r['tpr']['harvester']:.0%}, {'-' if h is None else f'{h:.0f}'}"


def _load(d: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        json.loads((d / "report.json").read_text()),
        json.loads((d / "details.json").read_text()),
    )


def table(long: Path, short: Path) -> None:
    """One table: the 1500-query run beside the 200-query run."""
    r15, d15 = _load(long)
    r2, d2 = _load(short)
    head = ["clients", "1500 queries: alerted", "median / p90 queries", "200 queries: alerted"]
    print("| " + " | ".join([*head, "median / p90 queries"]) + " |")
    print("|---|---:|---:|---:|---:|")
    fpr = f"{r15['benign_fpr']:.2%} | | {r2['benign_fpr']:.2%} |"
    print(f"| benign, held out (false positives) | {fpr} |")
    for k in ("harvester", "sweeper", "template_sweeper", "random_words"):
        print(
            f"| {k} | {r15['tpr'][k]:.0%} | {_qtd(r15['queries_to_detect'][k])} "
            f"| {r2['tpr'][k]:.0%} | {_qtd(r2['queries_to_detect'][k])} |"
        )
    mixes = (
        ("harvester", "mixed_tpr", "mixed_queries_to_detect"),
        ("benign-style sweeper", "same_style_mixed_tpr", "same_style_mixed_queries_to_detect"),
    )
    for what, tpr, qtd in mixes:
        for f in ("0.05", "0.10", "0.25", "0.50"):
            t15 = (r15 if tpr == "mixed_tpr" else d15)[tpr][f]
            t2 = (r2 if tpr == "mixed_tpr" else d2)[tpr][f]
            print(
                f"| mixed account, {float(f):.0%} {what} queries | {t15:.0%} "
                f"| {_qtd(d15[qtd][f])} | {t2:.0%} | {_qtd(d2[qtd][f])} |"
            )
    for n, d in ((1500, d15), (200, d2)):
        fams = ", ".join(
            f"{f} {v['fpr']:.1%} ({v['clients']})" for f, v in d["benign_fpr_by_family"].items()
        )
        print(f"\nBenign false positives at {n} queries, by family of main interest: {fams}.")
    print(
        f"\n{r15['n_clients']} held-out benign clients and {d15['attackers_per_scenario']} clients "
        f"per attack scenario per run; thresholds {d15['threshold']:.1f} (1500) and "
        f"{d2['threshold']:.1f} (200); reference tables from "
        f"{d15['calibration_clients']['reference']} other benign clients{_bags(d15)}, "
        "threshold from the "
        f"peaks of {d15['calibration_clients']['threshold']} (cross-fitted); seed {d15['seed']}."
    )


def _bags(details: dict[str, Any]) -> str:
    """How the reference clients were split into bags (runs before the bags
    had one set of tables)."""
    bags = details.get("bags", 1)
    ref = details["calibration_clients"]["reference"]
    return f" in {bags} bags of {ref // 2}" if bags > 1 else ""


def _runs_2000(base: Path, second: tuple[str, str]) -> Iterator[tuple[str, Any, Any, str]]:
    """The 2000-client runs per seed and stream length: the default one and
    `second` (its label and folder prefix), with "seed / queries", the
    report, the details and the benign rate with its 95% Wilson interval."""
    for seed in (0, 7):
        for n in (200, 1500):
            for name, prefix in (("default", "fpr2000"), second):
                r, det = _load(base / f"{prefix}-s{seed}-{n}")
                k = round(r["benign_fpr"] * r["n_clients"])
                lo, hi = wilson_interval(k, r["n_clients"])
                rate = f"{r['benign_fpr']:.2%} of {r['n_clients']} ({lo:.2%}-{hi:.2%})"
                yield f"{seed} / {n} | {name}", r, det, rate


def fpr_table(base: Path) -> None:
    """Held-out benign false positives of the 2000-client runs, without and
    with the stray tracker, with a 95% Wilson interval, and the family of
    main interest with the highest rate."""
    print("| seed / queries | scorer | benign alerted (95% interval) | worst family |")
    print("|---|---|---:|---|")
    for label, _, det, rate in _runs_2000(base, ("strays", "fpr2000-strays")):
        fam, v = max(det["benign_fpr_by_family"].items(), key=lambda x: x[1]["fpr"])
        print(f"| {label} | {rate} | {fam} {v['fpr']:.1%} of {v['clients']} |")


def confident_table(base: Path) -> None:
    """Per seed and stream length: the threshold on average and with
    confidence 0.9, the benign rate each lets through on 2000 held-out
    clients, the calibration's own bound on it, and what they catch."""
    print(
        "| seed / queries | threshold | value | benign alerted (95% interval) "
        "| bound (90%) | harvester: alerted, median | mixed 10% | mixed 25% |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, r, det, rate in _runs_2000(base, ("confidence 0.9", "fpr2000-c90")):
        print(
            f"| {label.replace('default', 'on average')} | {det['threshold']:.1f} | {rate} "
            f"| {det['benign_fpr_bound']['rate']:.2%} | {_harvester(r)} "
            f"| {r['mixed_tpr']['0.10']:.0%} | {r['mixed_tpr']['0.25']:.0%} |"
        )


def bags_table(base: Path) -> None:
    """Per seed and stream length: the surprise averaged over the default 16
    bags of reference tables against one set of tables, on 2000 held-out
    benign clients."""
    print(
        "| seed / queries | tables | threshold | benign alerted (95% interval) "
        "| harvester: alerted, median | mixed 5% | mixed 10% | mixed 25% "
        "| same-style 10% | AUC, mixed 10% |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r, det, rate in _runs_2000(base, ("one", "fpr2000-bags1")):
        mixed = " | ".join(f"{r['mixed_tpr'][f]:.0%}" for f in ("0.05", "0.10", "0.25"))
        print(
            f"| {label.replace('default', '16 bags')} | {det['threshold']:.2f} | {rate} "
            f"| {_harvester(r)} | {mixed} "
            f"| {det['same_style_mixed_tpr']['0.10']:.0%} | {det['auc']['mixed_0.10']:.3f} |"
        )


def main(root: str = "out") -> None:
    if root == "--fpr":
        fpr_table(Path("out"))
        return
    if root == "--confident":
        confident_table(Path("out"))
        return
    if root == "--bags":
        bags_table(Path("out"))
        return
    base = Path(root)
    table(base / "eval-1500", base / "eval-200")
    if (base / "eval-seed7-200" / "report.json").is_file():
        print("\nThe same at seed 7 (other clients, other calibration, other split):\n")
        table(base / "eval-seed7-1500", base / "eval-seed7-200")


if __name__ == "__main__":
    main(*sys.argv[1:])
