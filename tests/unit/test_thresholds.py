"""Thresholds and bounds on their own: what share of benign values they let
through, over many draws of the benign values."""

from __future__ import annotations

import numpy as np
import pytest

from spanwatch.errors import ConfigError
from spanwatch.thresholds import (
    check_enough_clients,
    conformal_quantile,
    fpr_bound,
    threshold_spread,
    wilson_interval,
)

TARGET = 0.005


def _rates(n: int, confidence: float | None, draws: int = 2000) -> np.ndarray:
    """The benign rate each threshold lets through, over `draws` sets of n
    benign values drawn uniform on [0, 1) (where the rate above t is 1 - t)."""
    rng = np.random.default_rng(5)
    return np.array(
        [1 - conformal_quantile(rng.random(n), TARGET, confidence) for _ in range(draws)]
    )


def test_the_plain_threshold_keeps_the_rate_on_average_only() -> None:
    rates = _rates(800, None)
    assert abs(rates.mean() - TARGET) < 0.0005
    # and above the target about 4 times in 10: not a bound
    assert 0.3 < (rates > TARGET).mean() < 0.6


def test_a_confident_threshold_keeps_the_rate_within_the_target_that_often() -> None:
    rates = _rates(800, 0.9)
    assert (rates <= TARGET).mean() >= 0.88
    assert rates.mean() < TARGET
    # the same values give a higher threshold with confidence than without
    v = np.random.default_rng(1).random(800)
    assert conformal_quantile(v, TARGET, 0.9) > conformal_quantile(v, TARGET)


def test_the_plain_rank_is_the_conformal_one() -> None:
    v = np.arange(1, 801, dtype=np.float64)
    assert conformal_quantile(v, TARGET) == 797.0  # ceil(801 * 0.995)
    assert conformal_quantile(v, TARGET, 0.9) == 799.0
    # fewer values than 1/target: above all of them
    assert conformal_quantile(v[:100], TARGET) > 100


def _resampled(v: np.ndarray, confidence: float | None, draws: int = 4000) -> np.ndarray:
    """The threshold over `draws` bootstrap resamples of v, by brute force."""
    rng = np.random.default_rng(13)
    n = len(v)
    return np.array(
        [conformal_quantile(v[rng.integers(0, n, n)], TARGET, confidence) for _ in range(draws)]
    )


@pytest.mark.parametrize(("n", "confidence"), [(800, None), (800, 0.9), (100, None)])
def test_the_threshold_spread_is_that_of_resampling(n: int, confidence: float | None) -> None:
    v = np.random.default_rng(n).random(n)
    lo, hi = threshold_spread(v, TARGET, confidence)
    brute = _resampled(v, confidence)
    # the exact 5% and 95% points, against 4000 resamples: within one value
    ranks = np.searchsorted(np.sort(v), [lo, hi])
    ranks_brute = np.searchsorted(np.sort(v), np.quantile(brute, [0.05, 0.95], method="lower"))
    if n < 1 / TARGET:  # above all values: compare the thresholds themselves
        assert abs(lo - np.quantile(brute, 0.05)) < 0.02 and hi >= np.quantile(brute, 0.95)
    else:
        assert np.all(np.abs(ranks - ranks_brute) <= 1), (ranks, ranks_brute)
    assert lo <= conformal_quantile(v, TARGET, confidence) <= hi


def test_a_few_clients_far_above_the_rest_make_the_spread_wide() -> None:
    rng = np.random.default_rng(4)
    smooth = rng.random(800)
    lo, hi = threshold_spread(smooth, TARGET)
    assert hi < 1.01 * lo
    # four outliers at the threshold's rank: resampled, it falls among them or below
    v = np.concatenate([smooth[:796], [50.0, 60.0, 80.0, 100.0]])
    assert conformal_quantile(v, TARGET) == 50.0
    lo, hi = threshold_spread(v, TARGET)
    assert lo < 1.0 and hi >= 80.0
    with pytest.raises(ConfigError, match="level must be in"):
        threshold_spread(v, TARGET, level=1.0)
    with pytest.raises(ConfigError, match="no benign peaks to resample"):
        threshold_spread([], TARGET)


def test_too_few_clients_for_a_confidence_say_how_many_it_takes() -> None:
    with pytest.raises(ConfigError, match=r"400 benign clients .* at least 460"):
        conformal_quantile(np.random.default_rng(0).random(400), TARGET, 0.9)
    with pytest.raises(ConfigError, match="confidence must be in"):
        conformal_quantile([1.0, 2.0], TARGET, 1.0)


def test_the_bound_holds_as_often_as_its_confidence_says() -> None:
    rng = np.random.default_rng(9)
    held = []
    for _ in range(2000):
        v = rng.random(800)
        t = conformal_quantile(v, TARGET)
        held.append(1 - t <= fpr_bound(v, t, 0.9))
    assert 0.87 <= np.mean(held) <= 0.93
    v = np.arange(800, dtype=np.float64)
    # 4 of 800 at or above: more than 4/801 but well under 2%
    assert 4 / 801 < fpr_bound(v, 796.0, 0.9) < 0.01
    # a threshold above every value is bounded as if at the highest
    assert fpr_bound(v, 1e9, 0.9) == fpr_bound(v, 799.0, 0.9)


def test_wilson_interval_of_a_known_rate() -> None:
    lo, hi = wilson_interval(12, 2000)
    assert lo == pytest.approx(0.00344, abs=1e-4) and hi == pytest.approx(0.01046, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_client_count_check_comes_before_any_work() -> None:
    check_enough_clients(460, TARGET, 0.9)
    check_enough_clients(10, TARGET, None)
    with pytest.raises(ConfigError, match="that takes at least 460"):
        check_enough_clients(459, TARGET, 0.9)
    with pytest.raises(ConfigError, match="target_fpr must be in"):
        check_enough_clients(800, 0.0, 0.9)
