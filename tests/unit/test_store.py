"""The Python API of the Rust `SketchStore`: features, near duplicates,
input checks that leave the store untouched, eviction, config checks,
snapshots, merge and checkpoints."""

from __future__ import annotations

import pickle
import random
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch._core import SketchStore, snapshot_version
from spanwatch.errors import ConfigError, InputError, SnapshotError, SpanwatchError

SECRET = b"unit-test-secret"
LEVELS = (16, 256, 4096)
FEATURE_NAMES = [
    "count",
    "first_ts",
    "last_ts",
    "distinct_prompts",
    "near_dup_share",
    "entropy",
    "alert_level",
    "evidence",
    "kl_ref",
    "singletons",
    "cells_16",
    "coverage_16",
    "novelty_16",
    "cells_256",
    "coverage_256",
    "novelty_256",
    "cells_4096",
    "coverage_4096",
    "novelty_4096",
    "strays",
    "stray_mass",
]
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}

Update = tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.float64]]


def cells_for(n: int, start: int = 0, levels: Sequence[int] = LEVELS) -> npt.NDArray[np.int64]:
    """n rows of in-range cells, a different cell per row at every level."""
    i = np.arange(start, start + n, dtype=np.int64)[:, None]
    out: npt.NDArray[np.int64] = (i * np.array([1, 7, 97], dtype=np.int64)[: len(levels)]) % (
        np.array(levels, dtype=np.int64)
    )
    return out


def feed(
    store: SketchStore,
    ids: Sequence[str],
    prompts: Sequence[str],
    ts: Sequence[float] | None = None,
    *,
    start: int = 0,
    checkpoint_every: int = 0,
) -> Update:
    n = len(ids)
    times = np.asarray(ts if ts is not None else np.arange(start, start + n), dtype=np.float64)
    return store.update(list(ids), list(prompts), cells_for(n, start), times, checkpoint_every)


def new_store(reference: bool = False, **kwargs: object) -> SketchStore:
    """A store; with `reference`, a uniform reference distribution, so every
    feature (kl_ref included) is finite."""
    s = SketchStore(secret=SECRET, **kwargs)  # type: ignore[arg-type]
    if reference:
        cells = s.levels[s.hist_level]
        s.set_reference([1.0] * cells)
    return s


@pytest.fixture
def store() -> SketchStore:
    s = new_store()
    feed(
        s,
        ["alice", "bob", "alice", "carol"],
        [
            "how do I bake sourdough bread at home",
            "what is the rust borrow checker",
            "best flour for a sourdough starter",
            "translate good morning into french",
        ],
    )
    return s


def state(s: SketchStore) -> tuple[int, list[str], npt.NDArray[np.float64]]:
    ids = s.client_ids()
    return len(s), ids, s.features(ids)


def assert_same_state(a: SketchStore, b: SketchStore) -> None:
    la, ia, fa = state(a)
    lb, ib, fb = state(b)
    assert (la, ia) == (lb, ib)
    np.testing.assert_array_equal(fa, fb)


# --- shape and features -----------------------------------------------------------------


def test_kl_ref_is_nan_without_a_reference_and_zero_for_the_reference_itself() -> None:
    s = new_store(reference=False, levels=[4, 16], hist_level=0)
    cells = np.array([[c, c] for c in range(4)], dtype=np.int64)
    s.update(["a"] * 4, ["w x y", "w z", "q r s t", "u"], cells, np.arange(4.0))
    col = s.feature_names.index("kl_ref")
    assert np.isnan(s.features(["a"])[0, col])
    s.set_reference([0.25] * 4)
    assert s.features(["a"])[0, col] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="needs 4 probabilities"):
        s.set_reference([1.0] * 3)


def test_update_returns_a_flag_per_event_and_no_checkpoints_by_default() -> None:
    s = new_store()
    near_dup, at, rows = feed(s, ["a", "b", "a"], ["one two three", "four five", "six"])
    assert near_dup.dtype == np.bool_
    assert near_dup.shape == (3,)
    assert at.dtype == np.int64
    assert at.shape == (0,)
    assert rows.dtype == np.float64
    assert rows.shape == (0, len(FEATURE_NAMES))


