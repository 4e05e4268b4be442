"""The engine interface: a batch of (image, text) requests in, one text per request out.

Prompt layout, for every engine: a system prompt shared by all stages, then the image, then
the stage's own text. The shared part comes first so that the score and summarize stages of a
batch reuse the prefix-cache blocks that the classification stage computed for its images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from config.errors import BatchRejectedError, ConfigError
from config.sampling import StageSampling
from config.settings import Settings
from workers.formats import OutputFormat


@dataclass(frozen=True)
class EngineRequest:
    image: bytes  # prepared (downscaled, re-encoded) image
    image_key: str  # sha256 of the original file
    system: str
    text: str
    sampling: StageSampling
    format: OutputFormat = "text"
    choices: list[str] = field(default_factory=list)
    schema: dict | None = None  # format "json": the JSON schema the output must satisfy (None: any object)


@dataclass(frozen=True)
class Completion:
    """One output with what the engine knows about it (chat requests report usage)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" or "length", as OpenAI's API says
    estimated: bool = False  # token counts estimated, not counted by a tokenizer


class Engine(Protocol):
    """What a worker needs from an inference engine."""

    model_id: str

    def generate(self, requests: Sequence[EngineRequest]) -> list[str]:
        """One engine call for the whole batch.

        Raises EngineDeadError when the engine itself is gone, BatchRejectedError when it refused
        this batch (config.errors says what each leads to).
        """

    def complete(self, requests: Sequence[EngineRequest]) -> list[Completion]:
        """Like generate, with token counts and finish reasons."""

    def stats(self) -> dict[str, float]:
        """Counters worth showing (e.g. prefix-cache queries and hits)."""

    def close(self) -> None:
        """Release the engine (GPU memory, engine processes)."""


TEST_ENGINE_ID = "deterministic-test-engine"


T = TypeVar("T")


def split_on_reject(
    call: Callable[[list[EngineRequest]], Iterable[T]], requests: list[EngineRequest]
) -> list[T | BatchRejectedError]:
    """One engine call; a batch the engine refuses is split in halves down to the request that
    fails, which gets the error in its place. A dead engine (EngineDeadError) is not split: it
    propagates, and the caller rebuilds the engine."""
    if not requests:
        return []
    try:
        return list(call(requests))
    except BatchRejectedError as exc:
        if len(requests) == 1:
            return [exc]
        mid = len(requests) // 2
        return split_on_reject(call, requests[:mid]) + split_on_reject(call, requests[mid:])


def engine_model_id(settings: Settings) -> str:
    """What records name as their model, workers advertise and jobs are routed by: the model, or
    plainly the test engine (`engine.test_model_id` lets test engines play several models in one fleet)."""
    if settings.engine.backend == "test":
        return settings.engine.test_model_id or TEST_ENGINE_ID
    return settings.engine.model


def engine_serves(settings: Settings) -> dict[str, object]:
    """What a worker advertises of its engine besides the model id: its family and TP size."""
    family = "test"
    if settings.engine.backend != "test":
        from workers.registry import resolve_spec

        try:
            family = resolve_spec(settings.engine.model, settings.engine.model_family).family
        except ConfigError:
            family = ""  # the engine start says why; the heartbeat must not
    return {"family": family, "tensor_parallel_size": settings.engine.tensor_parallel_size}


def create_engine(settings: Settings) -> Engine:
    """The engine the settings name; vLLM is imported only when it is the one wanted."""
    if settings.engine.backend == "test":
        from workers.deterministic_engine import DeterministicTestEngine

        engine = DeterministicTestEngine(
            settings.engine.test_delay_s, settings.engine.test_fail_on, settings.engine.test_exit_on
        )
        engine.model_id = engine_model_id(settings)
        return engine
    from workers.vllm_engine import VLLMEngine

    return VLLMEngine(settings)
