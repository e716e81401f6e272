"""Where a featurizer's weights come from: seeded random init, timm's hub, or a checkpoint file.

Files may be in any layout researchers actually have on disk: timm / Hugging Face state dicts (.safetensors, .pth,
.pt, .bin, possibly wrapped in {"model": ...} or {"state_dict": ...}), DINOv2's and DINOv3's official
`*_pretrain*.pth`, OpenAI CLIP's TorchScript `.pt` archives, SAM's `sam_vit_*.pth`, SAM2's `sam2*_hiera_*.pt`, RADIO's
and the official ConvNeXt files. timm's own converter for the model's family translates the foreign layouts (DINOv3's
is ours, to account for every tensor; SAM2's trunk is cut out of its file here); loading is strict, and nothing is
unpickled beyond plain tensors.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.featurizers.dinov3_checkpoints import (
    dinov3_to_timm,
    is_dinov3_convnext_layout,
    is_dinov3_layout,
    use_files_periods,
)
from isegprobe.hashing import file_sha256
from isegprobe.home_paths import expand_home
from isegprobe.state_dicts import load_strictly, read_state_dict

RANDOM_SEED = 0
# Where SAM2's own checkpoints keep the image encoder's trunk, the Hiera that timm's HieraDet is
SAM2_TRUNK = "image_encoder.trunk."


class RandomWeightsWarning(UserWarning):
    """Features from random weights measure nothing about a pretrained model."""


@dataclass(frozen=True)
class WeightsSource:
    """What the provenance records about the weights: "random", "hub" or the file's absolute path."""

    location: str
    sha256: str | None = None
    random_seed: int | None = None
    # "file" where DINOv3's RoPE periods come from the official file, as the authors' model takes them, rather than
    # from timm's own float32 computation (None: no RoPE periods to choose, or timm's).
    rope_periods: str | None = None
    # Whether the weights are DINOv3's (its official file, or timm's pretrained weights of a name tagged dinov3): its
    # ConvNeXt normalizes every location of its last stage (dense.py), FB's ImageNet ConvNeXt does not.
    dinov3: bool = False


def create_timm_model(
    arch: str, weights: str, shown_as: str | None = None, **model_kwargs: Any
) -> tuple[nn.Module, WeightsSource]:
    """Build timm model `arch` with `weights` ("random", "hub" or a file path) and say where the weights came from;
    `shown_as` is the featurizer name the user gave, which warnings name (`dinov2_vits14` rather than timm's
    `vit_small_patch14_dinov2.lvd142m`)."""
    if weights == "hub":
        model = _from_hub(arch, **model_kwargs)
        return model, WeightsSource("hub", dinov3=_tagged_dinov3(model))
    if weights == "random":
        warnings.warn(
            f"{shown_as or arch}: random weights (seed {RANDOM_SEED}); features and any numbers measured on them say "
            "nothing about the pretrained model. Use --weights hub or --weights PATH for real ones.",
            RandomWeightsWarning,
            stacklevel=3,
        )
        model = _seeded(arch, **model_kwargs)
        return model, WeightsSource("random", random_seed=RANDOM_SEED, dinov3=_tagged_dinov3(model))
    path = expand_home(weights).resolve()
    if not path.is_file():
        raise UserError(
            f"weights file {path} {'is a folder' if path.is_dir() else 'does not exist'} (--weights takes 'random', "
            "'hub' or a path to a .safetensors / .pth / .pt / .bin checkpoint)"
        )
    model = _seeded(arch, **model_kwargs)
    loaded = load_checkpoint(model, path)
    return model, WeightsSource(
        str(path), sha256=file_sha256(path), rope_periods=loaded.rope_periods, dinov3=loaded.dinov3
    )


def _tagged_dinov3(model: nn.Module) -> bool:
    """Whether timm's pretrained weights of `model`'s name are DINOv3's (`convnext_tiny.dinov3_lvd1689m`)."""
    return str((getattr(model, "pretrained_cfg", None) or {}).get("tag") or "").startswith("dinov3")


