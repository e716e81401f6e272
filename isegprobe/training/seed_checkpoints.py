"""Probes trained by the iSegProbe research code (arXiv 2505.02075), read from its `.pth` checkpoints.

iSegProbe saves `{"state_dict": ..., "config": model._config}` with `torch.save`: the trained click encoder
(`embed_coords.*`) and head (`head.*`), and a config whose values include objects of the research code's own classes
(EasyDict, OmegaConf nodes, its ModelBuilder). Those classes are never imported or run here: the file is read
with torch's weights-only unpickler, every class it names standing in as an inert placeholder (EasyDict, a dict,
as an OrderedDict), so a checkpoint cannot execute code.

The weights map onto `ISProbe` name for name, with one reordering: iSegProbe stacks its click maps as
[previous mask, positive, negative], isegprobe as [positive, negative, previous mask].
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.inert_pickles import Placeholder, load_inertly
from isegprobe.state_dicts import unpickler_complaint
from isegprobe.training.seed_configurations import (
    DINO_HUB_VITS,
    GENERIC_PRESET,
    RESEARCH_PRESETS,
    SEED_FUSIONS,
    SEED_UPSAMPLERS,
)

# Our click channel k is iSegProbe's channel SEED_CHANNEL_OF[k] (iSegProbe: prev_mask, positive, negative).
SEED_CHANNEL_OF = (1, 2, 0)


@dataclass
class SeedProbe:
    """What an iSegProbe checkpoint says about its probe, in isegprobe's terms."""

    backbone: str  # the research code's backbone type: dinov2, vit or mask_clip
    featurizer: str  # the isegprobe featurizer that computes that backbone's features
    size: int  # the working size it was trained at (the research code's crop size)
    preset: str  # the isegprobe preset of its research configuration (GENERIC_PRESET for another combination)
    preset_overrides: list[str]  # `--set` overrides that make the preset that research configuration
    overrides: list[str]  # `--set` overrides, after those, that make it this probe's config
    state_dict: dict[str, Tensor]  # ISProbe names; the upsampler's weights are not in it


