"""Generators of test image folders: good images of many kinds, and hostile files."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image


def jpeg_bytes(w: int, h: int, color: tuple[int, int, int], seed: int = 0) -> bytes:
    img = Image.new("RGB", (w, h), color)
    rng = random.Random(seed)
    for _ in range(20):  # some structure so images differ in content, not only colour
        x, y = rng.randrange(w), rng.randrange(h)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(w, x + 8), min(h, y + 8)))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def make_good_images(folder: Path, n: int, size: tuple[int, int] = (96, 64), start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        name = f"img_{i:05d}.jpg"
        (folder / name).write_bytes(jpeg_bytes(*size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256), seed=i))
        names.append(name)
    return names


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge size: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# Hostile files: name → a phrase their error reason must contain.
BAD_FILES = {
    "not_an_image.jpg": "not an image",
    "truncated.jpg": "truncated",
    "empty.png": "empty",
    "bomb.png": "decompression bomb",
    "garbage.webp": "not an image",
    "notes.txt": "not an image file type",
}


def make_bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(120, 80, (10, 200, 30))
    contents = {
        "not_an_image.jpg": b"this is plain text, not a JPEG\n" * 10,
        "truncated.jpg": good[: len(good) // 2],
        "empty.png": b"",
        "bomb.png": png_declaring(10_000, 10_000),
        "garbage.webp": bytes(random.Random(1).randrange(256) for _ in range(4096)),
        "notes.txt": b"a sidecar file",
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return dict(BAD_FILES)


def prepare_or_hang(path, name, limits, within=None):
    """A decode function that never returns for files named hang*: a stuck decoder."""
    import time

    from app.decode import prepare_file

    if name.startswith("hang"):
        time.sleep(3600)
    return prepare_file(path, name, limits, within)


def prepare_and_weigh(path, name, limits, within=None):
    """prepare_file, its result's `source` saying the decoding process's memory afterwards:
    "rss_mb peak_mb" (resident now, and the most it ever was)."""
    import dataclasses
    import resource

    from app.decode import prepare_file

    result = prepare_file(path, name, limits, within)
    with open("/proc/self/statm") as fh:
        rss_mb = int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dataclasses.replace(result, source=f"{rss_mb:.0f} {peak_mb:.0f}")
