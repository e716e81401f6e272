"""Checkpoint files in their authors' own layouts, loaded into timm models: DINOv3's `dinov3_vit*_pretrain_*.pth`
(every tensor accounted for), SAM's `sam_vit_*.pth`, SAM2's `sam2*_hiera_*.pt` and the ConvNeXt files of DINOv3 and FB
(timm's converters for their families)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import zarr
from click.testing import CliRunner
from torch import Tensor

from isegprobe.cache.schema import check_same_featurizer, store_fingerprint
from isegprobe.cli import main
from isegprobe.errors import UserError
from isegprobe.featurizers import RandomWeightsWarning, create_featurizer
from isegprobe.featurizers.weights import SAM2_TRUNK, load_checkpoint

DINOV3 = "vit_small_patch16_dinov3"
OFFICIAL_FILE = "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"

# The authors' ViT-S/16 (facebookresearch/dinov3, `dinov3_vits16`): its state dict has 188 tensors; these are some of
# them, with their shapes. DINOv3 masks the key part of its fused q/k/v bias with `bias_mask` (1 on q and v, 0 on k)
# and keeps its RoPE periods as a buffer (bfloat16 in the released files).
AUTHORS_VITS16 = {
    "cls_token": (1, 1, 384),
    "storage_tokens": (1, 4, 384),
    "mask_token": (1, 384),
    "rope_embed.periods": (16,),
    "patch_embed.proj.weight": (384, 3, 16, 16),
    "blocks.0.attn.qkv.bias": (1152,),
    "blocks.0.attn.qkv.bias_mask": (1152,),
    "blocks.0.ls1.gamma": (384,),
    "blocks.11.ls2.gamma": (384,),
    "blocks.11.mlp.fc2.weight": (384, 1536),
    "norm.bias": (384,),
}
AUTHORS_VITS16_TENSORS = 188

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seeded(arch: str, seed: int = 3, **kwargs) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(("_bias", "gamma_1", "gamma_2")):
                    parameter.normal_(0, 0.1)  # timm initialises these to 0 or 1e-5: make them matter
    return model


def authors_layout(model: torch.nn.Module) -> dict[str, Tensor]:
    """`model`'s weights as DINOv3's code names and stores them: registers as storage tokens, LayerScale as
    ls1/ls2.gamma, one fused q/k/v bias with its mask (the key part random, as the mask hides it), a mask token,
    and the RoPE periods in bfloat16."""
    dim = model.embed_dim
    state = model.state_dict()
    layout = {"mask_token": torch.zeros(1, dim), "rope_embed.periods": model.rope.periods.to(torch.bfloat16)}
    for key, value in state.items():
        if key.endswith(("attn.q_bias", "attn.v_bias")):
            continue
        layout[
            key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        ] = value
    mask = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    for index in range(len(model.blocks)):
        attention = f"blocks.{index}.attn"
        query = state.get(f"{attention}.q_bias", torch.zeros(dim))
        value = state.get(f"{attention}.v_bias", torch.zeros(dim))
        layout[f"{attention}.qkv.bias"] = torch.cat([query, torch.randn(dim), value])
        layout[f"{attention}.qkv.bias_mask"] = mask.clone()
    return layout


def as_the_authors_load_it(model: torch.nn.Module) -> torch.nn.Module:
    """`model` computing its RoPE from the periods `authors_layout` stores, as the authors' model does: it loads its
    periods from the file (a persistent buffer), bfloat16 values into a float32 buffer. Otherwise timm's forward is
    the authors' to the bit (compared with facebookresearch/dinov3's own module on the same random weights)."""
    with torch.no_grad():
        model.rope.periods.copy_(model.rope.periods.to(torch.bfloat16).float())
    return model


def timm_features(model: torch.nn.Module, x: Tensor, block: int) -> Tensor:
    with torch.no_grad():
        return model.forward_intermediates(x, indices=[block], norm=True, output_fmt="NCHW", intermediates_only=True)[
            -1
        ]


def test_the_layout_written_here_is_the_authors_vits16():
    layout = authors_layout(seeded(DINOV3))
    assert len(layout) == AUTHORS_VITS16_TENSORS
    assert {key: tuple(layout[key].shape) for key in AUTHORS_VITS16} == AUTHORS_VITS16


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = seeded(DINOV3, dynamic_img_size=True)
    path = tmp_path_factory.mktemp("dinov3") / OFFICIAL_FILE
    torch.save(authors_layout(model), path)
    return path, as_the_authors_load_it(model)


@pytest.mark.parametrize("block", [None, 6])
def test_extract_features_from_the_official_file_writes_timms_features(official_file, grabcut_three, tmp_path, block):
    path, model = official_file
    featurizer = DINOV3 if block is None else f"{DINOV3}@{block}"
    args = ["extract-features", "--featurizer", featurizer, "--weights", str(path), "--dataset", "grabcut"]
    args += ["--root", str(grabcut_three), "--size", "64", "--views", "identity", "--workers", "0"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (store,) = tmp_path.glob("*.zarr")
    root = zarr.open(str(store), mode="r")
    assert root.attrs["featurizer"]["weights"] == str(path)
    assert root.attrs["featurizer"]["rope_periods"] == "file"
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(root["images"][:, 0]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    expected = timm_features(model, x, 11 if block is None else block).numpy()
    stored = root["features"][:, 0].astype(np.float32)
    assert stored.shape == expected.shape == (3, 384, 4, 4)
    np.testing.assert_allclose(stored, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())


def test_the_qkvb_variant_takes_the_files_query_and_value_biases(tmp_path):
    model = seeded(f"{DINOV3}_qkvb", dynamic_img_size=True)
    path = tmp_path / OFFICIAL_FILE
    torch.save(authors_layout(model), path)
    featurizer = create_featurizer(f"{DINOV3}_qkvb", weights=str(path))
    x = torch.randn(2, 3, 48, 32)
    timms = timm_features(model, x, 11)
    authors = timm_features(as_the_authors_load_it(model), x, 11)
    assert (timms - authors).abs().max() > 1e-5, "the periods matter"
    torch.testing.assert_close(featurizer(x), authors, rtol=0, atol=1e-6)
    with pytest.raises(UserError, match=r"blocks\.0\.attn\.qkv\.bias: .*nonzero query/value biases.*`_qkvb` variant"):
        create_featurizer(DINOV3, weights=str(path))


def damaged(official_file, tmp_path: Path, change) -> str:
    state = torch.load(official_file[0], weights_only=True)
    change(state)
    path = tmp_path / OFFICIAL_FILE
    torch.save(state, path)
    return str(path)


def test_an_unknown_tensor_is_named(official_file, tmp_path):
    path = damaged(official_file, tmp_path, lambda state: state.update({"blocks.0.attn.extra": torch.zeros(2)}))
    with pytest.raises(UserError, match=r"unexpected: blocks\.0\.attn\.extra"):
        create_featurizer(DINOV3, weights=path)


def test_a_missing_tensor_is_named(official_file, tmp_path):
    path = damaged(official_file, tmp_path, lambda state: state.pop("blocks.3.ls2.gamma"))
    with pytest.raises(UserError, match=r"missing: blocks\.3\.gamma_2"):
        create_featurizer(DINOV3, weights=path)


def test_a_nonzero_key_bias_is_refused(official_file, tmp_path):
    path = damaged(official_file, tmp_path, lambda state: state["blocks.2.attn.qkv.bias_mask"].fill_(1))
    with pytest.raises(UserError, match=r"blocks\.2\.attn\.qkv\.bias: .*nonzero key bias"):
        create_featurizer(DINOV3, weights=path)


def test_a_file_for_another_rope_is_refused(official_file, tmp_path):
    path = damaged(official_file, tmp_path, lambda state: state["rope_embed.periods"].mul_(3))
    with pytest.raises(UserError, match="RoPE periods are not the chosen model's"):
        create_featurizer(DINOV3, weights=path)


def test_a_file_for_another_size_names_its_misshaped_tensors(official_file):
    with pytest.raises(UserError, match=r"misshaped: .*patch_embed\.proj\.weight"):
        create_featurizer("vit_base_patch16_dinov3", weights=str(official_file[0]))


def test_sams_own_file_loads_through_timms_sam_converter(tmp_path):
    """SAM's `sam_vit_b_01ec64.pth` holds the image encoder under `image_encoder.` (MLP as lin1/lin2) beside the
    prompt encoder and mask decoder, which the featurizer does not use."""
    small = {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,), "img_size": 64}
    model = seeded("samvit_base_patch16", neck_chans=32, window_size=2, **small)
    state = {
        f"image_encoder.{key.replace('mlp.fc', 'mlp.lin')}": value
        for key, value in model.state_dict().items()
        if not key.startswith("head.")
    }
    state["prompt_encoder.point_embeddings.0.weight"] = torch.randn(1, 32)
    state["mask_decoder.iou_token.weight"] = torch.randn(1, 32)
    torch.save(state, tmp_path / "sam_vit_b_01ec64.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        target = timm.create_model(
            "samvit_base_patch16", pretrained=False, num_classes=0, neck_chans=32, window_size=2, **small
        )
    load_checkpoint(target, tmp_path / "sam_vit_b_01ec64.pth")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(timm_features(target.eval(), x, -1), timm_features(model, x, -1), rtol=0, atol=0)


def test_sam2s_own_file_loads_its_image_encoders_trunk(tmp_path):
    """SAM2's `sam2.1_hiera_tiny.pt` holds {"model": ...}: the image encoder's trunk under `image_encoder.trunk.`
    (MLPs as mlp.layers.0 and 1), beside its FPN neck, memory modules and mask decoder, and no final norm."""
    model = seeded("sam2_hiera_tiny")
    state = {
        f"{SAM2_TRUNK}{key.replace('mlp.fc1', 'mlp.layers.0').replace('mlp.fc2', 'mlp.layers.1')}": value
        for key, value in model.state_dict().items()
        if not key.startswith("head.")
    }
    state["image_encoder.neck.convs.0.conv.weight"] = torch.randn(256, 768, 1, 1)
    state["memory_encoder.out_proj.weight"] = torch.randn(64, 256, 1, 1)
    state["sam_mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    torch.save({"model": state}, tmp_path / "sam2.1_hiera_tiny.pt")
    featurizer = create_featurizer("sam2_hiera_tiny", weights=str(tmp_path / "sam2.1_hiera_tiny.pt"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[-1], norm=False, output_fmt="NCHW", intermediates_only=True)
    torch.testing.assert_close(featurizer(x), expected[-1], rtol=0, atol=0)


def test_features_from_timms_periods_are_told_apart_from_the_files(official_file):
    """Stores and probes made before the file's periods were used hold features of timm's: never mixed with today's."""
    today = create_featurizer(DINOV3, weights=str(official_file[0])).provenance
    before = {key: value for key, value in today.items() if key != "rope_periods"}
    with pytest.raises(UserError, match="rope_periods: checkpoint 'timm', store 'file'"):
        check_same_featurizer(before, today, "store")
    attrs = {"preprocessing": {}, "views": ["identity"], "dataset": {"name": "d", "split": "s"}, "item_ids": ["0"]}
    assert store_fingerprint({**attrs, "featurizer": today}) == store_fingerprint({**attrs, "featurizer": before})
    assert "rope_periods" not in create_featurizer(DINOV3, weights="random").provenance


