"""Small files travel to the decoding processes many per message; a hostile one is still pinned on itself."""

from __future__ import annotations

from PIL import Image

from app.decode import Failed, Prepared, PrepareLimits
from producers.chunks import Chunker, ChunkSize
from producers.pool import PreparePool
from producers.scan import ScanEntry, scan
from tests.images import jpeg_bytes, prepare_or_hang

LIMITS = PrepareLimits(max_file_bytes=2**30, max_pixels=10**9, max_edge=256, jpeg_quality=90)


def small_files(folder, n, prefix="a"):
    for i in range(n):
        (folder / f"{prefix}{i:03d}.jpg").write_bytes(jpeg_bytes(40, 30, (i % 256, 2, 3)))


def test_chunks_grow_for_fast_entries_and_stay_single_for_slow_ones():
    size = ChunkSize()
    assert size.now == 1  # a first file of unknown cost goes alone
    size.observe(0.0004, 1)
    assert size.now == ChunkSize.MOST
    size.observe(0.030, 1)  # a 12 MP photo
    assert size.now == 1
    size.observe(0.004, 4)
    assert size.now == 20


def test_a_refused_entry_or_a_url_travels_alone_and_order_is_kept():
    from app.entries import Entry

    entries = [
        ScanEntry(path="a", name="a"),
        ScanEntry(path="b", name="b"),
        ScanEntry(path="c", name="c", problem="not a regular file"),
        ScanEntry(path="d", name="d"),
        Entry(kind="url", name="e", url="http://127.0.0.1/e.jpg"),
        ScanEntry(path="f", name="f"),
        ScanEntry(path="g", name="g"),
        ScanEntry(path="h", name="h"),
    ]
    chunker = Chunker(entries)
    cut = [[e.name for e in chunker.next(2)] for _ in range(7)]
    assert cut == [["a", "b"], ["c"], ["d"], ["e"], ["f", "g"], ["h"], []]


def test_a_file_that_hangs_among_many_small_ones_times_out_alone_and_the_rest_are_prepared(tmp_path):
    small_files(tmp_path, 40, "a")
    (tmp_path / "hang.jpg").write_bytes(jpeg_bytes(40, 30, (1, 2, 3)))
    small_files(tmp_path, 40, "z")
    pool = PreparePool(LIMITS, workers=1, timeout_s=1.5, prepare=prepare_or_hang)
    try:
        results = [(e.name, r) for e, r in pool._map(scan([tmp_path], False, [".jpg"]))]
    finally:
        pool.close()
    assert [name for name, _ in results] == sorted(p.name for p in tmp_path.iterdir())
    failed = {name: r.reason for name, r in results if isinstance(r, Failed)}
    assert list(failed) == ["hang.jpg"] and "longer than 1.5 s" in failed["hang.jpg"]
    assert sum(isinstance(r, Prepared) for _, r in results) == 80


def test_a_decoder_crash_inside_a_chunk_is_pinned_on_its_file(tmp_path):
    small_files(tmp_path, 40, "a")
    Image.new("RGB", (8000, 8000), (1, 2, 3)).save(tmp_path / "big.png")  # 192 MB decoded, and its copies
    small_files(tmp_path, 40, "c")
    pool = PreparePool(LIMITS, workers=1, memory_mb=200)  # less than the big one needs
    try:
        results = {r.name: r for r in pool.map(scan([tmp_path], False, [".png", ".jpg"]))}
    finally:
        pool.close()
    assert [n for n, r in results.items() if isinstance(r, Failed)] == ["big.png"]
    assert len(results) == 81
