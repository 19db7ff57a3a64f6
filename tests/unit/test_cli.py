"""The command line's help: every option says what it is, and its default
when it has one."""

from __future__ import annotations

import pytest

from spanwatch.cli import main


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_the_help_names_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "tune")
    assert "calibrate thresholds on your benign traffic" in text
    assert "(default: 0.01)" in text  # --target-fpr
    assert "(default: 0)" in text  # --seed
    assert "(default: 0.0)" in text  # --holdout
    assert "default: None" not in text  # --space, --confidence have none
    assert "(default: 0.005)" in _help(capsys, "eval")


def test_flags_do_not_claim_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "replay")
    assert "--no-progress no progress bar" in text
    assert "default: False" not in text