def test_feature_names_and_features_shape(store: SketchStore) -> None:
    assert store.feature_names == FEATURE_NAMES
    f = store.features(["alice", "bob", "alice"])
    assert f.shape == (3, len(FEATURE_NAMES))
    assert f.dtype == np.float64
    np.testing.assert_array_equal(f[0], f[2])
    assert store.features([]).shape == (0, len(FEATURE_NAMES))


def test_features_count_events_per_client(store: SketchStore) -> None:
    f = store.features(["alice", "bob", "carol"])
    assert f[:, COL["count"]].tolist() == [2.0, 1.0, 1.0]
    assert f[:, COL["first_ts"]].tolist() == [0.0, 1.0, 3.0]
    assert f[:, COL["last_ts"]].tolist() == [2.0, 1.0, 3.0]
    assert f[:, COL["distinct_prompts"]] == pytest.approx([2.0, 1.0, 1.0], abs=0.05)
    # alice's two events fell in two different cells at every level
    assert f[0, COL["cells_16"]] == 2.0
    assert f[0, COL["coverage_256"]] == 2.0 / 256
    assert f[0, COL["cells_4096"]] == 2.0
    assert len(store) == 3
    assert "alice" in store
    assert "dave" not in store


def test_unknown_client_row_has_count_zero_and_nan_times(store: SketchStore) -> None:
    row = store.features(["nobody"])[0]
    assert row[COL["count"]] == 0.0
    assert np.isnan(row[COL["first_ts"]])
    assert np.isnan(row[COL["last_ts"]])
    others = np.delete(row, [COL["first_ts"], COL["last_ts"]])
    assert (others == 0.0).all()
    assert "nobody" not in store


def test_histograms_hold_the_hist_level_counts(store: SketchStore) -> None:
    h = store.histograms(["alice", "bob", "nobody"])
    assert h.shape == (3, LEVELS[store.hist_level])
    assert h.dtype == np.uint32
    assert h.sum(axis=1).tolist() == [2, 1, 0]


def test_repeated_prompt_is_flagged_near_duplicate() -> None:
    s = new_store()
    prompt = "list every capital city in europe with its population"
    near_dup, _, _ = feed(s, ["a", "a", "a"], [prompt, "what is a monad in haskell", prompt])
    assert near_dup.tolist() == [False, False, True]
    assert s.features(["a"])[0, COL["near_dup_share"]] == pytest.approx(1 / 3)
    # distinct prompts is a HyperLogLog estimate: the repeat adds nothing to it.
    # (Two prompts share one of its 256 registers, and count as one, for about
    # one secret in 256, as these two do under SECRET since snapshot version 3.)
    feed(s, ["b", "b"], [prompt, "what is a monad in haskell"], start=3)
    distinct = s.features(["a", "b"])[:, COL["distinct_prompts"]]
    assert distinct[0] == distinct[1]
    assert 1.0 - 0.05 <= distinct[0] <= 2.0 + 0.05


def test_case_and_punctuation_do_not_hide_a_duplicate() -> None:
    s = new_store()
    near_dup, _, _ = feed(s, ["a", "a"], ["Hello, World! How are you?", "hello world how ARE you"])
    assert near_dup.tolist() == [False, True]


def test_same_prompt_from_another_client_is_not_a_near_duplicate() -> None:
    s = new_store()
    near_dup, _, _ = feed(s, ["a", "b"], ["same words in both", "same words in both"])
    assert near_dup.tolist() == [False, False]


def test_alert_level_is_stored_with_the_client(store: SketchStore) -> None:
    store.set_alert_level("bob", 2)
    assert store.features(["bob"])[0, COL["alert_level"]] == 2.0
    with pytest.raises(KeyError):
        store.set_alert_level("nobody", 1)


def test_remove_drops_a_client(store: SketchStore) -> None:
    assert store.remove("bob") is True
    assert store.remove("bob") is False
    assert "bob" not in store
    assert len(store) == 2


