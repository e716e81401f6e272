"""No copy from the host that waits for the device, in the work a GPU run repeats at every pass or step.

A plain copy of host values to a GPU (`torch.tensor(..., device=...)`, `new_tensor`, `.to(device)` of a host tensor)
first waits for every kernel queued there, so the host stops queueing work. Constants are made on the device once,
and values the host makes at every step (clicks, draws) go over with `from_host`, which does not wait. The meta
device stands in for a GPU here: the same calls put values on it, and no GPU is needed to see them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_training import tiny_config
from torch.overrides import TorchFunctionMode

from isegprobe.config import ModelConfig, UpsamplerConfig
from isegprobe.data.preprocess import normalize_images
from isegprobe.model import ISProbe
from isegprobe.training.batch_sampler import _clicks, _negatives
from isegprobe.training.points_sampler import Pick, TargetChoice
from isegprobe.training.trainer import DeviceBatch, Trainer
from isegprobe.upsamplers.registry import list_upsamplers

META = torch.device("meta")


class WaitingCopies(TorchFunctionMode):
    """Records every call that puts host values on a device with a copy that waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        on_device = isinstance(result, torch.Tensor) and result.device.type != "cpu"
        made_there = name in ("tensor", "new_tensor") or (name == "as_tensor" and not isinstance(args[0], torch.Tensor))
        copied_there = name == "to" and args[0].device.type == "cpu" and not kwargs.get("non_blocking", False)
        if on_device and (made_there or copied_there):
            self.calls.append(name)
        return result


@pytest.mark.parametrize("upsampler", list_upsamplers())
def test_a_probe_pass_copies_nothing_from_the_host_that_waits(upsampler: str) -> None:
    """Training's clicks (a tensor of whole pixels) and evaluation's (lists, between pixels), after a first pass of
    each has made the constants: the click disks' offsets, AnyUp's attention bands."""
    config = ModelConfig(upsampler=UpsamplerConfig(name=upsampler))
    probe = ISProbe(config, feature_dim=32, patch_size=8, token_dim=32).to(META).eval()
    features, image = torch.zeros(2, 32, 7, 7, device=META), torch.zeros(2, 3, 56, 56, device=META)
    prev_mask = torch.zeros(2, 1, 56, 56, device=META)
    whole_pixels = torch.zeros(2, 4, 3, dtype=torch.long, device=META)
    between_pixels = [[(3.5, 4.0, True)], [(1.0, 2.25, False), (9.0, 9.0, True)]]
    with torch.no_grad():
        for clicks in (whole_pixels, between_pixels):
            probe(features, image, clicks, prev_mask)
        with WaitingCopies() as copies:
            for clicks in (whole_pixels, between_pixels):
                probe(features, image, clicks, prev_mask)
    assert copies.calls == []


def test_normalizing_makes_its_constants_on_the_device_once() -> None:
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8, device=META)
    normalize_images(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with WaitingCopies() as copies:
        normalize_images(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert copies.calls == []


def test_a_step_without_next_clicks_pads_its_clicks_on_the_device() -> None:
    config = tiny_config()
    probe = ISProbe(config.model, feature_dim=32, patch_size=8, token_dim=32)
    trainer = Trainer(config, probe, {"mean": (0.5,) * 3, "std": (0.5,) * 3}, device=META)
    no_next_clicks = next(
        seed for seed in range(100) if np.random.default_rng(seed).integers(config.clicks.max_num_next_clicks + 1) == 0
    )
    batch = DeviceBatch(
        images=torch.zeros(2, 3, 56, 56, device=META),
        features=torch.zeros(2, 32, 7, 7, device=META),
        target=torch.zeros(2, 56, 56, dtype=torch.bool, device=META),
        valid=torch.ones(2, 56, 56, dtype=torch.bool, device=META),
        clicks=torch.zeros(2, 4, 3, dtype=torch.long, device=META),
    )
    with WaitingCopies() as copies:
        clicks, _, count = trainer.simulate_clicks(batch, np.random.default_rng(no_next_clicks))
    assert count == 0 and clicks.shape == (2, 4 + config.clicks.max_num_next_clicks, 3)
    assert copies.calls == []


def test_the_device_sampler_sends_the_hosts_draws_without_waiting() -> None:
    """The parts of `BatchPointSampler.sample` that take what the host drew to the device: the negative regions of
    each image's choice, and the clicks of its picks."""
    labels = torch.zeros(2, 16, 16, dtype=torch.long, device=META)
    target = torch.zeros(2, 16, 16, dtype=torch.bool, device=META)
    choices = [TargetChoice([1], [False], True), TargetChoice([], [], False)]
    regions = torch.zeros(2, 5, 16, 16, dtype=torch.bool, device=META)
    picks = [[(0, Pick(0, 3, True)), None], [(2, Pick(2, 1, False)), (2, Pick(2, 5, False))]]
    with WaitingCopies() as copies:
        _negatives(labels, target, choices, [3, 0])
        _clicks(regions, picks)
    assert copies.calls == []
