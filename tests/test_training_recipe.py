"""iSegProbe's (RITM's) SBD training recipe on cached views: images drawn by RITM's per-image weights, crops without
an object drawn again, and the on-the-fly augmentations that the cached views leave out."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from isegprobe.config import AugmentConfig, SamplerConfig
from isegprobe.errors import UserError
from isegprobe.training.augment import photometric, shift_rotate
from isegprobe.training.click_dataset import ClickTrainingSet, EpochShuffleSampler
from isegprobe.training.points_sampler import MultiPointSampler
from isegprobe.training.sample_weights import draw_probabilities, read_sample_scores

SIZE = 32
SCORES = [("2008_000002", 0.97), ("2008_000008", 0.91), ("2008_000015", 0.5), ("2008_000019", 0.05)]


def write_ritm_scores(path: Path) -> Path:
    """RITM's assets/sbd_samples_weights.pkl layout: a list of (index, image name, numpy float32 score)."""
    with path.open("wb") as file:
        pickle.dump([(index, name, np.float32(score)) for index, (name, score) in enumerate(SCORES)], file)
    return path


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_ritms_scores_read_from_its_pickle_or_a_csv_and_nothing_else_is_unpickled(tmp_path: Path) -> None:
    from_pickle = read_sample_scores(write_ritm_scores(tmp_path / "sbd_samples_weights.pkl"))
    csv = tmp_path / "scores.csv"
    csv.write_text("index,image,score\n" + "".join(f"{i},{n},{s}\n" for i, (n, s) in enumerate(SCORES)))
    assert from_pickle == pytest.approx(dict(SCORES)) and read_sample_scores(csv) == pytest.approx(dict(SCORES))

    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps([(0, "2008_000002", _RunsACommand(marker))]))
    with pytest.raises(UserError, match=r"hostile.pkl: refused to unpickle posix.system"):
        read_sample_scores(hostile)
    assert not marker.exists()


@pytest.mark.parametrize("score", ["1.5", "-5", "nan"])
def test_a_score_outside_zero_to_one_is_refused_naming_its_image(tmp_path: Path, score: str) -> None:
    """A score of 1.5 made (1 - score) ** gamma a complex number (a TypeError traceback); one of -5 trained on, its
    image drawn 9 times as often as a score of 0 would."""
    csv = tmp_path / "scores.csv"
    csv.write_text(f"index,image,score\n0,2008_000002,0.5\n1,2008_000003,{score}\n")
    with pytest.raises(UserError, match=r"image 2008_000003 has the score .*; scores must lie in \[0, 1\]"):
        read_sample_scores(csv)


def test_an_epoch_draws_images_by_one_minus_score_to_the_gamma_with_replacement() -> None:
    names = [name for name, _ in SCORES]
    probabilities = draw_probabilities(names, dict(SCORES), gamma=1.25)
    weights = np.array([(1 - score) ** 1.25 for _, score in SCORES])
    np.testing.assert_allclose(probabilities, weights / weights.sum())

    sampler = EpochShuffleSampler(len(names), seed=3, probabilities=probabilities)
    counts = np.zeros(len(names))
    for epoch in range(400):
        sampler.start(epoch)
        drawn = [index for _, index in sampler]
        assert len(drawn) == len(names)  # an epoch is as many draws as images, as RITM's
        counts += np.bincount(drawn, minlength=len(names))
    np.testing.assert_allclose(counts / counts.sum(), probabilities, atol=0.03)
    sampler.start(7)
    again = EpochShuffleSampler(len(names), seed=3, probabilities=probabilities)
    again.start(7)
    assert list(sampler) == list(again), "the same seed and epoch draw the same images"

    with pytest.raises(UserError, match="no score for 1 of the store's 2 images"):
        draw_probabilities(["2008_000002", "2009_999999"], dict(SCORES), 1.25)


class TwoViews(torch.utils.data.Dataset):
    """Entries as the cache reader gives them: two views per item, the first without any object."""

    def __init__(self, items: int) -> None:
        self.items = items

    def __len__(self) -> int:
        return 2 * self.items

    def __getitem__(self, index: int) -> dict:
        item, view = divmod(index, 2)
        labels = torch.zeros(SIZE, SIZE, dtype=torch.int64)
        if view == 1:
            labels[8:20, 8:20] = 1
        return {
            "image": torch.full((3, SIZE, SIZE), 100, dtype=torch.uint8),
            "labels": labels,
            "ignore": torch.zeros(SIZE, SIZE, dtype=torch.bool),
            "valid_box": torch.tensor([0, 0, SIZE, SIZE]),
            "features": torch.zeros(4, 4, 4),
            "item": item,
            "view": view,
        }


