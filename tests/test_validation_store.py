"""`train --val-store`: the best checkpoint is picked on a validation store, which must match the training store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from stores import builtin_store

from isegprobe.cache import CachedDataset
from isegprobe.config_loading import load_train_config
from isegprobe.errors import UserError
from isegprobe.training import train

OVERRIDES = ["schedule.max_iters=12", "data.batch_size=8", "model.head.width=16"]


def test_the_best_checkpoint_is_the_one_with_the_best_validation_iou(tmp_path: Path) -> None:
    training = CachedDataset(builtin_store(tmp_path / "cache", split="train", size=56))
    validation = CachedDataset(builtin_store(tmp_path / "cache", split="test", size=56))
    run, config = tmp_path / "run", load_train_config("quickstart", OVERRIDES)
    train(config, training, run, device="cpu", val_dataset=validation, progress=False)

    with (run / "scalars.csv").open() as scalars:
        val_ious = {int(row["step"]): float(row["value"]) for row in csv.DictReader(scalars) if row["tag"] == "val/iou"}
    assert sorted(val_ious) == [3, 6, 9, 12], "one validation per epoch: 24 training images in batches of 8"
    best = json.loads((run / "best.json").read_text())
    assert best["best_metric"]["name"] == "val_iou"
    assert best["best_metric"]["value"] == max(val_ious.values())
    assert best["step"] == max(val_ious, key=val_ious.get)


def test_a_validation_store_unlike_the_training_store_is_refused(tmp_path: Path) -> None:
    training = CachedDataset(builtin_store(tmp_path / "cache", split="train", size=56))
    config = load_train_config("quickstart", OVERRIDES)
    larger = CachedDataset(builtin_store(tmp_path / "cache", split="test", size=112))
    with pytest.raises(UserError, match="extracted at 112 px, the training store at 56 px"):
        train(config, training, tmp_path / "run", device="cpu", val_dataset=larger, progress=False)
    keys = builtin_store(tmp_path / "cache", split="test", size=56, featurizer="vit_small_patch14_dinov2:keys")
    with pytest.raises(UserError, match="output: training store 'tokens', --val-store .* 'keys'"):
        train(config, training, tmp_path / "run", device="cpu", val_dataset=CachedDataset(keys), progress=False)
    letterboxed = CachedDataset(builtin_store(tmp_path / "letterbox", split="test", size=56, resize="letterbox"))
    with pytest.raises(UserError, match="extracted with --resize letterbox, the training store with --resize stretch"):
        train(config, training, tmp_path / "run", device="cpu", val_dataset=letterboxed, progress=False)
    assert not (tmp_path / "run" / "last.json").exists()


def test_a_validation_store_of_the_training_images_is_refused(tmp_path: Path) -> None:
    """The best checkpoint picked on the training images is the probe that remembers them best: the training store
    itself, or its split extracted again with other views, is refused, and so is a resume of a run that recorded one
    (a run saved before this was checked, without the validation store's fingerprint)."""
    training = CachedDataset(builtin_store(tmp_path / "cache", split="train", size=56))
    again = CachedDataset(builtin_store(tmp_path / "again", split="train", size=56, views="identity"))
    config = load_train_config("quickstart", [*OVERRIDES, "schedule.max_iters=3"])
    for validation in (training, again):
        with pytest.raises(UserError, match=r"the training store's images \(builtin/train\): the best checkpoint"):
            train(config, training, tmp_path / "run", device="cpu", val_dataset=validation, progress=False)
    assert not (tmp_path / "run").exists()
    validation = CachedDataset(builtin_store(tmp_path / "cache", split="test", size=56))
    train(config, training, tmp_path / "run", device="cpu", val_dataset=validation, progress=False)
    metadata = json.loads((tmp_path / "run" / "last.json").read_text())
    metadata |= {"val_store_path": training.path, "val_store_fingerprint": None}
    (tmp_path / "run" / "last.json").write_text(json.dumps(metadata))
    longer = load_train_config("quickstart", [*OVERRIDES, "schedule.max_iters=6"])
    with pytest.raises(UserError, match="this run picked its best on them so far, so only a new run can pick it"):
        train(longer, training, tmp_path / "run", device="cpu", val_dataset=training, resume=True, progress=False)


def test_a_resume_picks_the_best_checkpoint_on_what_the_run_picked_it_on(tmp_path: Path) -> None:
    """Its training IoU, or the one validation store: another measurement would be compared with the best so far."""
    training = CachedDataset(builtin_store(tmp_path / "cache", split="train", size=56))
    validation = CachedDataset(builtin_store(tmp_path / "cache", split="test", size=56))
    other = CachedDataset(builtin_store(tmp_path / "other", split="test", size=56, views="identity"))
    short, longer = (load_train_config("quickstart", [*OVERRIDES, f"schedule.max_iters={steps}"]) for steps in (3, 6))
    train(short, training, tmp_path / "plain", device="cpu", progress=False)
    with pytest.raises(UserError, match=r"on its training IoU \(no --val-store\); resuming with --val-store"):
        train(longer, training, tmp_path / "plain", device="cpu", val_dataset=validation, resume=True, progress=False)
    train(short, training, tmp_path / "validated", device="cpu", val_dataset=validation, progress=False)
    with pytest.raises(UserError, match="resuming with no --val-store would compare another measurement"):
        train(longer, training, tmp_path / "validated", device="cpu", resume=True, progress=False)
    with pytest.raises(UserError, match=r"is another store \(its views or items differ\)"):
        train(longer, training, tmp_path / "validated", device="cpu", val_dataset=other, resume=True, progress=False)
    resumed = train(longer, training, tmp_path / "validated", device="cpu", val_dataset=validation, resume=True,
                    progress=False)  # fmt: skip
    assert resumed.step == 6 and resumed.best_metric_name == "val_iou"


def test_a_resume_whose_recorded_validation_store_is_gone_says_so(tmp_path: Path) -> None:
    """The store a run recorded, removed or moved since: the refusal said `not a feature store (no zarr.json)` of a
    path the user never typed, as if they had given it."""
    from click.testing import CliRunner

    from isegprobe.cli import main

    training = builtin_store(tmp_path / "cache", split="train", size=56)
    validation = builtin_store(tmp_path / "val", split="test", size=56)
    short = load_train_config("quickstart", [*OVERRIDES, "schedule.max_iters=3"])
    train(short, CachedDataset(training), tmp_path / "run", device="cpu", val_dataset=CachedDataset(validation),
          progress=False)  # fmt: skip
    validation.rename(tmp_path / "moved.zarr")
    result = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "run"), "--max-iters", "6"])
    assert result.exit_code == 1
    assert (
        f"--resume: the validation store the run in {tmp_path / 'run'} recorded ({validation.resolve()}) is not "
        "there; pass --val-store STORE"
    ) in result.output
