"""An uploaded image's pixels, refused from its header when it declares more pixels than the limit (the same limit
as for dataset images: 40 MP unless `--max-pixels` or ISEGPROBE_MAX_PIXELS says otherwise).

A file of a megabyte can declare 20000 x 20000 pixels; decoding it takes minutes and gigabytes. The header says the
size before any pixel is decoded (Pillow reads only the header on open), so a file over the limit is refused there.
Only formats whose header both Pillow and OpenCV read are taken, and the decoded image must have the pixels its
header declared, so that the check and the decoder cannot disagree about a file.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image

from isegprobe.data.image_io import decode_bytes, max_pixels, require_complete
from isegprobe.errors import UserError

# Pillow's names of the formats read here (its JPEG reader also opens the multi-picture JPEGs phones save).
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM")


class TooManyPixels(UserError):
    """An upload declares more pixels than the pixel limit."""


def read_upload(data: bytes, name: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB from an uploaded file's bytes; `name` is the file's name for messages."""
    require_complete(data, name, "image")
    width, height = declared_size(data, name)
    if width * height > max_pixels():
        raise TooManyPixels(_over_limit(name, f"{width}x{height} pixels ({width * height / 1e6:.1f} MP)"))
    image = decode_bytes(data, cv2.IMREAD_COLOR, name, "image")
    decoded_height, decoded_width = image.shape[:2]
    if decoded_width * decoded_height != width * height:
        raise UserError(
            f"{name}: its header declares {width}x{height} pixels, but it decodes to {decoded_width}x{decoded_height}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def declared_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) as the file's header declares them, read without decoding any pixel."""
    bomb = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                return image.size
    except Image.DecompressionBombError:
        raise TooManyPixels(_over_limit(name, f"its header declares more than {bomb / 1e6:.0f} MP")) from None
    except Exception:  # Pillow's readers raise many types on a damaged header; the user needs the file name
        raise UserError(
            f"{name}: cannot read this image (corrupt, or not a PNG, JPEG, BMP, TIFF, WebP or PPM file)"
        ) from None


def _over_limit(name: str, declared: str) -> str:
    return f"{name}: {declared}, more than the {max_pixels() / 1e6:g} MP an upload may have (--max-pixels)"
