"""The `isegprobe extract-features` console script, run as a user runs it."""

from __future__ import annotations

import re

import numpy as np
import timm
import torch
import zarr
from dataset_trees import box, write_image, write_mask
from launch import run_cli, run_two_ranks


def timm_patch_tokens(model: torch.nn.Module, images_uint8: np.ndarray) -> np.ndarray:
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
    side = images_uint8.shape[1] // model.patch_embed.patch_size[0]
    return tokens.reshape(len(x), side, side, -1).permute(0, 3, 1, 2).numpy()


def test_full_grabcut_with_a_timm_state_dict(grabcut_root, tmp_path):
    torch.manual_seed(3)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    args = [
        "extract-features",
        "--featurizer",
        "vit_small_patch14_dinov2",
        "--weights",
        str(tmp_path / "w.pth"),
        "--dataset",
        "grabcut",
        "--root",
        str(grabcut_root),
        "--size",
        "112",
        "--views",
        "identity",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "OUT"),
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    stores = list((tmp_path / "OUT").iterdir())
    assert len(stores) == 1 and str(stores[0]) in first.stdout
    root = zarr.open(str(stores[0]), mode="r")
    features = root["features"]
    assert features.dtype == np.float16 and features.shape == (50, 1, 384, 8, 8)
    images = root["images"][:].reshape(50, 112, 112, 3)
    expected = np.concatenate([timm_patch_tokens(model, images[i : i + 25]) for i in range(0, 50, 25)])
    np.testing.assert_allclose(features[:].reshape(expected.shape).astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    second = run_cli(*args)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path):
    missing = run_cli(
        "extract-features",
        "--featurizer",
        "vit_small_patch14_dinov2",
        "--weights",
        str(tmp_path / "nope.pth"),
        "--dataset",
        "builtin",
        "--out",
        str(tmp_path),
    )
    assert missing.returncode != 0 and "nope.pth" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run_cli(
        "extract-features",
        "--featurizer",
        "vit_small_patch14_dinov2",
        "--weights",
        "random",
        "--dataset",
        "imagenet",
        "--out",
        str(tmp_path),
    )
    assert unknown.returncode != 0 and "imagenet" in unknown.stderr and "grabcut" in unknown.stderr


def test_a_truncated_image_stops_extraction_with_its_name_and_keeps_the_items_before_it(tmp_path):
    """The error is raised in an image-decoding worker; it must reach the user as its one line, not as the
    worker's traceback, and the items already extracted must stay for the next run."""
    root = tmp_path / "mine"
    for index in range(3):
        write_image(root / "images" / f"im{index}.jpg", 28, 28, seed=index)
        write_mask(root / "masks" / f"im{index}.png", box(28, 28, 4, 4, 20, 20))
    whole = (root / "images" / "im2.jpg").read_bytes()
    (root / "images" / "im2.jpg").write_bytes(whole[: len(whole) // 2])
    args = ["extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random"]
    args += ["--dataset", "custom", "--root", str(root), "--size", "28", "--items-per-shard", "1", "--workers", "2"]
    args += ["--out", str(tmp_path / "cache")]
    stopped = run_cli(*args)
    assert stopped.returncode == 1
    assert "im2.jpg: this image file is truncated" in stopped.stderr
    assert "The items extracted so far are kept" in stopped.stderr
    assert "Traceback" not in stopped.stderr and "DataLoader worker" not in stopped.stderr
    store = zarr.open_group(str(tmp_path / "cache" / "vit_small_patch14_dinov2-custom-test-28.zarr"), mode="r")
    assert store["done"][:].tolist() == [1, 1, 0]

    (root / "images" / "im2.jpg").write_bytes(whole)
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "extracted 1 of 3 items" in resumed.stdout + resumed.stderr
    assert re.search(
        r"extraction loop: \d+ % waiting for images, \d+ % featurizer, \d+ % waiting for writes", resumed.stdout
    )


def test_torchrun_ranks_of_other_weights_stop_before_writing(tmp_path):
    """Rank 1 with another weights file wrote its features into the store rank 0 made, which records rank 0's
    weights (exit 0, and `cache verify` found it consistent). Every rank now stops first, naming the setting."""
    other = tmp_path / "other.pth"
    torch.manual_seed(5)
    torch.save(timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518).state_dict(), other)
    args = ["extract-features", "--featurizer", "vit_small_patch14_dinov2", "--weights", "random", "--dataset"]
    args += ["builtin", "--size", "56", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "ranks")]
    launched = run_two_ranks(*args, port=29534, rank_one_adds=["--weights", str(other)])
    assert launched.returncode != 0
    message = "torchrun rank 1 runs another command than rank 0: the featurizer's weights (--weights) is"
    assert launched.stderr.count(message) == 2, launched.stderr  # both ranks say it, and neither waits
    assert not (tmp_path / "ranks").exists()


def test_torchrun_ranks_fill_one_store(tmp_path):
    common = [
        "--featurizer",
        "vit_small_patch14_dinov2",
        "--weights",
        "random",
        "--dataset",
        "builtin",
        "--size",
        "56",
        "--items-per-shard",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    launched = run_two_ranks("extract-features", *common, "--out", str(tmp_path / "ranks"), port=29533)
    single = run_cli("extract-features", *common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    assert launched.returncode == 0, launched.stderr
    name = next((tmp_path / "single").iterdir()).name
    one, two = zarr.open(str(tmp_path / "single" / name), mode="r"), zarr.open(str(tmp_path / "ranks" / name), mode="r")
    assert two["done"][:].all() and two.attrs["completion"]["items_done"] == 12
    np.testing.assert_array_equal(one["features"][:], two["features"][:])
    assert launched.stdout.count("extracted 12 of 12 items") == 1, "rank 0 reports every rank's items, once"
    assert "extracted 6 of" not in launched.stdout and "nothing to do" not in launched.stdout
