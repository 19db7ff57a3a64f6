"""What the calibrated scoring costs beside the embedding, for 1, 8 and 16 bags.

What is measured, in one run, on the same machine:

E. embedding: the default backend (`SentenceTransformerEmbedder()`, onnx) on real prompts
   read at run time from ../shared/data (never copied here), in batches of 256: the cost
   per event that the service cannot avoid.
S1, S8, S16. `Calibration.surprise` (every signal's p-value against every bag's reference
   tables, the Bonferroni minimum and the mean over the bags) for the checkpoint rows of
   one poll: `--rows` rows (200: a 2,000-event poll with a checkpoint every 10 queries)
   spread over all checkpoints of a 1,500-query calibration, with tables of the shape
   `fit_calibration` writes at its widest (150 checkpoints, 7 signals, 1,024 values). The
   tables and rows are random: the cost depends on their shapes only.

Each row: milliseconds per poll (one warm-up, best of 5), microseconds per event (the
poll's time over the events it covers: rows x `checkpoint_every`), and that cost as a share
of the embedding's cost per event.

    python bench/python/bench_scoring.py            # about 30 seconds
    python bench/python/bench_scoring.py --quick    # 128 prompts
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sketch import best_of, load_line, load_prompts, status

from spanwatch.calibrate import MAX_REF, Calibration
from spanwatch.embed import SentenceTransformerEmbedder

EVERY = 10  # queries per checkpoint (scoring.checkpoint_every)
CHECKPOINTS = 150  # a 1,500-query calibration
SIGNALS = 7  # three coverage levels, divergence, singletons, novelty, near-duplicates


def calibration(bags: int, rng: np.random.Generator) -> Calibration:
    shape = (bags, CHECKPOINTS, SIGNALS)
    return Calibration(
        every=EVERY,
        signals=[f"s{j}" for j in range(SIGNALS)],
        directions=["up"] * 4 + ["two"] + ["up"] * 2,
        levels=[16, 256, 4096],
        tables=np.sort(rng.normal(size=(*shape, MAX_REF)), axis=-1),
        sizes=np.full(shape, MAX_REF, dtype=np.int64),
        scales=np.ones(shape),
        drift=1.0,
        threshold=3.0,
        target_fpr=0.005,
        stream_length=CHECKPOINTS * EVERY,
        clients_ref=400,
        clients_threshold=800,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="128 prompts instead of 1,024")
    parser.add_argument("--rows", type=int, default=200, help="checkpoint rows per poll")
    args = parser.parse_args(argv)
    prompts = load_prompts(128 if args.quick else 1024)
    status("loading the embedder")
    embedder = SentenceTransformerEmbedder()
    embedder.embed(prompts[:8])
    status(f"embedding {len(prompts)} prompts")
    per_event_embed = best_of(lambda: embedder.embed(prompts), reps=2) / len(prompts)
    rng = np.random.default_rng(0)
    counts = rng.integers(EVERY, CHECKPOINTS * EVERY + 1, size=args.rows) // EVERY * EVERY
    values = rng.normal(size=(args.rows, SIGNALS))
    events = args.rows * EVERY
    print(load_line())
    print(
        f"poll: {args.rows} checkpoint rows ({events} events at a checkpoint every {EVERY}); "
        f"tables: {CHECKPOINTS} checkpoints x {SIGNALS} signals x {MAX_REF} values per bag\n"
    )
    print("| row | ms per poll | us per event | share of embedding |")
    print("|---|---:|---:|---:|")
    print(f"| E. embedding (onnx, the default) | {per_event_embed * events * 1e3:.0f} "
          f"| {per_event_embed * 1e6:.0f} | 100% |")  # fmt: skip
    for bags in (1, 8, 16):
        status(f"scoring with {bags} bags")
        cal = calibration(bags, rng)
        t = best_of(lambda cal=cal: cal.surprise(counts, values), reps=5)
        print(
            f"| S{bags}. surprise, {bags} bag{'s' if bags > 1 else ''} | {t * 1e3:.1f} "
            f"| {t / events * 1e6:.1f} | {t / events / per_event_embed:.1%} |"
        )


if __name__ == "__main__":
    main()
