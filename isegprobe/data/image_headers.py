"""The size a PNG or JPEG declares in its header, read from its first bytes, and where a JPEG's first scan starts.

Pillow reads the headers of every format the datasets use, but refuses a file with a damaged ancillary PNG chunk
(a text note's checksum) that OpenCV decodes through with a warning: without its own reading of the header, such a
file's size was learnt only after OpenCV had decoded it, a 2.6 MB PNG of 30000 x 30000 pixels taking 6 GB.
"""

from __future__ import annotations

from collections.abc import Iterator

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers: 0xC0 to 0xCF but the Huffman table (C4), the reserved JPG (C8) and the arithmetic
# coding conditioning (CC) ones.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_START_OF_SCAN = 0xDA
_JPEG_WITHOUT_LENGTH = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) that a PNG's IHDR or a JPEG's frame header declares; None for other data, a header cut
    short, or a JPEG whose height is left to a later marker (0)."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data.startswith(b"\xff\xd8"):
        return _jpeg_frame_size(data)
    return None


def png_bit_depth(data: bytes) -> int | None:
    """The bits per sample a PNG's IHDR declares; None for other data."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 25:
        return data[24]
    return None


def jpeg_first_scan(data: bytes) -> int | None:
    """Where a JPEG's first scan marker starts, found by walking its header segments (a thumbnail inside an EXIF
    segment holds scans and an end of its own, so the bytes cannot be searched); None where the walk fails."""
    for marker, index in _jpeg_header_markers(data):
        if marker == _JPEG_START_OF_SCAN:
            return index
    return None


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """The first frame header's size, walking the marker segments that come before it."""
    for marker, index in _jpeg_header_markers(data):
        if marker in _JPEG_FRAMES:
            height, width = int.from_bytes(data[index + 5 : index + 7], "big"), data[index + 7 : index + 9]
            return (height, int.from_bytes(width, "big")) if height and len(width) == 2 else None
    return None


def _jpeg_header_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, position) of each marker segment from the start of the image up to its first scan, that scan's
    included; stops early where the bytes are not a marker."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return
        marker = data[index + 1]
        if marker == 0xFF:  # a fill byte before a marker
            index += 1
            continue
        yield marker, index
        if marker == _JPEG_START_OF_SCAN:
            return
        if marker in _JPEG_WITHOUT_LENGTH:
            index += 2
        else:
            index += 2 + int.from_bytes(data[index + 2 : index + 4], "big")
