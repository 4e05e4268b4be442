"""Ingest: preparing 12-megapixel JPEGs, against the decoder's floor.

The project's runs use the producer's own decoding pool (one process per core), on the same files,
in the same run: each image is read, hashed, validated, decoded (with and without JPEG reduced-size
"draft" decoding), EXIF-rotated, downscaled to the model's edge and re-encoded.
The floor (the baseline): bare read + sha256 + reduced-size decode of the same files with as many
processes, nothing else — what any preparation must at least spend.

    python -m bench.ingest [--images 64] [--edge 768]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from PIL import Image

from app.decode import Failed, PrepareLimits
from bench.common import Timer, report
from producers.pool import PreparePool
from producers.scan import scan


def make_photos(folder: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> None:
    """n distinct 12 MP JPEGs like phone photos: smooth shapes, fine grain, about 2-3 MB each."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.radial_gradient("L").resize(size)
    grain = Image.effect_noise(size, 6)
    for i in range(n):
        shapes = Image.effect_noise((250, 188), 60 + i % 40).convert("RGB").resize(size, Image.BICUBIC)
        rgb = Image.merge(
            "RGB",
            (
                Image.blend(shapes.getchannel(0), grain, 0.15),
                shapes.getchannel(1),
                Image.blend(base, shapes.getchannel(2), 0.5),
            ),
        )
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=90)
        (folder / f"photo_{i:04d}.jpg").write_bytes(out.getvalue())


def cpu_s(executor: ProcessPoolExecutor) -> float:
    """CPU seconds (user + system) its processes have used: unlike wall time, barely moved by
    other work on the same cores, which made single wall-clock rounds range 0.4-0.9 of the floor."""
    total = 0
    for pid in list(executor._processes):  # noqa: SLF001 (no public way to the worker pids)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


def prepare_all(folder: Path, limits: PrepareLimits) -> tuple[float, int, float]:
    pool = PreparePool(limits)
    try:
        list(pool.map(scan([folder], False, [".jpg"])))  # warm-up: pool start, page cache
        cpu = cpu_s(pool._pool())  # noqa: SLF001
        with Timer() as t:
            results = list(pool.map(scan([folder], False, [".jpg"])))
        cpu = cpu_s(pool._pool()) - cpu  # noqa: SLF001
    finally:
        pool.close()
    assert not any(isinstance(r, Failed) for r in results)
    return t.seconds, len(results), cpu


def floor_one(path: str, edge: int) -> int:
    with open(path, "rb") as fh:
        raw = fh.read()
    hashlib.sha256(raw).hexdigest()
    img = Image.open(io.BytesIO(raw))
    scale = edge / max(img.size)
    img.draft("RGB", (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    img.load()
    return img.width


def decode_floor(folder: Path, edge: int) -> tuple[float, int, float]:
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(floor_one, paths, [edge] * len(paths)))  # warm-up, as for the project's runs
        cpu = cpu_s(pool)
        with Timer() as t:
            done = list(pool.map(floor_one, paths, [edge] * len(paths)))
        cpu = cpu_s(pool) - cpu
    return t.seconds, len(done), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--edge", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    limits = PrepareLimits(max_file_bytes=64 * 2**20, max_pixels=80_000_000, max_edge=args.edge, jpeg_quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_photos(folder, args.images)
        mean_mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / args.images / 1e6
        full_s, n, _ = prepare_all(folder, replace(limits, use_draft=False))
        # alternated and best of three: a busy machine slows whichever runs at the wrong moment
        floor_s = draft_s = floor_cpu = draft_cpu = float("inf")
        for _ in range(args.rounds):
            seconds, _, cpu = decode_floor(folder, args.edge)
            floor_s, floor_cpu = min(floor_s, seconds), min(floor_cpu, cpu)
            seconds, _, cpu = prepare_all(folder, limits)
            draft_s, draft_cpu = min(draft_s, seconds), min(draft_cpu, cpu)
    rows = [
        ["floor: read + sha256 + reduced-size decode (baseline)", floor_s, n / floor_s],
        ["project, full decode, then downscale", full_s, n / full_s],
        ["project, reduced-size (draft) decode", draft_s, n / draft_s],
    ]
    report(
        "ingest",
        f"Ingest of {n} 12 MP JPEGs to a {args.edge}-px edge, {os.cpu_count()} processes",
        ["decode", "seconds", "images/s"],
        rows,
        {
            "ratio project/floor": round(floor_s / draft_s, 3),
            "ratio project/floor, CPU time": round(floor_cpu / draft_cpu, 3),
            "CPU ms per image, floor / project": f"{floor_cpu / n * 1000:.1f} / {draft_cpu / n * 1000:.1f}",
            "speed-up from draft decoding": round(full_s / draft_s, 2),
            "mean file size MB": round(mean_mb, 2),
        },
    )


if __name__ == "__main__":
    main()
