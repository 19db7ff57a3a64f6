"""The link index: which accounts it links, why, and that it stays bounded."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from spanwatch.config import GroupSettings
from spanwatch.links import LinkIndex, link_values


def sig(
    seed: int, same_as: npt.NDArray[np.uint32] | None = None, share: float = 0.0
) -> npt.NDArray[np.uint32]:
    rng = np.random.default_rng(seed)
    out = rng.integers(1, 2**32 - 1, size=128, dtype=np.uint32)
    if same_as is not None:
        k = int(share * 128)
        out[:k] = same_as[:k]
    return out


def jaccard_of(sigs: dict[str, npt.NDArray[np.uint32]]):  # type: ignore[no-untyped-def]
    def sim(cid: str, others: list[str]) -> npt.NDArray[np.float64]:
        return np.array([float((sigs[cid] == sigs[o]).mean()) for o in others])

    return sim


def test_link_values_take_scalar_values_of_the_configured_keys() -> None:
    meta = {"org": "acme", "ip": "10.0.0.0/24", "n": 3, "flag": True, "nested": {"a": 1}, "e": " "}
    assert link_values(meta, ["org", "n", "flag", "nested", "e", "missing"]) == ["org=acme", "n=3"]
    assert link_values(None, ["org"]) == []


def test_shared_metadata_links_and_component_walks_through() -> None:
    idx = LinkIndex(GroupSettings(), 128)
    sigs = {c: sig(i) for i, c in enumerate("abcd")}
    sim = jaccard_of(sigs)
    assert idx.update("a", sigs["a"], ["org=x"], sim) == []
    (link,) = idx.update("b", sigs["b"], ["org=x"], sim)
    assert (link.a, link.b, link.kind, link.detail) == ("a", "b", "metadata", "org=x")
    idx.update("c", sigs["c"], ["ip=1"], sim)
    idx.update("b", sigs["b"], ["ip=1"], sim)  # values accumulate per client
    idx.update("d", sigs["d"], [], sim)
    members, links = idx.component("a", lambda c: True)
    assert members == ["a", "b", "c"]
    assert {(lk.a, lk.b) for lk in links} == {("a", "b"), ("b", "c")}
    assert idx.component("d", lambda c: True)[0] == ["d"]


def test_similar_signatures_link_by_content_and_dissimilar_ones_do_not() -> None:
    idx = LinkIndex(GroupSettings(min_jaccard=0.3), 128)
    base = sig(0)
    sigs = {"a": base, "b": sig(1, base, 0.6), "c": sig(2, base, 0.1)}
    sim = jaccard_of(sigs)
    for c in "abc":
        idx.update(c, sigs[c], [], sim)
    members, links = idx.component("a", lambda c: True)
    assert members == ["a", "b"]
    assert links[0].kind == "content" and links[0].value == pytest.approx(0.6, abs=0.01)


def test_buckets_links_and_walks_are_bounded() -> None:
    s = GroupSettings(max_bucket=5, max_links=3, max_group=4)
    idx = LinkIndex(s, 128)
    sigs = {f"c{i}": sig(i) for i in range(20)}
    sim = jaccard_of(sigs)
    for c in sigs:
        idx.update(c, sigs[c], ["org=big"], sim)
    assert len(idx.values.members["org=big"]) == 5
    assert idx.values.crowded == 15
    assert all(len(e) <= 6 for e in idx.edges.values())
    members, _ = idx.component("c19", lambda c: True)
    assert len(members) == 4 and members[0] == "c19"


def test_dead_clients_are_forgotten_on_the_walk() -> None:
    idx = LinkIndex(GroupSettings(), 128)
    sigs = {c: sig(i) for i, c in enumerate("ab")}
    sim = jaccard_of(sigs)
    idx.update("a", sigs["a"], ["org=x"], sim)
    idx.update("b", sigs["b"], ["org=x"], sim)
    assert idx.component("a", lambda c: c != "b")[0] == ["a"]
    assert "b" not in idx.keys and "b" not in idx.edges.get("a", {})


def test_bands_must_divide_the_signature() -> None:
    with pytest.raises(ValueError, match="must divide"):
        LinkIndex(GroupSettings(lsh_bands=48), 128)


def test_only_links_on_triangles_hold_a_group_together() -> None:
    from spanwatch.groups import _supported
    from spanwatch.links import Link

    def lk(a: str, b: str) -> Link:
        return Link(a, b, "content", "jaccard=0.5", 0.5)

    clique = [
        lk(a, b) for a, b in (("s1", "s2"), ("s1", "s3"), ("s2", "s3"), ("s3", "s4"), ("s2", "s4"))
    ]
    triangle = [lk("b1", "b2"), lk("b2", "b3"), lk("b1", "b3")]
    bridge = [lk("s4", "b1")]
    chain = [lk("s1", "c1"), lk("c1", "c2")]
    nodes = {"s1", "s2", "s3", "s4", "b1", "b2", "b3", "c1", "c2"}
    adj = _supported(nodes, clique + triangle + bridge + chain, 1)
    assert adj["s4"] == {"s2", "s3"}
    assert adj["b1"] == {"b2", "b3"}  # the bridge to s4 is gone
    assert adj["c1"] == adj["c2"] == set()
    assert "c1" not in adj["s1"]


def test_weakly_attached_accounts_stay_out_of_a_dense_group() -> None:
    """The case a test on the real model found: benign x has weak links to two
    accounts of a campaign and to benign y, which has one to the campaign.
    Every link of x lies on a triangle, but not on two."""
    from itertools import combinations

    from spanwatch.groups import _parts
    from spanwatch.links import Link

    def lk(a: str, b: str) -> Link:
        return Link(a, b, "content", "jaccard=0.5", 0.5)

    campaign = [f"s{i}" for i in range(5)]
    links = [lk(a, b) for a, b in combinations(campaign, 2)]
    links += [lk("x", "s0"), lk("x", "s1"), lk("x", "y"), lk("y", "s0")]
    small = [lk("b1", "b2"), lk("b2", "b3"), lk("b1", "b3")]
    nodes = {*campaign, "x", "y", "b1", "b2", "b3"}
    parts = _parts(nodes, links + small, min_members=3)
    assert sorted(map(sorted, parts)) == [["b1", "b2", "b3"], campaign]
    # without the campaign's other members, x, y and s0, s1 form a group of their own
    assert _parts({"x", "y", "s0", "s1"}, links, min_members=3) == [{"x", "y", "s0", "s1"}]


def test_a_content_link_goes_when_the_prompts_drift_apart() -> None:
    idx = LinkIndex(GroupSettings(min_jaccard=0.3), 128)
    base = sig(0)
    sigs = {"a": base, "b": sig(1, base, 0.6)}
    sim = jaccard_of(sigs)
    idx.update("a", sigs["a"], [], sim)
    idx.update("b", sigs["b"], [], sim)
    assert idx.component("a", lambda c: True)[0] == ["a", "b"]
    sigs["b"] = sig(2, base, 0.05)
    idx.update("b", sigs["b"], [], sim)
    assert idx.component("a", lambda c: True)[0] == ["a"]
