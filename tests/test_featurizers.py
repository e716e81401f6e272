"""Featurizers against independent computations: timm's own forward, hooks inside timm's blocks, and a plain-torch
OpenAI CLIP; checkpoint files in timm, official DINOv2 and OpenAI CLIP layouts written here from known tensors."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch import Tensor, nn

from isegprobe.cache.schema import check_same_featurizer, store_fingerprint
from isegprobe.errors import UserError
from isegprobe.featurizers import (
    Featurizer,
    RandomWeightsWarning,
    create_featurizer,
    list_featurizers,
    parse_featurizer_name,
)
from isegprobe.featurizers import attention as attention_module
from isegprobe.featurizers.attention import MemoryEfficientAttention, attention_with_kernel
from isegprobe.featurizers.registry import FEATURIZERS
from isegprobe.state_dicts import TorchScriptWarning
from isegprobe.trust import allowing_torchscript

DINO = "vit_small_patch14_dinov2"
DINO_REG = "vit_small_patch14_reg4_dinov2"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def create_featurizer_quietly(name: str) -> Featurizer:
    """Random weights without the warning, which is tested on its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_featurizer(name)


random_featurizer = functools.cache(create_featurizer_quietly)  # shared by tests that only read the featurizer


def images(height: int, width: int, batch: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def as_map(tokens: Tensor, height: int, width: int) -> Tensor:
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)


def other_timm_model(arch: str, **kwargs) -> nn.Module:
    """A timm model whose weights differ from the featurizer's seed-0 init, biases and norms included."""
    generator = torch.Generator().manual_seed(123)
    model = timm.create_model(arch, pretrained=False, dynamic_img_size=True, **kwargs).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


# --- shapes and the interface ---


IMAGENET_MEAN, CLIP_MEAN = (0.485, 0.456, 0.406), (0.48145466, 0.4578275, 0.40821073)

# One small name per registered featurizer family (a family without one fails below): the name, an image size, and
# what the featurizer must report: dim, embed_dim, patch size, mean, provenance output.
FAMILY_CASES = {
    "timm_vit": (DINO, (56, 84), 384, 384, 14, IMAGENET_MEAN, "tokens"),
    "timm_vit_keys": (f"{DINO_REG}:keys", (42, 28), 384, 384, 14, IMAGENET_MEAN, "keys"),
    "maskclip": ("maskclip:vit_xsmall_patch16_clip_224", (32, 48), 512, 256, 16, CLIP_MEAN, "maskclip"),
    "dinov2_hub": ("dinov2_vits14", (28, 42), 384, 384, 14, IMAGENET_MEAN, "tokens"),
    "timm_dense": ("vit_small_patch16_dinov3", (32, 48), 384, 384, 16, IMAGENET_MEAN, "intermediates"),
}


