"""What the user points at, turned into images: folders, list files, URLs, shards, Parquet/Arrow tables.

    ./photos                 a folder, scanned as always (producers.scan)
    list.txt, urls.lst       one local path or http(s) URL per line; '#' starts a comment
    https://host/a.jpg       one image, downloaded where it is prepared
    shards/*.tar, https://host/shard-000.tar   webdataset shards (app.shards)
    data.parquet, x.arrow, a `datasets` save_to_disk folder   an image column (app.tables)

`entries()` gives every image as an Entry (for the producer's own pool: shard members and table
cells come with their bytes). `units()` gives references for prepare tasks on a CPU queue: files
and URLs one by one, a shard whole (its task counts its members), a table as row ranges.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from app.decode import PrepareLimits
from app.entries import Entry
from app.fetch import has_scheme, is_url
from app.names import display_name
from app.shards import is_shard, shard_entries, shard_label
from app.tables import TableFile, dataset_files, is_dataset_folder, is_table_file, table_entries
from config.errors import ConfigError
from producers.scan import scan

LIST_SUFFIXES = (".txt", ".lst")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Source:
    kind: str  # folder | list | url | shard | table
    location: str  # a local path (absolute) or a URL
    label: str = ""  # the prefix of its images' names (shards, lists, tables)


@dataclass(frozen=True)
class ShardUnit:
    location: str
    label: str
    source: str


@dataclass(frozen=True)
class TableUnit:
    table: TableFile
    start: int
    stop: int


class Labels:
    """Name prefixes unique within a job: a second `000.tar` (another folder) becomes `000~2`."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, label: str) -> str:
        candidate, n = label, 1
        while candidate in self.used:
            n += 1
            candidate = f"{label}~{n}"
        self.used.add(candidate)
        return candidate


def _url_label(url: str) -> str:
    parts = urlsplit(url)
    return display_name(f"{parts.netloc}{parts.path}".rstrip("/") or parts.netloc)


def classify(roots: Sequence[str | Path]) -> list[Source]:
    """Each root by what it is; a missing path, an empty glob or a refused scheme is a ConfigError."""
    out: list[Source] = []
    for root in map(str, roots):
        if has_scheme(root):
            if not is_url(root):
                raise ConfigError(f"refused: only http and https URLs are fetched ({root[:200]})")
            out.append(Source("shard" if is_shard(root) else "url", root))
            continue
        matches = sorted(glob.glob(str(Path(root).expanduser()))) if any(c in root for c in GLOB_CHARS) else []
        if any(c in root for c in GLOB_CHARS) and not Path(root).exists():
            if not matches:
                raise ConfigError(f"no file matches {root}")
            out += [_local(m) for m in matches]
            continue
        out.append(_local(root))
    return out


def _local(root: str) -> Source:
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(f"no such file or folder: {root}")
    resolved = str(path.resolve())
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return Source("list", resolved)
    if path.is_file() and is_shard(path.name):
        return Source("shard", resolved)
    if is_table_file(path) or is_dataset_folder(path):
        return Source("table", resolved)
    return Source("folder", root)


def list_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a list file's entries: blank lines and `#` comments skipped."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text


def _list_item(label: str, number: int, text: str, base: Path, extensions: Sequence[str]) -> Entry | Source:
    """One line: an image URL or file (an Entry), or a shard (a Source to expand)."""
    shown = display_name(text)
    name = f"{label}/{number:06d}-{display_name(PurePosixPath(urlsplit(text).path if has_scheme(text) else text).name)}"
    if has_scheme(text):
        if not is_url(text):
            return Entry(name, shown, "url", problem=f"refused: only http and https URLs are fetched ({shown[:200]})")
        return Source("shard", text) if is_shard(text) else Entry(name, shown, "url", url=text)
    path = Path(os.path.abspath((base / text).expanduser()))  # not resolved: a CPU worker refuses symlinks
    if is_shard(path.name) and path.is_file():
        return Source("shard", str(path))
    if not path.is_file():
        return Entry(name, shown, problem=f"not found or not a file: {shown[:200]}")
    if path.suffix.lower() not in extensions:
        return Entry(name, shown, problem=f"not an image file type ({path.suffix or 'no extension'})")
    # The user named this file: the producer's pool follows symlinks in its path (opened once, fstat-checked);
    # a CPU worker opens it below its prepare root without following any.
    return Entry(name, shown, "file", path=str(path))


