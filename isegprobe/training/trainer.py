"""One optimisation step of a probe: RITM's iterative-click recipe on cached (or online) frozen features.

`Trainer` knows nothing of files, schedules or checkpoints, so benchmarks and tests use it alone; `train`
(run_loop.py) runs a whole schedule around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from isegprobe.config import TrainConfig
from isegprobe.data.preprocess import normalize_images
from isegprobe.devices import featurizer_autocast
from isegprobe.errors import UserError
from isegprobe.model import ISProbe
from isegprobe.model.probe import probe_features
from isegprobe.training.batch_sampler import BatchPointSampler
from isegprobe.training.losses import NormalizedFocalLoss, masked_bce
from isegprobe.training.next_clicks import ClickRound, next_clicks_together, split_valid

_VALIDATION_STREAM = 1
_TORCH_DRAWS_STREAM = 2


@dataclass
class DeviceBatch:
    images: Tensor  # float [B, 3, H, W], normalized
    features: Tensor | None  # [B, C, h, w] as the probe takes them (`probe_features`); None for early fusion
    target: Tensor  # bool [B, H, W]
    valid: Tensor  # bool [B, H, W]
    clicks: Tensor  # long [B, K, 3], the sampler's clicks (rows of -1 are none)

    @cached_property
    def valid_object_and_background(self) -> tuple[Tensor, Tensor]:
        """Where the step's rounds of clicks look for false negatives and false positives (`split_valid`): made
        once for all of them, and for every probe that trains on the batch side by side."""
        return split_valid(self.target, self.valid)


@dataclass
class StepResult:
    loss: Tensor  # scalar, detached
    bce: Tensor  # scalar, detached: the plain pixel cross-entropy of the same logits, for the logs
    iou: Tensor  # [B], detached
    num_next_clicks: int
    logits: Tensor  # [B, 1, H, W], detached
    clicks: Tensor  # [B, K + max_num_next_clicks, 3], the clicks the loss saw
    target: Tensor  # bool [B, H, W]

    @property
    def prob(self) -> Tensor:
        """The prediction as probabilities, made only when asked for (the logged pictures)."""
        return torch.sigmoid(self.logits)


def batch_iou(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """IoU per image [B] at probability 0.5, over valid pixels; an empty target predicted empty scores 1."""
    predicted = (logits[:, 0] > 0) & valid
    truth = target & valid
    intersection = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


class Trainer:
    """One optimisation step of a probe: initial clicks, RITM's no-grad iterative clicks, loss, Adam step."""

    def __init__(
        self,
        config: TrainConfig,
        probe: ISProbe,
        preprocessing: Mapping[str, Any],
        device: str | torch.device = "cpu",
        featurizer: nn.Module | None = None,
        online: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.online = online or probe.needs_featurizer
        self.mean = tuple(float(value) for value in preprocessing["mean"])
        self.std = tuple(float(value) for value in preprocessing["std"])
        if self.online and featurizer is None:
            raise UserError("online training (--online or fusion before_backbone) needs a featurizer")
        self.featurizer = featurizer
        if featurizer is not None:
            _check_normalization(featurizer, self.mean, self.std)
            featurizer.research_precision = config.model.research_precision
            featurizer.to(self.device).requires_grad_(False).eval()
            if probe.needs_featurizer:
                probe.attach_featurizer(featurizer)
        self.probe = probe.to(self.device)
        if self.device.type == "cuda":
            self.probe = self.probe.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # every batch has the store's one working size
        self.model: nn.Module = self.probe
        self.loss_fn = NormalizedFocalLoss(config.loss.alpha, config.loss.gamma)
        self.batch_sampler = BatchPointSampler(config.sampler)
        self.optimizer = torch.optim.Adam(
            [parameter for parameter in self.probe.parameters() if parameter.requires_grad],
            lr=config.optim.lr,
            betas=tuple(config.optim.betas),
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )

    def distribute(self) -> None:
        """Average gradients over the torchrun ranks with DistributedDataParallel.

        Only the loss pass goes through the wrapper; the no-grad iterative-click passes call the probe itself.
        """
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.probe, device_ids=device_ids)

    def to_device(self, batch: Mapping[str, Any]) -> DeviceBatch:
        """Move a collated batch to the device, normalize it there, and get its features (cached or computed).
        A batch without targets and clicks (`data.click_sampling` device) has them drawn here, for all its images
        at once."""
        non_blocking = self.device.type == "cuda"
        images = normalize_images(batch["image"].to(self.device, non_blocking=non_blocking), self.mean, self.std)
        valid = batch["valid"].to(self.device, non_blocking=non_blocking)
        if "clicks" in batch:
            target = batch["target"].to(self.device, non_blocking=non_blocking)
            clicks = batch["clicks"].to(self.device, non_blocking=non_blocking)
        else:
            labels = batch["labels"].to(self.device, non_blocking=non_blocking)
            target, clicks = self.batch_sampler.sample(labels, valid, batch["sample_seed"])
        features = self._features(batch, images)
        if features is not None:
            features = probe_features(features, images)  # once for the step's passes (and probes side by side)
        return DeviceBatch(images=images, features=features, target=target, valid=valid, clicks=clicks)

    def inputs_key(self) -> tuple[Any, ...]:
        """Trainers with equal keys make the same `DeviceBatch` of a batch, so that probes trained side by side
        prepare it (and compute online features, or draw targets and clicks) once; none of them writes into it."""
        return (
            self.device,
            self.mean,
            self.std,
            self.online,
            id(self.featurizer),
            self.probe.needs_featurizer,
            dataclasses.astuple(self.config.sampler),
        )

    def _features(self, batch: Mapping[str, Any], images: Tensor) -> Tensor | None:
        if self.probe.needs_featurizer:
            return None
        if self.online:
            with torch.no_grad(), featurizer_autocast(self.device):
                return self.featurizer(images)
        if "features" not in batch:
            raise UserError("the dataset gives no cached features: train with --online")
        return batch["features"].to(self.device, non_blocking=self.device.type == "cuda")

    def loss_on(self, batch: DeviceBatch, clicks: Tensor, prev_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(mean loss, logits) of the probe for given clicks and previous mask."""
        logits = self.model(batch.features, batch.images, clicks, prev_mask)
        loss = self.loss_fn(logits, batch.target[:, None], batch.valid[:, None])
        return loss, logits

    def simulate_clicks(self, batch: DeviceBatch, rng: np.random.Generator) -> tuple[Tensor, Tensor, int]:
        """RITM: 0..max_num_next_clicks no-grad passes, each adding a click on the error and feeding its mask back.
        The clicks come back with max_num_next_clicks more rows, those not clicked left at -1."""
        simulation = self._start_clicks(batch, rng, nullcontext())
        _simulate_together([simulation])
        return simulation.clicks, simulation.prev_mask, simulation.count

    def _start_clicks(
        self, batch: DeviceBatch, rng: np.random.Generator, draws: AbstractContextManager
    ) -> _ClickSimulation:
        free_rows = batch.clicks.new_full((batch.clicks.shape[0], self.config.clicks.max_num_next_clicks, 3), -1)
        free_rows[..., 2] = 0  # RITM's padding row (-1, -1, 0), made on the device: no copy from the host
        return _ClickSimulation(
            trainer=self,
            batch=batch,
            rng=rng,
            draws=draws,
            clicks=torch.cat((batch.clicks, free_rows), dim=1),
            prev_mask=torch.zeros_like(batch.images[:, :1]),
            count=int(rng.integers(0, self.config.clicks.max_num_next_clicks + 1)),
        )

    def _predicted(self, simulation: _ClickSimulation) -> Tensor:
        """The probe's probabilities for the simulation's clicks and mask, in eval mode and without gradients."""
        was_training = self.probe.training
        self.probe.eval()
        with torch.no_grad():
            batch = simulation.batch
            prob = torch.sigmoid(self.probe(batch.features, batch.images, simulation.clicks, simulation.prev_mask))
        self.probe.train(was_training)
        return prob

    def train_step(
        self, batch: Mapping[str, Any], step: int, lr: float, device_batch: DeviceBatch | None = None
    ) -> StepResult:
        """One optimizer step on `batch`; `device_batch` is its `to_device`, when another trainer with the same
        `inputs_key` made it already."""
        return train_steps_together([StepRequest(self, batch, step, lr, device_batch)])[0]

    def _begin_step(self, request: StepRequest) -> _ClickSimulation:
        for group in self.optimizer.param_groups:
            group["lr"] = request.lr
        device_batch = request.device_batch or self.to_device(request.batch)
        draws = StepDraws(self.config.seed, request.step, self.device)
        with draws:
            self.probe.train()
            return self._start_clicks(device_batch, np.random.default_rng([self.config.seed, request.step]), draws)

    def _finish_step(self, simulation: _ClickSimulation) -> StepResult:
        batch = simulation.batch
        with simulation.draws:
            loss, logits = self.loss_on(batch, simulation.clicks, simulation.prev_mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        logits = logits.detach()
        return StepResult(
            loss=loss.detach(),
            bce=masked_bce(logits, batch.target[:, None], batch.valid[:, None]).mean(),
            iou=batch_iou(logits, batch.target, batch.valid),
            num_next_clicks=simulation.count,
            logits=logits,
            clicks=simulation.clicks,
            target=batch.target,
        )

    def evaluate(self, loader: DataLoader) -> tuple[float, float]:
        """(mean loss, mean IoU) over a loader, with fixed clicks, as RITM's validation pass."""
        losses, ious = [], []
        self.probe.eval()
        for index, batch in enumerate(loader):
            device_batch = self.to_device(batch)
            rng = np.random.default_rng([self.config.seed, _VALIDATION_STREAM, index])
            clicks, prev_mask, _ = self.simulate_clicks(device_batch, rng)
            with torch.no_grad():
                loss, logits = self.loss_on(device_batch, clicks, prev_mask)
            losses.append(loss.item())
            ious.extend(batch_iou(logits, device_batch.target, device_batch.valid).tolist())
        self.probe.train()
        return float(np.mean(losses)), float(np.mean(ious))


@dataclass(frozen=True)
class StepRequest:
    """A probe's optimizer step to take: its trainer, the batch, the step's index and learning rate, and the batch
    on the device when a trainer with the same `inputs_key` made it already."""

    trainer: Trainer
    batch: Mapping[str, Any]
    step: int
    lr: float
    device_batch: DeviceBatch | None = None


def train_steps_together(requests: Sequence[StepRequest]) -> list[StepResult]:
    """One optimizer step of each request's probe: their iterative-click passes take turns, round by round, so that
    every round's clicks are made for all of them at once (`next_clicks_together`: on a GPU one wait and one copy of
    the error regions per round, not one per probe, and their transforms on the threads together); then each probe's
    loss pass and optimizer step. Each probe's numbers are those of its step taken alone: its clicks come from its
    own generator, and its torch draws (dropout) from its own `StepDraws`, which keeps them between its turns."""
    simulations = [request.trainer._begin_step(request) for request in requests]
    _simulate_together(simulations)
    return [simulation.trainer._finish_step(simulation) for simulation in simulations]


@dataclass
class _ClickSimulation:
    """A probe's iterative clicks on a batch, under way: the clicks and previous mask so far (the clicks' rows after
    the batch's own are those the passes fill), how many no-grad passes the step takes (drawn at its start), and the
    draws its passes run under."""

    trainer: Trainer
    batch: DeviceBatch
    rng: np.random.Generator
    draws: AbstractContextManager
    clicks: Tensor
    prev_mask: Tensor
    count: int


def _simulate_together(simulations: Sequence[_ClickSimulation]) -> None:
    """RITM's no-grad passes of every simulation, round by round: each takes as many as it drew."""
    for index in range(max((simulation.count for simulation in simulations), default=0)):
        active = [simulation for simulation in simulations if index < simulation.count]
        for simulation in active:
            with simulation.draws:
                simulation.prev_mask = simulation.trainer._predicted(simulation)
        rounds = [
            ClickRound(
                simulation.prev_mask,
                *simulation.batch.valid_object_and_background,
                simulation.clicks,
                simulation.batch.clicks.shape[1] + index,
                simulation.rng,
                simulation.trainer.config.clicks.pred_threshold,
            )
            for simulation in active
        ]
        for simulation, clicks in zip(active, next_clicks_together(rounds), strict=True):
            simulation.clicks = clicks


class StepDraws:
    """torch's generators (the CPU's and `device`'s) seeded from (seed, step) for one training step, in use inside
    `with` and put back as they were outside. It may be entered again: each time the draws go on from where the
    last left off, so a step whose passes take turns with other probes' draws what it draws in one go.

    A probe's dropout (FeatUp JBU's, when it trains or follows train mode) then draws the same masks at a step
    whatever ran before it. Drawn from one stream that runs on from `torch.manual_seed(seed)`, they depended on every
    draw before: probes side by side took each other's, and a resumed run restarted the stream, so neither gave the
    numbers of the run alone and uninterrupted. Outside the steps the stream is as it was: a run that draws nothing
    in its steps is unchanged."""

    def __init__(self, seed: int, step: int, device: torch.device) -> None:
        self._value = int(np.random.SeedSequence([seed, _TORCH_DRAWS_STREAM, step]).generate_state(1, np.uint64)[0])
        self._gpu = device if device.type == "cuda" else None
        self._own: tuple[Tensor, Tensor | None] | None = None
        self._outside: tuple[Tensor, Tensor | None] | None = None

    def __enter__(self) -> StepDraws:
        self._outside = self._states()
        if self._own is None:
            torch.random.default_generator.manual_seed(self._value)
            if self._gpu is not None:
                with torch.cuda.device(self._gpu):
                    torch.cuda.manual_seed(self._value)
        else:
            self._set_states(self._own)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._own = self._states()
        if self._outside is not None:
            self._set_states(self._outside)

    def _states(self) -> tuple[Tensor, Tensor | None]:
        return torch.random.get_rng_state(), None if self._gpu is None else torch.cuda.get_rng_state(self._gpu)

    def _set_states(self, states: tuple[Tensor, Tensor | None]) -> None:
        cpu, gpu = states
        torch.random.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, self._gpu)


def _check_normalization(featurizer: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Online features must see images normalized as the cached ones were, or the two modes would disagree."""
    for name, expected in (("mean", mean), ("std", std)):
        own = getattr(featurizer, name, None)
        if own is not None and not np.allclose(np.asarray(own, dtype=np.float64), expected, atol=1e-4):
            raise UserError(
                f"the featurizer's {name} {list(own)} differs from the store's preprocessing {name} {expected}"
            )
