"""A weights path that an option or a config key gives is checked as the command starts: a missing or unreadable
file was found only once the dataset, the store, the featurizer (a hub download included) and the model had been
read or built, and was named without the option or key that gave it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from stores import builtin_store

from isegprobe.cli import main
from isegprobe.upsamplers import create_upsampler

FEATURIZER_FILE = "(expected hub, random or a weights file)"
UPSAMPLER_FILE = "(expected a weights file)"
KEY = "model.upsampler.weights"


def invoke(*arguments: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(argument) for argument in arguments])
    return result.exit_code, result.output


def lift_train(store: Path, out: Path, weights: Path, *more: str) -> list[object]:
    lift = ("--set", "model.upsampler.name=lift", "--set", f"model.upsampler.weights={weights}")
    return ["train", "--config", "quickstart", "--store", store, "--out", out, *lift, *more]


# Each command with a weights path that is not there ({missing}), and an input that is read only later, by the slow
# work the check must come before: a dataset root or a store ({tmp}) that is not one, a research checkpoint that is
# not one ({tmp}/seed.pth), or the hub. Command line -> what it must say of the path.
COMMANDS = {
    "extract-features --featurizer vit_small_patch14_dinov2 --weights {missing} --dataset grabcut --root "
    "{tmp}/nowhere --out {tmp}/cache": f"--weights: {{missing}} does not exist {FEATURIZER_FILE}",
    "quickstart --weights {missing} --out {tmp}/quick": f"--weights: {{missing}} does not exist {FEATURIZER_FILE}",
    "train --config quickstart --store {tmp} --out {tmp}/run --set model.upsampler.name=lift --set "
    "model.upsampler.weights={missing}": f"model.upsampler.weights: {{missing}} does not exist {UPSAMPLER_FILE}",
    "train --config quickstart --store {tmp} --out {tmp}/runs --variant 'plain model.head.width=32' --variant 'lift "
    "model.upsampler.name=lift model.upsampler.weights={missing}'": (
        f"{{tmp}}/runs/lift: model.upsampler.weights: {{missing}} does not exist {UPSAMPLER_FILE}"
    ),
    "train --config quickstart --store {tmp} --out {tmp}/run --online --weights {missing}": (
        f"--weights: {{missing}} does not exist {FEATURIZER_FILE}"
    ),
    "plot features --store {tmp} --upsamplers lift --weights lift={missing} --out {tmp}/panels.png": (
        f"--weights lift: {{missing}} does not exist {UPSAMPLER_FILE}"
    ),
    # the featurizer's weights default to hub's: nothing is downloaded
    "import-seed {tmp}/seed.pth --upsampler-weights {missing} --out {tmp}/imported": (
        f"--upsampler-weights: {{missing}} does not exist {UPSAMPLER_FILE}"
    ),
    "import-seed {tmp}/seed.pth --weights {missing} --out {tmp}/imported": (
        f"--weights: {{missing}} does not exist {FEATURIZER_FILE}"
    ),
    "cache verify {tmp} --recompute 1 --weights {missing}": f"--weights: {{missing}} does not exist {FEATURIZER_FILE}",
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_weights_file_is_named_with_its_option_before_anything_else_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "seed.pth").write_bytes(b"read only after the weights paths are checked")
    before = sorted(tmp_path.iterdir())
    paths = {"tmp": tmp_path, "missing": tmp_path / "missing.pth"}
    code, output = invoke(*shlex.split(command.format(**paths)))
    assert code == 1, output
    assert f"Error: {COMMANDS[command].format(**paths)}" in output
    assert sorted(tmp_path.iterdir()) == before, "nothing was written"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: path.mkdir(), f"is a folder {UPSAMPLER_FILE}"),
        (lambda path: os.mkfifo(path), f"is not a regular file {UPSAMPLER_FILE}"),  # opening it would wait forever
        (lambda path: path.symlink_to(path.parent / "moved" / "lift.pth"), "is a link to a file that does not exist"),
    ],
)
def test_a_weights_path_that_is_no_file_to_read_is_named_so(
    tmp_path: Path, make: Callable[[Path], None], said: str
) -> None:
    path = tmp_path / "lift.pth"
    make(path)
    code, output = invoke(*lift_train(tmp_path, tmp_path / "run", path))
    assert code == 1, output
    assert f"model.upsampler.weights: {path} {said}" in output


@pytest.mark.filterwarnings("ignore::isegprobe.featurizers.RandomWeightsWarning")
def test_a_resumed_run_whose_upsampler_file_moved_is_told_how_to_name_its_new_place(tmp_path: Path) -> None:
    """A resumed run builds its probe from the file again (the checkpoint's weights then replace the file's); it was
    told only that the file does not exist, where --set model.upsampler.weights names where it went."""
    store = builtin_store(tmp_path / "cache", split="train", size=28, views="identity")
    weights, moved = tmp_path / "lift.pth", tmp_path / "moved.pth"
    torch.save(create_upsampler("lift", 384).state_dict(), weights)
    run = tmp_path / "run"
    code, output = invoke(*lift_train(store, run, weights, "--set", "data.size=28", "--max-iters", "0"))
    assert code == 0, output
    weights.rename(moved)
    code, output = invoke("train", "--resume", "--out", run, "--max-iters", "1")
    assert code == 1, output
    assert (
        f"model.upsampler.weights: {weights} does not exist {UPSAMPLER_FILE}; the run's config names it, and --set "
        "model.upsampler.weights=PATH says where it is now"
    ) in output
    code, output = invoke("train", "--resume", "--out", run, "--max-iters", "1", "--set", f"{KEY}={moved}")
    assert code == 0, output


@pytest.mark.filterwarnings("ignore::isegprobe.featurizers.RandomWeightsWarning")
def test_a_checkpoints_featurizer_file_that_moved_is_named_and_evaluate_weights_gives_its_new_place(
    tmp_path: Path,
) -> None:
    """A checkpoint records the path of its featurizer's weights file, which on another machine (or after a move)
    is not there: evaluating online said only that the file does not exist, and offered `--weights`, which evaluate did
    not have. Now evaluate --weights gives the file's new place; a file of other weights is refused by its sha256, and
    one given to an evaluation that runs no featurizer is refused as unread."""
    import timm

    from isegprobe.cache.extract import ExtractionRequest, extract

    files = {}
    for seed, name in ((0, "trained_with.pth"), (1, "other.pth")):
        torch.manual_seed(seed)
        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True)
        files[name] = tmp_path / name
        torch.save(model.state_dict(), files[name])
    request = ExtractionRequest(
        featurizer="vit_small_patch14_dinov2",
        weights=str(files["trained_with.pth"]),
        dataset="builtin",
        root=None,
        split="test",
        size=28,
        views="identity",
        out=str(tmp_path / "cache"),
        workers=0,
    )
    store = extract(request).path
    assert (
        invoke("train", "--config", "quickstart", "--store", store, "--out", tmp_path / "run", "--max-iters", "0")[0]
        == 0
    )
    moved = files["trained_with.pth"].rename(tmp_path / "moved.pth")
    online = ["evaluate", "--checkpoint", tmp_path / "run", "--online", "--datasets", "builtin", "--max-clicks", "1"]
    online += ["--max-objects", "2", "--device", "cpu"]

    code, output = invoke(*online, "--out", tmp_path / "lost")
    assert code == 1, output
    assert f"{files['trained_with.pth']}: the featurizer weights file the probe was trained with" in output
    assert "`evaluate --weights PATH` says where it is now" in output
    code, output = invoke(*online, "--weights", moved, "--out", tmp_path / "found")
    assert code == 0, output
    code, output = invoke(*online, "--weights", files["other.pth"], "--out", tmp_path / "other")
    assert code == 1 and "weights_sha256" in output, output
    from_store = ["evaluate", "--checkpoint", tmp_path / "run", "--store", store, "--weights", moved]
    code, output = invoke(*from_store, "--out", tmp_path / "unread")
    assert code == 1 and f"--weights {moved}: no featurizer runs in this evaluation" in output, output
