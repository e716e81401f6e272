"""What the page shows: the image with the finished objects, the current mask and its clicks drawn in.

Drawn on the server, at the image's own resolution (the server shrinks large pictures before sending them), so the
page only displays a picture and maps mouse positions back to image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from isegprobe.inference.clicker import Click

CURRENT_RGB = (30, 144, 255)
POSITIVE_RGB, NEGATIVE_RGB = (0, 200, 0), (230, 0, 0)
# Finished objects cycle through these (RGB), so that neighbours differ.
OBJECT_COLOURS = ((255, 160, 0), (180, 0, 255), (0, 200, 200), (255, 80, 160), (150, 220, 0), (255, 230, 0))


def compose(image: np.ndarray, instances: np.ndarray, mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """uint8 RGB [H, W, 3]: objects tinted by id, the current mask tinted with its outline, then the clicks."""
    picture = image.astype(np.float32)
    for index in np.unique(instances[instances > 0]):
        colour = np.array(OBJECT_COLOURS[(int(index) - 1) % len(OBJECT_COLOURS)], np.float32)
        region = instances == index
        picture[region] = 0.55 * picture[region] + 0.45 * colour
    picture[mask] = 0.5 * picture[mask] + 0.5 * np.array(CURRENT_RGB, np.float32)
    picture = picture.round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(picture, contours, -1, CURRENT_RGB, max(1, round(min(image.shape[:2]) / 300)))
    radius = max(3, round(min(image.shape[:2]) / 80))
    for click in clicks:
        colour = POSITIVE_RGB if click.is_positive else NEGATIVE_RGB
        cv2.circle(picture, (click.x, click.y), radius, colour, -1, cv2.LINE_AA)
        cv2.circle(picture, (click.x, click.y), radius, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def encode(picture: np.ndarray, extension: str = ".png") -> bytes:
    """RGB (or single-channel) array -> file bytes in the format of `extension`."""
    array = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR) if picture.ndim == 3 else picture
    ok, data = cv2.imencode(extension, array)
    if not ok:
        raise ValueError(f"cannot encode a {picture.dtype} {picture.shape} picture as {extension}")
    return data.tobytes()