def read_seed_checkpoint(path: str | Path) -> dict[str, Any]:
    """The iSegProbe checkpoint's dictionary, loaded without importing or running anything it names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such iSegProbe checkpoint file")
    try:
        checkpoint = load_inertly(path)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a readable iSegProbe checkpoint ({unpickler_complaint(error)})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path}: an iSegProbe checkpoint holds 'state_dict' and 'config'; this file does not")
    return checkpoint


def seed_probe(checkpoint: dict[str, Any], source: str) -> SeedProbe:
    """Translate an iSegProbe checkpoint (from `read_seed_checkpoint`) into isegprobe's config and weights.

    `source` names the file in error messages. Anything the probe cannot reproduce is refused, never
    approximated: another head, distance maps instead of disks, no previous-mask channel, an unknown upsampler or
    backbone.
    """
    params = {name: entry.get("value") for name, entry in dict(checkpoint["config"].get("params", {})).items()}
    backbone_cfg, head_cfg = _section(params, "backbone_cfg", source), _section(params, "head_cfg", source)
    encoder_cfg = _section(params, "embed_coords_cfg", source)
    upsampler_cfg = params.get("upsampler_cfg") or {"type": "bilinear"}
    backbone_params = dict(backbone_cfg.get("params") or {})
    upsampler_params = dict(upsampler_cfg.get("params") or {})

    problems = []
    if params.get("architecture", "backbone_upsampler_head") != "backbone_upsampler_head":
        problems.append(f"architecture {params.get('architecture')!r} (only backbone_upsampler_head maps)")
    if params.get("use_disks") is not True or params.get("with_prev_mask") is not True:
        problems.append("click maps other than disks with a previous-mask channel")
    head_params = dict(head_cfg.get("params") or {})
    if head_cfg.get("type") != "convhead" or head_params.get("num_layers") != 2:
        problems.append(f"head {head_cfg.get('type')!r} with {head_params.get('num_layers')} layers (only convhead x2)")
    fusion = SEED_FUSIONS.get(backbone_params.get("feats_injection_mode"))
    if fusion is None:
        problems.append(f"feats_injection_mode {backbone_params.get('feats_injection_mode')!r}")
    upsampler = SEED_UPSAMPLERS.get(upsampler_cfg.get("type"))
    if upsampler is None:
        problems.append(f"upsampler {upsampler_cfg.get('type')!r}")
    if upsampler == "loftup" and upsampler_params.get("lr_pe_type", "sine") != "sine":
        problems.append(f"LoftUp with lr_pe_type {upsampler_params.get('lr_pe_type')!r} (only its sine encoding)")
    encoder = {"patchEmbed": "patch_embed", "simple_vit": "simple_vit"}.get(encoder_cfg.get("type"))
    if encoder is None:
        problems.append(f"click encoder {encoder_cfg.get('type')!r}")
    featurizer = _featurizer_name(str(backbone_cfg.get("type")), backbone_params, problems)
    if featurizer.endswith(":keys") and upsampler not in (None, "identity", "nearest", "bilinear", "bicubic"):
        problems.append(f"a learned upsampler ({upsampler}) on attention keys, whose channel order differs here")
    if problems:
        raise UserError(f"{source}: isegprobe cannot rebuild this probe: " + "; ".join(problems))

    overrides = [
        f"model.fusion={fusion}",
        f"model.upsampler.name={upsampler}",
        f"model.click_encoder.name={encoder}",
        f"model.click_radius={int(params.get('norm_radius', 5))}",
        "model.head.width=null",
        "model.align_corners=true",
    ]
    if encoder == "simple_vit":
        encoder_params = dict(encoder_cfg.get("params") or {})
        overrides += [f"model.click_encoder.{key}={int(encoder_params[key])}" for key in ("depth", "heads", "mlp_dim")]
        overrides.append(f"model.click_encoder.dim_head={int(encoder_params.get('dim_head', 64))}")
    backbone = str(backbone_cfg.get("type"))
    preset, preset_overrides = RESEARCH_PRESETS.get((backbone, encoder, upsampler, fusion), (GENERIC_PRESET, ()))
    return SeedProbe(
        backbone=backbone,
        featurizer=featurizer,
        size=_crop_size(encoder_cfg, source),
        preset=preset,
        preset_overrides=list(preset_overrides),
        overrides=overrides,
        state_dict=_probe_weights(dict(checkpoint["state_dict"]), encoder, source),
    )


def _featurizer_name(kind: str, backbone_params: dict[str, Any], problems: list[str]) -> str:
    """The featurizer that computes what the research code's backbone of type `kind` gave the probe.

    `vit` is timm's model of the given name with its weights (DINO's hub ViT-S for `dino_*` names), giving the last
    block's attention keys unless `feat_type` says "token": DINOFeaturizer's default is "key".
    """
    if kind == "dinov2":
        arch = backbone_params.get("arch", "dinov2_vits14")
        if arch != "dinov2_vits14":
            problems.append(f"DINOv2 arch {arch!r} (the research code builds only dinov2_vits14)")
        return "dinov2_vits14"
    if kind == "vit":
        arch = str(backbone_params.get("arch"))
        feat_type = backbone_params.get("feat_type", "key")
        if feat_type not in ("key", "token"):
            problems.append(f"ViT feat_type {feat_type!r}")
        if "dino" in arch and arch not in DINO_HUB_VITS:
            problems.append(f"ViT arch {arch!r} (DINO hub ViT-S names: {', '.join(DINO_HUB_VITS)})")
        name = DINO_HUB_VITS.get(arch, arch)
        return f"{name}:keys" if feat_type == "key" else name
    if kind == "mask_clip":
        if backbone_params.get("model_name", "ViT-B/16") != "ViT-B/16":
            problems.append(f"MaskCLIP model {backbone_params.get('model_name')!r} (only ViT-B/16)")
        return "maskclip"
    problems.append(f"backbone type {kind!r} (known: dinov2, vit, mask_clip)")
    return ""


def _crop_size(encoder_cfg: dict[str, Any], source: str) -> int:
    """The training crop size, which the research code gives its click encoder as img_size (often the OmegaConf
    list of its training config)."""
    size = plain_value(dict(encoder_cfg.get("params") or {}).get("img_size", (224, 224)))
    try:
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError, KeyError):
        raise UserError(f"{source}: its click encoder's img_size {size!r} is not a crop size") from None
    if height != width:
        raise UserError(f"{source}: trained on {height}x{width} crops; isegprobe's working size is square")
    return int(height)


def plain_value(value: Any) -> Any:
    """`value` with the stand-ins of OmegaConf nodes replaced by what they hold: a ListConfig or DictConfig keeps its
    items in `_content`, a value node its value in `_val`."""
    if isinstance(value, Placeholder) and isinstance(getattr(value, "state", None), dict):
        state = value.state
        if "_content" in state:
            return plain_value(state["_content"])
        if "_val" in state:
            return plain_value(state["_val"])
    if isinstance(value, list | tuple):
        return [plain_value(item) for item in value]
    if isinstance(value, dict):
        return {key: plain_value(item) for key, item in value.items()}
    return value


def _section(params: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = params.get(name)
    if not isinstance(section, dict):
        raise UserError(f"{source}: the checkpoint's config has no {name}")
    return dict(section)


def _probe_weights(seed_weights: dict[str, Tensor], encoder: str, source: str) -> dict[str, Tensor]:
    """iSegProbe's `embed_coords.*` and `head.*` under ISProbe's names, click channels in isegprobe's order."""
    weights: dict[str, Tensor] = {}
    unexpected = []
    for key, value in seed_weights.items():
        if key.startswith("embed_coords."):
            weights["click_encoder." + key.removeprefix("embed_coords.")] = value
        elif key.startswith("head.convs."):
            index, rest = key.removeprefix("head.convs.").split(".", 1)
            weights[f"head.body.{2 * int(index)}.{rest.removeprefix('conv.')}"] = value
        elif key.startswith("head.classifier."):
            weights["head.logit." + key.removeprefix("head.classifier.")] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise UserError(
            f"{source}: weights outside the click encoder and head ({', '.join(unexpected[:4])}, ...): a trained "
            "upsampler or backbone is not imported; give a frozen upsampler's own checkpoint instead"
        )
    if encoder == "patch_embed":
        _reorder_click_channels(weights, "click_encoder.proj.weight", dim=1, source=source)
    else:
        for name in ("to_patch_embedding.1.weight", "to_patch_embedding.1.bias"):
            _reorder_click_channels(weights, f"click_encoder.{name}", dim=0, source=source)
        _reorder_click_channels(weights, "click_encoder.to_patch_embedding.2.weight", dim=1, source=source)
    return weights


