"""Names that every format accepts, shared by the producer and the CPU workers."""

from __future__ import annotations


def display_name(name: str) -> str:
    """A name that JSON, Redis and CSV accept: bytes that are not UTF-8 become `\\xNN` escapes.

    os.scandir gives such bytes as surrogate escapes (PEP 383), which no encoder accepts;
    the escaped form is deterministic and shows the original bytes.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
