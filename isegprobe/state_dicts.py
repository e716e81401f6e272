"""Reading checkpoint files other people publish, and loading them strictly with a message that says what misfits.

Backbones and upsamplers come as safetensors, torch.save files (bare, or wrapped in {"model": ...} /
{"state_dict": ...} as Lightning does, or with DDP's `module.` prefix) and TorchScript archives (OpenAI's CLIP .pt).
Nothing is unpickled beyond plain containers and tensors.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError

_SHOWN_KEYS = 5


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of `path`, unwrapped from {"model": ...} / {"state_dict": ...} and from DDP's `module.` prefix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"could not read weights file {path} ({_reason(error)}); expected safetensors, a torch.save'd state dict "
            "(read with weights_only=True: nothing is unpickled beyond tensors and plain containers) or a "
            "TorchScript archive"
        ) from error
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise UserError(f"weights file {path} holds no state dict (parameter names mapped to tensors)")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise UserError(f"weights file {path} is not a state dict: {shown(not_tensors)} are not tensors")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def _reason(error: Exception) -> str:
    """One line of why a file did not load. torch.load's refusals are paragraphs that end in advice to unpickle
    with weights_only=False, which is exactly what must not be done with a file of unknown origin; only the
    unpickler's own complaint is kept."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_strictly(module: nn.Module, state: Mapping[str, Tensor], misfit_message: str) -> None:
    """`module.load_state_dict(state, strict=True)`; a misfit raises `misfit_message` plus the keys that misfit."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} (file {tuple(value.shape)}, model {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = [
        f"{label}: {shown(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
        if keys
    ]
    if problems:
        raise UserError(f"{misfit_message}; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def shown(keys: list[str]) -> str:
    """The first few keys of a long list, for messages."""
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (OpenAI's CLIP .pt files) carry constants.pkl; torch.save's zip files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())
