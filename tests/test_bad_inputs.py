"""Every bad input in docs/errors.md's table "When the input is wrong", given to the command as a user would: each must
exit non-zero with its message (naming the file, option or item and what was expected), never a traceback, and leave
every file already written as it was. A second test keeps that table and these cases the same list."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest
import torch
from bad_input_world import (
    SIZE,
    World,
    assert_unchanged,
    edit_attrs,
    invoke,
    png_declaring,
    remove_chunk_file,
    scramble_chunk_file,
    snapshot,
    with_file_limit,
    with_small_shared_memory,
)
from dataset_trees import box, sbd_tree, write_image, write_mask, write_png_with_a_damaged_note
from launch import ISEGPROBE, hold_lock
from safetensors.torch import load_file

from isegprobe.cache.store import FeatureStore
from isegprobe.upsamplers import create_upsampler

ERROR_TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
SCHEMA1_STORE = Path(__file__).parent / "data" / "schema1-vit_small_patch14_dinov2-builtin-test-28.zarr"


def extraction(*options: object, featurizer: str = "vit_small_patch14_dinov2", weights: object = "random") -> list:
    return ["extract-features", "--featurizer", featurizer, "--weights", weights, *options]


def training(w: World, out: str, *options: object) -> list[object]:
    return ["train", "--config", "quickstart", "--store", w.train_store, "--out", w.root / out, *options]


def evaluation(w: World, store: Path, out: str, *options: object) -> list[object]:
    return ["evaluate", "--checkpoint", w.run, "--store", store, "--max-clicks", "2", "--out", w.root / out, *options]


def link_to_nowhere(folder: Path) -> None:
    """im1.jpg replaced by a link to a file that is not there (a dataset linked from a disk since moved)."""
    (folder / "images" / "im1.jpg").unlink()
    (folder / "images" / "im1.jpg").symlink_to(folder / "moved" / "im1.jpg")


def extract_the_test_store_again(w: World) -> list[object]:
    """The world's own extraction of its test store: nothing left to do, when nothing is in the way."""
    options = ("--dataset", "builtin", "--size", SIZE, "--items-per-shard", "4", "--workers", "0")
    return extraction(*options, "--out", w.store.parent)


def repair_a_schema1_store(w: World) -> list[object]:
    """A copy of tests/data's schema-1 store under its own name, and the extraction that made it, with --repair."""
    out = w.root / "schema1"
    shutil.copytree(SCHEMA1_STORE, out / SCHEMA1_STORE.name.removeprefix("schema1-"))
    views = "identity,hflip,rot90,scale1.5"
    options = ("--dataset", "builtin", "--size", "28", "--views", views, "--items-per-shard", "4", "--workers", "0")
    return extraction(*options, "--repair", "--out", out)


def png_of_hidden_size(folder: Path) -> None:
    """im1 as a PNG of 7000 x 7000 pixels whose header Pillow refuses."""
    (folder / "images" / "im1.jpg").unlink()
    write_png_with_a_damaged_note(folder / "images" / "im1.png", 7000)


def image_that_is_a_folder(folder: Path) -> None:
    """images/im1.jpg made a folder: it was "no image named im1", of a name that is there."""
    (folder / "images" / "im1.jpg").unlink()
    (folder / "images" / "im1.jpg").mkdir()


def huge_sparse_file(folder: Path) -> None:
    """im1.jpg grown to 65 MiB of holes, past what 1000 pixels take: it was read whole before anything looked at it
    (a MemoryError for 30 GB)."""
    os.truncate(folder / "images" / "im1.jpg", 65 << 20)


def name_in_latin1(folder: Path) -> None:
    """im1's image and mask renamed café in Latin-1 bytes, which are not UTF-8."""
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        os.rename(folder / kind / f"im1{suffix}", os.fsencode(folder / kind) + b"/caf\xe9" + suffix.encode())