# DINOv3's ConvNeXt-T (facebookresearch/dinov3, `dinov3_convnext_tiny`): 182 tensors, its final norm kept twice, as
# `norm` and as `norms.3` (the per-stage norms of its dense output: identities before the last).
AUTHORS_CONVNEXT_TINY_TENSORS = 182
CONVNEXT_RENAMES = (
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."),
    (r"\.mlp\.fc(\d)\.", r".pwconv\1."),
)


def seeded_convnext(arch: str = "convnext_tiny") -> torch.nn.Module:
    """A random ConvNeXt whose final norm (timm's `head.norm`) is far from the identity, so that it shows."""
    model = seeded(arch)
    with torch.no_grad():
        model.head.norm.weight.normal_(0.3, 0.5)
        model.head.norm.bias.normal_(0, 0.5)
    return model


def convnext_layout(model: torch.nn.Module, dinov3: bool) -> dict[str, Tensor]:
    """`model`'s weights as the authors' ConvNeXt code names them: DINOv3's (its final norm also as `norms.3`) or
    FB's ImageNet ConvNeXt's (with its classifier)."""
    layout = {}
    for key, value in model.state_dict().items():
        if key.startswith("head.norm."):
            suffix = key.removeprefix("head.norm.")
            layout[f"norm.{suffix}"] = value
            if dinov3:
                layout[f"norms.3.{suffix}"] = value
            continue
        for pattern, replacement in CONVNEXT_RENAMES:
            key = re.sub(pattern, replacement, key)
        layout[key] = value
    if not dinov3:
        layout |= {"head.weight": torch.zeros(1000, model.num_features), "head.bias": torch.zeros(1000)}
    return layout


