"""Stream the files under one or more roots, in a stable order, without listing all at once.

Every entry the scan sees is accounted for: a file it will not prepare (hidden, not an image, a
symlink out of the root, a symlinked folder it does not follow) comes with the reason, and
becomes one error record. What the scan saw is only a hint: the file is opened later, relative
to `root`, without following symlinks (app.decode.open_under), so a swap in between is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.names import display_name

SORT_LIMIT = 100_000  # a directory with more entries is streamed in directory order, unsorted


@dataclass(frozen=True)
class ScanEntry:
    path: Path
    name: str  # what the record calls it: relative to its root (prefixed when several roots)
    problem: str | None = None  # set when the file is refused without being opened
    # Open `path` relative to this folder, refusing a symlink at every step; None: symlinks
    # may be followed (follow_symlinks), the file is still opened once and checked with fstat.
    root: Path | None = None


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


def scan(
    roots: Sequence[str | Path],
    recursive: bool,
    extensions: Sequence[str],
    follow_symlinks: bool = False,
    report_other_files: bool = True,
    report_hidden: bool = False,
) -> Iterator[ScanEntry]:
    exts = {e.lower() for e in extensions}
    resolved = [Path(r).expanduser().resolve() for r in roots]
    prefix = len(resolved) > 1
    for root in resolved:
        within = None if follow_symlinks else root
        if root.is_file():
            yield ScanEntry(root, display_name(root.name), root=None if follow_symlinks else root.parent)
            continue
        if not root.is_dir():
            yield ScanEntry(root, display_name(str(root)), f"not found or not a directory: {display_name(str(root))}")
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
                    name = display_name(f"{root.name}/{rel}" if prefix else rel)
                    is_link = entry.is_symlink()
                    if entry.name.startswith("."):  # hidden files and folders (.DS_Store, .git …)
                        if report_hidden:
                            kind = "folder (not scanned)" if entry.is_dir(follow_symlinks=False) else "file"
                            yield ScanEntry(path, name, f"skipped: hidden {kind}")
                        continue
                    if entry.is_dir(follow_symlinks=True):
                        if not recursive:
                            continue
                        if is_link and not follow_symlinks:
                            yield ScanEntry(path, name, "symlink to a folder: not followed (set follow_symlinks)")
                        elif path.resolve() in seen:  # a followed link can loop back
                            yield ScanEntry(path, name, "symlink to a folder already scanned: not scanned twice")
                        else:
                            seen.add(path.resolve())
                            subdirs.append(path)
                        continue
                    if not entry.is_file(follow_symlinks=True):
                        yield ScanEntry(path, name, "not a regular file (device, pipe, socket or broken link)")
                        continue
                    if path.suffix.lower() not in exts:
                        if report_other_files:
                            yield ScanEntry(path, name, f"not an image file type ({path.suffix or 'no extension'})")
                        continue
                    if is_link and not follow_symlinks:
                        if not _inside(path, root):
                            yield ScanEntry(path, name, "symlink to a file outside the submitted folder (refused)")
                            continue
                        path = path.resolve()  # a link inside the root: open its target, link-free
                    yield ScanEntry(path, name, root=within)
            except OSError as exc:
                yield ScanEntry(
                    directory,
                    display_name(directory.relative_to(root).as_posix() or "."),
                    f"folder unreadable: {exc.strerror or exc}",
                )
            stack.extend(reversed(subdirs))  # depth-first, in sorted order
