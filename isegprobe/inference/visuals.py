"""Prediction overlays with the clicks drawn, for looking at what a probe does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from isegprobe.inference.evaluation import ObjectResult

POSITIVE_BGR, NEGATIVE_BGR, MASK_BGR = (0, 200, 0), (0, 0, 230), (255, 140, 0)


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


def save_overlay(folder: Path, result: ObjectResult) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.id}_{len(result.clicks)}clicks_iou{result.ious[-1]:.3f}.png"
    cv2.imwrite(str(path), overlay(result.final_probs, result.clicks, result.image))
    return path