def without_overriding_permissions(arguments: list[object]) -> tuple[int, str]:
    """The command in its own process, held to files' permissions: as root, without the capabilities that pass
    them by (setpriv)."""
    held = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop the capabilities that pass permissions by")
        held = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    done = subprocess.run([*held, ISEGPROBE, *map(str, arguments)], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def extract_custom(folder: Path, out: Path) -> list[object]:
    return extraction("--dataset", "custom", "--root", folder, "--size", "28", "--workers", "0", "--out", out)


UPSAMPLER_KEY = "model.upsampler.weights"


def missing(w: World) -> Path:
    return w.root / "missing.pth"


def import_with_locked_upsampler_weights(w: World) -> list[object]:
    """import-seed with an upsampler file in a folder this user may not enter: the research checkpoint, read first,
    gave its own error."""
    folder = w.root / "locked_weights"
    folder.mkdir()
    torch.save(create_upsampler("lift", 384).state_dict(), folder / "lift.pth")
    folder.chmod(0)
    return ["import-seed", ritm_checkpoint(w), "--upsampler-weights", folder / "lift.pth", "--out", w.root / "imported"]


SQUARE = [[4, 4, 20, 4, 20, 20, 4, 20]]
FLAT = [4, 4, 20, 4, 12, 4]  # a polygon of zero area: it paints no pixel
FAR = [[4, 4, 1e300, 4, 20, 20]]  # rasterized edge pixel by edge pixel, it took all memory, and the process
SHORT_RLE = {"size": [28, 28], "counts": [100, 20]}  # pycocotools decoded the rest as background, silently


def sbd_with_a_cut_mat(folder: Path) -> Path:
    """SBD whose second image's .mat is cut in half: its instances cannot be counted."""
    root = sbd_tree(folder)
    truncate(root / "inst" / "2008_000002.mat")
    return root


def coco_file(folder: Path, names: list[str], **annotation: object) -> Path:
    """A COCO-format file of 28 x 28 images `names` (ids 1, 2, ...), one annotation each (a square polygon, unless
    `annotation` sets other fields), and the images under folder/images."""
    images = [{"id": index, "file_name": name, "height": 28, "width": 28} for index, name in enumerate(names, 1)]
    for image in images:
        write_image(folder / "images" / image["file_name"], 28, 28, seed=image["id"])
    annotations = [
        {"id": image["id"], "image_id": image["id"], "segmentation": SQUARE, **annotation} for image in images
    ]
    (folder / "coco.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder / "coco.json"


def coco_of_a_negative_height(folder: Path) -> Path:
    path = coco_file(folder, ["a.jpg"])
    data = json.loads(path.read_text())
    data["images"][0]["height"] = -28
    path.write_text(json.dumps(data))
    return path


def coco_file_of_twins(folder: Path) -> Path:
    """a.jpg and a.png, one object each: both would be item `a`."""
    return coco_file(folder, ["a.jpg", "a.png"])


def name_one_like_the_others_object(folder: Path) -> None:
    """im0 gets a second object (masks im0.png and im0_2.png, its objects im0_1 and im0_2) beside an image im0_1."""
    write_mask(folder / "masks" / "im0_2.png", box(28, 28, 2, 2, 8, 8))
    write_image(folder / "images" / "im0_1.jpg", 28, 28, seed=5)
    write_mask(folder / "masks" / "im0_1.png", box(28, 28, 4, 4, 20, 20))


def mask_of_white_with_alpha(folder: Path) -> None:
    """White everywhere, the object drawn in the alpha channel only: its first channel would make it all object."""
    white = np.full((28, 28, 3), 255, np.uint8)
    assert cv2.imwrite(str(folder / "masks" / "im1.png"), np.dstack([white, box(28, 28, 4, 4, 20, 20)]))


def yellow_mask(folder: Path) -> None:
    """A yellow object on black: its blue channel, the first that OpenCV decodes, is 0 everywhere."""
    red_and_green = [box(28, 28, 4, 4, 20, 20)] * 2
    write_mask(folder / "masks" / "im1.png", np.dstack([*red_and_green, np.zeros((28, 28), np.uint8)]))


def hide_im0_under_a_second_mask(folder: Path) -> None:
    write_mask(folder / "masks" / "im0_2.png", box(28, 28, 2, 2, 24, 24))  # covers im0.png's square whole


def without_attrs(store: Path) -> None:
    """The store as a copy of it taken while it was still being created has it: arrays, but no attrs yet."""
    metadata = json.loads((store / "zarr.json").read_text())
    metadata["attributes"] = {}
    (store / "zarr.json").write_text(json.dumps(metadata))


def evaluate_custom(w: World, root: Path, out: str) -> list[object]:
    """The world's run evaluated online on a custom dataset (a folder, or a COCO-format file)."""
    return ["evaluate", "--checkpoint", w.run, "--online", "--datasets", "custom", "--root", root, "--max-clicks", "2",
            "--out", w.root / out]  # fmt: skip


def truncate(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])


def set_feature(value: float) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        import zarr

        features = zarr.open_group(str(store), mode="r+")["features"]
        entry = features[5, 0]
        entry[0, 0, 0] = value
        features[5, 0] = entry

    return damage


def with_small_files(arguments: list[object]) -> tuple[int, str]:
    """The command in its own process, allowed files of 16 kB: zarr.json files fit, a shard or weights do not."""
    return with_file_limit(arguments, 16 << 10)


def in_process(arguments: list[object]) -> tuple[int, str]:
    result = invoke(*arguments)
    return result.exit_code, result.output


class Case(NamedTuple):
    arguments: Callable[[World], list[object]]
    message: str  # what the output must contain; the table row shows it
    exit_code: int = 1  # 2: click's own refusal of an option's value, as for any usage error
    run: Callable[[list[object]], tuple[int, str]] = in_process
    then: Callable[[World, str], None] | None = None  # further checks once the command has ended, given its output


# table row label -> (arguments built from the world, the words the message must contain)
CASES: dict[str, Case] = {
    "dataset root that does not exist": Case(
        lambda w: extraction("--dataset", "grabcut", "--root", w.root / "nowhere", "--out", w.root / "x"),
        "nowhere does not exist (expected grabcut's folder, which holds data_GT and boundary_GT)",
    ),
    "path under the home of a user this machine does not have": Case(
        lambda w: ["datasets", "check", "grabcut", "--root", "~nosuchuser/GrabCut"],
        "~nosuchuser/GrabCut: no home directory for nosuchuser on this machine, so its ~ cannot be expanded",
    ),
    "truncated image file": Case(
        lambda w: extract_custom(w.images("cut", lambda f: truncate(f / "images" / "im1.jpg")), w.root / "x1"),
        "im1.jpg: this image file is truncated",
    ),
    "per-instance split whose annotation cannot be read": Case(
        lambda w: extraction(
            *("--dataset", "sbd", "--root", sbd_with_a_cut_mat(w.root / "sbd_cut"), "--split", "val-instances"),
            *("--size", "28", "--workers", "0", "--out", w.root / "x21"),
        ),
        "2008_000002.mat: cannot read GTinst.Segmentation (OSError: could not read bytes)\n--split val-instances gives "
        "one item per instance, and this file's instances cannot be counted: fix it and run the command again "
        "(nothing was written)",
    ),
    "file that is not an image": Case(
        lambda w: extract_custom(
            w.images("text", lambda f: (f / "images" / "im1.jpg").write_text("not a picture")), w.root / "x2"
        ),
        "im1.jpg: cannot read this image (corrupt or not an image)",
    ),
    "image that is a broken link": Case(
        lambda w: extract_custom(w.images("link", link_to_nowhere), w.root / "x9"),
        "im1.jpg: a link to a file that does not exist (",
    ),
    "image without a mask": Case(
        lambda w: extract_custom(w.images("nomask", lambda f: (f / "masks" / "im1.png").unlink()), w.root / "x3"),
        "im1.jpg: no mask named im1.*",
    ),
    "object hidden whole under another mask of its image": Case(
        lambda w: extract_custom(w.images("hidden", hide_im0_under_a_second_mask), w.root / "x17"),
        "masks/im0.png: its object lies wholly under later masks of the image im0.jpg (im0_2.png), and an image's "
        "objects are painted into one label map, later on top; read --split test-instances",
    ),
    "image in a format that is not read": Case(
        lambda w: extract_custom(
            w.images("gif", lambda f: (f / "images" / "im1.jpg").rename(f / "images" / "im1.gif")), w.root / "x16"
        ),
        "(im1.gif is there, but only .jpg, .jpeg, .png, .bmp, .tif, .tiff files are read)",
    ),
    "folder named as an image": Case(
        lambda w: extract_custom(w.images("folder_image", image_that_is_a_folder), w.root / "x_folder"),
        "images (im1.jpg is there, but it is a folder)",
    ),
    "mask of another size than its image": Case(
        lambda w: extract_custom(
            w.images("size", lambda f: write_mask(f / "masks" / "im1.png", box(20, 28, 2, 2, 9, 9))), w.root / "x4"
        ),
        "im1.png: mask size (20, 28) differs from image im1.jpg (28, 28)",
    ),
    "empty mask": Case(
        lambda w: extract_custom(
            w.images("empty", lambda f: write_mask(f / "masks" / "im1.png", np.zeros((28, 28), np.uint8))),
            w.root / "x5",
        ),
        "im1.png: an empty mask (no object pixel)",
    ),
    "mask with transparency": Case(
        lambda w: extract_custom(w.images("see_through", mask_of_white_with_alpha), w.root / "x11"),
        "im1.png: 528 pixels of this mask are transparent or partly so; a mask is read from its grey levels",
    ),
    "colour mask": Case(
        lambda w: extract_custom(w.images("yellow", yellow_mask), w.root / "x12"),
        "im1.png: a colour mask (256 pixels are not grey): draw the object in grey levels above 128 (255) on 0",
    ),
    "mask of 0 and 1": Case(
        lambda w: extract_custom(
            w.images("ones", lambda f: write_mask(f / "masks" / "im1.png", box(28, 28, 4, 4, 20, 20, value=1))),
            w.root / "x13",
        ),
        "im1.png: a mask of 0 and 1 only: draw the object in grey levels above 128 (255) on 0, with 128 for pixels "
        "to ignore, so multiply it by 255",
    ),
    "unknown featurizer": Case(
        lambda w: extraction("--dataset", "builtin", "--out", w.root / "x", featurizer="vit_imaginary"),
        "unknown featurizer 'vit_imaginary': neither a timm model name nor one of isegprobe's own names",
    ),
    "--size not a multiple of the patch size": Case(
        lambda w: extraction("--dataset", "builtin", "--size", "100", "--out", w.root / "sized"),
        "--size 100: must be a multiple of the featurizer's patch size 14",
        then=lambda w, output: nothing_at(w.root / "sized"),
    ),
    "--size at which the model gives another grid": Case(
        lambda w: extraction(
            "--dataset", "builtin", "--size", "96", "--out", w.root / "gridded", featurizer="mobilevitv2_050"
        ),
        "--size 96: mobilevitv2_050 gives a 4x4 grid on a 96x96 px image, not the 3x3 of its stride 32 (timm's "
        "ByobNet); sizes near it that run: 64, 128",
        then=lambda w, output: nothing_at(w.root / "gridded"),
    ),
    "weights file that is not a checkpoint": Case(
        lambda w: extraction(
            "--dataset", "builtin", "--out", w.root / "x", weights=write_bytes(w.root / "junk.pth", b"\x80\x02junk")
        ),
        "could not read weights file",
    ),
    "weights file that is no kind of checkpoint": Case(
        lambda w: extraction(
            "--dataset", "builtin", "--out", w.root / "x", weights=write_bytes(w.root / "notes.pth", b"junk\n")
        ),
        "not a zip archive, as torch.save writes, nor a pickle: it begins with b'junk\\n'",
    ),
    "weights file that is not there": Case(
        lambda w: training(
            w, "unbuilt", "--set", "model.upsampler.name=lift", "--set", f"{UPSAMPLER_KEY}={missing(w)}"
        ),
        "missing.pth does not exist (expected a weights file)",
        then=lambda w, output: error_begins(f"{UPSAMPLER_KEY}: {missing(w)}", output),
    ),
    "weights file that cannot be read": Case(
        import_with_locked_upsampler_weights,
        "lift.pth: cannot read it (Permission denied): give this user read access to it, or copy it where they have",
        run=without_overriding_permissions,
        then=lambda w, output: unlock_weights(w, output),
    ),
    "extraction into a store made differently": Case(
        lambda w: extraction(
            "--dataset", "builtin", "--size", str(SIZE), "--views", "identity", "--out", w.store.parent
        ),
        "refusing to add to a store made differently",
    ),
    "extraction that would add to a store of the earlier layout": Case(
        repair_a_schema1_store,
        "a store of schema 1, written by an earlier isegprobe (every view's pixels stored); it reads and verifies as "
        "before, but extraction writes schema 2 only, so it cannot finish or repair it. Pass --overwrite",
    ),
    "config key that does not exist": Case(
        lambda w: training(w, "r1", "--set", "optim.lrr=1"),
        "unknown config key 'optim.lrr'; known here: betas, eps, lr, weight_decay",
    ),
    "config value of the wrong type": Case(
        lambda w: training(w, "r2", "--set", "optim.lr=fast"),
        "config key 'optim.lr' must be float, got 'fast'",
    ),
    "config key given twice in a variant": Case(
        lambda w: training(w, "r_twice", "--variant", "a model.head.width=32 model.head.width=16"),
        "--variant 'a model.head.width=32 model.head.width=16': model.head.width is given twice; give each key once",
        then=lambda w, output: nothing_at(w.root / "r_twice"),
    ),
    "config key given twice to --set": Case(
        lambda w: training(w, "r_set_twice", "--set", "model.head.width=32", "--set", "model.head.width=16"),
        "--set model.head.width is given twice; give each key once",
        then=lambda w, output: nothing_at(w.root / "r_set_twice"),
    ),
    "folder that is not a feature store": Case(
        lambda w: ["train", "--config", "quickstart", "--store", w.root / "run", "--out", w.root / "r3"],
        "not a feature store (no zarr.json)",
    ),
    "store copied before its description was written": Case(
        lambda w: ["cache", "verify", w.damaged_store("undescribed", without_attrs)],
        "an unfinished store, whose description (attrs) was never written: a copy of a store still being created",
    ),
    "train into a folder that holds a run": Case(
        lambda w: ["train", "--config", "quickstart", "--store", w.train_store, "--out", w.run],
        "already holds a run (last.json): --resume continues it",
    ),
    "train into a folder that holds files of a run without its last.json": Case(
        lambda w: training(w, without(w.run_copy("lost_last") / "last.json").name),
        "lost_last already holds files of a run (last.safetensors, last.optim.safetensors, config.yaml, scalars.csv, "
        "tensorboard/), without the last.json that --resume continues from",
    ),
    "train into an evaluation's folder": Case(
        lambda w: training(w, w.results.name),
        "results: the folder of an evaluation (results.json, ious.npz); give the run a folder of its own",
    ),
    "validation store of the training images": Case(
        lambda w: training(w, "r_val", "--val-store", w.train_store),
        "-train-56.zarr: the training store's images (builtin/train): the best checkpoint picked on them is the probe "
        "that remembers them best, not the one that segments best; give the store of a held-out split",
        then=lambda w, output: nothing_at(w.root / "r_val"),
    ),
    "runs side by side into a run's folder": Case(
        lambda w: training(w, w.run.name, "--variant", "a", "--variant", "b optim.lr=1e-3"),
        "run holds a run (last.safetensors, last.optim.safetensors, last.json, config.yaml, scalars.csv, "
        "tensorboard/): the runs side by side would train into its subfolders, and --resume --out",
        then=lambda w, output: nothing_at(w.run / "a"),
    ),
    "run into the folder of runs side by side": Case(
        lambda w: training(w, runs_side_by_side(w, "parent").name),
        "parent holds runs side by side (a, b): a run trained into it would be the only one --resume --out",
    ),
    "resuming runs side by side, one of which lost its last checkpoint": Case(
        lambda w: ["train", "--resume", "--out", runs_side_by_side(w, "siblings", without="last.json")],
        "siblings/b has no last checkpoint to resume from (no last.json; it holds last.safetensors, "
        "last.optim.safetensors), and the runs beside it would train on without it: put its last.* back, or move it "
        "out of",
    ),
    "resuming a run that stopped before its first checkpoint": Case(
        lambda w: ["train", "--resume", "--out", stopped_before_its_first_checkpoint(w, "early_stop")],
        "early_stop holds no checkpoint to resume from: its run stopped before its first (it left config.yaml, "
        "scalars.csv, tensorboard/); run the command that started it again, without --resume",
    ),
    "resuming runs side by side that all stopped before their first checkpoint": Case(
        lambda w: ["train", "--resume", "--out", side_by_side_stopped_before_their_first_checkpoint(w, "early_pair")],
        "early_pair (a, b) hold no checkpoint to resume from: they stopped before their first; run the command that "
        "started them again, without --resume",
    ),
    "resuming a probe imported from the iSegProbe research code": Case(
        lambda w: ["train", "--resume", "--out", imported_probe(w)],
        "imported_probe holds a probe imported by isegprobe import-seed (from /seeds/last_checkpoint.pth), not a run "
        "isegprobe trained: it has no optimizer state or schedule to resume",
    ),
    "training into the folder of a probe imported from the iSegProbe research code": Case(
        lambda w: training(w, imported_probe(w, "imported_target").name),
        "imported_target holds a probe imported by isegprobe import-seed (from /seeds/last_checkpoint.pth); train a "
        "new probe with another --out",
    ),
    "RITM checkpoint given to import-seed": Case(
        lambda w: ["import-seed", ritm_checkpoint(w), "--out", w.root / "imported"],
        "ritm.pth: its config's class is 'isegm.model.is_hrnet_model.HRNetModel', not the research code's "
        "iSegProbeModel: only probes trained by the iSegProbe research code are imported",
    ),
    "checkpoint file that is not isegprobe's": Case(
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
    "checkpoint that is some other file": Case(
        lambda w: evaluation(w, w.store, "e2b", "--checkpoint", write_bytes(w.root / "notes.txt", b"lr 1e-4")),
        "notes.txt: not an isegprobe checkpoint. A checkpoint is a run folder",
    ),
    "folder that is not a run": Case(
        lambda w: ["evaluate", "--checkpoint", w.root / "cache", "--store", w.store, "--out", w.root / "e2"],
        "not a run folder (no best.json or last.json in it)",
    ),
    "checkpoint whose weights file is damaged": Case(
        lambda w: ["evaluate", "--checkpoint", damaged_run(w), "--store", w.store, "--out", w.root / "e3"],
        "last.safetensors: not a safetensors file (corrupt or truncated)",
    ),
    "checkpoint whose weights file is cut off after its header": Case(
        lambda w: ["evaluate", "--checkpoint", cut_run(w), "--store", w.store, "--out", w.root / "e3b"],
        "last.safetensors: not a safetensors file (corrupt or truncated)",
    ),
    "store from another featurizer than the probe's": Case(
        lambda w: ["evaluate", "--checkpoint", w.run, "--store", w.store_patch16, "--out", w.root / "e4"],
        "features from another featurizer than the probe's",
    ),
    "store at another working size than the probe's": Case(
        lambda w: ["evaluate", "--checkpoint", w.run, "--store", w.store_112, "--out", w.root / "e5"],
        "extracted at --size 112 --resize stretch, but the probe was trained at --size 56",
    ),
    "probe's upsampler drawn on a store at another working size": Case(
        lambda w: ["plot", "features", "--store", w.store_112, "--checkpoint", w.run, "--out", w.root / "panels.png"],
        "extracted at --size 112 --resize stretch, but the probe was trained at --size 56",
    ),
    "evaluation into a folder with other results": Case(
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
    "store bytes changed after extraction": Case(
        lambda w: ["cache", "verify", w.damaged_store("flipped", set_feature(0.25))],
        "item 5 (test_005): view(s) identity no longer match their checksum",
    ),
    "NaN or Inf in cached features": Case(
        lambda w: ["cache", "verify", w.damaged_store("nan", set_feature(float("nan")))],
        "item 5 (test_005): features are not finite",
    ),
    "two image files with one name": Case(
        lambda w: extract_custom(
            w.images("twins", lambda f: write_image(f / "images" / "im1.bmp", 28, 28, seed=7)), w.root / "x6"
        ),
        "im1.bmp and im1.jpg: 2 image files named im1; which one belongs to the item is ambiguous",
    ),
    "image whose damaged header hides its size": Case(
        lambda w: ["datasets", "check", "custom", "--root", w.images("hidden_size", png_of_hidden_size)],
        "im1.png: 7000 x 7000 pixels (49.0 MP) is above the limit of 40000000 pixels",
    ),
    "image file larger than any image within the pixel limit": Case(
        lambda w: ["datasets", "check", "custom", "--root", w.images("huge", huge_sparse_file), "--max-pixels", "1000"],
        "im1.jpg: 0.1 GiB, more than any image within the limit of 1000 pixels takes (64 MiB); pass --max-pixels",
        then=lambda w, output: (w.root / "huge" / "images" / "im1.jpg").unlink(),  # every later case hashes the world
    ),
    "file name that is not UTF-8": Case(
        lambda w: extract_custom(w.images("latin1", name_in_latin1), w.root / "x_latin1"),
        "the file name b'caf\\xe9.jpg' is not UTF-8 text; an item's id is its file's name",
    ),
    "split that is a path": Case(
        lambda w: [*extract_custom(w.images("split", lambda _: None), w.root / "x_split"), "--split", "../escape"],
        "--split '../escape': expected a name of letters, digits, '.', '_' and '-' that starts with a letter or a "
        "digit",
    ),
    "dataset folder that cannot be read": Case(
        lambda w: ["datasets", "check", "custom", "--root", w.images("locked", lambda f: (f / "masks").chmod(0))],
        "locked/masks: cannot read (Permission denied): give this user read access to it",
        run=without_overriding_permissions,
        then=lambda w, output: (w.root / "locked" / "masks").chmod(0o755),
    ),
    "two images of one id in a COCO-format file": Case(
        lambda w: extract_custom(coco_file_of_twins(w.root / "coco_twins"), w.root / "x10"),
        "coco.json: the images 'a.jpg' (id 1) and 'a.png' (id 2) would both be item 'a'",
    ),
    "COCO-format file whose annotations match no image": Case(
        lambda w: extract_custom(coco_file(w.root / "coco_ids", ["a.jpg"], image_id="1"), w.root / "x14"),
        "coco.json: no image has an annotation to segment: no annotation's image_id is an image's id (images' ids "
        "such as 1, annotations' image_id such as '1': they must be the same values, of the same type)",
    ),
    "COCO-format polygon far off its image": Case(
        lambda w: extract_custom(coco_file(w.root / "coco_far", ["a.jpg"], segmentation=FAR), w.root / "x19"),
        "coco.json: annotation 1 of image a: bad segmentation (polygon coordinates must be finite, x within [-28, 56] "
        "and y within [-28, 56] for this 28 x 28 image",
    ),
    "COCO-format RLE whose runs do not cover its image": Case(
        lambda w: extract_custom(coco_file(w.root / "coco_runs", ["a.jpg"], segmentation=SHORT_RLE), w.root / "x20"),
        "coco.json: annotation 1 of image a: bad segmentation (its RLE's runs cover 120 pixels, the image's [28, 28] "
        "784: counts made for another image, or cut off)",
    ),
    "COCO-format image of a size that is not a number of pixels": Case(
        lambda w: extract_custom(coco_of_a_negative_height(w.root / "coco_size"), w.root / "x18"),
        "coco.json: image 'a.jpg': height must be a whole number of pixels, got -28",
    ),
    "iscrowd that is not the number 0 or 1": Case(
        lambda w: extract_custom(coco_file(w.root / "coco_crowd", ["a.jpg"], iscrowd="0"), w.root / "x15"),
        "coco.json: annotation 1: iscrowd must be the number 0 or 1, got '0'",
    ),
    "dataset without one object to evaluate": Case(
        lambda w: evaluate_custom(w, coco_file(w.root / "coco_flat", ["a.jpg"], segmentation=[FLAT]), "e_flat"),
        "custom: not one object to evaluate, every mask of its items being empty",
    ),
    "image named like another image's object": Case(
        lambda w: evaluate_custom(w, w.images("named_like_an_object", name_one_like_the_others_object), "e_named"),
        "custom: two objects have the id 'im0_1': the image of that name, and object 1 of the image 'im0'",
    ),
    "online training with another featurizer than the store's": Case(
        lambda w: training(w, "r_online", "--online", "--featurizer", "vit_small_patch16_224", "--weights", "random"),
        "--online with --featurizer vit_small_patch16_224 --weights random: features from another featurizer than",
    ),
    "two stores of one dataset": Case(
        lambda w: evaluation(w, w.store, "e_two", "--store", w.train_store),
        "are both 'builtin', and an evaluation keeps one result per dataset: evaluate each into its own --out",
    ),
    "image above the pixel limit": Case(
        lambda w: extract_custom(w.images("huge", declare_a_huge_image), w.root / "x7"),
        "im1.png: 8000 x 6000 pixels (48.0 MP) is above the limit of 40000000 pixels (40 MP); pass --max-pixels",
    ),
    "option value outside its range": Case(
        lambda w: evaluation(w, w.store, "e6", "--threshold", "nan"),
        "Invalid value for '--threshold': nan is not a finite number in the range 0<x<1",
        exit_code=2,
    ),
    "config value outside its range": Case(
        lambda w: training(w, "r4", "--set", "schedule.epochs=-3"),
        "config key 'schedule.epochs' must be a finite number >= 1, got -3",
    ),
    "config word outside its choices": Case(
        lambda w: training(w, "r7", "--set", "model.upsampler.name=foo"),
        "config key 'model.upsampler.name' must be one of anyup, bicubic, bilinear, featup_jbu, featup_jbu_stack, "
        "identity, jafar, lift, loftup, nearest, got 'foo'",
    ),
    "config file with a value outside its range": Case(
        lambda w: [
            "train",
            "--config",
            write_bytes(w.root / "lr_nan.yaml", b"optim:\n  lr: .nan\n"),
            "--store",
            w.train_store,
            "--out",
            w.root / "r5",
        ],  # fmt: skip
        "lr_nan.yaml: config key 'optim.lr' must be a finite number > 0, got nan",
    ),
    "folder given as a config file": Case(
        lambda w: ["train", "--config", w.root / "cache", "--store", w.train_store, "--out", w.root / "r6"],
        "cache is a folder: name a YAML file in it, or a preset (fast_cpu, quickstart",
    ),
    "training loss that becomes NaN or infinite": Case(
        lambda w: training(w, "r5", "--set", "optim.lr=1e30", "--set", "checkpoint.every_steps=1", "--max-iters", "6"),
        "the training loss became NaN or infinite at step 2",
        then=lambda w, output: assert_last_good_checkpoint_kept(w.root / "r5", step=1),
    ),
    "store with chunk files missing": Case(
        lambda w: evaluation(w, w.damaged_store("nochunk", remove_chunk_file("features", 1)), "e7"),
        "4 finished items have chunk files missing (an interrupted copy?): item 4 (test_004): features",
    ),
    "store chunk whose bytes no longer decode": Case(
        lambda w: ["cache", "verify", w.damaged_store("scrambled", scramble_chunk_file("features", 1))],
        "item 4 (test_004): the features chunk cannot be decoded",
    ),
    "store whose arrays disagree with its attrs": Case(
        lambda w: evaluation(w, w.damaged_store("edited", edit_attrs(item_ids=TEST_IDS + ["test_012"])), "e8"),
        "features: shape (12, 2, 384, 4, 4) disagrees with the store's attrs, which give (13, 2, 384, 4, 4)",
    ),
    "store in use by another command": Case(
        lambda w: [*held(w.store), *extract_the_test_store_again(w)],
        "-56.zarr: in use by another isegprobe command (PID",
        then=lambda w, output: release_and_check_holder(output),
    ),
    "store being read by another command": Case(
        lambda w: [*held(w.store, shared=True), *extract_the_test_store_again(w), "--overwrite"],
        "-56.zarr: being read by other isegprobe commands (PID",
        then=lambda w, output: release_and_check_holder(output, reader=True),
    ),
    "store being written by another command": Case(
        lambda w: [*held(w.store), *evaluation(w, w.store, "e_held")],
        "-56.zarr: being written by another isegprobe command (PID",
        then=lambda w, output: release_and_check_holder(output),
    ),
    "disk full while extracting": Case(
        lambda w: extraction("--dataset", "builtin", "--size", SIZE, "--workers", "0", "--out", w.root / "full"),
        "-56.zarr: cannot write (File too large): the disk is full (or a quota or file size limit is reached). What "
        "was written before stays as it was",
        run=with_small_files,
    ),
    # The workers make each shard's arrays in shared memory, whose files the same limit stops first.
    "no room in shared memory for the loader workers' shards": Case(
        lambda w: extraction("--dataset", "builtin", "--size", SIZE, "--workers", "2", "--out", w.root / "full2"),
        "no room for a shard in shared memory (/dev/shm): unable to resize file",
        run=with_small_files,
    ),
    # The same, for real: a /dev/shm of 200 kB, less than one shard of two workers' at 56 px (about 300 kB each).
    "shared memory full (a container's small /dev/shm)": Case(
        lambda w: extraction("--dataset", "builtin", "--size", SIZE, "--workers", "2", "--out", w.root / "shm"),
        "no room for a shard in shared memory (/dev/shm): unable to allocate shared memory(shm) for file",
        run=partial(with_small_shared_memory, size="200k"),
    ),
    "disk full while saving a checkpoint": Case(
        lambda w: ["train", "--resume", "--out", w.run_copy("full_run")],
        "full_run/last.safetensors: cannot write (File too large): the disk is full",
        run=with_small_files,
        then=lambda w, output: assert_no_pending_checkpoint(w.root / "full_run"),
    ),
    "checkpoint whose progress is not as train writes it": Case(
        lambda w: ["train", "--resume", "--out", edited_run(w, "log_window", {"loss": 0.5})],
        "edited_run/last.json: cannot resume from it (KeyError: 'bce'); its step, best_metric, epoch_metrics and "
        "log_window must be as train writes them",
    ),
    "output path through a file": Case(
        lambda w: training(w, write_bytes(w.root / "a_file.txt", b"notes").name + "/run"),
        "a_file.txt/run: cannot create (Not a directory): a file (",
        then=lambda w, output: check_names_the_file_in_the_way(w, output),
    ),
    "output path that is a broken symbolic link": Case(
        lambda w: training(w, broken_link(w).name),
        "broken_link: cannot create (File exists): a symbolic link to nowhere, which does not exist, stands where this "
        "path needs a folder",
    ),
    "output folder the file system cannot create": Case(
        lambda w: training(w, "/proc/isegprobe-run"),
        "/proc/isegprobe-run: cannot open or create it (No such file or directory)",
    ),
    "output file that is a named pipe or a device": Case(
        lambda w: ["report", w.results, "--out", named_pipe(w.root / "pipe.md")],
        "pipe.md: a named pipe, which writing a file here would replace; give a regular file's path",
    ),
    "output file name too long for the file system": Case(
        lambda w: ["report", w.results, "--out", w.root / ("x" * 300 + ".md")],
        "xxx.md: cannot create (File name too long): choose a shorter output path",
    ),
    "output folder inside a feature store": Case(
        lambda w: evaluation(w, w.store, str(w.damaged_store("holds_results", lambda _: None) / "results")),
        "inside the feature store",
    ),
    "extraction resumed from another dataset with the same ids": Case(
        lambda w: extract_custom(other_images(w, "resumed"), stored_images(w, "resumed", 28).parent),
        "im0' is not the image the store",
    ),
    "evaluation of a store with another dataset's images": Case(
        lambda w: evaluation(
            w, stored_images(w, "evaluated", SIZE), "res_other", "--root", other_images(w, "evaluated")
        ),
        "im0' under",
    ),
    "evaluation of a store whose dataset folder has moved": Case(
        lambda w: evaluation(w, store_of_a_moved_folder(w), "res_moved"),
        "-56.zarr was extracted from) does not exist; pass --root DIR where custom is now",
        then=lambda w, output: check_names_the_recorded_folder(w, output),
    ),
    "evaluation into a folder whose ious.npz is a folder": Case(
        lambda w: evaluation(w, w.store, folder_named(w.root / "res_folder_json" / "ious.npz").parent.name),
        "res_folder_json/ious.npz: a folder where the evaluation writes its ious.npz; move it away",
        then=lambda w, output: nothing_at(w.root / "res_folder_json" / "results.json"),
    ),
    "evaluation into a training run's folder": Case(
        lambda w: ["evaluate", "--checkpoint", w.run, "--store", w.store, "--max-clicks", "2", "--out", w.run],
        "run: the folder of a training run (last.json); give the evaluation a folder of its own, such as",
    ),
    "online evaluation given a store": Case(
        lambda w: evaluation(w, w.store, "res_online", "--online"),
        "--online and --store: --online runs the featurizer on the images of --datasets, read from --root or their "
        "folders, and reads no store",
    ),
    "store folder inside a feature store": Case(
        lambda w: extraction("--dataset", "builtin", "--size", "28", "--out", w.damaged_store("nests", lambda _: None)),
        "-56.zarr: inside the feature store",
    ),
    "output file inside a feature store": Case(
        lambda w: ["report", w.results, "--out", w.damaged_store("report_into", lambda _: None) / "zarr.json"],
        "zarr.json: inside the feature store",
        then=lambda w, _: FeatureStore.open(w.root / "report_into" / w.store.name),
    ),
    "output file that is a run's TensorBoard log": Case(
        lambda w: ["report", w.results, "--out", next((w.run_copy("tb_run") / "tensorboard").iterdir())],
        "a TensorBoard log of the training run in",
    ),
    "table written over a picture": Case(
        lambda w: ["report", w.results, "--out", png_declaring(w.root / "iou_vs_clicks.png", 8, 8)],
        "iou_vs_clicks.png: an existing file that is not text (a picture or data), which the text written here would "
        "replace; name a text file (.md, .csv, .json)",
    ),
    "picture drawn over an evaluation's overlay": Case(
        lambda w: ["plot", "features", "--store", w.store, "--out", evaluation_with_an_overlay(w)],
        "vis/builtin/overlay.png: an overlay of the evaluation in",
    ),
    "resuming a run with another store than its own": Case(
        lambda w: ["train", "--resume", "--out", w.run_copy("elsewhere"), "--store", w.store, "--max-iters", "1"],
        "not the store this run trained on",
    ),
    "resuming an evaluation whose curves file is empty": Case(
        lambda w: evaluation(w, w.store, str(results_with_empty_curves(w))),
        "ious.npz: unreadable or short of the curves results.json counts (No data left in file); pass --overwrite",
    ),
    "resuming an evaluation on a store extracted again": Case(
        lambda w: evaluation(w, w.store, str(results_of_another_store(w))),
        "source_fingerprints:",
    ),
    "checkpoint weights of another probe than its JSON's": Case(
        lambda w: evaluation(w, w.store, "other_width", "--checkpoint", run_of_another_width(w)),
        "last.safetensors: these weights do not fit the probe that last.json (and the store's features) describe: "
        "size mismatch for head.reduce.weight",
    ),
    "probe changed by --set on --resume": Case(
        lambda w: [
            "train",
            "--resume",
            "--out",
            w.run_copy("reset"),
            "--store",
            w.train_store,
            "--max-iters",
            "1",
            "--set",
            "model.head.width=32",
        ],  # fmt: skip
        "--set changed the probe of a run under way (model.head.width 64 -> 32): a resumed run keeps its probe",
    ),
}


def check_names_the_file_in_the_way(world: World, output: str) -> None:
    assert f"a file ({world.root / 'a_file.txt'}) stands where this path needs a folder" in " ".join(output.split())


def folder_named(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def error_begins(words: str, output: str) -> None:
    assert f"Error: {words}" in output, output


def unlock_weights(w: World, output: str) -> None:
    (w.root / "locked_weights").chmod(0o755)
    error_begins(f"--upsampler-weights: {w.root / 'locked_weights' / 'lift.pth'}: cannot read it", output)


def nothing_at(path: Path) -> None:
    assert not path.exists(), f"the refused command made {path}"


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def runs_side_by_side(world: World, name: str, without: str | None = None) -> Path:
    """A folder `name` of two copies of the world's run, a and b, as runs side by side leave it; b's file `without`
    removed."""
    for run in ("a", "b"):
        world.run_copy(f"{name}/{run}")
    if without is not None:
        (world.root / name / "b" / without).unlink()
    return world.root / name


def stopped_before_its_first_checkpoint(world: World, name: str) -> Path:
    """What a run killed before its first checkpoint leaves: its config, logged scalars and TensorBoard folder."""
    folder = world.run_copy(name)
    for stem in ("last", "best"):
        for path in folder.glob(f"{stem}.*"):
            path.unlink()
    return folder


def side_by_side_stopped_before_their_first_checkpoint(world: World, name: str) -> Path:
    """Two runs side by side, each as a run killed before its first checkpoint leaves it."""
    parent = world.root / name
    parent.mkdir()
    for run in ("a", "b"):
        stopped_before_its_first_checkpoint(world, f"{name}_{run}").rename(parent / run)
    return parent


def without(path: Path) -> Path:
    """`path`'s folder, `path` removed from it."""
    path.unlink()
    return path.parent


def damaged_run(world: World) -> Path:
    copy = world.run_copy("damaged_run")
    (copy / "last.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{not json}")
    return copy


def cut_run(world: World) -> Path:
    """A copy of the world's run whose weights file ends halfway: its header, with the step, is whole."""
    copy = world.run_copy("cut_run")
    weights = copy / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


def evaluation_with_an_overlay(world: World) -> Path:
    """An overlay in a copy of the world's evaluation, where `evaluate --vis-preds` draws them."""
    copy = world.root / "pictured"
    shutil.copytree(world.results, copy)
    (copy / "vis" / "builtin").mkdir(parents=True, exist_ok=True)
    return png_declaring(copy / "vis" / "builtin" / "overlay.png", 8, 8)


def named_pipe(path: Path) -> Path:
    os.mkfifo(path)
    return path


def broken_link(world: World) -> Path:
    link = world.root / "broken_link"
    link.symlink_to("nowhere")
    return link


def edited_run(world: World, key: str, value: object) -> Path:
    """A copy of the world's run whose last.json has `key` set to `value`."""
    copy = world.run_copy("edited_run")
    metadata = json.loads((copy / "last.json").read_text())
    (copy / "last.json").write_text(json.dumps({**metadata, key: value}))
    return copy


def stored_images(world: World, name: str, size: int) -> Path:
    """The store extracted at `size` from a custom folder of `World.images`' two pictures, in a folder `name`."""
    out = world.root / name
    folder = world.images(f"{name}_stored", lambda _: None)
    extracted = invoke(
        *extraction("--dataset", "custom", "--root", folder, "--size", size, "--workers", 0, "--out", out)
    )
    assert extracted.exit_code == 0, extracted.output
    return next(out.glob("*.zarr"))


def store_of_a_moved_folder(world: World) -> Path:
    """A store of `World.images`' two pictures whose folder was then moved: the root the store recorded is gone."""
    store = stored_images(world, "moved", SIZE)
    (world.root / "moved_stored").rename(world.root / "moved_away")
    return store


def check_names_the_recorded_folder(world: World, output: str) -> None:
    assert f"{world.root / 'moved_stored'} (the folder {world.root / 'moved'}" in " ".join(output.split())


def other_images(world: World, name: str) -> Path:
    """A custom folder of `World.images`' names and masks with other pictures: a dataset that a store's item ids
    cannot tell from the first."""

    def repaint(folder: Path) -> None:
        for index in range(2):
            write_image(folder / "images" / f"im{index}.jpg", 28, 28, seed=100 + index)

    return world.images(f"{name}_other", repaint)


def results_of_another_store(world: World) -> Path:
    """A copy of the world's results whose results.json says their objects came from a store made otherwise."""
    copy = world.root / "results_elsewhere"
    shutil.copytree(world.results, copy)
    results = json.loads((copy / "results.json").read_text())
    results["source_fingerprints"] = {name: "0" * 64 for name in results["source_fingerprints"]}
    (copy / "results.json").write_text(json.dumps(results))
    return copy


def results_with_empty_curves(world: World) -> Path:
    """A copy of the world's results whose ious.npz is empty, as a disk that filled up as it was made leaves it."""
    copy = world.root / "results_empty_curves"
    shutil.copytree(world.results, copy)
    (copy / "ious.npz").write_bytes(b"")
    return copy


def run_of_another_width(world: World) -> Path:
    """A copy of the world's run whose last.json describes a head of another width than its weights'."""
    copy = world.run_copy("other_width_run")
    metadata = json.loads((copy / "last.json").read_text())
    metadata["config"]["model"]["head"]["width"] = 32
    (copy / "last.json").write_text(json.dumps(metadata))
    return copy


def imported_probe(world: World, name: str = "imported_probe") -> Path:
    """A copy of the world's run whose last.json records the import-seed source, as an imported probe's does: the
    trained weights and no optimizer state."""
    copy = world.run_copy(name)
    metadata = json.loads((copy / "last.json").read_text())
    metadata["imported_from"] = {"path": "/seeds/last_checkpoint.pth", "sha256": "0" * 64, "preset": "sbd_224"}
    (copy / "last.json").write_text(json.dumps(metadata))
    (copy / "last.optim.safetensors").unlink()
    return copy


def ritm_checkpoint(world: World) -> Path:
    """A checkpoint as RITM's trainer saves one (its model's config beside the weights), of its HRNet model."""
    params = {"width": 18, "ocr_width": 64, "use_disks": True, "norm_radius": 5, "with_prev_mask": True}
    config = {
        "class": "isegm.model.is_hrnet_model.HRNetModel",
        "params": {name: {"type": "builtin", "value": value, "specified": True} for name, value in params.items()},
    }
    weights = {
        "feature_extractor.conv1.weight": torch.zeros(64, 3, 3, 3),
        "maps_transform.0.weight": torch.zeros(16, 3, 1, 1),
    }
    torch.save({"state_dict": weights, "config": config}, world.root / "ritm.pth")
    return world.root / "ritm.pth"


HOLDERS: list[subprocess.Popen] = []
TEST_IDS = [f"test_{index:03d}" for index in range(12)]


def declare_a_huge_image(folder: Path) -> None:
    (folder / "images" / "im1.jpg").unlink()
    png_declaring(folder / "images" / "im1.png", 8000, 6000)


def held(output: Path, shared: bool = False) -> list[object]:
    """Start another process that holds `output`'s lock (no arguments: the case's command follows); `shared`: as a
    command reading a store holds it."""
    HOLDERS.append(hold_lock(output, shared))
    return []


def release_and_check_holder(output: str, reader: bool = False) -> None:
    holder = HOLDERS.pop()
    holder.kill()
    holder.wait()
    named = f"(PID {holder.pid}: -c import sys, time from pathlib" if reader else f"(PID {holder.pid} on "
    assert named in output, "the message names the process that holds the store"


@pytest.fixture(scope="module", autouse=True)
def no_holder_left() -> Iterator[None]:
    yield
    for holder in HOLDERS:
        holder.kill()


def assert_last_good_checkpoint_kept(run: Path, step: int) -> None:
    assert json.loads((run / "last.json").read_text())["step"] == step
    weights = load_file(run / "last.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values()), "the saved weights are the good ones"


def assert_no_pending_checkpoint(run: Path) -> None:
    assert not list(run.glob("*.pending")), "a checkpoint that could not be written leaves nothing behind"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_its_message_and_a_non_zero_exit(world: World, case: str) -> None:
    arguments, message, exit_code, run, then = CASES[case]
    command = arguments(world)
    before = snapshot(world.root)
    code, output = run(command)
    assert code == exit_code, output
    assert message in output
    assert "Traceback" not in output
    assert_unchanged(before, snapshot(world.root))
    if then is not None:
        then(world, output)


def test_the_error_table_lists_exactly_these_cases_with_their_messages() -> None:
    section = ERROR_TABLE.read_text().split("## When the input is wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    table = {cells[0].strip(): cells[1] for cells in rows[1:]}
    assert list(table) == list(CASES)
    for case, (_, message, *_) in CASES.items():
        assert re.sub(r"\s+", " ", message) in table[case].replace("`", ""), case
