"""The tiny model builders: each writes a model its own transformers classes load and run, offline."""

import json
import subprocess
import sys

import pytest

from workers.registry import resolve_spec
from workers.tiny_models import FAMILIES, build


@pytest.mark.parametrize("family", FAMILIES)
def test_each_tiny_model_is_found_as_its_family_and_generates_with_transformers(family, tmp_path):
    import jinja2
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build(family, tmp_path / family)
    assert resolve_spec(str(folder)).family == family
    assert sum(f.stat().st_size for f in folder.iterdir()) < 8 * 2**20
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    template = resolve_spec(str(folder)).chat_template or processor.chat_template
    prompt = jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    if "<image>" not in prompt:  # PaliGemma: the processor puts the image tokens in front
        prompt = "<image>" + prompt
    inputs = processor(text=prompt, images=Image.new("RGB", (80, 60), (120, 40, 200)), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_the_cli_builds_a_chosen_family_and_refuses_an_unknown_one(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "workers.tiny_model", str(tmp_path / "pg"), "--family", "paligemma"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "pg" / "config.json").read_text())["model_type"] == "paligemma"
    bad = subprocess.run(
        [sys.executable, "-m", "workers.tiny_model", str(tmp_path / "x"), "--family", "mllama"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and not (tmp_path / "x").exists()
