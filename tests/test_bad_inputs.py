"""Every bad input in the README's table "When the input is wrong", given to the command as a user would: each must
exit non-zero with its message (naming the file or option), never a traceback. A second test keeps the README's
table and these cases the same list."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from dataset_trees import box, write_image, write_mask
from stores import builtin_store, random_vit_store

from isegprobe.cache import CachedDataset
from isegprobe.cli import main
from isegprobe.config import load_train_config
from isegprobe.training.trainer import train

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE = 56


class World:
    """What the cases break: good stores, a run and an evaluation, and a folder of images with masks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = builtin_store(root / "cache", size=SIZE, items_per_shard=4)
        self.train_store = builtin_store(root / "cache", split="train", size=SIZE)
        self.store_112 = builtin_store(root / "cache_112", size=112)
        self.store_patch16 = random_vit_store(root / "cache_p16", "builtin", None, "test", 64, "identity",
                                              featurizer="vit_small_patch16_224")  # fmt: skip
        config = load_train_config("quickstart", ["schedule.max_iters=0"])
        train(config, CachedDataset(self.train_store), root / "run", device="cpu", progress=False)
        self.run = root / "run"
        self.results = root / "results"
        evaluated = invoke("evaluate", "--checkpoint", self.run, "--store", self.store, "--max-clicks", "2",
                           "--out", self.results)  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output

    def images(self, name: str, damage: Callable[[Path], None]) -> Path:
        """A custom dataset folder of two images with one mask each, then `damage(folder)`."""
        folder = self.root / name
        for index in range(2):
            write_image(folder / "images" / f"im{index}.jpg", 28, 28, seed=index)
            write_mask(folder / "masks" / f"im{index}.png", box(28, 28, 4, 4, 20, 20))
        damage(folder)
        return folder

    def damaged_store(self, name: str, damage: Callable[[zarr.Group], None]) -> Path:
        copy = self.root / name / self.store.name
        shutil.copytree(self.store, copy)
        damage(zarr.open_group(str(copy), mode="r+"))
        return copy


def invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def extraction(*options: object, featurizer: str = "vit_small_patch14_dinov2", weights: object = "random") -> list:
    return ["extract-features", "--featurizer", featurizer, "--weights", weights, *options]


def training(w: World, out: str, *options: object) -> list[object]:
    return ["train", "--config", "quickstart", "--cache", w.train_store, "--out", w.root / out, *options]


def extract_custom(folder: Path, out: Path) -> list[object]:
    return extraction("--dataset", "custom", "--root", folder, "--size", "28", "--workers", "0", "--out", out)


def truncate(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])


def set_feature(value: float) -> Callable[[zarr.Group], None]:
    def damage(group: zarr.Group) -> None:
        entry = group["features"][5, 0]
        entry[0, 0, 0] = value
        group["features"][5, 0] = entry

    return damage