@pytest.mark.parametrize("family", list_featurizers())
def test_every_family_builds_a_name_with_random_weights_and_keeps_the_interface(family):
    if family not in FAMILY_CASES:
        pytest.fail(f"featurizer family {family!r} has no case in FAMILY_CASES")
    name, size, dim, embed_dim, patch, mean, output = FAMILY_CASES[family]
    featurizer = random_featurizer(name)
    assert type(featurizer) is FEATURIZERS.get(family)
    out = featurizer(images(*size))
    assert out.shape == (2, dim, size[0] // patch, size[1] // patch)
    assert out.dtype == torch.float32 and out.is_contiguous() and torch.isfinite(out).all()
    assert (featurizer.name, featurizer.dim, featurizer.embed_dim) == (name, dim, embed_dim)
    assert featurizer.patch_size == patch
    assert featurizer.mean == pytest.approx(mean)
    assert not any(p.requires_grad for p in featurizer.parameters())
    featurizer.train()
    assert not featurizer.training and not any(m.training for m in featurizer.modules())
    provenance = featurizer.provenance
    assert json.loads(json.dumps(provenance)) == provenance
    assert provenance["name"] == name and provenance["dim"] == dim and provenance["patch_size"] == patch
    assert provenance["weights"] == "random" and provenance["random_seed"] == 0 and provenance["weights_sha256"] is None
    assert provenance["output"] == output


def test_bad_inputs_are_rejected():
    featurizer = random_featurizer(DINO)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        featurizer(images(56, 50))
    with pytest.raises(ValueError, match="token_bias"):
        featurizer(images(56, 56), token_bias=torch.zeros(2, 384, 3, 4))


# --- outputs against independent computations ---


@pytest.mark.parametrize(("arch", "prefix_tokens"), [(DINO, 1), (DINO_REG, 5)])
def test_tokens_are_timm_forward_features_without_class_and_register_tokens(arch, prefix_tokens):
    featurizer = random_featurizer(arch)
    x = images(56, 42)
    with torch.no_grad():
        expected = featurizer.model.forward_features(x)
    assert expected.shape[1] == 4 * 3 + prefix_tokens
    torch.testing.assert_close(featurizer(x), as_map(expected[:, prefix_tokens:], 4, 3), rtol=0, atol=1e-6)


def timms_last_keys(featurizer: nn.Module, x: Tensor) -> Tensor:
    """The last block's attention keys [B, tokens, heads * head_dim], as timm's own forward computes them."""
    attn = featurizer.model.blocks[-1].attn
    captured = {}
    handle = attn.k_norm.register_forward_hook(lambda module, args, out: captured.setdefault("k", out))
    try:
        with torch.no_grad():
            featurizer.model.forward_features(x)
    finally:
        handle.remove()
    keys = captured["k"]  # [B, heads, tokens, head_dim]
    return keys.transpose(1, 2).reshape(len(x), keys.shape[2], featurizer.dim)


def test_keys_are_the_last_blocks_attention_keys():
    featurizer = random_featurizer(f"{DINO_REG}:keys")
    x = images(42, 56)
    keys = timms_last_keys(featurizer, x)[:, 5:]
    torch.testing.assert_close(featurizer(x), as_map(keys, 3, 4), rtol=0, atol=1e-6)
    tokens = random_featurizer(DINO_REG)(x)
    assert not torch.allclose(featurizer(x), tokens)


@pytest.mark.parametrize("arch", ["vit_base_patch16_siglip_224", "aimv2_large_patch14_224"])
def test_tokens_of_vits_without_a_class_token_are_all_of_timms_forward_features(arch):
    """SigLIP and AIMv2 pool without a class token: every token timm gives is a patch's."""
    featurizer = random_featurizer(arch)
    patch = featurizer.patch_size
    x = images(4 * patch, 3 * patch)
    with torch.no_grad():
        expected = featurizer.model.forward_features(x)
    assert featurizer.model.num_prefix_tokens == 0 and expected.shape[1] == 4 * 3
    torch.testing.assert_close(featurizer(x), as_map(expected, 4, 3), rtol=0, atol=1e-6)


def test_keys_of_a_vit_without_qkv_biases_are_its_attention_keys():
    """AIMv2's attention has no q/k/v bias."""
    featurizer = random_featurizer("aimv2_large_patch14_224:keys")
    assert featurizer.model.blocks[-1].attn.qkv.bias is None
    x = images(56, 42)
    torch.testing.assert_close(featurizer(x), as_map(timms_last_keys(featurizer, x), 4, 3), rtol=0, atol=1e-6)


def test_maskclip_is_the_value_path_of_the_last_block():
    featurizer = random_featurizer("maskclip")
    model = featurizer.model
    assert model.blocks[0].mlp.act.__class__.__name__ == "QuickGELU"  # as OpenAI's CLIP was trained
    captured = {}
    handle = model.blocks[-1].attn.qkv.register_forward_hook(lambda module, args, out: captured.setdefault("qkv", out))
    try:
        x = images(224, 224, batch=1)  # CLIP's own grid: timm's forward resamples no positions
        with torch.no_grad():
            model.forward_features(x)
            values = captured["qkv"][..., 2 * 768 :]  # qkv of timm's own last block, input from timm's own forward
            expected = model.head(model.norm(model.blocks[-1].attn.proj(values)))[:, 1:]
    finally:
        handle.remove()
    torch.testing.assert_close(featurizer(x), as_map(expected, 14, 14), rtol=0, atol=1e-5)


# --- random weights ---


def test_random_weights_are_deterministic_and_warned_about():
    rng_before = torch.get_rng_state()
    with pytest.warns(RandomWeightsWarning, match="random weights"):
        first = create_featurizer(DINO)
    with pytest.warns(RandomWeightsWarning):
        second = create_featurizer(DINO)
    assert torch.equal(torch.get_rng_state(), rng_before)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert list(first_state) == list(second_state)
    for key, value in first_state.items():
        assert torch.equal(value, second_state[key]), key
    x = images(28, 28)
    assert torch.equal(first(x), second(x))
    with pytest.warns(RandomWeightsWarning, match=r"^dinov2_vits14: random weights"):
        create_featurizer("dinov2_vits14")  # the name given, not timm's vit_small_patch14_dinov2.lvd142m


# --- weights files ---


@pytest.mark.parametrize("layout", ["pth", "wrapped_bin", "safetensors"])
def test_timm_state_dict_files_load(tmp_path, layout):
    arch = "vit_small_patch16_224" if layout == "safetensors" else DINO  # the former keeps its classifier head
    reference = other_timm_model(arch)
    state = reference.state_dict()
    if layout == "pth":
        path = tmp_path / "model.pth"
        torch.save(state, path)
    elif layout == "wrapped_bin":
        path = tmp_path / "checkpoint.bin"
        torch.save({"model": state, "epoch": 3}, path)
    else:
        path = tmp_path / "model.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    featurizer = create_featurizer(arch, weights=str(path))
    x = images(112, 224, batch=1)  # a multiple of both patch sizes, 14 and 16
    grid = (112 // featurizer.patch_size, 224 // featurizer.patch_size)
    with torch.no_grad():
        expected = as_map(reference.forward_features(x)[:, 1:], *grid)
    torch.testing.assert_close(featurizer(x), expected, rtol=0, atol=1e-5)
    assert featurizer.provenance["weights"] == str(path.resolve())
    assert featurizer.provenance["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert featurizer.provenance["random_seed"] is None


def official_dinov2_layout(timm_state: dict[str, Tensor], chunked: bool) -> dict[str, Tensor]:
    """facebookresearch/dinov2 `dinov2/models/vision_transformer.py` key names: the same block names as timm
    (norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1/fc2, ls2.gamma), plus `mask_token` [1, C]; registers
    are `register_tokens` and pos_embed also covers the class token; block_chunks > 0 gives blocks.<chunk>.<i>."""
    state = dict(timm_state)
    dim = state["cls_token"].shape[-1]
    if "reg_token" in state:
        class_position = 0.1 * torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(7))
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.cat([class_position, state["pos_embed"]], dim=1)
        state["cls_token"] = state["cls_token"] - class_position
    state["mask_token"] = torch.zeros(1, dim)
    if chunked:
        state = {re.sub(r"^blocks\.(\d+)\.", r"blocks.0.\1.", key): value for key, value in state.items()}
    return state


@pytest.mark.parametrize(
    ("arch", "prefix_tokens", "chunked"), [(DINO, 1, False), (DINO, 1, True), (DINO_REG, 5, False)]
)
def test_official_dinov2_checkpoint_loads(tmp_path, arch, prefix_tokens, chunked):
    reference = other_timm_model(arch)
    official = official_dinov2_layout(reference.state_dict(), chunked)
    assert official["pos_embed"].shape[1] == 37 * 37 + 1
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)
    featurizer = create_featurizer(arch, weights=str(path))
    x = images(56, 42)
    with torch.no_grad():
        expected = as_map(reference.forward_features(x)[:, prefix_tokens:], 4, 3)
    torch.testing.assert_close(featurizer(x), expected, rtol=0, atol=1e-5)


def official_position_table(model: nn.Module, rows: int, cols: int) -> Tensor:
    """DINOv2's `interpolate_pos_encoding` for its hub models without registers, as its code documents it: the
    37x37 patch table resized bicubically by the scale factors (n + 0.1) / 37, no antialiasing; the class position
    unchanged."""
    table = model.pos_embed.detach()
    grid = table[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / 37, (cols + 0.1) / 37), mode="bicubic", antialias=False)
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


