"""The calibration: its file (confidence, peaks, corrupt parts) and its drift."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spanwatch._core import SketchStore
from spanwatch.calibrate import Calibration, Signals, fit_calibration
from spanwatch.errors import ConfigError
from spanwatch.space import Space
from spanwatch.thresholds import conformal_quantile

TARGET = 0.005


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


def test_clients_too_short_to_score_are_left_out_of_the_calibration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real traffic holds clients of a few queries: they cannot alert, so
    they neither break the calibration nor lower the threshold."""
    from spanwatch import Detector, Event, load_settings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2600, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    det = Detector(load_settings(secret_key="k"), space=Space.fit(x, levels=[4, 16], niter=2))

    def events(short: int) -> list[Event]:
        out = [
            Event(client_id=f"c{i % 60}", prompt=f"p{i}", ts=float(i), embedding=x[i].tolist())
            for i in range(2400)
        ]
        out += [
            Event(client_id=f"short{j}", prompt="hi", ts=1.0, embedding=x[2400 + j].tolist())
            for j in range(short)
        ]
        return out

    plain = det.calibrate(events(0), target_fpr=0.05).threshold
    with caplog.at_level("WARNING", logger="spanwatch.detector"):
        cal = det.calibrate(events(7), target_fpr=0.05)
    assert "7 of 67 benign clients sent fewer than 10 queries" in caplog.text
    assert cal.clients_threshold == 60 and len(det.calibration_peaks) == 60
    assert cal.threshold == plain
    assert det.peaks(events(1)[-1:]) == {"short0": 0.0}
    with pytest.raises(ConfigError, match="no benign client sent the 10 queries"):
        det.calibrate(events(3)[-3:], target_fpr=0.05)
