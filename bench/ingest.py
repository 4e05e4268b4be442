"""Ingest: preparing 12-megapixel JPEGs with and without JPEG reduced-size (draft) decoding.

Both runs use the producer's own decoding pool (one process per core), on the same files, in
the same run. Each image is read, hashed, validated, decoded, EXIF-rotated, downscaled to the
model's edge and re-encoded.

    python -m bench.ingest [--images 64] [--edge 768]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import replace
from pathlib import Path

from PIL import Image

from bench.common import Timer, report
from producers.pool import PreparePool
from producers.prepare import Failed, PrepareLimits
from producers.scan import scan


def make_photos(folder: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> None:
    """n distinct 12 MP JPEGs like phone photos: smooth shapes, fine grain, about 2-3 MB each."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.radial_gradient("L").resize(size)
    grain = Image.effect_noise(size, 6)
    for i in range(n):
        shapes = Image.effect_noise((250, 188), 60 + i % 40).convert("RGB").resize(size, Image.BICUBIC)
        rgb = Image.merge("RGB", (Image.blend(shapes.getchannel(0), grain, 0.15), shapes.getchannel(1),
                                  Image.blend(base, shapes.getchannel(2), 0.5)))
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=90)
        (folder / f"photo_{i:04d}.jpg").write_bytes(out.getvalue())


def prepare_all(folder: Path, limits: PrepareLimits) -> tuple[float, int]:
    pool = PreparePool(limits)
    try:
        list(pool.map(scan([folder], False, [".jpg"])))  # warm-up: pool start, page cache
        with Timer() as t:
            results = list(pool.map(scan([folder], False, [".jpg"])))
    finally:
        pool.close()
    assert not any(isinstance(r, Failed) for r in results)
    return t.seconds, len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--edge", type=int, default=768)
    args = parser.parse_args()
    limits = PrepareLimits(max_file_bytes=64 * 2**20, max_pixels=80_000_000, max_edge=args.edge, jpeg_quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_photos(folder, args.images)
        mean_mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / args.images / 1e6
        full_s, n = prepare_all(folder, replace(limits, use_draft=False))
        draft_s, _ = prepare_all(folder, limits)
    rows = [["full decode, then downscale", full_s, n / full_s], ["reduced-size (draft) decode", draft_s, n / draft_s]]
    report("ingest", f"Ingest of {n} 12 MP JPEGs to a {args.edge}-px edge", ["decode", "seconds", "images/s"], rows,
           {"speed-up from draft decoding": round(full_s / draft_s, 2), "mean file size MB": round(mean_mb, 2)})


if __name__ == "__main__":
    main()