@pytest.mark.parametrize(("height", "width"), [(224, 224), (56, 98)])
def test_dinov2_hub_names_are_the_official_model_with_its_position_interpolation(tmp_path, height, width):
    reference = other_timm_model(DINO)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official_dinov2_layout(reference.state_dict(), chunked=False), path)
    hub = create_featurizer("dinov2_vits14", weights=str(path))
    rows, cols = height // 14, width // 14
    # timm's model at a fixed size, its position table replaced by the official interpolation of the same weights
    fixed = timm.create_model(DINO, pretrained=False, img_size=(height, width), num_classes=0).eval()
    state = reference.state_dict()
    state["pos_embed"] = official_position_table(reference, rows, cols)
    fixed.load_state_dict(state)
    x = images(height, width)
    with torch.no_grad():
        expected = as_map(fixed.forward_features(x)[:, 1:], rows, cols)
        timm_rule = create_featurizer(DINO, weights=str(path))(x)
    torch.testing.assert_close(hub(x), expected, rtol=0, atol=1e-5)
    assert (hub(x) - timm_rule).abs().max() > 1e-2, "timm's own resampling gives other features"
    assert hub.provenance["name"] == "dinov2_vits14" and hub.provenance["position_resampling"] == "dinov2"
    assert hub.provenance["architecture"] == "vit_small_patch14_dinov2.lvd142m"


