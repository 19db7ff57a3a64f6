"""Settings: defaults, then a TOML file, then `SPANWATCH_*` environment
variables, then explicit arguments (what the CLI passes) win."""

from __future__ import annotations

import itertools
import logging
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spanwatch.errors import ConfigError

__all__ = [
    "DEV_SECRET",
    "EmbedSettings",
    "GroupSettings",
    "KafkaSettings",
    "ScoringSettings",
    "Settings",
    "SketchSettings",
    "SpaceSettings",
    "load_settings",
]

log = logging.getLogger("spanwatch.config")

# Used only when no secret is configured; the detector warns when it is in use.
DEV_SECRET = "spanwatch-development-key-do-not-use-in-production"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SketchSettings(_Section):
    """Shape of each client's sketch and the memory bound of the store."""

    levels: list[int] = Field(default=[16, 256, 4096], min_length=1, max_length=8)
    hist_level: int = Field(default=1, ge=0)
    num_perm: int = Field(default=128, ge=8, le=1024)
    shingle_size: int = Field(default=3, ge=1, le=8)
    hll_precision: int = Field(default=8, ge=4, le=16)
    band_count: int = Field(default=8, ge=1)
    band_rows: int = Field(default=4, ge=1)
    recent_prompts: int = Field(default=32, ge=1, le=4096)
    max_clients: int = Field(default=1_000_000, ge=1)
    idle_ttl: float = Field(default=0.0, ge=0.0, description="seconds; 0 keeps idle clients")
    strays: bool = Field(
        default=False,
        description="track stray queries (alone within stray_radius) and score them; "
        "about (stray_reservoir + stray_open) x embedding dimensions bytes per client",
    )
    stray_radius: float = Field(default=0.8, gt=0.0, lt=2.0, description="cosine distance")
    stray_reservoir: int = Field(default=64, ge=0, le=4096, description="past queries kept")
    stray_open: int = Field(default=32, ge=1, le=1024, description="open strays kept")

    @field_validator("levels")
    @classmethod
    def _levels_grow(cls, v: list[int]) -> list[int]:
        if any(a >= b for a, b in itertools.pairwise(v)) or v[0] < 2:
            raise ValueError("levels must be increasing cell counts, each at least 2")
        return v


class EmbedSettings(_Section):
    """Which sentence-transformers model embeds prompts, and its cache."""

    model_path: str | None = Field(
        default=None, description="default: the bundled all-MiniLM-L6-v2"
    )
    batch_size: int = Field(
        default=64, ge=1, description="prompts per forward pass (torch; onnx runs each alone)"
    )
    device: str = "cpu"
    backend: str = Field(
        default="onnx",
        pattern="^(torch|onnx|onnx-int8)$",
        description="onnx (default): a local ONNX export of the model, the same "
        "embeddings as torch at about 2x its speed on CPUs; onnx-int8: that export "
        "quantized, about 5x torch, mean cosine 0.993 to it, and lower recall on short "
        "streams (see bench/README.md); torch: the model as sentence-transformers runs it "
        "(needed for models that do not mean-pool)",
    )
    onnx_dir: str | None = Field(default=None, description="default: ~/.cache/spanwatch/onnx")
    cache: bool = True
    cache_dir: str | None = Field(default=None, description="default: ~/.cache/spanwatch")


class SpaceSettings(_Section):
    """How the map of the input space is fitted when none is given."""

    path: str | None = Field(default=None, description="space file used by run and replay")
    fit_events: int = Field(default=5000, ge=32, description="events used to fit a space")
    min_points_per_cell: int = Field(default=4, ge=1)
    niter: int = Field(default=20, ge=1)
    seed: int = 0
    assign: str = Field(
        default="descent",
        pattern="^(exact|ivf|descent)$",
        description="descent (default): the finest level searched among the children of "
        "the `widen` best cells of the level above, the others exactly (5x faster than "
        "exact at 16/256/4096 cells on one core, 98.5% of events in the same cell); "
        "ivf: an inverted file for levels of 1024+ cells (3x, 98.2%); exact: every "
        "centroid of every level (bench/README.md)",
    )
    nprobe: int = Field(default=8, ge=1, description="lists searched with assign = ivf")
    widen: int = Field(
        default=16, ge=1, description="cells of the level above searched with assign = descent"
    )
    threads: int = Field(
        default=1,
        ge=0,
        description="threads faiss assigns cells with under assign = exact or ivf (0: all "
        "cores; descent always runs on one). One is faster when other busy threads share "
        "the cores, as in the service (bench/README.md)",
    )


class ScoringSettings(_Section):
    """How checkpoints become alerts: the calibrated sequential test when a
    calibration file is set, else the coverage rule (observed cells against
    what population-like sampling would cover with the same queries)."""

    min_queries: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=10, ge=1)
    calibration: str | None = Field(
        default=None, description="file from `spanwatch tune`; without it, the coverage rule"
    )
    threshold: float | None = Field(
        default=None, gt=0.0, description="overrides the calibration file's threshold"
    )
    drift: float | None = Field(
        default=None,
        ge=0.0,
        description="CUSUM drift per checkpoint; default: calibrated on benign traffic",
    )
    drift_quantile: float = Field(
        default=0.98,
        gt=0.5,
        lt=1.0,
        description="calibration time: the drift is this quantile of benign per-checkpoint "
        "evidence; lower catches harvesters sooner, higher more mixed accounts (README)",
    )
    max_surprise: float = Field(
        default=50.0, gt=0.0, description="cap on one checkpoint's evidence (-ln p)"
    )
    bags: int = Field(
        default=16,
        ge=1,
        le=64,
        description="reference table sets, each from a random share of the reference clients, "
        "that the evidence is averaged over (calibration time; costs bags x the scoring)",
    )
    bag_share: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="calibration time: the share of the reference clients in each bag "
        "(at least 100 clients per bag, else one table)",
    )
    coverage_threshold: float = Field(default=0.85, gt=0.0)
    informative_share: float = Field(default=0.5, gt=0.0, le=1.0)
    severity_steps: tuple[float, float] = (0.92, 0.97)

    def calibration_options(self) -> dict[str, Any]:
        """The `fit_calibration` keywords that this section sets."""
        return {
            "every": self.checkpoint_every,
            "drift": self.drift,
            "drift_quantile": self.drift_quantile,
            "max_surprise": self.max_surprise,
            "bags": self.bags,
            "bag_share": self.bag_share,
        }


