"""`GroupDetector`: finds accounts that act as one from their summaries.

Consumers publish each client's summary (`SketchStore.summary`: counts,
coverage bitsets, cell histogram, MinHash signature, sequential evidence)
with the metadata values that may link it to others. The group detector
keeps the latest summary of every client in its own bounded store. Clients
whose evidence reaches `groups.member_floor` of their own alarm bound take
part: only they are indexed and linked (`LinkIndex`), and the linked
component of each updated one is judged:

- each member's share of its own alarm bound is its calibrated evidence,
  so benign members add close to nothing;
- the group alarms when the shares of its members add up to more than the
  sum of as many benign accounts' highest shares reaches at the target
  rate (`Calibration.group_threshold`);
- the alert names the members, the links among them with their reasons,
  the joint coverage of the union of their traffic, and how many other
  accounts that take part are linked to them but not densely enough to join.

Cost per summary: one restore and one feature row; for a client that takes
part, also up to `lsh_bands * max_bucket` signature comparisons and a walk
of at most `max_group` clients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from spanwatch._core import SketchStore
from spanwatch.alerts import (
    SEVERITIES,
    GroupAlert,
    GroupLink,
    GroupMember,
    Reason,
    group_alert_id,
    utc,
)
from spanwatch.calibrate import Calibration
from spanwatch.config import Settings
from spanwatch.errors import ConfigError
from spanwatch.links import Link, LinkIndex
from spanwatch.scoring import FeatureRow, evidence_of
from spanwatch.space import Space

__all__ = ["GroupDetector", "Summary"]

log = logging.getLogger("spanwatch.groups")

# (summary bytes, metadata link values)
Summary = tuple[bytes, Sequence[str]]
MAX_LINKS_IN_ALERT = 200


class GroupDetector:
    """Links accounts and raises a `GroupAlert` when linked accounts together
    carry the evidence of one extraction campaign."""

    def __init__(self, space: Space, config: Settings, calibration: Calibration) -> None:
        from spanwatch.detector import store_for

        if not len(calibration.group_sums):
            raise ConfigError(
                "group detection needs a calibration with group thresholds: "
                "calibrate again (spanwatch tune)"
            )
        self.space = space
        self.config = config
        self.calibration = calibration
        self.store: SketchStore = store_for(space, config, max_clients=config.groups.max_clients)
        self._probe = store_for(space, config, max_clients=1)
        self.index = LinkIndex(config.groups, config.sketch.num_perm)
        self._col = {n: i for i, n in enumerate(self.store.feature_names)}
        # client -> highest severity level of a group alert that named it acting
        self._alerted: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.store)

    def update(self, summaries: Sequence[Summary]) -> list[GroupAlert]:
        """Folds in the latest summaries (a later one replaces an earlier one
        of the same client) and returns the group alerts they raised.
        Raises SnapshotError, before any change, for a summary that is
        corrupt or made under another key or sketch shape."""
        for data, _ in summaries:  # check every summary before any change
            self.check(data)
        ids = [self.store.restore_summary(data) for data, _ in summaries]
        self._forget_evicted()
        latest = {c: values for c, (_, values) in zip(ids, summaries, strict=True)}
        order = [c for c in latest if c in self.store]
        share, _ = self.shares(order)
        floor = self.config.groups.member_floor
        # Only accounts that take part are indexed and linked: the others
        # cost one restore and nothing else.
        acting = [c for c, v in zip(order, share.tolist(), strict=True) if v >= floor]
        for c, v in zip(order, share.tolist(), strict=True):
            if v < floor and c in self.index.keys:
                self.index.remove(c)
        if acting:
            sigs = self.store.signatures(acting)
            for cid, sig in zip(acting, sigs, strict=True):
                self.index.update(cid, sig, latest[cid], self._similarity)
        alerts: list[GroupAlert] = []
        judged: set[str] = set()
        for cid in acting:
            if cid in judged:
                continue
            members, links = self.index.component(cid, self.store.__contains__)
            judged.update(members)
            if len(members) >= self.config.groups.min_members:
                alerts.extend(self._judge(members, links))
        return alerts

    def check(self, data: bytes) -> None:
        """Raises SnapshotError if `data` is not a summary this detector can
        read (corrupt, another key, another sketch shape)."""
        self._probe.restore_summary(data)

    def forget(self, client_id: str) -> None:
        """Drops a client (its summary was deleted upstream)."""
        self.store.remove(client_id)
        self.index.remove(client_id)
        self._alerted.pop(client_id, None)

    def _forget_evicted(self) -> None:
        """Drops what the index and the alert memory hold of clients the
        store has evicted, once they outnumber a tenth of the store."""
        slack = max(1000, len(self.store) // 10)
        if len(self.index) > len(self.store) + slack:
            for c in [c for c in self.index.keys if c not in self.store]:
                self.index.remove(c)
        if len(self._alerted) > len(self.store) + slack:
            self._alerted = {c: v for c, v in self._alerted.items() if c in self.store}

    def _similarity(self, cid: str, others: list[str]) -> npt.NDArray[np.float64]:
        sigs = self.store.signatures([cid, *others])
        return np.asarray((sigs[1:] == sigs[0]).mean(axis=1), dtype=np.float64)

    def shares(self, ids: list[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Each client's sequential evidence over its own alarm bound, and
        its query count."""
        rows = self.store.features(ids)
        counts = rows[:, self._col["count"]].astype(np.int64)
        bound = self.calibration.bound(np.maximum(counts, 1), self._threshold)
        share = rows[:, self._col["evidence"]] / np.maximum(bound, 1e-12)
        return np.where(counts > 0, share, 0.0), counts

    @property
    def _threshold(self) -> float:
        return self.config.scoring.threshold or self.calibration.threshold

    def _judge(self, ids: list[str], links: list[Link]) -> list[GroupAlert]:
        """Splits the linked accounts that take part into the groups their
        links among themselves form (`_parts`: a chain through an account
        that does not take part, or a lone bridge, links nobody), and judges
        each."""
        g = self.config.groups
        share, counts = self.shares(ids)
        acting = {c for c, v in zip(ids, share.tolist(), strict=True) if v >= g.member_floor}
        if len(acting) < g.min_members:
            return []
        where = {c: i for i, c in enumerate(ids)}
        parts = [sorted(where[c] for c in part) for part in _parts(acting, links, g.min_members)]
        out = []
        for ix in parts:
            alert = self._judge_part(ids, ix, share, counts, links)
            if alert is not None:
                out.append(alert)
        return out

    def _judge_part(
        self,
        ids: list[str],
        ix: list[int],
        share: npt.NDArray[np.float64],
        counts: npt.NDArray[np.int64],
        links: list[Link],
    ) -> GroupAlert | None:
        """One group: the accounts `ix` of the walked `ids`."""
        mine = share[ix]
        score = float(mine.sum())
        bound = self.calibration.group_threshold(len(ix))
        if score < bound:
            return None
        r = score / bound
        level = 1 if r < 2 else 2 if r < 4 else 3
        names = [ids[i] for i in ix]
        # Alert again when the severity rises or an account joins: every
        # account that takes part is named at least once, whatever the order
        # in which the summaries came.
        if all(self._alerted.get(c, 0) >= level for c in names):
            return None
        for c in names:
            self._alerted[c] = max(level, self._alerted.get(c, 0))
        members = [
            GroupMember(
                client_id=ids[i],
                query_count=int(counts[i]),
                alarm_share=round(float(share[i]), 4),
            )
            for i in sorted(ix, key=lambda i: (-share[i], ids[i]))
        ]
        inside = set(names)
        links = [lk for lk in links if lk.a in inside and lk.b in inside]
        joint = FeatureRow.from_array(self.store.feature_names, self.store.union_features(names))
        severity = SEVERITIES[level - 1]
        kinds = ", ".join(sorted({lk.kind for lk in links})) or "nothing"
        alone = int((mine >= 1.0).sum())
        k = len(ix)
        return GroupAlert(
            alert_id=group_alert_id(names, severity),
            time=utc(joint["last_ts"]),
            severity=severity,
            score=round(score, 4),
            threshold=round(bound, 4),
            members=members,
            linked_accounts=len(ids) - k,
            links=[
                GroupLink(a=lk.a, b=lk.b, kind=lk.kind, detail=lk.detail, value=lk.value)
                for lk in links[:MAX_LINKS_IN_ALERT]
            ],
            reasons=[
                Reason(
                    signal="group_evidence",
                    value=round(score, 4),
                    threshold=round(bound, 4),
                    detail=(
                        f"{k} linked accounts' shares of their own alarm bounds add up beyond "
                        f"what {k} benign accounts reach at rate "
                        f"{self.config.groups.target_fpr:g}; {alone} of them alert on their own"
                    ),
                ),
                Reason(
                    signal="links",
                    value=float(len(links)),
                    threshold=float(k - 1),
                    detail=f"linked by {kinds}",
                ),
            ],
            joint=evidence_of(self.space, joint),
        )


