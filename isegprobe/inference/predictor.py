"""From clicks on an image to probabilities at the working size, for a batch of objects, and back.

The probe works at the store's working size: clicks are mapped into a view (the whole image, or a zoom-in crop), and
its probabilities are mapped back (the letterbox padding cropped first). Both mappings keep pixel centres aligned, so
they are exact inverses. With a mirrored view, the mirrored image is predicted too and the two logit maps averaged
before the sigmoid, as RITM's horizontal-flip test-time augmentation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import backbone_autocast
from isegprobe.inference.clicker import Click
from isegprobe.model.probe import ISProbe


@dataclass
class WorkingView:
    """A region of the image at the working size: cached features (None: the backbone computes them) and pixels.

    `original_size` is the size of the region in original pixels (the whole image, or a zoom-in crop); `valid_box`
    (y0, x0, y1, x1) is where the region lies in the working-size square.
    """

    features: Tensor | None  # [C, h, w]
    image: Tensor  # uint8 [3, S, S]
    valid_box: tuple[int, int, int, int]
    original_size: tuple[int, int]


@dataclass
class PredictionInput:
    """One object's inputs to one prediction: clicks in `view.original_size` pixels, previous probabilities [S, S]."""

    view: WorkingView
    flip_view: WorkingView | None
    clicks: Sequence[Click]
    prev_probs: Tensor


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


def mirror_click(click: Click, width: int) -> Click:
    """The same click on the horizontally flipped region (the mirrored view's own geometry maps it in)."""
    return Click(click.y, width - 1 - click.x, click.is_positive)


def mirror_view(view: WorkingView) -> WorkingView:
    """The view flipped left to right; the backbone computes its features, since features do not flip with pixels."""
    y0, x0, y1, x1 = view.valid_box
    size = view.image.shape[-1]
    return WorkingView(None, view.image.flip(-1), (y0, size - x1, y1, size - x0), view.original_size)


class Predictor:
    """Runs a probe on batches of objects; `featurizer` computes the features of views that have none cached."""

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
    def probabilities(self, inputs: Sequence[PredictionInput]) -> Tensor:
        """Working-size probabilities [B, S, S]; with flip views, the average of both logit maps through a sigmoid."""
        prev = torch.stack([item.prev_probs for item in inputs]).to(self.device)
        clicks = [item.clicks for item in inputs]
        logits = self._logits([item.view for item in inputs], clicks, prev)
        if inputs[0].flip_view is not None:
            mirrored = [[mirror_click(click, item.view.original_size[1]) for click in item.clicks] for item in inputs]
            flipped = self._logits([item.flip_view for item in inputs], mirrored, prev.flip(-1))
            logits = 0.5 * (logits + flipped.flip(-1))
        return torch.sigmoid(logits)

    @torch.inference_mode()
    def view_features(self, view: WorkingView) -> Tensor | None:
        """The view's low-res features [C, h, w], as a store would hold them, to compute once and reuse at every
        click; None for early-fusion probes, whose backbone must run with the clicks."""
        if self.probe.needs_featurizer:
            return None
        return self._backbone(self._normalized([view]))[0]

    @torch.inference_mode()
    def feature_maps(self, view: WorkingView) -> tuple[Tensor, Tensor]:
        """The view's low-resolution features [C, h, w] and the probe's upsampler output [C, H', W'], without clicks."""
        image = self._normalized([view])
        features = self._features([view], image)
        if features is None:
            features = self._backbone(image)
        return features[0], self.probe.upsampler(features, image)[0]

    def _logits(self, views: Sequence[WorkingView], clicks: Sequence[Sequence[Click]], prev: Tensor) -> Tensor:
        images = self._normalized(views)
        click_rows = [
            [to_working(click, view) for click in view_clicks] for view, view_clicks in zip(views, clicks, strict=True)
        ]
        return self.probe(self._features(views, images), images, click_rows, prev[:, None])[:, 0]

    def _normalized(self, views: Sequence[WorkingView]) -> Tensor:
        return normalize_images(torch.stack([view.image for view in views]).to(self.device), self.mean, self.std)

    def _features(self, views: Sequence[WorkingView], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if all(view.features is not None for view in views):
            return torch.stack([view.features for view in views]).to(self.device).float()
        return self._backbone(images)

    def _backbone(self, images: Tensor) -> Tensor:
        """Features as the store would hold them: the extraction's autocast, rounded to float16."""
        featurizer = self.featurizer if self.featurizer is not None else self.probe.featurizer
        if featurizer is None:
            raise ValueError("these views have no cached features and no featurizer was given to compute them")
        with backbone_autocast(images.device):
            features = featurizer(images)
        return features.to(torch.float16).float()
