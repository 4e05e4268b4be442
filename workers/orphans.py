"""Find and stop vLLM engine processes whose worker died (SIGKILL, OOM killer) and left them behind.

vLLM runs its engine in child processes titled `VLLM::EngineCore`, `VLLM::Worker…`. When their
worker is killed outright they are reparented to init (PID 1) and may keep GPU memory. A starting
worker stops the engine processes whose parent is init: another deployment's engines (e.g. `vllm
serve`) still have their living parent and are never touched. Under a subreaper (a parent other
than init adopts orphans) they are not recognised; a process manager that stops the whole process
group (docker, systemd) does the same job there.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

TITLE_PREFIX = b"VLLM::"


def _parent_and_title(pid: int) -> tuple[int, bytes] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return ppid, cmdline


def orphaned_engines() -> list[int]:
    """PIDs of vLLM engine processes adopted by init (their own worker is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _parent_and_title(int(entry))
        if info and info[1].startswith(TITLE_PREFIX) and info[0] == 1:
            found.append(int(entry))
    return found


def stop_orphaned_engines() -> list[int]:
    """Stop what can be stopped; another user's process (PermissionError) is left alone."""
    stopped = []
    for pid in orphaned_engines():
        try:
            os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        except (ProcessLookupError, PermissionError):  # gone already, or not ours to stop
            pass
    return stopped
