"""Stray queries: how far a signal that sees embeddings, not cells, could take
the mixed accounts of `spanwatch eval`.

A benign user keeps to a few topics, so almost every query of theirs has
another of theirs nearby. A harvest interleaved into an account brings
queries from everywhere, and each stays alone. A query is a *stray* when no
other query of the same client lies within cosine distance r.

Two counts per client, on the same streams as `spanwatch eval` (same pools,
flags and seed; embedded with the same model):

- whole stream: each query against every other one of the stream, once the
  stream is over. It needs every embedding and sees the future.
- streaming: what a detector could keep per client. A uniform reservoir of K
  past embeddings and a list of at most M open strays. A query with nothing
  within r in either is a new stray; a query within r of open strays closes
  them (they have a neighbour now). Two values: the count of strays, and
  their mass (how far each stays below the radius, summed; the same count
  with finer steps). At each checkpoint the value is compared with the 99th
  percentile of half of the calibration clients at the same count; a client
  alarms when it exceeds that by more than the threshold.

Each threshold is the conformal (1 - target FPR) quantile of the calibration
clients' statistic (the whole-stream count; or, streaming, the other half's
largest excess); false positives are measured on the held-out benign
clients. Radii are compared side by side, so the best of them is chosen
after seeing the results: read the best row as optimistic.

    python bench/detection/strays.py --stream-length 200 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from spanwatch.config import Settings
from spanwatch.detector import Detector
from spanwatch.evaluate import Stream, build_streams, embed_texts, load_pool, mixed_kinds
from spanwatch.thresholds import conformal_quantile

ROOT = Path(__file__).resolve().parents[2]
F32 = npt.NDArray[np.float32]
KINDS = ("harvester", "sweeper", *mixed_kinds())


def whole_stream(emb: F32, texts: npt.NDArray[np.int64], radius: float) -> int:
    """Queries with no other query of the stream within `radius`."""
    e = emb[texts]
    sim = e @ e.T
    np.fill_diagonal(sim, -1.0)
    return int((sim.max(axis=1) < 1.0 - radius).sum())


class StrayTracker:
    """One client's open strays, from a reservoir of `k` past embeddings and
    at most `m` open strays (the oldest is dropped when full; it stays
    counted, since nothing closed it). Each open stray remembers the highest
    similarity it has to anything the client sent; `mass` sums how far each
    stays below the radius, a count with finer steps."""

    def __init__(self, dim: int, radius: float, k: int, m: int, seed: int) -> None:
        self.near = 1.0 - radius
        self.reservoir = np.zeros((k, dim), dtype=np.float32)
        self.filled = 0
        self.seen = 0
        self.open = np.zeros((m, dim), dtype=np.float32)
        self.best = np.zeros(m, dtype=np.float32)
        self.n_open = 0
        self.dropped = 0
        self.dropped_mass = 0.0
        self.rng = np.random.default_rng(seed)

    def add(self, q: F32) -> None:
        n = self.n_open
        to_reservoir = float((self.reservoir[: self.filled] @ q).max()) if self.filled else -1.0
        to_open = -1.0
        matched = to_reservoir >= self.near
        if n:
            sim = self.open[:n] @ q
            to_open = float(sim.max())
            self.best[:n] = np.maximum(self.best[:n], sim)
            stay = sim < self.near
            if not stay.all():
                matched = True
                self.n_open = n = int(stay.sum())
                self.open[:n] = self.open[: len(stay)][stay]
                self.best[:n] = self.best[: len(stay)][stay]
        if not matched:
            if n == len(self.open):
                self.dropped += 1
                self.dropped_mass += self.near - float(self.best[0])
                self.open[:-1] = self.open[1:].copy()
                self.best[:-1] = self.best[1:].copy()
                n -= 1
            self.open[n] = q
            self.best[n] = max(to_reservoir, to_open)
            self.n_open = n + 1
        self.seen += 1
        if self.filled < len(self.reservoir):
            self.reservoir[self.filled] = q
            self.filled += 1
        else:
            j = int(self.rng.integers(0, self.seen))
            if j < len(self.reservoir):
                self.reservoir[j] = q

    @property
    def strays(self) -> int:
        return self.n_open + self.dropped

    @property
    def mass(self) -> float:
        return self.dropped_mass + float((self.near - self.best[: self.n_open]).sum())


def curves(
    emb: F32, stream: Stream, radius: float, k: int, m: int, every: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Open strays, and their mass, at each checkpoint (every `every`
    queries)."""
    t = StrayTracker(emb.shape[1], radius, k, m, seed=len(stream.texts))
    count, mass = [], []
    for i, text in enumerate(stream.texts, start=1):
        t.add(emb[text])
        if i % every == 0:
            count.append(t.strays)
            mass.append(t.mass)
    return np.array(count, dtype=np.float64), np.array(mass)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pools = ROOT / "out" / "pools"
    ap.add_argument("--benign", default=str(pools / "benign.jsonl"))
    ap.add_argument("--attack", default=str(pools / "attack.jsonl"))
    ap.add_argument("--templates", default=str(pools / "templates.jsonl"))
    ap.add_argument("--stream-length", type=int, default=200)
    ap.add_argument("--clients", type=int, default=400)
    ap.add_argument("--calibration-clients", type=int, default=800)
    ap.add_argument("--attackers", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-fpr", type=float, default=0.005)
    ap.add_argument("--radius", default="0.75,0.8,0.85", help="cosine distances, comma-separated")
    ap.add_argument("--reservoir", type=int, default=64, help="past embeddings kept per client")
    ap.add_argument("--open", type=int, default=32, help="open strays kept per client")
    ap.add_argument("--every", type=int, default=10, help="queries between checkpoints")
    args = ap.parse_args(argv)
    radii = [float(r) for r in args.radius.split(",")]
    for name in ("benign", "attack", "templates"):
        if not Path(getattr(args, name)).is_file():
            sys.exit(f"no pool at {getattr(args, name)}: run python bench/detection/pools.py first")

    built = build_streams(
        np.random.default_rng(args.seed),
        load_pool(args.benign),
        load_pool(args.attack),
        templates=load_pool(args.templates),
        stream_length=args.stream_length,
        n_clients=args.clients,
        n_calibration=args.calibration_clients,
        n_attackers=args.attackers,
        seed=args.seed,
    )
    wanted = [s for s in built.streams if s.kind in ("calibration", "benign", *KINDS)]
    embedder = Detector(Settings()).embedder
    with tqdm(total=len(built.texts), desc="embed", unit="text") as bar:
        emb = embed_texts(embedder, built.texts, bar.update)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    print(
        f"\nstream length {args.stream_length}, seed {args.seed}: thresholds from "
        f"{args.calibration_clients} calibration clients at target FPR {args.target_fpr:.2%}, "
        f"{args.clients} held-out benign clients, {args.attackers} clients per kind; "
        f"streaming: reservoir {args.reservoir}, open strays {args.open}, "
        f"checkpoint every {args.every}"
    )
    names = [k.replace("mixed_same_", "same ").replace("mixed_", "mixed ") for k in KINDS]
    print(f"{'count':<10} {'r':>5} {'thr':>6} {'benign':>7} " + " ".join(f"{n:>10}" for n in names))
    for r in radii:
        whole: dict[str, list[int]] = {}
        count: dict[str, list[npt.NDArray[np.float64]]] = {}
        mass: dict[str, list[npt.NDArray[np.float64]]] = {}
        for s in tqdm(wanted, desc=f"r={r}", unit="client", leave=False):
            whole.setdefault(s.kind, []).append(whole_stream(emb, s.texts, r))
            c, w = curves(emb, s, r, args.reservoir, args.open, args.every)
            count.setdefault(s.kind, []).append(c)
            mass.setdefault(s.kind, []).append(w)
        t = conformal_quantile(np.array(whole["calibration"], dtype=np.float64), args.target_fpr)
        rates = [float(np.mean(np.array(whole[k]) > t)) for k in ("benign", *KINDS)]
        print(_row("whole", r, t, rates))
        for label, per_kind in (("streaming", count), ("mass", mass)):
            _streaming(label, r, per_kind, args.target_fpr, args.every)
    return 0


def _streaming(
    label: str,
    r: float,
    per_kind: dict[str, list[npt.NDArray[np.float64]]],
    target_fpr: float,
    every: int,
) -> None:
    """Each checkpoint against the reference half of the calibration clients
    at the same count; the threshold on the largest excess over a stream
    comes from the other half."""
    cal = np.array(per_kind["calibration"])
    ref, held = cal[: len(cal) // 2], cal[len(cal) // 2 :]
    t = conformal_quantile(np.array([_excess(ref, c).max() for c in held]), target_fpr)
    firsts = {
        k: np.array([_first(_excess(ref, c), t, every) for c in per_kind[k]])
        for k in ("benign", *KINDS)
    }
    rates = [float(np.mean(~np.isnan(firsts[k]))) for k in ("benign", *KINDS)]
    print(_row(label, r, t, rates))
    med = [_median(firsts[k]) for k in KINDS]
    print(f"{'  median q':<10} {'':>5} {'':>6} {'':>7} " + " ".join(f"{m:>10}" for m in med))


def _excess(ref: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """How far the value at each checkpoint lies above the reference
    clients' 99th percentile at the same checkpoint."""
    return c - np.quantile(ref, 0.99, axis=0)[: len(c)]


def _first(z: npt.NDArray[np.float64], threshold: float, every: int) -> float:
    """Queries at the first checkpoint whose excess passes the threshold."""
    hit = np.flatnonzero(z > threshold)
    return float((hit[0] + 1) * every) if len(hit) else float("nan")


def _median(first: npt.NDArray[np.float64]) -> str:
    hit = first[~np.isnan(first)]
    return f"{np.median(hit):.0f}" if len(hit) else "-"


def _row(label: str, r: float, t: float, rates: list[float]) -> str:
    cells = " ".join(f"{x:>10.0%}" for x in rates[1:])
    return f"{label:<10} {r:>5.2f} {t:>6.3f} {rates[0]:>7.2%} {cells}"


if __name__ == "__main__":
    raise SystemExit(main())
