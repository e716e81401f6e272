"""What every timm-built featurizer shares: the architecture with its pretrained tag, the input statistics, and the
provenance written into each store, recorded the same way by each family."""

from __future__ import annotations

from typing import Any, ClassVar

import timm
from torch import nn

from isegprobe.featurizers.attention import use_memory_efficient_attention
from isegprobe.featurizers.base import Featurizer
from isegprobe.featurizers.normalization import input_statistics
from isegprobe.featurizers.weights import WeightsSource


class TimmFeaturizer(Featurizer):
    """A frozen timm model behind the featurizer contract. A family passes what it measured of the model (grid
    stride, output and token widths) and any keys that tell its features apart (`family_keys`, after `output`)."""

    output: ClassVar[str]
    # How position embeddings reach a grid other than the model's own (provenance: features differ between rules).
    position_resampling: ClassVar[str] = "timm"

    def __init__(
        self,
        name: str,
        model: nn.Module,
        weights: WeightsSource,
        normalization: str,
        *,
        patch_size: int,
        dim: int,
        embed_dim: int,
        family_keys: dict[str, Any] | None = None,
    ) -> None:
        cfg = model.pretrained_cfg
        architecture = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]
        own = (tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))
        mean, std = input_statistics(normalization, own)
        super().__init__(
            name=name,
            patch_size=patch_size,
            dim=dim,
            embed_dim=embed_dim,
            mean=mean,
            std=std,
            provenance={
                "name": name,
                "architecture": architecture,
                "output": self.output,
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
                "position_resampling": self.position_resampling,
                **({"rope_periods": weights.rope_periods} if weights.rope_periods else {}),
                "timm_version": timm.__version__,
            },
        )
        self.model = model
        use_memory_efficient_attention(model)
        self.freeze()
