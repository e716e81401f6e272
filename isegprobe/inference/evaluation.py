"""The click protocol over a whole dataset: every object gets `max_clicks` simulated clicks, RITM style.

Objects are evaluated in batches (one probe forward per click for the whole batch); each object gets RITM's clicks,
made at the original resolution, and its IoU curve is measured there with the ignore region excluded. What the probe
sees of an object is its framing's choice: the whole image at the working size, or RITM's zoom-in. Probabilities are
mapped back and thresholded on the predictor's device. The clicker (`clicker`) is OpenCV's on the CPU, where the
boolean masks come in one copy per click for the batch and one pass makes each object's error regions, which give
both its IoU and its next click; or tensor operations on the device for the whole batch (tensor_clicker.py), where
only the clicks come to the CPU. Both make the same clicks and IoUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from isegprobe.inference.clicker import CLICKERS, BatchClicker, Click, Clicker, ErrorRegions
from isegprobe.inference.predictor import PredictionInput, Predictor, WorkingView, to_original
from isegprobe.inference.tensor_clicker import TensorClicks


@dataclass
class ObjectTask:
    """One object to segment: its masks at the original resolution and its working-size view(s)."""

    id: str
    gt: np.ndarray  # bool [H, W]
    ignore: np.ndarray  # bool [H, W]
    image: np.ndarray  # uint8 [H, W, 3]
    view: WorkingView
    flip_view: WorkingView | None = None


@dataclass
class ObjectCurve:
    """What a run keeps of each object: its clicks and its IoU after each of them."""

    id: str
    ious: np.ndarray  # float32 [max_clicks]
    clicks: list[Click]


@dataclass
class ObjectResult(ObjectCurve):
    """An object as it finishes, with the pictures' inputs; only `on_result` sees these, so memory stays flat."""

    final_probs: np.ndarray = field(repr=False)  # float32 [H, W]
    image: np.ndarray = field(repr=False)  # uint8 [H, W, 3]
    masks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # clicks made -> bool [H, W]


@dataclass
class EvaluationRun:
    """Running totals: `predict_seconds` is the time in the predictor (crops, featurizer, probe, un-cropping);
    `loop_seconds` the whole loop's, reading the images and the clicker included (what iSegProbe's evaluate.py times),
    without the writing of result files."""

    results: list[ObjectCurve] = field(default_factory=list)
    clicks_made: int = 0
    predict_seconds: float = 0.0
    loop_seconds: float = 0.0

    @property
    def seconds_per_click(self) -> float:
        return self.predict_seconds / max(self.clicks_made, 1)


class Framing(Protocol):
    """What the probe sees of one object at each click, and how its answer maps back to the original image."""

    def inputs(self, clicks: Sequence[Click]) -> PredictionInput: ...

    def to_original(self, probs: Tensor) -> Tensor: ...


class WholeImage:
    """The whole image at the working size (the cached or freshly made view, and its mirror with flip); previous
    probabilities stay at the working size."""

    def __init__(self, view: WorkingView, flip_view: WorkingView | None, device: torch.device | str) -> None:
        self.view, self.flip_view = view, flip_view
        self.prev_probs = _no_probabilities(view.image.shape[-1], torch.device(device))

    @classmethod
    def of_task(cls, task: ObjectTask, device: torch.device | str) -> WholeImage:
        return cls(task.view, task.flip_view, device)

    def inputs(self, clicks: Sequence[Click]) -> PredictionInput:
        return PredictionInput(self.view, self.flip_view, list(clicks), self.prev_probs)

    def to_original(self, probs: Tensor) -> Tensor:
        self.prev_probs = probs
        return to_original(probs, self.view)


@lru_cache(maxsize=4)
def _no_probabilities(size: int, device: torch.device) -> Tensor:
    """The previous probabilities before the first click, one zero map shared by every object (it is only read)."""
    return torch.zeros(size, size, device=device)


def _batches(tasks: Iterator[ObjectTask], size: int) -> Iterator[list[ObjectTask]]:
    batch: list[ObjectTask] = []
    for task in tasks:
        batch.append(task)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_objects(
    predictor: Predictor,
    tasks: Iterator[ObjectTask],
    max_clicks: int = 20,
    threshold: float = 0.5,
    batch_size: int = 8,
    on_result: Callable[[ObjectResult], None] | None = None,
    on_batch: Callable[[EvaluationRun], None] | None = None,
    framing: Callable[[ObjectTask], Framing] | None = None,
    keep_masks_at: Sequence[int] = (),
    on_click: Callable[[int, int], None] | None = None,
    clicker: str = "auto",
) -> EvaluationRun:
    """Run the click protocol on every task.

    `on_result` sees each finished object, `on_batch` the running totals after each batch (progress, partial saves).
    `framing` makes each object's framing; the default is `WholeImage`. `keep_masks_at`: after which numbers of
    clicks `on_result` also gets the predicted mask (for pictures of how a mask grows). `on_click(click, objects)`
    follows a batch inside: after its click number `click` (from 1) on each of its `objects` objects, since with
    zoom-in (the featurizer on every crop) one batch can take minutes. `clicker`: one of CLICKERS (auto: tensor on a
    GPU, opencv elsewhere, where OpenCV on the objects' error regions costs less than tensor operations on whole
    images).
    """
    framing = framing or partial(WholeImage.of_task, device=predictor.device)
    on_device = resolved_clicker(clicker, predictor.device) == "tensor"
    run = EvaluationRun()
    started = time.perf_counter()
    with BatchClicker() as batch_clicker:
        for batch in _batches(tasks, batch_size):
            if on_device:
                objects: ObjectsClicks = TensorClicks(
                    [task.gt for task in batch], [task.ignore for task in batch], predictor.device
                )
            else:
                objects = OpenCVClicks(batch, batch_clicker)
            batch_results, seconds = _evaluate_batch(
                predictor, objects, batch, max_clicks, threshold, framing, keep_masks_at, on_click
            )
            run.predict_seconds += seconds
            run.clicks_made += len(batch) * max_clicks
            run.loop_seconds += time.perf_counter() - started
            for result in batch_results:
                run.results.append(ObjectCurve(result.id, result.ious, result.clicks))
                if on_result is not None:
                    on_result(result)
            if on_batch is not None:
                on_batch(run)
            started = time.perf_counter()
    return run


