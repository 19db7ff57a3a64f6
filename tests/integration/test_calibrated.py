"""Calibrated sequential detection on the real model: the library's
calibrate(), and the eval and tune commands end to end on small pools made
from the project's own corpus."""

from __future__ import annotations

import itertools
import json
import random
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spanwatch import Detector, Event
from spanwatch.calibrate import Calibration
from spanwatch.cli import main
from spanwatch.config import Settings, load_settings
from spanwatch.embed import Embedder
from spanwatch.simulate import Corpus, simulate

pytestmark = pytest.mark.model


def _pools(d: Path) -> tuple[Path, Path]:
    """Benign pool: the corpus's topics; attack pool: its sweep templates
    filled with subjects of every topic, one group per template."""
    corpus = Corpus.load()
    rng = random.Random(0)
    benign = d / "benign.jsonl"
    with benign.open("w") as fh:
        for name, topic in corpus.topics.items():
            texts = set(topic.prompts)
            for template in topic.templates:
                for _ in range(6):
                    fill = {k: rng.choice(v) for k, v in topic.slots.items()}
                    texts.add(template.format(**fill))
            for t in sorted(texts):
                fh.write(json.dumps({"text": t, "group": name}) + "\n")
    attack = d / "attack.jsonl"
    subjects = [s for subs in corpus.subjects.values() for s in subs]
    with attack.open("w") as fh:
        for i, template in enumerate(corpus.sweep_templates):
            for s in subjects:
                fh.write(json.dumps({"text": template.format(subject=s), "group": f"t{i}"}) + "\n")
    return benign, attack


def test_calibration_tells_its_progress_and_ends_where_it_would_without(
    settings: Settings, embedder: Embedder
) -> None:
    raw, _ = simulate(n_benign=60, n_harvesters=0, n_sweepers=0, n_template_sweepers=0, seed=11)
    events = [Event.model_validate(e) for e in raw]
    assert len(events) > 2 * 2048  # embedded in several pieces
    heard: list[list[object]] = []

    def steps(name: str, total: int) -> Callable[[int], None]:
        heard.append([name, total, 0])

        def done(n: int) -> None:
            heard[-1][2] += n  # type: ignore[operator]

        return done

    det = Detector(settings, embedder=embedder)
    det.fit_space(events, progress=steps)
    cal = det.calibrate(events, target_fpr=0.05, progress=steps)
    assert [h[0] for h in heard] == ["embed", "embed", "sketch"]
    assert all(h[1] == h[2] == len(events) for h in heard)
    quiet = Detector(settings, embedder=embedder)
    quiet.fit_space(events)
    assert quiet.calibrate(events, target_fpr=0.05).threshold == cal.threshold


def test_calibrated_detector_alerts_on_extractors_with_reasons(
    settings: Settings, embedder: Embedder
) -> None:
    raw, clients = simulate(
        n_benign=60, n_harvesters=0, n_sweepers=0, n_template_sweepers=0, seed=11
    )
    calib_events = [Event.model_validate(e) for e in raw]
    det = Detector(settings, embedder=embedder)
    det.fit_space(calib_events)
    cal = det.calibrate(calib_events, target_fpr=0.05)
    # cross-fitted: every calibration client gives a peak to the threshold
    assert cal.clients_threshold == 60 and 0 < cal.clients_ref < 60
    assert cal.threshold > 0 and cal.drift > 0

    raw, clients = simulate(
        n_benign=20, n_harvesters=3, n_sweepers=2, n_template_sweepers=0, seed=12
    )
    kinds = {c.client_id: c.kind for c in clients}
    events = [Event.model_validate(e) for e in raw]
    alerts = [a for i in range(0, len(events), 256) for a in det.observe(events[i : i + 256])]
    alerted = {a.client_id for a in alerts}
    extractors = {c for c, k in kinds.items() if k != "benign"}
    assert extractors <= alerted
    benign_alerted = alerted - extractors
    assert len(benign_alerted) <= 2, benign_alerted
    # peaks() scores the same events apart: a client alerted exactly where
    # its peak reaches the threshold, and the detector's clients stay as they are
    store = det.store
    assert store is not None
    before = store.features(sorted(kinds))
    peaks = det.peaks(events)
    assert {c for c, p in peaks.items() if p >= cal.threshold} == alerted
    assert np.array_equal(store.features(sorted(kinds)), before)
    first = next(a for a in alerts if a.client_id in extractors)
    assert first.reasons[0].signal == "sequential_evidence"
    bound = det.alarm_bound(first.evidence.query_count)
    assert first.reasons[0].value >= first.reasons[0].threshold == round(bound, 4)
    assert any(
        r.signal.startswith(("coverage_", "divergence", "singletons")) for r in first.reasons
    )
    rep = det.report(first.client_id)
    assert rep.alarm_bound is not None and rep.evidence > 0
    # the evidence survives a snapshot with the client
    blob = det.snapshot()
    again = Detector(settings, space=det.space, embedder=embedder)
    again.calibration = det.calibration
    again.restore(blob)
    col = again.store.feature_names.index("evidence")  # type: ignore[union-attr]
    ev = again.store.features([first.client_id])[0, col]  # type: ignore[union-attr]
    assert ev > 0


