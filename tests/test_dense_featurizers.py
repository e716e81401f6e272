"""The timm_dense family (any timm model with `forward_intermediates`) against timm's own feature API, and its stores
through `isegprobe extract-features`, as a user runs it."""

from __future__ import annotations

import copy
import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import zarr
from click.testing import CliRunner
from torch import Tensor

from isegprobe.cli import main
from isegprobe.config import ClickEncoderConfig, HeadConfig, ModelConfig, UpsamplerConfig
from isegprobe.errors import UserError
from isegprobe.featurizers import Featurizer, RandomWeightsWarning, create_featurizer
from isegprobe.featurizers.dense import DenseFeaturizer
from isegprobe.featurizers.weights import WeightsSource
from isegprobe.model import ISProbe

DINOV3 = "vit_small_patch16_dinov3"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def random_featurizer(name: str) -> Featurizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_featurizer(name)


def images(size: int, batch: int = 2) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def timm_intermediate(model: torch.nn.Module, x: Tensor, block: int) -> Tensor:
    """What the family promises: timm's call, as written in its docstring (every block run, no stop_early)."""
    with torch.no_grad():
        return model.forward_intermediates(x, indices=[block], norm=True, output_fmt="NCHW", intermediates_only=True)[
            -1
        ]


# name, image size, block index it resolves to, stride, channels
CASES = [
    (DINOV3, 32, 11, 16, 384),
    (f"{DINOV3}@-4", 32, 8, 16, 384),
    ("eva02_tiny_patch14_224", 28, 11, 14, 192),
    ("eva02_tiny_patch14_224@6", 28, 6, 14, 192),
    ("convnext_atto", 64, 3, 32, 320),
    ("convnext_atto@1", 64, 1, 8, 80),
]


