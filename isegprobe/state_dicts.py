"""Reading checkpoint files other people publish, and loading them strictly with a message that says what misfits.

Featurizer and upsampler weights come as safetensors, torch.save files (bare, or wrapped in {"model": ...} /
{"state_dict": ...} as Lightning does, or with DDP's `module.` prefix) and TorchScript archives (OpenAI's CLIP .pt).
Nothing is unpickled beyond plain containers and tensors: objects of other classes that training code saves beside
the weights (JAFAR's OmegaConf config) are read as inert stand-ins (isegprobe.inert_pickles) and must stay outside
the state dict. A TorchScript archive cannot be read without running the code it carries, so it is loaded only where
the user allowed it (isegprobe.trust, --allow-torchscript).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home
from isegprobe.inert_pickles import load_inertly
from isegprobe.trust import ALLOW_TORCHSCRIPT, torchscript_allowed

_SHOWN_KEYS = 5
_ZIP_START, _PICKLE_START = b"PK\x03\x04", b"\x80"  # torch.save since 1.6; a pickle of protocol 2 or later
# torch's refusal of a global, in its two wordings (not allowlisted; from a blocked module such as os or posix).
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")
# The lines of torch's refusals that advise loading the file anyway.
_ADVICE = re.compile(r"weights_only|weights only load failed|safe_globals|trusted source|documentation", re.IGNORECASE)
# torch's warnings as it reads sparse tensors, which `read_state_dict` refuses right after.
_SPARSE_WARNINGS = r"Validating sparse tensor invariants|Sparse \w+ tensor support is in beta"
# Keys under which training code saves the weights beside its other state (Lightning's `state_dict`).
WRAPPERS = ("model", "state_dict")


class TorchScriptWarning(UserWarning):
    """A TorchScript archive is being loaded, which runs the code it carries."""


def read_state_dict(path: str | Path, wrappers: tuple[str, ...] = WRAPPERS) -> dict[str, Tensor]:
    """The tensors of `path`, unwrapped from DDP's `module.` prefix and from {"model": ...} / {"state_dict": ...}, or
    from the `wrappers` a method's authors save under instead (JAFAR's {"jafar": ...}); entries beside the wrapper
    (optimizer state, epoch) are ignored."""
    path = expand_home(path)
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "does not exist"
        raise UserError(f"weights file {path} {what}")
    torchscript = path.suffix != ".safetensors" and _is_torchscript(path)
    if torchscript:
        _require_torchscript_allowed(path)
    refusal = None
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path), device="cpu")
        elif torchscript:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state, refusal = _load_pickled(path)
    except Exception as error:
        raise UserError(
            f"could not read weights file {path} ({what_is_wrong(path, error)}); expected safetensors, a torch.save'd "
            "state dict (read by torch's weights-only unpickler: nothing is unpickled beyond tensors and plain "
            f"containers) or, with {ALLOW_TORCHSCRIPT}, a TorchScript archive"
        ) from error
    for wrapper in wrappers:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if refusal is not None and not (isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values())):
        raise UserError(f"could not read weights file {path} ({unpickler_complaint(refusal)}, in its weights)")
    if not isinstance(state, dict) or not state:
        raise UserError(f"weights file {path} holds no state dict (parameter names mapped to tensors)")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise UserError(f"weights file {path} is not a state dict: {shown(not_tensors)} are not tensors")
    not_dense = not_dense_tensors(state)
    if not_dense:
        raise UserError(
            f"weights file {path} holds tensors that are not dense (strided), as weights must be: {shown(not_dense)}"
        )
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def _load_pickled(path: Path) -> tuple[Any, Exception | None]:
    """The file's content, and torch's weights-only refusal where the file names other classes (then read as inert
    stand-ins, which may only sit beside the weights)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _SPARSE_WARNINGS, UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError as refusal:
        try:
            named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except (RuntimeError, ValueError):
            raise refusal from None  # torch lists the classes of zip archives only, not of the legacy format
        if not named:
            raise
        return load_inertly(path), refusal


def what_is_wrong(path: Path, error: Exception) -> str:
    """Why a weights file did not load: torch's complaint, unless the file is no kind of checkpoint at all, where
    torch's unpickler says only what it made of the first bytes (a number, for a text file; nothing, for an empty
    one)."""
    with open(path, "rb") as file:
        start = file.read(8)
    if not start:
        return "an empty file"
    if path.suffix != ".safetensors" and not start.startswith((_ZIP_START, _PICKLE_START)):
        return f"not a zip archive, as torch.save writes, nor a pickle: it begins with {start!r}"
    return unpickler_complaint(error)