def test_properties_reflect_the_config() -> None:
    s = new_store(levels=[8, 64], hist_level=0, num_perm=64, band_count=4, max_clients=9)
    assert s.levels == [8, 64]
    assert s.hist_level == 0
    assert s.num_perm == 64
    assert s.max_clients == 9
    assert s.feature_names[-5:-2] == ["cells_64", "coverage_64", "novelty_64"]
    assert len(s.key_fingerprint) == 16
    assert new_store().key_fingerprint == s.key_fingerprint
    assert SketchStore(secret=b"other").key_fingerprint != s.key_fingerprint


# --- bad input ---------------------------------------------------------------------------

GOOD_IDS = ["alice", "new-client"]
GOOD_PROMPTS = ["first prompt here", "second prompt here"]


def good_cells() -> npt.NDArray[np.int64]:
    return cells_for(2, start=10)


def good_ts() -> npt.NDArray[np.float64]:
    return np.array([10.0, 11.0])


def bad_cell(level: int, value: int) -> npt.NDArray[np.int64]:
    c = good_cells()
    c[1, level] = value  # the last event is the bad one: nothing before it may stick
    return c


BAD_BATCHES: dict[
    str, tuple[list[str], list[str], npt.NDArray[np.int64], npt.NDArray[np.float64]]
] = {
    "fewer prompts": (GOOD_IDS, GOOD_PROMPTS[:1], good_cells(), good_ts()),
    "more prompts": (GOOD_IDS, [*GOOD_PROMPTS, "x"], good_cells(), good_ts()),
    "fewer timestamps": (GOOD_IDS, GOOD_PROMPTS, good_cells(), good_ts()[:1]),
    "fewer cell rows": (GOOD_IDS, GOOD_PROMPTS, good_cells()[:1], good_ts()),
    "negative cell": (GOOD_IDS, GOOD_PROMPTS, bad_cell(0, -1), good_ts()),
    "cell == level size (coarse)": (GOOD_IDS, GOOD_PROMPTS, bad_cell(0, 16), good_ts()),
    "cell == level size (fine)": (GOOD_IDS, GOOD_PROMPTS, bad_cell(2, 4096), good_ts()),
    "huge cell": (GOOD_IDS, GOOD_PROMPTS, bad_cell(1, 2**40), good_ts()),
    "two cell columns": (GOOD_IDS, GOOD_PROMPTS, good_cells()[:, :2].copy(), good_ts()),
    "four cell columns": (
        GOOD_IDS,
        GOOD_PROMPTS,
        np.hstack([good_cells(), good_cells()[:, :1]]),
        good_ts(),
    ),
    "NaN ts": (GOOD_IDS, GOOD_PROMPTS, good_cells(), np.array([10.0, np.nan])),
    "inf ts": (GOOD_IDS, GOOD_PROMPTS, good_cells(), np.array([10.0, np.inf])),
    "-inf ts": (GOOD_IDS, GOOD_PROMPTS, good_cells(), np.array([-np.inf, 11.0])),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_raises_input_error_and_changes_nothing(store: SketchStore, case: str) -> None:
    ids, prompts, cells, ts = BAD_BATCHES[case]
    before = store.snapshot()
    len_before, ids_before, feats_before = state(store)
    with pytest.raises(InputError):
        store.update(ids, prompts, cells, ts)
    assert len(store) == len_before
    assert store.client_ids() == ids_before
    assert "new-client" not in store
    np.testing.assert_array_equal(store.features(ids_before), feats_before)
    assert store.snapshot() == before


def test_input_error_message_names_the_event_and_cell(store: SketchStore) -> None:
    with pytest.raises(InputError, match=r"event 1: cell 4096 is outside level of 4096 cells"):
        store.update(GOOD_IDS, GOOD_PROMPTS, bad_cell(2, 4096), good_ts())
    with pytest.raises(InputError, match=r"event 1: timestamp is not finite"):
        store.update(GOOD_IDS, GOOD_PROMPTS, good_cells(), np.array([1.0, np.nan]))
    with pytest.raises(InputError, match=r"one column per level \(3\), got 2"):
        store.update(GOOD_IDS, GOOD_PROMPTS, good_cells()[:, :2].copy(), good_ts())


def test_input_error_is_a_value_error_and_a_spanwatch_error() -> None:
    assert issubclass(InputError, ValueError)
    assert issubclass(InputError, SpanwatchError)


def test_empty_batch_is_a_no_op(store: SketchStore) -> None:
    before = store.snapshot()
    near_dup, at, rows = store.update(
        [], [], np.zeros((0, 3), dtype=np.int64), np.zeros(0), checkpoint_every=1
    )
    assert near_dup.shape == (0,)
    assert at.shape == (0,)
    assert rows.shape == (0, len(FEATURE_NAMES))
    assert store.snapshot() == before


@pytest.mark.parametrize("where", ["prompt", "client_id"])
def test_lone_surrogate_text_raises_input_error(store: SketchStore, where: str) -> None:
    ids = ["alice", "x\ud800" if where == "client_id" else "new-client"]
    prompts = ["fine", "bad \udfff" if where == "prompt" else "fine too"]
    with pytest.raises(InputError):
        store.update(ids, prompts, good_cells(), good_ts())


# --- eviction -----------------------------------------------------------------------------


def test_client_ids_are_listed_least_recently_updated_first() -> None:
    s = new_store()
    feed(s, ["a", "b", "c", "a"], ["p1", "p2", "p3", "p4"])
    assert s.client_ids() == ["b", "c", "a"]


def test_lru_eviction_at_max_clients_drops_least_recently_updated() -> None:
    s = new_store(max_clients=3)
    feed(s, ["a", "b", "c"], ["p1", "p2", "p3"])
    feed(s, ["a"], ["p4"], start=3)  # a is now the most recent; b is the least
    assert s.evictions == 0
    feed(s, ["d"], ["p5"], start=4)
    assert len(s) == 3
    assert "b" not in s
    assert s.client_ids() == ["c", "a", "d"]
    assert s.evictions == 1
    feed(s, ["e", "f"], ["p6", "p7"], start=5)
    assert s.client_ids() == ["d", "e", "f"]
    assert s.evictions == 3


def test_evicted_client_starts_again_from_zero() -> None:
    s = new_store(max_clients=1)
    feed(s, ["a", "a", "b", "a"], ["p1", "p2", "p3", "p4"])
    assert s.client_ids() == ["a"]
    assert s.features(["a"])[0, COL["count"]] == 1.0
    assert s.evictions == 2


def test_idle_ttl_evicts_clients_idle_longer_than_the_ttl() -> None:
    s = new_store(idle_ttl=100.0)
    feed(s, ["old", "new"], ["p1", "p2"], ts=[0.0, 50.0])
    assert len(s) == 2
    feed(s, ["new"], ["p3"], ts=[99.0])
    assert "old" in s  # idle for 99 s, under the ttl
    feed(s, ["new"], ["p4"], ts=[150.0])
    assert s.client_ids() == ["new"]
    assert s.evictions == 1


def test_evict_idle_with_explicit_cutoff_returns_how_many_went() -> None:
    s = new_store()
    feed(s, ["a", "b", "c"], ["p1", "p2", "p3"], ts=[1.0, 2.0, 3.0])
    assert s.evict_idle(2.5) == 2
    assert s.client_ids() == ["c"]
    assert s.evictions == 2
    assert s.evict_idle(0.0) == 0


def test_idle_ttl_eviction_does_not_depend_on_batch_cuts() -> None:
    events = [("a", "p one", 0.0), ("b", "p two", 200.0), ("a", "p three", 201.0)]

    def run(cut: int) -> tuple[list[list[float]], list[float], int]:
        s = new_store(reference=True, idle_ttl=100.0)
        rows: list[list[float]] = []
        for i in range(0, len(events), cut):
            chunk = events[i : i + cut]
            _, _, r = feed(
                s,
                [e[0] for e in chunk],
                [e[1] for e in chunk],
                ts=[e[2] for e in chunk],
                start=i,
                checkpoint_every=1,
            )
            rows.extend(r.tolist())
        return rows, s.features(["a"])[0].tolist(), s.evictions

    assert run(1) == run(len(events))


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hist_level": 3}, "hist_level 3 is not a level index"),
        ({"levels": [8, 64], "hist_level": 2}, "hist_level 2 is not a level index"),
        ({"band_count": 40, "band_rows": 4}, "band_count * band_rows (160) exceeds num_perm"),
        ({"num_perm": 16, "band_count": 8, "band_rows": 4}, "exceeds num_perm (16)"),
        ({"levels": []}, "levels must hold 1 to 8 entries"),
        ({"levels": [2] * 9}, "levels must hold 1 to 8 entries"),
        ({"levels": [1, 16]}, "each level must have 2 to"),
        ({"levels": [2**17, 2**18], "hist_level": 0}, "histogram level may have at most"),
        ({"num_perm": 4}, "num_perm must be 8 to 1024"),
        ({"num_perm": 2048}, "num_perm must be 8 to 1024"),
        ({"shingle_size": 0}, "shingle_size must be 1 to 8"),
        ({"hll_precision": 3}, "hll_precision must be 4 to 16"),
        ({"band_count": 0}, "band_count and band_rows must be positive"),
        ({"recent_prompts": 0}, "recent_prompts must be 1 to 4096"),
        ({"max_clients": 0}, "max_clients must be 1 to"),
        ({"idle_ttl": -1.0}, "idle_ttl must be a finite number >= 0"),
        ({"idle_ttl": float("nan")}, "idle_ttl must be a finite number >= 0"),
        ({"idle_ttl": float("inf")}, "idle_ttl must be a finite number >= 0"),
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        new_store(**kwargs)
    assert needle in str(info.value)


# --- snapshots ------------------------------------------------------------------------------


def test_snapshot_restore_round_trip(store: SketchStore) -> None:
    store.set_alert_level("carol", 1)
    data = store.snapshot()
    assert isinstance(data, bytes)
    back = SketchStore.restore(data, secret=SECRET)
    assert_same_state(store, back)
    assert back.evictions == store.evictions
    assert back.key_fingerprint == store.key_fingerprint
    assert back.levels == store.levels
    assert back.snapshot() == data


def test_restored_store_keeps_hashing_like_the_original(store: SketchStore) -> None:
    back = SketchStore.restore(store.snapshot(), secret=SECRET)
    args = (["alice", "zed"], ["best flour for a sourdough starter", "new words"])
    d1, _, _ = feed(store, *args, start=20)
    d2, _, _ = feed(back, *args, start=20)
    assert d1.tolist() == d2.tolist() == [True, False]
    assert_same_state(store, back)
    assert store.jaccard("alice", "zed") == back.jaccard("alice", "zed")


def test_snapshot_keeps_evictions_and_lru_order() -> None:
    s = new_store(max_clients=2)
    feed(s, ["a", "b", "c", "b"], ["p1", "p2", "p3", "p4"])
    back = SketchStore.restore(s.snapshot(), secret=SECRET)
    assert back.client_ids() == ["c", "b"]
    assert back.evictions == 1
    assert back.max_clients == 2


def test_snapshot_of_empty_store_round_trips() -> None:
    back = SketchStore.restore(new_store().snapshot(), secret=SECRET)
    assert len(back) == 0
    assert back.client_ids() == []


def test_snapshot_version_is_four() -> None:
    # 2 added each client's sequential-test state (evidence); 3 came with new
    # shingle and densification hashes, so version 2 signatures do not mix in;
    # 4 added the stray tracker (version 3 still reads, without one)
    assert snapshot_version() == 4


def resealed(data: bytes, version: int) -> bytes:
    """`data` with its format version replaced and a valid checksum again."""
    body = bytearray(data[:-4])
    struct.pack_into("<H", body, 8, version)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_snapshot_of_an_older_sketch_format_is_refused(store: SketchStore) -> None:
    """A well-formed snapshot of version 2 holds signatures of other hashes:
    refused with a reason, never folded in with new ones."""
    old = snapshot_version() - 2
    with pytest.raises(SnapshotError, match="older sketch format"):
        SketchStore.restore(resealed(store.snapshot(), old), secret=SECRET)
    other = new_store()
    with pytest.raises(SnapshotError, match="older sketch format"):
        other.restore_client(resealed(store.snapshot_client("alice"), old))
    assert len(other) == 0
    with pytest.raises(SnapshotError, match="newer build"):
        other.restore_client(resealed(store.snapshot_client("alice"), old + 3))
    # the same bytes under the current version restore: only the version differs
    assert other.restore_client(resealed(store.snapshot_client("alice"), old + 2)) == "alice"


def test_restore_with_wrong_secret_raises_snapshot_error(store: SketchStore) -> None:
    with pytest.raises(SnapshotError, match="different secret key"):
        SketchStore.restore(store.snapshot(), secret=b"not the secret")
    with pytest.raises(SnapshotError, match="different secret key"):
        SketchStore.restore(store.snapshot())


def test_restore_of_every_truncation_raises_snapshot_error(store: SketchStore) -> None:
    data = store.snapshot()
    for n in range(len(data)):
        with pytest.raises(SnapshotError):
            SketchStore.restore(data[:n], secret=SECRET)


def test_restore_with_any_flipped_byte_raises_snapshot_error(store: SketchStore) -> None:
    data = store.snapshot()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01 << (i % 8)
        with pytest.raises(SnapshotError):
            SketchStore.restore(bytes(bad), secret=SECRET)


def test_restore_with_trailing_bytes_raises_snapshot_error(store: SketchStore) -> None:
    with pytest.raises(SnapshotError, match="trailing bytes"):
        SketchStore.restore(store.snapshot() + b"\x00", secret=SECRET)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "bad magic"),
        (b"SPANWTCH", "truncated"),
        (b"PK\x03\x04 a zip file", "bad magic"),
        (b"SPANWTCH" + bytes(64), "version 0 was written by an older sketch format"),
    ],
)
def test_restore_of_foreign_bytes_raises_snapshot_error(data: bytes, needle: str) -> None:
    with pytest.raises(SnapshotError, match=needle):
        SketchStore.restore(data, secret=SECRET)


