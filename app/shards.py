"""Webdataset shards: `.tar` files (local or by URL) streamed member by member, memory bounded.

tarfile's stream mode (`r|*`) reads forward only, one member at a time, so a shard of any size
costs one member's bytes; compressed shards (.tar.gz, .tgz) are read the same way. Each image
member becomes one entry named `<shard stem>/<member name>`; sidecar members (.json, .txt, .cls)
are skipped. A member over the size limit is one error; a shard that is truncated or corrupt
gives one error record under the shard's own name after the members read before the damage.
"""

from __future__ import annotations

import contextlib
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import BinaryIO

from app.decode import PrepareLimits
from app.entries import Entry
from app.fetch import FetchError, ResponseReader, is_url, open_url
from app.names import display_name

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_shard(location: str) -> bool:
    path = location.split("?", 1)[0].lower()
    return path.endswith(SHARD_SUFFIXES)


def shard_label(location: str) -> str:
    """The shard's stem (`shards/000123.tar` → `000123`), the prefix of its members' names."""
    name = PurePosixPath(location.split("?", 1)[0]).name
    for suffix in SHARD_SUFFIXES:
        if name.lower().endswith(suffix):
            return display_name(name[: -len(suffix)])
    return display_name(name)


@contextlib.contextmanager
def open_shard(location: str, limits: PrepareLimits) -> Iterator[BinaryIO]:
    if is_url(location):
        with open_url(location, limits.fetch_timeout_s, limits.max_redirects) as response:
            yield ResponseReader(response, limits.fetch_timeout_s)  # type: ignore[misc]
    else:
        with open(location, "rb") as fh:
            yield fh


def shard_entries(
    location: str,
    label: str,
    extensions: Sequence[str],
    limits: PrepareLimits,
    source: str | None = None,
    open_as: str | None = None,
) -> Iterator[Entry]:
    """The shard's image members as entries with their bytes; damage ends the shard with one error.

    `open_as`: the path actually opened (a descriptor already opened safely, /proc/self/fd/N)."""
    exts = {e.lower() for e in extensions}
    source = source or display_name(location)
    whole = 0  # image members read whole
    try:
        with open_shard(open_as or location, limits) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or PurePosixPath(member.name).suffix.lower() not in exts:
                    continue
                name = f"{label}/{display_name(member.name)}"
                if member.size > limits.max_file_bytes:
                    whole += 1
                    yield Entry(
                        name,
                        source,
                        "data",
                        problem=f"shard member is {member.size / 2**20:.1f} MiB, "
                        f"over the limit of {limits.max_file_bytes / 2**20:.0f} MiB",
                    )
                    continue
                fh = tar.extractfile(member)
                data = fh.read() if fh else b""
                whole += 1
                yield Entry(name, source, "data", data=data)
    except (tarfile.TarError, EOFError, OSError, FetchError, zlib.error) as exc:
        yield Entry(
            shard_error_name(location),
            source,
            "data",
            problem=f"shard truncated or corrupt after {whole} image members: {type(exc).__name__}: {exc}",
        )


def shard_error_name(location: str) -> str:
    """The record name of a damaged shard itself: its file name, never one of its members' names."""
    return display_name(PurePosixPath(location.split("?", 1)[0]).name)
