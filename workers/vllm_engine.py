"""The vLLM engine: one `LLM` per worker process, one `LLM.chat` call per stage per batch."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.errors import BatchRejectedError, ConfigError, EngineDeadError, EngineError
from config.settings import Settings
from workers.engine import Completion, EngineRequest
from workers.formats import SCORE_REGEX
from workers.registry import ModelSpec, resolve_spec

log = logging.getLogger(__name__)
CACHE_COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")


def resolve_model_path(model: str) -> str:
    """A local folder as is; a hub id from the local cache or, with network, a download."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    try:
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(model, local_files_only=True)
        except Exception:  # not cached yet
            return snapshot_download(model)
    except Exception as exc:
        raise ConfigError(
            f"model {model!r} is neither a local folder nor downloadable here ({type(exc).__name__}). "
            "Download it on a machine with network (`hf download ID --local-dir DIR`) "
            "and pass --model DIR (or VLMQ_ENGINE__MODEL=DIR). To try the pipeline offline: "
            "`python -m workers.tiny_model .models/tiny-smolvlm` builds a tiny random-weight model "
            "(meaningless outputs) to pass as --model .models/tiny-smolvlm."
        ) from exc


def engine_kwargs(settings: Settings, spec: ModelSpec, model_path: str, on_cpu: bool = False) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        model=model_path,
        tensor_parallel_size=settings.engine.tensor_parallel_size,
        dtype=settings.engine.dtype if settings.engine.dtype != "auto" or not on_cpu else "float32",
        max_model_len=settings.engine.max_model_len,  # None: the model's own limit
        gpu_memory_utilization=settings.engine.gpu_memory_utilization,
        limit_mm_per_prompt=settings.engine.limit_mm_per_prompt or spec.limit_mm_per_prompt,
        enable_prefix_caching=settings.engine.enable_prefix_caching,
        # graph capture / compilation buys nothing on the CPU backend and costs minutes at start-up
        enforce_eager=on_cpu if settings.engine.enforce_eager is None else settings.engine.enforce_eager,
        disable_log_stats=False,  # keeps get_metrics() (prefix-cache counters) available
        seed=0,
        # JSON outputs (chat requests' response_format) without free whitespace: a weak model can
        # otherwise loop on it until max_tokens. Engine-wide in vLLM, not per request, and only with
        # an explicit backend (xgrammar: what "auto" picks for choice, regex and JSON schemas).
        structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
    )
    if spec.mm_processor_kwargs:
        kwargs["mm_processor_kwargs"] = dict(spec.mm_processor_kwargs)
    if settings.engine.max_num_seqs:
        kwargs["max_num_seqs"] = settings.engine.max_num_seqs
    return {**kwargs, **spec.engine_kwargs, **settings.engine.kwargs}


