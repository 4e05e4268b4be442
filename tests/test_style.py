"""The codebase's own rules: ruff clean and formatted, imports flowing config → workers → app → producers,
no source module over 250 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["config", "workers", "app", "producers"]  # a layer imports only from those before it


def test_ruff_finds_nothing_to_fix_and_nothing_to_reformat():
    for args in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n.split(".")[0] for n in names} & set(LAYERS)
    return found


def test_no_module_imports_from_a_later_layer():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        later = set(LAYERS[rank + 1 :])
        for path in sorted((ROOT / layer).rglob("*.py")):
            if bad := imported_layers(path) & later:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert wrong == []


def test_no_source_module_is_longer_than_250_lines():
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 250
    ]
    assert long == []
