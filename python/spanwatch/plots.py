"""PNG plots for `spanwatch eval` and `spanwatch tune` (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spanwatch.thresholds import target_wording

if TYPE_CHECKING:
    from spanwatch.evaluate import EvalResult

__all__ = ["plot_eval", "plot_tune"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _roc(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cuts = np.unique(np.concatenate([neg, pos, [np.inf]]))[::-1]
    fpr = np.array([(neg >= c).mean() for c in cuts])
    tpr = np.array([(pos >= c).mean() for c in cuts])
    return fpr, tpr


def plot_eval(res: EvalResult, out: Path) -> list[Path]:
    """roc.png, detection.png and coverage.png in `out`."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in res.peaks if k not in ("benign", "population_like")]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    neg = res.peaks["benign"]
    for k in kinds:
        fpr, tpr = _roc(neg, res.peaks[k])
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=k)
    op = (neg >= res.threshold).mean()
    ax.axvline(max(op, 1e-4), color="grey", ls="--", lw=1, label=f"threshold (FPR {op:.3%})")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("benign clients alerted (false positive rate)")
    ax.set_ylabel("attack clients alerted (true positive rate)")
    ax.set_title(f"ROC per scenario, {res.report['stream_length']}-query streams")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    n = res.report["stream_length"]
    grid = np.arange(res.every, n + 1, res.every)
    for k in ["benign", *kinds]:
        first = res.first[k]
        frac = [(np.nan_to_num(first, nan=np.inf) <= g).mean() for g in grid]
        ax.plot(grid, frac, label=k, lw=2 if k == "benign" else 1)
    ax.set_xlabel("queries seen")
    ax.set_ylabel("share of clients alerted so far")
    ax.set_title("Detection against query count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "detection.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for k in ["benign", "harvester", "sweeper", "template_sweeper", "mixed_0.05"]:
        if k not in res.curves or not res.curves[k].size:
            continue
        c = res.curves[k]
        x = np.arange(1, c.shape[1] + 1) * res.every
        med = np.nanmedian(c, axis=0)
        line = ax.plot(x, med, label=k)[0]
        lo, hi = np.nanpercentile(c, 10, axis=0), np.nanpercentile(c, 90, axis=0)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("queries seen")
    ax.set_ylabel("coarse cells touched / expected of population sampling")
    ax.set_title("Coverage growth (median, 10-90% band)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "coverage.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def plot_tune(
    peaks: np.ndarray,
    threshold: float,
    target_fpr: float,
    out: Path,
    held: np.ndarray | None = None,
    confidence: float | None = None,
    spread: tuple[float, float] | None = None,
) -> Path:
    """The benign clients' highest evidence, with the calibrated threshold
    (and the range that resampling the clients puts it in, as a band), and
    the held-out clients' beside them when there are any."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    held = np.zeros(0) if held is None else held
    top = max(float(np.max(peaks, initial=0)), float(np.max(held, initial=0)), threshold)
    bins = np.linspace(0, top * 1.1 + 1e-9, 50)
    ax.hist(peaks, bins=bins, color="steelblue", label="calibration clients")
    if len(held):
        ax.hist(held, bins=bins, histtype="step", lw=1.5, color="darkorange", label="held out")
    ax.axvline(threshold, color="crimson", ls="--", label=f"threshold {threshold:.2f}")
    if spread is not None:
        lo, hi = spread
        label = f"threshold over resamples (90%): {lo:.2f}-{hi:.2f}"
        ax.axvspan(lo, hi, color="crimson", alpha=0.12, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("highest evidence ratio (CUSUM / benign envelope) over the stream")
    ax.set_ylabel("benign clients")
    how = target_wording(confidence)
    ax.set_title(f"Calibration on your traffic (target FPR {target_fpr:.2%} {how})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
