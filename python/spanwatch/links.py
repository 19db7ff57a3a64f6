"""Links between accounts that may act as one: a shared value of a
configured metadata key, or shared prompt shingles found by MinHash LSH.

Every index is bounded: a bucket keeps its most recent `max_bucket`
members, and a client keeps its strongest links, `max_links` to twice as
many. An update costs at most `lsh_bands * max_bucket` signature comparisons
plus one lookup per metadata value, and never a pass over all pairs of
clients.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from spanwatch.config import GroupSettings

__all__ = ["Link", "LinkIndex", "link_values"]

U32 = npt.NDArray[np.uint32]
LinkKind = Literal["metadata", "content"]


@dataclass(frozen=True)
class Link:
    """Why two accounts are linked: a shared metadata value (`detail` is
    `key=value`, `value` is 1), or similar prompts (`value` is the estimated
    Jaccard index of their shingles)."""

    a: str
    b: str
    kind: LinkKind
    detail: str
    value: float


def link_values(meta: dict[str, object] | None, keys: Iterable[str]) -> list[str]:
    """The `key=value` strings of an event's metadata that link accounts.
    Values that are missing, empty, nested or not scalars do not link."""
    if not meta:
        return []
    out = []
    for k in keys:
        v = meta.get(k)
        if isinstance(v, bool) or v is None or isinstance(v, dict | list):
            continue
        s = str(v).strip()
        if s:
            out.append(f"{k}={s[:256]}")
    return out


class _Buckets:
    """Key -> most recent members, at most `cap` each."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.members: dict[object, OrderedDict[str, None]] = {}
        self.crowded = 0  # members pushed out of a full bucket

    def add(self, key: object, cid: str) -> list[str]:
        """Adds `cid`; returns the other members."""
        b = self.members.setdefault(key, OrderedDict())
        others = [m for m in b if m != cid]
        b[cid] = None
        b.move_to_end(cid)
        while len(b) > self.cap:
            b.popitem(last=False)
            self.crowded += 1
        return others

    def discard(self, key: object, cid: str) -> None:
        b = self.members.get(key)
        if b is not None:
            b.pop(cid, None)
            if not b:
                del self.members[key]


class LinkIndex:
    """Proposes and verifies links as client summaries arrive, and finds the
    linked component of a client by a bounded breadth-first walk."""

    def __init__(self, settings: GroupSettings, num_perm: int) -> None:
        self.s = settings
        if num_perm % settings.lsh_bands:
            raise ValueError(
                f"groups.lsh_bands ({settings.lsh_bands}) must divide num_perm ({num_perm})"
            )
        self.rows = num_perm // settings.lsh_bands
        self.bands = _Buckets(settings.max_bucket)
        self.values = _Buckets(settings.max_bucket)
        self.keys: dict[str, tuple[list[int], set[str]]] = {}
        self.edges: dict[str, dict[str, Link]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def band_keys(self, sig: U32) -> list[int]:
        """One key per LSH band: a hash of the band's rows and its index."""
        if not sig.any():
            return []
        rows = np.ascontiguousarray(sig, dtype="<u4").reshape(self.s.lsh_bands, self.rows)
        return [
            int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8, person=b"%d" % i).digest())
            for i, r in enumerate(rows)
        ]

    def update(
        self,
        cid: str,
        sig: U32,
        values: Iterable[str],
        similarity: Callable[[str, list[str]], npt.NDArray[np.float64]],
    ) -> list[Link]:
        """Indexes a client's signature and metadata values and returns the
        links this found or refreshed. `similarity(cid, others)` gives the
        estimated Jaccard index of `cid` with each of `others`."""
        old_bands, old_values = self.keys.get(cid, ([], set()))
        bands = self.band_keys(sig)
        vals = set(old_values) | set(values)
        if len(vals) > self.s.max_values:
            vals = set(sorted(vals)[: self.s.max_values])
        for k in set(old_bands) - set(bands):
            self.bands.discard(k, cid)
        candidates: set[str] = set()
        for k in bands:
            candidates.update(self.bands.add(k, cid))
        found: list[Link] = []
        for v in sorted(vals):
            for other in self.values.add(v, cid):
                a, b = sorted((cid, other))
                found.append(Link(a, b, "metadata", v, 1.0))
        self.keys[cid] = (bands, vals)
        # Content links are checked again on every update of either end, so
        # they reflect the latest summaries, not the order they came in.
        mine = self.edges.get(cid, {})
        candidates.update(o for o, lk in mine.items() if lk.kind == "content")
        if candidates:
            others = sorted(candidates)
            jac = similarity(cid, others)
            for other, j in zip(others, jac.tolist(), strict=True):
                a, b = sorted((cid, other))
                if j >= self.s.min_jaccard:
                    found.append(Link(a, b, "content", f"jaccard={j:.3f}", round(j, 4)))
                elif other in mine and mine[other].kind == "content":
                    self._drop(cid, other)
        for link in found:
            self._keep(link)
        return found

    def _keep(self, link: Link) -> None:
        for x, y in ((link.a, link.b), (link.b, link.a)):
            mine = self.edges.setdefault(x, {})
            old = mine.get(y)
            if old is not None and old.kind == "metadata" and link.kind == "content":
                continue  # a shared metadata value is the stronger reason
            mine[y] = link
            if len(mine) > 2 * self.s.max_links:
                # Trim in one go to the strongest max_links (metadata first),
                # so the cap costs O(log) per link, not a scan per link.
                keep = sorted(mine.items(), key=_strongest)
                for k, _ in keep[self.s.max_links :]:
                    del mine[k]

    def _drop(self, x: str, y: str) -> None:
        self.edges.get(x, {}).pop(y, None)
        self.edges.get(y, {}).pop(x, None)

    def remove(self, cid: str) -> None:
        """Forgets a client (evicted from the group store)."""
        bands, vals = self.keys.pop(cid, ([], set()))
        for k in bands:
            self.bands.discard(k, cid)
        for v in vals:
            self.values.discard(v, cid)
        for other in self.edges.pop(cid, {}):
            self.edges.get(other, {}).pop(cid, None)

    def component(self, cid: str, alive: Callable[[str], bool]) -> tuple[list[str], list[Link]]:
        """The clients linked to `cid`, directly or not, nearest first (and
        at each step the strongest links first), at most `max_group`; and
        every link among them. Clients for which `alive` is false are
        forgotten on the way."""
        seen = {cid}
        order = [cid]
        queue = deque([cid])
        while queue and len(order) < self.s.max_group:
            x = queue.popleft()
            for y, _ in sorted(self.edges.get(x, {}).items(), key=_strongest):
                if y in seen:
                    continue
                if not alive(y):
                    self.remove(y)
                    continue
                if len(order) >= self.s.max_group:
                    break
                seen.add(y)
                order.append(y)
                queue.append(y)
        # all links among the accounts found, not only those of the accounts
        # the walk went through: a walk cut at max_group would otherwise see
        # a clique as a star
        inside = {
            (link.a, link.b): link
            for x in order
            for y, link in self.edges.get(x, {}).items()
            if y in seen
        }
        return order, [inside[k] for k in sorted(inside)]


def _strongest(item: tuple[str, Link]) -> tuple[bool, float, str]:
    """Metadata links first, then content links by Jaccard, then by id."""
    other, link = item
    return (link.kind != "metadata", -link.value, other)
