"""Programs end promptly: no stall and no traceback after their last line of output."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_timed(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> tuple[int, str, float]:
    """Run a program; return its exit code, its output and the seconds from its last output to its exit."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    lines, last = [], time.monotonic()
    for raw in proc.stdout:
        lines.append(raw.decode(errors="replace"))
        last = time.monotonic()
    code = proc.wait(timeout)
    return code, "".join(lines), time.monotonic() - last


def test_pytest_ends_within_five_seconds_of_its_summary_line_without_a_traceback():
    # A test session that polls AsyncResults, then stops its own redis-server: the case that used to
    # stall ~45 s at exit while Celery retried unsubscribing from a Redis that was gone.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code, out, tail = run_timed(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_pipeline.py",
            "-k",
            "polled or duplicate",
        ],
        env,
        ROOT,
    )
    assert code == 0, out
    assert "2 passed" in out
    assert "Traceback" not in out and "Retry limit exceeded" not in out, out
    assert tail < 5, f"exited {tail:.1f} s after its last output"


def readme_python_example() -> str:
    """The README's "Polling from Python" block, as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("### Polling from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "submit(" in block and "job.records()" in block
    return block


def test_the_readme_python_example_ends_within_five_seconds_of_its_last_output_without_a_traceback(
    settings, start_worker, image_dir, tmp_path
):
    from tests.images import make_good_images

    make_good_images(image_dir, 16)
    start_worker()
    script = tmp_path / "example.py"
    code = readme_python_example().replace('"./images"', repr(str(image_dir)))
    script.write_text(code + 'print("JOB", job.id, sum(map(len, records)))\n', encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VLMQ_REDIS__URL": settings.redis.url,
        "VLMQ_ENGINE__BACKEND": "test",
        "VLMQ_QUEUES": f'["{settings.queues[0]}"]',
        "VLMQ_RESULTS_DIR": settings.results_dir,
    }
    code, out, tail = run_timed([sys.executable, str(script)], env, tmp_path)
    assert code == 0, out
    assert "JOB " in out and out.strip().endswith(" 16"), out
    assert "Traceback" not in out, out
    assert tail < 5, f"exited {tail:.1f} s after its last output"
