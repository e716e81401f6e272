"""A weights path that an option or a config key gives is checked as the command starts: a missing or unreadable
file was found only once the dataset, the store, the featurizer (a hub download included) and the model had been
read or built, and was named without the option or key that gave it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from stores import builtin_store

from isegprobe.cli import main
from isegprobe.upsamplers import create_upsampler

FEATURIZER_FILE = "(expected hub, random or a weights file)"
WEIGHTS_FILE = "(expected a weights file)"
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
    "model.upsampler.weights={missing}": f"model.upsampler.weights: {{missing}} does not exist {WEIGHTS_FILE}",
    "train --config quickstart --store {tmp} --out {tmp}/runs --variant 'plain model.head.width=32' --variant 'lift "
    "model.upsampler.name=lift model.upsampler.weights={missing}'": (
        f"{{tmp}}/runs/lift: model.upsampler.weights: {{missing}} does not exist {WEIGHTS_FILE}"
    ),
    "train --config quickstart --store {tmp} --out {tmp}/run --online --weights {missing}": (
        f"--weights: {{missing}} does not exist {FEATURIZER_FILE}"
    ),
    "plot features --store {tmp} --upsamplers lift --weights lift={missing} --out {tmp}/panels.png": (
        f"--weights lift: {{missing}} does not exist {WEIGHTS_FILE}"
    ),
    # the featurizer's weights default to hub's: nothing is downloaded
    "import-seed {tmp}/seed.pth --upsampler-weights {missing} --out {tmp}/imported": (
        f"--upsampler-weights: {{missing}} does not exist {WEIGHTS_FILE}"
    ),
    "import-seed {tmp}/seed.pth --weights {missing} --out {tmp}/imported": (
        f"--weights: {{missing}} does not exist {FEATURIZER_FILE}"
    ),
    "cache verify {tmp} --recompute 1 --weights {missing}": f"--weights: {{missing}} does not exist {FEATURIZER_FILE}",
    "demo --checkpoint {tmp} --weights {missing}": f"--weights: {{missing}} does not exist {WEIGHTS_FILE}",
    "plot predictions {tmp} --object 1 --weights {missing}": f"--weights: {{missing}} does not exist {WEIGHTS_FILE}",
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
        (lambda path: path.mkdir(), f"is a folder {WEIGHTS_FILE}"),
        (lambda path: os.mkfifo(path), f"is not a regular file {WEIGHTS_FILE}"),  # opening it would wait forever
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
        f"model.upsampler.weights: {weights} does not exist {WEIGHTS_FILE}; the run's config names it, and --set "
        "model.upsampler.weights=PATH says where it is now"
    ) in output
    code, output = invoke("train", "--resume", "--out", run, "--max-iters", "1", "--set", f"{KEY}={moved}")
    assert code == 0, output


def weights_files(folder: Path, count: int) -> list[Path]:
    """Files of `count` different ViT-S/14 weights (seeds 0, 1, ...), as a user's local checkpoints would be."""
    import timm

    files = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True)
        files.append(folder / f"featurizer{seed}.pth")
        torch.save(model.state_dict(), files[-1])
    return files


def run_trained_with(weights: Path, folder: Path) -> tuple[Path, Path]:
    """(run, store): the quickstart probe, as initialised, on a store of the built-in scenes that the featurizer
    with the weights file `weights` extracted."""
    from isegprobe.cache.extract import ExtractionRequest, extract

    request = ExtractionRequest(
        featurizer="vit_small_patch14_dinov2",
        weights=str(weights),
        dataset="builtin",
        root=None,
        split="test",
        size=28,
        views="identity",
        out=str(folder / "cache"),
        workers=0,
    )
    store = extract(request).path
    run = folder / "run"
    code, output = invoke("train", "--config", "quickstart", "--store", store, "--out", run, "--max-iters", 0)
    assert code == 0, output
    return run, store


def first_object(results: Path) -> str:
    """The id of the first object an evaluation in `results` finished."""
    with np.load(results / "ious.npz") as arrays:
        return str(arrays["builtin/ids"][0])


