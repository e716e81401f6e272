"""Reading images and masks from disk with errors that name the file.

OpenCV decodes a truncated JPEG (an interrupted download or copy) without an error: it fills the missing part with
grey and prints a warning nobody reads, and the benchmark would then be run on that grey. So the file's bytes are
checked for the end of the image before decoding: a JPEG needs an end-of-image marker after its last scan, a PNG
its whole IEND chunk.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from isegprobe.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG", b"IEND"


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB; OpenCV reads BGR and returns None (no exception) on unreadable files."""
    image = decode_file(path, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_gray(path: Path) -> np.ndarray:
    """uint8 [H, W]; for masks stored as 8-bit (or colour, taking the first channel) images."""
    mask = decode_file(path, cv2.IMREAD_UNCHANGED, "mask")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise UserError(f"{path}: expected an 8-bit mask, got {mask.dtype}")
    return mask


def decode_file(path: Path, flags: int, kind: str) -> np.ndarray:
    """The decoded array of an image file (`cv2.imread` flags); a missing, truncated or undecodable file is a
    UserError naming it, `kind` ("image", "mask") saying what it was read as."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read this {kind} ({error.strerror or error})") from None
    return decode_bytes(data, flags, str(path), kind)


def decode_bytes(data: bytes, flags: int, name: str, kind: str) -> np.ndarray:
    """`decode_file` for bytes already in memory (an upload), `name` saying where they came from."""
    require_complete(data, name, kind)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if decoded is None:
        raise UserError(f"{name}: cannot read this {kind} (corrupt or not an image)")
    return decoded


def require_complete(data: bytes, name: str, kind: str) -> None:
    """A truncated JPEG or PNG is a UserError naming it, before anything else reads the file."""
    if is_truncated(data):
        raise UserError(f"{name}: this {kind} file is truncated (it stops before the end of the image)")


def is_truncated(data: bytes) -> bool:
    """True for a JPEG without an end-of-image marker after its last scan, or a PNG without its IEND chunk. Data
    after the end (some cameras append their own) is allowed."""
    if data.startswith(_JPEG_START):
        return data.rfind(_JPEG_END) < data.rfind(_JPEG_SCAN)
    if data.startswith(_PNG_START):
        end = data.rfind(_PNG_END)
        return end == -1 or len(data) < end + len(_PNG_END) + 4  # the IEND chunk ends with its 4-byte CRC
    return False


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The image in `folder` named `stem` with any usual suffix, case-insensitive (GrabCut mixes .jpg and .JPG)."""
    for candidate in sorted(folder.glob(f"{stem}.*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return candidate
    return None
