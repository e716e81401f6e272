"""From clicks on the original image to a probability map at the original resolution, for a batch of objects.

The probe works at the store's working size: clicks are mapped into it, and its probabilities are mapped back
(the letterbox padding cropped first). With `flip`, the mirrored cached view is predicted too and the two
probability maps averaged, RITM's horizontal-flip test-time augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from isegprobe.data.preprocess import normalize_images
from isegprobe.inference.clicker import Click
from isegprobe.model.probe import ISProbe


@dataclass
class WorkingView:
    """One object's inputs at the working size: cached features (None when computed online) and the image."""

    features: Tensor | None  # [C, h, w]
    image: Tensor  # uint8 [3, S, S]
    valid_box: tuple[int, int, int, int]
    original_size: tuple[int, int]


def to_working(click: Click, view: WorkingView) -> tuple[float, float, int]:
    """Map a click at original resolution to the working-size image (pixel centres kept aligned)."""
    y0, x0, y1, x1 = view.valid_box
    height, width = view.original_size
    y = y0 + (click.y + 0.5) * (y1 - y0) / height - 0.5
    x = x0 + (click.x + 0.5) * (x1 - x0) / width - 0.5
    return y, x, int(click.is_positive)


def to_original(probs: Tensor, view: WorkingView) -> Tensor:
    """[S, S] working-size probabilities -> [H, W] at the original resolution."""
    y0, x0, y1, x1 = view.valid_box
    valid = probs[y0:y1, x0:x1][None, None]
    return F.interpolate(valid, size=view.original_size, mode="bilinear", align_corners=False)[0, 0]


class Predictor:
    """Runs a probe on batches of objects; `featurizer` (optional) computes features online from the images."""

    def __init__(
        self,
        probe: ISProbe,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        featurizer: torch.nn.Module | None = None,
    ) -> None:
        self.probe = probe.to(device).eval()
        self.mean, self.std, self.device = tuple(mean), tuple(std), device
        self.featurizer = featurizer.to(device) if featurizer is not None else None

    @torch.inference_mode()
    def probabilities(
        self, views: Sequence[WorkingView], clicks: Sequence[Sequence[Click]], prev_probs: Tensor
    ) -> Tensor:
        """Working-size probabilities [B, S, S] for each view given its clicks and previous probabilities."""
        images = normalize_images(torch.stack([view.image for view in views]).to(self.device), self.mean, self.std)
        features = self._features(views, images)
        click_rows = [
            [to_working(click, view) for click in view_clicks] for view, view_clicks in zip(views, clicks, strict=True)
        ]
        logits = self.probe(features, images, click_rows, prev_probs[:, None])
        return torch.sigmoid(logits[:, 0])

    def _features(self, views: Sequence[WorkingView], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if self.featurizer is not None:
            return self.featurizer(images)
        return torch.stack([view.features for view in views]).to(self.device).float()


def mirror_click(click: Click, width: int) -> Click:
    """The same click on the horizontally flipped original image (the hflip view's own geometry maps it in)."""
    return Click(click.y, width - 1 - click.x, click.is_positive)
