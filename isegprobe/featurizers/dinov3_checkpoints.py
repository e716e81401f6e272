"""DINOv3's official ViT files (`dinov3_vit*_pretrain_<data>-<hash>.pth`, facebookresearch/dinov3) in timm's names,
and its ConvNeXt files told apart (timm's ConvNeXt converter reads them).

timm builds DINOv3 on its `Eva` class. Every tensor of the official file is accounted for: renamed, folded into
another (the q/k/v bias with its mask), checked against what timm computes itself and then used in its place (RoPE
periods, `use_files_periods`), or dropped because no feature depends on it (pretraining's mask token, the SAT
ViT-L's norm for local crops, which the authors' model never applies in evaluation). Anything else is an error
naming the tensor, and `load_strictly` then reports every timm tensor the file did not fill.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from isegprobe.errors import UserError

RENAMES = (
    ("storage_tokens", "reg_token"),
    (".ls1.gamma", ".gamma_1"),
    (".ls2.gamma", ".gamma_2"),
    (".mlp.w1.", ".mlp.fc1_g."),  # SwiGLU (the S+ and H+ models): gate, value, output
    (".mlp.w2.", ".mlp.fc1_x."),
    (".mlp.w3.", ".mlp.fc2."),
)
# Tensors no feature depends on.
UNUSED = {
    "mask_token": "pretraining's mask token",
    "local_cls_norm.weight": "the SAT ViT-L's norm for local crops, never applied in evaluation",
    "local_cls_norm.bias": "the SAT ViT-L's norm for local crops, never applied in evaluation",
}
PERIODS = "rope_embed.periods"
QKV_BIAS = re.compile(r"^(blocks\.\d+\.attn)\.qkv\.bias$")


def is_dinov3_layout(state: dict[str, Tensor]) -> bool:
    """The official ViT layout names its register tokens `storage_tokens` and its RoPE `rope_embed`."""
    return "storage_tokens" in state and PERIODS in state


def is_dinov3_convnext_layout(state: dict[str, Tensor]) -> bool:
    """The official ConvNeXt layout (`dinov3_convnext_*_pretrain_*.pth`) keeps its final norm twice, as `norm` and
    as the last of the per-stage `norms` it applies to dense outputs (identities before it); timm's ConvNeXt
    converter takes the first as its head's norm and drops the second."""
    return "norms.3.weight" in state and "norm.weight" in state


def dinov3_to_timm(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The official file's tensors under `model`'s names (a timm `vit_*_dinov3` or `vit_*_dinov3_qkvb`)."""
    _check_periods(state[PERIODS], model)
    own = model.state_dict()
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in UNUSED or key == PERIODS or key.endswith(".attn.qkv.bias_mask"):
            continue
        qkv_bias = QKV_BIAS.match(key)
        if qkv_bias:
            converted.update(_split_qkv_bias(qkv_bias.group(1), value, state[f"{key}_mask"], own))
            continue
        for source, target in RENAMES:
            key = key.replace(source, target)
        converted[key] = value
    return converted


def use_files_periods(state: dict[str, Tensor], model: nn.Module) -> None:
    """Make `model`'s RoPE use the official file's periods. The released files hold them rounded to bfloat16, and
    the authors' model computes its angles from the file's values (`RopePositionEmbedding.periods` is a persistent
    buffer, loaded strictly); timm computes them anew in float32, which moved ViT-S/16 features by up to 8e-4 and
    ViT-B/16's by up to 1.7e-3 from the authors' (random weights, 224 px). Call after the file is loaded."""
    rope = model.rope
    with torch.no_grad():
        rope.periods.copy_(state[PERIODS].to(rope.periods.dtype))
    if getattr(rope, "pos_embed_cached", None) is not None and rope.feat_shape is not None:
        rope._cache_embed(list(rope.feat_shape))  # the fixed-size model's table, from the new periods


def _split_qkv_bias(attention: str, bias: Tensor, mask: Tensor, own: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINOv3 multiplies its fused q/k/v bias by `bias_mask`, 0 on k; timm keeps q and v apart (`_qkvb` models) or
    has no bias at all, which fits a file only where its q and v biases are zero (the distilled S, B, L files)."""
    query, key, value = (bias * mask.to(bias.dtype)).chunk(3)
    if torch.any(key != 0):
        raise UserError(f"{attention}.qkv.bias: its mask leaves a nonzero key bias, which DINOv3's attention never has")
    if f"{attention}.q_bias" in own:
        return {f"{attention}.q_bias": query, f"{attention}.v_bias": value}
    if torch.any(query != 0) or torch.any(value != 0):
        raise UserError(
            f"{attention}.qkv.bias: the file has nonzero query/value biases and this model has none; "
            "use the `_qkvb` variant of the name (e.g. vit_small_patch16_dinov3_qkvb)"
        )
    return {}


def _check_periods(periods: Tensor, model: nn.Module) -> None:
    """The file's RoPE periods (stored in bfloat16) must be timm's for the chosen model, rounded the same way:
    another temperature or head width means the name does not fit the file."""
    rope = getattr(model, "rope", None)
    expected = getattr(rope, "periods", None)
    if expected is None or expected.shape != periods.shape:
        raise UserError(
            f"{PERIODS}: the file has DINOv3's RoPE with {periods.numel()} periods; the chosen model "
            f"{'has none' if expected is None else f'has {expected.numel()}'}"
        )
    rounded = expected.to(torch.bfloat16).float()
    if not torch.allclose(periods.float(), rounded, rtol=1e-2):
        raise UserError(f"{PERIODS}: the file's RoPE periods are not the chosen model's ({rounded.tolist()})")
