"""data.click_sampling device: targets and initial clicks drawn for a whole batch on the device are the loader's,
bit for bit (the same seeds, the same regions), and so is the training that follows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config import SamplerConfig
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.training import train
from isegprobe.training.batch_sampler import BatchPointSampler, square_dilation
from isegprobe.training.click_dataset import ClickTrainingSet
from isegprobe.training.points_sampler import MultiPointSampler

KERNEL = np.ones((3, 3), np.uint8)
CONFIGS = {
    "default": SamplerConfig(),
    "merged triples": SamplerConfig(merge_objects_prob=1.0, max_merged_objects=3, min_object_area=1),
    "no erosion, no ring": SamplerConfig(positive_erode_iters=0, expand_ratio=0.0),
    "always eroded, few points": SamplerConfig(positive_erode_prob=1.0, max_points=5, prob_gamma=0.5),
    "wide ring": SamplerConfig(
        expand_ratio=0.6, negative_border_prob=0.9, negative_bg_prob=0.05, negative_other_prob=0.05
    ),
}


def label_maps(rng: np.random.Generator, count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Label maps [count, H, W] of 0 to 4 rectangles and blobs (some overlapping, some tiny, one map empty) and
    valid maps with a padded side and scattered ignored pixels."""
    labels = np.zeros((count, height, width), np.int64)
    valid = np.ones((count, height, width), bool)
    for index in range(1, count):
        for label in range(1, 1 + index % 5):
            top, left = rng.integers(0, height - 3), rng.integers(0, width - 3)
            labels[index, top : top + rng.integers(2, height // 2), left : left + rng.integers(2, width // 2)] = label
        valid[index, :, : rng.integers(0, width // 4)] = False
        valid[index][rng.random((height, width)) < 0.03] = False
    return labels, valid


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 9])
def test_square_dilation_and_erosion_are_opencvs(radius: int) -> None:
    rng = np.random.default_rng(radius)
    masks = rng.random((3, 37, 52)) < 0.04
    masks[1, :, -1] = True  # touches the edge: OpenCV neither dilates nor erodes from outside the image
    dilated = square_dilation(torch.from_numpy(masks), radius).numpy()
    eroded = (~square_dilation(~torch.from_numpy(masks), radius)).numpy()
    for mask, got_dilated, got_eroded in zip(masks, dilated, eroded, strict=True):
        as_bytes = mask.astype(np.uint8)
        np.testing.assert_array_equal(got_dilated, cv2.dilate(as_bytes, KERNEL, iterations=radius).astype(bool))
        np.testing.assert_array_equal(got_eroded, cv2.erode(as_bytes, KERNEL, iterations=radius).astype(bool))


def test_square_dilation_takes_a_radius_per_image() -> None:
    masks = np.random.default_rng(0).random((4, 30, 41)) < 0.01
    radii = [0, 3, 7, 1]
    got = square_dilation(torch.from_numpy(masks), torch.tensor(radii)).numpy()
    for mask, radius, dilated in zip(masks, radii, got, strict=True):
        expected = cv2.dilate(mask.astype(np.uint8), KERNEL, iterations=radius).astype(bool)
        np.testing.assert_array_equal(dilated, expected)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batch_draws_are_the_loaders(name: str, device: str) -> None:
    config = CONFIGS[name]
    loader_sampler, batch_sampler = MultiPointSampler(config), BatchPointSampler(config)
    rng = np.random.default_rng(7)
    for round_index in range(6):
        labels, valid = label_maps(rng, 6, 40 + 8 * round_index, 57)
        seeds = [[round_index, 3, image] for image in range(len(labels))]
        on_device = (torch.from_numpy(array).to(device) for array in (labels, valid))
        target, clicks = batch_sampler.sample(*on_device, torch.tensor(seeds))
        assert target.dtype == torch.bool and clicks.dtype == torch.long and clicks.device.type == device
        target, clicks = target.cpu(), clicks.cpu()
        for image, seed in enumerate(seeds):
            expected = loader_sampler.sample(labels[image], valid[image], np.random.default_rng(seed))
            np.testing.assert_array_equal(target[image].numpy(), expected.mask, err_msg=f"{name} {seed}")
            np.testing.assert_array_equal(clicks[image].numpy(), expected.clicks, err_msg=f"{name} {seed}")


@pytest.mark.parametrize("device", DEVICES)
def test_batch_draws_are_the_loaders_on_grabcut(grabcut_root: Path, device: str) -> None:
    """Real objects (640 x 480, one object and its ignored band each), several seeds of each image in a batch."""
    loader_sampler, batch_sampler = MultiPointSampler(SamplerConfig()), BatchPointSampler(SamplerConfig())
    for path in sorted((grabcut_root / "boundary_GT").glob("*.bmp"))[:8]:
        truth = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        labels, valid = (truth == 255).astype(np.int64), truth != 128
        seeds = [[seed, 11] for seed in range(4)]
        batch = (torch.from_numpy(np.stack([array] * 4)).to(device) for array in (labels.astype(np.int32), valid))
        target, clicks = (tensor.cpu() for tensor in batch_sampler.sample(*batch, torch.tensor(seeds)))
        for image, seed in enumerate(seeds):
            expected = loader_sampler.sample(labels, valid, np.random.default_rng(seed))
            np.testing.assert_array_equal(target[image].numpy(), expected.mask, err_msg=path.name)
            np.testing.assert_array_equal(clicks[image].numpy(), expected.clicks, err_msg=path.name)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("batch-sampler"), split="train", views="identity,hflip", size=56)


def test_a_sample_left_to_the_device_carries_its_labels_and_seed(store: Path) -> None:
    config = SamplerConfig()
    drawn = ClickTrainingSet(CachedDataset(store), MultiPointSampler(config), seed=5, views_per_item=2)
    deferred = ClickTrainingSet(
        CachedDataset(store), MultiPointSampler(config), seed=5, views_per_item=2, draw_on_device=True
    )
    keys = [(0, 3), (2, 9), (1, 0), (4, 17)]
    loader_samples = [drawn[key] for key in keys]
    device_samples = [deferred[key] for key in keys]
    assert "clicks" not in device_samples[0] and "target" not in device_samples[0]
    target, clicks = BatchPointSampler(config).sample(
        torch.stack([sample["labels"] for sample in device_samples]),
        torch.stack([sample["valid"] for sample in device_samples]),
        torch.stack([sample["sample_seed"] for sample in device_samples]),
    )
    for index, expected in enumerate(loader_samples):
        assert torch.equal(target[index], expected["target"]) and torch.equal(clicks[index], expected["clicks"])
        assert torch.equal(device_samples[index]["image"], expected["image"])


def test_training_with_clicks_drawn_on_the_device_is_training_with_the_loaders(store: Path, tmp_path: Path) -> None:
    overrides = ["data.batch_size=4", "schedule.max_iters=6", "logging.tensorboard=false", "data.size=56"]
    held_out = builtin_store(tmp_path / "held_out", split="test", views="identity", size=56)
    for where in ("loader", "device"):
        config = load_train_config("quickstart", [*overrides, f"data.click_sampling={where}"])
        dataset, val_dataset = CachedDataset(store), CachedDataset(held_out)
        train(config, dataset, tmp_path / where, device="cpu", val_dataset=val_dataset, progress=False)
    loader, device = (load_file(tmp_path / where / "last.safetensors") for where in ("loader", "device"))
    assert loader.keys() == device.keys()
    assert all(torch.equal(loader[key], device[key]) for key in loader)
    logged = [(tmp_path / where / "scalars.csv").read_text() for where in ("loader", "device")]
    assert logged[0] == logged[1]


def test_click_sampling_must_be_a_known_place() -> None:
    with pytest.raises(UserError, match="data.click_sampling' must be one of auto, loader, device, got 'gpu'"):
        load_train_config("quickstart", ["data.click_sampling=gpu"])
