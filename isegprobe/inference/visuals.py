"""Prediction overlays with the clicks drawn, for looking at what a probe does: how the mask grows click by click."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.errors import DISK_FULL, NOT_A_FOLDER, NOT_ALLOWED, UserError
from isegprobe.inference.evaluation import ObjectResult

POSITIVE_BGR, NEGATIVE_BGR, MASK_BGR = (0, 200, 0), (0, 0, 230), (255, 140, 0)
STRIP_CLICKS = (1, 3, 5, 10)
# The longest picture file name made from an object id: file systems take 255 bytes, and the temporary file that
# `atomic_write_bytes` writes first adds up to 22 to it.
MAX_NAME_BYTES = 200
# What `save_overlay` adds to an object id: the clicks made and the final IoU.
OVERLAY_ENDING = re.compile(r"_\d+clicks_iou\d+\.\d{3}\.png$")


def overlay(mask_probs: np.ndarray, clicks, image_rgb: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 picture: the image (or grey) tinted where the mask is, with green/red click dots."""
    height, width = mask_probs.shape
    base = (
        np.full((height, width, 3), 96, np.uint8) if image_rgb is None else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    )
    tinted = base.copy()
    tinted[mask_probs > 0.5] = (0.5 * base[mask_probs > 0.5] + 0.5 * np.array(MASK_BGR)).astype(np.uint8)
    radius = max(3, round(min(height, width) / 80))
    for click in clicks:
        colour = POSITIVE_BGR if click.is_positive else NEGATIVE_BGR
        cv2.circle(tinted, (click.x, click.y), radius, colour, -1)
        cv2.circle(tinted, (click.x, click.y), radius, (255, 255, 255), 1)
    return tinted


def strip_clicks(max_clicks: int) -> tuple[int, ...]:
    """After which numbers of clicks a picture shows the mask: 1, 3, 5, 10 within the budget, and the last."""
    return tuple(sorted({count for count in STRIP_CLICKS if count <= max_clicks} | {max_clicks}))


def save_overlay(folder: Path, result: ObjectResult) -> Path:
    """`strip_picture(result)` as FOLDER/<object>_<clicks>clicks_iou<final IoU>.png."""
    path = folder / file_name(result.id, f"_{len(result.clicks)}clicks_iou{result.ious[-1]:.3f}.png")
    write_picture(path, strip_picture(result))
    return path


def has_overlay(folder: Path, object_id: str) -> bool:
    """Whether `folder` holds the picture `save_overlay` makes of `object_id` (whatever its clicks and IoU)."""
    if not folder.is_dir():
        return False
    for path in folder.iterdir():
        ending = OVERLAY_ENDING.search(path.name)
        if ending is not None and file_name(object_id, ending.group()) == path.name:
            return True
    return False


def file_name(stem: str, ending: str) -> str:
    """`stem + ending`, with any path separator in `stem` written as `_` (an object id comes from a dataset's own
    files, and one with `../` in it put its picture outside the output folder); where that is too long for a file
    name, the start of `stem`, then a hash of all of it (so that two long object ids still name two files), then
    `ending`."""
    stem = stem.replace("/", "_").replace("\\", "_")
    if len(f"{stem}{ending}".encode()) <= MAX_NAME_BYTES:
        return f"{stem}{ending}"
    digest = hashlib.sha256(stem.encode()).hexdigest()[:16]
    room = MAX_NAME_BYTES - len(f"-{digest}{ending}".encode())
    return f"{stem.encode()[:room].decode(errors='ignore')}-{digest}{ending}"


def write_picture(path: Path, picture: np.ndarray) -> None:
    """`picture` (BGR) encoded as `path`'s suffix says and written atomically, its folder made first. cv2.imwrite
    answers a failed write with False alone; here a failure is an error that names the path: a full disk or a
    read-only place as an OSError (the commands explain those), any other as a UserError."""
    encoded, data = cv2.imencode(path.suffix, picture)
    if not encoded:
        raise UserError(f"{path}: cannot encode the picture as {path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data.tobytes())
    except OSError as error:
        if error.errno in DISK_FULL | NOT_ALLOWED | NOT_A_FOLDER:
            raise
        raise UserError(f"{path}: cannot write ({error.strerror})") from None


def strip_picture(result: ObjectResult) -> np.ndarray:
    """BGR: side by side, the mask after each number of clicks in `result.masks` (the final mask alone without
    them), each with the clicks made so far and its IoU above it."""
    stages = sorted(result.masks.items()) or [(len(result.clicks), result.final_probs > 0.5)]
    panels = [
        _captioned(
            overlay(mask.astype(np.float32), result.clicks[:count], result.image),
            f"{count} click{'s' if count > 1 else ''}: IoU {result.ious[count - 1]:.3f}",
        )
        for count, mask in stages
    ]
    return np.concatenate(panels, axis=1)


def _captioned(picture: np.ndarray, caption: str) -> np.ndarray:
    """The picture under a white band with the caption, and a white gap on its right to part it from the next."""
    height, width = picture.shape[:2]
    scale = max(0.4, min(height, width) / 500)
    band = int(30 * scale)
    canvas = np.full((height + band, width + max(4, int(8 * scale)), 3), 255, np.uint8)
    canvas[band:, :width] = picture
    cv2.putText(canvas, caption, (4, int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
