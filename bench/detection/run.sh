#!/usr/bin/env bash
# Detection benchmark on the development data: builds the pools from
# ../shared/data, runs `spanwatch eval` at 1500- and 200-query streams, then
# repeats both at seed 7, then splits a harvest over 20 and over 50 accounts
# (`--sybil`). Results: out/eval-1500/, out/eval-200/ (report.json, details.json,
# PNGs), out/eval-seed7-1500/, out/eval-seed7-200/,
# out/eval-sybil-20/ and out/eval-sybil-50/ (the same, plus groups.json).
# With --strays first: the four seed / length runs again with the stray
# tracker on (sketch.strays), into out/strays-s<seed>-<length>/.
# With --fpr first: the four seed / length runs with 2000 held-out benign
# clients (the same calibration), without and with the stray tracker, into
# out/fpr2000-s<seed>-<length>/ and out/fpr2000-strays-s<seed>-<length>/,
# then a table of their benign false-positive rates (about 20 minutes).
# With --confident first: the same four 2000-client runs of the default scorer,
# with the plain threshold (out/fpr2000-s<seed>-<length>/) and with
# --confidence 0.9 (out/fpr2000-c90-s<seed>-<length>/), then a table of what
# the confidence costs (about 15 minutes).
# With --bags first: the same four 2000-client runs of the default scorer (16
# bags of reference tables) and with one set of tables, scoring.bags = 1
# (out/fpr2000-bags1-s<seed>-<length>/), then a table of both side by side
# (about 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
export SPANWATCH_SECRET_KEY="${SPANWATCH_SECRET_KEY:-detection-bench}"
python bench/detection/pools.py --out out/pools
common=(--benign out/pools/benign.jsonl --attack out/pools/attack.jsonl
    --templates out/pools/templates.jsonl --clients 400 --calibration-clients 800
    --attackers 100 --seed 0 --target-fpr 0.005)
if [[ "${1:-}" == "--strays" ]]; then
    shift
    for seed in 0 7; do
        for n in 200 1500; do
            SPANWATCH_SKETCH__STRAYS=true spanwatch eval "${common[@]}" --seed "$seed" \
                --stream-length "$n" --report "out/strays-s$seed-$n" "$@"
        done
    done
    exit 0
fi
# runs_2000 PREFIX ENV FLAG [eval args...]: for each seed and length, the
# default scorer with 2000 held-out clients into out/fpr2000-s<seed>-<length>/,
# then again with the environment setting ENV and eval flag FLAG (either may
# be empty) into out/PREFIX-s<seed>-<length>/.
runs_2000() {
    local prefix="$1" env="$2" flag="$3"
    shift 3
    for seed in 0 7; do
        for n in 200 1500; do
            local at=(--clients 2000 --seed "$seed" --stream-length "$n")
            spanwatch eval "${common[@]}" "${at[@]}" --report "out/fpr2000-s$seed-$n" "$@"
            env ${env:+"$env"} spanwatch eval "${common[@]}" "${at[@]}" ${flag:+$flag} \
                --report "out/$prefix-s$seed-$n" "$@"
        done
    done
}
if [[ "${1:-}" == "--fpr" ]]; then
    shift
    runs_2000 fpr2000-strays SPANWATCH_SKETCH__STRAYS=true "" "$@"
    python bench/detection/table.py --fpr
    exit 0
fi
if [[ "${1:-}" == "--confident" ]]; then
    shift
    runs_2000 fpr2000-c90 "" "--confidence 0.9" "$@"
    python bench/detection/table.py --confident
    exit 0
fi
if [[ "${1:-}" == "--bags" ]]; then
    shift
    runs_2000 fpr2000-bags1 SPANWATCH_SCORING__BAGS=1 "" "$@"
    python bench/detection/table.py --bags
    exit 0
fi
for n in 1500 200; do
    spanwatch eval "${common[@]}" --stream-length "$n" --report "out/eval-$n" "$@"
done
# The same at a second seed: how much the numbers move with the clients drawn.
for n in 1500 200; do
    spanwatch eval "${common[@]}" --seed 7 --stream-length "$n" --report "out/eval-seed7-$n" "$@"
done
for n in 20 50; do
    spanwatch eval "${common[@]}" --stream-length 1500 --sybil "$n" \
        --report "out/eval-sybil-$n" "$@"
done
