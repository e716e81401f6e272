"""Reading the checkpoint files upsampler authors publish, and loading them strictly.

The files come in a few layouts: a bare state dict (LiFT, AnyUp, LoftUp on Hugging Face), a PyTorch Lightning
checkpoint whose `state_dict` also holds the frozen backbone and training-only modules (FeatUp, LoftUp's Google Drive
files), and state dicts saved from DistributedDataParallel with a `module.` prefix. Nothing is unpickled beyond plain
containers and tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError

# FeatUp and LoftUp train their upsampler behind a ChannelNorm that their Lightning module keeps as `model.1`
# (`model.0` is the frozen backbone); their hub wrappers call the same two parts `channelnorm` and `upsampler`.
NORM_AND_UPSAMPLER = {"model.1.norm.": "channelnorm.norm.", "channelnorm.": "channelnorm.", "upsampler.": "upsampler."}
_SHOWN_KEYS = 5


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of `path`, unwrapped from a Lightning checkpoint's `state_dict` and from DDP's `module.` prefix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"upsampler weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"could not read upsampler weights file {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise UserError(f"upsampler weights file {path} holds no state dict (parameter names mapped to tensors)")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise UserError(f"upsampler weights file {path} is not a state dict: {_shown(not_tensors)} are not tensors")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def rename_prefixes(state: Mapping[str, Tensor], renames: Mapping[str, str]) -> dict[str, Tensor]:
    """Keep the keys under the `renames` prefixes, renamed; drop the rest (a backbone, a training-only module)."""
    kept = {}
    for key, value in state.items():
        for source, target in renames.items():
            if key.startswith(source):
                kept[target + key.removeprefix(source)] = value
                break
    return kept


def load_strictly(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, method: str) -> None:
    """`module.load_state_dict(state, strict=True)`, with a message naming missing, unexpected and misshaped keys."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} (file {tuple(value.shape)}, model {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or misshaped:
        problems = [
            f"{label}: {_shown(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
            if keys
        ]
        raise UserError(f"{path} is not a {method} checkpoint for this feature dim; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _shown(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more