def test_dinov2_hub_names_keep_the_table_at_its_own_grid(tmp_path):
    reference = other_timm_model(DINO)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official_dinov2_layout(reference.state_dict(), chunked=False), path)
    x = images(518, 518, batch=1)
    with torch.no_grad():
        expected = as_map(reference.forward_features(x)[:, 1:], 37, 37)
        torch.testing.assert_close(
            create_featurizer("dinov2_vits14", weights=str(path))(x), expected, atol=1e-5, rtol=0
        )


def test_imagenet_normalization_is_recorded_and_changes_the_statistics():
    augreg = create_featurizer_quietly("vit_small_patch16_224")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        imagenet = create_featurizer("vit_small_patch16_224", normalization="imagenet")
    assert augreg.mean == pytest.approx((0.5, 0.5, 0.5)) and augreg.provenance["normalization"] == "model"
    assert imagenet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert imagenet.std == pytest.approx((0.229, 0.224, 0.225))
    assert imagenet.provenance["normalization"] == "imagenet"
    assert imagenet.provenance["mean"] == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(UserError, match="unknown normalization 'clip'"):
        create_featurizer("vit_small_patch16_224", normalization="clip")


CLIP_WIDTH, CLIP_LAYERS, CLIP_HEADS = 768, 12, 12


@pytest.fixture(scope="module")
def openai_clip_state() -> dict[str, Tensor]:
    """Random ViT-B/16 weights under OpenAI CLIP's names, in fp16 as OpenAI ships them (plus text-tower keys)."""
    generator = torch.Generator().manual_seed(5)
    width = CLIP_WIDTH

    def tensor(*shape: int, scale: float = 0.02, mean: float = 0.0) -> Tensor:
        return (mean + scale * torch.randn(*shape, generator=generator)).half()

    state = {
        "visual.conv1.weight": tensor(width, 3, 16, 16),
        "visual.class_embedding": tensor(width, scale=0.5),
        "visual.positional_embedding": tensor(197, width, scale=0.5),
        "visual.ln_pre.weight": tensor(width, scale=0.1, mean=1.0),
        "visual.ln_pre.bias": tensor(width),
        "visual.ln_post.weight": tensor(width, scale=0.1, mean=1.0),
        "visual.ln_post.bias": tensor(width),
        "visual.proj": tensor(width, 512),
        "token_embedding.weight": tensor(10, 512),
        "logit_scale": torch.tensor(4.6052),
    }
    for i in range(CLIP_LAYERS):
        block = f"visual.transformer.resblocks.{i}."
        state |= {
            block + "ln_1.weight": tensor(width, scale=0.1, mean=1.0),
            block + "ln_1.bias": tensor(width),
            block + "attn.in_proj_weight": tensor(3 * width, width, scale=0.05),
            block + "attn.in_proj_bias": tensor(3 * width),
            block + "attn.out_proj.weight": tensor(width, width),
            block + "attn.out_proj.bias": tensor(width),
            block + "ln_2.weight": tensor(width, scale=0.1, mean=1.0),
            block + "ln_2.bias": tensor(width),
            block + "mlp.c_fc.weight": tensor(4 * width, width),
            block + "mlp.c_fc.bias": tensor(4 * width),
            block + "mlp.c_proj.weight": tensor(width, 4 * width),
            block + "mlp.c_proj.bias": tensor(width),
        }
    return state


