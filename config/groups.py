"""The settings' groups: Redis, images, engine and conditions, each owning what is derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RedisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = "redis://127.0.0.1:6379/0"  # the broker
    result_backend: str | None = None  # defaults to url
    # Redis re-delivers an unacked task after this many seconds; keep it above the slowest batch.
    visibility_timeout_s: int = Field(3600, ge=5)
    result_expires_s: int = 7 * 24 * 3600
    job_ttl_s: int = 30 * 24 * 3600  # job records outlive Celery's result expiry
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.url

    def tls(self, url: str | None = None) -> dict[str, Any] | None:
        """TLS options for a `rediss://` URL (Celery's broker and backend, and redis-py); None otherwise."""
        if not (url or self.url).startswith("rediss://"):
            return None
        import ssl

        return {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }


@dataclass(frozen=True)
class PrepareLimits:
    """What preparing one image may do; travels inside prepare tasks (app.orders), hence a plain dataclass."""

    max_file_bytes: int
    max_pixels: int
    max_edge: int
    jpeg_quality: int
    use_draft: bool = True  # JPEG reduced-size decoding (off only to measure what it saves)
    fetch_timeout_s: float = 30.0  # whole download of one URL (image or shard stream stall)
    max_redirects: int = 3


class ImageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

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

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, value: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else f".{e.lower()}" for e in value]

    def limits(self, max_edge: int | None = None) -> PrepareLimits:
        """The limits preparation applies; `max_edge`: the edge the model uses, when smaller."""
        return PrepareLimits(
            self.max_file_bytes,
            self.max_pixels,
            min(self.max_image_edge, max_edge or self.max_image_edge),
            self.jpeg_quality,
            fetch_timeout_s=self.fetch_timeout_s,
            max_redirects=self.max_redirects,
        )


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm", "test"] = "vllm"  # "test": the deterministic test engine, not a model
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
    kwargs: dict[str, Any] = {}  # passed through to vllm.LLM for options not listed here
    test_delay_s: float = 0.0  # deterministic test engine: sleep per batch (simulates a GPU)
    test_fail_on: list[str] = []  # deterministic test engine: sha256 prefixes that fail
    test_exit_on: list[str] = []  # deterministic test engine: sha256 prefixes that kill the process
    test_model_id: str = ""  # deterministic test engine: the model id it answers to ("": deterministic-test-engine)


class Conditions(BaseModel):
    """Which images go on to the later stages."""

    model_config = ConfigDict(extra="forbid")

    score_threshold: float | None = None  # summarize only images scoring at least this
    categories_to_score: list[str] | None = None
    categories_to_summarize: list[str] | None = None

    @field_validator("categories_to_score", "categories_to_summarize")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [c.strip().upper() for c in value if c.strip()]