@pytest.mark.parametrize(("keep", "expected_empty"), [(0.0, 0), (1.0, None)])
def test_a_view_without_an_object_is_drawn_again_unless_the_coin_keeps_it(keep: float, expected_empty) -> None:
    sampler = MultiPointSampler(SamplerConfig(min_object_area=1))
    items = ClickTrainingSet(TwoViews(8), sampler, seed=0, views_per_item=2, keep_background_prob=keep)
    views = [items[(epoch, position)]["view"] for epoch in range(4) for position in range(8)]
    empty = views.count(0)
    if expected_empty is None:
        assert 0 < empty < len(views), "without redraws, the epoch's draw stands, empty or not"
    else:
        assert empty == expected_empty


def square_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:44, 16:40] = 200
    labels = np.zeros((64, 64), np.int64)
    labels[20:44, 16:40] = 1
    return image, labels, np.ones((64, 64), bool)


def test_shift_rotate_moves_image_labels_and_valid_pixels_together() -> None:
    image, labels, valid = square_scene()
    moved = None
    for seed in range(8):  # p 0.75: some draws leave the sample as it is
        out = shift_rotate(image, labels, valid, np.random.default_rng(seed))
        if not np.array_equal(out[1], labels):
            moved = out
            break
    assert moved is not None
    image_out, labels_out, valid_out = moved
    bright = image_out[..., 0] > 100
    assert (bright == (labels_out == 1)).mean() > 0.99, "the object's pixels and its label moved together"
    assert valid_out.all(), "pixels brought in from outside are background that counts"
    again = shift_rotate(image, labels, valid, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(moved, again, strict=True))


def test_photometric_jitter_changes_pixels_within_its_ranges_and_is_reproducible() -> None:
    image, _, _ = square_scene()
    outputs = [photometric(image, np.random.default_rng(seed)) for seed in range(20)]
    assert any(not np.array_equal(out, image) for out in outputs)
    assert all(out.dtype == np.uint8 and out.shape == image.shape for out in outputs)
    # brightness +-0.25 of 255, contrast x(0.85..1.4), shift +-10: the object (200) stays above the background (0)
    assert all(out[30, 30].min() > out[0, 0].max() for out in outputs)
    np.testing.assert_array_equal(photometric(image, np.random.default_rng(5)), outputs[5])


def test_photometric_jitter_rounds_as_albumentations_float32_tables() -> None:
    """albumentations 0.5.2 (the research code's) builds its brightness-contrast and RGB-shift tables in float32:
    `lut = np.arange(256).astype("float32"); lut *= alpha; lut += beta`, clipped and cast to uint8. Seeds 592 and
    2855 draw shifts whose float64 tables differ from those by a grey level at some level."""
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, axis=2)
    for seed in (592, 2855, 2948, 3670):
        reference, rng = image, np.random.default_rng(seed)
        if rng.random() < 0.75:
            alpha, beta = 1.0 + rng.uniform(-0.15, 0.4), rng.uniform(-0.25, 0.25) * 255.0
            lut = np.arange(256).astype("float32")
            lut *= alpha
            lut += beta
            reference = np.clip(lut, 0, 255).astype(np.uint8)[reference]
        if rng.random() < 0.75:
            shifts = rng.uniform(-10.0, 10.0, size=3)
            channels = []
            for channel in range(3):
                lut = np.arange(256).astype("float32")
                lut += shifts[channel]
                channels.append(np.clip(lut, 0, 255).astype(np.uint8)[reference[..., channel]])
            reference = np.stack(channels, axis=-1)
        np.testing.assert_array_equal(photometric(image, np.random.default_rng(seed)), reference, err_msg=str(seed))


def test_rotations_need_online_training_and_augmented_samples_stay_deterministic() -> None:
    sampler = MultiPointSampler(SamplerConfig(min_object_area=1))
    augment = AugmentConfig(photometric=True, shift_rotate=True)
    with pytest.raises(UserError, match="cached features cannot follow a rotation"):
        ClickTrainingSet(TwoViews(2), sampler, views_per_item=2, augment=augment)
    items = ClickTrainingSet(TwoViews(2), sampler, views_per_item=2, with_features=False, augment=augment)
    plain = ClickTrainingSet(TwoViews(2), sampler, views_per_item=2, with_features=False)
    samples = [items[(epoch, 0)] for epoch in range(6)]
    assert any(not torch.equal(sample["image"], plain[(epoch, 0)]["image"]) for epoch, sample in enumerate(samples))
    assert all(torch.equal(sample["image"], items[(epoch, 0)]["image"]) for epoch, sample in enumerate(samples))
