"""The README's walkthroughs typed into real terminals (tmux), checked for the lines a user reads.

The commands are read from README.md itself, so the README cannot drift from what works.
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.images import make_good_images

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def readme_block(after: str) -> list[str]:
    """The command lines of the first ```bash block after the heading or text `after`."""
    block = README.split(after, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class Terminal:
    """One tmux session: type lines, read the screen (scrollback included)."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        exports = [f"-e{k}={v}" for k, v in env.items()]
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "200",
                "-y",
                "50",
                "-c",
                str(cwd),
                *exports,
                "bash --norc --noprofile",
            ],
            check=True,
        )

    def type(self, line: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, line, "Enter"], check=True)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-2000", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.screen())
            if found:
                return found
            time.sleep(0.3)
        raise AssertionError(f"{pattern!r} not on {self.name}'s screen after {timeout:g} s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "C-c", ""], check=False)
        time.sleep(1)
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


@pytest.fixture
def terminals(tmp_path, settings):
    """A folder like a user's checkout (.venv beside the images) and a way to open terminals there."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    opened: list[Terminal] = []
    env = {"VLMQ_REDIS__URL": settings.redis.url, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}

    def open_terminal() -> Terminal:
        term = Terminal(f"vlmq-{tmp_path.name[-12:]}-{len(opened)}", tmp_path, env)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def test_the_fleet_walkthrough_typed_in_two_terminals_shows_the_job_id_progress_and_records(tmp_path, terminals):
    worker_line, submit_line, results_line = readme_block("First, the fleet commands on one machine")
    folder = submit_line.split("submit ", 1)[1].split()[0]
    make_good_images(tmp_path / folder, 12)
    worker, producer = terminals(), terminals()
    worker.type(worker_line)
    worker.wait_for(r"celery@\S+ ready\.|\bready\.", 60)
    producer.type(submit_line)
    job_id = producer.wait_for(r"(?m)^([0-9a-f]{32})\s*$", 30).group(1)
    producer.wait_for(rf"job {job_id} done: 12/12 \(done 12\)", 60)
    producer.type(results_line.replace("JOB_ID", job_id[:8]))  # a prefix, as a user would type
    screen = producer.wait_for(r"img_00011\.jpg", 30).string
    assert screen.count("img_000") >= 12
    assert "Traceback" not in screen and "Traceback" not in worker.screen()


@pytest.mark.engine
def test_the_quickstart_typed_in_a_terminal_builds_the_tiny_model_and_runs_the_whole_job(tmp_path, terminals):
    build, run = readme_block("To try everything offline")
    make_good_images(tmp_path / "images", 8)
    term = terminals()
    term.type(". .venv/bin/activate")
    term.type(build)
    term.wait_for(r"tiny-smolvlm\s*$", 120)
    term.type(run)
    term.wait_for(r"job [0-9a-f]{32} done: 8/8", 300)
    screen = term.screen()
    assert "worker local-" in screen and "ready" in screen
    assert re.search(r"wrote .*results\.jsonl", screen)
    assert "Traceback" not in screen
    assert (tmp_path / "run" / "pipeline_results.json").is_file()
