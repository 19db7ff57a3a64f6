"""Calibrated, sequential evidence: turns each checkpoint's sketch features
into p-values against benign clients at the same query count, combines them
into one surprise per checkpoint and accumulates it with a CUSUM. The CUSUM
is divided by a benign envelope (its 99th percentile at each checkpoint among
reference clients), and the alarm threshold on that ratio is a conformal
quantile of held-out benign clients' whole-stream maximum, so the share of
benign clients that ever alert is controlled while early checkpoints need
far less evidence than late ones.

Calibration uses benign traffic only, split in two disjoint halves of
clients: one gives the reference distributions, the other the threshold.
The reference distributions come in bags, each from a random share (by
default half) of the reference clients, and the per-checkpoint surprise is
averaged over them.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spanwatch.alerts import Reason
from spanwatch.errors import ConfigError
from spanwatch.space import Space
from spanwatch.thresholds import (
    check_confidence,
    check_target,
    conformal_quantile,
    fpr_bound,
    range_wording,
    target_wording,
    threshold_spread,
)

__all__ = [
    "Calibration",
    "Signals",
    "cusum",
    "fit_calibration",
    "group_sums",
]

F64 = npt.NDArray[np.float64]
FORMAT = "spanwatch-calibration"
VERSION = 2
# Version 1 files hold one set of reference tables, without the bag axis.
READABLE = (1, 2)
# Most reference values kept per signal and checkpoint.
MAX_REF = 1024
# Fewest reference clients one bag may hold. A bag of a few clients cannot
# give any of them a small p-value against its own tables, so the drift,
# fitted on them, would fall to zero and benign evidence would pile up.
MIN_BAG = 100
# Reference values compared at once when p-values are computed (bounds memory).
CHUNK = 1 << 20

log = logging.getLogger("spanwatch.calibrate")


class Signals:
    """The evidence each checkpoint row gives, as named columns. Direction:
    "up" (only high values are suspicious), "two" (high or low). With
    `strays`, one more: the mass of the client's stray queries."""

    def __init__(self, space: Space, feature_names: Sequence[str], *, strays: bool = False) -> None:
        self.space = space
        self.col = {n: i for i, n in enumerate(feature_names)}
        finest = space.levels[-1]
        self.names = [f"coverage_{lv}" for lv in space.levels] + [
            "divergence",
            "singletons",
            f"novelty_{finest}",
            "near_duplicates",
        ]
        self.directions = ["up"] * len(space.levels) + ["two", "up", "up", "up"]
        # Signals whose benign values are mostly zero: beyond the benign
        # range their p-values fall off on the spread of the tail itself.
        self.sparse: set[str] = set()
        if strays:
            self.names.append("stray_mass")
            self.directions.append("up")
            self.sparse.add("stray_mass")

    def matrix(self, rows: F64) -> F64:
        """(m, signals) from (m, features) checkpoint rows."""
        rows = np.atleast_2d(rows)
        counts = rows[:, self.col["count"]].astype(np.int64)
        exp = (
            np.stack([self.space.expected_cells(int(n)) for n in counts])
            if len(rows)
            else np.zeros((0, len(self.space.levels)))
        )
        out = np.empty((len(rows), len(self.names)))
        for j, lv in enumerate(self.space.levels):
            out[:, j] = rows[:, self.col[f"cells_{lv}"]] / np.maximum(exp[:, j], 1e-9)
        k = len(self.space.levels)
        out[:, k] = np.log(rows[:, self.col["kl_ref"]] + 1e-3)
        out[:, k + 1] = rows[:, self.col["singletons"]]
        out[:, k + 2] = rows[:, self.col[f"novelty_{self.space.levels[-1]}"]]
        out[:, k + 3] = rows[:, self.col["near_dup_share"]]
        if "stray_mass" in self.names:
            out[:, k + 4] = rows[:, self.col["stray_mass"]]
        return out


