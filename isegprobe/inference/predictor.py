"""From clicks on an image to probabilities at the working size, for a batch of objects, and back.

The probe works at the store's working size: clicks are mapped into a view (the whole image, or a zoom-in crop), and
its probabilities are mapped back (the letterbox padding cropped first). By default both mappings keep pixel centres
aligned, so they are exact inverses. A view made as RITM makes its zoom-in crops (`align_corners`) maps as RITM
does instead: pixels resized with the corner pixels aligned, clicks scaled by the size ratio. With a mirrored view,
the mirrored image is predicted too, its clicks mirrored in the working square (x -> S - 1 - x), and the two logit
maps averaged before the sigmoid, as RITM's horizontal-flip test-time augmentation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import featurizer_autocast
from isegprobe.inference.clicker import Click
from isegprobe.model.probe import ISProbe


@dataclass
class WorkingView:
    """A region of the image at the working size: cached features (None: the featurizer computes them) and pixels.

    `original_size` is the size of the region in original pixels (the whole image, or a zoom-in crop); `valid_box`
    (y0, x0, y1, x1) is where the region lies in the working-size square.
    """

    features: Tensor | None  # [C, h, w]
    image: Tensor  # uint8 [3, S, S], or float in [0, 1] for a view resized without rounding
    valid_box: tuple[int, int, int, int]
    original_size: tuple[int, int]
    align_corners: bool = False


@dataclass
class PredictionInput:
    """One object's inputs to one prediction: clicks in `view.original_size` pixels, previous probabilities [S, S]."""

    view: WorkingView
    flip_view: WorkingView | None
    clicks: Sequence[Click]
    prev_probs: Tensor


def to_working(click: Click, view: WorkingView) -> tuple[float, float, int]:
    """Map a click at original resolution to the working-size image: pixel centres kept aligned, or, in a view with
    `align_corners`, scaled by the size ratio as RITM's zoom-in scales its clicks."""
    y0, x0, y1, x1 = view.valid_box
    height, width = view.original_size
    if view.align_corners:
        return y0 + click.y * (y1 - y0) / height, x0 + click.x * (x1 - x0) / width, int(click.is_positive)
    y = y0 + (click.y + 0.5) * (y1 - y0) / height - 0.5
    x = x0 + (click.x + 0.5) * (x1 - x0) / width - 0.5
    return y, x, int(click.is_positive)


def to_original(probs: Tensor, view: WorkingView) -> Tensor:
    """[S, S] working-size probabilities -> [H, W] at the original resolution."""
    y0, x0, y1, x1 = view.valid_box
    valid = probs[y0:y1, x0:x1][None, None]
    return F.interpolate(valid, size=view.original_size, mode="bilinear", align_corners=view.align_corners)[0, 0]


def mirror_rows(rows: Sequence[tuple[float, float, int]], size: int) -> list[tuple[float, float, int]]:
    """Working-size clicks on the horizontally flipped square (RITM's `AddHorizontalFlip`: x -> S - 1 - x)."""
    return [(y, size - 1 - x, positive) for y, x, positive in rows]


def mirror_view(view: WorkingView) -> WorkingView:
    """The view flipped left to right; the featurizer computes its features, since features do not flip with pixels."""
    y0, x0, y1, x1 = view.valid_box
    size = view.image.shape[-1]
    return WorkingView(
        None, view.image.flip(-1), (y0, size - x1, y1, size - x0), view.original_size, view.align_corners
    )


