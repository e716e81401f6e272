"""The click protocol over a whole dataset: every object gets `max_clicks` simulated clicks, RITM style.

Objects are evaluated in batches (one probe forward per click for the whole batch); each object keeps its own
clicker, working at the original resolution, and its IoU curve is measured there with the ignore region excluded.
What the probe sees of an object is its framing's choice: the whole image at the working size, or RITM's zoom-in.
Probabilities are mapped back and thresholded on the predictor's device; only the boolean masks come to the CPU, in
one copy per click for the batch, where one pass makes each object's error regions, which give both its IoU and its
next click.
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

from isegprobe.inference.clicker import BatchClicker, Click, Clicker
from isegprobe.inference.predictor import PredictionInput, Predictor, WorkingView, to_original


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
) -> EvaluationRun:
    """Run the click protocol on every task.

    `on_result` sees each finished object, `on_batch` the running totals after each batch (progress, partial saves).
    `framing` makes each object's framing; the default is `WholeImage`. `keep_masks_at`: after which numbers of
    clicks `on_result` also gets the predicted mask (for pictures of how a mask grows). `on_click(click, objects)`
    follows a batch inside: after its click number `click` (from 1) on each of its `objects` objects, since with
    zoom-in (the featurizer on every crop) one batch can take minutes.
    """
    framing = framing or partial(WholeImage.of_task, device=predictor.device)
    run = EvaluationRun()
    started = time.perf_counter()
    with BatchClicker() as batch_clicker:
        for batch in _batches(tasks, batch_size):
            batch_results, seconds = _evaluate_batch(
                predictor, batch_clicker, batch, max_clicks, threshold, framing, keep_masks_at, on_click
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


def _evaluate_batch(
    predictor: Predictor,
    batch_clicker: BatchClicker,
    batch: Sequence[ObjectTask],
    max_clicks: int,
    threshold: float,
    framing: Callable[[ObjectTask], Framing],
    keep_masks_at: Sequence[int],
    on_click: Callable[[int, int], None] | None,
) -> tuple[list[ObjectResult], float]:
    clickers = [Clicker(task.gt, task.ignore) for task in batch]
    framings = [framing(task) for task in batch]
    errors = [clicker.errors() for clicker in clickers]
    ious = np.zeros((len(batch), max_clicks), np.float32)
    kept: list[dict[int, np.ndarray]] = [{} for _ in batch]
    seconds = 0.0
    for click_index in range(max_clicks):
        batch_clicker.click(clickers, errors)
        started = time.perf_counter()
        inputs = [frame.inputs(clicker.clicks) for frame, clicker in zip(framings, clickers, strict=True)]
        probs = predictor.probabilities(inputs)
        originals = [frame.to_original(probs[i]) for i, frame in enumerate(framings)]
        preds = _on_host([original > threshold for original in originals])
        seconds += time.perf_counter() - started
        for i, clicker in enumerate(clickers):
            errors[i] = clicker.errors(preds[i])
            ious[i, click_index] = errors[i].iou()
            if click_index + 1 in keep_masks_at:
                kept[i][click_index + 1] = preds[i]
        if on_click is not None:
            on_click(click_index + 1, len(batch))
    results = [
        ObjectResult(task.id, ious[i], list(clickers[i].clicks), _numpy(originals[i]), task.image, kept[i])
        for i, task in enumerate(batch)
    ]
    return results, seconds


def _on_host(masks: Sequence[Tensor]) -> list[np.ndarray]:
    """The objects' masks as NumPy arrays, brought over in one copy: a copy each would wait for the device once per
    object at every click."""
    flat = torch.cat([mask.flatten() for mask in masks]).cpu().numpy()
    ends = np.cumsum([mask.numel() for mask in masks])[:-1]
    return [part.reshape(mask.shape) for part, mask in zip(np.split(flat, ends), masks, strict=True)]


def _numpy(probs: Tensor) -> np.ndarray:
    return probs.cpu().numpy().astype(np.float32)
