"""Probes trained by the iSegProbe research code ("the seed"), read from its `.pth` checkpoints.

The seed saves `{"state_dict": ..., "config": model._config}` with `torch.save`: the trained click encoder
(`embed_coords.*`) and head (`head.*`), and a config whose values include objects of the seed's own classes
(EasyDict, OmegaConf nodes, its ModelBuilder). Those classes are never imported or run here: the file is read
with torch's weights-only unpickler, every class it names standing in as an inert placeholder (EasyDict, a dict,
as an OrderedDict), so a checkpoint cannot execute code.

The weights map onto `ISProbe` name for name, with one reordering: the seed stacks its click maps as
[previous mask, positive, negative], isegprobe as [positive, negative, previous mask].
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isegprobe.errors import UserError
from isegprobe.state_dicts import unpickler_complaint

# Our click channel k is the seed's channel SEED_CHANNEL_OF[k] (seed: prev_mask, positive, negative).
SEED_CHANNEL_OF = (1, 2, 0)

# The seed's upsampler registry names -> ours.
SEED_UPSAMPLERS = {
    "identity": "identity",
    "nearest": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "jbu_featup": "featup_jbu",
    "lift": "lift",
    "loftup": "loftup",
}

SEED_FUSIONS = {"before_backbone": "before_backbone", "after_backbone": "after_backbone"}


class _Placeholder:
    """Stands in for any class or function the seed's pickle names: it accepts whatever it is built with."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _empty_dict(*args: Any) -> dict:
    return {}


# Stand-ins that must behave like containers, because the pickle fills them item by item.
_CONTAINER_STAND_INS = {
    "easydict.EasyDict": collections.OrderedDict,
    "collections.defaultdict": _empty_dict,
    "builtins.dict": dict,
    "builtins.list": list,
}


@dataclass
class SeedProbe:
    """What a seed checkpoint says about its probe, in isegprobe's terms."""

    backbone: str  # the seed's backbone type: dinov2, vit or mask_clip
    backbone_output: str  # the featurizer output the probe was trained on: tokens, keys or maskclip
    overrides: list[str]  # `--set` overrides that turn the seed's SBD recipe (sbd_224) into this probe's config
    state_dict: dict[str, Tensor]  # ISProbe names; the upsampler's weights are not in it


def read_seed_checkpoint(path: str | Path) -> dict[str, Any]:
    """The seed checkpoint's dictionary, loaded without importing or running anything it names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such seed checkpoint file")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        stand_ins = [(_CONTAINER_STAND_INS.get(name, _Placeholder), name) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a readable iSegProbe checkpoint ({unpickler_complaint(error)})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path}: a seed checkpoint holds 'state_dict' and 'config'; this file does not")
    return checkpoint


def seed_probe(checkpoint: dict[str, Any], source: str) -> SeedProbe:
    """Translate a seed checkpoint (from `read_seed_checkpoint`) into isegprobe's config and weights.

    `source` names the file in error messages. Anything the probe cannot reproduce is refused, never
    approximated: another head, distance maps instead of disks, no previous-mask channel, an unknown upsampler.
    """
    params = {name: entry.get("value") for name, entry in dict(checkpoint["config"].get("params", {})).items()}
    backbone_cfg, head_cfg = _section(params, "backbone_cfg", source), _section(params, "head_cfg", source)
    encoder_cfg = _section(params, "embed_coords_cfg", source)
    upsampler_cfg = params.get("upsampler_cfg") or {"type": "bilinear"}
    backbone_params = dict(backbone_cfg.get("params") or {})

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
    encoder = {"patchEmbed": "patch_embed", "simple_vit": "simple_vit"}.get(encoder_cfg.get("type"))
    if encoder is None:
        problems.append(f"click encoder {encoder_cfg.get('type')!r}")
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
    return SeedProbe(
        backbone=str(backbone_cfg.get("type")),
        backbone_output=_backbone_output(backbone_cfg, source),
        overrides=overrides,
        state_dict=_probe_weights(dict(checkpoint["state_dict"]), encoder, source),
    )


def _section(params: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = params.get(name)
    if not isinstance(section, dict):
        raise UserError(f"{source}: the checkpoint's config has no {name}")
    return dict(section)


def _backbone_output(backbone_cfg: dict[str, Any], source: str) -> str:
    """Which featurizer output the seed's backbone gave: DINOv2 and ViT tokens, ViT keys, or MaskCLIP."""
    kind = backbone_cfg.get("type")
    if kind == "dinov2":
        return "tokens"
    if kind == "vit":
        return "keys" if dict(backbone_cfg.get("params") or {}).get("feat_type") == "key" else "tokens"
    if kind == "mask_clip":
        return "maskclip"
    raise UserError(f"{source}: unknown backbone type {kind!r} (known: dinov2, vit, mask_clip)")


def _probe_weights(seed_weights: dict[str, Tensor], encoder: str, source: str) -> dict[str, Tensor]:
    """The seed's `embed_coords.*` and `head.*` under ISProbe's names, click channels in isegprobe's order."""
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
    """Put the seed's click channels in isegprobe's order along `dim`: a conv's 3 input channels, or a flattened
    (p1 p2 c) patch, in which the channel is the innermost index of every run of 3."""
    if key not in weights:
        raise UserError(f"{source}: the checkpoint has no {key.replace('click_encoder.', 'embed_coords.')}")
    tensor = weights[key]
    order = torch.arange(tensor.shape[dim]).reshape(-1, 3)[:, list(SEED_CHANNEL_OF)].reshape(-1)
    weights[key] = tensor.index_select(dim, order)
