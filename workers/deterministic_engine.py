"""A deterministic test engine: no model, outputs derived from hashes of the inputs.

It exists for orchestration tests and the overhead benchmark. It is not a model and its
outputs mean nothing about the images; records it produces name it as their model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence

from config.errors import BatchRejectedError
from workers.engine import TEST_ENGINE_ID, Completion, EngineRequest
from workers.json_sample import sample

IMAGE_TOKENS_ESTIMATE = 64  # what one image costs in a small VLM's prompt, roughly


class DeterministicTestEngine:
    model_id = TEST_ENGINE_ID

    def __init__(self, delay_s: float = 0.0, fail_on: Sequence[str] = (), exit_on: Sequence[str] = ()) -> None:
        self.delay_s = delay_s
        self.fail_on = tuple(fail_on)
        self.exit_on = tuple(exit_on)  # fault tests: a "poison" image that kills its worker outright
        self.calls = 0
        self.requests = 0

    def generate(self, requests: Sequence[EngineRequest]) -> list[str]:
        self.calls += 1
        self.requests += len(requests)
        if any(r.image_key.startswith(self.exit_on) for r in requests):
            os._exit(3)
        if self.delay_s:
            time.sleep(self.delay_s)  # stands in for a GPU's time per batch in scaling benchmarks
        failing = [r.image_key[:12] for r in requests if r.image_key.startswith(self.fail_on)]
        if failing:
            raise BatchRejectedError(f"test engine told to fail on {failing}")
        return [self._answer(r) for r in requests]

    def _answer(self, request: EngineRequest) -> str:
        digest = int(hashlib.sha256(f"{request.image_key}|{request.text}".encode()).hexdigest(), 16)
        if request.format == "choice":
            return request.choices[digest % len(request.choices)]
        if request.format == "score":
            return f'{{"score": {digest % 101 / 10}, "reasoning": "test engine output {digest % 997}"}}'
        if request.format == "json":
            return json.dumps(sample(request.schema, digest % 1_000_003), separators=(",", ":"))
        return f"Test engine text for image {request.image_key[:10]} (prompt {digest % 9973})."

    def complete(self, requests: Sequence[EngineRequest]) -> list[Completion]:
        """The same outputs with token counts estimated at four characters a token (no tokenizer)."""
        done = []
        for request, text in zip(requests, self.generate(requests)):
            finish = "stop"
            cuts = [text.find(stop) for stop in request.sampling.stop if stop and stop in text]
            if request.format == "text" and cuts:  # a stop string ends the output before it, as in vLLM
                text = text[: min(cuts)]
            elif request.format == "text" and math.ceil(len(text) / 4) > request.sampling.max_tokens:
                text, finish = text[: 4 * request.sampling.max_tokens], "length"
            prompt = IMAGE_TOKENS_ESTIMATE + math.ceil(len(request.system + request.text) / 4)
            done.append(Completion(text, prompt, math.ceil(len(text) / 4), finish, estimated=True))
        return done

    def stats(self) -> dict[str, float]:
        return {"engine_calls": self.calls, "engine_requests": self.requests}

    def close(self) -> None:
        pass