def test_restore_of_random_garbage_raises_snapshot_error() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        junk = rng.randbytes(rng.randrange(0, 4000))
        if rng.random() < 0.5:
            junk = b"SPANWTCH\x01\x00\x01\x00" + junk
        with pytest.raises(SnapshotError):
            SketchStore.restore(junk, secret=SECRET)


def test_restore_of_corrupt_body_with_valid_checksum_never_crashes(store: SketchStore) -> None:
    """CRC-32 is no MAC: re-sealed random corruption must still give either a
    SnapshotError or a store that works, never a panic or another exception."""
    data = store.snapshot()
    header, body = data[:28], data[28:-4]
    rng = random.Random(99)
    outcomes = {"refused": 0, "restored": 0}
    for _ in range(400):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        sealed = header + bytes(mutated)
        sealed += struct.pack("<I", zlib.crc32(sealed))
        try:
            back = SketchStore.restore(sealed, secret=SECRET)
        except SnapshotError as e:
            assert "checksum" not in str(e)  # the re-sealing is right; the body was judged
            outcomes["refused"] += 1
            continue
        outcomes["restored"] += 1
        ids = back.client_ids()
        back.features(ids)
        back.union_features(ids)
        back.histograms(ids)
        feed(back, ["alice", "zed"], ["more text", "other text"], start=30, checkpoint_every=2)
        SketchStore.restore(back.snapshot(), secret=SECRET)
    assert outcomes["restored"] > 0
    assert outcomes["refused"] > 0