def normed_every_location(features: Tensor, norm: torch.nn.Module) -> Tensor:
    """The authors' dense output of DINOv3's ConvNeXt written out: `norm(patches.flatten(-2, -1).permute(0, 2, 1))`
    with its final nn.LayerNorm (eps 1e-6), back to [B, C, H, W]."""
    batch, channels, height, width = features.shape
    tokens = F.layer_norm(features.flatten(2).permute(0, 2, 1), (channels,), norm.weight, norm.bias, 1e-6)
    return tokens.permute(0, 2, 1).reshape(batch, channels, height, width)


def test_dinov3s_convnext_file_gives_its_last_stage_normed_at_every_location(tmp_path):
    """timm keeps DINOv3's final norm as its classifier head's, which its forward_intermediates leaves out."""
    model = seeded_convnext()
    layout = convnext_layout(model, dinov3=True)
    assert len(layout) == AUTHORS_CONVNEXT_TINY_TENSORS
    torch.save(layout, tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth")
    x = torch.randn(2, 3, 64, 96)
    last = timm_features(model, x, -1)
    for name, block, expected in (
        ("convnext_tiny", -1, normed_every_location(last, model.head.norm)),
        ("convnext_tiny@-2", -2, timm_features(model, x, -2)),  # the authors' norms before the last are identities
    ):
        featurizer = create_featurizer(
            name, weights=str(tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth")
        )
        with torch.no_grad():
            torch.testing.assert_close(featurizer(x), expected, rtol=0, atol=1e-6)
        assert featurizer.provenance.get("last_stage_norm") == ("dinov3" if block == -1 else None), name
    assert (normed_every_location(last, model.head.norm) - last).abs().max() > 0.5, "the norm matters here"


def test_fbs_imagenet_convnext_file_keeps_its_dense_features_unnormed(tmp_path):
    """FB's ConvNeXt normalizes only the pooled vector that its classifier reads."""
    model = seeded_convnext()
    torch.save({"model": convnext_layout(model, dinov3=False)}, tmp_path / "convnext_tiny_1k_224_ema.pth")
    featurizer = create_featurizer("convnext_tiny", weights=str(tmp_path / "convnext_tiny_1k_224_ema.pth"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(featurizer(x), timm_features(model, x, -1), rtol=0, atol=0)
    assert "last_stage_norm" not in featurizer.provenance


def test_timms_dinov3_convnext_names_norm_their_last_stage_and_old_stores_are_told_apart():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        dinov3 = create_featurizer("convnext_tiny.dinov3_lvd1689m", weights="random")
        imagenet = create_featurizer("convnext_tiny", weights="random")
    assert dinov3.provenance["last_stage_norm"] == "dinov3" and "last_stage_norm" not in imagenet.provenance
    before = {key: value for key, value in dinov3.provenance.items() if key != "last_stage_norm"}
    with pytest.raises(UserError, match="last_stage_norm: checkpoint 'none', store 'dinov3'"):
        check_same_featurizer(before, dinov3.provenance, "store")
