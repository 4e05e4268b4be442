"""Download untrusted http(s) URLs within a size and a time limit, or say plainly why not.

Only http and https are fetched; redirects are followed by hand, a few at most, and only to
http(s), so a server cannot send the fetcher to file://, ftp:// or gopher://. The time limit
covers the whole download (a server trickling one byte a second is cut off), not only each read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx

from config.errors import ImageError

SCHEMES = ("http", "https")
CHUNK = 64 * 1024


class FetchError(ImageError):
    """A download that failed; the message is the error record's reason."""


def is_url(text: str) -> bool:
    return urlsplit(text).scheme.lower() in SCHEMES and bool(urlsplit(text).netloc)


def has_scheme(text: str) -> bool:
    """Looks like `scheme://…` (so not a local path), whatever the scheme."""
    parts = urlsplit(text)
    return len(parts.scheme) > 1 and text[len(parts.scheme) :].startswith("://")


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError(f"refused: only http and https URLs are fetched, not {scheme or 'no scheme'}:// ({url[:200]})")


@contextlib.contextmanager
def open_url(url: str, timeout_s: float, max_redirects: int = 3) -> Iterator[httpx.Response]:
    """The streamed response of `url` after at most `max_redirects` http(s) redirects (FetchError else)."""
    check_scheme(url)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for _ in range(max_redirects + 1):
                with client.stream("GET", url, headers={"Accept": "*/*"}) as response:
                    if response.is_redirect:
                        target = urljoin(url, response.headers.get("location", ""))
                        if urlsplit(target).scheme.lower() not in SCHEMES:
                            raise FetchError(f"refused: redirect to a non-http(s) URL ({target[:200]})")
                        url = target
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"download failed: HTTP {response.status_code} {response.reason_phrase} ({url[:200]})"
                        )
                    yield response
                    return
            raise FetchError(f"refused: more than {max_redirects} redirects ({url[:200]})")
    except httpx.TimeoutException as exc:
        raise FetchError(f"download timed out after {timeout_s:g} s ({url[:200]})") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"download failed: {type(exc).__name__}: {exc} ({url[:200]})") from exc


def fetch(url: str, max_bytes: int, timeout_s: float, max_redirects: int = 3) -> bytes:
    """The body of `url`, refused past `max_bytes` (announced or actual) or `timeout_s` in all."""
    deadline = time.monotonic() + timeout_s
    limit_mib = f"{max_bytes / 2**20:.3g} MiB"
    with open_url(url, timeout_s, max_redirects) as response:
        announced = response.headers.get("content-length")
        if announced and announced.isdigit() and int(announced) > max_bytes:
            raise FetchError(
                f"download is {int(announced) / 2**20:.3g} MiB, over the limit of {limit_mib} ({url[:200]})"
            )
        body = bytearray()
        try:
            for chunk in response.iter_bytes(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"download grew past the limit of {limit_mib} ({url[:200]})")
                if time.monotonic() > deadline:
                    raise FetchError(f"download timed out after {timeout_s:g} s ({url[:200]})")
        except httpx.TimeoutException as exc:
            raise FetchError(f"download timed out after {timeout_s:g} s ({url[:200]})") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"download failed: {type(exc).__name__}: {exc} ({url[:200]})") from exc
    if not body:
        raise FetchError(f"download is empty (0 bytes) ({url[:200]})")
    return bytes(body)


class ResponseReader:
    """A response as a read()-able stream for tarfile's stream mode, with a stall/total time limit."""

    def __init__(self, response: httpx.Response, timeout_s: float) -> None:
        self._chunks = response.iter_raw(CHUNK)
        self._buffer = b""
        self._timeout_s = timeout_s

    def read(self, size: int = -1) -> bytes:
        try:
            while size < 0 or len(self._buffer) < size:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer += chunk
        except httpx.TimeoutException as exc:
            raise FetchError(f"shard download stalled for {self._timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"shard download failed: {type(exc).__name__}: {exc}") from exc
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