def resolved_clicker(clicker: str, device: torch.device) -> str:
    """`opencv` or `tensor`: the clicker that `clicker` (one of CLICKERS) names on `device`."""
    if clicker not in CLICKERS:
        raise ValueError(f"clicker must be one of {', '.join(CLICKERS)}, got {clicker!r}")
    if clicker == "auto":
        return "tensor" if device.type == "cuda" else "opencv"
    return clicker


class ObjectsClicks(Protocol):
    """The simulated user of a batch of objects: each object's clicks so far, and its IoU after each prediction."""

    @property
    def clicks(self) -> list[list[Click]]:
        """Each object's clicks, in order."""

    def click(self) -> None:
        """Each object's next click, answering its last prediction observed (the empty one before the first)."""

    def observe(self, masks: Sequence[Tensor]) -> None:
        """The objects' new predictions: bool [H, W] each, at the original size, on the predictor's device."""

    def ious(self) -> np.ndarray:
        """float32 [objects, predictions observed]."""


class OpenCVClicks:
    """`ObjectsClicks` by a `Clicker` per object, on the CPU: the masks come over in one copy per prediction."""

    def __init__(self, batch: Sequence[ObjectTask], batch_clicker: BatchClicker) -> None:
        self.clickers = [Clicker(task.gt, task.ignore) for task in batch]
        self.batch_clicker = batch_clicker
        self.errors: list[ErrorRegions] = [clicker.errors() for clicker in self.clickers]
        self._ious: list[list[float]] = []

    @property
    def clicks(self) -> list[list[Click]]:
        return [clicker.clicks for clicker in self.clickers]

    def click(self) -> None:
        self.batch_clicker.click(self.clickers, self.errors)

    def observe(self, masks: Sequence[Tensor]) -> None:
        preds = _on_host(masks)
        self.errors = [clicker.errors(pred) for clicker, pred in zip(self.clickers, preds, strict=True)]
        self._ious.append([errors.iou() for errors in self.errors])

    def ious(self) -> np.ndarray:
        return np.array(self._ious, np.float32).T


def _evaluate_batch(
    predictor: Predictor,
    objects: ObjectsClicks,
    batch: Sequence[ObjectTask],
    max_clicks: int,
    threshold: float,
    framing: Callable[[ObjectTask], Framing],
    keep_masks_at: Sequence[int],
    on_click: Callable[[int, int], None] | None,
) -> tuple[list[ObjectResult], float]:
    """The batch's IoU curves and results, and the seconds spent predicting (the masks thresholded on the device
    included, with the device's work waited for)."""
    framings = [framing(task) for task in batch]
    kept: list[dict[int, np.ndarray]] = [{} for _ in batch]
    seconds = 0.0
    for click_index in range(max_clicks):
        objects.click()
        started = time.perf_counter()
        inputs = [frame.inputs(clicks) for frame, clicks in zip(framings, objects.clicks, strict=True)]
        probs = predictor.probabilities(inputs)
        originals = [frame.to_original(probs[i]) for i, frame in enumerate(framings)]
        masks = [original > threshold for original in originals]
        _wait_for(predictor.device)
        seconds += time.perf_counter() - started
        objects.observe(masks)
        if click_index + 1 in keep_masks_at:
            for index, mask in enumerate(_on_host(masks)):
                kept[index][click_index + 1] = mask
        if on_click is not None:
            on_click(click_index + 1, len(batch))
    ious = objects.ious()
    results = [
        ObjectResult(task.id, ious[i], list(objects.clicks[i]), _numpy(originals[i]), task.image, kept[i])
        for i, task in enumerate(batch)
    ]
    return results, seconds


def _wait_for(device: torch.device) -> None:
    """Let the device finish what is queued, so that the time measured is the prediction's, whichever clicker then
    reads the masks."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on_host(masks: Sequence[Tensor]) -> list[np.ndarray]:
    """The objects' masks as NumPy arrays, brought over in one copy: a copy each would wait for the device once per
    object at every click."""
    flat = torch.cat([mask.flatten() for mask in masks]).cpu().numpy()
    ends = np.cumsum([mask.numel() for mask in masks])[:-1]
    return [part.reshape(mask.shape) for part, mask in zip(np.split(flat, ends), masks, strict=True)]


def _numpy(probs: Tensor) -> np.ndarray:
    return probs.cpu().numpy().astype(np.float32)