def test_eval_writes_the_report_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_EMBED__CACHE_DIR", str(tmp_path / "cache"))
    # a small pool supports two levels, not three
    monkeypatch.setenv("SPANWATCH_SKETCH__LEVELS", "[16, 128]")
    benign, attack = _pools(tmp_path)
    out = tmp_path / "report"
    argv = ["eval", "--benign", str(benign), "--attack", str(attack), "--stream-length", "100"]
    argv += ["--clients", "40", "--calibration-clients", "40", "--attackers", "6"]
    argv += ["--target-fpr", "0.05", "--report", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {
        "benign_fpr",
        "tpr",
        "mixed_tpr",
        "queries_to_detect",
        "stream_length",
        "n_clients",
    }
    assert set(report["tpr"]) == {"harvester", "sweeper", "template_sweeper", "random_words"}
    assert set(report["mixed_tpr"]) == {"0.05", "0.10", "0.25", "0.50"}
    assert set(report["queries_to_detect"]["harvester"]) == {"median", "p90"}
    assert report["stream_length"] == 100 and report["n_clients"] == 40
    assert report["tpr"]["sweeper"] >= 0.5
    assert report["benign_fpr"] <= 0.2
    details = json.loads((out / "details.json").read_text())
    assert "population_like_alert_rate" in details
    # 40 peaks with about 2 at the threshold: the rate could be well past 5%
    bound = details["benign_fpr_bound"]
    assert bound["confidence"] == 0.9 and 0.05 < bound["rate"] < 0.3
    assert details["confidence"] is None
    lo, hi = details["threshold_range"]
    assert lo <= details["threshold"] <= hi
    # every detected client is credited to one of the calibration's signals
    leads = details["lead_signals"]
    for kind in ("sweeper", "harvester"):
        assert sum(leads.get(kind, {}).values()) == round(report["tpr"][kind] * 6), kind
    assert {s for c in leads.values() for s in c} <= set(details["signals"])
    assert set(details["same_style_mixed_tpr"]) == {"0.05", "0.10", "0.25", "0.50"}
    assert {"mixed_same_0.05", "mixed_0.05"} <= set(details["auc"])
    for name in ("roc.png", "detection.png", "coverage.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_a_bad_pool_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "group": "g"}\n{"text": "no group"}\n')
    assert main(["eval", "--benign", str(bad), "--attack", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
    # a confidence the calibration clients cannot give, before any work
    argv = ["eval", "--benign", str(bad), "--attack", str(bad), "--confidence", "0.9"]
    assert main([*argv, "--calibration-clients", "100"]) == 2
    assert "100 benign clients cannot keep" in capsys.readouterr().err


def test_tune_writes_a_config_that_the_detector_loads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    embedder: Embedder,
) -> None:
    monkeypatch.setenv("SPANWATCH_EMBED__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPANWATCH_SECRET_KEY", "tune-secret")
    monkeypatch.setenv("SPANWATCH_MAX_PROMPT_BYTES", "2000")  # as replay and run would
    raw, _ = simulate(
        n_benign=40,
        n_harvesters=0,
        n_sweepers=0,
        n_template_sweepers=0,
        seed=21,
        queries_per_client=(100, 140),
    )
    events = tmp_path / "benign.jsonl"
    huge = json.dumps({"client_id": "huge", "prompt": "x" * 3000, "ts": 1.0})
    # real traffic has clients too short to score: left out, with a warning
    brief = [{"client_id": f"brief-{j}", "prompt": "hello there", "ts": 1.0} for j in range(5)]
    lines = [json.dumps(e) for e in [*raw, *brief]] + ["{broken", huge]
    events.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "spanwatch.toml"
    argv = ["tune", "--benign", str(events), "--target-fpr", "0.05", "--out", str(out)]
    assert main([*argv, "--holdout", "1"]) == 2
    assert "--holdout must be in [0, 1)" in capsys.readouterr().err
    # 30 clients cannot keep 5% with confidence 0.9 (that needs 45)
    assert main([*argv, "--holdout", "0.25", "--confidence", "0.9"]) == 2
    assert "that takes at least 45" in capsys.readouterr().err
    assert main([*argv, "--holdout", "0.25"]) == 0
    said, warned = capsys.readouterr()
    assert re.search(r"\d of \d+ benign clients sent fewer than 10 queries", warned), warned
    assert re.search(r"benign rate, at most +\d+\.\d+% with confidence 0\.9", said), said
    held = re.search(r"held out, reaching it +(\d+) of (\d+) held-out clients", said)
    assert held is not None, said
    assert 5 <= int(held[2]) <= 15 and int(held[1]) <= int(held[2])
    assert f"calibrated on {40 - int(held[2])} benign clients" in said
    # too few reference clients for bags of 100: one set, and the summary says so
    assert re.search(r"reference tables +one set of \d+ clients", said), said
    assert re.search(r"drift +\d+\.\d+ \(benign 0\.98 quantile\)", said), said
    # the clients whose peaks set the threshold, by name, highest first
    top = re.search(r"highest peaks +(.*) \(the threshold is the (\d+)\w\w highest\)", said)
    assert top is not None, said
    named = [(c, float(v)) for c, v in re.findall(r"(\S+) (\d+\.\d+)(?:,|$)", top[1])]
    assert len(named) == 5 and all(c.startswith("benign-") for c, _ in named), top[1]
    assert [v for _, v in named] == sorted((v for _, v in named), reverse=True)
    assert 1 <= int(top[2]) <= 30
    # where resampling the calibration clients would put the threshold, around it
    spread = re.search(r"threshold, resampled +(\d+\.\d+)-(\d+\.\d+) \(90%", said)
    assert spread is not None, said
    threshold = float(re.search(r"threshold \(evidence ratio\) +(\d+\.\d+)", said)[1])  # type: ignore[index]
    assert float(spread[1]) <= threshold + 5e-4 and threshold <= float(spread[2]) + 5e-4
    assert "held-out clients" in out.read_text()
    cfg = tomllib.loads(out.read_text())
    assert Path(cfg["scoring"]["calibration"]).is_file()
    assert cfg["scoring"]["threshold"] > 0
    assert (tmp_path / "spanwatch.png").read_bytes()[:4] == b"\x89PNG"
    rejected = (tmp_path / "spanwatch.rejects.jsonl").read_text()
    assert "broken" in rejected and "over the limit of 2000" in rejected
    settings = load_settings(out)
    det = Detector(settings, embedder=embedder)
    assert isinstance(det.calibration, Calibration)
    # the file keeps the peaks: the loaded calibration has the range tune printed
    lo, hi = det.calibration.threshold_range()
    assert (f"{lo:.3f}", f"{hi:.3f}") == (spread[1], spread[2])
    from spanwatch.space import Space

    det.use_space(Space.load(settings.space.path))  # type: ignore[arg-type]
    harvest, _ = simulate(
        n_benign=0,
        n_harvesters=2,
        n_sweepers=0,
        n_template_sweepers=0,
        seed=22,
        queries_per_client=(100, 140),
    )
    alerts = det.observe([Event.model_validate(e) for e in harvest])
    assert {a.client_id for a in alerts} == {"harvester-01", "harvester-02"}
    assert list(itertools.islice((a.severity for a in alerts), 1))
    # with a confidence the threshold is at least the average one's
    sure = tmp_path / "sure.toml"
    argv = ["tune", "--benign", str(events), "--target-fpr", "0.1", "--holdout", "0.25"]
    argv += ["--space", str(settings.space.path)]
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--confidence", "0.8", "--out", str(sure)]) == 0
    assert "target false-positive rate  10.00% with confidence 0.8" in capsys.readouterr().out
    plain, strict = (tomllib.loads(f.read_text())["scoring"]["threshold"] for f in (out, sure))
    assert strict > plain
    assert "target 10.00% with confidence 0.8" in sure.read_text()
    sure_cal = tomllib.loads(sure.read_text())["scoring"]["calibration"]
    assert Calibration.load(sure_cal).confidence == 0.8
