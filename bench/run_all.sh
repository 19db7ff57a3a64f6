#!/usr/bin/env bash
# Every speed and memory benchmark, one after the other, on this machine:
# sketch store, scaling curves, cell assignment, embedding backends, scoring, record
# parsing, the service through a local broker, and group detection. Each prints its own
# tables (with the machine and load) and is also kept in out/bench/<name>.txt.
# Pass --quick to give every script its smaller inputs.
# The detection benchmark is separate: bench/detection/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/bench
for name in bench_sketch bench_scaling bench_assign bench_embed bench_scoring bench_parse bench_service bench_groups; do
    echo "== $name"
    python "bench/python/$name.py" "$@" | tee "out/bench/$name.txt"
done
