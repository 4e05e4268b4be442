"""Prompt files: SYSTEM/USER sections, categories read from the classification prompt.

Layout of a prompt directory (a user adds a category by editing files only):

    classification_default.txt      lines like "Category A: Natural landscapes" define categories
    scoring_default.txt             used for any category without its own scoring prompt
    scoring_category_a.txt          scoring prompt for category A
    summary_default.txt / summary_category_a.txt
    summary_category_a.short.txt    a variant: every variant of a stage gives one more output
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel

from config.errors import PromptError

SYSTEM_MARK = re.compile(r"^=+\s*SYSTEM PROMPT\s*=+\s*$", re.M)
USER_MARK = re.compile(r"^=+\s*USER PROMPT\s*=+\s*$", re.M)
CATEGORY_LINE = re.compile(r"^\s*[-*]?\s*Category\s+([A-Za-z0-9]+)\s*[:\-]\s*(.+?)\s*$", re.M)
STAGE_FILE = re.compile(r"^(scoring|summary)_(default|category_([A-Za-z0-9]+))(?:\.([\w-]+))?\.txt$")


class Prompt(BaseModel, frozen=True):
    name: str
    system: str
    user: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()[:12]

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
            "summary": (self.summary, self.summary_default),
        }[stage]
        return table.get(category.upper()) or default

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def parse_prompt(name: str, text: str) -> Prompt:
    sys_m, user_m = SYSTEM_MARK.search(text), USER_MARK.search(text)
    if user_m is None:
        if sys_m is not None:
            raise PromptError(f"prompt {name!r} has a SYSTEM section but no USER section")
        return Prompt(name=name, system="", user=text.strip())
    if sys_m is not None and sys_m.start() < user_m.start():
        system = text[sys_m.end() : user_m.start()]
    else:
        system = ""
    user = text[user_m.end() :]
    if not user.strip():
        raise PromptError(f"prompt {name!r} has an empty USER section")
    return Prompt(name=name, system=system.strip(), user=user.strip())


def extract_categories(prompt: Prompt) -> dict[str, str]:
    found = {m.group(1).upper(): m.group(2) for m in CATEGORY_LINE.finditer(prompt.text)}
    if not found:
        raise PromptError(
            f"classification prompt {prompt.name!r} defines no categories "
            "(expected lines like 'Category A: Natural landscapes')"
        )
    return found


def _read(path: Path) -> Prompt:
    try:
        return parse_prompt(path.stem, path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {path}: {exc}") from exc


def list_prompt_files(prompt_dir: Path) -> list[Path]:
    if not prompt_dir.is_dir():
        raise PromptError(f"prompt directory not found: {prompt_dir}")
    return sorted(p for p in prompt_dir.iterdir() if p.suffix == ".txt")


def load_prompt_set(prompt_dir: Path, classification: str = "default") -> PromptSet:
    files = list_prompt_files(prompt_dir)
    cls_path = prompt_dir / f"classification_{classification}.txt"
    if not cls_path.is_file():
        names = [p.stem for p in files if p.stem.startswith("classification_")]
        raise PromptError(f"no classification prompt {cls_path.name}; available: {names}")
    cls_prompt = _read(cls_path)
    tables: dict[str, dict[str, list[Prompt]]] = {"scoring": {}, "summary": {}}
    defaults: dict[str, list[Prompt]] = {"scoring": [], "summary": []}
    for path in files:
        m = STAGE_FILE.match(path.name)
        if m is None:
            continue
        stage, _, category, _variant = m.groups()
        target = defaults[stage] if category is None else tables[stage].setdefault(category.upper(), [])
        target.append(_read(path))
    primary_first = lambda p: ("." in p.name, p.name)  # noqa: E731 - the unsuffixed file leads
    for table in (*tables.values(), defaults):
        for prompts in table.values():
            prompts.sort(key=primary_first)
    for stage, prompts in defaults.items():
        if not prompts:
            raise PromptError(f"no {stage}_default.txt in {prompt_dir}: it is the fallback prompt")
    return PromptSet(
        classification=cls_prompt,
        categories=extract_categories(cls_prompt),
        scoring=tables["scoring"],
        summary=tables["summary"],
        scoring_default=defaults["scoring"],
        summary_default=defaults["summary"],
    )
