"""URL jobs: download each image into a private temp folder, with the same limits as chat images.

Files are named `00042_<basename>` (order kept, no collisions); a URL that cannot be fetched
(refused address, HTTP error, too large, too slow) becomes a `Failed` for the submitter, which
writes its error record under the URL itself. The returned map says which URL each file came from.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from app.decode import Failed
from config.serve import ServeSettings
from producers.serve.errors import ApiError
from producers.serve.images import check_address

TYPES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(index: int, url: str, content_type: str, extensions: Sequence[str]) -> str:
    base = SAFE.sub("_", unquote(Path(urlsplit(url).path).name))[:80] or "image"
    suffix = Path(base).suffix.lower()
    if suffix not in extensions:  # the scanner keeps only image extensions: take it from the content type
        base += TYPES.get(content_type.split(";")[0].strip().lower(), ".jpg")
    return f"{index:05d}_{base}"


def fetch(client: httpx.Client, url: str, serve: ServeSettings) -> tuple[bytes, str]:
    """The body and content type of one image URL, within the limits; raises ApiError with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "not an http(s) URL")
    check_address(parts.hostname, serve.allow_private_urls)
    deadline = time.monotonic() + serve.fetch_timeout_s
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise ApiError(400, f"HTTP {response.status_code}")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > serve.max_image_bytes:
                raise ApiError(413, f"over the limit of {serve.max_image_bytes} bytes")
            if time.monotonic() > deadline:
                raise ApiError(400, f"took longer than {serve.fetch_timeout_s:g} s")
            chunks.append(chunk)
        return b"".join(chunks), response.headers.get("content-type", "")


def download_all(
    job_id: str,
    urls: Sequence[str],
    serve: ServeSettings,
    extensions: Sequence[str],
    base_dir: Path | None,
    on_one: Callable[[], None],
    cancelled: Callable[[], bool],
    threads: int = 8,
) -> tuple[Path, list[Failed], dict[str, str]]:
    folder = Path(tempfile.mkdtemp(prefix=f"vlmq-{job_id}-", dir=base_dir))
    failures: list[Failed] = []
    names: dict[str, str] = {}

    def one(index: int, url: str, client: httpx.Client) -> None:
        if cancelled():
            return
        try:
            data, content_type = fetch(client, url, serve)
            name = file_name(index, url, content_type, extensions)
            (folder / name).write_bytes(data)
            names[name] = url
        except ApiError as exc:
            failures.append(Failed(url, f"download failed: {exc.message}"))
        except httpx.HTTPError as exc:
            failures.append(Failed(url, f"download failed: {type(exc).__name__}: {exc}"))
        finally:
            on_one()

    with httpx.Client(timeout=serve.fetch_timeout_s, follow_redirects=False) as client:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vlmq-fetch") as pool:
            list(pool.map(lambda pair: one(*pair, client), enumerate(urls)))
    unique = {f.name: f for f in failures}  # a URL listed twice is one record, counted once
    return folder, sorted(unique.values(), key=lambda f: f.name), names