def _supported(nodes: set[str], links: list[Link], need: int) -> dict[str, set[str]]:
    """The links among `nodes` that lie on `need` triangles of such links or
    more, dropping the others until every link left has `need` accounts
    linked to both its ends (the (need+2)-truss). A chain or a single bridge
    from one cluster to another does not make accounts act together; a
    clique does. Triangles are counted for all links at once, as the
    product of the adjacency matrix with itself."""
    names = sorted(nodes)
    at = {c: i for i, c in enumerate(names)}
    adj = np.zeros((len(names), len(names)), dtype=np.float32)
    for lk in links:
        i, j = at.get(lk.a), at.get(lk.b)
        if i is not None and j is not None and i != j:
            adj[i, j] = adj[j, i] = 1.0
    while adj.any():
        weak = (adj > 0) & ((adj @ adj) < need)
        if not weak.any():
            break
        adj[weak] = 0.0
    out: dict[str, set[str]] = {c: set() for c in names}
    for i, j in zip(*np.nonzero(adj), strict=True):
        out[names[i]].add(names[j])
    return out


def _components(adj: dict[str, set[str]]) -> list[set[str]]:
    seen: set[str] = set()
    out = []
    for start in sorted(adj):
        if start in seen or not adj[start]:
            continue
        part, todo = {start}, [start]
        while todo:
            for y in adj[todo.pop()]:
                if y not in part:
                    part.add(y)
                    todo.append(y)
        seen |= part
        out.append(part)
    return out


def _parts(nodes: set[str], links: list[Link], min_members: int) -> list[set[str]]:
    """The groups among `nodes`. First the dense cores, in which every link
    lies on two triangles (four accounts or more). An account joins a core
    only through such links, so a benign account with two weak links into a
    campaign stays out (a test found one). Accounts outside every core then
    form groups among themselves in which every link lies on one triangle,
    which keeps groups of three."""
    cores = [p for p in _components(_supported(nodes, links, 2)) if len(p) >= 4]
    taken = set().union(*cores)
    rest = _components(_supported(nodes - taken, links, 1))
    return cores + [p for p in rest if len(p) >= min_members]