def test_store_snapshot_is_not_a_client_snapshot(store: SketchStore) -> None:
    with pytest.raises(SnapshotError, match="expected a snapshot of a store"):
        SketchStore.restore(store.snapshot_client("alice"), secret=SECRET)
    with pytest.raises(SnapshotError, match="expected a snapshot of a client"):
        store.restore_client(store.snapshot())


def test_client_snapshot_restores_into_another_store(store: SketchStore) -> None:
    data = store.snapshot_client("alice")
    other = new_store(max_clients=5)  # the memory bound may differ
    feed(other, ["zed"], ["something else"])
    assert other.restore_client(data) == "alice"
    np.testing.assert_array_equal(other.features(["alice"]), store.features(["alice"]))
    np.testing.assert_array_equal(other.histograms(["alice"]), store.histograms(["alice"]))
    assert other.client_ids() == ["zed", "alice"]


def test_client_snapshot_replaces_a_client_of_the_same_id(store: SketchStore) -> None:
    data = store.snapshot_client("bob")
    other = new_store()
    feed(other, ["bob", "bob", "bob"], ["a b c", "d e f", "g h i"])
    other.restore_client(data)
    np.testing.assert_array_equal(other.features(["bob"]), store.features(["bob"]))
    assert len(other) == 1


def test_client_snapshot_refused_under_other_secret_or_shape(store: SketchStore) -> None:
    data = store.snapshot_client("alice")
    with pytest.raises(SnapshotError, match="different secret key"):
        SketchStore(secret=b"other").restore_client(data)
    with pytest.raises(SnapshotError, match="another sketch config"):
        new_store(num_perm=64).restore_client(data)
    with pytest.raises(SnapshotError, match="another sketch config"):
        new_store(levels=[16, 256]).restore_client(data)


