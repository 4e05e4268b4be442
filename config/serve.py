"""Settings of the HTTP service (`producer serve`): `serve:` in the YAML file, VLMQ_SERVE__* in the env."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt `api_keys` must not pass as "no keys"

    host: str = "127.0.0.1"  # any other address needs api_keys (`producer serve` refuses otherwise)
    port: int = Field(8000, ge=0, le=65535)
    # Bearer keys accepted in `Authorization: Bearer KEY`; none: no auth, and loopback only.
    api_keys: list[str] = []
    batch_window_ms: float = Field(10.0, ge=0)  # requests arriving this close together share one task
    max_batch_size: int = Field(32, ge=1, le=1024)
    request_timeout_s: float = Field(300.0, gt=0)  # how long a chat request waits for its answer
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # a larger body is refused with 413
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024)  # one image, fetched or base64-decoded
    fetch_timeout_s: float = Field(10.0, gt=0)  # whole download of one image URL
    allow_private_urls: bool = False  # image URLs on loopback/private addresses (tests, intranets)
    # Folders a job may name (`POST /v1/jobs {"folder": …}`); none: folder jobs are refused.
    job_roots: list[Path] = []
    max_job_urls: int = Field(10_000, ge=1)
    download_dir: Path | None = None  # where URL jobs' images are downloaded (default: the temp dir)
    job_history: int = Field(200, ge=1)  # recent jobs whose outcomes /metrics counts
