"""A run's checkpoint files as evaluate, demo and plot (`load_probe`) and train --resume (`restore_training_state`)
read them: weights or optimizer state that are not finite are refused by file and tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from isegprobe.config import TrainConfig
from isegprobe.config_loading import config_to_dict, load_train_config
from isegprobe.errors import UserError
from isegprobe.model import ISProbe
from isegprobe.training.checkpoint import load_probe, restore_training_state, resume_config, save_checkpoint

FEATURE_DIM, PATCH = 16, 8


def small_config() -> TrainConfig:
    return load_train_config("fast_cpu", ["model.head.width=8", "logging.tensorboard=false"])


def saved_run(run_dir: Path) -> tuple[ISProbe, torch.optim.Optimizer]:
    """A run folder with `last.*` at step 1 of an Adam that has taken a step (so its optimizer file holds moments)."""
    config = small_config()
    torch.manual_seed(0)
    probe = ISProbe(config.model, FEATURE_DIM, PATCH)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for parameter in probe.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    metadata = {"config": config_to_dict(config), "model": probe.dims(), "step": 1}
    save_checkpoint(run_dir, "last", probe, metadata, optimizer)
    return probe, optimizer


def spoil(path: Path, key: str | None, value: float) -> str:
    """Put `value` into one tensor of a checkpoint file (its first floating-point one without `key`), keeping the
    step it is stamped with; returns the key."""
    with safe_open(str(path), "pt") as file:
        stamp = file.metadata()
    tensors = load_file(path)
    key = key or next(name for name, tensor in tensors.items() if tensor.is_floating_point() and tensor.dim())
    tensors[key] = torch.full_like(tensors[key], value)
    save_file(tensors, path, metadata=stamp)
    return key


def fresh_training_state() -> tuple[ISProbe, torch.optim.Optimizer]:
    probe = ISProbe(small_config().model, FEATURE_DIM, PATCH)
    return probe, torch.optim.Adam(probe.parameters(), lr=1e-3)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_probe_whose_weights_are_not_finite_is_refused_by_file_and_tensor(tmp_path: Path, value: float) -> None:
    # evaluate exited 0 with IoU 0 everywhere, the demo and plot drew empty masks
    saved_run(tmp_path)
    weights = tmp_path / "last.safetensors"
    spoil(weights, "head.logit.bias", value)
    with pytest.raises(UserError) as error:
        load_probe(tmp_path)
    assert str(error.value) == (
        f"{weights}: NaN or infinite values in: head.logit.bias; a checkpoint with them cannot be used"
    )


def test_resuming_from_weights_that_are_not_finite_is_refused_by_file_and_tensor(tmp_path: Path) -> None:
    # train --resume said the loss became NaN and blamed optim.lr
    saved_run(tmp_path)
    spoil(tmp_path / "last.safetensors", "head.logit.bias", float("nan"))
    with pytest.raises(UserError, match=r"last\.safetensors: NaN or infinite values in: head\.logit\.bias;"):
        restore_training_state(tmp_path, *fresh_training_state())


def test_resuming_from_optimizer_moments_that_are_not_finite_names_the_optimizer_file(tmp_path: Path) -> None:
    saved_run(tmp_path)
    moments = tmp_path / "last.optim.safetensors"
    key = spoil(moments, None, float("nan"))
    with pytest.raises(UserError) as error:
        restore_training_state(tmp_path, *fresh_training_state())
    assert str(error.value).startswith(f"{moments}: NaN or infinite values in: {key};")


def test_a_finite_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    probe, optimizer = saved_run(tmp_path)
    resumed, resumed_optimizer = fresh_training_state()
    assert restore_training_state(tmp_path, resumed, resumed_optimizer)["step"] == 1
    assert all(torch.equal(value, probe.state_dict()[key]) for key, value in resumed.state_dict().items())
    assert resumed_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def edit_metadata(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda document: document.update(format_version=99),
            "checkpoint format version 99, and this isegprobe reads version 1: a newer isegprobe wrote it",
        ),
        (lambda document: document.pop("config"), "its config is None, where train writes the run's settings"),
        (lambda document: document.update(config=5), "its config is 5, where train writes the run's settings"),
        (
            lambda document: document["model"].update(bogus=1),
            "where train writes the probe's feature_dim, patch_size, token_dim",
        ),
        (
            lambda document: document["model"].update(patch_size="8"),
            "its model.patch_size is '8', where train writes a whole number of 1 or more",
        ),
        (
            lambda document: document["config"]["model"].update(click_dropout=0.1),
            "its recorded config does not read here (unknown config key 'model.click_dropout'",
        ),
        (
            lambda document: document["config"]["optim"].update(lr=-1.0),
            "its recorded config does not read here (config key 'optim.lr' must be a finite number > 0",
        ),
    ],
)
def test_a_checkpoint_json_that_does_not_rebuild_its_probe_here_is_refused_by_name(tmp_path: Path, edit, message):
    """A newer format version was read as this one's; a missing or other-shaped config or model size failed in a
    traceback where the probe was built, and a setting that did not read blamed a --config nobody passed."""
    saved_run(tmp_path)
    metadata = tmp_path / "last.json"
    edit_metadata(metadata, edit)
    for load in (lambda: load_probe(tmp_path), lambda: resume_config(tmp_path)):
        with pytest.raises(UserError) as error:
            load()
        assert str(error.value).startswith(f"{metadata}: ") and message in str(error.value), str(error.value)
