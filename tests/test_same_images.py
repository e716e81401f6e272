"""Training on a test split, and evaluating a probe on the images it was trained on, are allowed and said."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from stores import builtin_store

from isegprobe.cli import main

TRAIN = ["--config", "fast_cpu", "--set", "model.head.width=8", "--max-iters", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("same_images")
    return {split: builtin_store(out, split=split, size=28, views="identity") for split in ("train", "test")}


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), prog_name="isegprobe")
    assert result.exit_code == 0, result.output
    return result.output


def test_training_on_a_test_split_says_that_its_evaluations_there_measure_training_images(stores, tmp_path):
    said = "training on the test split of builtin: an evaluation on builtin afterwards measures images this probe"
    with pytest.warns(UserWarning, match=said):
        invoke("train", *TRAIN, "--store", str(stores["test"]), "--out", str(tmp_path / "on_test"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        invoke("train", *TRAIN, "--store", str(stores["train"]), "--out", str(tmp_path / "on_train"))
    assert not [w for w in caught if "test split" in str(w.message)]


def test_evaluating_on_the_training_images_says_so_and_on_others_does_not(stores, tmp_path):
    run = tmp_path / "run"
    invoke("train", *TRAIN, "--store", str(stores["train"]), "--out", str(run))
    evaluate = ["evaluate", "--checkpoint", str(run), "--max-clicks", "2"]
    with pytest.warns(UserWarning, match=r"this probe was trained on these images \(builtin/train\)"):
        invoke(*evaluate, "--store", str(stores["train"]), "--out", str(tmp_path / "same"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        invoke(*evaluate, "--store", str(stores["test"]), "--out", str(tmp_path / "other"))
    assert not [w for w in caught if "trained on these images" in str(w.message)]


def test_an_untrained_baseline_evaluated_on_the_training_store_is_not_said_to_remember_it(stores, tmp_path):
    run = tmp_path / "baseline"
    invoke("train", *TRAIN, "--max-iters", "0", "--store", str(stores["train"]), "--out", str(run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        invoke(
            "evaluate",
            "--checkpoint",
            str(run),
            "--max-clicks",
            "2",
            "--store",
            str(stores["train"]),
            "--out",
            str(tmp_path / "res"),
        )
    assert not [w for w in caught if "trained on these images" in str(w.message)]
