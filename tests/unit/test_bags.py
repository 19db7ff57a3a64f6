"""Bagged reference tables (`scoring.bags`): each bag holds a random half (or
`scoring.bag_share`) of the reference clients, and a checkpoint's surprise is the mean over the
bags, so one broad benign user caps an unusual client's evidence only in the
bags that hold it."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch._core import SketchStore
from spanwatch.calibrate import Calibration, Signals, fit_calibration
from spanwatch.errors import ConfigError
from spanwatch.space import Space

NAMES = SketchStore(secret=b"unit-test-secret", levels=[4, 16]).feature_names
COL = {n: i for i, n in enumerate(NAMES)}


def _client(singletons: float) -> npt.NDArray[np.float64]:
    """Two checkpoints (10 and 20 queries) of a client whose only unusual
    feature is its count of cells seen once."""
    rows = np.zeros((2, len(NAMES)))
    rows[:, COL["count"]] = [10, 20]
    rows[:, COL["cells_4"]] = rows[:, COL["cells_16"]] = 2
    rows[:, COL["kl_ref"]] = 1.0
    rows[:, COL["singletons"]] = singletons
    return rows


Rows = list[npt.NDArray[np.float64]]


def _setup(seed: int = 4) -> tuple[Signals, Rows, Rows]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    signals = Signals(Space.fit(x, levels=[4, 16], niter=2), NAMES)
    # 399 ordinary users, and one broad one far beyond them
    ref = [_client(float(v)) for v in rng.normal(5, 1, size=399).round(1)] + [_client(30.0)]
    thr = [_client(float(v)) for v in rng.normal(5, 1, size=400).round(1)]
    return signals, ref, thr


def _surprise(cal: Calibration, signals: Signals, singletons: float) -> float:
    row = _client(singletons)[1:]
    return float(cal.surprise(np.array([20]), signals.matrix(row))[0][0])


def test_each_bag_holds_half_of_the_reference_clients() -> None:
    signals, ref, thr = _setup()
    one = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01)
    eight = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=8)
    j = signals.names.index("singletons")
    assert one.bags == 1 and eight.bags == 8
    assert (one.sizes[0, :, j] == 400).all()
    assert (eight.sizes[:, :, j] == 200).all()
    # the broad user (30) is in some bags and missing from others
    tops = np.nanmax(eight.tables[:, 1, j], axis=1)
    assert 0 < (tops == 30).sum() < 8


def test_a_broad_reference_user_caps_the_evidence_only_where_it_is() -> None:
    """A client at 25 singletons is below the broad user and far above every
    other: against one table its p-value cannot fall below 2 / 401; the bags
    without the broad user put it far out in the tail."""
    signals, ref, thr = _setup()
    one = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01)
    eight = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=8)
    m = len(signals.names)
    assert _surprise(one, signals, 25.0) == pytest.approx(-np.log(m * 2 / 401), rel=1e-9)
    assert _surprise(eight, signals, 25.0) > 2 * _surprise(one, signals, 25.0)
    # an ordinary client stays unremarkable either way
    assert _surprise(eight, signals, 5.0) == 0.0
    # the geometric mean of the bags' p-values is what the reasons quote
    j = signals.names.index("singletons")
    at, values = np.array([20]), signals.matrix(_client(25.0)[1:])
    p = eight.pvalues(at, values)[0, j]
    each = [eight.bag_pvalues(b, at, values)[0, j] for b in range(8)]
    assert p == pytest.approx(float(np.exp(np.mean(np.log(each)))))


def test_a_bag_share_sets_how_many_reference_clients_each_bag_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signals, ref, thr = _setup()
    fit = {"every": 10, "target_fpr": 0.01, "bags": 8}
    quarter = fit_calibration(signals, ref, thr, bag_share=0.25, **fit)
    j = signals.names.index("singletons")
    assert (quarter.held.sum(axis=1) == 100).all()
    assert (quarter.sizes[:, :, j] == 100).all()
    # the broad user is missing from about three bags in four
    tops = np.nanmax(quarter.tables[:, 1, j], axis=1)
    assert 0 < (tops == 30).sum() < 5
    # a share that leaves fewer than 100 clients per bag: one table, said so
    with caplog.at_level("WARNING", logger="spanwatch.calibrate"):
        assert fit_calibration(signals, ref, thr, bag_share=0.2, **fit).bags == 1
    assert "a bag takes 0.2 of the 400 reference clients" in caplog.text
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="bag_share must be in"):
            fit_calibration(signals, ref, thr, bag_share=bad, **fit)


def test_the_drift_sees_each_reference_client_against_the_bags_that_hold_it() -> None:
    """As with one table, where every reference client is in it. Against
    every bag, the reference clients at the top of the benign range would
    sit beyond the range of the bags that miss them, and a higher drift
    would absorb a moderately unusual client's evidence."""
    signals, ref, thr = _setup()
    cal = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=8)
    assert cal.held.shape == (8, len(ref)) and (cal.held.sum(axis=1) == len(ref) // 2).all()

    def drift(held: list[npt.NDArray[np.bool_] | None]) -> float:
        zs = [
            cal.surprise(r[:, COL["count"]].astype(np.int64), signals.matrix(r), h)[0]
            for r, h in zip(ref, held, strict=True)
        ]
        return float(np.quantile(np.concatenate(zs), 0.98))

    in_bag = drift([h if h.any() else None for h in cal.held.T])
    assert cal.drift == pytest.approx(in_bag)
    assert cal.drift < drift([None] * len(ref))


def test_too_few_reference_clients_for_bags_give_one_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bags of fewer than 100 clients would leave each client no room for a
    small p-value against its own bag, and the drift would fall to zero."""
    signals, ref, thr = _setup()
    with caplog.at_level("WARNING", logger="spanwatch.calibrate"):
        cal = fit_calibration(signals, ref[:150], thr, every=10, target_fpr=0.01, bags=16)
    assert cal.bags == 1 and cal.drift > 0
    assert "one set of reference tables instead of 16 bags" in caplog.text
    assert fit_calibration(signals, ref[:200], thr, every=10, target_fpr=0.01, bags=16).bags == 16


def test_bags_are_drawn_from_the_seed_and_refused_below_one() -> None:
    signals, ref, thr = _setup()
    a = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=4, seed=3)
    b = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=4, seed=3)
    c = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=4, seed=4)
    assert np.array_equal(a.tables, b.tables, equal_nan=True)
    assert not np.array_equal(a.tables, c.tables, equal_nan=True)
    with pytest.raises(ConfigError, match="bags must be at least 1"):
        fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=0)


def test_bags_travel_in_the_file_and_a_version_1_file_reads_as_one(tmp_path: Path) -> None:
    signals, ref, thr = _setup()
    path = tmp_path / "cal.zip"
    eight = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01, bags=8)
    eight.save(path)
    back = Calibration.load(path)
    assert back.bags == 8
    assert _surprise(back, signals, 25.0) == _surprise(eight, signals, 25.0)

    # a file from before the bags: version 1, tables without the bag axis
    one = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01)
    one.save(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(parts["meta.json"])
    meta["version"] = 1
    parts["meta.json"] = json.dumps(meta).encode()
    for name in ("tables", "sizes", "scales"):
        arr = np.load(io.BytesIO(parts[f"{name}.npy"]))
        buf = io.BytesIO()
        np.save(buf, arr[0])
        parts[f"{name}.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)
    old = Calibration.load(path)
    assert old.bags == 1
    assert _surprise(old, signals, 25.0) == _surprise(one, signals, 25.0)

    # tables whose shape does not match the sizes: a clear error
    parts["meta.json"] = json.dumps({**meta, "version": 2}).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)
    with pytest.raises(ConfigError, match="not a readable calibration file"):
        Calibration.load(path)


def test_the_detector_scores_against_a_bagged_calibration_file(
    settings: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """From the file to an alert: a client that spreads over every cell
    alarms with its sequential evidence against the bound, one that keeps
    to one region does not."""
    from spanwatch.config import Settings
    from spanwatch.detector import Detector
    from spanwatch.events import Event

    assert isinstance(settings, Settings)
    rng = np.random.default_rng(6)
    space = Space.fit(rng.normal(size=(200, 3)).astype(np.float32), levels=[4, 16], niter=2)
    store = SketchStore(secret=b"unit-test-secret", levels=[4, 16])

    def focused(n: int) -> npt.NDArray[np.int64]:
        coarse = int(rng.integers(0, 4))
        fine = coarse * 4 + rng.integers(0, 2, size=n)
        return np.column_stack([np.full(n, coarse), fine]).astype(np.int64)

    def spread(n: int) -> npt.NDArray[np.int64]:
        return np.column_stack([rng.integers(0, 4, n), rng.integers(0, 16, n)]).astype(np.int64)

    rows = []
    for c in range(800):
        cells = focused(40)
        _, _, r = store.update(
            [f"u{c}"] * 40, [f"q {c} {i}" for i in range(40)], cells, np.zeros(40), 10
        )
        rows.append(r)
    signals = Signals(space, store.feature_names)
    cal = fit_calibration(signals, rows[:400], rows[400:], every=10, target_fpr=0.01, bags=16)
    path = tmp_path / "cal.zip"
    cal.save(path)
    cfg = settings.model_copy(
        update={
            "sketch": settings.sketch.model_copy(update={"levels": [4, 16]}),
            "scoring": settings.scoring.model_copy(
                update={"calibration": str(path), "checkpoint_every": 10}
            ),
        }
    )
    with caplog.at_level(logging.INFO, logger="spanwatch.detector"):
        det = Detector(cfg, space=space)
    assert det.calibration is not None and det.calibration.bags == 16
    # the log says what the threshold rests on, from the peaks in the file
    lo, hi = cal.threshold_range()
    assert f"resampled {lo:.3f}-{hi:.3f}" in caplog.text
    assert "is used instead" not in caplog.text
    # and when the config sets another threshold, that it is the one used
    scoring = cfg.scoring.model_copy(update={"threshold": cal.threshold * 2})
    with caplog.at_level(logging.INFO, logger="spanwatch.detector"):
        Detector(cfg.model_copy(update={"scoring": scoring}), space=space)
    assert f"scoring.threshold {cal.threshold * 2:.3f} is used instead" in caplog.text

    def run(client: str, cells: npt.NDArray[np.int64]) -> list[object]:
        events = [Event(client_id=client, prompt=f"{client} {i}", ts=float(i)) for i in range(40)]
        return list(det.observe(events, cells=cells))

    assert run("benign", focused(40)) == []
    alerts = run("spreader", spread(40))
    assert alerts, "a client over every cell must alarm"
    why = alerts[0].reasons[0]  # type: ignore[attr-defined]
    assert why.signal == "sequential_evidence" and why.value >= why.threshold
