"""The evaluation loop as it was before issue 22 (commit 4f588e3), kept as a reference to time and to compare with.

Per click and object it ran RITM's clicker on whole padded images (two OpenCV transforms, then the not-clicked mask
multiplied in), normalized the working-size images and stacked the cached features again, brought the
probabilities back to the CPU and measured the IoU on the masks. `eval_per_click.py` times it beside today's loop,
and `tests/test_evaluation_parity.py` checks that today's loop gives the same clicks, IoUs and probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from isegprobe.inference.clicker import Click
from isegprobe.inference.evaluation import EvaluationRun, Framing, ObjectCurve, ObjectTask, WholeImage
from isegprobe.inference.metrics import iou
from isegprobe.inference.predictor import PredictionInput, Predictor, WorkingView


class ReferenceClicker:
    """RITM's clicker as RITM writes it: full-size transforms, clicked pixels zeroed by a mask."""

    def __init__(self, gt: np.ndarray, ignore: np.ndarray) -> None:
        self.gt, self.ignore = gt, ignore
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(gt.shape, dtype=bool)

    def next_click(self, pred: np.ndarray) -> Click:
        fn_depth = self._depth(self.gt & ~pred)
        fp_depth = self._depth(~self.gt & pred)
        is_positive = bool(fn_depth.max() > fp_depth.max())
        depth = fn_depth if is_positive else fp_depth
        y, x = np.unravel_index(np.argmax(depth), depth.shape)
        click = Click(y=int(y), x=int(x), is_positive=is_positive)
        self.clicks.append(click)
        self._not_clicked[y, x] = False
        return click

    def _depth(self, error: np.ndarray) -> np.ndarray:
        padded = np.pad(error & ~self.ignore, 1, mode="constant", constant_values=0).astype(np.uint8)
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        return distance * self._not_clicked


class PerClickPredictor(Predictor):
    """The predictor as it was: images normalized (a new tensor per step) and cached features stacked (and made
    float32) again at every click, previous and new probabilities in new tensors."""

    @torch.inference_mode()
    def probabilities(self, inputs: Sequence[PredictionInput]) -> Tensor:
        return torch.sigmoid(self.logits(inputs))

    def _prepare(self, views: Sequence[WorkingView]) -> tuple[Tensor, Tensor | None]:
        return self._normalized(views), None

    def _normalized(self, views: Sequence[WorkingView]) -> Tensor:
        images = torch.stack([view.image for view in views]).to(self.device)
        mean = torch.tensor(self.mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
        scaled = images.float() if images.is_floating_point() else images.float() / 255.0
        return (scaled - mean) / std

    def _features(self, views: Sequence[WorkingView], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if all(view.features is not None for view in views):
            return torch.stack([view.features for view in views]).to(self.device).float()
        return self._run_featurizer(images)

    def _stacked_prev(self, prev_probs: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(prev_probs)).to(self.device)


class ZerosPerObject(WholeImage):
    """The whole-image framing as it was: a new zero map of previous probabilities for every object."""

    def __init__(self, view: WorkingView, flip_view: WorkingView | None, device: torch.device | str) -> None:
        super().__init__(view, flip_view, device)
        size = view.image.shape[-1]
        self.prev_probs = torch.zeros(size, size, device=device)


def evaluate_per_object(
    predictor: Predictor,
    tasks: Iterator[ObjectTask],
    max_clicks: int = 20,
    threshold: float = 0.5,
    batch_size: int = 8,
    framing: Callable[[ObjectTask], Framing] | None = None,
    on_result: Callable[[ObjectCurve, np.ndarray], None] | None = None,
) -> EvaluationRun:
    """The old `evaluate_objects`, without its progress callbacks; `on_result` sees each curve and its last
    probabilities."""
    framing = framing or (lambda task: ZerosPerObject.of_task(task, predictor.device))
    run = EvaluationRun()
    batch: list[ObjectTask] = []
    for task in tasks:
        batch.append(task)
        if len(batch) == batch_size:
            _evaluate_batch(predictor, batch, max_clicks, threshold, framing, run, on_result)
            batch = []
    if batch:
        _evaluate_batch(predictor, batch, max_clicks, threshold, framing, run, on_result)
    return run


def _evaluate_batch(
    predictor: Predictor,
    batch: Sequence[ObjectTask],
    max_clicks: int,
    threshold: float,
    framing: Callable[[ObjectTask], Framing],
    run: EvaluationRun,
    on_result: Callable[[ObjectCurve, np.ndarray], None] | None,
) -> None:
    clickers = [ReferenceClicker(task.gt, task.ignore) for task in batch]
    framings = [framing(task) for task in batch]
    preds = [np.zeros_like(task.gt) for task in batch]
    ious = np.zeros((len(batch), max_clicks), np.float32)
    originals: list[np.ndarray] = []
    for click_index in range(max_clicks):
        for clicker, pred in zip(clickers, preds, strict=True):
            clicker.next_click(pred)
        started = time.perf_counter()
        inputs = [frame.inputs(clicker.clicks) for frame, clicker in zip(framings, clickers, strict=True)]
        probs = predictor.probabilities(inputs)
        originals = [frame.to_original(probs[i]).cpu().numpy() for i, frame in enumerate(framings)]
        run.predict_seconds += time.perf_counter() - started
        for i, task in enumerate(batch):
            preds[i] = originals[i] > threshold
            ious[i, click_index] = iou(task.gt, preds[i], task.ignore)
    run.clicks_made += len(batch) * max_clicks
    for i, task in enumerate(batch):
        curve = ObjectCurve(task.id, ious[i], list(clickers[i].clicks))
        run.results.append(curve)
        if on_result is not None:
            on_result(curve, originals[i].astype(np.float32))
