"""On-the-fly augmentations of cached views: the rest of iSegProbe's (RITM's) SBD training augmentations.

The cached crop views stand for its UniformRandomResize + PadIfNeeded + RandomCrop, and hflip / vflip / quarter
turns for its Flip and RandomRotate90. What is left runs here, per sample, drawn from the sample's own random
stream (so runs stay deterministic):

- photometric: RandomBrightnessContrast (brightness and contrast in [-0.25, 0.25] and [-0.15, 0.4], p 0.75) and
  RGBShift (each channel shifted by up to +-10 levels, p 0.75), with albumentations' formulas on uint8 pixels;
- shift_rotate: ShiftScaleRotate with no scaling (rotation within +-3 degrees, shift within 3 % of the side, p 0.75,
  zeros where the image moved away), applied to the image, the object labels and the region that counts.

What stays different, and why: with cached features the featurizer saw the un-jittered pixels (only the upsampler's
guidance image and the online featurizer of early fusion see the jitter), so shift_rotate is refused there, since
features cannot follow a rotation exactly. And the research code rotates the resized image before cropping, here
the cached crop is rotated, so the zeros it brings in lie inside the crop's edge.
"""

from __future__ import annotations

import cv2
import numpy as np

PROBABILITY = 0.75
BRIGHTNESS = (-0.25, 0.25)
CONTRAST = (-0.15, 0.4)
RGB_SHIFT = 10.0
ROTATION_DEGREES = 3.0
SHIFT_FRACTION = 0.03


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8: brightness/contrast, then an RGB shift, each with probability 0.75."""
    out = image
    if rng.random() < PROBABILITY:
        alpha = 1.0 + rng.uniform(*CONTRAST)
        beta = rng.uniform(*BRIGHTNESS) * 255.0  # brightness relative to the maximum value, as albumentations
        out = _through_table(out, _levels() * np.float32(alpha) + np.float32(beta))
    if rng.random() < PROBABILITY:
        shifts = rng.uniform(-RGB_SHIFT, RGB_SHIFT, size=3)
        out = np.stack([_through_table(out[..., c], _levels() + np.float32(shifts[c])) for c in range(3)], axis=-1)
    return out


def _levels() -> np.ndarray:
    """The 256 grey levels as float32, the type albumentations (0.5.2, the research code's) builds its lookup
    tables in: each level's new value rounds as there, a grey level apart from a float64 table now and then."""
    return np.arange(256, dtype=np.float32)


def _through_table(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.clip(table, 0, 255).astype(np.uint8)[values]


def shift_rotate(
    image: np.ndarray, labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate and shift image, labels and the pixels that count (loss and clicks) together, with probability 0.75.

    Pixels that come in from outside are background and count, as the research code's zero-filled border does.
    """
    if rng.random() >= PROBABILITY:
        return image, labels, counts
    height, width = labels.shape
    angle = rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES)
    shift_x, shift_y = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION, size=2)
    # About (width / 2, height / 2), as albumentations 0.5.2 (the research code's pin) rotates.
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[0, 2] += shift_x * width
    matrix[1, 2] += shift_y * height

    def warp(array: np.ndarray, interpolation: int, fill: int) -> np.ndarray:
        return cv2.warpAffine(
            array, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        )

    image = warp(image, cv2.INTER_LINEAR, 0)
    labels = warp(labels.astype(np.float32), cv2.INTER_NEAREST, 0).astype(labels.dtype)
    counts = warp(counts.astype(np.uint8), cv2.INTER_NEAREST, 1).astype(bool)
    return image, labels, counts
