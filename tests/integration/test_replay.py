"""The embedded default end to end: simulate, then replay, on the real model
and real FAISS, through the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from spanwatch.alerts import Alert, schema_json
from spanwatch.cli import main

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("demo")
    events = d / "events.jsonl"
    assert main(["simulate", "--out", str(events)]) == 0
    return {"dir": d, "events": events, "truth": d / "events.truth.jsonl"}


@pytest.fixture(autouse=True)
def shared_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "replay-cache"
    monkeypatch.setenv("SPANWATCH_EMBED__CACHE_DIR", str(cache))
    monkeypatch.setenv("SPANWATCH_SECRET_KEY", "integration-test-secret")


def _alerts(path: Path) -> list[Alert]:
    return [Alert.model_validate_json(line) for line in path.read_text().splitlines()]


def _kinds(truth: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    return {r["client_id"]: r["kind"] for r in rows}


def test_replay_alerts_on_every_extractor_and_no_benign_client(
    demo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = demo["dir"] / "alerts.jsonl"
    assert main(["replay", str(demo["events"]), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "fitting the input space on the first 5000 events" in err
    assert "events/s" in err
    kinds = _kinds(demo["truth"])
    alerted = {a.client_id for a in _alerts(out)}
    extractors = {c for c, k in kinds.items() if k != "benign"}
    assert extractors, "the simulation has extractors"
    assert alerted == extractors
    schema = json.loads(schema_json())
    for line in out.read_text().splitlines():
        jsonschema.validate(json.loads(line), schema)


def test_alerts_do_not_depend_on_batch_size(demo: dict[str, Path]) -> None:
    runs = []
    for size in ("1000", "37"):
        out = demo["dir"] / f"alerts-{size}.jsonl"
        argv = ["replay", str(demo["events"]), "--out", str(out), "--batch-size", size]
        assert main([*argv, "--no-progress"]) == 0
        runs.append(out.read_text())
    assert runs[0] == runs[1]
    assert runs[0]


def test_bad_lines_go_to_rejects_with_line_and_reason(demo: dict[str, Path]) -> None:
    good = demo["events"].read_bytes().splitlines()
    mixed = demo["dir"] / "mixed.jsonl"
    bad = [
        b"{not json",
        b'{"client_id": "x", "ts": 1}',
        b'{"client_id": "x", "prompt": "\xff\xfe", "ts": 1}',
        b'{"client_id": 7, "prompt": "hi", "ts": 1}',
        b'{"client_id": "x", "prompt": "' + b"a" * 40_000 + b'", "ts": 1}',
        # parsed fine, but their own embeddings do not fit the space
        b'{"client_id": "x", "prompt": "hi", "ts": 1, "embedding": [0.5, 0.5]}',
        b'{"client_id": "x", "prompt": "hi", "ts": 1, "embedding": [' + b"0," * 383 + b"0]}",
    ]
    mixed.write_bytes(b"\n".join(good[:300] + bad + good[300:600]) + b"\n")
    space = demo["dir"] / "space.npz"
    rejects = demo["dir"] / "rejects.jsonl"
    assert main(["fit-space", str(demo["events"]), "--out", str(space), "--limit", "2000"]) == 0
    argv = ["replay", str(mixed), "--space", str(space), "--rejects", str(rejects)]
    assert main([*argv, "--out", str(demo["dir"] / "a.jsonl"), "--no-progress"]) == 0
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in rows] == [301, 302, 303, 304, 305, 306, 307]
    reasons = [r["reason"] for r in rows]
    assert reasons[0].startswith("malformed JSON")
    assert reasons[1] == "missing field prompt"
    assert reasons[2].startswith("invalid UTF-8")
    assert reasons[3].startswith("client_id")
    assert "over the limit" in reasons[4]
    assert reasons[5] == "embedding has 2 dimensions, expected 384"
    assert reasons[6] == "embedding is zero or not finite"
    # fitting a space skips such lines too
    corpus = demo["dir"] / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(good + bad[5:]) + b"\n")
    refit = demo["dir"] / "refit.jsonl"
    argv = ["fit-space", str(corpus), "--out", str(demo["dir"] / "s2.npz"), "--rejects", str(refit)]
    assert main(argv) == 0
    refused = [json.loads(line) for line in refit.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in refused] == [
        (len(good) + 1, reasons[5]),
        (len(good) + 2, reasons[6]),
    ]


def test_missing_file_and_bad_config_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "events file not found" in capsys.readouterr().err
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[scoring]\nmin_queries = -3\n")
    assert main(["--config", str(cfg), "replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "scoring.min_queries" in capsys.readouterr().err