class Predictor:
    """Runs a probe on batches of objects; `featurizer` computes the features of views that have none cached.

    `exact` runs everything as the iSegProbe research code evaluates: in float32 (no autocast on CUDA, online
    features not rounded to the store's float16), with its rounding (`research_precision`: MaskCLIP in float16 on
    CUDA, attention written out where its model copies write it); otherwise features computed online are rounded as
    a store holds them, and the probe computes as it was trained (`model.research_precision`).

    With whole-image framing every click of a batch predicts the same views (and their mirrors), so the normalized
    images and stacked cached features of the last two lists of views are kept and made once per batch, not once
    per click. Features the featurizer computes are not kept: it runs at every click, as online evaluation does.
    """

    def __init__(
        self,
        probe: ISProbe,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        featurizer: torch.nn.Module | None = None,
        exact: bool = False,
    ) -> None:
        self.probe = probe.to(device).eval()
        self.probe.mixed_precision = not exact
        self.mean, self.std, self.device, self.exact = tuple(mean), tuple(std), device, exact
        self.featurizer = featurizer.to(device) if featurizer is not None else None
        research_precision = exact or probe.config.research_precision
        self.probe.use_research_precision(research_precision)
        if self.featurizer is not None:
            self.featurizer.research_precision = research_precision
            self.probe.read_features_as(self.featurizer)
        self._prepared: list[tuple[tuple[WorkingView, ...], Tensor, Tensor | None]] = []
        self._prev_buffer: Tensor | None = None

    @torch.inference_mode()
    def probabilities(self, inputs: Sequence[PredictionInput]) -> Tensor:
        """Working-size probabilities [B, S, S]; with flip views, the average of both logit maps through a sigmoid."""
        return self.logits(inputs).sigmoid_()

    @torch.inference_mode()
    def logits(self, inputs: Sequence[PredictionInput]) -> Tensor:
        """Working-size logits [B, S, S]; with flip views, the average of both logit maps."""
        prev = self._stacked_prev([item.prev_probs for item in inputs])
        views = [item.view for item in inputs]
        rows = [[to_working(click, item.view) for click in item.clicks] for item in inputs]
        if inputs[0].flip_view is None:
            return self._logits(views, rows, prev)
        size = views[0].image.shape[-1]
        mirrored = [mirror_rows(view_rows, size) for view_rows in rows]
        flip_views = [item.flip_view for item in inputs]
        if self.exact:
            # One forward for the views and their mirrors, as RITM's AddHorizontalFlip batches them: on a CPU a
            # batch of one rounds otherwise than a batch of two in the featurizer's and the head's kernels.
            both = self._logits([*views, *flip_views], [*rows, *mirrored], torch.cat([prev, prev.flip(-1)]))
            logits, flipped = both[: len(views)], both[len(views) :]
        else:
            logits = self._logits(views, rows, prev)
            flipped = self._logits(flip_views, mirrored, prev.flip(-1))
        return 0.5 * (logits + flipped.flip(-1))

    @torch.inference_mode()
    def view_features(self, view: WorkingView) -> Tensor | None:
        """The view's low-res features [C, h, w], as a store would hold them, to compute once and reuse at every
        click; None for early-fusion probes, whose featurizer must run with the clicks."""
        if self.probe.needs_featurizer:
            return None
        return self._run_featurizer(self._normalized([view]))[0]

    @torch.inference_mode()
    def feature_maps(self, view: WorkingView) -> tuple[Tensor, Tensor]:
        """The view's low-resolution features [C, h, w] and the probe's upsampler output [C, H', W'], without clicks."""
        image = self._normalized([view])
        features = self._features([view], image)
        if features is None:
            features = self._run_featurizer(image)
        return features[0], self.probe.upsampler(features, image)[0]

    def _logits(
        self, views: Sequence[WorkingView], click_rows: Sequence[Sequence[tuple[float, float, int]]], prev: Tensor
    ) -> Tensor:
        """Logits [B, S, S] of the views, with clicks already in working-size pixels."""
        images, cached = self._prepare(views)
        features = cached if cached is not None else self._features(views, images)
        return self.probe(features, images, click_rows, prev[:, None])[:, 0]

    def _stacked_prev(self, prev_probs: Sequence[Tensor]) -> Tensor:
        """The previous probabilities [B, S, S] on the device, in a buffer kept between calls (they are read only
        within one)."""
        self._prev_buffer = _reusable(self._prev_buffer, (len(prev_probs), *prev_probs[0].shape), self.device)
        return torch.stack([probs.to(self.device) for probs in prev_probs], out=self._prev_buffer)

    def _prepare(self, views: Sequence[WorkingView]) -> tuple[Tensor, Tensor | None]:
        """The views' normalized images and, where all of them hold cached features, those stacked: kept for the
        last two lists of views (the same objects, not equal ones). A new list is written into the buffers of the
        one it replaces."""
        for kept_views, images, cached in self._prepared:
            if len(kept_views) == len(views) and all(a is b for a, b in zip(kept_views, views, strict=True)):
                return images, cached
        spare_images, spare_cached = self._prepared[1][1:] if len(self._prepared) == 2 else (None, None)
        images = self._normalized(views, spare_images)
        cached = None
        if not self.probe.needs_featurizer and all(view.features is not None for view in views):
            cached = self._stacked_features(views, spare_cached)
        self._prepared = [(tuple(views), images, cached), *self._prepared[:1]]
        return images, cached

    def _normalized(self, views: Sequence[WorkingView], buffer: Tensor | None = None) -> Tensor:
        images = _reusable(buffer, (len(views), *views[0].image.shape), self.device)
        for index, view in enumerate(views):
            normalize_images(view.image[None].to(self.device), self.mean, self.std, out=images[index : index + 1])
        return images

    def _features(self, views: Sequence[WorkingView], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if all(view.features is not None for view in views):
            return self._stacked_features(views)
        return self._run_featurizer(images)

    def _stacked_features(self, views: Sequence[WorkingView], buffer: Tensor | None = None) -> Tensor:
        features = _reusable(buffer, (len(views), *views[0].features.shape), self.device)
        for index, view in enumerate(views):
            features[index].copy_(view.features)
        return features

    def _run_featurizer(self, images: Tensor) -> Tensor:
        """Features as the store would hold them: the extraction's autocast, rounded to float16."""
        featurizer = self.featurizer if self.featurizer is not None else self.probe.featurizer
        if featurizer is None:
            raise ValueError("these views have no cached features and no featurizer was given to compute them")
        if self.exact:
            return featurizer(images).float()
        with featurizer_autocast(images.device):
            features = featurizer(images)
        return features.to(torch.float16).float()


def _reusable(buffer: Tensor | None, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """`buffer` if it is a float32 tensor of this shape on this device, else a new one. Evaluation writes each
    click's and each batch's tensors into the last ones' buffers: on a CPU every fresh buffer costs its page faults
    again, more than the arithmetic that fills it."""
    device = torch.device(device)
    if buffer is not None and buffer.shape == shape and buffer.dtype == torch.float32:
        if buffer.device.type == device.type and device.index in (None, buffer.device.index):
            return buffer
    return torch.empty(shape, device=device)
