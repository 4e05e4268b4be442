"""Output formats a stage can ask for, and the tolerant parsers that read them back.

Engines constrain decoding to these formats where they can (structured outputs); the parsers
still accept near-misses, because a model without constraints (or a truncated output) must
give a per-image error at worst, never a crashed batch.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from config.errors import OutputParseError

OutputFormat = Literal["choice", "score", "text", "json"]  # json: a request's own JSON schema

# JSON-shaped but with no free whitespace: a JSON-schema constraint lets a weak model loop on
# whitespace until max_tokens; this regex cannot. Scores may carry one decimal (8.5).
SCORE_REGEX = r'\{"score": (10(\.0)?|[0-9](\.[0-9])?), "reasoning": "[^"\\\n]{0,160}"\}'
_SCORE_FIELD = re.compile(r'"?score"?\s*[:=]\s*"?(\d+(?:\.\d+)?)')
_REASONING_FIELD = re.compile(r'"?reasoning"?\s*[:=]\s*"([^"\n]*)')
_BARE_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?:\s*/\s*10)?(?![\d.])")
# A JSON answer needs room: a stage's max_tokens (4 for a classification letter) is raised to this.
JSON_MIN_TOKENS = 256
# A classification prompt that names a "reasoning" field asks for it: it then gets this schema.
_ASKS_REASONING = re.compile(r'["\']reasoning["\']')


def asks_for_reasoning(prompt_text: str) -> bool:
    return bool(_ASKS_REASONING.search(prompt_text))


def classification_schema(categories: list[str], declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """The prompt's own schema, or category + reasoning; the category always an enum of the letters."""
    base = declared or {
        "type": "object",
        "additionalProperties": False,
        "required": ["category", "reasoning"],
        "properties": {"category": {}, "reasoning": {"type": "string", "maxLength": 160}},
    }
    properties = {
        "category": {"type": "string", "enum": list(categories)},
        **{k: v for k, v in base["properties"].items() if k != "category"},
    }
    return {**base, "properties": properties, "required": list(properties)}


def parse_choice(text: str, choices: list[str]) -> str:
    cleaned = text.strip().strip(".:*\"' ").upper()
    if cleaned in choices:
        return cleaned
    m = re.search(r"\b(?:CATEGORY\s+)?([A-Z0-9]+)\b", cleaned)
    if m and m.group(1) in choices:
        return m.group(1)
    raise OutputParseError(f"expected one of {choices}, got {text[:80]!r}")


def parse_score(text: str) -> tuple[float, str]:
    """Return (score in 0..10, reasoning) from JSON, a `score: N` field or a bare number."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "score" in data:
            return check_score(float(data["score"]), text), str(data.get("reasoning", ""))
    except (ValueError, TypeError):
        pass
    m = _SCORE_FIELD.search(text) or _BARE_NUMBER.search(text)
    if m is None:
        raise OutputParseError(f"no score in output {text[:80]!r}")
    reasoning = _REASONING_FIELD.search(text)
    return check_score(float(m.group(1)), text), reasoning.group(1) if reasoning else ""


def check_score(score: float, text: str) -> float:
    if not 0 <= score <= 10:
        raise OutputParseError(f"score {score} outside 0-10 in {text[:80]!r}")
    return round(score, 1)  # one decimal, as prompts ask and SCORE_REGEX allows


def parse_text(text: str) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise OutputParseError("empty output")
    return cleaned
