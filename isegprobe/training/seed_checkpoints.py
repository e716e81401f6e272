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
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isegprobe import featurizers
from isegprobe.config import ClickEncoderConfig, DataConfig, ModelConfig
from isegprobe.errors import UserError
from isegprobe.featurizers.key_channels import research_key_channels
from isegprobe.featurizers.normalization import IMAGENET_MEAN, IMAGENET_STD
from isegprobe.inert_pickles import is_legacy_torch_save, load_inertly
from isegprobe.model.click_encoders import CLICK_ENCODERS
from isegprobe.model.clicks import RESEARCH_CHANNEL_OF, in_click_channel_order
from isegprobe.state_dicts import what_is_wrong
from isegprobe.training.seed_configurations import (
    DINO_HUB_VITS,
    GENERIC_PRESET,
    RESEARCH_PRESETS,
    SEED_FUSIONS,
    SEED_UPSAMPLERS,
)
from isegprobe.training.seed_values import (
    allowed_range,
    as_mapping,
    config_params,
    config_section,
    is_whole_number,
    name_in,
    plain_value,
    shown_value,
    whole_number,
    within_range,
)

# How a key of the research code's ConvSegHead names its layer: head.convs.<layer>.[conv.]<parameter>.
_HEAD_CONV_KEY = re.compile(r"head\.convs\.(\d+)\.(.+)")

# The research code's model class, the last part of the class name its checkpoints' config records.
SEED_MODEL_CLASS = "iSegProbeModel"

# What reading a structure of the wrong shape raises: a list where a dict belongs, a tensor where a number does,
# a list that holds itself (RecursionError)...
_STRUCTURE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, IndexError, RuntimeError)


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
    seed_names: dict[str, str]  # the checkpoint's name of each key of state_dict

    def name_in_checkpoint(self, key: str) -> str:
        """The checkpoint's name of an ISProbe key, for messages: the key it came from, or the key iSegProbe gives
        a weight the checkpoint lacks."""
        return self.seed_names.get(key) or seed_key(key)