def test_client_snapshot_corruption_raises_snapshot_error(store: SketchStore) -> None:
    data = store.snapshot_client("alice")
    other = new_store()
    for i in range(0, len(data), 3):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        with pytest.raises(SnapshotError):
            other.restore_client(bytes(bad))
    for n in range(0, len(data), 5):
        with pytest.raises(SnapshotError):
            other.restore_client(data[:n])
    assert len(other) == 0


def test_snapshot_of_unknown_client_raises_key_error(store: SketchStore) -> None:
    with pytest.raises(KeyError):
        store.snapshot_client("nobody")


def test_pickle_round_trip(store: SketchStore) -> None:
    back = pickle.loads(pickle.dumps(store))
    assert isinstance(back, SketchStore)
    assert_same_state(store, back)
    assert back.key_fingerprint == store.key_fingerprint
    # the secret came along: new prompts hash the same in both
    feed(store, ["alice"], ["how do I bake sourdough bread at home"], start=40)
    d, _, _ = feed(back, ["alice"], ["how do I bake sourdough bread at home"], start=40)
    assert d.tolist() == [True]
    assert_same_state(store, back)


# --- similarity and merge ------------------------------------------------------------------


def test_jaccard_of_identical_prompts_is_one() -> None:
    s = new_store()
    prompts = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen jugs"]
    feed(s, ["a", "a", "b", "b"], [*prompts, *reversed(prompts)])
    assert s.jaccard("a", "b") == 1.0
    assert s.jaccard("a", "a") == 1.0


