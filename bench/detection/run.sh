#!/usr/bin/env bash
# Detection benchmark on the development data: builds the pools from
# ../shared/data, then runs `spanwatch eval` at 1500- and 200-query streams.
# Results: out/eval-1500/ and out/eval-200/ (report.json, details.json, PNGs).
set -euo pipefail
cd "$(dirname "$0")/../.."
export SPANWATCH_SECRET_KEY="${SPANWATCH_SECRET_KEY:-detection-bench}"
python bench/detection/pools.py --out out/pools
for n in 1500 200; do
    spanwatch eval --benign out/pools/benign.jsonl --attack out/pools/attack.jsonl \
        --templates out/pools/templates.jsonl --stream-length "$n" \
        --clients 400 --calibration-clients 800 --attackers 100 --seed 0 \
        --target-fpr 0.005 --report "out/eval-$n" "$@"
done
