"""The calibration's thresholds and bounds on their own: what share of
benign values they let through, over many draws of the benign values."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spanwatch._core import SketchStore
from spanwatch.calibrate import (
    Calibration,
    Signals,
    check_enough_clients,
    conformal_quantile,
    fit_calibration,
    fpr_bound,
    threshold_spread,
    wilson_interval,
)
from spanwatch.errors import ConfigError
from spanwatch.space import Space

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


def _calibration(confidence: float | None) -> Calibration:
    return Calibration(
        every=10,
        signals=["a"],
        directions=["up"],
        levels=[16],
        tables=np.zeros((1, 1, 1, 2)),
        sizes=np.full((1, 1, 1), 2, dtype=np.int64),
        scales=np.ones((1, 1, 1)),
        drift=1.0,
        threshold=3.0,
        target_fpr=TARGET,
        stream_length=200,
        clients_ref=10,
        clients_threshold=10,
        confidence=confidence,
    )


def test_the_confidence_travels_in_the_calibration_file(tmp_path: Path) -> None:
    path = tmp_path / "cal.zip"
    _calibration(0.9).save(path)
    assert Calibration.load(path).confidence == 0.9
    _calibration(None).save(path)
    assert Calibration.load(path).confidence is None
    # a file written before the confidence existed reads as "on average"
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(parts["meta.json"])
    del meta["confidence"]
    parts["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)
    assert Calibration.load(path).confidence is None


def _rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """Replaces (bytes) or drops (None) parts of a calibration file."""
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    for name, data in change.items():
        if data is None:
            parts.pop(name, None)
        else:
            parts[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_the_peaks_travel_in_the_file_so_a_loaded_calibration_has_its_range(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cal.zip"
    cal = _calibration(None)
    rng = np.random.default_rng(3)
    cal.peaks = rng.lognormal(size=800).tolist()
    cal.clients_threshold = 800
    cal.threshold = conformal_quantile(cal.peaks, TARGET)
    cal.save(path)
    back = Calibration.load(path)
    assert back.peaks == cal.peaks
    assert back.threshold_range() == cal.threshold_range()
    assert back.benign_bound() == cal.benign_bound()
    lo, hi = back.threshold_range()
    assert f"resampled {lo:.3f}-{hi:.3f}" in back.describe()

    # a file written before the peaks were saved loads, and says it has no range
    _rewrite(path, {"peaks.npy": None})
    old = Calibration.load(path)
    assert old.peaks == []
    assert "no resampled range" in old.describe()
    with pytest.raises(ConfigError, match="calibrate again"):
        old.threshold_range()

    # peaks that do not match the file's client count, or are not finite: clear errors
    for bad in (np.ones(799), np.full(800, np.nan), np.ones((800, 2))):
        _rewrite(path, {"peaks.npy": _npy(bad)})
        with pytest.raises(ConfigError, match="not a readable calibration file"):
            Calibration.load(path)


def test_the_client_count_check_comes_before_any_work() -> None:
    check_enough_clients(460, TARGET, 0.9)
    check_enough_clients(10, TARGET, None)
    with pytest.raises(ConfigError, match="that takes at least 460"):
        check_enough_clients(459, TARGET, 0.9)
    with pytest.raises(ConfigError, match="target_fpr must be in"):
        check_enough_clients(800, 0.0, 0.9)


def test_the_drift_is_the_asked_quantile_of_benign_evidence() -> None:
    """`scoring.drift_quantile`: the share of reference checkpoints whose
    surprise stays within the drift is the quantile asked for, so a lower
    one lets more ordinary evidence accumulate."""
    names = SketchStore(secret=b"unit-test-secret", levels=[4, 16]).feature_names
    col = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng(3)
    space = Space.fit(rng.normal(size=(100, 3)).astype(np.float32), [4, 16], niter=2)
    signals = Signals(space, names)

    def client() -> np.ndarray:
        rows = np.zeros((20, len(names)))
        rows[:, col["count"]] = np.arange(1, 21) * 10
        rows[:, col["cells_4"]] = rows[:, col["cells_16"]] = 2
        rows[:, col["kl_ref"]] = 1.0
        rows[:, col["singletons"]] = rng.normal(5, 1, size=20).round(2)
        return rows

    ref, thr = [client() for _ in range(200)], [client() for _ in range(200)]
    drifts = {}
    for q in (0.9, 0.99):
        cal = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, drift_quantile=q)
        z = np.concatenate(
            [cal.surprise(r[:, col["count"]].astype(np.int64), signals.matrix(r))[0] for r in ref]
        )
        assert np.mean(z <= cal.drift) == pytest.approx(q, abs=0.005)
        drifts[q] = cal.drift
    assert 0 < drifts[0.9] < drifts[0.99]
    with pytest.raises(ConfigError, match="drift_quantile must be in"):
        fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, drift_quantile=1.0)
