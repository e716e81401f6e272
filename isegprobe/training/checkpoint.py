"""Probe checkpoints without pickle: safetensors for tensors, JSON for everything else.

A run directory holds `last.*` (weights, optimizer state, metadata) and `best.*` (weights, metadata). The files of
one checkpoint appear together or not at all: each is first written whole under a pending name (`last.json.pending`,
...; temp file, fsync, os.replace), the metadata last, and only then are they moved into place, the metadata last
again. A crash (or a full disk) while writing leaves the previous checkpoint as it was; one while moving leaves the
new metadata pending, which the next training run moves into place and readers take when its step is the weights'.
The files of one checkpoint carry its step; loading refuses files that disagree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as safetensors_bytes
from torch import nn

from isegprobe.atomic_files import atomic_write_bytes, fsync_directory
from isegprobe.config import TrainConfig
from isegprobe.config_loading import train_config_from_dict
from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home
from isegprobe.model import ISProbe
from isegprobe.state_dicts import not_finite, not_finite_parameters, shown
from isegprobe.upsamplers.learned import LearnedUpsampler

FORMAT = "isegprobe.probe"
FORMAT_VERSION = 1
PENDING_SUFFIX = ".pending"
_MOVE_ORDER = ("weights", "optimizer", "metadata")  # the metadata last: its pending file says all are written


def checkpoint_files(run_dir: str | Path, name: str) -> dict[str, Path]:
    run_dir = Path(run_dir)
    return {
        "weights": run_dir / f"{name}.safetensors",
        "optimizer": run_dir / f"{name}.optim.safetensors",
        "metadata": run_dir / f"{name}.json",
    }


def pending(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    probe: ISProbe,
    metadata: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write checkpoint `name` ("last", "best") of `probe`; with `optimizer`, also what --resume needs. Its files
    appear together or not at all (see the module docstring)."""
    files = checkpoint_files(run_dir, name)
    recover_checkpoint(run_dir, name)
    stamp = {"step": str(metadata["step"])}
    weights = {key: value.detach().cpu().contiguous() for key, value in probe.state_dict().items()}
    payloads = {"weights": safetensors_bytes(weights, metadata=stamp)}
    metadata = {**metadata, "format": FORMAT, "format_version": FORMAT_VERSION}
    if optimizer is not None:
        tensors, scalars = optimizer_state(optimizer)
        payloads["optimizer"] = safetensors_bytes(tensors, metadata=stamp)
        metadata["optimizer"] = scalars
    payloads["metadata"] = json.dumps(metadata, indent=2, sort_keys=True).encode()
    try:
        for key in _MOVE_ORDER:
            if key in payloads:
                try:
                    atomic_write_bytes(pending(files[key]), payloads[key])
                except OSError as error:
                    if error.errno is None:
                        raise
                    # named by the file it was writing for, not by its pending name
                    raise OSError(error.errno, error.strerror, str(files[key])) from error
    except BaseException:
        _discard_pending(files)
        raise
    _move_pending(files)


def recover_checkpoint(run_dir: str | Path, name: str) -> None:
    """Finish or forget a save of checkpoint `name` that was interrupted: one stopped while moving its files into
    place (its metadata still pending) is completed; one stopped while writing them is discarded. Only the process
    that writes the run (holding its lock) may call this."""
    files = checkpoint_files(run_dir, name)
    if pending(files["metadata"]).is_file():
        _move_pending(files)
    else:
        _discard_pending(files)


def _move_pending(files: dict[str, Path]) -> None:
    for key in _MOVE_ORDER:
        if pending(files[key]).is_file():
            os.replace(pending(files[key]), files[key])
    fsync_directory(files["metadata"].parent)