def openai_maskclip_reference(
    state: dict[str, Tensor], x: Tensor, dtype: torch.dtype = torch.float32, token_bias: Tensor | None = None
) -> Tensor:
    """MaskCLIP written against OpenAI's CLIP modules as FeatUp, LoftUp and the iSegProbe research code run it, in
    plain torch: nn.MultiheadAttention's functional form on [tokens, batch, C], DINO's position interpolation
    (scale (n + 0.1) / 14, bicubic, no antialiasing) off the 14 x 14 grid. With `dtype` float16, as `clip.load` leaves
    the model on a GPU: float16 weights but for LayerNorm's and the embeddings, LayerNorm in float32, the embeddings
    cast to float16 where added. `token_bias` [B, tokens, C] is added into the patch embedding (early fusion)."""
    kept_float32 = ("ln_", "class_embedding", "positional_embedding")
    weight = {k: v.float() if any(part in k for part in kept_float32) else v.to(dtype) for k, v in state.items()}
    width = CLIP_WIDTH

    def layer_norm(t: Tensor, prefix: str) -> Tensor:
        normed = F.layer_norm(t.float(), (width,), weight[prefix + ".weight"], weight[prefix + ".bias"], eps=1e-5)
        return normed.to(t.dtype)

    rows, cols = x.shape[-2] // 16, x.shape[-1] // 16
    t = F.conv2d(x.to(dtype), weight["visual.conv1.weight"], stride=16).flatten(2).transpose(1, 2)
    if token_bias is not None:
        t += token_bias
    positions = weight["visual.positional_embedding"]
    if (rows, cols) != (14, 14):
        grid = positions[1:].reshape(1, 14, 14, width).permute(0, 3, 1, 2)
        scale = ((rows + 0.1) / 14, (cols + 0.1) / 14)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", recompute_scale_factor=False)
        positions = torch.cat([positions[:1], grid.permute(0, 2, 3, 1).reshape(rows * cols, width)])
    cls = weight["visual.class_embedding"].to(dtype) + torch.zeros(x.shape[0], 1, width, dtype=dtype)
    t = layer_norm(torch.cat([cls, t], dim=1) + positions.to(dtype), "visual.ln_pre").transpose(0, 1)
    for i in range(CLIP_LAYERS):
        block = f"visual.transformer.resblocks.{i}."
        y = layer_norm(t, block + "ln_1")
        in_w, in_b = weight[block + "attn.in_proj_weight"], weight[block + "attn.in_proj_bias"]
        out_w, out_b = weight[block + "attn.out_proj.weight"], weight[block + "attn.out_proj.bias"]
        if i == CLIP_LAYERS - 1:
            t = F.linear(F.linear(y, in_w[2 * width :], in_b[2 * width :]), out_w, out_b)
            break
        attended, _ = F.multi_head_attention_forward(
            y, y, y, embed_dim_to_check=width, num_heads=CLIP_HEADS, in_proj_weight=in_w, in_proj_bias=in_b,
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=out_w, out_proj_bias=out_b,
            training=False, need_weights=False,
        )  # fmt: skip
        t = t + attended
        y = layer_norm(t, block + "ln_2")
        hidden = F.linear(y, weight[block + "mlp.c_fc.weight"], weight[block + "mlp.c_fc.bias"])
        hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
        t = t + F.linear(hidden, weight[block + "mlp.c_proj.weight"], weight[block + "mlp.c_proj.bias"])
    t = layer_norm(t.transpose(0, 1)[:, 1:], "visual.ln_post") @ weight["visual.proj"]
    return as_map(t.float(), rows, cols)