class VLLMEngine:
    def __init__(self, settings: Settings) -> None:
        self.spec = resolve_spec(settings.engine.model, settings.engine.model_family)
        self.model_id = settings.engine.model
        model_path = resolve_model_path(settings.engine.model)  # fails fast and clearly, before the import
        from vllm import LLM  # heavy: imported only by the process that runs the engine
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.engine.cpu_kvcache_space_gb))
        kwargs = engine_kwargs(settings, self.spec, model_path, current_platform.is_cpu())
        log.info("starting vLLM engine", extra={"engine_kwargs": {k: str(v) for k, v in kwargs.items()}})
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # unusable engine: the stage retries with a fresh one, then gives up
            raise EngineDeadError(f"vLLM engine failed to start: {exc}") from exc

    def _conversation(self, request: EngineRequest) -> list[dict[str, Any]]:
        from PIL import Image

        image = Image.open(io.BytesIO(request.image))
        image.load()
        text = request.text
        messages: list[dict[str, Any]] = []
        if self.spec.system_role:
            if request.system:  # a chat request may come without one
                messages.append({"role": "system", "content": request.system})
        elif request.system:
            text = f"{request.system}\n\n{text}"
        content = [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": text}]
        messages.append({"role": "user", "content": content})
        return messages

    def _sampling(self, request: EngineRequest):  # -> vllm.SamplingParams
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = None
        if request.format == "choice":
            structured = StructuredOutputsParams(choice=list(request.choices))
        elif request.format == "score":
            structured = StructuredOutputsParams(regex=SCORE_REGEX)
        elif request.format == "json":  # free whitespace is off engine-wide (engine_kwargs)
            structured = (
                StructuredOutputsParams(json=request.schema)
                if request.schema
                else StructuredOutputsParams(json_object=True)
            )
        s = request.sampling.model_dump()
        stop = list(self.spec.stop) + s.pop("stop")
        return SamplingParams(**s, stop=stop or None, structured_outputs=structured)

    def _chat(self, requests: Sequence[EngineRequest]) -> list[Any]:
        """One `LLM.chat` call; a dead engine or a refused batch becomes the matching EngineError."""
        conversations = [self._conversation(r) for r in requests]
        params = [self._sampling(r) for r in requests]
        done = threading.Event()
        threading.Thread(target=self._wake_on_death, args=(done,), name="vlmq-engine-watch", daemon=True).start()
        try:
            return self.llm.chat(conversations, params, use_tqdm=False, chat_template=self.spec.chat_template)
        except Exception as exc:
            raise self.classify(exc, len(requests)) from exc
        finally:
            done.set()

    def generate(self, requests: Sequence[EngineRequest]) -> list[str]:
        return [out.outputs[0].text if out.outputs else "" for out in self._chat(requests)]

    def complete(self, requests: Sequence[EngineRequest]) -> list[Completion]:
        """With vLLM's own token counts and finish reasons (chat requests)."""
        outputs = self._chat(requests)
        done = []
        for out in outputs:
            first = out.outputs[0] if out.outputs else None
            done.append(
                Completion(
                    first.text if first else "",
                    len(out.prompt_token_ids or []),
                    len(first.token_ids) if first else 0,
                    "length" if first and first.finish_reason == "length" else "stop",
                )
            )
        return done

    def _wake_on_death(self, done: threading.Event) -> None:
        """Turn an engine death during `chat` into an error instead of a hang.

        When the EngineCore process dies mid-call, vLLM 0.32's monitor thread marks the engine
        dead and stops the thread that feeds the sync client's output queue, but nothing wakes
        the call waiting on that queue: `LLM.chat` blocked forever. vLLM's own reader puts its
        exceptions on that queue (`SyncMPClient.outputs_queue`), so the same is done here with
        vLLM's EngineDeadError; `get_output` then raises it and `classify` reads it as a death.
        """
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        while not done.wait(0.5):
            if self.is_dead():
                core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
                waiting = getattr(core, "outputs_queue", None)
                if waiting is not None:
                    waiting.put_nowait(VLLMEngineDead())
                return

    def is_dead(self) -> bool:
        """True once vLLM has seen its engine process die (its monitor thread sets the flag)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        return bool(getattr(getattr(core, "resources", None), "engine_dead", False))

    def classify(self, exc: Exception, n: int) -> EngineError:
        """Engine gone (rebuild, retry the batch) or this batch refused (split it to find the culprit)."""
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        if isinstance(exc, VLLMEngineDead) or self.is_dead():
            return EngineDeadError(f"vLLM engine process died during a batch of {n}: {exc}")
        return BatchRejectedError(f"vLLM refused a batch of {n}: {type(exc).__name__}: {exc}")

    def limits(self) -> tuple[int, int] | None:
        """(max_num_seqs, KV-cache tokens) of the built engine (workers.capacity)."""
        from workers.capacity import vllm_limits

        return vllm_limits(self.llm)

    def stats(self) -> dict[str, float]:
        totals = dict.fromkeys(CACHE_COUNTERS, 0.0)
        for metric in self.llm.get_metrics():
            if metric.name in totals:
                totals[metric.name] += float(getattr(metric, "value", 0) or 0)
        return {name.split(":", 1)[1]: value for name, value in totals.items()}

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
