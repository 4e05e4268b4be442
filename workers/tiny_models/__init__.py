"""Tiny random-weight models, one module per registry family that the CPU engine runs here.

The README's Models table says which families have one, and why the others cannot run here.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from config.errors import ConfigError
from workers.tiny_models.base import is_built, mark_tiny

FAMILIES = ("idefics3", "paligemma")  # registry family → module workers.tiny_models.<family>


def build(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build (or reuse) the tiny model of `family` in `out_dir`; return the folder."""
    if family not in FAMILIES:
        raise ConfigError(f"no tiny model for family {family!r}; families with one: {list(FAMILIES)}")
    out = Path(out_dir)
    if is_built(out):
        return out
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    import_module(f"workers.tiny_models.{family}").write(out)
    return mark_tiny(out, family)