def torchscript_archive(state: dict[str, Tensor], path: Path) -> None:
    """A TorchScript archive whose state_dict has `state`'s names, like OpenAI's ViT-B-16.pt."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(path))


def test_openai_clip_torchscript_archive_gives_maskclip(tmp_path, openai_clip_state):
    path = tmp_path / "ViT-B-16.pt"
    torchscript_archive(openai_clip_state, path)
    with pytest.raises(UserError, match="is a TorchScript archive .* not loaded without --allow-torchscript"):
        create_featurizer("maskclip", weights=str(path))
    with allowing_torchscript(), pytest.warns(TorchScriptWarning, match="runs the code it carries"):
        featurizer = create_featurizer("maskclip", weights=str(path))
    x = images(224, 224, batch=1)
    torch.testing.assert_close(featurizer(x), openai_maskclip_reference(openai_clip_state, x), rtol=0, atol=2e-4)


def test_openai_clip_state_dict_file_loads(tmp_path, openai_clip_state):
    path = tmp_path / "clip_vit_b16_state_dict.pt"
    torch.save(openai_clip_state, path)
    featurizer = create_featurizer("maskclip", weights=str(path))
    projection = openai_clip_state["visual.proj"].float()
    torch.testing.assert_close(featurizer.model.head.weight, projection.T, rtol=0, atol=0)
    assert torch.count_nonzero(featurizer.model.head.bias) == 0


class NotATensor:
    pass


@pytest.mark.parametrize("problem", ["garbage_pth", "garbage_safetensors", "pickled_object", "other_architecture"])
def test_bad_weights_files_name_the_file(tmp_path, problem):
    if problem == "garbage_pth":
        path = tmp_path / "broken.pth"
        path.write_bytes(b"definitely not a checkpoint" * 10)
    elif problem == "garbage_safetensors":
        path = tmp_path / "broken.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    elif problem == "pickled_object":
        path = tmp_path / "unsafe.pt"
        torch.save({"weight": NotATensor()}, path)
    else:
        path = tmp_path / "vit_small_patch16.pth"
        torch.save(other_timm_model("vit_small_patch16_224").state_dict(), path)
    with pytest.raises(UserError) as error:
        create_featurizer(DINO, weights=str(path))
    assert str(path.resolve()) in str(error.value)
    if problem == "other_architecture":
        assert "missing: " in str(error.value) and "ls1.gamma" in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda value: value.fill_(float("nan")), "NaN or infinite values in: blocks.3.mlp.fc1.weight"),
        (lambda value: value.fill_(float("inf")), "NaN or infinite values in: blocks.3.mlp.fc1.weight"),
        (lambda value: value.to(torch.int8), "not floating-point: blocks.3.mlp.fc1.weight (file int8)"),
        (lambda value: value > 0, "not floating-point: blocks.3.mlp.fc1.weight (file bool)"),
    ],
)
def test_weights_that_would_load_cast_or_as_nan_are_refused_by_key(tmp_path, change, message):
    # NaN weights made NaN features that extraction stored as done; int8 ones were cast to zeros, bool ones to ones.
    state = other_timm_model(DINO).state_dict()
    state["blocks.3.mlp.fc1.weight"] = change(state["blocks.3.mlp.fc1.weight"])
    path = tmp_path / "changed.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        create_featurizer(DINO, weights=str(path))
    assert str(path.resolve()) in str(error.value)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "model.pth"
    with pytest.raises(UserError, match=re.escape(str(path))):
        create_featurizer(DINO, weights=str(path))


def test_hub_weights_offline_say_they_need_the_internet(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(UserError, match="internet") as error:
        create_featurizer(DINO, weights="hub")
    assert "--weights PATH" in str(error.value)
    assert "--weights random runs the pipeline without them" in str(error.value) and "HF_HUB_OFFLINE=1" in str(
        error.value
    )


# --- names ---


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet50:keys", "not a ViT"),
        ("vit_smal_patch14_dinov2", "did you mean vit_small_patch14_dinov2"),
        (f"{DINO}.no_such_tag", "no pretrained tag"),
        ("maskclip:vit_small_patch16_224", "CLIP image tower"),
        (f"{DINO}:values", "unknown featurizer"),
        ("maskclip:", r"use one of .*maskclip:\{arch\}"),
        ("dinov2_vits14:keys", "e.g. vit_small_patch14_dinov2.lvd142m:keys"),
    ],
)
def test_bad_names_are_user_errors(name, message):
    with pytest.raises(UserError, match=message):
        create_featurizer(name)


@pytest.mark.parametrize(
    ("name", "arch", "family"),
    [
        (DINO, DINO, "timm_vit"),
        ("vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_224.openai", "timm_vit"),
        ("vit_base_patch16_clip_224.openai:keys", "vit_base_patch16_clip_224.openai", "timm_vit_keys"),
        ("maskclip", "vit_base_patch16_clip_quickgelu_224.openai", "maskclip"),
        ("maskclip:vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_224.openai", "maskclip"),
        ("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m", "dinov2_hub"),
        ("dinov2_vitg14_reg", "vit_giant_patch14_reg4_dinov2.lvd142m", "dinov2_hub"),
        ("vit_small_patch16_dinov3", "vit_small_patch16_dinov3", "timm_dense"),
        ("resnet50", "resnet50", "timm_dense"),
        (f"{DINO}@-4", DINO, "timm_dense"),
        ("convnext_atto.d2_in1k@2", "convnext_atto.d2_in1k", "timm_dense"),
    ],
)
def test_names_go_to_their_family_and_timm_architecture(name, arch, family):
    """Fixed names (`maskclip`, `dinov2_vits14`) win over the `{arch}` pattern; of the two families taking `{arch}`,
    timm's plain ViTs go to timm_vit unless a block is chosen; nothing is built."""
    assert parse_featurizer_name(name) == (arch, FEATURIZERS.get(family))


