"""Properties of the Rust `SketchStore` through its Python API: MinHash
tracks the true Jaccard index, merge is commutative, snapshots round-trip,
and `update` takes any Unicode text."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spanwatch._core import SketchStore

LEVELS = (16, 256, 4096)
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Statistical properties run the same examples every time: a pass stays a pass.
STATS = settings(PROPS, derandomize=True)

Event = tuple[str, str, tuple[int, int, int], float]

cell_rows = st.tuples(
    st.integers(0, LEVELS[0] - 1), st.integers(0, LEVELS[1] - 1), st.integers(0, LEVELS[2] - 1)
)
finite_ts = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
secrets = st.binary(min_size=0, max_size=16)


def feed(store: SketchStore, events: Sequence[Event], checkpoint_every: int = 0) -> None:
    cells = np.array([e[2] for e in events], dtype=np.int64).reshape(len(events), len(LEVELS))
    ts = np.array([e[3] for e in events], dtype=np.float64)
    store.update([e[0] for e in events], [e[1] for e in events], cells, ts, checkpoint_every)


def simple_events(client: str, prompts: Sequence[str]) -> list[Event]:
    return [(client, p, (i % 16, i % 256, i % 4096), float(i)) for i, p in enumerate(prompts)]


def tolerance(truth: float, num_perm: int) -> float:
    """Five standard errors of a mean of num_perm Bernoulli(J) draws, plus slack."""
    return 5.0 * math.sqrt(truth * (1.0 - truth) / num_perm) + 0.03


# --- MinHash ---------------------------------------------------------------------------------


@STATS
@given(
    only_a=st.integers(0, 120),
    both=st.integers(0, 120),
    only_b=st.integers(0, 120),
    two_words=st.booleans(),
    secret=secrets,
)
def test_jaccard_estimate_tracks_true_jaccard_of_single_shingle_prompts(
    only_a: int, both: int, only_b: int, two_words: bool, secret: bytes
) -> None:
    """Each prompt has at most two words, fewer than the shingle size, so it is
    exactly one shingle: the clients' shingle sets are the token ranges."""
    total = only_a + both + only_b
    assume(only_a + both > 0 and both + only_b > 0)  # a client with no prompt does not exist

    def prompt(i: int) -> str:
        return f"w{i} v{i}" if two_words else f"w{i}"

    store = SketchStore(secret=secret)
    feed(store, simple_events("a", [prompt(i) for i in range(0, only_a + both)]))
    feed(store, simple_events("b", [prompt(i) for i in range(only_a, total)]))
    truth = both / total
    est = store.jaccard("a", "b")
    assert abs(est - truth) <= tolerance(truth, store.num_perm), (est, truth)
    assert store.jaccard("b", "a") == est


WORDS = ["red", "green", "blue", "gold"]
long_prompts = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=4, max_size=8).map(" ".join), min_size=1, max_size=6
)


def three_shingles(prompts: Sequence[str]) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for p in prompts:
        words = re.findall(r"[a-z0-9]+", p.lower())
        assert len(words) > 3  # only word windows: no short-prompt shingles
        out.update(tuple(words[i : i + 3]) for i in range(len(words) - 2))
    return out


@STATS
@given(a=long_prompts, b=long_prompts, secret=secrets)
def test_jaccard_estimate_tracks_true_jaccard_of_word_windows(
    a: list[str], b: list[str], secret: bytes
) -> None:
    """Prompts of four or more words from a four-word vocabulary: their
    3-word windows overlap often, and the estimate follows the true index."""
    store = SketchStore(secret=secret)
    feed(store, simple_events("a", a))
    feed(store, simple_events("b", b))
    sa, sb = three_shingles(a), three_shingles(b)
    truth = len(sa & sb) / len(sa | sb)
    est = store.jaccard("a", "b")
    assert abs(est - truth) <= tolerance(truth, store.num_perm), (est, truth)


# --- merge --------------------------------------------------------------------------------------

client_traffic = st.lists(
    st.tuples(st.text(max_size=40), cell_rows, finite_ts), min_size=1, max_size=25
)