def test_jaccard_of_unrelated_prompts_is_small() -> None:
    s = new_store()
    a = [
        "how do I bake sourdough bread with a starter",
        "what temperature should the oven be for bread",
        "why does my dough not rise overnight",
    ]
    b = [
        "explain the rust borrow checker with an example",
        "what is a lifetime parameter in rust code",
        "how do traits differ from java interfaces",
    ]
    feed(s, ["a"] * 3 + ["b"] * 3, a + b)
    assert s.jaccard("a", "b") < 0.1


def test_jaccard_of_unknown_client_raises_key_error(store: SketchStore) -> None:
    with pytest.raises(KeyError):
        store.jaccard("alice", "nobody")


def test_prompt_of_exactly_k_words_shares_its_shingle_with_a_longer_prompt() -> None:
    s = new_store()
    # 3-shingles: {the quick brown} vs {the quick brown, quick brown fox}: Jaccard 1/2
    feed(s, ["a", "b"], ["the quick brown", "the quick brown fox"])
    tolerance = 5 * (0.25 / s.num_perm) ** 0.5 + 0.03
    assert abs(s.jaccard("a", "b") - 0.5) <= tolerance


def test_merge_gives_the_union_features() -> None:
    s = new_store()
    feed(s, ["a", "b", "a", "b"], ["alpha beta gamma", "delta epsilon", "zeta eta", "theta"])
    union = s.union_features(["a", "b"])
    s.merge("a", "ab")
    s.merge("b", "ab")
    np.testing.assert_array_equal(s.features(["ab"])[0], union)
    assert union[COL["count"]] == 4.0
    assert union[COL["first_ts"]] == 0.0
    assert union[COL["last_ts"]] == 3.0
    # the sources are untouched
    assert s.features(["a", "b"])[:, COL["count"]].tolist() == [2.0, 2.0]


