"""8-bit greyscale PNGs (object masks, COCO+LVIS's packed layers) decoded with ISA-L's inflate.

OpenCV's PNG decoder spends most of a mask's time in zlib 1.2's inflate: a 640x480 mask of 1.9 kB that OpenCV
wrote takes 1.5 ms to decode, of which inflating its rows takes 0.9. ISA-L (`isal`, already here for the checksums)
inflates the same stream in 0.14 ms, and PyTorch undoes the rows' Sub filters in 0.14 more. Every item of an
extraction decodes its masks (2.25 an item in benchmarks/extract_pipeline.py, dozens of layers an image in
COCO+LVIS) in the loader workers, whose CPU feeds the GPU.

PNG is lossless, so the pixels are OpenCV's bit for bit. Only a plain file is decoded here: 8 bits, greyscale, not
interlaced, no chunk but IHDR, consecutive IDATs, IEND and text or time or resolution notes that OpenCV leaves
aside, every chunk's CRC right, a zlib stream (its Adler-32 checked) that ends where the IDATs do with exactly the
filtered rows, and rows filtered with None, Sub or Up (OpenCV writes Sub rows only; Pillow, and libpng at high
levels, filter some rows with Average or Paeth, which depend on the pixel to their left, and no array operation
undoes that). Anything else is left to OpenCV, which decodes it, or refuses it, as before; a file with Average or
Paeth rows is found only once inflated, so it costs 0.17 ms more than before (benchmarks/mask_decoding.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from isal import isal_zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that OpenCV's decoder does not apply to 8-bit greyscale pixels; any other is left to OpenCV.
_NOTES = frozenset((b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs"))
# libpng's default limit on either side; a larger image is OpenCV's to refuse.
_LIBPNG_MAX_SIDE = 1_000_000
_NONE, _SUB, _UP = 0, 1, 2


@dataclass(frozen=True)
class GrayPng:
    """A plain 8-bit greyscale PNG, its chunks read and checked; `decode` inflates it."""

    height: int
    width: int
    stream: bytes  # the IDAT chunks' data, joined: one zlib stream

    def decode(self) -> np.ndarray | None:
        """uint8 [height, width], the pixels OpenCV's IMREAD_UNCHANGED gives; None where the stream does not
        inflate to exactly the filtered rows, or a row uses a filter this module leaves to OpenCV."""
        stride = self.width + 1  # a filter-type byte, then the row
        inflater = isal_zlib.decompressobj()
        try:
            inflated = inflater.decompress(self.stream, self.height * stride + 1)
        except isal_zlib.error:
            return None
        if len(inflated) != self.height * stride or not inflater.eof or inflater.unused_data:
            return None
        rows = np.frombuffer(inflated, np.uint8).reshape(self.height, stride)
        if int(rows[:, 0].max()) > _UP:  # Average or Paeth rows: such a file goes to OpenCV
            return None
        return _unfiltered(rows[:, 0], rows[:, 1:].copy())  # writable and contiguous, as torch wants it


def plain_gray_png(data: bytes) -> GrayPng | None:
    """`data`'s size and zlib stream when it is a PNG this module decodes (the module's docstring says which);
    None to leave it to OpenCV."""
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        return None
    size = _plain_gray_size(chunks[0][1])
    kinds = [kind for kind, _ in chunks[1:-1]]
    idats = [index for index, kind in enumerate(kinds) if kind == b"IDAT"]
    if size is None or not idats or idats != list(range(idats[0], idats[-1] + 1)):
        return None
    if any(kind not in _NOTES for kind in kinds if kind != b"IDAT"):
        return None
    return GrayPng(*size, b"".join(body for kind, body in chunks if kind == b"IDAT"))


def _chunks(data: bytes) -> list[tuple[bytes, memoryview]] | None:
    """(type, data) of each chunk up to IEND; None when a chunk runs past the end, a CRC is wrong, or bytes follow
    IEND."""
    if not data.startswith(_SIGNATURE):
        return None
    chunks, position = [], len(_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            return None
        body = memoryview(data)[position + 8 : end - 4]
        if isal_zlib.crc32(body, isal_zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        chunks.append((kind, body))
        if kind == b"IEND":
            return chunks if end == len(data) else None
        position = end
    return None


def _plain_gray_size(body: memoryview) -> tuple[int, int] | None:
    """(height, width) from an IHDR that declares 8-bit greyscale, deflate, standard filters, no interlacing."""
    if len(body) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if (depth, colour, compression, filtering, interlace) != (8, 0, 0, 0, 0):
        return None
    if not (0 < width <= _LIBPNG_MAX_SIDE and 0 < height <= _LIBPNG_MAX_SIDE):
        return None
    return height, width


def _unfiltered(filters: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """uint8 [H, W] pixels of rows filtered with None, Sub or Up as `filters` [H] says (one byte a pixel), from
    their `residuals` [H, W].

    Modulo 256, a Sub row is the running sum of its residuals along the row, and an Up row the sum of its own and
    those of the Up rows above it, down from the nearest None or Sub row (whose pixels it then adds). So the rows
    are worked out at once: each None or Sub row's pixels, then the running sum of every row down the image, less
    that sum just above each row's nearest None or Sub row. (torch's uint8 running sums take a sixth (along rows) to a
    half (down columns) of NumPy's time; it loads with the first mask, so that `isegprobe datasets` and every --help
    start without it.)"""
    import torch

    values = torch.from_numpy(residuals)
    is_sub = torch.from_numpy(filters == _SUB)
    if is_sub.any():
        summed = values.cumsum(1, dtype=torch.uint8)
        values = summed if is_sub.all() else torch.where(is_sub[:, None], summed, values)
    is_up = filters == _UP
    if not is_up.any():
        return values.numpy()
    down = values.cumsum(0, dtype=torch.uint8)
    above = torch.cat((torch.zeros_like(down[:1]), down))  # above[k]: the running sum down to row k - 1
    nearest = np.maximum.accumulate(np.where(is_up, 0, np.arange(len(filters))))  # 0 where there is none
    return (down - above[torch.from_numpy(nearest)]).numpy()
