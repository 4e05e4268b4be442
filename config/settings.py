"""The one settings object: defaults < YAML file < environment (VLMQ_*) < explicit overrides.

Every component receives a `Settings` instance; nothing reads the environment on its own. Settings
come in groups (redis, images, engine, sampling, conditions, serve) beside the job-level fields.
Nested values come from the environment with `__` as separator, e.g. `VLMQ_REDIS__URL=redis://…`,
`VLMQ_ENGINE__MODEL=…`, `VLMQ_SAMPLING__SUMMARIZE__MAX_TOKENS=128`, or as JSON:
`VLMQ_QUEUES='["gpu0","gpu1"]'`. A partial group (one field, from any source) keeps the group's
other defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from config.batching import BatchSize
from config.groups import Conditions, EngineSettings, ImageSettings, RedisSettings
from config.sampling import Sampling
from config.serve import ServeSettings
from config.stages import STAGES

PACKAGE_PROMPT_DIR = Path(__file__).parent / "prompts"
ENV_PREFIX = "VLMQ_"


def config_file_candidates(component: str = "vlmq") -> list[Path]:
    """Where a YAML file is looked for, first match wins (the captioning tool's order)."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return [
        Path.cwd() / f"{component}.yaml",
        Path.home() / f".{component}" / "config.yaml",
        xdg / component / "config.yaml",
        Path("/etc") / component / "config.yaml",
    ]


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            from config.errors import ConfigError

            raise ConfigError(f"config file not found: {path}")
        return path
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return find_config_file(env)
    return next((p for p in config_file_candidates() if p.is_file()), None)


# Flat names from before the settings had groups (#18). The environment source ignores a name that
# is no field, so an old deployment's VLMQ_BROKER_URL or VLMQ_MODEL would be dropped without a word.
RENAMED = {
    "broker_url": "redis.url",
    **{f"redis_ssl_{f}": f"redis.ssl_{f}" for f in ("ca_certs", "certfile", "keyfile")},
    **{f: f"redis.{f}" for f in ("result_backend", "visibility_timeout_s", "result_expires_s", "job_ttl_s")},
    **{f: f"images.{f}" for f in ImageSettings.model_fields},
    **{
        f: f"engine.{f}"
        for f in EngineSettings.model_fields
        if f not in ("backend", "kwargs") and not f.startswith("test_")
    },
    **{f"test_engine_{f}": f"engine.test_{f}" for f in ("delay_s", "fail_on", "exit_on")},
    "engine_kwargs": "engine.kwargs",
    **{f: f"conditions.{f}" for f in Conditions.model_fields},
}


