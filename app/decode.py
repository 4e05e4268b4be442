"""Validate, decode and downscale one untrusted file into compact JPEG bytes, or say why not.

Runs in separate processes (see producers.pool, or a prepare task on a CPU queue: app.prepare_task)
with bounded memory and time, so a decoder crash, hang or memory blow-up costs one error record,
never the producer or a GPU worker. Lives in app/ because both the producer and the CPU workers use it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error

from PIL import Image, ImageFile, UnidentifiedImageError

from app.heap import release_heap
from config.groups import PrepareLimits

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a half-grey image
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# EXIF orientation → the turn that shows the image upright (as ImageOps.exif_transpose does)
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Prepared:
    name: str
    sha256: str
    width: int  # as displayed (EXIF orientation applied), before downscaling
    height: int
    data: bytes  # prepared JPEG
    source: str | None = None  # where it came from (URL, shard, dataset#row=N), for joining back


@dataclass(frozen=True)
class Failed:
    name: str
    reason: str
    sha256: str | None = None
    source: str | None = None


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: alpha flattened onto white, 16-bit and float scaled, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping everything above 255 to white
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode == "F":
        img = img.point(lambda v: v * 255).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


def prepare_bytes(name: str, raw: bytes, limits: PrepareLimits) -> Prepared | Failed:
    sha = hashlib.sha256(raw).hexdigest()
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # PIL's own bomb check, at the same limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            result = _downscale(name, raw, sha, limits)
    except UnidentifiedImageError:
        return Failed(name, "not an image (unknown or unsupported format)", sha)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Failed(name, f"decompression bomb refused: {exc}", sha)
    except OSError as exc:
        return Failed(name, f"corrupt or truncated image: {exc}", sha)
    except (ValueError, SyntaxError, EOFError, MemoryError, struct_error) as exc:
        return Failed(name, f"image could not be decoded: {type(exc).__name__}: {exc}", sha)
    return result


def _downscale(name: str, raw: bytes, sha: str, limits: PrepareLimits) -> Prepared | Failed:
    img = Image.open(io.BytesIO(raw))
    w, h = img.size
    if w * h > limits.max_pixels:
        return Failed(
            name,
            f"image declares {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of "
            f"{limits.max_pixels / 1e6:.0f} MP (decompression bomb refused)",
            sha,
        )
    orientation = img.getexif().get(0x0112, 1)
    if img.format == "JPEG" and limits.use_draft:
        # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: a 12 MP photo costs a fraction.
        # The request keeps the aspect ratio: draft picks a scale keeping both sides >= it.
        scale = limits.max_edge / max(w, h)
        img.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
    img.load()
    decoded = img.width * img.height
    img = _to_rgb(img)
    # never upscales; BICUBIC: half LANCZOS's cost, no visible difference at model input sizes.
    # The box is square, so the size is the same whether the image is turned before or after.
    img.thumbnail((limits.max_edge, limits.max_edge), Image.Resampling.BICUBIC)
    if orientation in TRANSPOSE:  # turned once small: the full decode is never copied to turn it
        img = img.transpose(TRANSPOSE[orientation])
    out = io.BytesIO()
    img.save(out, "JPEG", quality=limits.jpeg_quality, optimize=False)
    del img  # its pixels freed before the heap is looked at
    release_heap(decoded)
    if orientation in ROTATED:
        w, h = h, w
    return Prepared(name, sha, w, h, out.getvalue())


def open_under(path: str | Path, within: str | Path | None) -> int:
    """A read descriptor for `path`; with `within`, opened one component at a time from that
    folder with O_NOFOLLOW, so a symlink swapped in anywhere below it after the scan is refused
    (ELOOP or ENOTDIR) instead of followed. O_NONBLOCK: a FIFO swapped in does not block."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if within is None:
        return os.open(path, flags)
    parts = Path(path).relative_to(within).parts
    fd = os.open(within, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def prepare_file(
    path: str | Path, name: str, limits: PrepareLimits, within: str | Path | None = None
) -> Prepared | Failed:
    """Open the file once, check what was opened (fstat), read it, prepare it."""
    try:
        fd = open_under(path, within)
    except PermissionError:
        return Failed(name, "unreadable: permission denied")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return Failed(name, "refused: a symlink was found where the scan saw a file or folder (not followed)")
        return Failed(name, f"unreadable: {exc.strerror or exc}")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return Failed(name, "not a regular file (device, pipe, socket or folder)")
        size = st.st_size
        if size == 0:
            return Failed(name, "empty file (0 bytes)")
        if size > limits.max_file_bytes:
            return Failed(
                name, f"file is {size / 2**20:.1f} MiB, over the limit of {limits.max_file_bytes / 2**20:.0f} MiB"
            )
        try:
            raw = fh.read(size + 1)  # sized to the file, not the limit: read(n) allocates n up front
        except OSError as exc:
            return Failed(name, f"unreadable: {exc.strerror or exc}")
    if len(raw) > limits.max_file_bytes:  # grew after fstat
        return Failed(name, f"file grew past the limit of {limits.max_file_bytes / 2**20:.0f} MiB while read")
    return prepare_bytes(name, raw, limits)