def test_a_checkpoints_featurizer_file_that_moved_is_named_and_evaluate_weights_gives_its_new_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint records the path of its featurizer's weights file, which on another machine (or after a move)
    is not there: evaluating online said only that the file does not exist, and offered `--weights`, which evaluate did
    not have. Now evaluate --weights gives the file's new place; a file of other weights is refused by its sha256, and
    one given to an evaluation that runs no featurizer is refused as unread.

    `plot predictions` replays such an evaluation: it looked for the file where the checkpoint says, and offered
    evaluate's option. It now reads the file the evaluation read, and takes --weights where that one moved too.
    Training online from the store (whose featurizer it runs) said only that a file it was never given does not
    exist."""
    trained_with, other = weights_files(tmp_path, 2)
    run, store = run_trained_with(trained_with, tmp_path)
    moved = trained_with.rename(tmp_path / "moved.pth")
    train_online = ["train", "--config", "quickstart", "--store", store, "--online", "--max-iters", 1]
    code, output = invoke(*train_online, "--out", tmp_path / "online_lost")
    assert code == 1, output
    assert f"{trained_with}: the featurizer weights file the training store's features were extracted with" in output
    assert "`--weights PATH` says where it is now" in output
    assert invoke(*train_online, "--weights", moved, "--out", tmp_path / "online_found")[0] == 0
    online = ["evaluate", "--checkpoint", run, "--online", "--datasets", "builtin", "--max-clicks", "1"]
    online += ["--max-objects", "2", "--device", "cpu"]

    code, output = invoke(*online, "--out", tmp_path / "lost")
    assert code == 1, output
    assert f"{trained_with}: the featurizer weights file the probe was trained with" in output
    assert "`--weights PATH` says where it is now" in output
    monkeypatch.chdir(tmp_path)  # the file given by a relative path, the replay run from another folder
    code, output = invoke(*online, "--weights", moved.name, "--out", tmp_path / "found")
    assert code == 0, output
    found = tmp_path / "found"
    monkeypatch.chdir(found)
    replay = ["plot", "predictions", found, "--object", first_object(found), "--device", "cpu"]
    code, output = invoke(*replay)
    assert code == 0 and "largest difference over the 1 clicks 0\n" in output, output
    again = moved.rename(tmp_path / "moved_again.pth")
    code, output = invoke(*replay)
    assert code == 1 and "`--weights PATH` says where it is now" in output, output
    code, output = invoke(*replay, "--weights", again)
    assert code == 0 and "largest difference over the 1 clicks 0\n" in output, output
    moved = again.rename(moved)
    code, output = invoke(*online, "--weights", other, "--out", tmp_path / "other")
    assert code == 1 and "weights_sha256" in output, output
    from_store = ["evaluate", "--checkpoint", run, "--store", store, "--weights", moved]
    code, output = invoke(*from_store, "--out", tmp_path / "unread")
    assert code == 1 and f"--weights {moved}: no featurizer runs in this evaluation" in output, output


def test_the_demo_finds_each_probes_moved_featurizer_file_among_its_weights_by_sha256(tmp_path: Path) -> None:
    """The demo rebuilds each probe's featurizer from the file its checkpoint records, and had no option to say
    where that file went: a probe trained on one machine could not be shown on another. `demo --weights` gives the
    files' new places, in any order, each going to the probes whose checkpoints record its sha256; a file that is
    no probe's is refused, naming what each checkpoint records."""
    from isegprobe.demo.app import demo_probes

    files = weights_files(tmp_path, 3)
    runs = [run_trained_with(files[index], tmp_path / f"trained{index}")[0] for index in range(2)]
    moved = [file.rename(file.with_name(f"moved{index}.pth")) for index, file in enumerate(files)]
    demo = ["demo", "--checkpoint", runs[0], "--compare", runs[1], "--dataset", "builtin", "--device", "cpu"]

    code, output = invoke(*demo)
    assert code == 1, output
    assert f"{files[0]}: the featurizer weights file the probe was trained with" in output
    assert "`--weights PATH` says where it is now" in output
    code, output = invoke(*demo, "--weights", moved[1], "--weights", moved[2])
    assert code == 1, output
    assert f"--weights {moved[2]}: no probe's featurizer was built from this file" in output
    assert f"{runs[0] / 'last.safetensors'}: vit_small_patch14_dinov2, weights {files[0]} (sha256 " in output
    code, output = invoke(*demo, "--weights", moved[1])
    assert code == 1 and f"{files[0]}: the featurizer weights file the probe was trained with" in output, output

    probes = demo_probes([str(run) for run in runs], torch.device("cpu"), [str(moved[1]), str(moved[0])])
    built_from = [probe.predictor.featurizer.provenance["weights"] for probe in probes]
    assert built_from == [str(moved[0]), str(moved[1])]