@pytest.mark.parametrize(("name", "size", "block", "stride", "dim"), CASES)
def test_features_are_timms_forward_intermediates(name, size, block, stride, dim):
    featurizer = random_featurizer(name)
    x = images(size)
    out = featurizer(x)
    assert out.shape == (2, dim, size // stride, size // stride)
    assert (featurizer.patch_size, featurizer.dim, featurizer.stride_name) == (stride, dim, "stride")
    torch.testing.assert_close(out, timm_intermediate(featurizer.model, x, block), rtol=0, atol=1e-5)
    provenance = featurizer.provenance
    assert (provenance["block"], provenance["normed"], provenance["output"]) == (block, True, "intermediates")


def test_hieras_features_are_timms_unnormed_intermediates():
    """timm gives no normed intermediates of a Hiera (MAE's or SAM2's HieraDet): their final norm is the classifier
    head's. The features are the stage's output as it is, and the provenance says so."""
    featurizer = random_featurizer("sam2_hiera_tiny")
    x = images(64)
    with torch.no_grad():
        expected = featurizer.model.forward_intermediates(
            x, indices=[-1], norm=False, output_fmt="NCHW", intermediates_only=True
        )[-1]
    torch.testing.assert_close(featurizer(x), expected, rtol=0, atol=1e-5)
    assert (featurizer.patch_size, featurizer.dim, featurizer.fixed_size) == (32, 768, None)
    assert featurizer.provenance["normed"] is False and "fixed_size" not in featurizer.provenance


def test_an_early_block_too_small_on_four_strides_is_no_model_of_one_size():
    """SAM2's Hiera at its first stage (stride 4) fails on a 16 px image, whose 4x4 tokens are fewer than its 8x8
    windows, but runs at 32 px and up: measured there, not taken for a model of its build size (896 px) alone."""
    featurizer = random_featurizer("sam2_hiera_tiny@0")
    assert (featurizer.patch_size, featurizer.dim, featurizer.fixed_size) == (4, 96, None)
    assert "fixed_size" not in featurizer.provenance
    x = images(32, batch=1)
    with torch.no_grad():
        expected = featurizer.model.forward_intermediates(x, indices=[0], output_fmt="NCHW", intermediates_only=True)
    assert torch.equal(featurizer(x), expected[-1])
    with pytest.raises(UserError, match=r"does not run on a 24x24 px image .*; sizes near it that run: 32$"):
        featurizer(images(24, batch=1))


def test_a_model_timm_builds_for_one_size_runs_at_that_size_and_refuses_others(tmp_path):
    """MAE's Hiera adds a position table of its build size unresampled: it runs at 224 px only."""
    featurizer = random_featurizer("hiera_tiny_224")
    assert featurizer.fixed_size == featurizer.provenance["fixed_size"] == 224
    assert featurizer(images(224, batch=1)).shape == (1, 768, 7, 7)
    with pytest.raises(UserError, match="runs on 224 px images only .*, not 448x448"):
        featurizer(images(448, batch=1))
    result = extract(tmp_path / "cache", "hiera_tiny_224", size=448)
    assert result.exit_code != 0
    assert "--size 448: hiera_tiny_224 runs on 224 px images only" in result.output
    assert "pass --size 224" in result.output
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("name", "size", "message", "near"),
    [
        ("mobilevitv2_050", 96, r"gives a 4x4 grid on a 96x96 px image, not the 3x3 of its stride 32", "64, 128"),
        ("ghostnetv3_050", 32, r"does not run on a 32x32 px image \(timm's GhostNet: Given input size", "64, 96"),
    ],
)
def test_a_size_the_model_runs_wrongly_at_is_refused_naming_sizes_that_run(tmp_path, name, size, message, near):
    """MobileViTv2 rounds an odd grid up (its own 224 px gives 8x8 features, not 7x7) and GhostNetV3 pools a 1x1
    grid to nothing, at multiples of a stride measured on sizes where they run: refused before any folder is made,
    naming multiples of the stride near it that run, instead of a traceback in the extraction."""
    featurizer = random_featurizer(name)
    with pytest.raises(UserError, match=message):
        featurizer(images(size, batch=1))
    result = extract(tmp_path / "cache", name, size=size)
    assert result.exit_code == 1 and not isinstance(result.exception, ValueError | RuntimeError)
    assert f"--size {size}: {name} " in result.output and f"sizes near it that run: {near}\n" in result.output
    assert "pass --size" not in result.output
    assert not (tmp_path / "cache").exists()
    assert featurizer(images(128, batch=1)).shape == (1, featurizer.dim, 4, 4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("inception_v3", r"no fixed stride \(a 128 px image gave a 2x2 grid, a 256 px one 6x6\)"),
        ("crossvit_tiny_240", "a 68x68 image gave a 14x14 grid, not one of stride 17"),
        ("mvitv2_tiny", "MultiScaleVit ran on a 128 px image but not on a 256 px one"),
    ],
)
def test_a_model_whose_grid_is_not_the_image_over_a_stride_is_refused_when_built(name, message):
    """Inception's unpadded convolutions, CrossViT's resize to its own size: features that would not lie where the
    probe puts them over the pixels; MViTv2's relative positions, which run out past its build size."""
    with pytest.raises(UserError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        create_featurizer(name)


def test_a_patch_embedding_that_gives_more_than_tokens_leaves_late_fusion():
    """XCiT's patch embedding returns its grid beside its tokens: no tokens to add clicks to."""
    featurizer = random_featurizer("xcit_nano_12_p16_224")
    assert featurizer(images(64)).shape == (2, featurizer.dim, 4, 4)
    assert "gives no tokens on the grid" in featurizer.early_fusion_refusal


@pytest.mark.parametrize(("arch", "size"), [("convnext_atto", 64), (DINOV3, 32)])
def test_a_timm_state_dict_with_its_classifier_loads(arch, size, tmp_path):
    """timm's own files hold the classifier the featurizer is built without (ConvNeXt: head.fc inside its head)."""
    torch.manual_seed(5)
    model = timm.create_model(arch, pretrained=False, **({"dynamic_img_size": True} if arch == DINOV3 else {})).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    featurizer = create_featurizer(arch, weights=str(tmp_path / "w.pth"))
    x = images(size)
    torch.testing.assert_close(featurizer(x), timm_intermediate(model, x, -1), rtol=0, atol=1e-5)


def test_a_vit_at_its_last_block_equals_the_vit_family_bit_for_bit():
    x = images(42)
    chosen, plain = random_featurizer("vit_small_patch14_dinov2@-1"), random_featurizer("vit_small_patch14_dinov2")
    assert type(chosen) is not type(plain)
    torch.testing.assert_close(chosen(x), plain(x), rtol=0, atol=0)


def test_a_block_counted_from_either_end_is_the_same_block():
    forward, backward = random_featurizer(f"{DINOV3}@6"), random_featurizer(f"{DINOV3}@-6")
    assert forward.provenance["block"] == backward.provenance["block"] == 6
    x = images(32)
    torch.testing.assert_close(forward(x), backward(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"{DINOV3}@12", "no block 12; the model has 12"),
        ("convnext_atto@-5", "no block -5"),
        ("maskclip@3", "takes no block"),
        ("vit_small_patch14_dinov2:keys@2", "takes no block"),
        ("convnext_atto:keys", "not a ViT"),
        ("convnext_atoo", "did you mean convnext_atto"),
    ],
)
def test_bad_names_are_user_errors(name, message):
    with pytest.raises(UserError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        create_featurizer(name)


# --- early fusion: clicks added to the patch embedding's output ---

# Small variants (timm's architectures, fewer and narrower blocks) of the models with a patch embedding.
SMALL = {
    "samvit_base_patch16": {
        "embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,), "img_size": 64, "neck_chans": 32,
        "window_size": 2,
    },
    "naflexvit_base_patch16_radio_v3": {"embed_dim": 64, "depth": 2, "num_heads": 2},
    "eva02_tiny_patch14_224": {"depth": 2},
    DINOV3: {"depth": 2},
    "vit_small_patch14_dinov2": {"depth": 2},
}  # fmt: skip


def small_featurizer(arch: str, block: int = -1) -> DenseFeaturizer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, **DenseFeaturizer.timm_kwargs(arch), **SMALL[arch])
    return DenseFeaturizer(f"{arch}@{block}", model, WeightsSource("random"))