def _reorder_click_channels(weights: dict[str, Tensor], key: str, dim: int, source: str) -> None:
    """Put iSegProbe's click channels in isegprobe's order along `dim`: a conv's 3 input channels, or a flattened
    (p1 p2 c) patch, in which the channel is the innermost index of every run of 3."""
    if key not in weights:
        raise UserError(f"{source}: the checkpoint has no {key.replace('click_encoder.', 'embed_coords.')}")
    tensor = weights[key]
    order = torch.arange(tensor.shape[dim]).reshape(-1, 3)[:, list(SEED_CHANNEL_OF)].reshape(-1)
    weights[key] = tensor.index_select(dim, order)


def seed_keys_to_isegprobe(weights: dict[str, Tensor], num_heads: int, head_dim: int, fusion: str) -> None:
    """Put the head's input channels (and, with late fusion, the click tokens) in isegprobe's order of attention keys.

    The research code (like FeatUp) lays the keys of head h, channel d out as channel d * num_heads + h; isegprobe's
    keys featurizer as h * head_dim + d. The function stays the same when the weights that read the features move
    with them.
    """
    ours = torch.arange(num_heads * head_dim)
    seed_channel_of_ours = (ours % head_dim) * num_heads + ours // head_dim
    weights["head.body.0.weight"] = weights["head.body.0.weight"].index_select(1, seed_channel_of_ours)
    if fusion == "after_backbone":
        for name in ("click_encoder.proj.weight", "click_encoder.proj.bias"):
            weights[name] = weights[name].index_select(0, seed_channel_of_ours)
