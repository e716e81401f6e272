"""8-bit greyscale PNGs decoded by `gray_png`: OpenCV's pixels, bit for bit, and everything else left to OpenCV."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from isegprobe.data.gray_png import plain_gray_png
from isegprobe.data.image_io import decode_bytes, decode_packed_layer
from isegprobe.errors import UserError

NONE, SUB, UP, AVERAGE, PAETH = range(5)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def header(height: int, width: int, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))


def filtered_rows(pixels: np.ndarray, filters: list[int]) -> bytes:
    """The rows of a [H, W] uint8 image filtered as `filters` says, each after its filter-type byte (None, Sub, Up
    only), as an encoder writes them before deflate."""
    rows, above = [], np.zeros(pixels.shape[1], np.uint8)
    for row, kind in zip(pixels, filters, strict=True):
        if kind == SUB:
            residual = row - np.concatenate(([0], row[:-1])).astype(np.uint8)
        elif kind == UP:
            residual = row - above
        else:
            residual = row
        rows.append(bytes([kind]) + residual.astype(np.uint8).tobytes())
        above = row
    return b"".join(rows)


def png(pixels: np.ndarray, filters: list[int], before: bytes = b"", after: bytes = b"") -> bytes:
    """A greyscale PNG written here, its rows filtered as `filters` says; `before` and `after` are chunks put
    around its one IDAT."""
    stream = zlib.compress(filtered_rows(pixels, filters))
    return b"\x89PNG\r\n\x1a\n" + header(*pixels.shape) + before + chunk(b"IDAT", stream) + after + chunk(b"IEND", b"")


def masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[:96, :128]
    binary = np.zeros((96, 128), np.uint8)
    layers = np.zeros((96, 128), np.uint8)
    for value in range(1, 6):
        y, x, radius = rng.integers(0, 96), rng.integers(0, 128), rng.integers(4, 40)
        disc = (ys - y) ** 2 + (xs - x) ** 2 < radius**2
        binary[disc] = 255
        layers[disc] = value
    binary[40:44, 10:120:3] = 255  # thin stripes: rows that differ from the row above
    return {
        "binary": binary,
        "instance layer": layers,
        "noise": rng.integers(0, 256, (96, 128), dtype=np.uint8),
        "one pixel": np.full((1, 1), 200, np.uint8),
        "one row": rng.integers(0, 256, (1, 37), dtype=np.uint8),
        "one column": rng.integers(0, 256, (41, 1), dtype=np.uint8),
    }


def opencv(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def pillow(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", **options)
    return buffer.getvalue()


def row_filters(data: bytes) -> set[int]:
    png_file = plain_gray_png(data)
    rows = zlib.decompress(png_file.stream)
    return set(rows[:: len(rows) // png_file.height])


def png_filtered_by_opencv(pixels: np.ndarray, filters: int) -> bytes:
    return cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_FILTER, filters])[1].tobytes()


WRITERS = {
    "opencv": lambda pixels: cv2.imencode(".png", pixels)[1].tobytes(),
    "opencv level 9": lambda pixels: cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes(),
    "opencv, up only": lambda pixels: png_filtered_by_opencv(pixels, cv2.IMWRITE_PNG_FILTER_UP),
    "opencv, none sub or up": lambda pixels: png_filtered_by_opencv(pixels, cv2.IMWRITE_PNG_FAST_FILTERS),
    "pillow": pillow,
    "pillow level 1": lambda pixels: pillow(pixels, compress_level=1),
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("name", masks())
def test_masks_written_by_opencv_and_pillow_decode_to_opencvs_pixels(writer, name):
    pixels = masks()[name]
    data = WRITERS[writer](pixels)
    expected = opencv(data)
    assert np.array_equal(expected, pixels)
    decoded = decode_bytes(data, cv2.IMREAD_UNCHANGED, "mask.png", "mask")
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous and decoded.flags.writeable
    assert np.array_equal(decoded, expected)
    if row_filters(data) <= {NONE, SUB, UP}:
        assert np.array_equal(plain_gray_png(data).decode(), expected), "a plain file must not go to OpenCV"


@pytest.mark.parametrize("seed", range(6))
def test_rows_filtered_none_sub_and_up_in_any_order_are_undone_exactly(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 40), rng.integers(1, 50)
    pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    pixels[rng.random(height) < 0.3] = 255  # runs of equal rows, as in masks
    filters = list(rng.choice([NONE, SUB, UP], size=height, p=[0.2, 0.3, 0.5]))
    filters[0] = [NONE, SUB, UP][seed % 3]  # an Up first row adds a row of zeros
    data = png(pixels, filters)
    assert np.array_equal(plain_gray_png(data).decode(), pixels)
    assert np.array_equal(opencv(data), pixels)


def test_notes_beside_the_pixels_are_read_past():
    pixels = masks()["binary"]
    notes_before = chunk(b"tEXt", b"Software\x00test") + chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1))
    data = png(pixels, [SUB] * len(pixels), before=notes_before, after=chunk(b"tIME", bytes(7)))
    assert np.array_equal(plain_gray_png(data).decode(), pixels)


def _left_to_opencv() -> dict[str, bytes]:
    pixels = masks()["binary"]
    rows = [SUB] * len(pixels)
    plain = png(pixels, rows)
    idat_at = plain.index(b"IDAT") - 4
    crc_at = plain.index(b"IEND") - 8
    stream = zlib.compress(filtered_rows(pixels, rows))
    colour = cv2.imencode(".png", np.dstack([pixels, pixels, 255 - pixels]))[1].tobytes()
    palette = io.BytesIO()
    Image.fromarray(pixels).convert("P").save(palette, "PNG")
    return {
        "average rows": png_filtered_by_opencv(pixels, cv2.IMWRITE_PNG_FILTER_AVG),
        "paeth rows": png_filtered_by_opencv(pixels, cv2.IMWRITE_PNG_FILTER_PAETH),
        "colour": colour,
        "16 bits": cv2.imencode(".png", pixels.astype(np.uint16) * 257)[1].tobytes(),
        "palette": palette.getvalue(),
        "gamma": png(pixels, rows, before=chunk(b"gAMA", struct.pack(">I", 45455))),
        "transparency": png(pixels, rows, before=chunk(b"tRNS", struct.pack(">H", 0))),
        "interlaced": b"\x89PNG\r\n\x1a\n"
        + header(1, 1, interlace=1)
        + chunk(b"IDAT", zlib.compress(b"\x00\x07"))
        + chunk(b"IEND", b""),
        "a wrong IDAT CRC": plain[:crc_at] + bytes([plain[crc_at] ^ 1]) + plain[crc_at + 1 :],
        "a wrong Adler-32": plain[:idat_at]
        + chunk(b"IDAT", stream[:-1] + bytes([stream[-1] ^ 1]))
        + chunk(b"IEND", b""),
        "a stream cut short": plain[:idat_at] + chunk(b"IDAT", stream[:-6]) + chunk(b"IEND", b""),
        "no Adler-32": plain[:idat_at] + chunk(b"IDAT", stream[:-4]) + chunk(b"IEND", b""),
        "bytes after the stream": plain[:idat_at] + chunk(b"IDAT", stream + b"\x00\x01") + chunk(b"IEND", b""),
        "a row too many": png(np.vstack([pixels, pixels[:1]]), [*rows, SUB]).replace(
            header(len(pixels) + 1, pixels.shape[1]), header(*pixels.shape)
        ),
        "IDATs apart": plain[:idat_at]
        + chunk(b"IDAT", stream[:10])
        + chunk(b"tEXt", b"a\x00b")
        + chunk(b"IDAT", stream[10:])
        + chunk(b"IEND", b""),
        "bytes after IEND": plain + b"trailer",
    }


@pytest.mark.parametrize("case", _left_to_opencv())
def test_what_gray_png_does_not_decode_plainly_goes_to_opencv_as_before(case):
    data = _left_to_opencv()[case]
    png_file = plain_gray_png(data)
    assert png_file is None or png_file.decode() is None
    expected = opencv(data)
    if expected is None:
        with pytest.raises(UserError, match="mask.png: cannot read this mask"):
            decode_bytes(data, cv2.IMREAD_UNCHANGED, "mask.png", "mask")
    else:
        assert np.array_equal(decode_bytes(data, cv2.IMREAD_UNCHANGED, "mask.png", "mask"), expected)
    layer = decode_packed_layer(data, "42.pickle")
    assert (layer is None and expected is None) or np.array_equal(layer, expected)


def test_a_plain_png_above_the_pixel_limit_is_refused_before_it_is_inflated(monkeypatch):
    data = WRITERS["opencv"](masks()["binary"])
    monkeypatch.setenv("ISEGPROBE_MAX_PIXELS", "1000")
    with pytest.raises(UserError, match=r"mask\.png: 128 x 96 pixels .* above the limit of 1000 pixels"):
        decode_bytes(data, cv2.IMREAD_UNCHANGED, "mask.png", "mask")
    with pytest.raises(UserError, match=r"42\.pickle: 128 x 96 pixels"):
        decode_packed_layer(data, "42.pickle")


def test_a_packed_layer_decodes_as_opencv_decodes_it():
    layer = masks()["instance layer"]
    assert np.array_equal(decode_packed_layer(WRITERS["opencv"](layer), "42.pickle"), layer)
    jpeg = cv2.imencode(".jpg", layer)[1].tobytes()
    assert np.array_equal(decode_packed_layer(jpeg, "42.pickle"), opencv(jpeg))
    assert decode_packed_layer(b"not an image", "42.pickle") is None


def _with_chunk_body_changed(data: bytes, kind: bytes, change) -> bytes:
    """`data` with the first chunk of `kind` given the body `change(body)` returns, its CRC made right again, so
    that the damage reaches past the chunk checks."""
    at = data.index(kind) - 4
    (length,) = struct.unpack_from(">I", data, at)
    body = data[at + 8 : at + 8 + length]
    return data[:at] + chunk(kind, change(body)) + data[at + 12 + length :]


@pytest.mark.parametrize("seed", range(40))
def test_damaged_pngs_with_right_crcs_decode_as_opencv_decodes_them_or_are_refused(seed):
    """Bytes of the stream or the header changed and the CRC made to fit: the pixels are OpenCV's, or the file is
    refused as OpenCV refuses it, with our one-line error; nothing else escapes."""
    rng = np.random.default_rng(seed)
    pixels = masks()[["binary", "instance layer", "noise"][seed % 3]]
    data = WRITERS["opencv, none sub or up" if seed % 2 else "opencv"](pixels)

    def damage(body: bytes) -> bytes:
        changed = bytearray(body)
        for at in rng.integers(0, len(changed), rng.integers(1, 4)):
            changed[at] = int(rng.integers(0, 256))
        return bytes(changed)

    damaged = _with_chunk_body_changed(data, b"IHDR" if seed % 5 == 0 else b"IDAT", damage)
    expected = opencv(damaged)
    try:
        decoded = decode_bytes(damaged, cv2.IMREAD_UNCHANGED, "mask.png", "mask")
    except UserError as error:
        assert expected is None, str(error)
    else:
        assert expected is not None and np.array_equal(decoded, expected)