# README row label -> (arguments built from the world, the words the message must contain)
CASES: dict[str, tuple[Callable[[World], list[object]], str]] = {
    "dataset root that does not exist": (
        lambda w: extraction("--dataset", "grabcut", "--root", w.root / "nowhere", "--out", w.root / "x"),
        "expected the GrabCut layout with data_GT/ inside",
    ),
    "truncated image file": (
        lambda w: extract_custom(w.images("cut", lambda f: truncate(f / "images" / "im1.jpg")), w.root / "x1"),
        "im1.jpg: this image file is truncated",
    ),
    "file that is not an image": (
        lambda w: extract_custom(
            w.images("text", lambda f: (f / "images" / "im1.jpg").write_text("not a picture")), w.root / "x2"
        ),
        "im1.jpg: cannot read this image (corrupt or not an image)",
    ),
    "image without a mask": (
        lambda w: extract_custom(w.images("nomask", lambda f: (f / "masks" / "im1.png").unlink()), w.root / "x3"),
        "im1.jpg: no mask named im1.*",
    ),
    "mask of another size than its image": (
        lambda w: extract_custom(
            w.images("size", lambda f: write_mask(f / "masks" / "im1.png", box(20, 28, 2, 2, 9, 9))), w.root / "x4"
        ),
        "im1.png: mask size (20, 28) differs from image im1.jpg (28, 28)",
    ),
    "empty mask": (
        lambda w: extract_custom(
            w.images("empty", lambda f: write_mask(f / "masks" / "im1.png", np.zeros((28, 28), np.uint8))),
            w.root / "x5",
        ),
        "im1.png: an empty mask (no object pixel)",
    ),
    "unknown featurizer": (
        lambda w: extraction("--dataset", "builtin", "--out", w.root / "x", featurizer="vit_imaginary"),
        "unknown featurizer 'vit_imaginary': not a timm ViT name",
    ),
    "--size not a multiple of the patch size": (
        lambda w: extraction("--dataset", "builtin", "--size", "100", "--out", w.root / "x"),
        "--size 100: must be a multiple of the featurizer's patch size 14",
    ),
    "weights file that is not a checkpoint": (
        lambda w: extraction(
            "--dataset", "builtin", "--out", w.root / "x", weights=write_bytes(w.root / "junk.pth", b"\x80\x02junk")
        ),
        "could not read weights file",
    ),
    "extraction into a store made differently": (
        lambda w: extraction(
            "--dataset", "builtin", "--size", str(SIZE), "--views", "identity", "--out", w.store.parent
        ),
        "refusing to add to a store made differently",
    ),
    "config key that does not exist": (
        lambda w: training(w, "r1", "--set", "optim.lrr=1"),
        "unknown config key 'optim.lrr'; known here: betas, eps, lr, weight_decay",
    ),
    "config value of the wrong type": (
        lambda w: training(w, "r2", "--set", "optim.lr=fast"),
        "config key 'optim.lr' must be float, got 'fast'",
    ),
    "folder that is not a feature store": (
        lambda w: ["train", "--config", "quickstart", "--cache", w.root / "run", "--out", w.root / "r3"],
        "not a feature store (no zarr.json)",
    ),
    "train into a folder that holds a run": (
        lambda w: ["train", "--config", "quickstart", "--cache", w.train_store, "--out", w.run],
        "already holds a run (last.json): --resume continues it",
    ),
    "checkpoint file that is not isegprobe's": (
        lambda w: [
            "evaluate",
            "--checkpoint",
            write_bytes(w.root / "other.safetensors", b"\x08" + b"\x00" * 15),
            "--store",
            w.store,
            "--out",
            w.root / "e1",
        ],  # fmt: skip
        "other.safetensors: not an isegprobe checkpoint",
    ),
    "folder that is not a run": (
        lambda w: ["evaluate", "--checkpoint", w.root / "cache", "--store", w.store, "--out", w.root / "e2"],
        "not a run folder (no best.json or last.json in it)",
    ),
    "checkpoint whose weights file is damaged": (
        lambda w: ["evaluate", "--checkpoint", damaged_run(w), "--store", w.store, "--out", w.root / "e3"],
        "last.safetensors: not a safetensors file (corrupt or truncated)",
    ),
    "store from another featurizer than the probe's": (
        lambda w: ["evaluate", "--checkpoint", w.run, "--store", w.store_patch16, "--out", w.root / "e4"],
        "features from another featurizer than the probe's",
    ),
    "store at another working size than the probe's": (
        lambda w: ["evaluate", "--checkpoint", w.run, "--store", w.store_112, "--out", w.root / "e5"],
        "extracted at --size 112 --resize stretch, but the probe was trained at --size 56",
    ),
    "evaluation into a folder with other results": (
        lambda w: [
            "evaluate",
            "--checkpoint",
            w.run,
            "--store",
            w.store,
            "--max-clicks",
            "3",
            "--out",
            w.results,
        ],  # fmt: skip
        "holds the results of another evaluation",
    ),
    "store bytes changed after extraction": (
        lambda w: ["cache", "verify", w.damaged_store("flipped", set_feature(0.25))],
        "item 5 (test_005): view(s) identity no longer match their checksum",
    ),
    "NaN or Inf in cached features": (
        lambda w: ["cache", "verify", w.damaged_store("nan", set_feature(float("nan")))],
        "item 5 (test_005): features are not finite",
    ),
}


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def damaged_run(world: World) -> Path:
    copy = world.root / "damaged_run"
    shutil.copytree(world.run, copy, dirs_exist_ok=True)
    (copy / "last.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{not json}")
    return copy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_its_message_and_a_non_zero_exit(world: World, case: str) -> None:
    arguments, message = CASES[case]
    result = invoke(*arguments(world))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_readme_table_lists_exactly_these_cases_with_their_messages() -> None:
    section = README.read_text().split("## When the input is wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    table = {cells[0].strip(): cells[1] for cells in rows[1:]}
    assert list(table) == list(CASES)
    for case, (_, message) in CASES.items():
        assert re.sub(r"\s+", " ", message) in table[case].replace("`", ""), case
