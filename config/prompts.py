"""Prompt files: SYSTEM/USER sections, categories read from the classification prompt.

Layout of a prompt directory (a user adds a category by editing files only):

    classification_default.txt      lines like "Category A: Natural landscapes" define categories
    scoring_default.txt             used for any category without its own scoring prompt
    scoring_category_a.txt          scoring prompt for category A
    summary_default.txt / summary_category_a.txt
    summary_category_a.short.txt    a variant: every variant of a stage gives one more output

Any prompt file may add a `==== SCHEMA ====` section with a JSON object schema: that stage's
output is then decoded to the schema and its fields land in the record (config.output_schema).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from config.errors import PromptError
from config.output_schema import normalize_schema

SYSTEM_MARK = re.compile(r"^=+\s*SYSTEM PROMPT\s*=+\s*$", re.M)
USER_MARK = re.compile(r"^=+\s*USER PROMPT\s*=+\s*$", re.M)
SCHEMA_MARK = re.compile(r"^=+\s*SCHEMA\s*=+\s*$", re.M)
ANY_MARK = re.compile(r"^=+\s*(?:SYSTEM PROMPT|USER PROMPT|SCHEMA)\s*=+\s*$", re.M)
CATEGORY_LINE = re.compile(r"^\s*[-*]?\s*Category\s+([A-Za-z0-9]+)\s*[:\-]\s*(.+?)\s*$", re.M)
# C0/C1 controls other than tab, newline and CR, and the bidirectional overrides that make text
# read differently from what it says: a terminal would obey them when `producer prompts` prints.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_PROMPT_BYTES = 256 * 1024
STAGE_FILE = re.compile(r"^(scoring|summary)_(default|category_([A-Za-z0-9]+))(?:\.([\w-]+))?\.txt$")


class Prompt(BaseModel, frozen=True):
    name: str
    system: str
    user: str
    output_schema: dict[str, Any] | None = None  # from a SCHEMA section, normalized

    @cached_property  # frozen: hashed once, not once per image and stage
    def digest(self) -> str:
        raw = f"{self.system}\x00{self.user}"
        if self.output_schema is not None:  # prompts without a schema keep the hash they always had
            raw += "\x00" + json.dumps(self.output_schema, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    @property
    def ref(self) -> str:
        """Name and content hash, as recorded on every result: `summary_category_a@3f2c…`."""
        return f"{self.name}@{self.digest}"

    @property
    def text(self) -> str:
        """The stage text placed after the image (see workers.engine for why after)."""
        return f"{self.system}\n\n{self.user}".strip() if self.system else self.user


class PromptSet(BaseModel, frozen=True):
    """Everything a worker needs to apply a job's prompts; carried by the job, not the worker."""

    classification: Prompt
    categories: dict[str, str]
    scoring: dict[str, list[Prompt]]
    summary: dict[str, list[Prompt]]
    scoring_default: list[Prompt]
    summary_default: list[Prompt]

    def for_stage(self, stage: str, category: str) -> list[Prompt]:
        table, default = {
            "score": (self.scoring, self.scoring_default),
            "summarize": (self.summary, self.summary_default),
        }[stage]
        return table.get(category.upper()) or default


def _split_schema(name: str, text: str) -> tuple[str, dict[str, Any] | None]:
    """The text without its SCHEMA section, and that section's schema (normalized)."""
    mark = SCHEMA_MARK.search(text)
    if mark is None:
        return text, None
    following = ANY_MARK.search(text, mark.end())
    end = following.start() if following else len(text)
    return text[: mark.start()] + text[end:], normalize_schema(text[mark.end() : end].strip(), name)


def parse_prompt(name: str, text: str) -> Prompt:
    text, schema = _split_schema(name, text)
    sys_m, user_m = SYSTEM_MARK.search(text), USER_MARK.search(text)
    if user_m is None:
        if sys_m is not None:
            raise PromptError(f"prompt {name!r} has a SYSTEM section but no USER section")
        return Prompt(name=name, system="", user=text.strip(), output_schema=schema)
    if sys_m is not None and sys_m.start() < user_m.start():
        system = text[sys_m.end() : user_m.start()]
    else:
        system = ""
    user = text[user_m.end() :]
    if not user.strip():
        raise PromptError(f"prompt {name!r} has an empty USER section")
    return Prompt(name=name, system=system.strip(), user=user.strip(), output_schema=schema)


