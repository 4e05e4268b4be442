"""Screenshot of Flower's workers page with two live workers and a job, in headless Chromium.

    python scripts/flower_screenshot.py [OUT.png]     (needs Debian's chromium: apt-get install chromium)

Starts its own redis-server, two workers (test engine, queues gpu0 and gpu1), Flower on loopback,
submits a job, captures the page while the workers are busy, and stops everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import image_folder, redis_server, workers  # noqa: E402
from config.settings import Settings  # noqa: E402
from producers.api import submit  # noqa: E402
from producers.local import free_port  # noqa: E402


def screenshot(url: str, out: Path, profile: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1500,700",
            "--virtual-time-budget=4000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "flower-workers.png").resolve()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        settings = Settings(queues=["gpu0", "gpu1"], batch_size=8, redis={"url": url}, engine={"backend": "test"})
        port = free_port()
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "app", "flower", f"--port={port}"],
            env={**os.environ, "VLMQ_REDIS__URL": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with workers(settings, 2, VLMQ_ENGINE__TEST_DELAY_S="0.4"):
                folder = image_folder(Path(tmp), 400)
                job = threading.Thread(target=lambda: submit(folder, settings).wait(timeout=300))
                job.start()
                time.sleep(11)  # Flower turns task events on within 5 s; then let it see tasks come and go
                screenshot(f"http://127.0.0.1:{port}/workers", out, Path(tmp) / "chromium")
                job.join()
        finally:
            flower.terminate()
            flower.wait(10)
    print(out)


if __name__ == "__main__":
    main()
