"""`spanwatch eval`: honest measurement of the detector on labelled pools.

Benign clients draw from one to three groups of the benign pool. The pool is
split per group into a calibration half and a held-out half: calibration
(reference distributions and threshold) sees only the first, every reported
number comes from the second. Attack scenarios:

- harvester: uniform over all groups of the attack pool;
- sweeper: uniform over all groups of the benign pool (benign style);
- template_sweeper: uniform over the groups of the templates pool (or, without
  one, of the attack pool), each group being one template;
- random_words: word sequences drawn from the pools' vocabulary;
- mixed: a benign client with a share f of harvester queries interleaved;
- mixed_same: the same, with sweeper queries instead (the held-out benign
  pool across all its groups), so the stolen queries share the benign
  clients' style and only their spread over topics can give them away.

Population-like clients (sampling the whole held-out benign pool as it is)
are reported apart, not as false positives.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spanwatch._core import SketchStore
from spanwatch.calibrate import Calibration, Signals, evidence_steps, fit_calibration
from spanwatch.config import Settings
from spanwatch.embed import Embedder
from spanwatch.errors import ConfigError
from spanwatch.space import Space

__all__ = [
    "MIXES",
    "SCENARIOS",
    "EvalResult",
    "Pool",
    "Streams",
    "build_streams",
    "embed_texts",
    "evaluate",
    "load_pool",
    "mixed_kinds",
    "run_streams",
]

log = logging.getLogger("spanwatch.evaluate")

SCENARIOS = ("harvester", "sweeper", "template_sweeper", "random_words")
MIXES = (0.05, 0.10, 0.25, 0.50)
# prefixes of the mixed-account kinds: harvester queries, or benign-style ones
MIXED_STYLES = ("mixed", "mixed_same")
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Progress = Callable[[int], None]


@dataclass
class Pool:
    """Texts with a group each."""

    texts: list[str]
    groups: list[str]

    def by_group(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, g in enumerate(self.groups):
            out.setdefault(g, []).append(i)
        return out


def load_pool(path: str | Path) -> Pool:
    """A JSONL pool of {"text": ..., "group": ...} records. Any bad line is a
    ConfigError naming the file and line."""
    texts, groups = [], []
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pool file not found: {p}")
    with p.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                text, group = rec["text"], rec["group"]
                if not isinstance(text, str) or not isinstance(group, str) or not text.strip():
                    raise TypeError("text and group must be non-empty strings")
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{p}, line {n}: not a pool record ({e})") from None
            texts.append(text)
            groups.append(group)
    if not texts:
        raise ConfigError(f"{p} holds no records")
    return Pool(texts, groups)


@dataclass
class Stream:
    client: str
    kind: str
    texts: I64  # indices into the global text table
    attack: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    family: str = ""


@dataclass
class EvalResult:
    report: dict[str, Any]
    details: dict[str, Any]
    peaks: dict[str, F64]  # kind -> max evidence per client
    first: dict[str, F64]  # kind -> queries to first alert (nan = never)
    curves: dict[str, F64]  # kind -> (clients, checkpoints) coarse coverage efficiency
    every: int
    threshold: float
    groups: dict[str, Any] = field(default_factory=dict)  # --sybil results


# ------------------------------------------------------------------ streams


class TextTable:
    """All texts of a run, deduplicated, with their embeddings and cells."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, texts: Sequence[str]) -> I64:
        out = np.empty(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            j = self._index.get(t)
            if j is None:
                j = self._index[t] = len(self.texts)
                self.texts.append(t)
            out[i] = j
        return out


def _split(
    pool: Pool, rng: np.random.Generator
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    cal, test = {}, {}
    for g, idx in sorted(pool.by_group().items()):
        if len(idx) < 2:
            continue
        perm = rng.permutation(idx).tolist()
        half = len(perm) // 2
        cal[g], test[g] = perm[:half], perm[half:]
    if len(cal) < 3:
        raise ConfigError("the benign pool needs at least 3 groups with 2 or more texts")
    return cal, test


def _benign_with_family(
    rng: np.random.Generator, groups: dict[str, list[int]], length: int
) -> tuple[I64, str]:
    """A benign client's stream, and the family (the group name's prefix
    before ':') of its main interest."""
    names = sorted(groups)
    k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    chosen = rng.choice(len(names), size=min(k, len(names)), replace=False)
    weights = rng.dirichlet(np.ones(len(chosen)) * 2.0)
    picks = rng.choice(len(chosen), size=length, p=weights)
    texts = np.array([rng.choice(groups[names[chosen[c]]]) for c in picks], dtype=np.int64)
    return texts, names[chosen[int(np.argmax(weights))]].split(":")[0]


def _benign(rng: np.random.Generator, groups: dict[str, list[int]], length: int) -> I64:
    return _benign_with_family(rng, groups, length)[0]


def _uniform_groups(rng: np.random.Generator, groups: dict[str, list[int]], length: int) -> I64:
    names = sorted(groups)
    g = rng.integers(0, len(names), size=length)
    return np.array([rng.choice(groups[names[i]]) for i in g], dtype=np.int64)


def _random_words(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    lengths = rng.integers(4, 21, size=n)
    return [" ".join(rng.choice(vocab, size=int(k))) for k in lengths]


def _vocab(texts: Sequence[str], size: int = 20000) -> list[str]:
    counts: dict[str, int] = {}
    for t in texts:
        for w in t.lower().split():
            w = w.strip(".,;:!?\"'()[]{}")
            if w.isalpha() and len(w) < 20:
                counts[w] = counts.get(w, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:size]]


def mixed_kinds() -> list[str]:
    """Every mixed-account kind, e.g. "mixed_0.05" and "mixed_same_0.05"."""
    return [f"{style}_{f:.2f}" for style in MIXED_STYLES for f in MIXES]


def _mixed(
    rng: np.random.Generator,
    base: I64,
    f: float,
    draw: Callable[[int], I64],
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """`base` with a share f of its queries, at random places, from `draw`."""
    n = len(base)
    k = round(f * n)
    where = rng.choice(n, size=k, replace=False)
    out = base.copy()
    out[where] = draw(k)
    mask = np.zeros(n, dtype=bool)
    mask[where] = True
    return out, mask


@dataclass
class Streams:
    """Every client stream of a run, over one table of distinct texts, and
    the benign groups split into a calibration and a held-out half."""

    texts: list[str]
    streams: list[Stream]
    cal_groups: dict[str, list[int]]
    test_groups: dict[str, list[int]]
    attack_groups: dict[str, list[int]]


def build_streams(
    rng: np.random.Generator,
    benign: Pool,
    attack: Pool,
    *,
    templates: Pool | None = None,
    stream_length: int = 1500,
    n_clients: int = 400,
    n_calibration: int = 400,
    n_attackers: int = 100,
    seed: int = 0,
) -> Streams:
    """The calibration, held-out benign, attack and mixed-account streams
    that `evaluate` measures, drawn with `rng` (and, for benign-style mixing,
    a generator of its own seeded from `seed`)."""
    table = TextTable()
    b_idx = table.add(benign.texts)
    a_idx = table.add(attack.texts)
    t_pool = templates or attack
    t_idx = table.add(t_pool.texts) if templates is not None else a_idx
    cal_groups, test_groups = _split(benign, rng)

    def remap(groups: dict[str, list[int]], idx: I64) -> dict[str, list[int]]:
        return {g: [int(idx[i]) for i in members] for g, members in groups.items()}

    cal_g, test_g = remap(cal_groups, b_idx), remap(test_groups, b_idx)
    attack_g = remap(attack.by_group(), a_idx)
    template_g = remap(t_pool.by_group(), t_idx)
    vocab = _vocab(benign.texts + attack.texts)
    n_words = min(n_attackers * stream_length, 4000)
    word_idx = table.add(_random_words(rng, vocab, n_words))
    test_all = [i for g in sorted(test_g) for i in test_g[g]]
    L = stream_length

    streams: list[Stream] = []
    for i in range(n_calibration):
        streams.append(Stream(f"cal-{i:04d}", "calibration", _benign(rng, cal_g, L)))
    for i in range(n_clients):
        texts_i, family = _benign_with_family(rng, test_g, L)
        streams.append(Stream(f"benign-{i:04d}", "benign", texts_i, family=family))
    for i in range(n_attackers):
        streams.append(Stream(f"harv-{i:03d}", "harvester", _uniform_groups(rng, attack_g, L)))
        streams.append(Stream(f"sweep-{i:03d}", "sweeper", _uniform_groups(rng, test_g, L)))
        streams.append(
            Stream(f"tmpl-{i:03d}", "template_sweeper", _uniform_groups(rng, template_g, L))
        )
        streams.append(Stream(f"rand-{i:03d}", "random_words", rng.choice(word_idx, size=L)))
        pop = np.array(rng.choice(test_all, size=L), dtype=np.int64)
        streams.append(Stream(f"pop-{i:03d}", "population_like", pop))
        for f in MIXES:
            base = _benign(rng, test_g, L)
            mixed, mask = _mixed(rng, base, f, lambda k: _uniform_groups(rng, attack_g, k))
            streams.append(Stream(f"mix{f:.2f}-{i:03d}", f"mixed_{f:.2f}", mixed, mask))
    # Benign-style mixing draws from its own generator, so the streams above
    # (and the --sybil run after) are those of earlier versions for a seed.
    same = np.random.default_rng([seed, 1])
    for i in range(n_attackers):
        for f in MIXES:
            base = _benign(same, test_g, L)
            mixed, mask = _mixed(same, base, f, lambda k: _uniform_groups(same, test_g, k))
            streams.append(Stream(f"same{f:.2f}-{i:03d}", f"mixed_same_{f:.2f}", mixed, mask))
    return Streams(table.texts, streams, cal_g, test_g, attack_g)


# ------------------------------------------------------------------ running


def embed_texts(
    embedder: Embedder, texts: Sequence[str], progress: Progress | None = None
) -> npt.NDArray[np.float32]:
    """Embeddings of `texts`, in order, in chunks of 2048; `progress` is
    told each chunk's size."""
    emb = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(texts), 2048):
        chunk = texts[start : start + 2048]
        emb[start : start + len(chunk)] = embedder.embed(chunk)
        if progress is not None:
            progress(len(chunk))
    return emb


def run_streams(
    space: Space,
    settings: Settings,
    streams: Sequence[Stream],
    texts: Sequence[str],
    cells: I64,
    *,
    emb: npt.NDArray[np.float32] | None = None,
    batch: int = 8192,
    progress: Progress | None = None,
) -> list[F64]:
    """Feeds the streams, interleaved, through a real SketchStore and returns
    each stream's checkpoint feature rows in order. `emb` (one row per text)
    feeds the stray tracker when the settings turn it on."""
    from spanwatch.detector import store_for

    store = store_for(space, settings, max_clients=len(streams) + 1)
    every = settings.scoring.checkpoint_every
    lengths = np.array([len(st.texts) for st in streams])
    order_pos, order_stream = [], []
    for pos in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > pos)
        order_pos.append(np.full(len(live), pos))
        order_stream.append(live)
    pos_all = np.concatenate(order_pos) if order_pos else np.zeros(0, dtype=np.int64)
    str_all = np.concatenate(order_stream) if order_stream else np.zeros(0, dtype=np.int64)
    ids = [st.client for st in streams]
    rows: list[list[F64]] = [[] for _ in streams]
    for start in range(0, len(pos_all), batch):
        ps, ss = pos_all[start : start + batch], str_all[start : start + batch]
        tix = np.array([streams[j].texts[p] for j, p in zip(ss, ps, strict=True)], dtype=np.int64)
        _, at, feats = store.update(
            [ids[j] for j in ss],
            [texts[t] for t in tix],
            cells[tix],
            ps.astype(np.float64),
            every,
            emb[tix] if emb is not None and store.stray_dim else None,
        )
        for i, row in zip(at.tolist(), feats, strict=True):
            rows[ss[i]].append(row)
        if progress is not None:
            progress(len(ps))
    width = len(store.feature_names)
    return [np.array(r) if r else np.zeros((0, width)) for r in rows]


@dataclass
class Sketched:
    """The streams of a run through the store: the texts' embeddings, the
    space, each stream's checkpoint rows and the signals they give."""

    emb: npt.NDArray[np.float32]
    space: Space
    rows: list[F64]
    signals: Signals


def sketch_streams(
    built: Streams,
    embedder: Embedder,
    settings: Settings,
    *,
    space: Space | None = None,
    progress: Callable[[str, int], Progress] | None = None,
) -> Sketched:
    """Embeds every distinct text once, fits the space on the calibration
    half of the benign pool only (unless given one), and feeds the streams
    through a real store."""
    texts = built.texts
    emb = embed_texts(embedder, texts, progress("embed", len(texts)) if progress else None)
    if space is None:
        cal_texts = sorted({i for members in built.cal_groups.values() for i in members})
        sp = settings.space
        space = Space.fit(
            emb[cal_texts],
            levels=settings.sketch.levels,
            seed=sp.seed,
            niter=sp.niter,
            min_points_per_cell=sp.min_points_per_cell,
            model_id=embedder.model_id,
        )
    space.configure(settings.space)  # cells as the service would find them
    cells = space.assign(emb)
    total = sum(len(s.texts) for s in built.streams)
    bar = progress("sketch", total) if progress else None
    rows = run_streams(space, settings, built.streams, texts, cells, emb=emb, progress=bar)
    names = SketchStore(levels=space.levels).feature_names
    return Sketched(emb, space, rows, Signals(space, names, strays=settings.sketch.strays))


# ------------------------------------------------------------------ metrics


def _first_alert(cal: Calibration, signals: Signals, rows: F64) -> tuple[float, float, F64, str]:
    """(peak evidence, queries at first alert or nan, coarse coverage curve,
    the signal that led to the first alert or "")."""
    if not len(rows):
        return 0.0, float("nan"), np.zeros(0), ""
    counts = rows[:, signals.col["count"]].astype(np.int64)
    ratio, s, z, p = evidence_steps(cal, signals, rows)
    curve = signals.matrix(rows)[:, 0]
    hit = np.flatnonzero(ratio >= cal.threshold)
    if not len(hit):
        return float(ratio.max()), float("nan"), curve, ""
    end = int(hit[0])
    return float(ratio.max()), float(counts[end]), curve, _lead(s, z, p, end, cal)


def _lead(s: F64, z: F64, p: F64, end: int, cal: Calibration) -> str:
    """The signal that gave most of the surprise the CUSUM gathered from its
    last zero up to checkpoint `end`: each checkpoint's surprise is credited
    to its most unusual signal."""
    zeros = np.flatnonzero(s[:end] == 0)
    start = int(zeros[-1]) + 1 if len(zeros) else 0
    top = p[start : end + 1].argmin(axis=1)
    credit = np.bincount(top, weights=z[start : end + 1], minlength=p.shape[1])
    return cal.signals[int(credit.argmax())]


def _qtd(first: F64) -> dict[str, float | None]:
    hit = first[~np.isnan(first)]
    if not len(hit):
        return {"median": None, "p90": None}
    return {"median": float(np.median(hit)), "p90": float(np.percentile(hit, 90))}


def _auc(neg: F64, pos: F64) -> float:
    if not len(neg) or not len(pos):
        return float("nan")
    both = np.concatenate([neg, pos])
    ranks = both.argsort().argsort().astype(float) + 1
    # average ranks of ties
    _, inv, cnt = np.unique(both, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / cnt)[inv]
    r_pos = ranks[len(neg) :].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


# ------------------------------------------------------------------ the run


def evaluate(
    benign: Pool,
    attack: Pool,
    embedder: Embedder,
    settings: Settings,
    *,
    templates: Pool | None = None,
    stream_length: int = 1500,
    n_clients: int = 400,
    n_calibration: int = 400,
    n_attackers: int = 100,
    target_fpr: float = 0.005,
    seed: int = 0,
    space: Space | None = None,
    progress: Callable[[str, int], Progress] | None = None,
    sybil: int = 0,
    confidence: float | None = None,
) -> EvalResult:
    """Builds every stream, calibrates on the calibration half of the benign
    pool (with `confidence`, see `conformal_quantile`), and measures on the
    held-out half."""
    rng = np.random.default_rng(seed)
    built = build_streams(
        rng, benign, attack, templates=templates, stream_length=stream_length,
        n_clients=n_clients, n_calibration=n_calibration, n_attackers=n_attackers, seed=seed,
    )  # fmt: skip
    streams, cal_g, test_g = built.streams, built.cal_groups, built.test_groups
    L = stream_length
    sk = sketch_streams(built, embedder, settings, space=space, progress=progress)
    texts, emb, space, rows, signals = built.texts, sk.emb, sk.space, sk.rows, sk.signals

    cal_rows = [r for s, r in zip(streams, rows, strict=True) if s.kind == "calibration"]
    half = len(cal_rows) // 2
    every = settings.scoring.checkpoint_every
    cal = fit_calibration(
        signals,
        cal_rows[:half],
        cal_rows[half:],
        target_fpr=target_fpr,
        stream_length=L,
        confidence=confidence,
        **settings.scoring.calibration_options(),
    )

    peaks: dict[str, list[float]] = {}
    first: dict[str, list[float]] = {}
    curves: dict[str, list[F64]] = {}
    leads: dict[str, Counter[str]] = {}
    for s, r in zip(streams, rows, strict=True):
        if s.kind == "calibration":
            continue
        pk, ft, cv, lead = _first_alert(cal, signals, r)
        peaks.setdefault(s.kind, []).append(pk)
        first.setdefault(s.kind, []).append(ft)
        curves.setdefault(s.kind, []).append(cv)
        if lead:
            leads.setdefault(s.kind, Counter())[lead] += 1
    pk_arr = {k: np.array(v) for k, v in peaks.items()}
    ft_arr = {k: np.array(v) for k, v in first.items()}

    def rate(kind: str) -> float:
        return float(np.mean(~np.isnan(ft_arr[kind])))

    report: dict[str, Any] = {
        "benign_fpr": rate("benign"),
        "tpr": {k: rate(k) for k in SCENARIOS},
        "mixed_tpr": {f"{f:.2f}": rate(f"mixed_{f:.2f}") for f in MIXES},
        "queries_to_detect": {k: _qtd(ft_arr[k]) for k in SCENARIOS},
        "stream_length": L,
        "n_clients": n_clients,
    }
    families: dict[str, list[bool]] = {}
    benign_streams = [st for st in streams if st.kind == "benign"]
    for st, ft in zip(benign_streams, ft_arr["benign"], strict=True):
        families.setdefault(st.family, []).append(not np.isnan(ft))
    bound_at, bound = cal.benign_bound()  # at the confidence asked for, else 0.9
    details = {
        "benign_fpr_by_family": {
            f: {"clients": len(v), "fpr": float(np.mean(v))} for f, v in sorted(families.items())
        },
        # per kind of client, how many first alerts each signal led to
        "lead_signals": {k: dict(c.most_common()) for k, c in sorted(leads.items())},
        "population_like_alert_rate": rate("population_like"),
        "mixed_queries_to_detect": {f"{f:.2f}": _qtd(ft_arr[f"mixed_{f:.2f}"]) for f in MIXES},
        # the mixed accounts again, with benign-style stolen queries
        "same_style_mixed_tpr": {f"{f:.2f}": rate(f"mixed_same_{f:.2f}") for f in MIXES},
        "same_style_mixed_queries_to_detect": {
            f"{f:.2f}": _qtd(ft_arr[f"mixed_same_{f:.2f}"]) for f in MIXES
        },
        "auc": {k: _auc(pk_arr["benign"], pk_arr[k]) for k in (*SCENARIOS, *mixed_kinds())},
        "threshold": cal.threshold,
        # where the threshold falls over bootstrap resamples of the calibration peaks (90%)
        "threshold_range": list(cal.threshold_range()),
        "drift": cal.drift,
        "target_fpr": target_fpr,
        "confidence": confidence,
        # what the calibration's own peaks say the benign rate is at most
        "benign_fpr_bound": {"confidence": bound_at, "rate": bound},
        "calibration_clients": {"reference": cal.clients_ref, "threshold": cal.clients_threshold},
        "bags": cal.bags,
        "bag_share": settings.scoring.bag_share,
        "attackers_per_scenario": n_attackers,
        "space_levels": space.levels,
        "signals": cal.signals,
        "seed": seed,
        "texts": len(texts),
        "benign_groups": {"calibration": len(cal_g), "held_out": len(test_g)},
    }
    width = max((len(c) for cs in curves.values() for c in cs), default=0)
    curve_arr = {
        k: np.array([np.pad(c, (0, width - len(c)), constant_values=np.nan) for c in cs])
        for k, cs in curves.items()
    }
    groups: dict[str, Any] = {}
    if sybil:
        groups = _sybil(
            rng, space, settings, cal, signals, cal_rows, test_g, built.attack_groups, texts, emb,
            n=sybil, length=L, n_groups=max(10, n_attackers // 5), n_benign=n_clients,
            progress=progress,
        )  # fmt: skip
    return EvalResult(report, details, pk_arr, ft_arr, curve_arr, every, cal.threshold, groups)


def _sybil(
    rng: np.random.Generator,
    space: Space,
    settings: Settings,
    cal: Calibration,
    signals: Signals,
    cal_rows: Sequence[F64],
    test_g: dict[str, list[int]],
    attack_g: dict[str, list[int]],
    texts: Sequence[str],
    emb: npt.NDArray[np.float32],
    *,
    n: int,
    length: int,
    n_groups: int,
    n_benign: int,
    progress: Callable[[str, int], Progress] | None,
) -> dict[str, Any]:
    """Group thresholds from the calibration clients, then the sybil run."""
    from spanwatch.calibrate import group_sums, max_evidence
    from spanwatch.sybil import build_streams, run_sybil

    if n < 2:
        raise ConfigError(f"--sybil needs at least 2 accounts, got {n}")
    per = length // n
    if per < settings.scoring.checkpoint_every:
        raise ConfigError(
            f"--sybil {n} leaves {per} queries per account, fewer than one checkpoint "
            f"({settings.scoring.checkpoint_every}): use a longer --stream-length"
        )
    peaks = np.array([max_evidence(cal, signals, r) for r in cal_rows])
    cal.group_sums = group_sums(peaks / cal.threshold, settings.groups.target_fpr)
    streams = build_streams(
        rng,
        n,
        per,
        n_groups,
        n_benign,
        lambda k: _benign(rng, test_g, k),
        lambda k: _uniform_groups(rng, attack_g, k),
    )
    bar = progress("groups", sum(len(s.texts) for s in streams)) if progress else None
    res, _ = run_sybil(space, settings, cal, streams, texts, emb, progress=bar)
    res.update(
        {
            "accounts_per_group": n,
            "queries_per_account": per,
            "target_fpr": settings.groups.target_fpr,
            "member_floor": settings.groups.member_floor,
            "min_jaccard": settings.groups.min_jaccard,
        }
    )
    return res
