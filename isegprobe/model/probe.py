"""The interactive-segmentation probe: frozen features + clicks + previous mask -> object logits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from isegprobe.config import ModelConfig
from isegprobe.errors import UserError
from isegprobe.model.click_encoders import create_click_encoder, patch_grid_encoders
from isegprobe.model.clicks import as_click_tensor, click_inputs
from isegprobe.model.heads import SegmentationHead
from isegprobe.upsamplers import create_upsampler
from isegprobe.upsamplers.layers import resize_to
from isegprobe.upsamplers.learned import LearnedUpsampler

FUSIONS = ("after_backbone", "after_upsampler", "before_backbone")

log = logging.getLogger(__name__)


def needs_featurizer_online(config: ModelConfig) -> bool:
    """True for early fusion (`before_backbone`): click tokens are added to the patch embeddings, so the features
    change with every click and no store can hold them; the frozen featurizer must run inside the probe."""
    return config.fusion == "before_backbone"


def runs_featurizer_online(config: ModelConfig, asked: bool) -> bool:
    """Whether training or evaluation runs the featurizer in the loop: when `asked` (--online), and always for a
    probe that needs it, which is said, since that probe reads a store's images but not its features."""
    if needs_featurizer_online(config) and not asked:
        log.warning(
            "fusion before_backbone: the frozen featurizer runs in the loop (online); cached features are unused"
        )
    return asked or needs_featurizer_online(config)