def check_no_renamed_names(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse VLMQ_* variables that name a setting by its old flat name, saying what it is now."""
    found = []
    for key in environ:
        name = key.upper().removeprefix(ENV_PREFIX).lower() if key.upper().startswith(ENV_PREFIX) else None
        if name in RENAMED:
            group, field = RENAMED[name].split(".")
            found.append(f"{key} (now {ENV_PREFIX}{group.upper()}__{field.upper()})")
    if found:
        from config.errors import ConfigError

        raise ConfigError(f"settings moved into groups; rename {', '.join(sorted(found))}")


def resolve_location(location: str) -> str:
    """A URL as given; a local path made absolute (the workers and the producer must agree on it)."""
    return location if "://" in location else str(Path(location).expanduser().resolve())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    redis: RedisSettings = RedisSettings()
    images: ImageSettings = ImageSettings()
    engine: EngineSettings = EngineSettings()
    sampling: Sampling = Sampling()
    conditions: Conditions = Conditions()
    serve: ServeSettings = ServeSettings()  # the HTTP service (producer serve)

    # --- queues, batching and backpressure -------------------------------------------------
    queues: list[str] = ["gpu0"]
    batch_size: BatchSize = "auto"  # images per task; "auto": what the engine holds (config.batching)
    max_inflight_batches: int = Field(8, ge=1)
    blob_ttl_s: int = Field(24 * 3600, ge=60)
    # A folder every worker can read (shared filesystem): prepared images go there, not into Redis.
    shared_dir: Path | None = None
    # A batch redelivered after its worker was lost runs one image at a time; an image that was
    # running when its worker died max_attempts - 1 times (at least once) is dead-lettered.
    max_attempts: int = Field(3, ge=1)
    # On SIGTERM, how long the running batch may go on before it is handed back to Redis.
    soft_shutdown_s: float = Field(0.0, ge=0)
    use_cache: bool = True
    # The stages a job runs (`--stages`); one not selected is skipped for every image, engine-free.
    stages: list[Literal["classify", "score", "summarize"]] = list(STAGES)
    # The results dataset: a folder, or a URL pyarrow.fs understands (s3://…, gs://…, hdfs://…).
    results_dir: str = "vlmq-results"
    # Every worker reaches results_dir (shared folder, object store): workers write their batches
    # there. Otherwise only workers on the producer's host do, and a collector drains the rest.
    results_shared: bool = False

    # --- preparation on a CPU queue (app.prepare_task) -------------------------------------
    # Set (e.g. "cpu"): the producer only lists sources and enqueues prepare tasks there, for
    # `celery -A app worker -Q cpu -P prefork -c N` on any host; unset: its own pool prepares.
    prepare_queue: str | None = None
    prepare_chunk: int = Field(32, ge=1, le=4096)  # files or URLs per prepare task (table rows: 8x)
    # On a CPU worker: the only folders whose files prepare tasks may open (shared storage mounted at
    # the producer's paths). A prepare task is a message like any other: without this, a forged one
    # could make the worker read any image on its host. Empty: local paths refused, URLs only.
    prepare_roots: list[Path] = []

    # --- prompts ---------------------------------------------------------------------------
    prompt_dir: Path = PACKAGE_PROMPT_DIR
    classification_prompt: str = "default"
    max_prompt_bytes: int = Field(256 * 1024, ge=1024)  # per prompt file; prompts travel with every job
    system_prompt: str = "You are a careful visual analyst. Answer exactly in the requested format."

    # --- observability ---------------------------------------------------------------------
    log_json: bool = True
    log_level: str = "INFO"

    @field_validator("stages")
    @classmethod
    def _pipeline_order(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"select at least one stage of {', '.join(STAGES)}")
        return [s for s in STAGES if s in value]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_no_renamed_names()
        sources = [init_settings, env_settings]
        path = settings_cls.model_config.get("yaml_file") or find_config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with overrides applied, groups as dicts (`engine={"model": m}`); `None` means
        "flag not given", at any depth, and a partial group keeps the group's other values. Only
        what was set is carried over, so `model_fields_set` still tells a default from a choice."""
        given = _given(overrides)
        return self.model_validate(_merged(self.model_dump(exclude_unset=True), given)) if given else self

    def worker_environment(self) -> dict[str, str]:
        """These settings as VLMQ_* variables, for a worker process started from here (only what
        differs from the defaults; the config file, if any, travels as VLMQ_CONFIG)."""
        config_file = self.model_config.get("yaml_file")
        env: dict[str, str] = {f"{ENV_PREFIX}CONFIG": str(config_file)} if config_file else {}
        defaults = Settings.model_construct().model_dump(mode="json")
        for name, value in self.model_dump(mode="json").items():
            if isinstance(value, dict) and name != "sampling":
                for field, v in value.items():
                    if v != defaults[name].get(field) and v is not None:
                        env[f"{ENV_PREFIX}{name.upper()}__{field.upper()}"] = _env_value(v)
            elif value != defaults[name] and value is not None:
                env[f"{ENV_PREFIX}{name.upper()}"] = _env_value(value)
        return env


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _given(overrides: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and not isinstance(value, BaseModel):
            value = _given(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in given.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def redact_url(url: str | None) -> str | None:
    """The URL with its password replaced by '***', for anything written or shown."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, a YAML file (the one given, else VLMQ_CONFIG, else the usual
    places), the environment and overrides. Nothing is written to the environment: a worker started
    from here gets the file's path from `worker_environment()`."""
    path = find_config_file(config_file)
    cls = Settings
    if path is not None:
        cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": str(path)}})
    return cls().with_overrides(**overrides)
