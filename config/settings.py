"""The one settings object: defaults < YAML file < environment (VLMQ_*) < explicit overrides.

Every component receives a `Settings` instance; nothing reads the environment on its own.
Nested values come from the environment with `__` as separator, e.g.
`VLMQ_SAMPLING__SUMMARY__MAX_TOKENS=128`, or as JSON: `VLMQ_QUEUES='["gpu0","gpu1"]'`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from config.serve import ServeSettings

PACKAGE_PROMPT_DIR = Path(__file__).parent / "prompts"
ENV_PREFIX = "VLMQ_"


class StageSampling(BaseModel):
    """Sampling for one stage; part of the stage's cache key. Unknown names are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # 0 or -1: all tokens
    min_p: float = Field(0.0, ge=0, le=1)
    max_tokens: int = Field(64, ge=1, le=8192)
    min_tokens: int = Field(0, ge=0)
    seed: int | None = 0
    stop: list[str] = []
    repetition_penalty: float = Field(1.0, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)


# Each stage's own defaults; a partial override (one field, from env, YAML or a flag) merges into them.
STAGE_SAMPLING_DEFAULTS: dict[str, dict[str, Any]] = {
    "classify": {"max_tokens": 4},
    "score": {"max_tokens": 96},
    "summary": {"max_tokens": 192, "min_tokens": 1},  # never an empty summary
}


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classify: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["classify"])
    score: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["score"])
    summary: StageSampling = StageSampling(**STAGE_SAMPLING_DEFAULTS["summary"])

    @model_validator(mode="before")
    @classmethod
    def _merge_stage_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged = dict(value)
        for stage, defaults in STAGE_SAMPLING_DEFAULTS.items():
            given = value.get(stage)
            if isinstance(given, dict):
                merged[stage] = {**defaults, **given}
        return merged


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


def resolve_location(location: str) -> str:
    """A URL as given; a local path made absolute (the workers and the producer must agree on it)."""
    return location if "://" in location else str(Path(location).expanduser().resolve())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    # --- transport -------------------------------------------------------------------------
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None  # defaults to broker_url
    queues: list[str] = ["gpu0"]
    # Redis re-delivers an unacked task after this many seconds; keep it above the slowest batch.
    visibility_timeout_s: int = Field(3600, ge=5)
    result_expires_s: int = 7 * 24 * 3600
    job_ttl_s: int = 30 * 24 * 3600  # job records outlive Celery's result expiry
    redis_ssl_ca_certs: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None

    # --- batching and backpressure ---------------------------------------------------------
    batch_size: int = Field(32, ge=1, le=1024)
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
    # The results dataset: a folder, or a URL pyarrow.fs understands (s3://…, gs://…, hdfs://…).
    results_dir: str = "vlmq-results"
    # Every worker reaches results_dir (shared folder, object store): workers write their batches
    # there. Otherwise only workers on the producer's host do, and a collector drains the rest.
    results_shared: bool = False

    # --- images ----------------------------------------------------------------------------
    extensions: list[str] = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"]
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 80_000_000  # larger declared sizes are treated as decompression bombs
    max_image_edge: int = Field(768, ge=16)  # downscale target (longest edge); never upscales
    jpeg_quality: int = Field(90, ge=30, le=100)
    follow_symlinks: bool = False  # a symlink to a file outside the submitted root is refused otherwise
    report_other_files: bool = True  # files without an image extension get an error record
    report_hidden_files: bool = True  # dotfiles and dot-folders get a "skipped: hidden" record each
    prepare_workers: int | None = None  # image-decoding processes; default: one per core
    decode_timeout_s: float = 30.0
    decode_memory_mb: int = 2048  # address-space limit of each decoding process
    fetch_timeout_s: float = Field(30.0, gt=0)  # one URL's whole download (http/https only)
    max_redirects: int = Field(3, ge=0, le=10)  # followed only to http(s) URLs
    image_column: str = "image"  # Parquet / Arrow datasets: the column holding the image

    # --- preparation on a CPU queue (app.prepare_task) -------------------------------------
    # Set (e.g. "cpu"): the producer only lists sources and enqueues prepare tasks there, for
    # `celery -A app worker -Q cpu -P prefork -c N` on any host; unset: its own pool prepares.
    prepare_queue: str | None = None
    prepare_chunk: int = Field(32, ge=1, le=4096)  # files or URLs per prepare task (table rows: 8x)
    # On a CPU worker: the only folders whose files prepare tasks may open (shared storage mounted at
    # the producer's paths). A prepare task is a message like any other: without this, a forged one
    # could make the worker read any image on its host. Empty: local paths refused, URLs only.
    prepare_roots: list[Path] = []

    # --- engine ----------------------------------------------------------------------------
    engine: Literal["vllm", "test"] = "vllm"
    model: str = "HuggingFaceTB/SmolVLM-256M-Instruct"
    model_family: str | None = None  # registry key; guessed from the model name when unset
    tensor_parallel_size: int = Field(1, ge=1)
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int | None = None
    limit_mm_per_prompt: dict[str, int] = {"image": 1}
    enforce_eager: bool | None = None  # None: on for the CPU backend, off on GPUs
    enable_prefix_caching: bool = True
    # CPU backend only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE); without it vLLM reserves
    # gpu_memory_utilization of all host memory, which a shared machine rarely has free.
    cpu_kvcache_space_gb: int = Field(2, ge=1)
    stage_retries: int = Field(2, ge=0)  # retries of a stage whose engine failed outright
    engine_kwargs: dict[str, Any] = {}  # passed through to vllm.LLM for options not listed here
    test_engine_delay_s: float = 0.0  # deterministic test engine: sleep per batch (simulates a GPU)
    test_engine_fail_on: list[str] = []  # deterministic test engine: sha256 prefixes that fail
    test_engine_exit_on: list[str] = []  # deterministic test engine: sha256 prefixes that kill the process

    # --- prompts and conditions ------------------------------------------------------------
    prompt_dir: Path = PACKAGE_PROMPT_DIR
    classification_prompt: str = "default"
    max_prompt_bytes: int = Field(256 * 1024, ge=1024)  # per prompt file; prompts travel with every job
    system_prompt: str = "You are a careful visual analyst. Answer exactly in the requested format."
    sampling: Sampling = Sampling()
    score_threshold: float | None = None
    categories_to_score: list[str] | None = None
    categories_to_summarize: list[str] | None = None

    # --- observability ---------------------------------------------------------------------
    log_json: bool = True
    log_level: str = "INFO"

    # --- HTTP service (producer serve) -----------------------------------------------------
    serve: ServeSettings = ServeSettings()

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, value: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else f".{e.lower()}" for e in value]

    @field_validator("categories_to_score", "categories_to_summarize")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [c.strip().upper() for c in value if c.strip()]

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.result_backend is None:
            self.result_backend = self.broker_url
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = find_config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with CLI flags applied; `None` means "flag not given"."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.model_validate({**self.model_dump(), **given}) if given else self


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
    """Build settings from defaults, an optional YAML file, the environment and overrides."""
    if config_file is not None:
        # Exported, not just read: worker processes started from here must see the same file.
        os.environ[f"{ENV_PREFIX}CONFIG"] = str(find_config_file(config_file))
    return Settings().with_overrides(**overrides)