def test_merge_into_existing_client_adds_its_traffic() -> None:
    s = new_store()
    feed(s, ["a", "b", "b"], ["one two three four", "five six seven", "eight nine ten"])
    before = s.union_features(["a", "b"])
    assert s.jaccard("a", "b") == 0.0
    s.merge("a", "b")
    np.testing.assert_array_equal(s.features(["b"])[0], before)
    # b now holds a's two shingles among its four
    assert 0.2 < s.jaccard("a", "b") < 0.8


def test_union_features_of_no_known_client_is_the_unknown_row(store: SketchStore) -> None:
    np.testing.assert_array_equal(store.union_features(["x", "y"]), store.features(["x"])[0])


def test_merge_of_unknown_source_raises_key_error(store: SketchStore) -> None:
    with pytest.raises(KeyError):
        store.merge("nobody", "alice")
    assert "nobody" not in store


# --- memory and checkpoints -----------------------------------------------------------------


def test_bytes_per_client_fits_in_4_kib_at_defaults() -> None:
    s = new_store()
    assert 0 < s.bytes_per_client() <= 4096
    assert s.bytes_per_client(64) == s.bytes_per_client(16) + 48
    assert new_store(num_perm=256).bytes_per_client() > s.bytes_per_client()


CHECKPOINT_PROMPTS = [f"prompt number {i} about topic {i % 4} and more" for i in range(12)]


def checkpoint_run(cut: int) -> tuple[list[int], npt.NDArray[np.float64]]:
    s = new_store()
    at: list[int] = []
    rows: list[npt.NDArray[np.float64]] = []
    for start in range(0, 12, cut):
        chunk = CHECKPOINT_PROMPTS[start : start + cut]
        _, idx, r = feed(s, ["c"] * len(chunk), chunk, start=start, checkpoint_every=5)
        at.extend(int(i) + start for i in idx)
        rows.append(r)
    return at, np.vstack(rows)


def test_checkpoint_rows_at_every_multiple_of_checkpoint_every() -> None:
    at, rows = checkpoint_run(12)
    assert at == [4, 9]
    assert rows.shape == (2, len(FEATURE_NAMES))
    assert rows[:, COL["count"]].tolist() == [5.0, 10.0]
    assert rows[:, COL["last_ts"]].tolist() == [4.0, 9.0]


def test_checkpoint_rows_do_not_depend_on_batch_cuts() -> None:
    at_whole, whole = checkpoint_run(12)
    for cut in (1, 5, 7):
        at, rows = checkpoint_run(cut)
        assert at == at_whole
        np.testing.assert_array_equal(rows, whole)


def test_checkpoints_are_per_client() -> None:
    s = new_store()
    ids = ["a", "b"] * 6
    _, idx, rows = feed(s, ids, [f"p {i}" for i in range(12)], checkpoint_every=3)
    # a reaches 3 and 6 at events 4 and 10; b at events 5 and 11
    assert idx.tolist() == [4, 5, 10, 11]
    assert rows[:, COL["count"]].tolist() == [3.0, 3.0, 6.0, 6.0]


def test_minhash_of_a_prompt_is_the_signature_of_a_client_that_sent_only_it() -> None:
    s = new_store()
    prompts = ["how do I bake sourdough bread at home", "hi", "Écrire un poème", "?!"]
    feed(s, [f"c{i}" for i in range(len(prompts))], prompts)
    sigs = s.minhash(prompts)
    assert sigs.shape == (len(prompts), s.num_perm) and sigs.dtype == np.uint32
    assert (sigs == s.signatures([f"c{i}" for i in range(len(prompts))])).all()
    assert len(s) == len(prompts)  # no client added
    assert s.minhash([]).shape == (0, s.num_perm)


def test_minhash_depends_on_the_secret_and_estimates_jaccard() -> None:
    a, b = new_store(), SketchStore(secret=b"another secret")
    text = "write a short poem about the sea at night with stars"
    assert (a.minhash([text]) != b.minhash([text])).any()
    near = a.minhash([text, text.replace("night", "dawn")])
    far = a.minhash([text, "explain the rust borrow checker to a beginner"])
    assert (near[0] == near[1]).mean() > (far[0] == far[1]).mean()


def test_minhash_refuses_a_str_in_place_of_a_list() -> None:
    with pytest.raises(InputError, match="list of str"):
        new_store().minhash("one prompt")  # type: ignore[arg-type]
