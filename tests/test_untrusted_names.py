"""Untrusted names and prompt files: odd file names each get one record and export; bad prompts are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.prompts import load_prompt_set
from producers.api import submit
from tests.images import jpeg_bytes

ODD_NAMES = [
    b"caf\xe9.jpg",
    b"\xff" * 251 + b".jpg",
    b"a" * 251 + b".jpg",
    b"new\nline.jpg",
    b"=1+2.jpg",
    b"+SUM(A1).jpg",
    b"-2+3.jpg",
    b"@SUM(A1).jpg",
    b"\tTAB.jpg",
    b"plain.jpg",
]


def test_odd_file_names_each_get_one_record_and_every_export_writes_them(settings, start_worker, tmp_path):
    import csv

    import pyarrow.parquet as pq

    from producers.export import export

    images = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"imag\xe9s")))  # the folder's name too
    images.mkdir()
    for i, raw in enumerate(ODD_NAMES):
        with open(os.path.join(os.fsencode(images), raw), "wb") as fh:
            fh.write(jpeg_bytes(40, 30, (i * 20, 7, 9), seed=i))
    (images / ".hidden.jpg").write_bytes(jpeg_bytes(40, 30, (1, 1, 250)))
    (images / ".cache").mkdir()
    (images / ".cache" / "x.jpg").write_bytes(jpeg_bytes(40, 30, (1, 250, 1)))
    start_worker()
    job = submit(images, settings)
    assert job.wait(timeout=60).outcomes == {"done": len(ODD_NAMES), "failed": 2}
    records = list(job.records())
    names = sorted(r.image for r in records)
    expected = sorted(
        [os.fsdecode(n).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for n in ODD_NAMES]
        + [".hidden.jpg", ".cache"]
    )
    assert names == expected and "caf\\xe9.jpg" in names
    errors = {r.image: r.error for r in records if r.error}
    assert errors == {".hidden.jpg": "skipped: hidden file", ".cache": "skipped: hidden folder (not scanned)"}

    out = tmp_path / "export"
    export(records, out, ["all"])
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)  # a newline in a name is escaped
    assert pq.read_table(out / "results.parquet").num_rows == len(records)
    captions = (out / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert len(captions) == len([r for r in records if r.summary])  # a newline or tab in a name becomes a space
    assert sorted(r["image"] for r in json.loads((out / "pipeline_results.json").read_text())) == names
    per_image = [p for p in (out / "classification").rglob("*.json") if p.name != "classification_results.json"]
    written = [json.loads(p.read_text())["image"] for p in per_image]
    assert sorted(written) == sorted(n for n in names if n not in errors)
    assert sorted(json.loads(p.read_text())["image"] for p in (out / "errors").rglob("*.json")) == sorted(errors)
    assert all(len(os.fsencode(p.name)) <= 255 for p in out.rglob("*"))
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cells = sorted(row["image"] for row in rows)
    assert len(rows) == len(records)
    assert not [c for c in cells if c[0] in "=+-@\t\r"]
    assert sorted(c[1:] if c.startswith("'") else c for c in cells) == names
    print("csv image cells:", [c for c in cells if c.startswith("'")])


def copy_prompts(folder: Path) -> Path:
    from config.settings import PACKAGE_PROMPT_DIR

    folder.mkdir()
    for f in PACKAGE_PROMPT_DIR.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


@pytest.mark.parametrize(
    "case, content, message",
    [
        ("binary", bytes(range(256)) * 4, "is not UTF-8 text (byte 0x80 at offset 128)"),
        ("huge", b"Describe the image. " * 20_000, "KiB, over the limit of 256 KiB (setting max_prompt_bytes)"),
        ("ansi", b"Describe the image.\n\x1b[2J\x1b]0;pwned\x07 in detail.", "control character U+001B in line 2"),
        ("bidi", "Describe \u202eegami eht.".encode(), "control character U+202E in line 1"),
    ],
)
def test_a_bad_prompt_file_is_refused_with_one_clear_line(tmp_path, case, content, message):
    import subprocess
    import sys

    prompts = copy_prompts(tmp_path / "prompts")
    (prompts / "summary_category_a.txt").write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "producers.cli", "prompts", "--prompt-dir", str(prompts)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    print(f"{case}: exit {proc.returncode}: {output.strip()}")
    assert proc.returncode == 2 and message in output and "summary_category_a.txt" in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output and "\x1b" not in output


def test_the_prompt_size_limit_is_a_setting(tmp_path):
    from config.errors import PromptError

    prompts = copy_prompts(tmp_path / "prompts")
    (prompts / "scoring_default.txt").write_text("Score it. " * 500)  # 5 KB
    assert load_prompt_set(prompts, max_bytes=8 * 1024).scoring_default
    with pytest.raises(PromptError, match="over the limit of 4 KiB"):
        load_prompt_set(prompts, max_bytes=4 * 1024)
