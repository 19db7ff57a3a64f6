"""The stray-query tracker: a query of a client with no other query of the
same client within the radius. Through the store's Python API, the
calibration's signals and the detector's config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch._core import SketchStore
from spanwatch.errors import ConfigError, InputError
from spanwatch.space import Space

SECRET = b"unit-test-secret"


def unit(*rows: list[float]) -> npt.NDArray[np.float32]:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tiny_space(seed: int) -> Space:
    """A space of 4 and 16 cells over random 3-dimensional points."""
    x = np.random.default_rng(seed).normal(size=(100, 3)).astype(np.float32)
    return Space.fit(x, levels=[4, 16], niter=2)


def feed(store: SketchStore, emb: npt.NDArray[np.float32] | None, n: int) -> dict[str, float]:
    cells = np.zeros((n, 2), dtype=np.int64)
    store.update(["c"] * n, [f"p {i}" for i in range(n)], cells, np.arange(n, dtype=float), 0, emb)
    row = store.features(["c"])[0]
    return dict(zip(store.feature_names, row.tolist(), strict=True))


def tracked(radius: float = 0.5, **kw: int) -> SketchStore:
    return SketchStore(secret=SECRET, levels=[4, 16], stray_dim=3, stray_radius=radius, **kw)


def test_a_lone_query_is_a_stray_and_a_neighbour_closes_it() -> None:
    s = tracked()
    f = feed(s, unit([1, 0, 0], [0.95, 0.05, 0], [0, 0, 1]), 3)
    assert f["strays"] == 1  # the third; the first two are neighbours
    # orthogonal to both: similarity 0, half a radius of 0.5 below the line
    assert f["stray_mass"] == pytest.approx(0.5, abs=0.01)
    f = feed(s, unit([0.05, 0, 1]), 1)
    assert f["strays"] == 0


def test_without_a_tracker_or_embeddings_the_columns_stay_zero() -> None:
    plain = SketchStore(secret=SECRET, levels=[4, 16])
    assert plain.stray_dim == 0
    f = feed(plain, unit([1, 0, 0], [0, 1, 0]), 2)  # ignored: no tracker
    assert (f["strays"], f["stray_mass"]) == (0, 0)
    f = feed(tracked(), None, 2)  # a tracker, but no embeddings given
    assert (f["strays"], f["stray_mass"]) == (0, 0)


def test_wrong_embedding_width_is_refused_and_nothing_changes() -> None:
    s = tracked()
    with pytest.raises(InputError, match="3 columns"):
        feed(s, np.ones((2, 4), dtype=np.float32), 2)
    assert len(s) == 0


def test_bad_tracker_config_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="radius"):
        tracked(radius=2.5)
    with pytest.raises(ConfigError, match="open"):
        tracked(stray_open=0)


def test_the_tracker_survives_a_snapshot_and_goes_on_alike() -> None:
    s = tracked(stray_reservoir=2, stray_open=2)
    rng = np.random.default_rng(0)
    first = rng.normal(size=(20, 3)).astype(np.float32)
    feed(s, first, 20)
    back = SketchStore.restore(s.snapshot(), secret=SECRET)
    more = rng.normal(size=(10, 3)).astype(np.float32)
    a, b = feed(s, more, 10), feed(back, more, 10)
    del a["kl_ref"], b["kl_ref"]  # NaN: no reference set
    assert a == b
    assert a["strays"] > 0


def test_signals_gain_the_stray_mass_column_only_when_asked(settings: object) -> None:
    from spanwatch.calibrate import Signals

    space = tiny_space(1)
    s = tracked()
    feed(s, unit([1, 0, 0], [0, 1, 0]), 2)
    rows = s.features(["c"])
    plain = Signals(space, s.feature_names)
    with_strays = Signals(space, s.feature_names, strays=True)
    assert "stray_mass" not in plain.names
    assert with_strays.names[-1] == "stray_mass"
    assert with_strays.directions[-1] == "up"
    m = with_strays.matrix(rows)
    assert m.shape == (1, len(plain.names) + 1)
    assert m[0, -1] == pytest.approx(rows[0, s.feature_names.index("stray_mass")])


def test_a_calibration_without_the_stray_signal_is_refused(
    settings: object, tmp_path: Path
) -> None:
    from spanwatch.calibrate import Signals, fit_calibration
    from spanwatch.config import Settings
    from spanwatch.detector import Detector

    assert isinstance(settings, Settings)
    rng = np.random.default_rng(2)
    space = tiny_space(2)
    store = tracked()
    rows = []
    for c in range(24):
        cells = rng.integers(0, 4, size=(20, 2)) * np.array([1, 4])
        _, _, r = store.update(
            [f"u{c}"] * 20, [f"q {c} {i}" for i in range(20)], cells, np.zeros(20), 10
        )
        rows.append(r)
    cal = fit_calibration(
        Signals(space, store.feature_names), rows[:12], rows[12:], every=10, target_fpr=0.1
    )
    path = str(tmp_path / "cal.zip")
    cal.save(path)
    on = settings.model_copy(
        update={
            "sketch": settings.sketch.model_copy(update={"strays": True}),
            "scoring": settings.scoring.model_copy(
                update={"calibration": path, "checkpoint_every": 10}
            ),
        }
    )
    with pytest.raises(ConfigError, match="stray"):
        Detector(on, space=space)


def test_a_mostly_zero_signal_gets_a_tail_as_wide_as_its_benign_tail(settings: object) -> None:
    """Nearly every benign client has no strays. Past the highest benign
    value, the p-value must fall off on the spread of the benign tail, not on
    the spread of the zeros, or a benign client just past the others would
    look as rare as an attacker far beyond them."""
    from spanwatch.calibrate import Signals, fit_calibration

    rng = np.random.default_rng(3)
    space = tiny_space(3)
    names = tracked().feature_names
    col = {n: i for i, n in enumerate(names)}

    def client() -> npt.NDArray[np.float64]:
        rows = np.zeros((2, len(names)))
        rows[:, col["count"]] = [10, 20]
        rows[:, col["cells_4"]] = rows[:, col["cells_16"]] = 2
        if rng.random() < 0.02:  # one benign client in fifty has strays
            rows[:, col["stray_mass"]] = rng.exponential(0.1, size=2).cumsum()
        return rows

    ref, thr = [client() for _ in range(400)], [client() for _ in range(400)]
    signals = Signals(space, names, strays=True)
    cal = fit_calibration(signals, ref, thr, every=10, target_fpr=0.01)
    j = signals.names.index("stray_mass")
    top = float(np.nanmax(cal.tables[0, 1, j]))

    def p(value: float) -> float:
        row = np.zeros((1, len(names)))
        row[0, col["count"]], row[0, col["stray_mass"]] = 20, value
        row[0, col["cells_4"]] = row[0, col["cells_16"]] = 2
        return float(cal.pvalues(np.array([20]), signals.matrix(row))[0, j])

    assert cal.scales[0, 1, j] > 0.01  # the zeros' own spread would be 0.001
    assert p(top * 1.1) > 1e-4  # just past the benign clients: unusual, not impossible
    assert p(top * 10) < p(top * 1.1) / 100  # far past them: far rarer


def test_the_detector_feeds_the_tracker_the_embeddings_it_has(settings: object) -> None:
    """Given embeddings, or events that carry them, the detector passes them
    to the store, also when the cells are given (as the service does)."""
    from spanwatch.config import Settings
    from spanwatch.detector import Detector
    from spanwatch.events import Event

    assert isinstance(settings, Settings)
    on = settings.model_copy(update={"sketch": settings.sketch.model_copy(update={"strays": True})})
    det = Detector(on, space=tiny_space(4))
    assert det.store is not None and det.space is not None
    assert det.store.stray_dim == 3
    vecs = unit([1, 0, 0], [0.95, 0.05, 0], [0, 0, 1])

    def strays(client: str) -> float:
        assert det.store is not None
        row = det.store.features([client])[0]
        return float(row[det.store.feature_names.index("strays")])

    plain = [Event(client_id="a", prompt=f"p {i}", ts=float(i)) for i in range(3)]
    det.observe(plain, vecs, cells=det.space.assign(vecs))
    assert strays("a") == 1  # the orthogonal third query
    carrying = [
        Event(client_id="b", prompt=f"p {i}", ts=float(i), embedding=tuple(map(float, v)))
        for i, v in enumerate(vecs)
    ]
    det.observe(carrying)
    assert strays("b") == 1


def test_restoring_a_snapshot_without_a_tracker_under_strays_says_so(
    settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    from spanwatch.config import Settings
    from spanwatch.detector import Detector

    assert isinstance(settings, Settings)
    space = tiny_space(5)
    off = Detector(settings, space=space)
    on = Detector(
        settings.model_copy(update={"sketch": settings.sketch.model_copy(update={"strays": True})}),
        space=space,
    )
    on.restore(on.snapshot())
    assert "stray tracker" not in caplog.text
    on.restore(off.snapshot())
    assert "stray tracker (dimensions 0" in caplog.text
    assert on.store is not None and on.store.stray_dim == 0
