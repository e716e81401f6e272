"""The click protocol over a whole dataset: every object gets `max_clicks` simulated clicks, RITM style.

Objects are evaluated in batches (one probe forward per click for the whole batch); each object keeps its own
clicker, working at the original resolution, and its IoU curve is measured there with the ignore region excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from isegprobe.inference.clicker import Click, Clicker
from isegprobe.inference.metrics import iou
from isegprobe.inference.predictor import Predictor, WorkingView, mirror_click, to_original


@dataclass
class ObjectTask:
    """One object to segment: its masks at the original resolution and its working-size view(s)."""

    id: str
    gt: np.ndarray  # bool [H, W]
    ignore: np.ndarray  # bool [H, W]
    image: np.ndarray  # uint8 [H, W, 3], for pictures of the result
    view: WorkingView
    flip_view: WorkingView | None = None


@dataclass
class ObjectResult:
    id: str
    ious: np.ndarray  # float32 [max_clicks]
    clicks: list[Click]
    final_probs: np.ndarray = field(repr=False)  # float32 [H, W]
    image: np.ndarray = field(repr=False)  # uint8 [H, W, 3]


@dataclass
class EvaluationRun:
    results: list[ObjectResult]
    predict_seconds: float
    clicks_made: int

    @property
    def seconds_per_click(self) -> float:
        return self.predict_seconds / max(self.clicks_made, 1)


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
) -> EvaluationRun:
    """Run the click protocol on every task; `on_result` sees each finished object (progress, partial saves)."""
    results: list[ObjectResult] = []
    predict_seconds, clicks_made = 0.0, 0
    for batch in _batches(tasks, batch_size):
        batch_results, seconds = _evaluate_batch(predictor, batch, max_clicks, threshold)
        predict_seconds += seconds
        clicks_made += len(batch) * max_clicks
        for result in batch_results:
            results.append(result)
            if on_result is not None:
                on_result(result)
    return EvaluationRun(results, predict_seconds, clicks_made)


def _evaluate_batch(
    predictor: Predictor, batch: Sequence[ObjectTask], max_clicks: int, threshold: float
) -> tuple[list[ObjectResult], float]:
    clickers = [Clicker(task.gt, task.ignore) for task in batch]
    preds = [np.zeros_like(task.gt) for task in batch]
    size = batch[0].view.image.shape[-1]
    prev_probs = torch.zeros(len(batch), size, size, device=predictor.device)
    ious = np.zeros((len(batch), max_clicks), np.float32)
    seconds = 0.0
    for click_index in range(max_clicks):
        for clicker, pred in zip(clickers, preds, strict=True):
            clicker.next_click(pred)
        started = time.perf_counter()
        probs = _predict(predictor, batch, clickers, prev_probs)
        originals = [to_original(probs[i], task.view).cpu().numpy() for i, task in enumerate(batch)]
        seconds += time.perf_counter() - started
        prev_probs = probs
        for i, task in enumerate(batch):
            preds[i] = originals[i] > threshold
            ious[i, click_index] = iou(task.gt, preds[i], task.ignore)
    results = [
        ObjectResult(task.id, ious[i], list(clickers[i].clicks), originals[i].astype(np.float32), task.image)
        for i, task in enumerate(batch)
    ]
    return results, seconds


def _predict(predictor: Predictor, batch: Sequence[ObjectTask], clickers: Sequence[Clicker], prev: torch.Tensor):
    clicks = [clicker.clicks for clicker in clickers]
    probs = predictor.probabilities([task.view for task in batch], clicks, prev)
    if batch[0].flip_view is None:
        return probs
    mirrored_clicks = [[mirror_click(c, task.gt.shape[1]) for c in cs] for task, cs in zip(batch, clicks, strict=True)]
    flipped = predictor.probabilities([task.flip_view for task in batch], mirrored_clicks, prev.flip(-1))
    return 0.5 * (probs + flipped.flip(-1))