def _expand(sources: Sequence[Source], labels: Labels, extensions: Sequence[str]) -> Iterator[Entry | Source]:
    """Lists opened into entries and shard sources; shards and tables get their unique labels."""
    for src in sources:
        if src.kind == "list":
            label = labels.take(display_name(Path(src.location).stem))
            base = Path(src.location).parent
            for number, text in list_lines(src.location):
                item = _list_item(label, number, text, base, extensions)
                yield (
                    Source("shard", item.location, labels.take(shard_label(item.location)))
                    if isinstance(item, Source)
                    else item
                )
        elif src.kind == "url":
            label = labels.take(_url_label(src.location))
            yield Entry(label, src.location, "url", url=src.location)
        elif src.kind == "shard":
            yield Source("shard", src.location, labels.take(shard_label(src.location)))
        else:
            yield src


def entries(
    roots: Sequence[str | Path], recursive: bool, settings, limits: PrepareLimits, image_column: str = "image"
) -> Iterator[Entry]:
    """Every image of every root, for the producer's own pool (bytes of shards and tables included)."""
    for item in _plan(roots, recursive, settings, image_column):
        if isinstance(item, Entry):
            yield item
        elif isinstance(item, ShardUnit):
            yield from shard_entries(item.location, item.label, settings.images.extensions, limits, item.source)
        else:
            yield from table_entries(item.table, image_column, item.start, item.stop)


def units(
    roots: Sequence[str | Path], recursive: bool, settings, image_column: str = "image", rows_per_unit: int = 256
) -> Iterator[Entry | ShardUnit | TableUnit]:
    """References for prepare tasks: entries (file, URL, refused), whole shards, table row ranges."""
    yield from _plan(roots, recursive, settings, image_column, rows_per_unit)


def _plan(roots, recursive, settings, image_column: str = "image", rows_per_unit: int | None = None):
    sources = classify(roots)
    folders = [s.location for s in sources if s.kind == "folder"]
    labels = Labels()
    if len(folders) > 1:
        for f in folders:
            labels.take(display_name(Path(f).expanduser().resolve().name))
    if folders:  # together, so names get the root prefix exactly when there are several (as before)
        for e in scan(
            folders,
            recursive,
            settings.images.extensions,
            settings.images.follow_symlinks,
            settings.images.report_other_files,
            settings.images.report_hidden_files,
        ):
            yield Entry(
                e.name, None, "file", path=str(e.path), root=None if e.root is None else str(e.root), problem=e.problem
            )
    for item in _expand([s for s in sources if s.kind != "folder"], labels, settings.images.extensions):
        if isinstance(item, Entry):
            yield item
        elif item.kind == "shard":
            yield ShardUnit(item.location, item.label, display_name(item.location))
        else:
            renamed: dict[str, str] = {}  # the files of one dataset (split) share its label
            for table in dataset_files(Path(item.location), image_column):
                label = renamed.setdefault(table.label, labels.take(table.label))
                table = TableFile(table.path, table.format, label, table.rows, table.first_row)
                step = rows_per_unit or max(1, table.rows)
                for start in range(0, table.rows, step):
                    yield TableUnit(table, start, min(table.rows, start + step))


def check_sources(roots: Sequence[str | Path], settings) -> None:
    """Raise ConfigError for a root that cannot be used (before a job is created)."""
    for src in classify(roots):
        if src.kind == "table":
            dataset_files(Path(src.location), settings.images.image_column)


def first_entry(roots: Sequence[str | Path], recursive: bool, settings) -> bool:
    """Whether the roots hold anything at all (a list with lines, a table with rows, a folder with files)."""
    for src in classify(roots):
        if src.kind in ("url", "shard"):
            return True
        if src.kind == "list" and next(list_lines(src.location), None) is not None:
            return True
        if src.kind == "table" and any(t.rows for t in dataset_files(Path(src.location), settings.images.image_column)):
            return True
        if (
            src.kind == "folder"
            and next(
                scan(
                    [src.location],
                    recursive,
                    settings.images.extensions,
                    settings.images.follow_symlinks,
                    report_other_files=True,
                ),
                None,
            )
            is not None
        ):
            return True
    return False
