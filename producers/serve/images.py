"""The one image of a chat request: a `data:` URL or an http(s) URL, fetched with size and time limits.

Fetching is the service's job (workers need no network access); the bytes are then validated,
decoded and downscaled like a job's files (app.decode), so a worker receives only a
compact JPEG. URLs on loopback or private addresses are refused unless `allow_private_urls`:
the service must not become a way into the network it runs in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx
from anyio import to_thread

from app.decode import Failed, Prepared, PrepareLimits, prepare_bytes
from config.errors import ConfigError
from config.serve import ServeSettings
from config.settings import Settings
from producers.serve.errors import ApiError
from workers.registry import resolve_spec

PARAM = "messages.content.image_url"


def decode_data_url(url: str, limit: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise ApiError(400, "a data: image URL must be base64 (data:image/png;base64,…)", PARAM, "invalid_image_url")
    if len(payload) * 3 // 4 > limit + 3:
        raise ApiError(413, f"image is over the limit of {limit} bytes", PARAM, "image_too_large")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"the data: URL is not valid base64: {exc}", PARAM, "invalid_image_url") from exc
    if len(raw) > limit:
        raise ApiError(413, f"image is {len(raw)} bytes, over the limit of {limit}", PARAM, "image_too_large")
    return raw


def check_address(host: str, allow_private: bool) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or reserved addresses."""
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ApiError(400, f"image URL host {host!r} does not resolve", PARAM, "image_fetch_failed") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ApiError(
                400, f"image URL host {host!r} is a non-public address ({address}); refused", PARAM, "image_url_refused"
            )


async def fetch_url(url: str, serve: ServeSettings, client: httpx.AsyncClient) -> bytes:
    host = urlsplit(url).hostname
    if not host:
        raise ApiError(400, "image URL has no host", PARAM, "invalid_image_url")
    await to_thread.run_sync(check_address, host, serve.allow_private_urls)
    limit = serve.max_image_bytes

    async def download() -> bytes:
        async with client.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                raise ApiError(400, f"image URL answered HTTP {response.status_code}", PARAM, "image_fetch_failed")
            declared = int(response.headers.get("content-length") or 0)
            if declared > limit:
                raise ApiError(413, f"image is {declared} bytes, over the limit of {limit}", PARAM, "image_too_large")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"image is over the limit of {limit} bytes", PARAM, "image_too_large")
                chunks.append(chunk)
            return b"".join(chunks)

    try:
        return await asyncio.wait_for(download(), serve.fetch_timeout_s)
    except asyncio.TimeoutError as exc:
        raise ApiError(
            400, f"image URL took longer than {serve.fetch_timeout_s:g} s", PARAM, "image_fetch_failed"
        ) from exc
    except httpx.HTTPError as exc:
        raise ApiError(
            400, f"image URL could not be fetched: {type(exc).__name__}: {exc}", PARAM, "image_fetch_failed"
        ) from exc


async def load_image(url: str, settings: Settings, client: httpx.AsyncClient) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url, settings.serve.max_image_bytes)
    if urlsplit(url).scheme in ("http", "https"):
        return await fetch_url(url, settings.serve, client)
    raise ApiError(400, "image_url must be an http(s) URL or a data: URL", PARAM, "invalid_image_url")


def limits_for(settings: Settings, model: str) -> PrepareLimits:
    """Downscale to what the model's processor uses, when the model's family is known."""
    edge = settings.images.max_image_edge
    try:
        edge = min(edge, resolve_spec(model, settings.engine.model_family).max_image_edge)
    except ConfigError:
        pass
    return PrepareLimits(settings.serve.max_image_bytes, settings.images.max_pixels, edge, settings.images.jpeg_quality)


async def prepare(raw: bytes, settings: Settings, model: str) -> Prepared:
    if not raw:
        raise ApiError(400, "the image is empty (0 bytes)", PARAM, "invalid_image")
    result = await to_thread.run_sync(prepare_bytes, "image", raw, limits_for(settings, model))
    if isinstance(result, Failed):
        raise ApiError(400, f"the image cannot be used: {result.reason}", PARAM, "invalid_image")
    return result
