"""The group detector's link peeling equals its definition: on any graph, the
links kept are exactly those that repeated rounds of "drop every link on
fewer than `need` triangles" keep, and every kept link lies on `need`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spanwatch.groups import _supported
from spanwatch.links import Link

NODES = [f"n{i}" for i in range(9)]
pairs = st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NODES)), min_size=0, max_size=30)


def rounds(nodes: set[str], edges: set[tuple[str, str]], need: int) -> set[tuple[str, str]]:
    """The definition, slowly: drop every weak link, recount, repeat."""
    while True:
        adj: dict[str, set[str]] = {c: set() for c in nodes}
        for a, b in edges:
            adj[a].add(b)
            adj[b].add(a)
        weak = {(a, b) for a, b in edges if len(adj[a] & adj[b]) < need}
        if not weak:
            return edges
        edges = edges - weak


@settings(max_examples=300, deadline=None)
@given(pairs, st.integers(1, 3))
def test_peeling_keeps_what_rounds_of_the_rule_keep(raw: list[tuple[str, str]], need: int) -> None:
    edges = {(min(a, b), max(a, b)) for a, b in raw if a != b}
    links = [Link(a, b, "content", "", 0.5) for a, b in sorted(edges)]
    adj = _supported(set(NODES), links, need)
    kept = {(a, b) for a, ys in adj.items() for b in ys if a < b}
    assert kept == rounds(set(NODES), edges, need)
    for a, b in kept:
        assert len(adj[a] & adj[b]) >= need
        assert a in adj[b]
