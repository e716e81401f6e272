"""The size an image declares, read before it is decoded: Pillow's reading, and the tool's own for PNG and JPEG
headers that Pillow refuses, so that no file is decoded before its size is known to be within the limit."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_trees import write_png_with_a_damaged_note
from PIL import Image, PngImagePlugin

from isegprobe.data import image_io
from isegprobe.data.image_headers import declared_size
from isegprobe.errors import UserError

GRABCUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "GrabCut"
EXIF = Image.Exif()
EXIF[0x0112] = 6  # turned a quarter: the header's size is the stored one
EXIF[0x010F] = "camera " * 200  # an APP1 segment of more than a kB before the frame


def encoded(array: np.ndarray, suffix: str, **pillow_options) -> bytes:
    """`array` as a file: by Pillow when options are given (EXIF, progressive), else by OpenCV."""
    if not pillow_options:
        return cv2.imencode(suffix, array)[1].tobytes()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=suffix.lstrip(".").replace("jpg", "jpeg"), **pillow_options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("shape", "suffix", "options"),
    [
        ((37, 53, 3), ".jpg", {}),
        ((37, 53), ".jpg", {}),
        ((300, 17, 3), ".jpg", {"progressive": True}),
        ((64, 48, 3), ".jpg", {"exif": EXIF}),
        ((37, 53, 3), ".png", {}),
        ((37, 53), ".png", {}),
        ((5, 70000), ".png", {}),
    ],
)
def test_the_declared_size_is_pillows(shape, suffix, options):
    data = encoded(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8), suffix, **options)
    with Image.open(io.BytesIO(data)) as image:
        assert declared_size(data) == (image.height, image.width) == shape[:2]


def test_the_declared_size_of_real_photos_is_pillows():
    paths = sorted(GRABCUT.glob("data_GT/*"))
    if not paths:
        pytest.skip(f"GrabCut not found at {GRABCUT}")
    for path in paths:
        data = path.read_bytes()
        if data.startswith((b"\xff\xd8", b"\x89PNG")):
            with Image.open(path) as image:
                assert declared_size(data) == (image.height, image.width), path


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n", b"GIF89a"])
def test_no_size_is_made_up_from_a_header_cut_short_or_of_another_format(data):
    assert declared_size(data) is None


def test_an_image_whose_header_pillow_refuses_is_weighed_before_it_is_decoded(tmp_path, monkeypatch):
    """A 2.6 MB PNG of 30000 x 30000 pixels with a damaged text note took 6 GB: OpenCV decoded it, then the limit
    refused it."""
    path = tmp_path / "big.png"
    write_png_with_a_damaged_note(path, 7000)

    def decoded(*_):
        raise AssertionError("decoded before its size was checked")

    monkeypatch.setattr(image_io.cv2, "imdecode", decoded)
    with pytest.raises(UserError, match=r"big\.png: 7000 x 7000 pixels \(49\.0 MP\) is above the limit"):
        image_io.read_rgb(path)


def test_data_whose_header_says_no_size_is_not_decoded(tmp_path, monkeypatch):
    path = tmp_path / "noise.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"IEND\xaeB`\x82")
    monkeypatch.setattr(image_io.cv2, "imdecode", lambda *_: pytest.fail("decoded"))
    with pytest.raises(UserError, match=r"noise\.png: cannot read this image \(corrupt or not an image\)"):
        image_io.read_rgb(path)


@pytest.mark.parametrize("value", ["²", "9" * 5000, "0", "abc", ""])
def test_a_pixel_limit_that_is_no_count_is_refused_by_its_name(monkeypatch, value):
    """'²' passed `str.isdigit` and then failed `int` (a ValueError blamed on the first image read), and 5000
    digits passed both and then Python's limit on converting long numbers."""
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, value)
    with pytest.raises(UserError, match=r"ISEGPROBE_MAX_PIXELS=.*: expected a whole number of pixels >= 1"):
        image_io.max_pixels()


def test_an_image_above_the_limit_is_refused_before_pillow_or_opencv_decodes_it(tmp_path, monkeypatch):
    """Reading a PNG's orientation tag through Pillow's `getexif` decoded the whole PNG first, before the limit."""
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "100")
    monkeypatch.setattr(image_io.cv2, "imdecode", lambda *_: pytest.fail("decoded by OpenCV"))
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda *_: pytest.fail("decoded by Pillow"))
    with pytest.raises(UserError, match=r"wide\.png: 30 x 20 pixels .* above the limit of 100 pixels"):
        image_io.read_rgb(path)


@pytest.mark.parametrize("mode", ["F", "I"])
def test_a_tiff_of_32_bit_samples_is_named_as_such_not_as_corrupt(tmp_path, mode):
    """Pillow reads its header and OpenCV returns no colour pixels: the file is whole, its samples are the reason."""
    path = tmp_path / "scan.tif"
    Image.fromarray(np.arange(12, dtype=np.float32 if mode == "F" else np.int32).reshape(3, 4)).save(path)
    with pytest.raises(UserError, match=r"scan\.tif: cannot read this image \(a TIFF of 32-bit .* samples, which"):
        image_io.read_rgb(path)
