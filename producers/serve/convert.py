"""OpenAI chat request → one fleet chat item, and a worker's answer → OpenAI's response shape.

One image per request: the engines take exactly one image per prompt (`limit_mm_per_prompt`),
so a request with none or with several is refused with a 400 naming `messages`.
"""

from __future__ import annotations

import uuid

from app.chat import ChatAnswer, ChatItem
from config.sampling import StageSampling
from producers.serve.errors import ApiError
from producers.serve.openai_schema import (
    UNSUPPORTED,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceMessage,
    ImagePart,
    TextPart,
    Usage,
)

DEFAULT_MAX_TOKENS = 256


def refuse_unsupported(req: ChatCompletionRequest) -> None:
    if req.stream:
        raise ApiError(
            400,
            "streaming is not supported by this service; send stream=false (the default)",
            "stream",
            "stream_not_supported",
        )
    if req.n != 1:
        raise ApiError(400, "only n=1 is supported (one choice per request)", "n", "unsupported_parameter")
    extra = req.model_extra or {}
    for name in UNSUPPORTED:
        if extra.get(name) not in (None, False, [], {}):
            raise ApiError(400, f"{name} is not supported by this service", name, "unsupported_parameter")


def image_and_text(req: ChatCompletionRequest) -> tuple[str, str, str]:
    """(image URL, system text, conversation text) of a request."""
    images: list[str] = []
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in req.messages:
        texts = []
        for part in message.parts():
            if isinstance(part, ImagePart):
                images.append(part.image_url.url)
            elif isinstance(part, TextPart):
                texts.append(part.text)
        text = "\n".join(texts)
        if message.role in ("system", "developer"):
            system.append(text)
        elif text:
            turns.append((message.role, text))
    if not images:
        raise ApiError(
            400, "the request has no image: send one image_url part (http(s) or data: URL)", "messages", "missing_image"
        )
    if len(images) > 1:
        raise ApiError(
            400,
            f"the request has {len(images)} images; this service takes exactly one per request",
            "messages",
            "too_many_images",
        )
    if len(turns) == 1:
        conversation = turns[0][1]
    else:  # several turns: one prompt with the roles spelled out (the engine sees one user message)
        conversation = "\n".join(f"{role.capitalize()}: {text}" for role, text in turns)
    return images[0], "\n\n".join(s for s in system if s), conversation


def response_format(req: ChatCompletionRequest) -> tuple[str, dict | None]:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return "text", None
    if fmt.type == "json_object":
        return "json", None
    if fmt.json_schema is None or not fmt.json_schema.json_schema:
        raise ApiError(
            400, "response_format json_schema needs json_schema.schema", "response_format.json_schema", "invalid_value"
        )
    return "json", fmt.json_schema.json_schema


def chat_item(req: ChatCompletionRequest, request_id: str, sha256: str) -> ChatItem:
    _, system, text = image_and_text(req)
    fmt, schema = response_format(req)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        raise ApiError(400, "at most 4 stop sequences", "stop", "invalid_value")
    sampling = StageSampling(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        max_tokens=req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS,
        seed=req.seed,
        stop=stop,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
    )
    return ChatItem(
        request_id=request_id,
        sha256=sha256,
        system=system,
        text=text,
        sampling=sampling,
        format=fmt,
        json_schema=schema,
    )


def completion(model: str, answer: ChatAnswer) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        model=model,
        choices=[
            Choice(
                message=ChoiceMessage(content=answer.content),
                finish_reason="length" if answer.finish_reason == "length" else "stop",
            )
        ],
        usage=Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        system_fingerprint=answer.worker,
    )