def _discard_pending(files: dict[str, Path]) -> None:
    for path in files.values():
        pending(path).unlink(missing_ok=True)


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON scalars."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": scalars}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in scalars["state"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = [dict(group) for group in scalars["param_groups"]]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


CHECKPOINT_HINT = (
    "A checkpoint is a run folder of `isegprobe train` or its last/best.safetensors; a probe trained by the iSegProbe "
    "research code is converted with `isegprobe import-seed` first."
)


def _read_stamped(path: Path, step: int) -> dict[str, torch.Tensor]:
    stamp, data = _stamped_bytes(path)
    _require_step(path, stamp, step)
    return _tensors(path, data)


def _require_step(path: Path, stamp: str | None, step: int) -> None:
    if stamp != str(step):
        raise UserError(f"{path} is from step {stamp} but its JSON says step {step}: the checkpoint is incomplete")


def _stamped_bytes(path: Path) -> tuple[str | None, bytes]:
    """(the step a safetensors file was written at, its bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise UserError(f"checkpoint file {path} is missing") from error
    header_size = int.from_bytes(data[:8], "little")
    try:
        return json.loads(data[8 : 8 + header_size]).get("__metadata__", {}).get("step"), data
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise _damaged(path) from None


def _read_weights_and_metadata(
    weights_path: Path, metadata_path: Path
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, weights) of one step. While a save moves its files into place (or after a crash then), the
    weights can be a step ahead of the metadata, whose new version is then still pending."""
    if not pending(metadata_path).is_file():
        metadata = read_metadata(metadata_path)  # first: a file that is no checkpoint is refused as such
        return metadata, _read_stamped(weights_path, metadata["step"])
    stamp, data = _stamped_bytes(weights_path)
    try:
        metadata = read_metadata(pending(metadata_path))
    except UserError:  # moved into place meanwhile
        metadata = {}
    if str(metadata.get("step")) != stamp:
        metadata = read_metadata(metadata_path)
    _require_step(weights_path, stamp, metadata["step"])
    return metadata, _tensors(weights_path, data)


def _tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file's bytes. A file cut off after its header has a whole header, with the
    step, and is refused only here, where the tensors it promises are missing."""
    try:
        return load_safetensors_bytes(data)
    except SafetensorError:
        raise _damaged(path) from None


def _damaged(path: Path) -> UserError:
    return UserError(f"{path}: not a safetensors file (corrupt or truncated)")


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UserError(
            f"{path.with_suffix('.safetensors')}: not an isegprobe checkpoint, its metadata {path.name} is missing. "
            f"{CHECKPOINT_HINT}"
        ) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error
    except RecursionError:  # nested deeper than the parser goes: no checkpoint's metadata is
        raise UserError(f"{path} is not an isegprobe probe checkpoint (JSON nested too deep to read)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path} is not an isegprobe probe checkpoint")
    problem = _layout_problem(metadata)
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    return metadata


_PROBE_DIMS = {"feature_dim": False, "patch_size": False, "token_dim": True}  # whether each may be null


def _layout_problem(metadata: dict[str, Any]) -> str | None:
    """What keeps a checkpoint's JSON from rebuilding its probe here: a format version this isegprobe does not know
    (a newer one would be read as if it were this one's), or a config or probe size of another shape than `train`
    writes (a hand-edited file failed in a traceback where the probe was built)."""
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        return (
            f"checkpoint format version {version!r}, and this isegprobe reads version {FORMAT_VERSION}: a newer "
            "isegprobe wrote it, or the file was edited"
        )
    if not isinstance(metadata.get("config"), dict):
        return f"its config is {metadata.get('config')!r:.60}, where train writes the run's settings"
    dims = metadata.get("model")
    if not isinstance(dims, dict) or set(dims) != set(_PROBE_DIMS):
        return f"its model is {dims!r:.80}, where train writes the probe's {', '.join(_PROBE_DIMS)}"
    for key, nullable in _PROBE_DIMS.items():
        value = dims[key]
        if not (nullable and value is None) and not (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return f"its model.{key} is {value!r:.40}, where train writes a whole number of 1 or more"
    return None


def _recorded_config(metadata: dict[str, Any], metadata_path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config a checkpoint records (with `overrides` applied). What of it does not read here (a setting of a
    newer isegprobe, a value edited out of range) is named with the file, not as if a --config or --set had it."""
    try:
        train_config_from_dict(metadata["config"])
    except UserError as error:
        raise UserError(
            f"{metadata_path}: its recorded config does not read here ({error}); a newer isegprobe wrote it, or the "
            "file was edited"
        ) from None
    return train_config_from_dict(metadata["config"], overrides)


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> tuple[Path, Path]:
    """(weights, metadata) paths from a run directory (`prefer`: "best" or "last", else the other), a .safetensors
    or a .json file."""
    path = expand_home(path)
    if path.is_dir():
        if not any((path / f"{name}.json").is_file() for name in ("best", "last")):
            raise UserError(f"{path}: not a run folder (no best.json or last.json in it). {CHECKPOINT_HINT}")
        other = "last" if prefer == "best" else "best"
        name = prefer if (path / f"{prefer}.json").is_file() else other
        files = checkpoint_files(path, name)
        return files["weights"], files["metadata"]
    if path.is_file() and path.suffix not in (".safetensors", ".json"):
        raise UserError(f"{path}: not an isegprobe checkpoint. {CHECKPOINT_HINT}")
    stem = path.name.removesuffix(".safetensors").removesuffix(".json")
    files = checkpoint_files(path.parent, stem)
    return files["weights"], files["metadata"]


def checkpoint_description(weights: Path, metadata: dict[str, Any]) -> str:
    """Which probe an evaluation loads, said before it starts: the file, its step and how it was chosen. A run
    folder gives its best checkpoint, which after a short run can be many steps before the last one; this says so
    rather than let the numbers pass for the last step's."""
    step = metadata.get("step")
    words = [f"step {step}"]
    if weights.name.startswith("best"):
        best = metadata.get("best_metric") or {}
        if best.get("name") is not None:
            words.append(f"best {best['name']} {float(best['value']):.4f}")
        last = weights.with_name("last.json")
        last_step = _recorded_step(last)
        if isinstance(last_step, int) and isinstance(step, int) and last_step > step:
            words.append(f"the run's last checkpoint is at step {last_step}: --checkpoint {last} evaluates that")
    return f"probe: {weights} ({'; '.join(words)})"


def _recorded_step(metadata_path: Path) -> Any:
    """The step a checkpoint's JSON records, None where there is no readable one."""
    try:
        return json.loads(metadata_path.read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None


def load_probe(
    path: str | Path, featurizer: nn.Module | None = None, device: str | torch.device = "cpu"
) -> tuple[ISProbe, dict[str, Any]]:
    """Rebuild a trained probe (in eval mode, a frozen upsampler with its authors' running statistics) and return it
    with its checkpoint metadata.

    Early-fusion probes need their frozen featurizer: pass it here or attach it later.
    """
    weights_path, metadata_path = resolve_checkpoint(path)
    metadata, weights = _read_weights_and_metadata(weights_path, metadata_path)
    config = _recorded_config(metadata, metadata_path)
    model_config = dataclasses.replace(
        config.model, upsampler=dataclasses.replace(config.model.upsampler, weights=None)
    )
    probe = ISProbe(model_config, **metadata["model"])
    _load_weights(probe, weights, weights_path, metadata_path)
    if isinstance(probe.upsampler, LearnedUpsampler):
        probe.upsampler.use_authors_statistics()
    if featurizer is not None:
        probe.attach_featurizer(featurizer)
    return probe.to(device).eval(), metadata


def restore_training_state(run_dir: str | Path, probe: ISProbe, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load `last.*` into probe and optimizer for --resume; returns its metadata (step, best metric, ...)."""
    files = checkpoint_files(run_dir, "last")
    metadata = read_metadata(files["metadata"])
    step = metadata.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise UserError(f"{files['metadata']}: its step is {step!r}, where train writes the number of steps taken")
    _load_weights(probe, _read_stamped(files["weights"], step), files["weights"], files["metadata"])
    optimizer_tensors = _read_stamped(files["optimizer"], step)
    _refuse_not_finite(files["optimizer"], not_finite(optimizer_tensors))
    restore_optimizer(optimizer, optimizer_tensors, metadata["optimizer"])
    return metadata


def _load_weights(probe: ISProbe, weights: dict[str, torch.Tensor], weights_path: Path, metadata_path: Path) -> None:
    """Load a checkpoint's weights into the probe its JSON describes; weights of another probe (a file copied from
    another run, an edited config, a store of another featurizer on resume) are refused naming both files, and
    weights that are not finite naming the tensors."""
    _refuse_not_finite(weights_path, not_finite_parameters(probe, weights))
    try:
        probe.load_state_dict(weights)
    except RuntimeError as error:
        lines = str(error).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip().rstrip(".")
        raise UserError(
            f"{weights_path}: these weights do not fit the probe that {metadata_path.name} (and the store's features) "
            f"describe: {first}; keep each run's files together, and resume a run with the store it trained on"
        ) from None


def _refuse_not_finite(path: Path, keys: list[str]) -> None:
    """Refuse a checkpoint file whose tensors hold NaN or infinities, as featurizer and upsampler weights are
    refused: a probe with such weights predicted nothing, and evaluate reported IoU 0 everywhere; resumed from such
    weights or optimizer moments, training made the loss NaN at once and blamed the learning rate."""
    if keys:
        raise UserError(f"{path}: NaN or infinite values in: {shown(keys)}; a checkpoint with them cannot be used")


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config a run was started with (from last.json), with further `key=value` overrides. A probe that
    `import-seed` wrote has no training state (optimizer moments, schedule) to continue, and is refused here, before
    the resumed run's plan is printed and its store read."""
    path = checkpoint_files(run_dir, "last")["metadata"]
    metadata = read_metadata(path)
    imported = imported_from(metadata)
    if imported is not None:
        raise UserError(
            f"--resume: {run_dir} holds a probe imported by isegprobe import-seed (from {imported}), not a run "
            "isegprobe trained: it has no optimizer state or schedule to resume; evaluate it with isegprobe "
            "evaluate --checkpoint, or train a new probe with --out elsewhere"
        )
    return _recorded_config(metadata, path, overrides)


def imported_from(metadata: Mapping[str, Any]) -> str | None:
    """The research checkpoint a probe was converted from by `import-seed`, or None for a probe isegprobe trained."""
    imported = metadata.get("imported_from")
    return str(imported.get("path")) if isinstance(imported, dict) else None