def extract_categories(prompt: Prompt) -> dict[str, str]:
    found = {m.group(1).upper(): m.group(2) for m in CATEGORY_LINE.finditer(prompt.text)}
    if not found:
        raise PromptError(
            f"classification prompt {prompt.name!r} defines no categories "
            "(expected lines like 'Category A: Natural landscapes')"
        )
    return found


def shown(text: str) -> str:
    """Text safe to print: control characters as escapes, bytes that are not UTF-8 as \\xNN."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def read_prompt_text(path: Path, max_bytes: int = MAX_PROMPT_BYTES) -> str:
    """A prompt file's text: a regular file, at most `max_bytes`, UTF-8, no control characters."""
    where = f"prompt file {shown(str(path))}"
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise PromptError(f"{where} is not a regular file")
            raw = fh.read(max_bytes + 1)  # never more than the limit, whatever fstat said
    except OSError as exc:
        raise PromptError(f"cannot read {where}: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise PromptError(
            f"{where} is {st.st_size / 1024:.0f} KiB, over the limit of {max_bytes / 1024:.0f} KiB "
            "(setting max_prompt_bytes)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(
            f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); is it a binary file?"
        ) from None
    bad = CONTROL.search(path.name) or CONTROL.search(text)
    if bad:
        line = "its name" if CONTROL.search(path.name) else f"line {text.count(chr(10), 0, bad.start()) + 1}"
        raise PromptError(
            f"{where} contains the control character U+{ord(bad.group()):04X} in {line}; "
            "only tab, newline and carriage return are allowed"
        )
    return text


def _read(path: Path, max_bytes: int = MAX_PROMPT_BYTES) -> Prompt:
    return parse_prompt(path.stem, read_prompt_text(path, max_bytes))


def list_prompt_files(prompt_dir: Path) -> list[Path]:
    if not prompt_dir.is_dir():
        raise PromptError(f"prompt directory not found: {prompt_dir}")
    return sorted(p for p in prompt_dir.iterdir() if p.suffix == ".txt")


def _primary_first(prompt: Prompt) -> tuple[bool, str]:
    return "." in prompt.name, prompt.name  # the unsuffixed file leads its variants


def load_prompt_set(prompt_dir: Path, classification: str = "default", max_bytes: int = MAX_PROMPT_BYTES) -> PromptSet:
    files = list_prompt_files(prompt_dir)
    cls_path = prompt_dir / f"classification_{classification}.txt"
    if not cls_path.is_file():
        names = [p.stem for p in files if p.stem.startswith("classification_")]
        raise PromptError(f"no classification prompt {cls_path.name}; available: {names}")
    cls_prompt = _read(cls_path, max_bytes)
    tables: dict[str, dict[str, list[Prompt]]] = {"scoring": {}, "summary": {}}
    defaults: dict[str, list[Prompt]] = {"scoring": [], "summary": []}
    for path in files:
        m = STAGE_FILE.match(path.name)
        if m is None:
            continue
        stage, _, category, _variant = m.groups()
        target = defaults[stage] if category is None else tables[stage].setdefault(category.upper(), [])
        target.append(_read(path, max_bytes))
    for table in (*tables.values(), defaults):
        for prompts in table.values():
            prompts.sort(key=_primary_first)
    for stage, prompts in defaults.items():
        if not prompts and not tables[stage]:  # per-category files alone are enough (Chromatic's folders)
            raise PromptError(f"no {stage} prompt in {prompt_dir}: add {stage}_default.txt or {stage}_category_X.txt")
    return PromptSet(
        classification=cls_prompt,
        categories=extract_categories(cls_prompt),
        scoring=tables["scoring"],
        summary=tables["summary"],
        scoring_default=defaults["scoring"],
        summary_default=defaults["summary"],
    )