# --- early fusion ---


@pytest.mark.parametrize("name", [DINO_REG, f"{DINO}:keys"])
def test_token_bias_reaches_the_output_and_carries_gradients(name):
    featurizer = random_featurizer(name)
    x = images(28, 42)
    plain = featurizer(x)
    torch.testing.assert_close(featurizer(x, token_bias=torch.zeros(2, 384, 2, 3)), plain, rtol=0, atol=0)
    bias = torch.randn(2, 384, 2, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    biased = featurizer(x, token_bias=bias)
    assert not torch.allclose(biased, plain)
    biased.square().sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in featurizer.parameters())


def test_token_bias_is_added_to_the_patch_embeddings():
    featurizer = random_featurizer(DINO)
    model = featurizer.model
    x = images(28, 28)
    bias = torch.randn(2, 384, 2, 2, generator=torch.Generator().manual_seed(2))
    handle = model.patch_embed.register_forward_hook(lambda module, args, out: out + bias.permute(0, 2, 3, 1))
    try:
        with torch.no_grad():
            expected = as_map(model.forward_features(x)[:, 1:], 2, 2)
    finally:
        handle.remove()
    torch.testing.assert_close(featurizer(x, token_bias=bias), expected, rtol=0, atol=1e-6)


# --- xformers switch (the kernel itself needs CUDA; its layout is checked with an SDPA stand-in) ---


def sdpa_in_xformers_layout(q: Tensor, k: Tensor, v: Tensor, p: float = 0.0) -> Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p)
    return out.transpose(1, 2)


