"""Stream the files under one or more roots, in a stable order, without listing all at once."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SORT_LIMIT = 100_000  # a directory with more entries is streamed in directory order, unsorted


@dataclass(frozen=True)
class ScanEntry:
    path: Path
    name: str  # what the record calls it: relative to its root (prefixed when several roots)
    problem: str | None = None  # set when the file is refused without being opened


def _entries(directory: Path) -> Iterator[os.DirEntry]:
    with os.scandir(directory) as it:
        buffered = []
        for entry in it:
            buffered.append(entry)
            if len(buffered) > SORT_LIMIT:
                yield from buffered
                yield from it
                return
    yield from sorted(buffered, key=lambda e: e.name)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def scan(roots: Sequence[str | Path], recursive: bool, extensions: Sequence[str],
         follow_symlinks: bool = False, report_other_files: bool = True) -> Iterator[ScanEntry]:
    exts = {e.lower() for e in extensions}
    resolved = [Path(r).expanduser().resolve() for r in roots]
    prefix = len(resolved) > 1
    for root in resolved:
        if root.is_file():
            yield ScanEntry(root, root.name)
            continue
        if not root.is_dir():
            yield ScanEntry(root, str(root), f"not found or not a directory: {root}")
            continue
        stack, seen = [root], {root}
        while stack:
            directory = stack.pop()
            subdirs = []
            try:
                entries = _entries(directory)
                for entry in entries:
                    path = Path(entry.path)
                    rel = path.relative_to(root).as_posix()
                    name = f"{root.name}/{rel}" if prefix else rel
                    if entry.name.startswith("."):
                        continue  # hidden files and folders (.DS_Store, .git …)
                    is_link = entry.is_symlink()
                    if entry.is_dir(follow_symlinks=True):
                        if recursive and (not is_link or follow_symlinks) and path.resolve() not in seen:
                            seen.add(path.resolve())  # a followed link can loop back
                            subdirs.append(path)
                        continue
                    if not entry.is_file(follow_symlinks=True):
                        yield ScanEntry(path, name, "not a regular file (device, pipe, socket or broken link)")
                        continue
                    if path.suffix.lower() not in exts:
                        if report_other_files:
                            yield ScanEntry(path, name, f"not an image file type ({path.suffix or 'no extension'})")
                        continue
                    if is_link and not follow_symlinks and not _inside(path, root):
                        yield ScanEntry(path, name, "symlink to a file outside the submitted folder (refused)")
                        continue
                    yield ScanEntry(path, name)
            except OSError as exc:
                yield ScanEntry(directory, directory.relative_to(root).as_posix() or ".",
                                f"folder unreadable: {exc.strerror or exc}")
            stack.extend(reversed(subdirs))  # depth-first, in sorted order
