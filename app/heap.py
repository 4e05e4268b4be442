"""glibc heap settings for a process that decodes one image after another (producers.pool, app.prepare_task).

By default glibc serves every allocation over 128 KiB (a file's bytes, its decoded pixels, the
downscaled copy) with a fresh mmap, unmaps it on free and trims the heap's top: each image paid
for the same memory again, in page faults and kernel zeroing, on top of the decode. Kept in the
heap instead, the next image reuses it (issue #14: a 12 MP photo to 768 px, 60.9 → 56.2 ms of CPU).
Where the C library is not glibc, both calls do nothing.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_ABOVE = 32 * 2**20  # glibc's largest allowed threshold; Pillow allocates in blocks of 16 MiB
KEEP_BYTES = 64 * 2**20  # free memory kept for the next image: a 12 MP photo's buffers, with room
_libc: ctypes.CDLL | None = None


def keep_heap() -> bool:
    """Keep freed buffers (up to KEEP_BYTES free) for the next image; False where not glibc."""
    global _libc
    if _libc is not None:  # already set in this process (a prepare task calls it for each order)
        return True
    try:
        libc = ctypes.CDLL(None)
        _ = libc.gnu_get_libc_version  # glibc's own symbol: mallopt's numbers are glibc's
    except (OSError, AttributeError):
        return False
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES):
        _libc = libc
    return _libc is not None


def release_heap(pixels: int) -> None:
    """After decoding `pixels` more than is kept, hand all free memory back to the OS:
    a process that once decoded an 80 MP scan must not hold its buffers for the rest of the run.
    (Top trimming alone leaves free memory below a live allocation in place; malloc_trim doesn't.)"""
    if _libc is not None and pixels * 4 > KEEP_BYTES:  # Pillow holds RGB as 4 bytes a pixel
        _libc.malloc_trim(0)