@dataclass
class Calibration:
    """Reference distributions per checkpoint and signal, and the CUSUM's
    drift and threshold."""

    every: int
    signals: list[str]
    directions: list[str]
    levels: list[int]
    # (bags, checkpoints, signals, values): each row sorted, NaN-padded; one
    # set of tables per bag of reference clients
    tables: F64
    sizes: npt.NDArray[np.int64]  # (bags, checkpoints, signals) values in each row
    scales: F64  # (bags, checkpoints, signals) robust spread of the benign values
    drift: float
    threshold: float
    target_fpr: float
    stream_length: int
    clients_ref: int
    clients_threshold: int
    max_surprise: float = 50.0
    # With a confidence c, the threshold keeps the benign rate within
    # target_fpr with probability c over the calibration clients drawn;
    # without, it keeps it there on average.
    confidence: float | None = None
    # (checkpoints,) benign 99th percentile of the CUSUM at each checkpoint,
    # non-decreasing, at least 1: the alarm bound is threshold * envelope.
    envelope: F64 = field(default_factory=lambda: np.ones(1))
    # (k,) for groups of 1..k accounts: the benign (1 - group target) quantile
    # of the sum of the accounts' shares of their own alarm bound.
    group_sums: F64 = field(default_factory=lambda: np.zeros(0))
    # the calibration clients' peaks the threshold was drawn from (in the
    # file's peaks.npy; files from before it load with none)
    peaks: list[float] = field(default_factory=list)
    # (bags, reference clients): which bags' tables hold each reference
    # client (not saved)
    held: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))

    def group_threshold(self, k: int) -> float:
        """What the summed alarm shares of k linked accounts must reach for
        the group to alarm. Beyond the table, it grows in proportion to k,
        which errs high: the quantile of a mean falls as k grows."""
        if not len(self.group_sums):
            raise ConfigError(
                "this calibration has no group thresholds: calibrate again (spanwatch tune)"
            )
        n = len(self.group_sums)
        return float(self.group_sums[k - 1] if k <= n else self.group_sums[-1] * k / n)

    def benign_bound(self) -> tuple[float, float]:
        """What this calibration's own peaks bound the benign rate at: the
        confidence (the one asked for, else 0.9) and the rate (`fpr_bound`)."""
        at = self.confidence or 0.9
        return at, fpr_bound(self.peaks, self.threshold, at)

    def threshold_range(self, level: float = 0.9) -> tuple[float, float]:
        """Where the threshold falls over bootstrap resamples of this
        calibration's own peaks (`threshold_spread`)."""
        return threshold_spread(self.peaks, self.target_fpr, self.confidence, level)

    def describe(self) -> str:
        """One line for the log: the threshold, what it holds, and where it
        falls over resamples of the calibration clients when the peaks are
        known."""
        text = (
            f"threshold {self.threshold:.3f} for {self.target_fpr:.2%} benign clients alerting "
            f"{target_wording(self.confidence)}, from {self.clients_threshold} clients"
        )
        if not self.peaks:
            return text + " (no peaks in this file, so no resampled range)"
        try:
            lo, hi = self.threshold_range()
        except ConfigError as e:
            return text + f" (no resampled range: {e})"
        return text + f"; resampled {range_wording(lo, hi)}"

    @property
    def bags(self) -> int:
        """How many sets of reference tables the evidence is averaged over."""
        return int(self.tables.shape[0])

    def _index(self, counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        k = counts // self.every - 1
        return np.clip(k, 0, self.tables.shape[1] - 1)

    def pvalues(self, counts: npt.NDArray[np.int64], values: F64) -> F64:
        """Tail p-values, (m, signals), the geometric mean over the bags of
        `bag_pvalues` (as `surprise` gives them)."""
        return self.surprise(counts, values)[1]

    def bag_pvalues(self, b: int, counts: npt.NDArray[np.int64], values: F64) -> F64:
        """Tail p-values, (m, signals), against bag b's tables: the smoothed
        empirical p inside the benign range, and beyond it a normal tail on
        the robust spread of the benign values, anchored at the extreme, so a
        value far outside what any benign client did gets a p-value far
        below 1 / (N + 1)."""
        idx = self._index(counts)
        out = np.ones_like(values)
        two = np.array([d == "two" for d in self.directions])
        step = max(1, CHUNK // max(1, self.tables.shape[2] * self.tables.shape[3]))
        for lo in range(0, len(values), step):
            rows = slice(lo, lo + step)
            out[rows] = self._chunk_pvalues(b, idx[rows], values[rows], two)
        return out

    def _chunk_pvalues(
        self, b: int, idx: npt.NDArray[np.int64], x: F64, two: npt.NDArray[np.bool_]
    ) -> F64:
        ref = self.tables[b, idx]  # (rows, signals, values), NaN past each size
        size = self.sizes[b, idx]
        scale = self.scales[b, idx]
        below = (ref <= x[:, :, None]).sum(axis=2)  # NaN padding compares false
        above = (ref >= x[:, :, None]).sum(axis=2)
        first = ref[:, :, 0]
        last = np.take_along_axis(ref, np.maximum(size - 1, 0)[:, :, None], axis=2)[:, :, 0]
        floor = 1.0 / (size + 1)
        with np.errstate(invalid="ignore"):
            up = np.where(x > last, floor * 2 * _norm_sf((x - last) / scale), (above + 1) * floor)
            low = np.where(
                x < first, floor * 2 * _norm_sf((first - x) / scale), (below + 1) * floor
            )
        p = np.where(two, np.minimum(1.0, 2 * np.minimum(low, up)), up)
        return np.where(np.isnan(x) | (size == 0), 1.0, np.maximum(p, 1e-300))

    def surprise(
        self,
        counts: npt.NDArray[np.int64],
        values: F64,
        among: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[F64, F64]:
        """Per checkpoint, -ln of the Bonferroni-adjusted smallest p-value
        (0 when nothing is unusual), averaged over the bags (or the bags
        `among` selects), and the p-values (their geometric mean). A broad
        benign user in one bag's reference caps how small a p-value can get
        against it; the bags without that user let an unusual client's
        evidence through."""
        picked = range(self.bags) if among is None else np.flatnonzero(among).tolist()
        zs, logs = [], []
        for b in picked:
            p = self.bag_pvalues(b, counts, values)
            z = -np.log(np.minimum(1.0, p.shape[1] * p.min(axis=1)))
            # One checkpoint cannot carry a client over the line on its own:
            # outliers among benign clients would otherwise set the threshold.
            zs.append(np.minimum(z, self.max_surprise))
            logs.append(np.log(p))
        if len(zs) == 1:
            return zs[0], p
        return np.mean(zs, axis=0), np.exp(np.mean(logs, axis=0))

    def bound(self, counts: npt.NDArray[np.int64] | int, threshold: float | None = None) -> F64:
        """The alarm bound on the CUSUM at these query counts: the threshold
        times the benign envelope, so early checkpoints, where benign clients
        have gathered little evidence, need less to alarm."""
        k = np.clip(np.asarray(counts) // self.every - 1, 0, len(self.envelope) - 1)
        h = self.threshold if threshold is None else threshold
        return np.asarray(h * self.envelope[k], dtype=np.float64)

    def bounds(self, count: int, j: int, tail: float = 0.01) -> tuple[float, float]:
        """Benign values at the lower and upper `tail` of signal j at `count`."""
        k = int(self._index(np.array([count]))[0])
        ref = np.concatenate(
            [self.tables[b, k, j, : int(self.sizes[b, k, j])] for b in range(self.bags)]
        )
        return float(np.quantile(ref, tail)), float(np.quantile(ref, 1 - tail))

    def reasons(self, count: int, values: F64, p: F64, limit: int = 3) -> list[Reason]:
        """The signals that stand out most at this checkpoint."""
        out = []
        for j in np.argsort(p)[:limit]:
            if p[j] >= 0.05:
                break
            lo, hi = self.bounds(count, int(j))
            high = values[j] >= hi or self.directions[j] == "up"
            out.append(
                Reason(
                    signal=self.signals[j],
                    value=round(float(values[j]), 4),
                    threshold=round(hi if high else lo, 4),
                    detail=(
                        f"{'above' if high else 'below'} 99% of benign clients at "
                        f"{count} queries (p={p[j]:.4f})"
                    ),
                )
            )
        return out

    # -------------------------------------------------------------- files

    def save(self, path: str | Path) -> None:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "every": self.every,
            "signals": self.signals,
            "directions": self.directions,
            "levels": self.levels,
            "drift": self.drift,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "stream_length": self.stream_length,
            "clients_ref": self.clients_ref,
            "clients_threshold": self.clients_threshold,
            "max_surprise": self.max_surprise,
            "confidence": self.confidence,
        }
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("meta.json", json.dumps(meta, indent=1))
            arrays = (
                ("tables.npy", self.tables),
                ("sizes.npy", self.sizes),
                ("scales.npy", self.scales),
                ("envelope.npy", self.envelope),
                ("group_sums.npy", self.group_sums),
                ("peaks.npy", np.asarray(self.peaks, dtype=np.float64)),
            )
            for name, arr in arrays:
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                z.writestr(name, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        try:
            with zipfile.ZipFile(path) as z:
                meta: dict[str, Any] = json.loads(z.read("meta.json"))
                tables = np.load(io.BytesIO(z.read("tables.npy")), allow_pickle=False)
                sizes = np.load(io.BytesIO(z.read("sizes.npy")), allow_pickle=False)
                scales = np.load(io.BytesIO(z.read("scales.npy")), allow_pickle=False)
                envelope = np.load(io.BytesIO(z.read("envelope.npy")), allow_pickle=False)
                groups = (
                    np.load(io.BytesIO(z.read("group_sums.npy")), allow_pickle=False)
                    if "group_sums.npy" in z.namelist()
                    else np.zeros(0)
                )
                peaks = (
                    np.load(io.BytesIO(z.read("peaks.npy")), allow_pickle=False)
                    if "peaks.npy" in z.namelist()
                    else np.zeros(0)
                )
            if meta.get("format") != FORMAT or meta.get("version") not in READABLE:
                raise ConfigError(f"{path} is not a spanwatch calibration file (version {VERSION})")
            if peaks.ndim != 1 or not np.isfinite(peaks).all():
                raise ValueError(f"peaks of shape {peaks.shape}, or not finite")
            if len(peaks) and len(peaks) != int(meta["clients_threshold"]):
                raise ValueError(
                    f"{len(peaks)} peaks for {meta['clients_threshold']} threshold clients"
                )
            if meta["version"] == 1:
                tables, sizes, scales = tables[None], sizes[None], scales[None]
            if not (tables.ndim == 4 and sizes.shape == scales.shape == tables.shape[:3]):
                raise ValueError(f"tables of shape {tables.shape}, sizes {sizes.shape}")
            return cls(
                every=int(meta["every"]),
                signals=list(meta["signals"]),
                directions=list(meta["directions"]),
                levels=list(meta["levels"]),
                tables=tables,
                sizes=sizes,
                scales=scales,
                drift=float(meta["drift"]),
                threshold=float(meta["threshold"]),
                target_fpr=float(meta["target_fpr"]),
                stream_length=int(meta["stream_length"]),
                clients_ref=int(meta["clients_ref"]),
                clients_threshold=int(meta["clients_threshold"]),
                max_surprise=float(meta.get("max_surprise", 50.0)),
                confidence=None if meta.get("confidence") is None else float(meta["confidence"]),
                envelope=envelope,
                group_sums=groups,
                peaks=peaks.tolist(),
            )
        except FileNotFoundError:
            raise ConfigError(f"calibration file not found: {path}") from None
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as e:
            raise ConfigError(f"{path} is not a readable calibration file: {e}") from None


def _norm_sf(z: F64) -> F64:
    """Upper tail of the standard normal."""
    from scipy.special import ndtr  # type: ignore[import-untyped,unused-ignore]

    return np.asarray(ndtr(-z), dtype=np.float64)


def _spread(col: F64) -> float:
    """A robust scale: the larger of the MAD and the 5-95% range, in normal
    units, never zero."""
    if not len(col):
        return 1.0
    med = float(np.median(col))
    mad = 1.4826 * float(np.median(np.abs(col - med)))
    q05, q95 = np.quantile(col, [0.05, 0.95])
    wide = float(q95 - q05) / 3.29
    return max(mad, wide, 1e-3 * max(1.0, abs(med)), 1e-3)


def _tail_spread(col: F64, q: float = 0.99) -> float:
    """How far benign values beyond their q quantile reach past it, on
    average (`col` in any order). For a signal that is zero for almost every benign client, the
    bulk's spread is near zero, and a value just past the highest benign one
    would look impossibly rare; the few benign clients with such values
    would then set the alarm threshold for everyone."""
    if len(col) < 20:
        return 0.0
    t = float(np.quantile(col, q))
    beyond = col[col > t] - t
    return float(beyond.mean()) if len(beyond) else 0.0


def cusum(z: F64, drift: float, start: float = 0.0) -> F64:
    """S_t = max(0, S_{t-1} + z_t - drift), for one client's checkpoints."""
    out = np.empty(len(z))
    s = start
    for i, v in enumerate(z):
        s = max(0.0, s + float(v) - drift)
        out[i] = s
    return out


def fit_calibration(
    signals: Signals,
    ref_rows: Sequence[F64],
    thr_rows: Sequence[F64],
    *,
    every: int,
    target_fpr: float,
    drift: float | None = None,
    drift_quantile: float = 0.98,
    stream_length: int = 0,
    max_surprise: float = 50.0,
    cross_fit: bool = True,
    confidence: float | None = None,
    bags: int = 1,
    bag_share: float = 0.5,
    seed: int = 0,
) -> Calibration:
    """Reference tables from `ref_rows` (one array of checkpoint rows per
    benign client), then the threshold from the other clients in `thr_rows`:
    the conformal (1 - target_fpr) quantile of their whole-stream maximum.
    With `cross_fit`, the reference clients also give a peak each, scored
    against tables fitted on `thr_rows`, and the quantile is taken over both.
    Without a `drift`, the CUSUM's drift is the `drift_quantile` of the
    benign reference clients' per-checkpoint surprise, so ordinary
    fluctuations do not accumulate. With a `confidence`, the threshold is
    the one of `conformal_quantile` with it. With `bags` > 1 (and at least
    MIN_BAG reference clients per bag), the reference tables come in that
    many bags, each from a random `bag_share` of `ref_rows` drawn with
    `seed`."""
    check_target(target_fpr)
    check_confidence(confidence)
    if bags < 1:
        raise ConfigError(f"bags must be at least 1, got {bags}")
    if not 0 < bag_share < 1:
        raise ConfigError(f"bag_share must be in (0, 1), got {bag_share}")
    if not 0 < drift_quantile < 1:
        raise ConfigError(f"drift_quantile must be in (0, 1), got {drift_quantile}")
    if len(ref_rows) < 10 or len(thr_rows) < 10:
        raise ConfigError("calibration needs at least 20 benign clients (10 per split)")
    count_col = signals.col["count"]
    k_max = max(int(r[-1, count_col]) // every for r in ref_rows if len(r))
    if k_max < 1:
        raise ConfigError(f"benign clients must reach {every} queries to calibrate")
    m, n = len(signals.names), len(ref_rows)
    size = int(n * bag_share)
    if bags > 1 and size < MIN_BAG:
        log.warning(
            "one set of reference tables instead of %d bags: a bag takes %g of the %d "
            "reference clients, and needs at least %d",
            bags, bag_share, n, MIN_BAG,
        )  # fmt: skip
        bags = 1
    # held[b, i]: bag b's tables hold reference client i. With more than
    # one bag, each holds a random share, so a broad benign user is missing
    # from the bags that did not draw it (about half at the default share).
    held = np.ones((1, n), dtype=bool)
    if bags > 1:
        rng = np.random.default_rng(seed)
        held = np.zeros((bags, n), dtype=bool)
        for b in range(bags):
            held[b, rng.permutation(n)[:size]] = True
    per_bag = [
        _tables(signals, [ref_rows[i] for i in np.flatnonzero(in_bag).tolist()], every, k_max)
        for in_bag in held
    ]
    width = max(t.shape[2] for t, _, _ in per_bag)
    tables = np.full((len(held), k_max, m, width), np.nan)
    for b, (t, _, _) in enumerate(per_bag):
        tables[b, :, :, : t.shape[2]] = t
    sizes = np.stack([sz for _, sz, _ in per_bag])
    scales = np.stack([sc for _, _, sc in per_bag])
    cal = Calibration(
        every=every,
        signals=list(signals.names),
        directions=list(signals.directions),
        levels=list(signals.space.levels),
        tables=tables,
        sizes=sizes,
        scales=scales,
        drift=drift if drift is not None else 0.0,
        threshold=math.inf,
        target_fpr=target_fpr,
        stream_length=stream_length,
        clients_ref=len(ref_rows),
        clients_threshold=len(thr_rows),
        max_surprise=max_surprise,
        confidence=confidence,
    )
    # The drift and the envelope describe the reference clients as the tables
    # see them: each against the bags that hold it (with one bag, all of
    # them). Against every bag they would look as unusual as clients the
    # tables never saw, and a higher drift would absorb the evidence of a
    # moderately unusual client.
    counts = [r[:, count_col].astype(np.int64) for r in ref_rows]
    ref_z = [
        cal.surprise(c, signals.matrix(r), h if h.any() else None)[0]
        for r, c, h in zip(ref_rows, counts, held.T, strict=True)
    ]
    if drift is None:
        cal.drift = float(np.quantile(np.concatenate(ref_z), drift_quantile))
    cal.held = held
    cal.envelope = _envelope(ref_z, counts, cal.drift, every, k_max)
    peaks = [max_evidence(cal, signals, rows) for rows in thr_rows]
    if cross_fit:
        # The reference clients scored against tables of the other half: each
        # peak is out of sample, so twice as many set the threshold, and the
        # second-highest of 400 broad benign users no longer decides it alone.
        swapped = fit_calibration(
            signals, thr_rows, ref_rows, every=every, target_fpr=target_fpr,
            drift=drift, drift_quantile=drift_quantile, stream_length=stream_length,
            max_surprise=max_surprise, cross_fit=False, bags=bags, bag_share=bag_share,
            seed=seed + 1,
        )  # fmt: skip
        peaks += swapped.peaks
        cal.clients_threshold = len(peaks)
    cal.peaks = peaks
    cal.threshold = max(conformal_quantile(peaks, target_fpr, confidence), 1e-6)
    return cal


def _tables(
    signals: Signals, ref_rows: Sequence[F64], every: int, k_max: int
) -> tuple[F64, npt.NDArray[np.int64], F64]:
    """One set of reference tables, (checkpoints, signals, values) sorted and
    NaN-padded, with the number of values and the robust spread of each."""
    count_col = signals.col["count"]
    per_k: list[list[F64]] = [[] for _ in range(k_max)]
    for rows in ref_rows:
        if not len(rows):
            continue
        vals = signals.matrix(rows)
        for row, v in zip(rows, vals, strict=True):
            per_k[int(row[count_col]) // every - 1].append(v)
    m = len(signals.names)
    width = max(1, min(MAX_REF, max(len(v) for v in per_k)))
    tables = np.full((k_max, m, width), np.nan)
    sizes = np.zeros((k_max, m), dtype=np.int64)
    scales = np.ones((k_max, m))
    stacked = [np.array(at_k) if at_k else None for at_k in per_k]
    last: F64 | None = None
    for k, at_k in enumerate(stacked):
        arr = at_k if at_k is not None else last
        if arr is None:
            continue
        last = arr
        for j in range(m):
            col = np.sort(arr[:, j][~np.isnan(arr[:, j])])
            scales[k, j] = _spread(col)
            if signals.names[j] in signals.sparse:
                # a few benign values make the tail: pool the neighbouring
                # checkpoints' so one of them cannot narrow it alone
                near = [a[:, j] for a in stacked[max(0, k - 2) : k + 3] if a is not None]
                pooled = np.concatenate(near) if near else col
                scales[k, j] = max(scales[k, j], _tail_spread(pooled[~np.isnan(pooled)]))
            if len(col) > width:
                col = col[np.linspace(0, len(col) - 1, width).round().astype(int)]
            tables[k, j, : len(col)] = col
            sizes[k, j] = len(col)
    for k in range(k_max - 2, -1, -1):  # leading checkpoints nobody reached
        if sizes[k].sum() == 0:
            tables[k], sizes[k], scales[k] = tables[k + 1], sizes[k + 1], scales[k + 1]
    return tables, sizes, scales


def _envelope(
    zs: Sequence[F64],
    counts: Sequence[npt.NDArray[np.int64]],
    drift: float,
    every: int,
    k_max: int,
    q: float = 0.999,
) -> F64:
    """Per checkpoint, the q quantile of the reference clients' CUSUM (from
    their surprise `zs` at their query `counts`), made non-decreasing and at
    least 1."""
    per_k: list[list[float]] = [[] for _ in range(k_max)]
    for z, cs in zip(zs, counts, strict=True):
        for c, v in zip(cs, cusum(z, drift), strict=True):
            per_k[min(int(c) // every - 1, k_max - 1)].append(float(v))
    env = np.array([np.quantile(v, q) if v else 0.0 for v in per_k])
    return np.maximum.accumulate(np.maximum(env, 1.0))


def evidence_ratio(cal: Calibration, signals: Signals, rows: F64) -> F64:
    """A client's CUSUM over the benign envelope at each of its checkpoints:
    it alarms where this reaches the threshold."""
    return evidence_steps(cal, signals, rows)[0]


def evidence_steps(cal: Calibration, signals: Signals, rows: F64) -> tuple[F64, F64, F64, F64]:
    """At each of a client's checkpoints: the evidence ratio, the CUSUM, the
    surprise it added and the signals' p-values."""
    if not len(rows):
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, len(signals.names)))
    counts = rows[:, signals.col["count"]].astype(np.int64)
    z, p = cal.surprise(counts, signals.matrix(rows))
    s = cusum(z, cal.drift)
    return s / cal.bound(counts, 1.0), s, z, p


def group_sums(
    shares: F64, target_fpr: float, max_k: int = 64, seed: int = 0, draws: int | None = None
) -> F64:
    """For k = 1..max_k: the (1 - target_fpr) quantile of the sum of k
    benign accounts' shares of their own alarm bound, drawn at random from
    `shares` (one per benign client, its highest over its stream)."""
    check_target(target_fpr)
    shares = np.asarray(shares, dtype=np.float64)
    if len(shares) < 10:
        raise ConfigError("group thresholds need at least 10 benign clients")
    n = draws or max(20_000, int(50 / target_fpr))
    rng = np.random.default_rng(seed)
    out = np.empty(max_k)
    total = np.zeros(n)
    for k in range(max_k):
        total += rng.choice(shares, size=n)
        out[k] = np.quantile(total, 1 - target_fpr)
    # at least the largest single share, so one benign outlier never suffices
    return np.maximum(np.maximum.accumulate(out), float(shares.max()) * 1.05 + 1e-6)


def max_evidence(cal: Calibration, signals: Signals, rows: F64) -> float:
    """The highest evidence ratio over one client's checkpoint rows."""
    r = evidence_ratio(cal, signals, rows)
    return float(r.max()) if len(r) else 0.0
