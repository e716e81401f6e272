"""Files and requests made by someone else: a crafted pickle or TorchScript archive never runs its code (each one
here would create a marker file if it did), and the web demo answers only its own page, within its limits. Every
refusal names the file, option or limit, comes without a traceback, and leaves what was written as it was."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dataset_trees import write_image
from stores import builtin_store
from torch import Tensor, nn

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config import load_train_config
from isegprobe.data import create_dataset
from isegprobe.state_dicts import TorchScriptWarning
from isegprobe.training.trainer import train

SIZE = 56


def invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def refused(result, *words: str) -> None:
    """The command stopped with status 1 and a message holding `words`, without a traceback."""
    assert result.exit_code == 1, result.output
    for word in words:
        assert word in result.output
    assert "Traceback" not in result.output


class OpensMarker:
    """Pickled, it names `open` (io.open): unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class WritesMarker(nn.Module):
    """Scripted and saved, loading it runs its __setstate__, which creates the marker file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, Tensor, bool]:
        return self.marker, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, Tensor, bool]) -> None:
        self.marker, self.training = state[0], state[2]
        self.weight = state[1] + 0 * torch.from_file(self.marker, shared=True, size=2).sum()


def torchscript_archive(path: Path, marker: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(WritesMarker(str(marker))).save(str(path))
    assert not marker.exists()
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of the built-in scenes and the quickstart probe trained on it (as initialised): what train,
    import-seed and the demo read."""
    root = tmp_path_factory.mktemp("untrusted")
    store = builtin_store(root / "cache", size=SIZE, views="identity")
    train(load_train_config("quickstart", ["schedule.max_iters=0"]), CachedDataset(store), root / "run",
          device="cpu", progress=False)  # fmt: skip
    return root


def store_of(world: Path) -> Path:
    return next((world / "cache").glob("*.zarr"))


# COCO+LVIS: RITM's pickles, read with an unpickler that admits builtin containers and numpy arrays only.


def cocolvis_tree(root: Path, annotations: object, packed_masks: object, protocol: int = 4) -> Path:
    """RITM's COCO+LVIS layout with one image (id 42), the annotation file and its mask file pickled as given."""
    split = root / "val"
    write_image(split / "images" / "42.jpg", 20, 20)
    (split / "masks").mkdir(parents=True)
    (split / "masks" / "42.pickle").write_bytes(pickle.dumps(packed_masks, protocol=protocol))
    (split / "hannotation.pickle").write_bytes(pickle.dumps(annotations, protocol=protocol))
    return root


def ritm_files(num_instances: object = 1) -> tuple[dict, tuple]:
    """What RITM's conversion script writes: the annotation dict, and the PNG-encoded layers with their mapping."""
    layer = np.zeros((20, 20), np.uint8)
    layer[2:9, 2:9] = 1
    annotations = {"42": {"num_instance_masks": num_instances, "hierarchy": {0: None}}}
    return annotations, ([cv2.imencode(".png", layer)[1]], [(0, 1)])


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_ritm_pickles_load_as_ritm_wrote_them(tmp_path: Path, protocol: int) -> None:
    """numpy arrays (and a numpy integer) at the protocols Python 3's pickle.dump and HIGHEST_PROTOCOL write."""
    root = cocolvis_tree(tmp_path, *ritm_files(np.int64(1)), protocol=protocol)
    sample = create_dataset("cocolvis", root, "val")[0]
    assert sample.num_instances == 1 and int((sample.labels == 1).sum()) == 49


@pytest.mark.parametrize("crafted", ["hannotation.pickle", "masks/42.pickle"])
def test_a_cocolvis_pickle_that_names_code_is_refused_before_it_runs(tmp_path: Path, crafted: str) -> None:
    marker = tmp_path / "marker"
    annotations, packed = ritm_files()
    if crafted == "hannotation.pickle":
        annotations["42"]["hierarchy"] = {0: OpensMarker(marker)}
    else:
        packed = (packed[0], OpensMarker(marker))
    root = cocolvis_tree(tmp_path / "LVIS", annotations, packed)
    result = invoke("datasets", "check", "cocolvis", "--root", root, "--split", "val")
    refused(result, f"{root / 'val' / crafted}: refused to unpickle io.open", "only dicts, lists, numbers")
    assert not marker.exists(), "the pickle's payload ran"


# Weights files: torch's weights-only unpickler, and TorchScript archives only with --allow-torchscript.


def test_a_torchscript_backbone_file_is_loaded_only_with_the_flag_which_says_it_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = torchscript_archive(tmp_path / "ViT-S-14.pt", marker)
    extract = ["extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", weights,
               "--dataset", "builtin", "--size", "28", "--out", tmp_path / "cache"]  # fmt: skip
    result = invoke(*extract)
    refused(result, f"weights file {weights} is a TorchScript archive", "not loaded without --allow-torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not list(tmp_path.glob("cache/*.zarr*")), "no store was started"

    with pytest.warns(TorchScriptWarning, match=f"{weights}: loading a TorchScript archive, which runs the code"):
        allowed = invoke(*extract, "--allow-torchscript")
    refused(allowed, f"weights file {weights} does not fit")
    assert marker.exists(), "with the flag, the archive is loaded (and its code runs)"


def test_torchscript_upsampler_weights_are_refused_by_train(world: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = torchscript_archive(tmp_path / "lift.pt", marker)
    result = invoke("train", "--config", "quickstart", "--cache", store_of(world), "--out", tmp_path / "run",
                    "--set", "model.upsampler.name=lift", "--set", f"model.upsampler.weights={weights}")  # fmt: skip
    refused(result, f"weights file {weights} is a TorchScript archive", "--allow-torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not (tmp_path / "run" / "last.json").exists()


def test_a_seed_checkpoint_that_is_a_torchscript_archive_is_not_imported(world: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    checkpoint = torchscript_archive(tmp_path / "last_checkpoint.pth", marker)
    result = invoke("import-seed", checkpoint, "--store", store_of(world), "--out", tmp_path / "run")
    refused(result, f"{checkpoint}: not a readable iSegProbe checkpoint", "torchscript")
    assert not marker.exists(), "the archive's code ran"
    assert not (tmp_path / "run").exists()


def test_the_weights_only_refusal_names_the_global_and_never_advises_unpickling_anyway(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = tmp_path / "dinov2.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": OpensMarker(marker)}, weights)
    result = invoke("extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", weights,
                    "--dataset", "builtin", "--out", tmp_path / "cache")  # fmt: skip
    refused(result, f"could not read weights file {weights} (it names io.open, which is not a tensor")
    assert "weights_only=False" not in result.output and "safe_globals" not in result.output
    assert not marker.exists(), "the pickle's payload ran"
