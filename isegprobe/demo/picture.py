"""What the page shows: the image with the finished objects, the current mask and its clicks drawn in.

Drawn on the server, at the image's own resolution (the server shrinks large pictures before sending them), so the
page only displays a picture and maps mouse positions back to image pixels. The current mask and its clicks are
drawn by evaluation's `overlay`, so the demo and the `--vis-preds` pictures look alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from isegprobe.inference.clicker import Click
from isegprobe.inference.visuals import MASK_BGR, overlay

# Finished objects cycle through these (RGB), so that neighbours differ.
OBJECT_COLOURS = ((255, 160, 0), (180, 0, 255), (0, 200, 200), (255, 80, 160), (150, 220, 0), (255, 230, 0))


def compose(image: np.ndarray, instances: np.ndarray, mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """uint8 BGR [H, W, 3] from the RGB image: objects tinted by id, then the current mask tinted and outlined,
    then the clicks."""
    tinted = image.astype(np.float32)
    for index in np.unique(instances[instances > 0]):
        colour = np.array(OBJECT_COLOURS[(int(index) - 1) % len(OBJECT_COLOURS)], np.float32)
        region = instances == index
        tinted[region] = 0.55 * tinted[region] + 0.45 * colour
    picture = overlay(mask.astype(np.float32), clicks, tinted.round().astype(np.uint8))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(picture, contours, -1, MASK_BGR, max(1, round(min(image.shape[:2]) / 300)))
    return picture


def encode(picture: np.ndarray, extension: str = ".png") -> bytes:
    """A BGR (or single-channel) array -> file bytes in the format of `extension`."""
    ok, data = cv2.imencode(extension, picture)
    if not ok:
        raise ValueError(f"cannot encode a {picture.dtype} {picture.shape} picture as {extension}")
    return data.tobytes()
