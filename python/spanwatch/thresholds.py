"""Thresholds from benign values: the conformal quantile that keeps the
false-positive rate within a target (on average, or with a confidence),
how far it moves over resamples of the values, what a measured rate can be,
and the words tune and the detector use for them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from spanwatch.errors import ConfigError

__all__ = [
    "check_confidence",
    "check_enough_clients",
    "check_target",
    "conformal_quantile",
    "fpr_bound",
    "range_wording",
    "target_wording",
    "threshold_spread",
    "wilson_interval",
]

F64 = npt.NDArray[np.float64]


def check_target(target_fpr: float) -> None:
    if not 0 < target_fpr < 1:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")


def check_confidence(confidence: float | None) -> None:
    if confidence is not None and not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def check_enough_clients(n: int, target_fpr: float, confidence: float | None) -> None:
    """Refuses a confidence that n benign clients cannot give: a threshold
    above all n keeps the rate within the target with probability
    1 - (1 - target)^n, so it takes ln(1 - c) / ln(1 - target) of them."""
    check_target(target_fpr)
    check_confidence(confidence)
    if confidence is None:
        return
    need = math.ceil(math.log(1 - confidence) / math.log(1 - target_fpr))
    if n < need:
        raise ConfigError(
            f"{n} benign clients cannot keep the false-positive rate within "
            f"{target_fpr:.2%} with confidence {confidence:g}: that takes at least {need}"
        )


def conformal_quantile(
    values: Sequence[float] | F64, target_fpr: float, confidence: float | None = None
) -> float:
    """The split-conformal (1 - target_fpr) quantile of benign values: an
    alarm above it keeps a fresh benign value's alarm rate within the target
    on average over the benign values drawn. With fewer values than
    1/target_fpr the guarantee needs a threshold above every one of them.

    With a `confidence` c, the rate stays within the target with probability
    c instead: the lowest order statistic t_(r) with P(F(t_(r)) >= 1 -
    target_fpr) >= c, where the share F(t_(r)) of benign values below it is
    Beta(r, n - r + 1), so that probability is P(Binomial(n, 1 - target_fpr)
    <= r - 1). Too few values for it is an error that says how many."""
    ordered, rank = _ordered(values, target_fpr, confidence)
    if rank <= len(ordered):
        return float(ordered[rank - 1])
    return _above(float(ordered[-1]))


def _ordered(
    values: Sequence[float] | F64, target_fpr: float, confidence: float | None
) -> tuple[F64, int]:
    """The values sorted, and the rank `conformal_quantile` takes among them."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    check_enough_clients(len(ordered), target_fpr, confidence)
    return ordered, _rank(len(ordered), target_fpr, confidence)


def _rank(n: int, target_fpr: float, confidence: float | None) -> int:
    """Which order statistic of n benign values `conformal_quantile` takes
    (1 = the lowest); n + 1 means above all of them."""
    if confidence is not None:
        from scipy.stats import binom  # type: ignore[import-untyped,unused-ignore]

        cdf = binom.cdf(np.arange(n), n, 1 - target_fpr)  # rank r = 1..n: cdf[r - 1]
        return min(int(np.searchsorted(cdf, confidence)) + 1, n)
    return math.ceil((n + 1) * (1 - target_fpr))


def _above(top: float) -> float:
    """A threshold above the highest benign value."""
    return top + 0.05 * abs(top) + 1e-6


def threshold_spread(
    values: Sequence[float] | F64,
    target_fpr: float,
    confidence: float | None = None,
    level: float = 0.9,
) -> tuple[float, float]:
    """Where `conformal_quantile` falls over bootstrap resamples of the
    benign values (the central `level` share of them), computed exactly:
    the resampled r-th lowest is at most the j-th lowest value when at
    least r of the n draws land among the lowest j, Binomial(n, j / n).
    A wide range says a few clients far above the rest set the threshold,
    and other calibration traffic of the same kind would set another."""
    from scipy.stats import binom  # type: ignore[import-untyped,unused-ignore]

    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    if len(values) == 0:
        raise ConfigError(
            "no benign peaks to resample (calibration files written before the peaks "
            "were saved hold none: calibrate again with spanwatch tune)"
        )
    ordered, rank = _ordered(values, target_fpr, confidence)
    n = len(ordered)
    j = np.arange(1, n + 1)
    # P(resampled threshold <= ordered[j - 1]), non-decreasing in j
    cdf = binom.sf(min(rank, n) - 1, n, j / n)
    picks = ordered if rank <= n else np.array([_above(float(v)) for v in ordered])
    tail = (1 - level) / 2
    lo = int(np.searchsorted(cdf, tail))
    hi = int(np.searchsorted(cdf, 1 - tail))
    return float(picks[min(lo, n - 1)]), float(picks[min(hi, n - 1)])


def range_wording(lo: float, hi: float) -> str:
    """A resampled threshold range (`threshold_spread`) in words, with a
    warning when it is wide: its top more than twice its bottom."""
    text = f"{lo:.3f}-{hi:.3f} (90% of bootstrap resamples of the peaks)"
    if hi > 2 * lo:
        text += (
            "; wide: a few clients set it (the highest peaks), "
            "and more benign traffic would steady it"
        )
    return text


def target_wording(confidence: float | None) -> str:
    """How the threshold holds the target: "with confidence C" or "on average"."""
    return f"with confidence {confidence:g}" if confidence else "on average"


def fpr_bound(peaks: Sequence[float] | F64, threshold: float, confidence: float = 0.9) -> float:
    """What the benign false-positive rate is at most, with this confidence,
    when the threshold was drawn from these benign `peaks`: with k of the n
    reaching it, the rate above the k-th highest of n is Beta(k, n + 1 - k).
    A threshold above every peak is bounded as if at the highest."""
    check_confidence(confidence)
    from scipy.stats import beta  # type: ignore[import-untyped,unused-ignore]

    values = np.asarray(peaks, dtype=np.float64)
    n = len(values)
    if n == 0:
        return 1.0
    k = max(int((values >= threshold).sum()), 1)
    return float(beta.ppf(confidence, k, n + 1 - k))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate of k in n (95% by default): what
    a false-positive rate measured on n clients can be."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)
