"""From a dataset sample to the square working-size views the backbone sees.

A view is a crop of the original image (the whole image, or a zoomed-in crop for scale jitter), optionally
flipped, resized to the working size. `stretch` resizes the crop to size x size like the seed and RITM's fixed
working size; `letterbox` keeps the aspect ratio and pads, recording the valid box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

RESIZE_RULES = ("stretch", "letterbox")
_SCALE_VIEW = re.compile(r"^scale(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class ViewSpec:
    """`identity`, `hflip`, or `scale<f>` (a crop 1/f of the image's side, placed by a per-item seed)."""

    name: str
    flip: bool = False
    zoom: float = 1.0


@dataclass
class View:
    image: np.ndarray  # uint8 [S, S, 3]
    labels: np.ndarray  # uint16 [S, S]
    ignore: np.ndarray  # bool [S, S]
    valid_box: tuple[int, int, int, int]  # y0, x0, y1, x1 of real pixels in the working-size square
    crop_box: tuple[int, int, int, int]  # y0, x0, y1, x1 of the crop in original image pixels


def parse_views(text: str) -> list[ViewSpec]:
    """`identity,hflip,scale1.5` -> view specs; the first view must be `identity` (evaluation reads it)."""
    specs = []
    for name in [part.strip() for part in text.split(",") if part.strip()]:
        match = _SCALE_VIEW.match(name)
        if name == "identity":
            specs.append(ViewSpec(name))
        elif name == "hflip":
            specs.append(ViewSpec(name, flip=True))
        elif match and float(match.group(1)) > 1.0:
            specs.append(ViewSpec(name, zoom=float(match.group(1))))
        else:
            raise UserError(
                f"--views: unknown view {name!r}; expected identity, hflip or scale<f> with f > 1 (scale1.5)"
            )
    if not specs or specs[0].name != "identity":
        raise UserError(f"--views {text!r}: the first view must be identity")
    if len({spec.name for spec in specs}) != len(specs):
        raise UserError(f"--views {text!r}: a view is listed twice")
    return specs


def _crop_box(height: int, width: int, spec: ViewSpec, seed: int) -> tuple[int, int, int, int]:
    if spec.zoom == 1.0:
        return 0, 0, height, width
    crop_h, crop_w = max(1, round(height / spec.zoom)), max(1, round(width / spec.zoom))
    rng = np.random.default_rng(seed)
    y0 = int(rng.integers(0, height - crop_h + 1))
    x0 = int(rng.integers(0, width - crop_w + 1))
    return y0, x0, y0 + crop_h, x0 + crop_w


def resize_into_square(
    array: np.ndarray, size: int, rule: str, interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The working-size square of an image (or mask) by `rule` (stretch or letterbox), and where the image lies in
    it (y0, x0, y1, x1): the one resize that extraction, online evaluation and the demo share."""
    height, width = array.shape[:2]
    if rule == "stretch":
        return cv2.resize(array, (size, size), interpolation=interpolation), (0, 0, size, size)
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size) + array.shape[2:], array.dtype)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas, (y0, x0, y0 + new_h, x0 + new_w)


def make_view(sample: Sample, spec: ViewSpec, size: int, rule: str, seed: int) -> View:
    """One view of `sample`; `seed` places the scale-jitter crop so that re-extraction gives the same crop."""
    if rule not in RESIZE_RULES:
        raise UserError(f"--resize: expected one of {RESIZE_RULES}, got {rule!r}")
    y0, x0, y1, x1 = _crop_box(*sample.image.shape[:2], spec, seed)
    image = sample.image[y0:y1, x0:x1]
    labels = sample.labels[y0:y1, x0:x1]
    ignore = sample.ignore[y0:y1, x0:x1].astype(np.uint8)
    image, valid_box = resize_into_square(np.ascontiguousarray(image), size, rule, cv2.INTER_LINEAR)
    labels, _ = resize_into_square(np.ascontiguousarray(labels), size, rule, cv2.INTER_NEAREST)
    ignore, _ = resize_into_square(np.ascontiguousarray(ignore), size, rule, cv2.INTER_NEAREST)
    if spec.flip:
        # Flipping after the resize makes the flipped view the exact mirror of the unflipped one, so flip
        # averaging at evaluation lines predictions up pixel for pixel.
        image, labels, ignore = (np.ascontiguousarray(a[:, ::-1]) for a in (image, labels, ignore))
        valid_box = (valid_box[0], size - valid_box[3], valid_box[2], size - valid_box[1])
    return View(image, labels, ignore.astype(bool), valid_box, (y0, x0, y1, x1))


def normalize_images(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W], scaled to [0, 1] then standardized as the backbone was trained."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t
