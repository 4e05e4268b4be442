"""Output formats a stage can ask for, and the tolerant parsers that read them back.

Engines constrain decoding to these formats where they can (structured outputs); the parsers
still accept near-misses, because a model without constraints (or a truncated output) must
give a per-image error at worst, never a crashed batch.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from config.errors import OutputParseError

OutputFormat = Literal["choice", "score", "text"]

# JSON-shaped but with no free whitespace: a JSON-schema constraint lets a weak model loop on
# whitespace until max_tokens; this regex cannot.
SCORE_REGEX = r'\{"score": (10|[0-9]), "reasoning": "[^"\\\n]{0,160}"\}'
_SCORE_FIELD = re.compile(r'"?score"?\s*[:=]\s*"?(\d+(?:\.\d+)?)')
_REASONING_FIELD = re.compile(r'"?reasoning"?\s*[:=]\s*"([^"\n]*)')
_BARE_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?:\s*/\s*10)?(?![\d.])")


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
            return _check_range(float(data["score"]), text), str(data.get("reasoning", ""))
    except (ValueError, TypeError):
        pass
    m = _SCORE_FIELD.search(text) or _BARE_NUMBER.search(text)
    if m is None:
        raise OutputParseError(f"no score in output {text[:80]!r}")
    reasoning = _REASONING_FIELD.search(text)
    return _check_range(float(m.group(1)), text), reasoning.group(1) if reasoning else ""


def _check_range(score: float, text: str) -> float:
    if not 0 <= score <= 10:
        raise OutputParseError(f"score {score} outside 0-10 in {text[:80]!r}")
    return score


def parse_text(text: str) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise OutputParseError("empty output")
    return cleaned