def unpickler_complaint(error: Exception) -> str:
    """One line of why torch could not load a file. torch's refusals are paragraphs of advice (load it with
    weights_only=False, or allowlist the global), which is exactly what must not be done with a file of unknown
    origin: only what was refused is kept."""
    text = str(error)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return f"it names {refused.group(1)}, which is not a tensor or a plain container"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _ADVICE.search(line)]
    return lines[-1] if lines else type(error).__name__


def load_strictly(
    module: nn.Module,
    state: Mapping[str, Tensor],
    misfit_message: str,
    name_in_file: Callable[[str], str] | None = None,
) -> None:
    """`module.load_state_dict(state, strict=True)`; a misfit raises `misfit_message` plus the keys that misfit.

    `name_in_file`: the name the file gives a key of `state` (or would give a missing one), where the caller renamed
    the file's keys: the message names the keys the user can find in the file."""
    named = name_in_file or str
    expected = module.state_dict()
    missing = [named(key) for key in expected if key not in state]
    unexpected = [named(key) for key in state if key not in expected]
    not_dense = not_dense_tensors(state, named)
    dense = {key: value for key, value in state.items() if _not_dense_kind(value) is None}
    misshaped = [
        f"{named(key)} (file {tuple(value.shape)}, model {tuple(expected[key].shape)})"
        for key, value in dense.items()
        if key in expected and value.shape != expected[key].shape
    ]
    # load_state_dict casts: int8 weights became zeros and bool ones ones, with no word
    not_floats = [
        f"{named(key)} (file {str(value.dtype).removeprefix('torch.')})"
        for key, value in dense.items()
        if key in expected and expected[key].is_floating_point() and not value.is_floating_point()
    ]
    not_finite_keys = [named(key) for key in not_finite_parameters(module, dense)]
    problems = [
        f"{label}: {shown(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("not dense (strided) tensors", not_dense),
            ("misshaped", misshaped),
            ("not floating-point", not_floats),
            ("NaN or infinite values in", not_finite_keys),
        )
        if keys
    ]
    if problems:
        raise UserError(f"{misfit_message}; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def not_dense_tensors(state: Mapping[str, Tensor], named: Callable[[str], str] = str) -> list[str]:
    """The keys of `state` (as `named` shows them) whose tensors are not dense (strided) ones with values, each with
    what it is instead. torch.save keeps a tensor's layout, so a file can hold sparse, meta or nested tensors, on
    which checking values and load_state_dict fail with a traceback."""
    return [f"{named(key)} ({kind})" for key, value in state.items() if (kind := _not_dense_kind(value)) is not None]


def _not_dense_kind(tensor: Tensor) -> str | None:
    if tensor.layout != torch.strided:
        return str(tensor.layout).removeprefix("torch.")
    if tensor.is_meta:
        return "meta: a shape without values"
    if tensor.is_nested:
        return "nested"
    return None


def not_finite_parameters(module: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """The keys of `state` that load into parameters of `module` and hold NaN or infinite values. NaN weights made
    NaN features that extraction stored as done, and a probe's made empty predictions; buffers (masks) may hold
    infinities, so only parameters are checked."""
    parameters = dict(module.named_parameters())
    return not_finite({key: value for key, value in state.items() if key in parameters})


def not_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """The keys of the floating-point tensors among `tensors` (dense ones) that hold NaN or infinite values."""
    return [key for key, value in tensors.items() if value.is_floating_point() and not value.isfinite().all()]


def shown(keys: list[str]) -> str:
    """The first few keys of a long list, for messages."""
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (OpenAI's CLIP .pt files) carry constants.pkl; torch.save's zip files do not. A zip file
    that cannot be listed is left to torch.load, which refuses TorchScript itself when it reads weights only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(Path(name).name == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _require_torchscript_allowed(path: Path) -> None:
    """Refuse a TorchScript archive unless the user allowed running its code; where allowed, say that it runs."""
    if not torchscript_allowed():
        raise UserError(
            f"weights file {path} is a TorchScript archive (it holds constants.pkl): loading one runs the code it "
            f"carries, so it is not loaded without {ALLOW_TORCHSCRIPT}. Give that flag only for a file from a source "
            "you trust, or save the archive's state dict as .safetensors where you trust it and pass that file"
        )
    warnings.warn(
        f"{path}: loading a TorchScript archive, which runs the code it carries ({ALLOW_TORCHSCRIPT})",
        TorchScriptWarning,
        stacklevel=3,
    )