def constant_clicks(featurizer: DenseFeaturizer, x: Tensor) -> Tensor:
    grid = (x.shape[-2] // featurizer.patch_size, x.shape[-1] // featurizer.patch_size)
    values = torch.randn(featurizer.embed_dim, generator=torch.Generator().manual_seed(1))
    return values.view(1, -1, 1, 1).expand(x.shape[0], -1, *grid)


@pytest.mark.parametrize(
    ("arch", "dim", "embed_dim"), [("samvit_base_patch16", 32, 64), ("naflexvit_base_patch16_radio_v3", 64, 64)]
)
def test_sam_and_radio_features_are_timms_forward_intermediates(arch, dim, embed_dim):
    """SAM's neck maps the 64-wide tokens (what clicks are added to) to 32 channels."""
    featurizer = small_featurizer(arch)
    x = images(64)
    assert (featurizer.dim, featurizer.embed_dim, featurizer.patch_size) == (dim, embed_dim, 16)
    torch.testing.assert_close(featurizer(x), timm_intermediate(featurizer.model, x, -1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", SMALL)
def test_early_fusion_without_clicks_is_late_fusions_input(arch):
    featurizer = small_featurizer(arch, block=0)
    x = images(4 * featurizer.patch_size)
    zeros = torch.zeros(2, featurizer.embed_dim, 4, 4)
    torch.testing.assert_close(featurizer(x, token_bias=zeros), featurizer(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", SMALL)
def test_clicks_enter_where_the_patch_embedding_adds_its_bias(arch):
    """Clicks equal everywhere shift every patch token alike: the features of a model whose patch projection has
    that much more bias; and gradients reach the clicks through the frozen blocks."""
    featurizer = small_featurizer(arch)
    x = images(4 * featurizer.patch_size)
    clicks = constant_clicks(featurizer, x).clone().requires_grad_(True)
    features = featurizer(x, token_bias=clicks)
    shifted = copy.deepcopy(featurizer.model)
    projection = shifted.get_submodule(featurizer.patch_tokens.path)
    projection = getattr(projection, "proj", projection)
    with torch.no_grad():
        projection.bias += clicks[0, :, 0, 0]
    torch.testing.assert_close(features, timm_intermediate(shifted, x, -1), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(features, featurizer(x), atol=1e-2)
    features.square().mean().backward()
    assert clicks.grad is not None and clicks.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in featurizer.parameters())


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("convnext_atto", "timm's ConvNeXt has no patch embedding to add clicks to"),
        ("convnext_atto@1", "timm's ConvNeXt has no patch embedding"),
    ],
)
def test_early_fusion_is_refused_without_a_patch_embedding(name, reason):
    featurizer = random_featurizer(name)
    x = images(64)
    grid = 64 // featurizer.patch_size
    with pytest.raises(UserError, match=f"supports late fusion only .*{reason}"):
        featurizer(x, token_bias=torch.zeros(2, featurizer.embed_dim, grid, grid))
    config = ModelConfig(
        click_encoder=ClickEncoderConfig(name="patch_embed"),
        fusion="before_backbone",
        upsampler=UpsamplerConfig(name="bilinear"),
        head=HeadConfig(width=8),
    )
    dim = featurizer.dim
    with pytest.raises(UserError, match=f"fusion before_backbone: featurizer {name} supports late fusion only"):
        ISProbe(config, dim, featurizer.patch_size, token_dim=dim, featurizer=featurizer)


def test_a_patch_embedding_off_the_feature_grid_is_refused_naming_the_stride():
    """Swin embeds 4x4 patches and gives features at stride 32 after its last stage."""
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, depths=(1, 1, 1, 1), embed_dim=32,
        num_heads=(1, 1, 1, 1), img_size=128, window_size=4, dynamic_img_size=True,
    )  # fmt: skip
    featurizer = DenseFeaturizer("swin_tiny_patch4_window7_224", model, WeightsSource("random"))
    assert featurizer.early_fusion_refusal.endswith(
        "its patch embedding (patch_embed) gives no tokens on the grid of these features (stride 32)"
    )


# --- extract-features ---


def extract(out: Path, featurizer: str, size: int = 64) -> object:
    args = ["extract-features", "--featurizer", featurizer, "--weights", "random", "--dataset", "builtin"]
    args += ["--size", str(size), "--views", "identity", "--workers", "0", "--device", "cpu", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return CliRunner().invoke(main, args)


def seeded_dinov3() -> torch.nn.Module:
    """The weights `--weights random` promises: timm's init from seed 0, built here without isegprobe."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(DINOV3, pretrained=False, num_classes=0, dynamic_img_size=True).eval()


def test_extracted_store_holds_timms_features_of_the_seeded_weights(tmp_path):
    result = extract(tmp_path, DINOV3)
    assert result.exit_code == 0, result.output
    (store,) = tmp_path.glob("*.zarr")
    root = zarr.open(str(store), mode="r")
    assert root.attrs["featurizer"]["block"] == 11 and root.attrs["featurizer"]["patch_size"] == 16
    stored = root["features"][:, 0].astype(np.float32)
    model = seeded_dinov3()
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(root["images"][:, 0]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    expected = timm_intermediate(model, x, 11).numpy()
    assert stored.shape == expected.shape and expected.shape[1:] == (384, 4, 4)
    np.testing.assert_allclose(stored, expected, rtol=1e-2, atol=1e-2)


def test_a_store_of_another_block_is_never_resumed(tmp_path):
    assert extract(tmp_path, f"{DINOV3}@6").exit_code == 0
    (store,) = tmp_path.glob("*.zarr")
    store.rename(store.with_name(store.name.replace(f"{DINOV3}_6", DINOV3)))  # where the last block's store goes
    result = extract(tmp_path, DINOV3)
    assert result.exit_code != 0
    assert "featurizer block: store has 6, this run has 11" in result.output


def test_a_size_off_the_stride_is_refused_naming_both(tmp_path):
    result = extract(tmp_path, "convnext_atto", size=48)
    assert result.exit_code != 0
    assert "--size 48: must be a multiple of the featurizer's stride 32" in result.output


# --- end to end ---


def test_quickstart_trains_and_evaluates_a_probe_on_dinov3(tmp_path):
    out = tmp_path / "quickstart"
    args = ["quickstart", "--featurizer", DINOV3, "--size", "64", "--out", str(out), "--max-iters", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        result = CliRunner().invoke(main, [*args, "--max-clicks", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    builtin = json.loads((out / "results" / "results.json").read_text())["datasets"]["builtin"]
    assert builtin["num_instances"] == 26 and len(builtin["mIoU@k"]) == 3
    assert f"{DINOV3} + identity + after_backbone" in (out / "results" / "iou_vs_clicks.svg").read_text()


def test_early_fusion_trains_and_evaluates_through_dinov3s_patch_embedding(tmp_path):
    """Clicks in the patch embeddings: training and evaluation run DINOv3 on the store's images."""
    assert extract(tmp_path / "cache", DINOV3).exit_code == 0
    (store,) = (tmp_path / "cache").glob("*.zarr")
    settings = ["--set", "model.fusion=before_backbone", "--set", "data.batch_size=2"]
    train = ["train", "--config", "quickstart", "--store", str(store), *settings, "--max-iters", "2"]
    result = CliRunner().invoke(main, [*train, "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "run" / "last.safetensors"), "--store", str(store)]
    result = CliRunner().invoke(main, [*evaluate, "--max-clicks", "2", "--device", "cpu", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "e" / "results.json").read_text())["datasets"]["builtin"]["mIoU@k"]) == 2