@PROPS
@given(a=client_traffic, b=client_traffic)
def test_merge_is_commutative(
    a: list[tuple[str, tuple[int, int, int], float]],
    b: list[tuple[str, tuple[int, int, int], float]],
) -> None:
    store = SketchStore(secret=b"merge")
    feed(store, [("a", *e) for e in a] + [("b", *e) for e in b])
    store.merge("a", "x")
    store.merge("b", "x")
    store.merge("b", "y")
    store.merge("a", "y")
    fx, fy = store.features(["x", "y"])
    np.testing.assert_array_equal(fx, fy)
    np.testing.assert_array_equal(fx, store.union_features(["a", "b"]))
    np.testing.assert_array_equal(fx, store.union_features(["b", "a"]))
    assert fx[0] == len(a) + len(b)
    np.testing.assert_array_equal(store.histograms(["x"]), store.histograms(["y"]))
    assert store.jaccard("x", "y") == 1.0


# --- snapshots ----------------------------------------------------------------------------------

events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["c0", "c1", "c2", "c3", "c4", "c5", ""]),
        st.text(max_size=60),
        cell_rows,
        finite_ts,
    ),
    max_size=60,
)


def store_state(s: SketchStore) -> tuple[list[str], npt.NDArray[np.float64], int]:
    ids = s.client_ids()
    return ids, s.features(ids), s.evictions


@PROPS
@given(
    events=events_strategy,
    max_clients=st.integers(1, 8),
    idle_ttl=st.sampled_from([0.0, 1e3]),
    secret=secrets,
)
def test_snapshot_round_trip_for_any_events(
    events: list[Event], max_clients: int, idle_ttl: float, secret: bytes
) -> None:
    store = SketchStore(secret=secret, max_clients=max_clients, idle_ttl=idle_ttl)
    if events:
        feed(store, events, checkpoint_every=3)
    data = store.snapshot()
    back = SketchStore.restore(data, secret=secret)
    ids, feats, evictions = store_state(store)
    ids_b, feats_b, evictions_b = store_state(back)
    assert ids_b == ids
    np.testing.assert_array_equal(feats_b, feats)
    assert evictions_b == evictions
    np.testing.assert_array_equal(back.histograms(ids), store.histograms(ids))
    assert back.snapshot() == data
    for cid in ids:
        other = SketchStore(secret=secret)
        assert other.restore_client(store.snapshot_client(cid)) == cid
        np.testing.assert_array_equal(other.features([cid]), store.features([cid]))


# --- any text ---------------------------------------------------------------------------------


@PROPS
@given(
    batch=st.lists(st.tuples(st.text(max_size=12), st.text(), cell_rows), min_size=1, max_size=40)
)
def test_update_accepts_any_unicode_text_including_empty(
    batch: list[tuple[str, str, tuple[int, int, int]]],
) -> None:
    """Empty and word-less prompts are sketched like any other: `update` never
    raises for text, and every event counts for its client."""
    store = SketchStore(secret=b"text")
    events = [(cid, prompt, cells, float(i)) for i, (cid, prompt, cells) in enumerate(batch)]
    near_dup, _, _ = store.update(
        [e[0] for e in events],
        [e[1] for e in events],
        np.array([e[2] for e in events], dtype=np.int64),
        np.array([e[3] for e in events]),
    )
    assert near_dup.shape == (len(events),)
    counts = Counter(e[0] for e in events)
    assert sorted(store.client_ids()) == sorted(counts)
    ids = list(counts)
    feats = store.features(ids)
    assert feats[:, 0].tolist() == [float(counts[c]) for c in ids]
    finite = [i for i, n in enumerate(store.feature_names) if n != "kl_ref"]
    assert np.isfinite(feats[:, finite]).all()
    assert ((feats[:, 3] >= 0.0) & (feats[:, 3] <= feats[:, 0])).all()  # distinct <= count


def test_empty_prompt_is_counted_and_repeats_are_near_duplicates() -> None:
    store = SketchStore(secret=b"text")
    feed(store, simple_events("a", ["", ""]))
    row = store.features(["a"])[0]
    assert row[0] == 2.0
    assert row[4] == 0.5  # the second empty prompt duplicates the first
