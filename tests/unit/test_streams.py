"""The client streams that `spanwatch eval` measures."""

from __future__ import annotations

import numpy as np
import pytest

from spanwatch.errors import ConfigError
from spanwatch.evaluate import MIXES, Pool, build_streams, mixed_kinds


def pools() -> tuple[Pool, Pool]:
    benign = Pool(
        [f"benign {g} text {i}" for g in range(6) for i in range(10)],
        [f"topic:{g}" for g in range(6) for _ in range(10)],
    )
    attack = Pool(
        [f"attack {g} text {i}" for g in range(4) for i in range(5)],
        [f"task:{g}" for g in range(4) for _ in range(5)],
    )
    return benign, attack


def build(seed: int = 3, length: int = 40):  # type: ignore[no-untyped-def]
    benign, attack = pools()
    return build_streams(
        np.random.default_rng(seed), benign, attack, stream_length=length,
        n_clients=5, n_calibration=6, n_attackers=2, seed=seed,
    )  # fmt: skip


def test_every_kind_has_its_clients_and_length() -> None:
    built = build()
    kinds = [s.kind for s in built.streams]
    assert kinds.count("calibration") == 6
    assert kinds.count("benign") == 5
    for k in ("harvester", "sweeper", "template_sweeper", "random_words", *mixed_kinds()):
        assert kinds.count(k) == 2, k
    assert all(len(s.texts) == 40 for s in built.streams)
    assert len({s.client for s in built.streams}) == len(built.streams)


def test_calibration_and_held_out_clients_never_share_a_text() -> None:
    built = build()
    cal = {i for m in built.cal_groups.values() for i in m}
    test = {i for m in built.test_groups.values() for i in m}
    assert cal and test and not cal & test
    for s in built.streams:
        if s.kind == "calibration":
            assert set(s.texts.tolist()) <= cal
        if s.kind == "benign":
            assert set(s.texts.tolist()) <= test
            assert s.family == "topic"


def test_mixed_accounts_hold_their_share_of_harvested_queries() -> None:
    built = build(length=100)
    attack = {i for m in built.attack_groups.values() for i in m}
    for s in built.streams:
        if not s.kind.startswith("mixed_") or s.kind.startswith("mixed_same_"):
            continue
        f = float(s.kind.rsplit("_", 1)[1])
        assert f in MIXES
        assert s.attack.sum() == round(f * 100)
        assert set(s.texts[s.attack].tolist()) <= attack
        assert not set(s.texts[~s.attack].tolist()) & attack
        assert built.texts[int(s.texts[s.attack][0])].startswith("attack")


def test_same_seed_same_streams_other_seed_other_streams() -> None:
    a, b, c = build(seed=5), build(seed=5), build(seed=6)
    assert a.texts == b.texts
    assert all(np.array_equal(x.texts, y.texts) for x, y in zip(a.streams, b.streams, strict=True))
    assert not all(
        np.array_equal(x.texts, y.texts) for x, y in zip(a.streams, c.streams, strict=True)
    )


def test_a_benign_pool_of_too_few_groups_is_refused() -> None:
    benign = Pool(["a", "b", "c", "d"], ["g:1", "g:1", "g:2", "g:2"])
    _, attack = pools()
    with pytest.raises(ConfigError, match="at least 3 groups"):
        build_streams(np.random.default_rng(0), benign, attack, stream_length=10)
