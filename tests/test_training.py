"""Training: loss, point sampler, iterative clicks, the loop, checkpoints, resume, cache vs online, early fusion."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from stand_ins import StandInFeaturizer
from stores import builtin_store
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.config import SamplerConfig, TrainConfig
from isegprobe.config_loading import RenamedConfigKeyWarning, config_to_dict, load_train_config
from isegprobe.data.instance_maps import as_uint16_ids
from isegprobe.data.preprocess import normalize_images
from isegprobe.errors import UserError
from isegprobe.featurizers.normalization import IMAGENET_MEAN, IMAGENET_STD
from isegprobe.model import ISProbe
from isegprobe.training import (
    MultiPointSampler,
    Trainer,
    checkpoint,
    load_probe,
    normalized_focal_loss,
    train,
)
from isegprobe.training.checkpoint import resume_config
from isegprobe.training.click_dataset import ClickTrainingSet, valid_pixels
from isegprobe.training.losses import masked_bce
from isegprobe.training.next_clicks import (
    ClickRound,
    add_next_clicks,
    next_click,
    next_clicks_together,
    split_valid,
)
from isegprobe.training.points_sampler import categorical, cumulative, geometric_cdf
from isegprobe.training.run_logger import RunLogger
from isegprobe.training.schedule import StepSchedule
from isegprobe.training.seed_configurations import RESEARCH_PRESETS
from isegprobe.training.store_checks import GuidanceStatisticsWarning
from isegprobe.training.trainer import StepDraws, batch_iou
from isegprobe.upsamplers import create_upsampler

SIZE = 64
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def featurizer() -> nn.Module:
    """The project's real featurizer (a random-weight ViT-Ti/16) when it imports, else the stand-in."""
    try:
        from isegprobe.featurizers import create_featurizer
    except ImportError:
        return StandInFeaturizer(patch_size=16, std=STD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_featurizer("vit_tiny_patch16_224", weights="random")


def square_scene(index: int, size: int = SIZE) -> dict[str, torch.Tensor]:
    """Two bright rectangles on a dark ground, an ignore band around the first and 4 rows of padding at the bottom."""
    rng = np.random.default_rng(index)
    labels = np.zeros((size, size), dtype=np.int64)
    y, x = rng.integers(4, 16, size=2)
    labels[y : y + 18, x : x + 18] = 1
    labels[40:56, 30 + index % 4 : 58] = 2
    ring = np.zeros_like(labels, dtype=bool)
    ring[y - 2 : y + 20, x - 2 : x + 20] = True
    ignore = ring & (labels != 1)
    image = np.full((size, size, 3), 30, dtype=np.uint8)
    image[labels == 1] = (220, 60, 60)
    image[labels == 2] = (60, 220, 60)
    image[size - 4 :] = 0
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "labels": torch.from_numpy(labels),
        "ignore": torch.from_numpy(ignore),
        "valid_box": torch.tensor([0, 0, size - 4, size]),
    }


class SquaresDataset(Dataset):
    """A cache reader stand-in with the reader's item contract; features from `featurizer` or a fixed projection."""

    def __init__(self, count: int = 4, featurizer: nn.Module | None = None, with_features: bool = True) -> None:
        self.preprocessing = {"size": SIZE, "mean": list(MEAN), "std": list(STD)}
        self.provenance = dict(getattr(featurizer, "provenance", {"name": "pooled", "patch_size": 8}))
        self.path = "memory://squares"
        generator = torch.Generator().manual_seed(0)
        projection = torch.randn(16, 3, 1, 1, generator=generator)
        self.items = []
        for index in range(count):
            item = {**square_scene(index), "item": index, "view": 0}
            if with_features:
                image = normalize_images(item["image"][None], MEAN, STD)
                with torch.no_grad():
                    if featurizer is not None:
                        features = featurizer(image)[0]
                    else:
                        features = torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(image, 8), projection)[0]
                item["features"] = features.half()
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def tiny_config(*overrides: str) -> TrainConfig:
    return load_train_config(
        "fast_cpu",
        [
            "model.head.width=8",
            "data.batch_size=2",
            "sampler.min_object_area=1",
            "logging.tensorboard=false",
            "logging.every_steps=1",
            *overrides,
        ],
    )


def sampled_batch(dataset: Dataset, config: TrainConfig, count: int = 2, with_features: bool = True) -> dict:
    items = ClickTrainingSet(dataset, MultiPointSampler(config.sampler), seed=0, with_features=with_features)
    return default_collate([items[index] for index in range(count)])


# --- loss -------------------------------------------------------------------------------------------------------


def reference_normalized_focal_loss(logits, target, valid, alpha=0.5, gamma=2.0) -> np.ndarray:
    """RITM's NormalizedFocalLossSigmoid written out per image in float64, independently of the module."""
    losses = []
    for x, y, v in zip(logits.double().numpy(), target.numpy(), valid.numpy(), strict=True):
        x, y, v = x.ravel(), y.ravel().astype(bool), v.ravel().astype(bool)
        p = 1.0 / (1.0 + np.exp(-x))
        p_true = np.where(y, p, 1.0 - p)
        focal = np.where(v, (1.0 - p_true) ** gamma, 0.0)
        normalizer = v.sum() / focal.sum()
        class_weight = np.where(y, alpha, 1.0 - alpha)
        per_pixel = -class_weight * focal * normalizer * np.log(p_true)
        losses.append(per_pixel[v].sum() / v.sum())
    return np.array(losses)


def test_masked_bce_is_the_mean_cross_entropy_of_the_valid_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 7) * 3
    target = torch.rand(2, 1, 6, 7) > 0.5
    valid = torch.rand(2, 1, 6, 7) > 0.3
    for index in range(2):
        chosen = valid[index]
        expected = nn.functional.binary_cross_entropy_with_logits(logits[index][chosen], target[index][chosen].float())
        assert masked_bce(logits, target, valid)[index].item() == pytest.approx(expected.item(), rel=1e-6)


def test_normalized_focal_loss_matches_the_formula_and_skips_ignored_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 20, 20) * 3
    target = torch.rand(3, 1, 20, 20) > 0.6
    valid = torch.rand(3, 1, 20, 20) > 0.2
    loss = normalized_focal_loss(logits, target, valid, alpha=0.5, gamma=2.0)
    expected = reference_normalized_focal_loss(logits, target, valid)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    other_alpha = normalized_focal_loss(logits, target, valid, alpha=0.25, gamma=2.0)
    np.testing.assert_allclose(
        other_alpha.numpy(), reference_normalized_focal_loss(logits, target, valid, alpha=0.25), rtol=1e-5
    )

    changed = logits.clone().requires_grad_(True)
    with torch.no_grad():
        changed[~valid] = 50.0
    moved = normalized_focal_loss(changed, target, valid)
    np.testing.assert_allclose(moved.detach().numpy(), loss.numpy(), rtol=1e-6)
    moved.sum().backward()
    assert changed.grad[~valid].abs().max() == 0


# --- point sampler and iterative clicks ---------------------------------------------------------------------------


