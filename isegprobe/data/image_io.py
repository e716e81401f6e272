"""Reading images and masks from disk with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from isegprobe.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB; OpenCV reads BGR and returns None (no exception) on unreadable files."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: cannot read this image (missing, corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_gray(path: Path) -> np.ndarray:
    """uint8 [H, W]; for masks stored as 8-bit (or colour, taking the first channel) images."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UserError(f"{path}: cannot read this mask (missing, corrupt or not an image)")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise UserError(f"{path}: expected an 8-bit mask, got {mask.dtype}")
    return mask


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The image in `folder` named `stem` with any usual suffix, case-insensitive (GrabCut mixes .jpg and .JPG)."""
    for candidate in sorted(folder.glob(f"{stem}.*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return candidate
    return None
