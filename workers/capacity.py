"""What an engine can hold at once: the number a batch size of "auto" resolves to (app.batch_size).

Measured once, right after the engine is built:

    capacity = min(max_num_seqs, kv_cache_tokens // tokens_per_request), clamped to 1..1024

- `max_num_seqs`: the most sequences the engine's scheduler runs in one step;
- `kv_cache_tokens`: the tokens its KV cache holds (vLLM's group-aware figure, else blocks x block size);
- `tokens_per_request`: what one image request of the worst stage needs there, measured by a probe:
  one request per stage (a blank image of the size preparation sends, the system prompt and the
  longest of the stage's prompt files; one token generated) gives its prompt tokens, image tokens
  included, and the stage's `max_tokens` is added.

A batch larger than this would only wait inside the engine; a smaller one leaves sequences idle
in every engine step. An engine that does not say (the deterministic test engine) has no capacity.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from typing import Any

from config.batching import clamp
from config.sampling import StageSampling
from config.settings import Settings
from workers.engine import Engine, EngineRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capacity:
    max_num_seqs: int
    kv_cache_tokens: int
    tokens_per_request: int

    @property
    def images(self) -> int:
        """Requests the engine holds at once: the batch size "auto" stands for."""
        return clamp(min(self.max_num_seqs, self.kv_cache_tokens // max(1, self.tokens_per_request)))

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "images": self.images}


def vllm_limits(llm: Any) -> tuple[int, int] | None:
    """(max_num_seqs, KV-cache tokens) of a built `vllm.LLM`, from its engine's config; None if unknown."""
    config = getattr(getattr(llm, "llm_engine", None), "vllm_config", None)
    if config is None:
        return None
    seqs = getattr(config.scheduler_config, "max_num_seqs", None)
    cache = config.cache_config
    tokens = getattr(cache, "kv_cache_size_tokens", None)
    if not tokens and cache.num_gpu_blocks and cache.block_size:
        tokens = cache.num_gpu_blocks * cache.block_size
    return (int(seqs), int(tokens)) if seqs and tokens else None


def stage_texts(settings: Settings) -> dict[str, str]:
    """Per stage, the longest stage text the settings' prompt files give (what the probe asks)."""
    from config.prompts import load_prompt_set

    prompts = load_prompt_set(settings.prompt_dir, settings.classification_prompt, settings.max_prompt_bytes)
    score = [p for ps in (prompts.scoring_default, *prompts.scoring.values()) for p in ps]
    summary = [p for ps in (prompts.summary_default, *prompts.summary.values()) for p in ps]
    texts = {"classify": [prompts.classification.text], "score": [p.text for p in score]}
    texts["summarize"] = [p.text for p in summary]
    return {stage: max(found, key=len) for stage, found in texts.items() if found and stage in settings.stages}


def probe_image(edge: int) -> bytes:
    """A blank JPEG as large as preparation sends (square: the most pixels, the most image tokens)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (edge, edge), (128, 128, 128)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def tokens_per_request(engine: Engine, settings: Settings, edge: int) -> int:
    """The most tokens one image request of any stage takes in the KV cache: prompt plus max_tokens."""
    texts = stage_texts(settings)
    image = probe_image(edge)
    one_token = StageSampling(max_tokens=1)
    requests = [EngineRequest(image, "capacity-probe", settings.system_prompt, t, one_token) for t in texts.values()]
    done = engine.complete(requests)
    sampling = settings.sampling
    return max(c.prompt_tokens + getattr(sampling, stage).max_tokens for stage, c in zip(texts, done))


def measure_capacity(engine: Engine, settings: Settings) -> Capacity | None:
    """The engine's capacity, or None when it does not say (or the probe failed: "auto" then falls back)."""
    limits = getattr(engine, "limits", None)
    found = limits() if callable(limits) else None
    if found is None:
        return None
    spec = getattr(engine, "spec", None)  # the model's own longest useful edge, as preparation uses it
    edge = min(settings.images.max_image_edge, getattr(spec, "max_image_edge", None) or settings.images.max_image_edge)
    try:
        needed = tokens_per_request(engine, settings, edge)
    except Exception:  # never keep a worker from working over a batch-size hint
        log.warning("capacity probe failed; batch size auto falls back", exc_info=True)
        return None
    capacity = Capacity(found[0], found[1], needed)
    log.info("engine capacity", extra={"capacity": capacity.describe()})
    return capacity
