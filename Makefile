# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
DEMO ?= out/demo

.PHONY: install demo test lint rust-test py-test bench bench-all schema clean kafka-up kafka-down service

install:
	$(PY) -m pip install --quiet -e ".[dev,kafka]"

## Simulated traffic -> replay on the embedded default (no Kafka) -> alerts.
demo: install
	spanwatch simulate --out $(DEMO)/events.jsonl
	spanwatch replay $(DEMO)/events.jsonl --out $(DEMO)/alerts.jsonl
	@echo "--- first alert, in full:"
	@head -n 1 $(DEMO)/alerts.jsonl | $(PY) -m json.tool

## A local Kafka 4.x broker on 127.0.0.1:19092 (jars from Maven Central).
kafka-up:
	bash scripts/kafka.sh setup
	bash scripts/kafka.sh start
	bash scripts/kafka.sh wait

kafka-down:
	bash scripts/kafka.sh stop

## The streaming service on the local broker: demo traffic in, alerts out.
service: install
	spanwatch simulate --out $(DEMO)/events.jsonl
	spanwatch fit-space $(DEMO)/events.jsonl --limit 5000 --out $(DEMO)/space.zip
	spanwatch produce $(DEMO)/events.jsonl
	spanwatch run --space $(DEMO)/space.zip --exit-when-idle 10

## Everything CI runs: Rust and Python lints, types, and all tests.
test: install lint rust-test py-test

lint:
	cargo fmt --check
	cargo clippy --all-targets --quiet -- -D warnings
	$(PY) -m ruff check python tests bench
	$(PY) -m ruff format --check python tests bench
	$(PY) -m mypy
	$(PY) -m mypy.stubtest spanwatch._core

rust-test:
	cargo test --quiet

py-test:
	$(PY) -m pytest

bench:
	$(PY) bench/python/bench_sketch.py

bench-all:
	bash bench/run_all.sh

schema:
	spanwatch schema --out schemas/alert.schema.json
	spanwatch schema --kind group --out schemas/group-alert.schema.json

clean:
	rm -rf target out python/spanwatch/_core*.so
