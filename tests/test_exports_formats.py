"""The captioning exports (txt, a Hugging Face `datasets` folder) and the output folder's per-stage lists,
read back from a real job: real Redis, a real worker, the deterministic test engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pyarrow as pa

from app.schemas import ImageRecord, Summary
from producers.api import submit
from producers.export import export, flat_row, flat_schema
from producers.export_hf import write_datasets, write_txt
from tests.images import make_bad_files, make_good_images


def finished_job(settings, start_worker, image_dir) -> list[ImageRecord]:
    """12 good images and the hostile files; a threshold so that some images are scored but not summarized."""
    make_good_images(image_dir, 12)
    make_bad_files(image_dir / "bad")
    start_worker()
    job = submit(image_dir, settings.with_overrides(conditions={"score_threshold": 5}))
    job.wait(timeout=60)
    return list(job.records())


def test_a_txt_export_from_the_cli_has_one_caption_line_per_summarized_image(
    settings, start_worker, image_dir, tmp_path
):
    records = finished_job(settings, start_worker, image_dir)
    summarized = {r.image: r.summary.summary for r in records if r.summary}
    assert summarized and len(summarized) < len(records)  # the export has something to leave out
    env = {**os.environ, "VLMQ_ENGINE__BACKEND": "test", "VLMQ_QUEUES": json.dumps(settings.queues)}
    job_id = records[0].job_id
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--broker-url", settings.redis.url, "export", job_id]
        + ["--format", "txt", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = (out / "captions.txt").read_text(encoding="utf-8").splitlines()
    captions = dict(line.split("\t", 1) for line in lines)
    assert len(lines) == len(captions) == len(summarized)
    assert captions == {name: " ".join(text.splitlines()) for name, text in summarized.items()}
    assert sorted(p.name for p in out.iterdir()) == ["captions.txt"]  # only the format asked for


def test_a_line_break_in_a_summary_or_a_tab_in_a_name_stays_on_one_caption_line(tmp_path):
    records = [
        ImageRecord(image="a\tb.jpg", job_id="j", summary=Summary(summary="first\nsecond\r\nthird", prompt="p")),
        ImageRecord(image="no summary.jpg", job_id="j"),
    ]
    text = write_txt(records, tmp_path / "captions.txt").read_text(encoding="utf-8")
    assert text == "a b.jpg\tfirst second third\n"


def test_a_datasets_export_loads_back_with_one_row_per_record(settings, start_worker, image_dir, tmp_path):
    records = finished_job(settings, start_worker, image_dir)
    out = tmp_path / "export"
    export(records, out, ["datasets"])
    loaded = datasets.load_from_disk(str(out / "results_dataset"))
    assert loaded.num_rows == len(records)
    assert loaded.column_names == list(flat_schema().names)  # the parquet export's columns
    assert sorted(loaded["image"]) == sorted(r.image for r in records)
    by_image = {row["image"]: row for row in loaded}
    assert by_image == {r.image: flat_row(r) for r in records}  # every value, typed as in parquet
    assert any(row["error"] for row in loaded) and any(row["summary"] for row in loaded)


def test_a_datasets_folder_is_written_a_record_batch_at_a_time_and_still_loads_whole(tmp_path):
    rows = [flat_row(ImageRecord(image=f"img_{i:02d}.jpg", job_id="j", width=i)) for i in range(12)]
    folder = write_datasets(iter(rows), flat_schema(), tmp_path / "ds", rows_per_batch=5)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow")) as fh:
        batches = list(pa.ipc.open_stream(fh))
    assert [b.num_rows for b in batches] == [5, 5, 2]
    loaded = datasets.load_from_disk(str(folder))
    assert loaded["image"] == [r["image"] for r in rows] and loaded["width"] == list(range(12))


def test_an_empty_job_still_gives_a_datasets_folder_that_loads(tmp_path):
    export([], tmp_path, ["datasets"])
    assert datasets.load_from_disk(str(tmp_path / "results_dataset")).num_rows == 0


def test_the_output_folder_has_each_stage_s_aggregate_list_holding_exactly_that_stage_s_images(
    settings, start_worker, image_dir, tmp_path
):
    records = finished_job(settings, start_worker, image_dir)
    out = tmp_path / "export"
    export(records, out, ["folder"])
    stages = {
        "classification/classification_results.json": [r.image for r in records if r.classification],
        "scoring/scoring_results.json": [r.image for r in records if r.scoring],
        "summaries/summary_results.json": [r.image for r in records if r.summaries],
    }
    assert all(stages.values()) and len(stages["summaries/summary_results.json"]) < len(records)
    for path, images in stages.items():
        listed = json.loads((out / path).read_text(encoding="utf-8"))
        assert sorted(item["image"] for item in listed) == sorted(images), path
        folder = path.split("/")[0]
        # the same objects as the per-image files beside it
        assert listed == [json.loads((out / folder / f"{item['image']}.json").read_text()) for item in listed]
