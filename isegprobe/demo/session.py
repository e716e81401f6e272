"""One person's demo session: an image, the clicks on the current object, and the objects finished so far.

The probe sees the image as evaluation does (the same working view, the same framings, whole image or RITM's
zoom-in), so what a person sees in the demo is what the NoC numbers measure. The featurizer runs once per image: its
features are kept with the working view and every click reuses them (early-fusion and zoom-in crops excepted, which
need the featurizer with each click). Undo replays the remaining clicks from an empty mask, which gives exactly the
masks the same clicks gave before, zoom-in boxes included.

Several probes can share the session (e.g. the same featurizer with a bilinear and with a LoftUp upsampler): each
click goes to all of them and each keeps its own working view and mask; the first probe's mask is the one that
`finish` keeps. An image read from a dataset keeps its ground truth: the object under the first positive click is
the one being segmented, and each probe's IoU is counted as evaluation counts it (the ignore region left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from isegprobe.data.preprocess import resize_into_square
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError
from isegprobe.inference.clicker import Click
from isegprobe.inference.evaluation import Framing, WholeImage
from isegprobe.inference.metrics import iou
from isegprobe.inference.predictor import Predictor, WorkingView
from isegprobe.inference.zoom_in import ZoomIn

MAX_OBJECTS = 65535  # instance ids are written as 16-bit PNG
# Clicks on one object: undo replays them all, holding every other request meanwhile (3000 clicks took 28 s). The
# benchmarks' protocols stop at 20.
MAX_CLICKS = 64


@dataclass
class DemoProbe:
    """A probe as the demo runs it: its predictor, its working size and resize rule, and a label for the page."""

    label: str
    predictor: Predictor
    size: int
    resize: str


@dataclass
class DemoImage:
    name: str
    pixels: np.ndarray  # uint8 [H, W, 3]
    views: list[WorkingView]  # one per probe, features included
    truth: Sample | None = None  # the dataset's sample, when the image came from one
    instances: np.ndarray = field(init=False)  # uint16 [H, W]: 0 background, k object k

    def __post_init__(self) -> None:
        self.instances = np.zeros(self.pixels.shape[:2], np.uint16)


class DemoSession:
    """Clicks in, one mask per probe out."""

    def __init__(self, probes: Sequence[DemoProbe], threshold: float = 0.5, zoom_in: bool = False) -> None:
        if not probes:
            raise ValueError("a demo session needs at least one probe")
        self.probes = list(probes)
        self.threshold, self.zoom_in = threshold, zoom_in
        self.image: DemoImage | None = None
        self.clicks: list[Click] = []
        self.all_probs: list[np.ndarray | None] = [None] * len(self.probes)
        self._framings: list[Framing] = []

    def open(self, name: str, pixels: np.ndarray, truth: Sample | None = None) -> None:
        """Start on a new image (uint8 [H, W, 3] RGB), with its dataset sample when it has ground truth; each
        probe's features are computed here, once."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise UserError(f"{name}: expected an 8-bit RGB image, got {pixels.dtype} {pixels.shape}")
        pixels = np.ascontiguousarray(pixels)
        views = []
        for probe in self.probes:
            working, valid_box = resize_into_square(pixels, probe.size, probe.resize)
            image = torch.from_numpy(working).permute(2, 0, 1).contiguous()
            view = WorkingView(None, image, valid_box, pixels.shape[:2])
            view.features = probe.predictor.view_features(view)
            views.append(view)
        self.image = DemoImage(name, pixels, views, truth)
        self.reset()

    def click(self, y: int, x: int, is_positive: bool) -> np.ndarray:
        """Add a click (original pixels) to the current object; returns the first probe's probabilities [H, W]."""
        image = self._require_image()
        height, width = image.pixels.shape[:2]
        if not (0 <= y < height and 0 <= x < width):
            raise UserError(f"click at x={x}, y={y} is outside the image, {width} wide and {height} high")
        if len(self.clicks) == MAX_CLICKS:
            raise UserError(f"{MAX_CLICKS} clicks on one object is the most the demo takes: finish it, or undo")
        self.clicks.append(Click(int(y), int(x), bool(is_positive)))
        self._predict()
        return self.probs

    def undo(self) -> np.ndarray | None:
        """Take the last click back; returns the first probe's probabilities for the remaining clicks (None
        without clicks)."""
        clicks = self.clicks[:-1]
        self.reset()
        for click in clicks:
            self.clicks.append(click)
            self._predict()
        return self.probs

    def reset(self) -> None:
        """Forget the current object's clicks; finished objects stay."""
        image = self._require_image()
        self.clicks, self.all_probs = [], [None] * len(self.probes)
        if self.zoom_in:
            self._framings = [
                ZoomIn(image.pixels, probe.size, probe.resize, threshold=self.threshold, device=probe.predictor.device)
                for probe in self.probes
            ]
        else:
            self._framings = [
                WholeImage(view, None, probe.predictor.device)
                for probe, view in zip(self.probes, image.views, strict=True)
            ]

    def finish(self) -> int:
        """Keep the first probe's mask as the next object (where no earlier object lies); returns the number of
        objects."""
        image = self._require_image()
        count = int(image.instances.max())
        if self.probs is not None and self.mask().any():
            if count == MAX_OBJECTS:
                raise UserError(f"{image.name}: {MAX_OBJECTS} objects is the most one instance map holds")
            count += 1
            image.instances[self.mask() & (image.instances == 0)] = count
        self.reset()
        return count

    @property
    def probs(self) -> np.ndarray | None:
        """The first probe's probabilities [H, W] for the current clicks (None before the first)."""
        return self.all_probs[0]

    def mask(self, probe: int = 0) -> np.ndarray:
        """Probe `probe`'s mask of the current object [H, W] (all False before the first click)."""
        image = self._require_image()
        probs = self.all_probs[probe]
        if probs is None:
            return np.zeros(image.pixels.shape[:2], bool)
        return probs > self.threshold

    def truth_object(self) -> int:
        """The ground-truth instance under the first positive click: 0 without ground truth, without a positive
        click, or when that click lies on background."""
        image = self._require_image()
        first = next((click for click in self.clicks if click.is_positive), None)
        if image.truth is None or first is None:
            return 0
        return int(image.truth.labels[first.y, first.x])

    def truth_iou(self, probe: int = 0) -> float | None:
        """IoU of probe `probe`'s mask with `truth_object`, ignore region left out; None when there is no such
        object."""
        instance = self.truth_object()
        if instance == 0:
            return None
        truth = self.image.truth
        return iou(truth.instance_mask(instance), self.mask(probe), truth.ignore)

    def _predict(self) -> None:
        for index, (probe, framing) in enumerate(zip(self.probes, self._framings, strict=True)):
            probs = probe.predictor.probabilities([framing.inputs(self.clicks)])[0]
            self.all_probs[index] = framing.to_original(probs).float().cpu().numpy()

    def _require_image(self) -> DemoImage:
        if self.image is None:
            raise UserError("no image is open: choose one from the list or upload one")
        return self.image