def scene_arrays(index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    scene = square_scene(index)
    labels = scene["labels"].numpy().copy()
    labels[0:2, 60:62] = 3  # a 4-pixel object, below min_object_area: never a target, still "other"
    return labels, valid_pixels(scene["ignore"].numpy(), scene["valid_box"].numpy())


def test_sampler_clicks_land_on_the_target_or_the_background_and_never_in_ignore() -> None:
    labels, valid = scene_arrays()
    sampler = MultiPointSampler(SamplerConfig())
    targets_seen = set()
    for seed in range(150):
        sampled = sampler.sample(labels, valid, np.random.default_rng(seed))
        assert sampled.clicks.shape == (48, 3)
        real = sampled.clicks[:, 0] >= 0
        assert (sampled.clicks[~real] == (-1, -1, 0)).all()
        positive = sampled.clicks[real & (sampled.clicks[:, 2] == 1)]
        negative = sampled.clicks[real & (sampled.clicks[:, 2] == 0)]
        assert len(positive) >= 1
        assert sampled.mask[positive[:, 0], positive[:, 1]].all()
        assert not sampled.mask[negative[:, 0], negative[:, 1]].any()
        assert valid[sampled.clicks[real, 0], sampled.clicks[real, 1]].all()
        targets_seen.add(tuple(sorted(np.unique(labels[sampled.mask]))))
    assert targets_seen == {(1,), (2,), (1, 2)}, "single objects and (merge_objects_prob 0.15) merged pairs"


def test_the_sampler_draws_the_same_from_a_store_entrys_int64_labels_and_their_uint16_copy() -> None:
    # The training set hands the sampler a store entry's labels as uint16 (`as_uint16_ids`), where the sampler counts
    # a few ids by comparisons rather than a histogram: the same targets and clicks as from the int64 map.
    labels, valid = scene_arrays()
    narrowed = as_uint16_ids(labels.astype(np.int64))
    assert narrowed.dtype == np.uint16
    sampler = MultiPointSampler(SamplerConfig())
    for seed in range(60):
        wide = sampler.sample(labels.astype(np.int64), valid, np.random.default_rng(seed))
        narrow = sampler.sample(narrowed, valid, np.random.default_rng(seed))
        assert np.array_equal(wide.mask, narrow.mask) and np.array_equal(wide.clicks, narrow.clicks)


def test_categorical_draws_what_numpy_choice_draws() -> None:
    """The sampler's draws among weighted parts and click counts take NumPy's `choice` shortcut; a NumPy whose
    `choice` drew otherwise would change every sample a seed gives, so this pins it."""
    weights = np.random.default_rng(0).random((40, 5)) ** 3
    for seed, row in enumerate(weights):
        probs = row / row.sum()
        ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
        cdf = cumulative(probs)
        assert [categorical(cdf, ours) for _ in range(200)] == [int(numpys.choice(5, p=probs)) for _ in range(200)]
    counts, numpys = np.random.default_rng(9), np.random.default_rng(9)
    probs = 0.8 ** np.arange(25) / (0.8 ** np.arange(25)).sum()
    cdf = geometric_cdf(25, 0.8)
    assert [categorical(cdf, counts) for _ in range(500)] == [int(numpys.choice(25, p=probs)) for _ in range(500)]


def test_sampler_click_counts_follow_ritms_geometric_law() -> None:
    labels, valid = scene_arrays()
    sampler = MultiPointSampler(SamplerConfig(merge_objects_prob=0.0))
    counts = [
        (sampler.sample(labels, valid, np.random.default_rng(seed)).clicks[:24, 0] >= 0).sum() for seed in range(300)
    ]
    probs = 0.8 ** np.arange(24)
    expected = 1 + (np.arange(24) * probs).sum() / probs.sum()
    assert abs(np.mean(counts) - expected) < 0.6
    assert max(counts) <= 24


def test_merged_targets_get_a_first_click_in_every_object() -> None:
    labels, valid = scene_arrays()
    sampler = MultiPointSampler(SamplerConfig(merge_objects_prob=1.0))
    for seed in range(20):
        sampled = sampler.sample(labels, valid, np.random.default_rng(seed))
        assert set(np.unique(labels[sampled.mask])) == {1, 2}
        first_two = sampled.clicks[:2]
        assert {labels[y, x] for y, x, _ in first_two} == {1, 2}


def test_sampler_without_objects_gives_only_negative_clicks() -> None:
    labels = np.zeros((SIZE, SIZE), dtype=np.int64)
    valid = np.ones((SIZE, SIZE), dtype=bool)
    for seed in range(10):
        sampled = MultiPointSampler(SamplerConfig()).sample(labels, valid, np.random.default_rng(seed))
        assert not sampled.mask.any()
        assert (sampled.clicks[:24] == (-1, -1, 0)).all()
        assert (sampled.clicks[24:, 2] == 0).all()


def test_next_click_goes_deep_into_the_larger_error() -> None:
    target = np.zeros((SIZE, SIZE), dtype=bool)
    target[10:40, 10:40] = True
    valid = np.ones_like(target)
    rng = np.random.default_rng(0)
    y, x, positive = next_click(np.zeros((SIZE, SIZE)), target, valid, rng)
    assert positive == 1 and 17 <= y <= 32 and 17 <= x <= 32
    y, x, positive = next_click(np.ones((SIZE, SIZE)), target, valid, rng)
    assert positive == 0 and not target[y, x]
    assert next_click(target.astype(float), target, valid, rng) is None


def test_next_click_ignores_errors_in_ignored_pixels() -> None:
    target = np.zeros((SIZE, SIZE), dtype=bool)
    target[50:58, 50:58] = True
    valid = np.ones_like(target)
    valid[:40, :] = False  # a large false-positive area, all ignored
    prob = np.zeros((SIZE, SIZE))
    prob[:40, :] = 1.0
    for seed in range(10):
        y, x, positive = next_click(prob, target, valid, np.random.default_rng(seed))
        assert positive == 1 and target[y, x]


@pytest.mark.parametrize("seed", range(20))
def test_add_next_clicks_draws_what_a_per_image_argwhere_draws(seed: int) -> None:
    # The batch's error regions are made on the device and the candidates listed flat: the same pixels in the same
    # order as thresholding each image on the CPU and listing them with np.argwhere, so a seed keeps its clicks.
    rng = np.random.default_rng(seed)
    prob = torch.from_numpy(rng.random((3, 1, SIZE, SIZE)).astype(np.float32)).clamp(0.2, 0.8)
    prob[0] = 0.49
    target = torch.from_numpy(rng.random((3, SIZE, SIZE)) > 0.4)
    valid = torch.from_numpy(rng.random((3, SIZE, SIZE)) > 0.1)
    clicks = torch.tensor([[[1, 1, 1], [-1, -1, 0]]] * 3)
    expected, draws = [], np.random.default_rng(seed)
    for p, t, v in zip(prob[:, 0].numpy(), target.numpy(), valid.numpy(), strict=True):
        fn, fp = t & (p < 0.49) & v, ~t & (p > 0.49) & v
        depths = [cv2.distanceTransform(np.pad(e, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1] for e in (fn, fp)]
        positive = depths[0].max() > depths[1].max()
        depth = depths[0] if positive else depths[1]
        candidates = np.argwhere(depth > max(d.max() for d in depths) / 2.0)
        y, x = candidates[int(draws.integers(len(candidates)))] if len(candidates) else (-1, -1)
        expected.append([int(y), int(x), int(positive) if len(candidates) else 0])
    updated = add_next_clicks(prob, target, valid, clicks, 1, np.random.default_rng(seed))
    assert updated[:, 1].tolist() == expected


def test_rounds_clicked_together_are_each_round_clicked_alone() -> None:
    """Probes side by side click together, each round drawing from its own generator."""
    rng = np.random.default_rng(5)
    target = torch.from_numpy(rng.random((2, SIZE, SIZE)) > 0.4)
    valid = torch.from_numpy(rng.random((2, SIZE, SIZE)) > 0.1)
    clicks = torch.tensor([[[1, 1, 1], [-1, -1, 0], [-1, -1, 0]]] * 2)
    probs = [torch.from_numpy(rng.random((2, 1, SIZE, SIZE)).astype(np.float32)) for _ in range(3)]
    slots, thresholds = (1, 2, 1), (0.49, 0.3, 0.49)
    alone = [
        add_next_clicks(prob, target, valid, clicks, slot, np.random.default_rng(index), threshold)
        for index, (prob, slot, threshold) in enumerate(zip(probs, slots, thresholds, strict=True))
    ]
    rounds = [
        ClickRound(prob, *split_valid(target, valid), clicks, slot, np.random.default_rng(index), threshold)
        for index, (prob, slot, threshold) in enumerate(zip(probs, slots, thresholds, strict=True))
    ]
    together = next_clicks_together(rounds)
    assert all(torch.equal(one, two) for one, two in zip(alone, together, strict=True))
    assert not torch.equal(together[0], together[2]), "each round clicks on its own prediction"


def test_add_next_clicks_fills_only_the_given_row() -> None:
    target = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    target[:, 20:40, 20:40] = True
    clicks = torch.tensor([[[25, 25, 1], [-1, -1, 0], [-1, -1, 0]]] * 2)
    updated = add_next_clicks(
        torch.zeros(2, 1, SIZE, SIZE), target, torch.ones_like(target), clicks, 2, np.random.default_rng(0)
    )
    assert torch.equal(updated[:, :2], clicks[:, :2])
    assert (updated[:, 2, 2] == 1).all() and target[0, updated[0, 2, 0], updated[0, 2, 1]]


# --- the loop -----------------------------------------------------------------------------------------------------


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_a_steps_torch_draws_depend_on_the_seed_and_step_alone(device: str) -> None:
    """Dropout inside a step draws the same whatever was drawn before it, and the stream outside goes on as if the
    step had drawn nothing."""

    def draws(seed: int, step: int) -> Tensor:
        with StepDraws(seed, step, torch.device(device)):
            return torch.nn.functional.dropout(torch.ones(64, device=device), 0.5).cpu()

    torch.manual_seed(0)
    first = draws(3, 10)
    torch.rand(5, device=device)
    assert torch.equal(draws(3, 10), first)
    assert not torch.equal(draws(3, 11), first)
    assert not torch.equal(draws(4, 10), first)
    torch.manual_seed(0)
    untouched = torch.rand(8, device=device)
    torch.manual_seed(0)
    draws(3, 10)
    assert torch.equal(torch.rand(8, device=device), untouched)


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_entered_again_goes_on_drawing_where_it_left_off(device: str) -> None:
    """Probes side by side take turns within a step: each one's draws, split among its turns with others' between
    them, are those of its step taken in one go."""

    def dropout() -> Tensor:
        return torch.nn.functional.dropout(torch.ones(64, device=device), 0.5).cpu()

    with StepDraws(3, 10, torch.device(device)):
        in_one_go = [dropout(), dropout()]
    mine, other = StepDraws(3, 10, torch.device(device)), StepDraws(4, 10, torch.device(device))
    taking_turns = []
    for _ in range(2):
        with mine:
            taking_turns.append(dropout())
        with other:
            dropout()
    assert all(torch.equal(one, two) for one, two in zip(in_one_go, taking_turns, strict=True))
    assert not torch.equal(taking_turns[0], taking_turns[1])


def test_a_few_steps_lower_the_loss_on_a_learnable_dataset() -> None:
    # One object per image and per-pixel features (patch size 1): a task the head can solve exactly, so the
    # normalized focal loss (an average over the hardest pixels) must fall, not just the IoU rise.
    dataset = SquaresDataset(count=4, with_features=False)
    projection = torch.randn(8, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    for item in dataset.items:
        item["labels"] = (item["labels"] == 1).long()
        pixels = normalize_images(item["image"][None], MEAN, STD)
        item["features"] = torch.nn.functional.conv2d(pixels, projection)[0].half()
    config = tiny_config("optim.lr=3e-3", "clicks.max_num_next_clicks=0")
    torch.manual_seed(0)
    trainer = Trainer(config, ISProbe(config.model, feature_dim=8, patch_size=1), dataset.preprocessing)
    fixed = trainer.to_device(sampled_batch(dataset, config, count=4))
    no_mask = torch.zeros(4, 1, SIZE, SIZE)
    with torch.no_grad():
        before, _ = trainer.loss_on(fixed, fixed.clicks, no_mask)
    items = ClickTrainingSet(dataset, MultiPointSampler(config.sampler), seed=0)
    for step in range(30):
        batch = default_collate([items[(step, index)] for index in (step % 2 * 2, step % 2 * 2 + 1)])
        trainer.train_step(batch, step, lr=3e-3)
    with torch.no_grad():
        after, logits = trainer.loss_on(fixed, fixed.clicks, no_mask)
    assert after.item() < 0.5 * before.item()
    assert batch_iou(logits, fixed.target, fixed.valid).min() > 0.9


def test_an_epoch_shows_every_item_once_in_a_view_drawn_for_that_epoch() -> None:
    # Three items with four views each, item-major as the cache reader stores them.
    entries = [{**square_scene(item), "item": item, "view": view} for item in range(3) for view in range(4)]
    sampler = MultiPointSampler(SamplerConfig(min_object_area=1))
    items = ClickTrainingSet(entries, sampler, seed=0, with_features=False, views_per_item=4)
    assert len(items) == 3
    epochs = [[items[(epoch, position)] for position in range(3)] for epoch in range(20)]
    assert all([sample["item"] for sample in epoch] == [0, 1, 2] for epoch in epochs)
    drawn = [[sample["view"] for sample in epoch] for epoch in epochs]
    assert {view for epoch in drawn for view in epoch} == {0, 1, 2, 3}, "every view comes up"
    assert len({tuple(epoch) for epoch in drawn}) > 1, "the views change from epoch to epoch"
    assert [items[(epoch, 1)]["view"] for epoch in range(20)] == [epoch[1] for epoch in drawn], "a function of the key"
    with pytest.raises(ValueError, match="not 5 views of each item"):
        ClickTrainingSet(entries, MultiPointSampler(SamplerConfig()), views_per_item=5)


def test_the_learning_rate_follows_the_epoch_milestones() -> None:
    schedule = StepSchedule.from_config(TrainConfig().schedule, 5e-5, num_items=20, batch_size=8)
    assert (schedule.steps_per_epoch, schedule.total_steps) == (2, 40)
    assert schedule.lr_at(16 * 2 + 1) == pytest.approx(5e-5)
    assert schedule.lr_at(17 * 2) == pytest.approx(5e-6)


def test_an_epoch_is_its_full_batches_as_ritms_loader_drops_the_last() -> None:
    """The research code's DataLoader has drop_last=True: SBD train's 8498 images in batches of 8 are 1062 steps an
    epoch, and the rate drops after 17 of them."""
    sbd = StepSchedule.from_config(TrainConfig().schedule, 5e-5, num_items=8498, batch_size=8)
    assert (sbd.steps_per_epoch, sbd.total_steps) == (1062, 21240)
    assert (sbd.lr_at(18053), sbd.lr_at(18054)) == (pytest.approx(5e-5), pytest.approx(5e-6))
    small = StepSchedule.from_config(TrainConfig().schedule, 5e-5, num_items=5, batch_size=8)
    assert small.steps_per_epoch == 1, "images that do not fill a batch are one batch an epoch"


def probe_metadata(probe: ISProbe, config: TrainConfig, step: int) -> dict:
    from isegprobe.config_loading import config_to_dict

    return {"config": config_to_dict(config), "model": probe.dims(), "step": step}


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    config = tiny_config(
        "model.click_encoder.name=simple_vit", "model.click_encoder.depth=1", "model.click_encoder.mlp_dim=32"
    )
    torch.manual_seed(1)
    probe = ISProbe(config.model, 16, 8).eval()
    checkpoint.save_checkpoint(tmp_path, "last", probe, probe_metadata(probe, config, 7))
    loaded, metadata = load_probe(tmp_path / "last.safetensors")
    features, image = torch.randn(2, 16, 8, 8), torch.randn(2, 3, SIZE, SIZE)
    clicks, prev_mask = torch.tensor([[[5, 6, 1]], [[30, 40, 0]]]), torch.rand(2, 1, SIZE, SIZE)
    assert torch.equal(loaded(features, image, clicks, prev_mask), probe(features, image, clicks, prev_mask))
    assert metadata["step"] == 7 and not loaded.training
    assert load_probe(tmp_path)[1]["step"] == 7


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def failing_fsync(descriptor: int) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="disk full"):
            atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"

    config = tiny_config()
    torch.manual_seed(0)
    good, bad = ISProbe(config.model, 16, 8).eval(), ISProbe(config.model, 16, 8).eval()
    checkpoint.save_checkpoint(tmp_path, "last", good, probe_metadata(good, config, 1))

    def failing_replace(source: str, destination: str) -> None:
        raise OSError("interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="interrupted"):
            checkpoint.save_checkpoint(tmp_path, "last", bad, probe_metadata(bad, config, 2))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.bin", "last.json", "last.safetensors"]
    loaded, metadata = load_probe(tmp_path)
    assert metadata["step"] == 1
    features, image, clicks = torch.randn(1, 16, 8, 8), torch.randn(1, 3, SIZE, SIZE), torch.tensor([[[9, 9, 1]]])
    prev_mask = torch.zeros(1, 1, SIZE, SIZE)
    assert torch.equal(loaded(features, image, clicks, prev_mask), good(features, image, clicks, prev_mask))


def test_a_checkpoint_interrupted_between_its_files_is_read_whole_and_completed(tmp_path: Path) -> None:
    """The states a save passes through, made with real saves: its files written under pending names, then moved
    into place, the metadata last. Stopped before the move, the previous checkpoint is read and the pending files
    are discarded; stopped after the weights moved, the pending metadata of their step is read and the next writer
    moves it into place."""
    config = tiny_config()
    torch.manual_seed(0)
    old, new = ISProbe(config.model, 16, 8).eval(), ISProbe(config.model, 16, 8).eval()
    run, later = tmp_path / "run", tmp_path / "later"
    run.mkdir(), later.mkdir()
    checkpoint.save_checkpoint(run, "last", old, probe_metadata(old, config, 1))
    checkpoint.save_checkpoint(later, "last", new, probe_metadata(new, config, 2))
    pending = checkpoint.pending

    (pending(run / "last.safetensors")).write_bytes((later / "last.safetensors").read_bytes())  # still writing
    assert checkpoint.load_probe(run)[1]["step"] == 1
    checkpoint.recover_checkpoint(run, "last")
    assert not list(run.glob("*.pending"))

    (run / "last.safetensors").write_bytes((later / "last.safetensors").read_bytes())  # the weights moved
    (pending(run / "last.json")).write_bytes((later / "last.json").read_bytes())
    loaded, metadata = checkpoint.load_probe(run)
    assert metadata["step"] == 2
    assert all(torch.equal(value, new.state_dict()[key]) for key, value in loaded.state_dict().items())
    checkpoint.recover_checkpoint(run, "last")
    assert json.loads((run / "last.json").read_text())["step"] == 2 and not list(run.glob("*.pending"))


def test_checkpoint_files_from_different_steps_are_refused(tmp_path: Path) -> None:
    config = tiny_config()
    probe = ISProbe(config.model, 16, 8)
    checkpoint.save_checkpoint(tmp_path, "last", probe, probe_metadata(probe, config, 3))
    metadata = json.loads((tmp_path / "last.json").read_text())
    (tmp_path / "last.json").write_text(json.dumps({**metadata, "step": 4}))
    with pytest.raises(UserError, match="incomplete"):
        load_probe(tmp_path)


def test_resume_continues_the_same_schedule_from_the_saved_step(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=4)
    overrides = ("schedule.epochs=3", "schedule.milestones=[1]", "optim.lr=1e-3")
    train(tiny_config(*overrides, "schedule.max_iters=5"), dataset, tmp_path / "straight", device="cpu", progress=False)
    train(tiny_config(*overrides, "schedule.max_iters=3"), dataset, tmp_path / "split", device="cpu", progress=False)
    interrupted = json.loads((tmp_path / "split" / "last.json").read_text())
    assert (interrupted["step"], interrupted["epoch"]) == (3, 1)
    assert interrupted["lr"] == pytest.approx(1e-4), "epoch 1 is past the milestone"
    with (tmp_path / "split" / "scalars.csv").open("a") as scalars:
        scalars.write("4,train/loss,9.99\n5,train/lo")  # logged past the last checkpoint by a run that then died
    summary = train(
        tiny_config(*overrides, "schedule.max_iters=5"),
        dataset,
        tmp_path / "split",
        device="cpu",
        resume=True,
        progress=False,
    )
    assert summary.step == 5
    # A run stopped by max_iters scores its partial epoch, so only the per-step rows match the straight run's.
    straight_rows, split_rows = (
        [row for row in (tmp_path / run / "scalars.csv").read_text().splitlines() if ",train/" in row]
        for run in ("straight", "split")
    )
    assert split_rows == straight_rows
    assert [row.split(",")[0] for row in straight_rows[::4]] == ["1", "2", "3", "4", "5"]
    resumed = json.loads((tmp_path / "split" / "last.json").read_text())
    assert resumed["step"] == 5
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert resumed["optimizer"]["state"] == {}
    straight = load_file(tmp_path / "straight" / "last.safetensors")
    split = load_file(tmp_path / "split" / "last.safetensors")
    assert straight.keys() == split.keys()
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    adam_straight = load_file(tmp_path / "straight" / "last.optim.safetensors")
    adam_split = load_file(tmp_path / "split" / "last.optim.safetensors")
    assert adam_split["state.0.step"].item() == 5
    assert all(torch.equal(adam_straight[key], adam_split[key]) for key in adam_straight)
    # The run's record keeps the setting a --resume changed, and from which step: no one config trains this run.
    assert resumed["config_changes"] == [{"step": 3, "changed": {"schedule.max_iters": [3, 5]}}]
    assert (
        (tmp_path / "split" / "config.yaml")
        .read_text()
        .startswith(
            "# Settings changed on --resume; the steps before each change trained with the values before it:\n"
            "#   from step 3 on: schedule.max_iters 3 -> 5\n"
        )
    )
    assert json.loads((tmp_path / "straight" / "last.json").read_text())["config_changes"] == []
    again = train(tiny_config(*overrides, "schedule.max_iters=6", "optim.lr=2e-3"), dataset, tmp_path / "split",
                  device="cpu", resume=True, progress=False)  # fmt: skip
    assert again.step == 6
    assert json.loads((tmp_path / "split" / "last.json").read_text())["config_changes"] == [
        {"step": 3, "changed": {"schedule.max_iters": [3, 5]}},
        {"step": 5, "changed": {"optim.lr": [1e-3, 2e-3], "schedule.max_iters": [5, 6]}},
    ]


def test_zero_steps_save_the_untrained_probe_that_training_starts_from(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=4)
    summary = train(tiny_config("schedule.max_iters=0"), dataset, tmp_path / "split", device="cpu", progress=False)
    assert summary.step == 0 and json.loads((tmp_path / "split" / "last.json").read_text())["step"] == 0
    train(tiny_config("schedule.max_iters=2"), dataset, tmp_path / "split", device="cpu", resume=True, progress=False)
    train(tiny_config("schedule.max_iters=2"), dataset, tmp_path / "straight", device="cpu", progress=False)
    straight = load_file(tmp_path / "straight" / "last.safetensors")
    resumed = load_file(tmp_path / "split" / "last.safetensors")
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


def test_the_trend_of_a_resumed_run_spans_the_steps_logged_before_the_resume(tmp_path: Path) -> None:
    """A run that logged steps 1 and 2 and was resumed for step 3 ended with `too few logged steps to show a trend`:
    the trend counted only the steps logged since the resume."""
    dataset = SquaresDataset(count=4)
    straight = train(tiny_config("schedule.max_iters=3"), dataset, tmp_path / "straight", device="cpu", progress=False)
    train(tiny_config("schedule.max_iters=2"), dataset, tmp_path / "split", device="cpu", progress=False)
    for _ in range(2):  # the second resume has nothing left to train, and says the same
        resumed = train(
            tiny_config("schedule.max_iters=3"), dataset, tmp_path / "split", device="cpu", resume=True, progress=False
        )
        assert (resumed.first_logged, resumed.last_logged) == (straight.first_logged, straight.last_logged)
        assert resumed.progress() == straight.progress()
    assert straight.progress().startswith("first -> last logged means: loss (normalized focal) ")


def test_max_iters_beyond_the_epochs_says_where_the_run_ends(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 4 items in batches of 2 for 1 epoch: 2 steps, however many --max-iters asks for.
    config = tiny_config("schedule.epochs=1", "schedule.milestones=[]", "schedule.max_iters=5")
    with caplog.at_level(logging.WARNING):
        summary = train(config, SquaresDataset(count=4), tmp_path / "run", device="cpu", progress=False)
    assert summary.step == 2
    assert "max_iters) 5: the schedule ends sooner, after schedule.epochs 1 of this store (2 steps)" in caplog.text


def test_a_new_run_never_overwrites_an_existing_one(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=4)
    train(tiny_config("schedule.max_iters=2"), dataset, tmp_path / "run", device="cpu", progress=False)
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny_config("schedule.max_iters=1"), dataset, tmp_path / "run", device="cpu", progress=False)
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()} == before


def test_a_new_run_never_trains_beside_another_runs_files_or_an_evaluations(tmp_path: Path) -> None:
    """A run folder that lost its last.json still holds that run's best checkpoint, which evaluation takes first, and
    its TensorBoard log; an evaluation's folder holds results that `report` would read as the run's."""
    dataset = SquaresDataset(count=4)
    run = tmp_path / "run"
    train(tiny_config("schedule.max_iters=2", "logging.tensorboard=true"), dataset, run, device="cpu", progress=False)
    (run / "last.json").unlink()
    results = tmp_path / "results"
    results.mkdir()
    (results / "ious.npz").write_bytes(b"")
    for folder, words in (
        (run, r"already holds files of a run \(last.safetensors, last.optim.safetensors, best.safetensors, "),
        (results, r"results: the folder of an evaluation \(ious.npz\); give the run a folder of its own"),
    ):
        before = sorted(path.relative_to(folder) for path in folder.rglob("*"))
        with pytest.raises(UserError, match=words):
            train(tiny_config("schedule.max_iters=1"), dataset, folder, device="cpu", progress=False)
        assert sorted(path.relative_to(folder) for path in folder.rglob("*")) == before


def test_a_run_that_stopped_before_its_first_checkpoint_is_taken_over_by_the_same_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed before its first checkpoint, a run leaves its config.yaml and logs and nothing to resume: running the
    same command again trains, saying what it takes over."""
    dataset = SquaresDataset(count=4)
    stopped = tmp_path / "stopped"
    (stopped / "tensorboard").mkdir(parents=True)
    (stopped / "config.yaml").write_text("seed: 3\n")
    with caplog.at_level(logging.WARNING, logger="isegprobe"):
        trained = train(tiny_config("schedule.max_iters=1"), dataset, stopped, device="cpu", progress=False)
    assert trained.step == 1 and (stopped / "last.json").is_file()
    assert "holds what a run that stopped before its first checkpoint left (config.yaml, tensorboard/)" in caplog.text


def test_a_run_with_not_one_object_to_segment_says_so(tmp_path: Path) -> None:
    """Objects all under sampler.min_object_area leave every target empty: a probe that learns nothing, whose IoU
    reads 1.0 once it predicts nothing."""
    dataset = SquaresDataset(count=4)
    trained = train(tiny_config("schedule.max_iters=2"), dataset, tmp_path / "objects", device="cpu", progress=False)
    assert (trained.samples, trained.samples_with_an_object) == (4, 4) and trained.nothing_to_segment() is None
    config = tiny_config("schedule.max_iters=2", "sampler.min_object_area=100000")
    empty = train(config, dataset, tmp_path / "none", device="cpu", progress=False)
    assert (empty.samples, empty.samples_with_an_object) == (4, 0)
    assert "not one of the 4 samples this run trained on had an object to segment" in empty.nothing_to_segment()


def test_a_learned_upsampler_without_weights_must_be_trained_or_given_weights(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=2)
    with pytest.raises(UserError, match="model.upsampler.weights=PATH"):
        train(tiny_config("model.upsampler.name=lift"), dataset, tmp_path / "frozen", device="cpu", progress=False)
    assert not (tmp_path / "frozen" / "last.safetensors").exists()
    config = tiny_config("model.upsampler.name=lift", "model.upsampler.fine_tune=true", "schedule.max_iters=1")
    assert train(config, dataset, tmp_path / "trained", device="cpu", progress=False).step == 1


def test_a_resume_keeps_its_probe_even_where_the_weights_would_fit_another(tmp_path: Path) -> None:
    """Another upsampler or click radius fits the saved weights, and the run went on with another probe under the new
    setting's name; the authors' upsampler file, whose weights the checkpoint's replace, may be named anew."""
    dataset, run = SquaresDataset(count=4), tmp_path / "run"
    train(tiny_config("schedule.max_iters=1"), dataset, run, device="cpu", progress=False)
    for changed, words in (
        (("model.upsampler.name=identity",), "model.upsampler.name 'bilinear' -> 'identity'"),
        (("model.click_radius=3", "model.align_corners=true"), "model.click_radius 5 -> 3, model.align_corners"),
    ):
        config = tiny_config("schedule.max_iters=2", *changed)
        with pytest.raises(UserError, match=f"--set changed the probe of a run under way \\({words}"):
            train(config, dataset, run, device="cpu", resume=True, progress=False)
    assert json.loads((run / "last.json").read_text())["step"] == 1
    weights = tmp_path / "lift.pth"
    torch.save(create_upsampler("lift", 16).state_dict(), weights)
    lift, moved = ("model.upsampler.name=lift", f"model.upsampler.weights={weights}"), tmp_path / "moved.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuidanceStatisticsWarning)
        train(tiny_config(*lift, "schedule.max_iters=1"), dataset, tmp_path / "lift", device="cpu", progress=False)
        weights.rename(moved)
        config = tiny_config(*lift, "schedule.max_iters=2", f"model.upsampler.weights={moved}")
        assert train(config, dataset, tmp_path / "lift", device="cpu", resume=True, progress=False).step == 2
    assert json.loads((tmp_path / "lift" / "last.json").read_text())["config_changes"] == [
        {"step": 1, "changed": {"model.upsampler.weights": [str(weights), str(moved)], "schedule.max_iters": [1, 2]}}
    ]


def test_a_run_saved_before_the_fine_tune_rename_loads_and_resumes(tmp_path: Path) -> None:
    """Run folders whose saved config says `model.upsampler.trainable` (now `fine_tune`) keep working."""
    dataset = SquaresDataset(count=2)
    config = tiny_config("model.upsampler.name=lift", "model.upsampler.fine_tune=true", "schedule.max_iters=1")
    train(config, dataset, tmp_path, device="cpu", progress=False)
    for saved in (tmp_path / "last.json", tmp_path / "best.json"):
        metadata = json.loads(saved.read_text())
        upsampler = metadata["config"]["model"]["upsampler"]
        upsampler["trainable"] = upsampler.pop("fine_tune")
        saved.write_text(json.dumps(metadata))
    with pytest.warns(RenamedConfigKeyWarning, match="model.upsampler.fine_tune"):
        probe, _ = load_probe(tmp_path)
    assert all(parameter.requires_grad for parameter in probe.upsampler.parameters())
    with pytest.warns(RenamedConfigKeyWarning):
        resumed = resume_config(tmp_path, ["schedule.max_iters=2"])
    assert train(resumed, dataset, tmp_path, device="cpu", resume=True, progress=False).step == 2
    assert json.loads((tmp_path / "last.json").read_text())["config"]["model"]["upsampler"]["fine_tune"] is True


@pytest.mark.parametrize(("preset", "preset_overrides"), sorted(RESEARCH_PRESETS.values()))
def test_the_research_presets_train_with_a_frozen_upsampler_from_its_file(
    preset: str, preset_overrides: tuple[str, ...], tmp_path: Path, featurizer: nn.Module
) -> None:
    """Each preset trains a step; a frozen upsampler's weights come out as its authors' file went in. Where the preset
    runs it in training mode, as the research code does, the step moves its BatchNorm's running statistics, and the
    probe loaded for evaluation has the authors' again, as the research code reloads their file."""
    model = load_train_config(preset, preset_overrides).model
    online = model.fusion == "before_backbone"
    dataset = SquaresDataset(count=2, featurizer=None if online else featurizer)
    dataset.preprocessing.update(mean=list(featurizer.mean), std=list(featurizer.std))
    overrides = [
        "data.batch_size=2",
        "data.size=null",
        "data.featurizer=null",  # the tests' small random featurizer stands in for the preset's featurizer
        "data.normalization=null",
        "schedule.max_iters=1",
        "logging.tensorboard=false",
    ]
    upsampler = create_upsampler(model.upsampler.name, featurizer.dim)
    if list(upsampler.parameters()):
        for module in upsampler.modules():  # statistics a training-mode pass would move
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
        torch.save(upsampler.state_dict(), tmp_path / "authors.pth")
        overrides.append(f"model.upsampler.weights={tmp_path / 'authors.pth'}")
    config = load_train_config(
        preset, [*preset_overrides, *overrides, "model.click_encoder.depth=1", "model.click_encoder.mlp_dim=64"]
    )
    summary = train(config, dataset, tmp_path / "run", featurizer=featurizer, online=online, progress=False)
    assert summary.step == 1
    saved = load_file(tmp_path / "run" / "last.safetensors")
    evaluated = load_probe(tmp_path / "run")[0].upsampler.state_dict()
    moves = model.upsampler.train_mode_when_frozen and any(key.endswith("running_mean") for key in evaluated)
    for key, value in upsampler.state_dict().items():
        assert torch.equal(evaluated[key], value), key
        statistic = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(saved[f"upsampler.{key}"], value) is not (moves and statistic), key
    assert not any(key.startswith("_featurizer") for key in saved)


def test_cache_and_online_give_the_same_loss(featurizer: nn.Module) -> None:
    dataset = SquaresDataset(count=2, featurizer=featurizer)
    dataset.preprocessing.update(mean=list(featurizer.mean), std=list(featurizer.std))
    config = tiny_config()
    torch.manual_seed(0)
    cached_probe = ISProbe(config.model, featurizer.dim, featurizer.patch_size)
    online_probe = copy.deepcopy(cached_probe)
    cached = Trainer(config, cached_probe, dataset.preprocessing)
    online = Trainer(config, online_probe, dataset.preprocessing, featurizer=featurizer, online=True)
    batch = sampled_batch(dataset, config)
    cached_batch, online_batch = cached.to_device(batch), online.to_device(batch)
    # Both as the probe takes them (float32); the cached ones hold the store's float16 values.
    assert cached_batch.features.dtype == online_batch.features.dtype == torch.float32
    assert torch.equal(cached_batch.features.half().float(), cached_batch.features)
    torch.testing.assert_close(cached_batch.features.float(), online_batch.features, rtol=2e-3, atol=2e-3)
    prev_mask = torch.zeros(2, 1, SIZE, SIZE)
    with torch.no_grad():
        cached_loss, _ = cached.loss_on(cached_batch, cached_batch.clicks, prev_mask)
        online_loss, _ = online.loss_on(online_batch, online_batch.clicks, prev_mask)
    assert cached_loss.item() == pytest.approx(online_loss.item(), rel=2e-3, abs=1e-4)


def test_early_fusion_trains_online_and_leaves_the_featurizer_untouched(
    tmp_path: Path, featurizer: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = SquaresDataset(count=2, with_features=False)
    dataset.preprocessing.update(mean=list(featurizer.mean), std=list(featurizer.std))
    config = tiny_config("model.fusion=before_backbone", "schedule.max_iters=2", "optim.lr=1e-3")
    frozen_before = {key: value.clone() for key, value in featurizer.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        train(config, dataset, tmp_path, featurizer=featurizer, device="cpu", progress=False)
    assert "online" in caplog.text
    assert all(torch.equal(value, frozen_before[key]) for key, value in featurizer.state_dict().items())
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in featurizer.parameters())

    saved = load_file(tmp_path / "last.safetensors")
    assert {key.split(".")[0] for key in saved} == {"click_encoder", "head"}
    torch.manual_seed(config.seed)
    initial = ISProbe(config.model, featurizer.dim, featurizer.patch_size, token_dim=featurizer.embed_dim)
    assert not torch.equal(saved["click_encoder.proj.weight"], initial.click_encoder.proj.weight.detach())

    probe, metadata = load_probe(tmp_path, featurizer=featurizer)
    assert metadata["online"] is True and probe.featurizer is featurizer


def test_a_resumed_run_replaces_the_logs_of_the_steps_it_takes_again(tmp_path: Path) -> None:
    """The interrupted run logged steps 1 to 5 and saved step 3; the resumed run logs 4 and 5 again."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = RunLogger(tmp_path, {})
    for step in range(1, 6):
        first.scalars({"train/loss": float(step)}, step)
    first.close()
    # As if the interrupted run's file were made in the second the resumed one starts in, by a writer whose counter
    # sorts after the resumed one's (TensorBoard reads files in name order: ".9" after ".10").
    (interrupted,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    host_and_process = interrupted.name.removeprefix("events.out.tfevents.").split(".", 1)[1].rsplit(".", 1)[0]
    interrupted.rename(interrupted.with_name(f"events.out.tfevents.{int(time.time()) + 1}.{host_and_process}.9"))
    resumed = RunLogger(tmp_path, {}, resumed_at=3)
    for step in (4, 5):
        resumed.scalars({"train/loss": 10.0 * step}, step)
    resumed.close()

    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]
    rows = (tmp_path / "scalars.csv").read_text().splitlines()[1:]
    assert [(int(step), float(value)) for step, _, value in (row.split(",") for row in rows)] == expected
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/loss")] == expected


def test_a_resume_beside_an_event_file_named_ahead_of_this_clock_does_not_wait_for_it(tmp_path: Path) -> None:
    """A run folder copied from a machine whose clock runs ahead holds event files named in seconds still to come
    here; the resume's wait for the next second must not wait for them."""
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / f"events.out.tfevents.{int(time.time()) + 3600}.elsewhere.1.0").write_bytes(b"")
    resumed = threading.Thread(target=lambda: RunLogger(tmp_path, {}, resumed_at=3).close(), daemon=True)
    resumed.start()
    resumed.join(timeout=30)
    assert not resumed.is_alive()


def test_wandb_without_the_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UserError, match="pip install"):
        RunLogger(tmp_path, {}, tensorboard=False, use_wandb=True)


def test_a_wandb_too_old_for_a_run_per_probe_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb", reason="wandb (a test extra) is not installed")
    monkeypatch.setattr(wandb, "__version__", "0.19.9")
    with pytest.raises(UserError, match=r"wandb 0\.19\.10 or newer .* 0\.19\.9 is installed"):
        RunLogger(tmp_path, {}, tensorboard=False, use_wandb=True)


def test_train_command_trains_logs_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isegprobe.commands import train as train_command

    dataset = SquaresDataset(count=4)
    monkeypatch.setattr(train_command, "_training_dataset", lambda path, data: dataset)
    run_dir = tmp_path / "run"
    common = ["--store", str(tmp_path), "--out", str(run_dir), "--device", "cpu"]
    settings = ["--set", "model.head.width=8", "--set", "data.batch_size=2", "--set", "logging.image_every_steps=2"]
    settings += ["--set", "logging.every_steps=1"]
    result = CliRunner().invoke(train_command.train, ["--config", "fast_cpu", *settings, *common, "--max-iters", "2"])
    assert result.exit_code == 0, result.output
    assert re.search(r"trained to step 2; best train_iou \d\.\d{4} \(step \d\)", result.output), result.output
    assert "training on 4 images in batches of 2: 2 steps an epoch, 2 steps in all" in result.output
    assert "first -> last logged means: loss (normalized focal)" in result.output
    assert any((run_dir / "tensorboard").iterdir()), "TensorBoard events are written"
    assert (run_dir / "best.safetensors").is_file()

    result = CliRunner().invoke(train_command.train, [*common, "--resume", "--max-iters", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "last.json").read_text())["step"] == 3

    result = CliRunner().invoke(train_command.train, ["--set", "optim.lrr=1", *common])
    assert result.exit_code == 1 and "'optim.lrr'" in result.output


def test_a_run_folder_removed_while_training_writes_it_ends_the_run_in_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder removed mid-run (a scratch disk cleaned): the next write into it (TensorBoard's, a checkpoint's)
    meets ENOENT, which came out as TensorBoard's thread's traceback and the command's. One line names the folder now,
    and the TensorBoard thread's own report of the same error is kept quiet."""
    from isegprobe.commands import train as train_command
    from isegprobe.errors import quiet_disk_errors_in_threads
    from isegprobe.training import run_loop

    monkeypatch.setattr(train_command, "_training_dataset", lambda path, data: SquaresDataset(count=4))
    run_dir = tmp_path / "run"
    original_steps = run_loop.train_steps_together

    def steps_removing_the_run_folder_at_step_3(requests):
        if requests[0].step == 3:
            # Moved aside in one step, then removed: removing it in place races TensorBoard's thread, which may write a
            # file into it between rmtree's listing and its rmdir (ENOTEMPTY from the test itself).
            moved = run_dir.rename(tmp_path / "moved")
            shutil.rmtree(moved, ignore_errors=True)
        return original_steps(requests)

    monkeypatch.setattr(run_loop, "train_steps_together", steps_removing_the_run_folder_at_step_3)
    reported = []
    monkeypatch.setattr(threading, "__excepthook__", reported.append)
    monkeypatch.setattr(threading, "excepthook", quiet_disk_errors_in_threads)
    settings = ["--set", "model.head.width=8", "--set", "data.batch_size=2", "--set", "logging.every_steps=1"]
    common = ["--store", str(tmp_path), "--out", str(run_dir), "--device", "cpu", "--max-iters", "6"]
    result = CliRunner().invoke(train_command.train, ["--config", "fast_cpu", *settings, *common])
    assert result.exit_code == 1, result.output
    assert f"{run_dir} was removed or moved while this command ran, so it stopped" in result.output
    assert "Traceback" not in result.output and reported == [], "no thread printed its traceback"
    assert not run_dir.exists(), "nothing made the run folder again"


def test_data_views_trains_on_a_subset_of_the_stores_views(tmp_path: Path) -> None:
    from isegprobe.commands import train as train_command

    store = builtin_store(tmp_path / "cache", split="train", size=28)
    common = ["--config", "quickstart", "--store", str(store), "--device", "cpu", "--max-iters", "1"]

    def train_on(views: str, run: str):
        return CliRunner().invoke(train_command.train, [*common, "--set", f"data.views={views}", "--out", run])

    result = train_on("[hflip]", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["data"]["views"] == ["hflip"]
    result = train_on("[crop1]", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "data.views asks for crop1, which the store lacks (it has identity, hflip)" in result.output


def test_a_run_refused_before_it_writes_leaves_no_folder_behind(tmp_path: Path) -> None:
    from isegprobe.commands import train as train_command

    store = builtin_store(tmp_path / "cache", split="train", size=28)
    run = tmp_path / "runs" / "lift"
    arguments = ["--config", "quickstart", "--store", str(store), "--device", "cpu", "--out", str(run)]
    result = CliRunner().invoke(train_command.train, [*arguments, "--set", "model.upsampler.name=lift"])
    assert result.exit_code == 1 and "has no weights" in result.output, result.output
    assert not (tmp_path / "runs").exists(), "an empty run folder reads as a run that was started"


@pytest.mark.parametrize("steps", [1, 0], ids=["trained", "untrained-baseline"])
def test_the_run_keeps_a_config_yaml_that_trains_the_same_probe(tmp_path: Path, steps: int) -> None:
    """A run of zero steps (`--max-iters 0`, the untrained baseline) wrote none."""
    dataset = SquaresDataset(count=4)
    config = tiny_config(f"schedule.max_iters={steps}", "optim.lr=3e-4")
    train(config, dataset, tmp_path / "run", device="cpu", progress=False)
    assert load_train_config(tmp_path / "run" / "config.yaml") == config


def test_without_a_config_the_preset_suits_the_device_and_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from isegprobe.commands import train as train_command

    monkeypatch.setattr(train_command, "_training_dataset", lambda path, data: SquaresDataset(count=4))
    common = ["--store", str(tmp_path), "--device", "cpu", "--max-iters", "1", "--set", "data.batch_size=2"]
    result = CliRunner().invoke(train_command.train, [*common, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "no --config: preset fast_cpu (a light head" in result.output
    assert "minutes a step on a CPU" not in result.output
    saved = json.loads((tmp_path / "run" / "last.json").read_text())["config"]
    assert saved == config_to_dict(load_train_config("fast_cpu", ["schedule.max_iters=1", "data.batch_size=2"]))
    assert train_command.DEFAULT_PRESETS["cuda"] == "sbd_224"


def test_the_research_recipe_named_on_a_cpu_says_its_steps_take_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """README's training command, copied onto a laptop: ten steps took nine minutes with nothing said but the bar."""
    from isegprobe.commands import train as train_command

    monkeypatch.setattr(train_command, "_training_dataset", lambda path, data: SquaresDataset(count=4))
    common = ["--store", str(tmp_path), "--device", "cpu", "--max-iters", "1", "--set", "data.batch_size=2"]
    research = ["--config", "sbd_224", "--set", "data.size=64", "--set", "data.views=null"]
    result = CliRunner().invoke(train_command.train, [*common, *research, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (
        "note: model.head.width null runs the research recipe's full head on the upsampled features, minutes a step "
        "on a CPU; --config fast_cpu or quickstart train in seconds a step"
    ) in result.output


def test_featurizer_options_of_a_training_that_runs_no_featurizer_are_refused(tmp_path: Path) -> None:
    """--featurizer and --weights without --online were taken without a word, and the probe trained on the store's
    features of another model than the one named."""
    from isegprobe.commands import train as train_command

    common = ["--store", str(tmp_path), "--device", "cpu", "--max-iters", "1", "--out", str(tmp_path / "run")]
    chosen = ["--featurizer", "vit_small_patch16_224", "--weights", "/no/such/file.pth"]
    result = CliRunner().invoke(train_command.train, [*common, "--config", "quickstart", *chosen])
    assert result.exit_code == 1, result.output
    assert (
        "--featurizer vit_small_patch16_224 and --weights /no/such/file.pth: no featurizer runs in this training (it "
        "reads the store's features), so they would not be read; pass --online"
    ) in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore::isegprobe.featurizers.RandomWeightsWarning")
def test_a_resumed_run_computes_its_features_as_it_did_before(tmp_path: Path) -> None:
    """--online is an option of the command, which a run's config does not hold: `train --resume` without it went on
    from the store's features for a run that trained online, and with it online for a run that trained from the
    store, without a word, so the resumed run's numbers were neither run's. A resumed run now goes on as its
    last.json records, saying so where --online was left out, and --online on a run from the store is refused."""
    from isegprobe.commands import train as train_command

    store = builtin_store(tmp_path / "cache", split="train", size=28, views="identity")
    start = ["--config", "quickstart", "--store", str(store), "--set", "data.size=28", "--device", "cpu"]

    def run(*arguments: object) -> tuple[int, str]:
        result = CliRunner().invoke(train_command.train, [str(argument) for argument in arguments])
        return result.exit_code, result.output

    assert run(*start, "--online", "--out", tmp_path / "straight", "--max-iters", 4)[0] == 0
    assert run(*start, "--online", "--out", tmp_path / "stopped", "--max-iters", 2)[0] == 0
    code, output = run("--resume", "--out", tmp_path / "stopped", "--max-iters", 4, "--device", "cpu")
    assert code == 0, output
    assert f"the run in {tmp_path / 'stopped'} trained online (--online, the featurizer in the loop)" in output
    assert json.loads((tmp_path / "stopped" / "last.json").read_text())["online"] is True
    straight, resumed = (load_file(tmp_path / name / "last.safetensors") for name in ("straight", "stopped"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key

    assert run(*start, "--out", tmp_path / "from_store", "--max-iters", 1)[0] == 0
    code, output = run("--resume", "--online", "--out", tmp_path / "from_store", "--max-iters", 2, "--device", "cpu")
    assert code == 1, output
    assert f"--online: the run in {tmp_path / 'from_store'} trained from the store's features" in output
    assert json.loads((tmp_path / "from_store" / "last.json").read_text())["step"] == 1


@pytest.mark.parametrize("upsampler", ["lift", "loftup"])
def test_authors_upsampler_weights_guided_by_other_statistics_than_they_learnt_from_are_said(
    upsampler: str, tmp_path: Path
) -> None:
    """LiFT (as FeatUp and AnyUp) learnt from ImageNet-normalized guidance images; LoftUp rescales each image by its
    own range, so any statistics do."""
    weights = tmp_path / f"{upsampler}.pth"
    torch.save(create_upsampler(upsampler, 16).state_dict(), weights)
    config = tiny_config(
        "schedule.max_iters=1", f"model.upsampler.name={upsampler}", f"model.upsampler.weights={weights}"
    )
    dataset = SquaresDataset(count=2)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        train(config, dataset, tmp_path / "own", device="cpu", progress=False)
    guidance = [str(warning.message) for warning in said if warning.category is GuidanceStatisticsWarning]
    if upsampler == "loftup":
        assert guidance == []
        return
    assert guidance == [
        "model.upsampler.weights: lift's authors trained it on guidance images normalized by ImageNet's mean and std; "
        "this store's images are normalized by mean [0.5, 0.5, 0.5] and std [0.5, 0.5, 0.5], which it gets instead. A "
        "store extracted with --normalization imagenet gives it the images it learnt from"
    ]
    dataset.preprocessing = {**dataset.preprocessing, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuidanceStatisticsWarning)
        train(config, dataset, tmp_path / "imagenet", device="cpu", progress=False)
