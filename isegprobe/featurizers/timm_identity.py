"""What identifies the features of a timm-built featurizer, recorded the same way by every timm family: the
architecture with its pretrained tag, the input statistics, and the provenance dict written into each store."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from isegprobe.featurizers.normalization import input_statistics
from isegprobe.featurizers.weights import WeightsSource

Statistics = tuple[float, float, float]


def architecture_name(model: nn.Module) -> str:
    """`architecture.tag` from timm's pretrained_cfg (the tag names the weights' recipe, e.g. `.dino`)."""
    cfg = model.pretrained_cfg
    return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]


def model_input_statistics(model: nn.Module, normalization: str) -> tuple[Statistics, Statistics]:
    """(mean, std) the images are normalized with: the model's own, or ImageNet's, as `normalization` says."""
    cfg = model.pretrained_cfg
    own = (tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))
    return input_statistics(normalization, own)


def timm_provenance(
    name: str,
    architecture: str,
    output: str,
    weights: WeightsSource,
    *,
    patch_size: int,
    dim: int,
    embed_dim: int,
    mean: Statistics,
    std: Statistics,
    normalization: str,
    position_resampling: str,
    family_keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance of a timm featurizer; `family_keys` (a block index, say) follow `output`."""
    return {
        "name": name,
        "architecture": architecture,
        "output": output,
        **(family_keys or {}),
        "weights": weights.location,
        "weights_sha256": weights.sha256,
        "random_seed": weights.random_seed,
        "patch_size": patch_size,
        "dim": dim,
        "embed_dim": embed_dim,
        "mean": list(mean),
        "std": list(std),
        "normalization": normalization,
        "position_resampling": position_resampling,
        "timm_version": timm.__version__,
    }
