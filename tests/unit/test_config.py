"""`load_settings`: defaults < TOML file < SPANWATCH_* environment < explicit
overrides, and a `ConfigError` naming the problem for anything unusable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from spanwatch.config import DEV_SECRET, Settings, load_settings
from spanwatch.errors import ConfigError, SpanwatchError

FILE = """\
secret_key = "file-secret-value"
max_prompt_bytes = 4096

[scoring]
min_queries = 20
checkpoint_every = 7

[sketch]
levels = [8, 64]
hist_level = 0
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPANWATCH_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SPANWATCH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "spanwatch.toml"
    p.write_text(FILE, encoding="utf-8")
    return p


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "conf.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_file_or_environment() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.using_dev_secret
    assert s.max_prompt_bytes == 32_768
    assert s.batch_size == 256
    assert s.sketch.levels == [16, 256, 4096]
    assert s.sketch.hist_level == 1
    assert s.sketch.num_perm == 128
    assert s.sketch.max_clients == 1_000_000
    assert s.embed.model_path is None
    assert s.embed.cache is True
    assert s.space.fit_events == 5000
    assert s.scoring.min_queries == 50
    assert s.scoring.checkpoint_every == 10
    assert s.scoring.severity_steps == (0.92, 0.97)


def test_file_values_override_defaults_and_leave_the_rest(config_file: Path) -> None:
    s = load_settings(config_file)
    assert s.secret_key.get_secret_value() == "file-secret-value"
    assert s.max_prompt_bytes == 4096
    assert s.scoring.min_queries == 20
    assert s.scoring.checkpoint_every == 7
    assert s.sketch.levels == [8, 64]
    assert s.sketch.hist_level == 0
    # untouched keys of a section the file names keep their defaults
    assert s.scoring.coverage_threshold == 0.85
    assert s.sketch.num_perm == 128
    # sections the file does not name keep their defaults
    assert s.space.fit_events == 5000


def test_path_may_be_a_string(config_file: Path) -> None:
    assert load_settings(str(config_file)).scoring.min_queries == 20


def test_environment_overrides_the_file_key_by_key(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPANWATCH_SCORING__MIN_QUERIES", "33")
    s = load_settings(config_file)
    assert s.scoring.min_queries == 33
    # the file's other keys in the same section survive the environment layer
    assert s.scoring.checkpoint_every == 7
    assert s.sketch.levels == [8, 64]


def test_environment_applies_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_SCORING__MIN_QUERIES", "33")
    monkeypatch.setenv("SPANWATCH_MAX_PROMPT_BYTES", "100")
    s = load_settings()
    assert s.scoring.min_queries == 33
    assert s.max_prompt_bytes == 100
    assert s.scoring.checkpoint_every == 10


def test_explicit_overrides_beat_environment_and_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPANWATCH_SCORING__MIN_QUERIES", "33")
    s = load_settings(config_file, scoring={"min_queries": 44}, max_prompt_bytes=9)
    assert s.scoring.min_queries == 44
    assert s.max_prompt_bytes == 9
    # a nested override replaces only the keys it names
    assert s.scoring.checkpoint_every == 7


def test_secret_from_environment_replaces_the_dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_SECRET_KEY", "from-env")
    s = load_settings()
    assert not s.using_dev_secret
    assert s.secret_bytes() == b"from-env"


def test_missing_file_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert str(info.value) == f"config file not found: {missing}"


def test_invalid_toml_raises_config_error_naming_file_and_position(tmp_path: Path) -> None:
    p = write(tmp_path, "[scoring\nmin_queries = ")
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    msg = str(info.value)
    assert msg.startswith(f"config file {p} is not valid TOML:")
    assert "line 1" in msg


def test_non_utf8_file_raises_config_error(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'secret_key = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[scoring]\nmin_querys = 3\n", "scoring.min_querys"),
        ("bogus = 1\n", "bogus"),
        ("[sketchy]\nlevels = [2, 4]\n", "sketchy"),
    ],
)
def test_unknown_key_raises_config_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    msg = str(info.value)
    assert f"(file {p})" in msg
    assert f"{key}: Extra inputs are not permitted" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[scoring]\nmin_queries = 0\n", "scoring.min_queries: Input should be greater than"),
        ('[scoring]\nmin_queries = "many"\n', "scoring.min_queries: Input should be a valid int"),
        ("[sketch]\nlevels = [64, 8]\n", "sketch.levels: Value error, levels must be increasing"),
        ("[sketch]\nlevels = [1, 8]\n", "sketch.levels: Value error, levels must be increasing"),
        ("[sketch]\nnum_perm = 4\n", "sketch.num_perm: Input should be greater than"),
        ("[sketch]\nidle_ttl = -1.0\n", "sketch.idle_ttl: Input should be greater than"),
        ("max_prompt_bytes = 0\n", "max_prompt_bytes: Input should be greater than"),
        ("[scoring]\ninformative_share = 1.5\n", "scoring.informative_share: Input should be"),
        ("[scoring]\ndrift_quantile = 1.0\n", "scoring.drift_quantile: Input should be less"),
        ("[scoring]\nbag_share = 0.0\n", "scoring.bag_share: Input should be greater than"),
    ],
)
def test_bad_value_raises_config_error_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert str(info.value).startswith(f"invalid configuration (file {p}): ")
    assert expected in str(info.value)


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    p = write(tmp_path, "[scoring]\nmin_queries = 0\ncheckpoint_every = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert "scoring.min_queries" in str(info.value)
    assert "scoring.checkpoint_every" in str(info.value)


def test_bad_environment_value_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANWATCH_SCORING__MIN_QUERIES", "lots")
    with pytest.raises(ConfigError, match=r"scoring\.min_queries: Input should be a valid integer"):
        load_settings()


def test_bad_explicit_override_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"scoring\.bogus: Extra inputs are not permitted"):
        load_settings(scoring={"bogus": 1})
    with pytest.raises(ConfigError, match=r"batch_size: Input should be greater than"):
        load_settings(batch_size=0)


def test_config_error_is_a_value_error_and_a_spanwatch_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, SpanwatchError)


def test_secret_key_is_a_secret_str_hidden_from_repr_and_dumps() -> None:
    s = load_settings(secret_key="hunter2-very-secret")
    assert isinstance(s.secret_key, SecretStr)
    assert s.secret_key.get_secret_value() == "hunter2-very-secret"
    assert s.secret_bytes() == b"hunter2-very-secret"
    for text in (repr(s), str(s), repr(s.secret_key), str(s.secret_key), s.model_dump_json()):
        assert "hunter2" not in text
    assert "**********" in repr(s)


def test_using_dev_secret_only_with_the_built_in_key(config_file: Path) -> None:
    assert load_settings().using_dev_secret
    assert load_settings(secret_key=DEV_SECRET).using_dev_secret
    assert not load_settings(config_file).using_dev_secret
    assert not load_settings(secret_key="another").using_dev_secret