class GroupSettings(_Section):
    """Detection of accounts that act as one: which links are looked for,
    the bounds on the link index, and the false-alarm rate per group."""

    enabled: bool = False
    link_keys: list[str] = Field(
        default=[], description="Event.meta keys whose shared values link accounts"
    )
    min_jaccard: float = Field(
        default=0.1, gt=0.0, le=1.0, description="prompt-shingle similarity that links accounts"
    )
    lsh_bands: int = Field(default=64, ge=1, description="must divide sketch.num_perm")
    max_bucket: int = Field(default=64, ge=2, description="accounts kept per LSH bucket or value")
    max_links: int = Field(default=64, ge=1, description="links kept per account")
    max_values: int = Field(default=8, ge=1, description="metadata values kept per account")
    max_group: int = Field(default=256, ge=2, description="accounts walked per group")
    max_clients: int = Field(default=1_000_000, ge=1)
    member_floor: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="share of its own alarm bound an account needs to count as acting",
    )
    min_members: int = Field(
        default=3, ge=3, description="a group's links must close triangles: 3 accounts or more"
    )
    target_fpr: float = Field(
        default=0.001, gt=0.0, lt=1.0, description="chance that a benign group alarms"
    )


class KafkaSettings(_Section):
    """Where the service reads prompts and writes alerts, state and dead letters.
    Security settings pass through to kafka-python."""

    bootstrap_servers: str = "127.0.0.1:19092"
    group_id: str = "spanwatch"
    prompts_topic: str = "prompts"
    alerts_topic: str = "spanwatch-alerts"
    dead_letter_topic: str = "spanwatch-dead-letters"
    state_topic: str = "spanwatch-state"
    sketch_topic: str = Field(
        default="spanwatch-sketches", description="client summaries, when groups.enabled"
    )
    group_alerts_topic: str = "spanwatch-group-alerts"
    client_id: str = "spanwatch"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    max_poll_records: int = Field(
        default=2000,
        ge=1,
        description="records per poll. kafka-python sends the next fetch only when a poll "
        "has taken every buffered record, so polls that drain a whole fetch let the next "
        "one arrive while the service works (bench/README.md, row C6)",
    )
    poll_timeout_ms: int = Field(default=500, ge=1)
    checkpoint_interval_s: float = Field(default=5.0, ge=0.0)
    alerts_format: str = Field(default="spanwatch", pattern="^(spanwatch|ocsf)$")
    topic_partitions: int = Field(default=4, ge=1, description="for topics spanwatch creates")
    replication_factor: int = Field(default=1, ge=1)

    def client_config(self) -> dict[str, object]:
        """Connection and security settings in kafka-python's names."""
        cfg: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        cfg.update({k: v for k, v in optional.items() if v is not None})
        if self.sasl_plain_password is not None:
            cfg["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        if self.ssl_password is not None:
            cfg["ssl_password"] = self.ssl_password.get_secret_value()
        return cfg


class Settings(BaseSettings):
    """All of spanwatch's settings."""

    model_config = SettingsConfigDict(
        env_prefix="SPANWATCH_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    secret_key: SecretStr = SecretStr(DEV_SECRET)
    max_prompt_bytes: int = Field(default=32_768, ge=1)
    batch_size: int = Field(default=256, ge=1)
    sketch: SketchSettings = SketchSettings()
    embed: EmbedSettings = EmbedSettings()
    space: SpaceSettings = SpaceSettings()
    scoring: ScoringSettings = ScoringSettings()
    groups: GroupSettings = GroupSettings()
    kafka: KafkaSettings = KafkaSettings()
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = no metrics endpoint")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is read by load_settings and passed as the lowest layer.
        return init_settings, env_settings, file_secret_settings

    @property
    def using_dev_secret(self) -> bool:
        return self.secret_key.get_secret_value() == DEV_SECRET

    def secret_bytes(self) -> bytes:
        return self.secret_key.get_secret_value().encode("utf-8")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional TOML file, the environment and `overrides`
    (nested as dicts, e.g. `scoring={"min_queries": 20}`). Raises ConfigError
    with every problem named."""
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            file_values = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    try:
        env_only = Settings()
        layered = _deep_merge(file_values, _explicit(env_only))
        return Settings(**_deep_merge(layered, overrides))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()
        )
        where = f" (file {path})" if path else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from None


def _explicit(s: BaseModel) -> dict[str, Any]:
    """Only the fields that were set (from the environment), nested."""
    out: dict[str, Any] = {}
    for name in s.model_fields_set:
        v = getattr(s, name)
        out[name] = _explicit(v) if isinstance(v, BaseModel) else v
    return out
