"""Preparing untrusted files: every kind of bad input is one clear error; odd formats convert right."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from app.decode import Failed, Prepared, PrepareLimits, prepare_file
from producers.pool import PreparePool
from producers.scan import scan
from tests.conftest import WITHOUT_DAC
from tests.images import BAD_FILES, jpeg_bytes, make_bad_files, png_declaring, prepare_and_weigh

LIMITS = PrepareLimits(max_file_bytes=2 * 2**20, max_pixels=40_000_000, max_edge=256, jpeg_quality=90)


def prepared(path: Path) -> Image.Image:
    result = prepare_file(path, path.name, LIMITS)
    assert isinstance(result, Prepared), result
    return Image.open(io.BytesIO(result.data))


def save(tmp_path: Path, name: str, img: Image.Image, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_kind_fails_alone_with_a_readable_reason(tmp_path, name):
    expected = make_bad_files(tmp_path)
    if name == "notes.txt":  # refused by the scanner, before decoding
        entry = next(e for e in scan([tmp_path], False, [".jpg", ".png", ".webp"]) if e.name == name)
        assert expected[name] in entry.problem
        return
    result = prepare_file(tmp_path / name, name, LIMITS)
    assert isinstance(result, Failed) and expected[name] in result.reason, result


def test_a_file_over_the_size_limit_is_refused_without_being_read(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(b"\xff\xd8" + b"\0" * (3 * 2**20))
    result = prepare_file(path, "huge.jpg", LIMITS)
    assert isinstance(result, Failed) and "over the limit" in result.reason


def test_a_tiny_png_declaring_100_megapixels_is_refused_as_a_bomb(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_declaring(10_000, 10_000))
    result = prepare_file(tmp_path / "bomb.png", "bomb.png", LIMITS)
    assert isinstance(result, Failed) and "decompression bomb" in result.reason


def test_an_unreadable_file_is_an_error_record(tmp_path):
    path = tmp_path / "secret.jpg"
    path.write_bytes(jpeg_bytes(40, 30, (1, 2, 3)))
    path.chmod(0)
    code = (
        "from app.decode import *; "
        f"r = prepare_file({str(path)!r}, 'secret.jpg', PrepareLimits(2**20, 10**7, 64, 90)); print(r.reason)"
    )
    prefix = WITHOUT_DAC if os.geteuid() == 0 else []
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent
    )
    assert "permission denied" in out.stdout, out.stderr


def test_names_with_odd_characters_are_processed(tmp_path):
    for name in ["ünïcödé 写真.jpg", "spaces and 'quotes'.jpg", "semi;colon$.jpg", "-leading-dash.jpg"]:
        (tmp_path / name).write_bytes(jpeg_bytes(40, 30, (9, 9, 9)))
    results = list(PreparePool(LIMITS, workers=1).map(scan([tmp_path], False, [".jpg"])))
    assert len(results) == 4 and all(isinstance(r, Prepared) for r in results)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    out = prepared(save(tmp_path, "rotated.jpg", img, exif=exif))
    assert out.size == (100, 200)
    result = prepare_file(tmp_path / "rotated.jpg", "r", LIMITS)
    assert (result.width, result.height) == (100, 200)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "RGBA", "L", "I;16", "1"])
def test_every_pixel_mode_becomes_rgb(tmp_path, mode):
    img = (
        Image.new("RGB", (64, 48), (200, 100, 50)).convert(mode)
        if mode != "I;16"
        else Image.new("I;16", (64, 48), 40000)
    )
    fmt = {"CMYK": "jpg", "P": "gif"}.get(mode, "png")
    out = prepared(save(tmp_path, f"x.{fmt}", img))
    assert out.mode == "RGB" and out.size == (64, 48)


def test_a_16_bit_image_is_scaled_not_clipped_to_white(tmp_path):
    out = prepared(save(tmp_path, "grey16.png", Image.new("I;16", (32, 32), 32768)))
    assert 120 <= out.getpixel((5, 5))[0] <= 136  # half of 65535 → about 128, not 255


def test_transparency_is_flattened_onto_white(tmp_path):
    out = prepared(save(tmp_path, "clear.png", Image.new("RGBA", (32, 32), (0, 0, 0, 0))))
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_large_photos_are_downscaled_and_small_ones_never_upscaled(tmp_path):
    big = prepared(save(tmp_path, "big.jpg", Image.new("RGB", (3000, 2000), (5, 5, 5)), quality=80))
    assert big.size == (256, 171)
    small = prepared(save(tmp_path, "small.png", Image.new("RGB", (50, 40), (5, 5, 5))))
    assert small.size == (50, 40)


def test_only_the_first_frame_of_an_animated_gif_is_used(tmp_path):
    frames = [Image.new("P", (40, 30), i) for i in (1, 2, 3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert prepared(path).size == (40, 30)


def test_symlinks_leaving_the_folder_are_refused_unless_asked(tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg_bytes(20, 20, (1, 1, 1)))
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside.jpg").write_bytes(jpeg_bytes(20, 20, (2, 2, 2)))
    (root / "link.jpg").symlink_to(outside)
    (root / "inner_link.jpg").symlink_to(root / "inside.jpg")
    entries = {e.name: e.problem for e in scan([root], True, [".jpg"])}
    assert entries["inside.jpg"] is None and entries["inner_link.jpg"] is None
    assert "outside the submitted folder" in entries["link.jpg"]
    followed = {e.name: e.problem for e in scan([root], True, [".jpg"], follow_symlinks=True)}
    assert followed["link.jpg"] is None


def test_scanning_is_recursive_sorted_and_skips_hidden_files(tmp_path):
    for rel in ["b.jpg", "a.jpg", "sub/c.jpg", "sub/deeper/d.jpg", ".hidden.jpg", ".git/x.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [e.name for e in scan([tmp_path], True, [".jpg"])] == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/d.jpg"]
    assert [e.name for e in scan([tmp_path], False, [".jpg"])] == ["a.jpg", "b.jpg"]


def test_a_fifo_is_refused_instead_of_blocking_the_scan(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "ok.jpg").write_bytes(b"x")
    entries = {e.name: e.problem for e in scan([tmp_path], False, [".jpg"])}
    assert "not a regular file" in entries["pipe.jpg"] and entries["ok.jpg"] is None


def test_a_file_that_hangs_the_decoder_times_out_and_the_rest_goes_on(tmp_path):
    from tests.images import prepare_or_hang

    for name in ("hang.jpg", "ok.jpg", "ok2.jpg"):
        (tmp_path / name).write_bytes(jpeg_bytes(40, 30, (1, 2, 3)))
    pool = PreparePool(LIMITS, workers=1, timeout_s=1.5, prepare=prepare_or_hang)
    try:
        results = {r.name: r for r in pool.map(scan([tmp_path], False, [".jpg"]))}
    finally:
        pool.close()
    assert "longer than 1.5 s" in results["hang.jpg"].reason
    assert isinstance(results["ok.jpg"], Prepared) and isinstance(results["ok2.jpg"], Prepared)


def test_decoding_that_needs_more_memory_than_allowed_is_an_error_not_a_crash(tmp_path):
    # 64 MP: 256 MB decoded (Pillow holds RGB in 4 bytes). 36 MP (144 MB) fits in 200 MB since the
    # decoded image is no longer copied to turn it (app.decode)
    big = Image.new("RGB", (8000, 8000), (1, 2, 3))
    save(tmp_path, "big.png", big, compress_level=1)
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(40, 30, (1, 2, 3)))
    limits = PrepareLimits(max_file_bytes=2**30, max_pixels=10**9, max_edge=256, jpeg_quality=90)
    pool = PreparePool(limits, workers=1, memory_mb=200)  # less than the decoder wants
    try:
        results = {r.name: r for r in pool.map(scan([tmp_path], False, [".png", ".jpg"]))}
    finally:
        pool.close()
    assert isinstance(results["big.png"], Failed), results["big.png"]
    assert isinstance(results["ok.jpg"], Prepared)


def quadrants(size: tuple[int, int]) -> Image.Image:
    """Four colours in four corners: any wrong turn or flip shows."""
    img = Image.new("RGB", size, (230, 30, 30))
    w, h = size
    img.paste((30, 200, 30), (w // 2, 0, w, h // 2))
    img.paste((30, 30, 220), (0, h // 2, w // 2, h))
    img.paste((240, 240, 40), (w // 2, h // 2, w, h))
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_looks_as_if_turned_before_downscaling(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path, "o.jpg", quadrants((1600, 1000)), exif=exif, quality=95)  # decoded at 1/4
    expected = ImageOps.exif_transpose(Image.open(path))  # full decode, turned, then downscaled
    expected.thumbnail((LIMITS.max_edge, LIMITS.max_edge), Image.Resampling.BICUBIC)
    result = prepare_file(path, "o.jpg", LIMITS)
    out = Image.open(io.BytesIO(result.data))
    turned = orientation in (5, 6, 7, 8)
    assert out.size == expected.size == ((160, 256) if turned else (256, 160))
    assert (result.width, result.height) == ((1000, 1600) if turned else (1600, 1000))
    assert max(ImageStat.Stat(ImageChops.difference(out, expected)).mean) < 4


def test_a_decoding_process_hands_back_a_huge_images_memory_and_stays_small(tmp_path):
    save(tmp_path, "a_small.jpg", quadrants((1600, 1200)))
    save(tmp_path, "b_huge.png", quadrants((8000, 8000)), compress_level=1)  # 64 MP: 256 MB decoded
    for i in range(3):
        save(tmp_path, f"c_small_{i}.jpg", quadrants((1600, 1200)))
    limits = PrepareLimits(max_file_bytes=2**30, max_pixels=80_000_000, max_edge=256, jpeg_quality=90)
    pool = PreparePool(limits, workers=1, prepare=prepare_and_weigh)
    try:
        results = list(pool.map(scan([tmp_path], False, [".jpg", ".png"])))
    finally:
        pool.close()
    assert all(isinstance(r, Prepared) for r in results), results
    (before, _), (_, peak), *_, (after, _) = [map(float, r.source.split()) for r in results]
    assert peak - before > 200  # the huge image did need its 256 MB …
    assert after - before < 40, (before, peak, after)  # … and the process gave it back