def _seeded(arch: str, **model_kwargs: Any) -> nn.Module:
    """Random init from a fixed seed, so a resumed extraction gets the same weights; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(RANDOM_SEED)
        return timm.create_model(arch, pretrained=False, **model_kwargs)


def _from_hub(arch: str, **model_kwargs: Any) -> nn.Module:
    if not timm.is_model_pretrained(arch):
        raise UserError(f"timm has no pretrained weights for {arch}; use --weights PATH or another model")
    try:
        with torch.random.fork_rng(devices=[]):
            return timm.create_model(arch, pretrained=True, **model_kwargs)
    except OSError as error:
        raise UserError(
            f"could not fetch the {arch} weights from the Hugging Face hub: this needs the internet (or an HF cache "
            "that already holds them). Download the checkpoint elsewhere and pass --weights PATH; --weights random "
            "runs the pipeline without them (its numbers mean nothing); HF_HUB_OFFLINE=1 says this at once on a "
            f"machine without the internet, instead of after a minute of retries. ({error})"
        ) from error


def to_timm_layout(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Translate official checkpoints (DINOv2, DINOv3, OpenAI CLIP, SAM, RADIO, ConvNeXt, ...) to `model`'s keys.
    A classifier the featurizer was built without (`num_classes=0`) is dropped from the file."""
    if is_dinov3_layout(state):
        state = dinov3_to_timm(state, model)
    elif any(key.startswith(SAM2_TRUNK) for key in state):
        state = _family_converter(model)(_sam2_trunk(state, model), model)
    else:
        if "mask_token" in state:
            # DINOv2 trained with FSDP block chunks: blocks.<chunk>.<block>.* -> blocks.<block>.*
            state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key): value for key, value in state.items()}
        state = _family_converter(model)(state, model)
    classifier = f"{model.pretrained_cfg.get('classifier') or 'head'}."
    own = model.state_dict().keys()
    return {key: value for key, value in state.items() if key in own or not key.startswith(classifier)}


def _sam2_trunk(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The trunk of SAM2's image encoder from one of its own files, which also hold the FPN neck, the memory modules
    and the mask decoder. SAM2's trunk ends without a norm; timm's HieraDet keeps one in its classifier head
    (`head.norm`), which these features never pass through (timm's intermediates of a HieraDet are unnormed), so
    it keeps the model's own values."""
    trunk = {key.removeprefix(SAM2_TRUNK): value for key, value in state.items() if key.startswith(SAM2_TRUNK)}
    head_norm = {key: value for key, value in model.state_dict().items() if key.startswith("head.norm.")}
    return {**head_norm, **trunk}


def _family_converter(model: nn.Module) -> Any:
    """timm's `checkpoint_filter_fn` from the module that defines the model's class (its own file formats), or
    none where that module has no converter."""
    return getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", lambda state, _: state)


class LoadedFile(NamedTuple):
    """What a weights file said of itself: `rope_periods` "file" where the model's RoPE periods now come from it
    (DINOv3's official ViT layout), `dinov3` whether it is one of DINOv3's official files (ViT or ConvNeXt)."""

    rope_periods: str | None
    dinov3: bool


def load_checkpoint(model: nn.Module, path: Path) -> LoadedFile:
    """Load `path` into `model` strictly; a file that does not fit names its missing, unexpected and misshaped keys."""
    try:
        stored = read_state_dict(path)
        state = to_timm_layout(stored, model)
    except (RuntimeError, ValueError, KeyError, IndexError) as error:
        raise UserError(f"weights file {path} could not be converted for {_arch(model)}: {error}") from error
    load_strictly(model, state, f"weights file {path} does not fit {_arch(model)}")
    if not is_dinov3_layout(stored):
        return LoadedFile(None, is_dinov3_convnext_layout(stored))
    use_files_periods(stored, model)
    return LoadedFile("file", True)


def _arch(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return cfg.get("architecture") or type(model).__name__
