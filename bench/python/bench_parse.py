"""Record parsing and the detector, in one process, without Kafka.

What the service does with a poll of precomputed-embedding records, in two ways, on the
same records in one run:

- per record: `parse_event` for each record (pydantic), the vector checks, a list of
  `Event` (the service's path before the batch parser);
- batch: `spanwatch.batch.parse_batch` on each poll (the Rust parser, `parse_event` only
  for records it leaves), giving a `Batch` of columns.

Each is timed alone (parse only) and followed by the detector (`Detector.observe` with
`space.assign = "descent"`, as bench_service's row C3). Records: simulated prompts,
random unit vectors, client ids growing per pass, as `bench_service.py` row C
(`embedding`, a JSON list) and row C2 (`embedding_b64`); polls of 500. Run from the repo root:

    python bench/python/bench_parse.py            # 50,000 records per form
    python bench/python/bench_parse.py --quick    # 10,000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import embedded_events, prompts_events
from bench_sketch import load_line, machine_line, measure, status

POLL = 500
DIM = 384


def per_record(values: list[bytes]) -> list[object]:
    from spanwatch.events import parse_event

    out: list[object] = []
    for i in range(0, len(values), POLL):
        events = []
        for raw in values[i : i + POLL]:
            ev = parse_event(raw)
            v = ev.vector()
            if v is not None and (len(v) != DIM or not np.isfinite(v).all() or not v.any()):
                continue
            events.append(ev)
        out.append(events)
    return out


def batched(values: list[bytes]) -> list[object]:
    from spanwatch.batch import parse_batch

    return [parse_batch(values[i : i + POLL], dim=DIM).batch for i in range(0, len(values), POLL)]


def detector_run(parse: Callable[[list[bytes]], list[object]], values: list[bytes]) -> None:
    from spanwatch.config import Settings
    from spanwatch.detector import Detector

    det = Detector(Settings(secret_key="bench-parse", space={"assign": "descent"}), space=SPACE[0])
    for polled in parse(values):
        det.observe(polled)  # type: ignore[arg-type]


SPACE: list[object] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    n = 10_000 if ap.parse_args().quick else 50_000
    from spanwatch.space import Space

    print(machine_line())
    print(load_line())
    base = prompts_events(2_000, seed=0)
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((len(base), DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    noisy = np.repeat(vec, 10, axis=0) + rng.normal(0, 0.02, (10 * len(vec), DIM))
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    status("fitting a space on 20,000 points")
    SPACE.append(Space.fit(noisy, levels=(16, 256, 4096), niter=10))
    rows = []
    for form, b64 in (("embedding (JSON list)", False), ("embedding_b64", True)):
        values = embedded_events(base, vec, n, b64=b64)
        for what, run in (
            ("parse", lambda p, v=values: p(v)),
            ("parse + detector", lambda p, v=values: detector_run(p, v)),
        ):
            status(f"{form}: {what}")
            old, busy_old = measure(lambda r=run: r(per_record), warmup=lambda: None)
            new, busy_new = measure(lambda r=run: r(batched), warmup=lambda: None)
            rows.append((form, what, n / old, n / new, old / new, max(busy_old, busy_new)))
    head = ["records", "work", "per record /s", "batch /s", "batch vs per record", "others' cpus"]
    print(f"{head[0]:<22}  {head[1]:<17}  {head[2]:>13}  {head[3]:>9}  {head[4]:>19}  {head[5]}")
    for form, what, a, b, ratio, busy in rows:
        print(f"{form:<22}  {what:<17}  {a:>13,.0f}  {b:>9,.0f}  {ratio:>18.2f}x  {busy:.1f}")


if __name__ == "__main__":
    main()
