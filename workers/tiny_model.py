"""Build a tiny random-weight model into a folder, offline (see workers/tiny_models/).

python -m workers.tiny_model ./.models/tiny-smolvlm                  # SmolVLM architecture
python -m workers.tiny_model ./.models/tiny-paligemma --family paligemma
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workers.tiny_models import FAMILIES, build


def build_tiny_model(out_dir: str | Path, seed: int = 0, family: str = "idefics3") -> Path:
    """Write the model, tokenizer and processor into `out_dir`; return the folder."""
    return build(family, out_dir, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=".models/tiny-smolvlm")
    parser.add_argument("--family", choices=FAMILIES, default="idefics3", help="registry family (default idefics3)")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out_dir, family=args.family))


if __name__ == "__main__":
    main()