def test_attention_with_a_bmhk_kernel_matches_timm():
    attn = random_featurizer(DINO).model.blocks[3].attn
    tokens = torch.randn(2, 17, 384, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(
            attention_with_kernel(attn, tokens, sdpa_in_xformers_layout), attn(tokens), rtol=0, atol=1e-5
        )


def test_xformers_switch_only_when_importable_and_cpu_keeps_timms_path(monkeypatch):
    monkeypatch.setattr(attention_module, "xformers_kernel", lambda: None)
    plain = create_featurizer_quietly(DINO)
    assert not any(isinstance(m, MemoryEfficientAttention) for m in plain.modules())
    monkeypatch.setattr(attention_module, "xformers_kernel", lambda: sdpa_in_xformers_layout)
    switched = create_featurizer_quietly(DINO)
    attentions = [m for m in switched.modules() if isinstance(m, Attention)]
    assert len(attentions) == 12 and all(type(m) is MemoryEfficientAttention for m in attentions)
    x = images(28, 28)
    torch.testing.assert_close(switched(x), plain(x), rtol=0, atol=0)


def test_maskclip_off_its_grid_interpolates_positions_as_featup_and_the_research_code(tmp_path, openai_clip_state):
    path = tmp_path / "clip_vit_b16_state_dict.pt"
    torch.save(openai_clip_state, path)
    featurizer = create_featurizer("maskclip", weights=str(path))
    assert featurizer.provenance["position_resampling"] == "dino"
    x = images(160, 208, batch=1)
    with torch.no_grad():
        ours = featurizer(x)
        timm_resampled = featurizer.model.forward_features(x)
    torch.testing.assert_close(ours, openai_maskclip_reference(openai_clip_state, x), rtol=0, atol=2e-4)
    assert not torch.allclose(ours.flatten(2).transpose(1, 2)[0], featurizer.last_block(timm_resampled)[0, 1:])


@pytest.mark.parametrize("size", [(224, 224), (160, 208)])
def test_maskclip_in_research_precision_runs_float16_as_clip_load_leaves_it_on_a_gpu(tmp_path, openai_clip_state, size):
    path = tmp_path / "clip_vit_b16_state_dict.pt"
    torch.save(openai_clip_state, path)
    featurizer = create_featurizer("maskclip", weights=str(path))
    x = images(*size, batch=2)
    rows, cols = size[0] // 16, size[1] // 16
    bias = 0.1 * torch.randn(2, CLIP_WIDTH, rows, cols, generator=torch.Generator().manual_seed(3))
    featurizer.research_precision = True
    with torch.no_grad():
        float32 = featurizer(x, bias)  # on a CPU, clip.load leaves the model in float32
        float16 = featurizer.forward_float16(x, bias)
    reference_bias = bias.flatten(2).transpose(1, 2)
    expected = openai_maskclip_reference(openai_clip_state, x, torch.float16, reference_bias)
    assert float16.dtype == torch.float32 and featurizer.model.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert featurizer.model.norm_pre.weight.dtype == torch.float32 and featurizer.model.pos_embed.dtype == torch.float32
    torch.testing.assert_close(float16, expected, rtol=0, atol=2e-3)
    float32_error = (float32 - expected).abs().mean()
    assert (float16 - expected).abs().mean() < float32_error / 4  # the float16 rounding, not float32's arithmetic
    with pytest.raises(ValueError, match="float16"):
        featurizer(x)  # its weights are float16 now, as clip.load leaves them: no float32 pass any more


def test_maskclip_features_before_its_authors_position_rule_are_told_apart_from_todays():
    today = create_featurizer("maskclip:vit_xsmall_patch16_clip_224").provenance
    before = {**today, "position_resampling": "timm"}
    with pytest.raises(UserError, match="position_resampling: checkpoint 'timm', store 'dino'"):
        check_same_featurizer(before, today, "store")
    written_before_the_key = {key: value for key, value in today.items() if key != "position_resampling"}
    check_same_featurizer(written_before_the_key, {**today, "position_resampling": "timm"}, "store")
    attrs = {"preprocessing": {}, "views": ["identity"], "dataset": {"name": "d", "split": "s"}, "item_ids": ["0"]}
    # Runs and results that recorded a store's fingerprint before the rule changed still find their store.
    assert store_fingerprint({**attrs, "featurizer": today}) == store_fingerprint({**attrs, "featurizer": before})


def test_dinov2_in_research_precision_writes_its_attention_out_as_its_official_code(tmp_path):
    """DINOv2's own Attention (the research code's copy, without xformers): softmax((q * scale) @ k^T) @ v, as
    timm's unfused path computes it; PyTorch's fused kernel rounds otherwise."""
    reference = other_timm_model(DINO)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official_dinov2_layout(reference.state_dict(), chunked=False), path)
    hub = create_featurizer("dinov2_vits14", weights=str(path))
    unfused = timm.create_model(DINO, pretrained=False, img_size=(56, 98), num_classes=0).eval()
    state = reference.state_dict()
    state["pos_embed"] = official_position_table(reference, 4, 7)
    unfused.load_state_dict(state)
    for module in unfused.modules():
        if isinstance(module, Attention):
            module.fused_attn = False
    x = images(56, 98)
    with torch.no_grad():
        expected = as_map(unfused.forward_features(x)[:, 1:], 4, 7)
        fused = hub(x)
        hub.research_precision = True
        written_out = hub(x)
    assert torch.equal(written_out, expected)
    assert not torch.equal(fused, expected)
    # handed over with channels innermost, as the research featurizers' permuted token grids are; NCHW otherwise
    assert written_out.stride()[1] == 1 and written_out.stride()[3] == written_out.shape[1] and fused.is_contiguous()


def test_vit_keys_in_research_precision_write_attention_out_as_dinos_vit():
    """The research code's ViT runs DINO's ViT code: softmax((q @ k^T) * scale) @ v in every block before the one
    whose keys are read."""
    featurizer = create_featurizer_quietly("vit_small_patch16_224:keys")
    model = featurizer.model
    x = images(64, 48)
    with torch.no_grad():
        fused = featurizer(x)
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for block in model.blocks[:-1]:
            attn = block.attn
            q, k, v = attn.qkv(block.norm1(tokens)).reshape(2, -1, 3, 6, 64).permute(2, 0, 3, 1, 4)
            weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
            tokens = tokens + attn.proj((weights @ v).transpose(1, 2).reshape(2, -1, 384))
            tokens = tokens + block.mlp(block.norm2(tokens))
        last = model.blocks[-1]
        keys = F.linear(last.norm1(tokens), *(p[384:768] for p in (last.attn.qkv.weight, last.attn.qkv.bias)))
        featurizer.research_precision = True
        written_out = featurizer(x)
    assert torch.equal(written_out, as_map(keys[:, 1:], 4, 3))
    assert not torch.equal(fused, written_out)
