"""Prints the README's detection table from out/eval-1500 and out/eval-200."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _qtd(q: dict[str, float | None]) -> str:
    return "-" if q["median"] is None else f"{q['median']:.0f} / {q['p90']:.0f}"


def main(root: str = "out") -> None:
    runs = {}
    for n in (1500, 200):
        d = Path(root) / f"eval-{n}"
        runs[n] = (
            json.loads((d / "report.json").read_text()),
            json.loads((d / "details.json").read_text()),
        )
    head = ["clients", "1500 queries: alerted", "median / p90 queries", "200 queries: alerted"]
    print("| " + " | ".join([*head, "median / p90 queries"]) + " |")
    print("|---|---:|---:|---:|---:|")
    r15, d15 = runs[1500]
    r2, d2 = runs[200]
    fpr = f"{r15['benign_fpr']:.2%} | | {r2['benign_fpr']:.2%} |"
    print(f"| benign, held out (false positives) | {fpr} |")
    for k in ("harvester", "sweeper", "template_sweeper", "random_words"):
        print(
            f"| {k} | {r15['tpr'][k]:.0%} | {_qtd(r15['queries_to_detect'][k])} "
            f"| {r2['tpr'][k]:.0%} | {_qtd(r2['queries_to_detect'][k])} |"
        )
    for f in ("0.05", "0.10", "0.25", "0.50"):
        print(
            f"| mixed account, {float(f):.0%} harvester queries | {r15['mixed_tpr'][f]:.0%} "
            f"| {_qtd(d15['mixed_queries_to_detect'][f])} | {r2['mixed_tpr'][f]:.0%} "
            f"| {_qtd(d2['mixed_queries_to_detect'][f])} |"
        )
    for n, (_, d) in runs.items():
        fams = ", ".join(
            f"{f} {v['fpr']:.1%} ({v['clients']})" for f, v in d["benign_fpr_by_family"].items()
        )
        print(f"\nBenign false positives at {n} queries, by family of main interest: {fams}.")
    print(
        f"\n{r15['n_clients']} held-out benign clients and {d15['attackers_per_scenario']} clients "
        f"per attack scenario per run; thresholds {d15['threshold']:.1f} (1500) and "
        f"{d2['threshold']:.1f} (200), calibrated on {d15['calibration_clients']['reference']}"
        f" + {d15['calibration_clients']['threshold']} other benign clients; seed {d15['seed']}."
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