class ISProbe(nn.Module):
    """Click encoder, fusion, upsampler and head around a frozen featurizer's output.

    Fusion points:
    - `after_backbone`: click tokens are added to the low-resolution features, so cached features suffice.
    - `after_upsampler`: clicks, encoded at the upsampled grid, are added to the upsampled features.
    - `before_backbone`: click tokens are added to the featurizer's patch embeddings (SimpleClick's early fusion);
      the featurizer must be attached and runs on every call. It is held outside the module tree, so its frozen
      weights never enter the probe's state dict or checkpoint.

    With a light head (`head.width`) and a channel-wise linear upsampler (bilinear, identity), the head's 1x1
    reduction runs before upsampling: the same function, without upsampling all C channels to full resolution.
    On CUDA the forward pass runs channels-last, under bf16 autocast when `mixed_precision` (`model.mixed_precision`
    in training; evaluation sets it by its protocol); the logits are always float32. `research_precision`
    (`model.research_precision` in training; evaluation: the research protocol or the probe's config) computes, where
    the research code rounds otherwise, as it does: the click input stacked in its channel order, the attention of a
    SimpleViT click encoder and of LoftUp, the head's reading of features that the research code lays out in another
    channel order (`read_features_as`; not for a head that reduces before upsampling, which that code has none of),
    LoftUp's forward as its authors', and the featurizer held.
    """

    def __init__(
        self,
        config: ModelConfig,
        feature_dim: int,
        patch_size: int,
        token_dim: int | None = None,
        featurizer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if config.fusion not in FUSIONS:
            raise UserError(f"model.fusion: unknown {config.fusion!r}; known: {', '.join(FUSIONS)}")
        _check_encoder_fits_fusion(config)
        self.config = config
        self.feature_dim = feature_dim
        self.patch_size = patch_size
        self.token_dim = feature_dim if token_dim is None else token_dim
        encoder_dim = self.token_dim if needs_featurizer_online(config) else feature_dim
        self.click_encoder = create_click_encoder(config.click_encoder, encoder_dim, patch_size)
        self.upsampler = create_upsampler(config.upsampler.name, feature_dim, config.upsampler.weights)
        self.upsampler.align_corners = config.align_corners
        if not (config.upsampler.fine_tune and self.upsampler.trainable):
            self.upsampler.requires_grad_(False)
            if config.upsampler.train_mode_when_frozen and isinstance(self.upsampler, LearnedUpsampler):
                self.upsampler.follow_train_mode()
        self.head = SegmentationHead(feature_dim, config.head.width)
        self.reduces_before_upsampling = (
            config.head.width is not None
            and config.fusion != "after_upsampler"
            and self.upsampler.commutes_with_channel_mixing
        )
        self.mixed_precision = config.mixed_precision
        self.register_buffer("feature_order", None, persistent=False)  # see read_features_as
        object.__setattr__(self, "_featurizer", None)
        self.use_research_precision(config.research_precision)
        if featurizer is not None:
            self.attach_featurizer(featurizer)

    @property
    def fusion(self) -> str:
        return self.config.fusion

    @property
    def upsampler_frozen_at_random(self) -> bool:
        """A learned upsampler with neither its authors' weights nor training: it would run at its random
        initialisation, and numbers measured through it would say nothing about the method."""
        upsampler = self.config.upsampler
        return self.upsampler.trainable and upsampler.weights is None and not upsampler.fine_tune

    @property
    def needs_featurizer(self) -> bool:
        """True for early fusion: the featurizer must run inside the probe, so cached features cannot be used."""
        return needs_featurizer_online(self.config)

    @property
    def featurizer(self) -> nn.Module | None:
        return self._featurizer

    def attach_featurizer(self, featurizer: nn.Module) -> None:
        """Hold a frozen featurizer for early fusion (kept out of `state_dict`, `parameters` and `.to`)."""
        refusal = getattr(featurizer, "early_fusion_refusal", None)
        if self.needs_featurizer and refusal:
            raise UserError(f"fusion before_backbone: featurizer {getattr(featurizer, 'name', '?')} {refusal}")
        embed_dim = getattr(featurizer, "embed_dim", None)
        if self.needs_featurizer and embed_dim != self.token_dim:
            raise UserError(
                f"featurizer embed_dim {embed_dim} differs from the probe's click-token dim {self.token_dim}"
            )
        if getattr(featurizer, "dim", self.feature_dim) != self.feature_dim:
            raise UserError(f"featurizer dim {featurizer.dim} differs from the probe's feature dim {self.feature_dim}")
        featurizer.requires_grad_(False)
        featurizer.eval()
        featurizer.research_precision = self.research_precision
        object.__setattr__(self, "_featurizer", featurizer)
        self.read_features_as(featurizer)

    def use_research_precision(self, enabled: bool) -> None:
        """Compute as the iSegProbe research code does where its rounding differs (the class docstring)."""
        self.research_precision = enabled
        for module in self.modules():
            if module is not self and hasattr(module, "research_precision"):
                module.research_precision = enabled
        if self._featurizer is not None:
            self._featurizer.research_precision = enabled

    def dims(self) -> dict[str, int]:
        """What, besides the config, rebuilds this probe from a checkpoint."""
        return {"feature_dim": self.feature_dim, "patch_size": self.patch_size, "token_dim": self.token_dim}

    def forward(
        self,
        features: Tensor | None,
        image: Tensor,
        clicks: Tensor | Sequence[Iterable[Any]],
        prev_mask: Tensor,
    ) -> Tensor:
        """features [B, C, h, w] (None for early fusion), image [B, 3, H, W] normalized, clicks [B, K, 3]
        (y, x, is_positive; y < 0 and x < 0 pads) or per-image lists of clicks, prev_mask [B, 1, H, W]
        -> logits [B, 1, H, W]."""
        clicks = as_click_tensor(clicks, device=image.device)
        on_cuda = image.is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda and self.mixed_precision):
            click_input = click_inputs(clicks, prev_mask, self.config.click_radius, self.research_precision)
            if on_cuda:
                click_input = click_input.contiguous(memory_format=torch.channels_last)
            features = self._featurizer_features(features, image, click_input)
            if self.fusion == "after_backbone":
                features = features + self._encoded_clicks(click_input, tuple(features.shape[-2:]))
            if self.reduces_before_upsampling:
                logits = self.head.decode(self.upsampler(self.head.reduce(features), image))
            else:
                upsampled = self.upsampler(features, image)
                if self.fusion == "after_upsampler":
                    upsampled = upsampled + self._encoded_clicks(click_input, tuple(upsampled.shape[-2:]))
                logits = self._head(upsampled)
        return resize_to(logits.float(), image.shape[-2:], self.config.align_corners)

    def read_features_as(self, featurizer: nn.Module | None) -> None:
        """Take the channel order in which the research code holds `featurizer`'s features (its
        `research_channels`; none for a featurizer without one): in research precision the head reads them so."""
        order = getattr(featurizer, "research_channels", None)
        self.feature_order = order.to(self.head.logit.weight.device) if order is not None else None

    def _head(self, features: Tensor) -> Tensor:
        if self.research_precision and self.feature_order is not None:
            return self.head.in_channel_order(features, self.feature_order)
        return self.head(features)

    def _encoded_clicks(self, click_input: Tensor, grid: tuple[int, int]) -> Tensor:
        if self.research_precision:
            return self.click_encoder.in_research_order(click_input, grid)
        return self.click_encoder(click_input, grid)

    def _featurizer_features(self, features: Tensor | None, image: Tensor, click_input: Tensor) -> Tensor:
        if self.needs_featurizer:
            if self._featurizer is None:
                raise UserError("fusion before_backbone needs a featurizer: attach one with probe.attach_featurizer()")
            grid = (image.shape[-2] // self.patch_size, image.shape[-1] // self.patch_size)
            return self._featurizer(image, token_bias=self._encoded_clicks(click_input, grid))
        if features is None:
            raise ValueError(f"fusion {self.fusion} needs the featurizer's features; got None")
        return probe_features(features, image)


def probe_features(features: Tensor, image: Tensor) -> Tensor:
    """Cached or computed features as the probe's layers take them: in the dtype of the normalized `image` (a
    store's are float16, an autocast featurizer's bfloat16) and, on CUDA, channels-last. Features made so already
    pass unchanged, so the trainer converts a batch's once, not at each of its step's passes."""
    features = features.to(image.dtype)
    if image.is_cuda:
        features = features.contiguous(memory_format=torch.channels_last)
    return features


def _check_encoder_fits_fusion(config: ModelConfig) -> None:
    name = config.click_encoder.name
    patch_encoders = patch_grid_encoders()
    if config.fusion == "after_upsampler" and name.lower() in patch_encoders:
        raise UserError(
            "fusion after_upsampler encodes clicks at the upsampled resolution: set model.click_encoder.name=conv"
        )
    if config.fusion != "after_upsampler" and name.lower() not in patch_encoders:
        raise UserError(
            f"fusion {config.fusion} puts click tokens on the patch grid: model.click_encoder.name must be one of "
            f"{', '.join(patch_encoders)}, got {name!r}"
        )