def read_seed_checkpoint(path: str | Path) -> dict[str, Any]:
    """The iSegProbe checkpoint's dictionary, loaded without importing or running anything it names."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: not a regular file (a folder, a device or a pipe); give the checkpoint file's path")
    if not path.is_file():
        raise UserError(f"{path}: no such iSegProbe checkpoint file")
    try:
        checkpoint = load_inertly(path)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as error:
        if is_legacy_torch_save(path):
            raise UserError(
                f"{path}: written in torch.save's old format (before torch 1.6), which isegprobe cannot read without "
                "running what it names: load it with the research code and save it again with a current torch"
            ) from error
        raise UserError(f"{path}: not a readable iSegProbe checkpoint ({what_is_wrong(path, error)})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise UserError(
            f"{path}: an iSegProbe checkpoint holds 'state_dict' and 'config'; this file holds {_held(checkpoint)}"
        )
    return checkpoint


def _held(content: Any) -> str:
    """What a file that is no iSegProbe checkpoint holds instead, in a few words: a bare state dict (the weights
    without the config that says which probe they are) is told apart from a dict of other entries."""
    if not isinstance(content, dict):
        return f"a {type(content).__name__}"
    if content and all(isinstance(value, Tensor) for value in content.values()):
        return (
            f"a bare state dict of {len(content)} tensors ({shown_value(next(iter(content)))}, ...), without its config"
        )
    return f"a dict of {shown_value(list(content)[:6])}"


def seed_probe(checkpoint: dict[str, Any], source: str) -> SeedProbe:
    """Translate an iSegProbe checkpoint (from `read_seed_checkpoint`) into isegprobe's config and weights.

    `source` names the file in error messages. Anything the probe cannot reproduce is refused, never
    approximated: another head, distance maps instead of disks, no previous-mask channel, an unknown upsampler or
    backbone.
    """
    with _reading_structure(source):
        return _translate(checkpoint, source)


@contextmanager
def _reading_structure(source: str) -> Iterator[None]:
    """One line naming the file, instead of a traceback, for a checkpoint shaped in a way the checks did not foresee."""
    try:
        yield
    except _STRUCTURE_ERRORS as error:
        what = " ".join(f"{type(error).__name__}: {error}".split())
        raise UserError(f"{source}: not an iSegProbe checkpoint as the research code writes it ({what})") from None


def _translate(checkpoint: dict[str, Any], source: str) -> SeedProbe:
    _refuse_another_model_class(checkpoint["config"], source)
    params = config_params(checkpoint["config"], source)
    backbone_cfg, head_cfg = config_section(params, "backbone_cfg", source), config_section(params, "head_cfg", source)
    encoder_cfg = config_section(params, "embed_coords_cfg", source)
    upsampler_cfg = as_mapping(params.get("upsampler_cfg"), "upsampler_cfg", source) or {"type": "bilinear"}
    backbone_params = as_mapping(backbone_cfg.get("params"), "backbone_cfg.params", source)
    upsampler_params = as_mapping(upsampler_cfg.get("params"), "upsampler_cfg.params", source)
    encoder_params = as_mapping(encoder_cfg.get("params"), "embed_coords_cfg.params", source)

    problems = []
    if params.get("architecture", "backbone_upsampler_head") != "backbone_upsampler_head":
        problems.append(f"architecture {shown_value(params.get('architecture'))} (only backbone_upsampler_head maps)")
    if params.get("use_disks") is not True or params.get("with_prev_mask") is not True:
        problems.append("click maps other than disks with a previous-mask channel")
    if params.get("use_rgb_conv"):
        problems.append("RITM's convolutional transform of the click maps (use_rgb_conv)")
    normalization = plain_value(params.get("norm_mean_std"))
    if normalization is not None and not _is_imagenet_normalization(normalization):
        problems.append(f"images normalized with norm_mean_std {shown_value(normalization)} (only ImageNet's)")
    head_params = as_mapping(head_cfg.get("params"), "head_cfg.params", source)
    head_type, head_layers = head_cfg.get("type"), head_params.get("num_layers")
    if head_type != "convhead" or head_layers != 2:
        problems.append(f"head {shown_value(head_type)} with {shown_value(head_layers)} layers (only convhead x2)")
    injection = name_in(backbone_params, "feats_injection_mode", "backbone_cfg.params", source)
    fusion = SEED_FUSIONS.get(injection)
    if fusion is None:
        problems.append(f"feats_injection_mode {injection!r}")
    upsampler_type = name_in(upsampler_cfg, "type", "upsampler_cfg", source)
    upsampler = SEED_UPSAMPLERS.get(upsampler_type)
    if upsampler is None:
        problems.append(f"upsampler {upsampler_type!r}")
    if upsampler == "loftup" and upsampler_params.get("lr_pe_type", "sine") != "sine":
        problems.append(
            f"LoftUp with lr_pe_type {shown_value(upsampler_params.get('lr_pe_type'))} (only its sine encoding)"
        )
    encoder_type = name_in(encoder_cfg, "type", "embed_coords_cfg", source)
    encoder = {"patchEmbed": "patch_embed", "simple_vit": "simple_vit"}.get(encoder_type)
    if encoder is None:
        problems.append(f"click encoder {encoder_type!r}")
    backbone = str(name_in(backbone_cfg, "type", "backbone_cfg", source))
    featurizer = _featurizer_name(backbone, backbone_params, problems, source)
    if featurizer.endswith(":keys") and upsampler not in (None, "identity", "nearest", "bilinear", "bicubic"):
        problems.append(f"a learned upsampler ({upsampler}) on attention keys, whose channel order differs here")
    if problems:
        raise UserError(f"{source}: isegprobe cannot rebuild this probe: " + "; ".join(problems))

    radius = whole_number(params.get("norm_radius", 5), "norm_radius", ModelConfig, "click_radius", source)
    overrides = [
        f"model.fusion={fusion}",
        f"model.upsampler.name={upsampler}",
        f"model.click_encoder.name={encoder}",
        f"model.click_radius={radius}",
        "model.head.width=null",
        "model.align_corners=true",
    ]
    if encoder == "simple_vit":
        encoder_params.setdefault("dim_head", 64)  # the research code's SimpleViT default
        for key in ("depth", "heads", "mlp_dim", "dim_head"):
            value = whole_number(
                encoder_params.get(key), f"simple_vit click encoder's {key}", ClickEncoderConfig, key, source
            )
            overrides.append(f"model.click_encoder.{key}={value}")
    state_dict, seed_names = _probe_weights(_seed_weights(checkpoint["state_dict"], source), encoder, source)
    preset, preset_overrides = RESEARCH_PRESETS.get((backbone, encoder, upsampler, fusion), (GENERIC_PRESET, ()))
    return SeedProbe(
        backbone=backbone,
        featurizer=featurizer,
        size=_crop_size(encoder_params, source),
        preset=preset,
        preset_overrides=list(preset_overrides),
        overrides=overrides,
        state_dict=state_dict,
        seed_names=seed_names,
    )


def _refuse_another_model_class(config: Any, source: str) -> None:
    """RITM and its family save their checkpoints as iSegProbe does, with the class of their model in the config: one
    of another class (RITM's HRNetModel) is named as such, rather than as an iSegProbe config missing its sections."""
    model_class = config.get("class") if isinstance(config, dict) else None
    if isinstance(model_class, str) and model_class.rsplit(".", 1)[-1] != SEED_MODEL_CLASS:
        raise UserError(
            f"{source}: its config's class is {shown_value(model_class)}, not the research code's {SEED_MODEL_CLASS}: "
            "only probes trained by the iSegProbe research code are imported"
        )


def _is_imagenet_normalization(normalization: Any) -> bool:
    """Whether the research model's norm_mean_std is its default, ImageNet's (the only statistics the imported
    featurizer is given)."""
    try:
        values = [[float(value) for value in row] for row in normalization]
    except (TypeError, ValueError):
        return False
    return len(values) == 2 and all(
        len(row) == 3 and all(abs(value - wanted) < 1e-6 for value, wanted in zip(row, wanted_row, strict=True))
        for row, wanted_row in zip(values, (IMAGENET_MEAN, IMAGENET_STD), strict=True)
    )


def _featurizer_name(kind: str, backbone_params: dict[str, Any], problems: list[str], source: str) -> str:
    """The featurizer that computes what the research code's backbone of type `kind` gave the probe.

    `vit` is timm's model of the given name with its weights (DINO's hub ViT-S for `dino_*` names), giving the last
    block's attention keys unless `feat_type` says "token": DINOFeaturizer's default is "key".
    """
    if kind == "dinov2":
        arch = backbone_params.get("arch", "dinov2_vits14")
        if arch != "dinov2_vits14":
            problems.append(f"DINOv2 arch {shown_value(arch)} (the research code builds only dinov2_vits14)")
        return "dinov2_vits14"
    if kind == "vit":
        arch = str(name_in(backbone_params, "arch", "backbone_cfg.params", source))
        feat_type = backbone_params.get("feat_type", "key")
        if feat_type not in ("key", "token"):
            problems.append(f"ViT feat_type {shown_value(feat_type)}")
        if "dino" in arch and arch not in DINO_HUB_VITS:
            problems.append(f"ViT arch {arch!r} (DINO hub ViT-S names: {', '.join(DINO_HUB_VITS)})")
        name = DINO_HUB_VITS.get(arch, arch)
        featurizer = f"{name}:keys" if feat_type == "key" else name
        try:
            featurizers.parse_featurizer_name(featurizer)  # imports timm only when a checkpoint is read
        except UserError:
            problems.append(
                f"ViT arch {shown_value(arch)} (the research code builds it by timm, which has no ViT so named)"
            )
        return featurizer
    if kind == "mask_clip":
        if backbone_params.get("model_name", "ViT-B/16") != "ViT-B/16":
            problems.append(f"MaskCLIP model {shown_value(backbone_params.get('model_name'))} (only ViT-B/16)")
        return "maskclip"
    problems.append(f"backbone type {kind!r} (known: dinov2, vit, mask_clip)")
    return ""


def _crop_size(encoder_params: dict[str, Any], source: str) -> int:
    """The training crop size, which the research code gives its click encoder as img_size (often the OmegaConf
    list of its training config)."""
    size = plain_value(encoder_params.get("img_size", (224, 224)))
    sides = size if isinstance(size, list) else [size, size]
    if len(sides) != 2 or not all(is_whole_number(side) for side in sides):
        raise UserError(
            f"{source}: its click encoder's img_size {shown_value(size)} is not a crop size (an int or two)"
        )
    height, width = (int(side) for side in sides)
    if height != width:
        raise UserError(f"{source}: trained on {height}x{width} crops; isegprobe's working size is square")
    return within_range(height, "click encoder's img_size", allowed_range(DataConfig, "size"), source)


def _seed_weights(state_dict: Any, source: str) -> dict[str, Tensor]:
    """The checkpoint's state dict, refused unless it maps names to tensors; DataParallel's `module.` prefix, on
    every key of a model saved while wrapped, is taken off."""
    weights = as_mapping(state_dict, "state_dict", source)
    for key, value in weights.items():
        if not isinstance(key, str):
            raise UserError(f"{source}: its state_dict key {shown_value(key)} is not a name (a string)")
        if not isinstance(value, Tensor):
            raise UserError(
                f"{source}: its state_dict entry {shown_value(key)} is {shown_value(value)}, expected a tensor"
            )
    if weights and all(key.startswith("module.") for key in weights):
        weights = {key.removeprefix("module."): value for key, value in weights.items()}
    return weights


def _probe_weights(
    seed_weights: dict[str, Tensor], encoder: str, source: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """iSegProbe's `embed_coords.*` and `head.*` under ISProbe's names, click channels in isegprobe's order, and the
    checkpoint's name of each."""
    weights: dict[str, Tensor] = {}
    seed_names: dict[str, str] = {}
    unexpected = []
    for key, value in seed_weights.items():
        if key.startswith("embed_coords."):
            name = "click_encoder." + key.removeprefix("embed_coords.")
        elif key.startswith("head.convs."):
            conv = _HEAD_CONV_KEY.fullmatch(key)
            if conv is None:
                raise UserError(
                    f"{source}: its state_dict key {shown_value(key)} is not head.convs.<layer>.conv.<parameter>"
                )
            name = f"head.body.{2 * int(conv[1])}.{conv[2].removeprefix('conv.')}"
        elif key.startswith("head.classifier."):
            name = "head.logit." + key.removeprefix("head.classifier.")
        else:
            unexpected.append(key)
            continue
        weights[name], seed_names[name] = value, key
    if unexpected:
        raise UserError(
            f"{source}: weights outside the click encoder and head ({', '.join(unexpected[:4])}, ...): a trained "
            "upsampler or backbone is not imported; give a frozen upsampler's own checkpoint instead"
        )
    for name, dim in CLICK_ENCODERS.get(encoder).click_channel_parameters.items():
        _reorder_click_channels(weights, f"click_encoder.{name}", dim=dim, source=source)
    return weights, seed_names


def seed_key(key: str) -> str:
    """iSegProbe's name of an ISProbe key of the click encoder or head (the inverse of `_probe_weights`' renaming)."""
    layer = re.fullmatch(r"head\.body\.(\d+)\.(.+)", key)
    if layer is not None and int(layer[1]) % 2 == 0:
        return f"head.convs.{int(layer[1]) // 2}.conv.{layer[2]}"
    for ours, theirs in (("click_encoder.", "embed_coords."), ("head.logit.", "head.classifier.")):
        if key.startswith(ours):
            return theirs + key.removeprefix(ours)
    return key


def _reorder_click_channels(weights: dict[str, Tensor], key: str, dim: int, source: str) -> None:
    """Put iSegProbe's click channels in isegprobe's order along `dim`: a conv's 3 input channels, or a flattened
    (p1 p2 c) patch, in which the channel is the innermost index of every run of 3."""
    seed_key = key.replace("click_encoder.", "embed_coords.")
    if key not in weights:
        raise UserError(f"{source}: the checkpoint has no {seed_key}")
    tensor = weights[key]
    if tensor.dim() <= dim or tensor.shape[dim] % 3:
        raise UserError(
            f"{source}: its {seed_key} has shape {tuple(tensor.shape)}, expected 3 click channels (or runs of 3) "
            f"along dimension {dim}"
        )
    weights[key] = in_click_channel_order(tensor, dim, RESEARCH_CHANNEL_OF)


def seed_keys_to_isegprobe(weights: dict[str, Tensor], num_heads: int, head_dim: int, fusion: str) -> None:
    """Put the head's input channels (and, with late fusion, the click tokens) in isegprobe's order of attention keys.

    The research code (like FeatUp) lays the keys of head h, channel d out as channel d * num_heads + h; isegprobe's
    keys featurizer as h * head_dim + d. The function stays the same when the weights that read the features move
    with them.
    """
    seed_channel_of_ours = torch.argsort(research_key_channels(num_heads, head_dim))
    _reorder_key_channels(weights, "head.body.0.weight", 1, seed_channel_of_ours)
    if fusion == "after_backbone":
        for name in ("click_encoder.proj.weight", "click_encoder.proj.bias"):
            _reorder_key_channels(weights, name, 0, seed_channel_of_ours)


def _reorder_key_channels(weights: dict[str, Tensor], name: str, dim: int, order: Tensor) -> None:
    """`weights[name]` in `order` along `dim`; a weight that is missing or has other channels is left as it is, for
    the check of the weights against the probe to report."""
    tensor = weights.get(name)
    if tensor is not None and tensor.dim() > dim and tensor.shape[dim] == len(order):
        weights[name] = tensor.index_select(dim, order)
