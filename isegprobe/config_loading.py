"""Reading a training config: defaults, then a YAML preset or file and its chain of bases, then `--set key.sub=value`
overrides, built into `config.TrainConfig` and checked (types, ranges, choices, keys that depend on each other), with
messages that name the file or option that gave a wrong value. Old key names still read (`RENAMED_KEYS`).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from isegprobe.config import DataConfig, Range, TrainConfig, listed_choices, word_choices
from isegprobe.errors import UserError
from isegprobe.presets import read_config_layers
from isegprobe.yaml_text import load_yaml


class RenamedConfigKeyWarning(FutureWarning):
    """A config (a YAML file, --set, or the one saved in a run folder or checkpoint) uses a key's old name."""


# Keys renamed since configs were first saved (old dotted name -> new one, in the same section): run folders and
# checkpoints keep the config they were written with, so the old names must go on loading.
RENAMED_KEYS = {"model.upsampler.trainable": "model.upsampler.fine_tune"}


class ConfigValueError(UserError):
    """A config value of the wrong type or outside its range; `key` (dotted) says which, so that the message can
    name the file that gave it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_train_config(source: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file or preset `source` (after its chain of bases), then `key.sub=value` overrides."""
    merged = config_to_dict(TrainConfig())
    layers = read_config_layers(source) if source is not None else []
    for name, layer in layers:
        try:
            _merge_into(merged, layer, prefix="")
        except UserError as error:
            raise UserError(f"--config: {name}: {error}") from None
    try:
        return _finish(merged, overrides)
    except ConfigValueError as error:
        given_by = [name for name, layer in layers if error.key in _dotted_keys(layer)]
        if not given_by or any(_override_key(override) == error.key for override in overrides):
            raise
        raise UserError(f"--config: {given_by[-1]}: {error}") from None


def _dotted_keys(layer: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in layer.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, Mapping):
            keys |= _dotted_keys(value, f"{prefix}{key}.")
    return keys


def _override_key(override: str) -> str:
    return override.partition("=")[0].strip()


def key_given_twice(overrides: Sequence[str]) -> str | None:
    """The first key that two of `overrides` set, or None. Applied in turn, the last would win without a word, and
    a long command line's earlier value is easily the one its writer meant."""
    keys = [_override_key(override) for override in overrides]
    return next((key for index, key in enumerate(keys) if key in keys[:index]), None)


def train_config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Rebuild a config from a (possibly partial) nested dict, e.g. one saved in a checkpoint's JSON."""
    merged = config_to_dict(TrainConfig())
    _merge_into(merged, data, prefix="")
    return _finish(merged, overrides)


def _finish(merged: dict[str, Any], overrides: Sequence[str]) -> TrainConfig:
    for override in overrides:
        _apply_override(merged, override)
    config = _build(TrainConfig, merged, prefix="", choices=word_choices())
    _check_together(config)
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_to_yaml(config: TrainConfig) -> str:
    """The whole resolved config (defaults, preset and overrides together) as YAML that `--config` reads back."""
    header = "# The config this run trains with: `isegprobe train --config THIS_FILE ...` trains the same probe.\n"
    return header + yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _merge_into(base: dict[str, Any], update: Mapping[str, Any], prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if dotted in RENAMED_KEYS:
            key, dotted = _renamed(dotted, update)
        if key not in base:
            raise UserError(f"unknown config key {dotted!r}; known here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise UserError(f"config key {dotted!r} must be a mapping, got {_shown(value)}")
            _merge_into(base[key], value, prefix=f"{dotted}.")
        else:
            base[key] = value


def _renamed(old: str, update: Mapping[str, Any]) -> tuple[str, str]:
    """(key, dotted key) that an old key name stands for now, said once per place it is read from."""
    new = RENAMED_KEYS[old]
    leaf = new.rsplit(".", 1)[-1]
    if leaf in update:
        raise UserError(f"config keys {old!r} and {new!r} are one setting ({old!r} is its old name): give only {new!r}")
    warnings.warn(
        f"config key {old!r} is now {new!r}; the old name is read as the new one, but configs should use {new!r}",
        RenamedConfigKeyWarning,
        stacklevel=2,
    )
    return leaf, new


def _apply_override(merged: dict[str, Any], override: str) -> None:
    key, separator, raw_value = override.partition("=")
    key = key.strip()
    if not separator or not key:
        raise UserError(f"--set {override!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = load_yaml(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise UserError(f"--set {override!r}: the value is not a YAML scalar or list: {error}") from error
    *parents, leaf = key.split(".")
    node: Any = merged
    for depth, parent in enumerate(parents):
        node = node.get(parent) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            through = ".".join(parents[: depth + 1])
            raise UserError(f"--set {override!r}: {through} is a value, not a group of keys (--set {through}=VALUE)")
    update: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        update = {parent: update}
    _merge_into(merged, update, prefix="")


def _build(cls: type, data: Mapping[str, Any], prefix: str, choices: Mapping[str, tuple[Any, ...]]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):
        dotted = f"{prefix}{item.name}"
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            values[item.name] = _build(hint, data[item.name], prefix=f"{dotted}.", choices=choices)
        else:
            values[item.name] = _coerce(data[item.name], hint, dotted)
            if "range" in item.metadata:
                _check_range(values[item.name], item.metadata["range"], dotted)
            if dotted in choices:
                values[item.name] = _chosen(values[item.name], choices[dotted], dotted)
    return cls(**values)


def _chosen(value: Any, allowed: tuple[Any, ...], key: str) -> Any:
    """`value` as one of `allowed`. A word is read in any case, as the registries read names, and kept in lower case:
    `Bilinear` trains bilinear, and a run that recorded it so would be labelled apart from the `bilinear` runs."""
    chosen = value.lower() if isinstance(value, str) else value
    if chosen not in allowed:
        raise ConfigValueError(key, f"config key {key!r} must be one of {listed_choices(allowed)}, got {_shown(value)}")
    return chosen


def _check_range(value: Any, allowed: Range, key: str) -> None:
    """Numbers only: a key that also takes a word (None, `auto`) has that checked where the word is used."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list):
        if not all(item in allowed for item in value):
            raise ConfigValueError(key, f"config key {key!r} must hold finite numbers {allowed}, got {_shown(value)}")
    elif value not in allowed:
        raise ConfigValueError(key, f"config key {key!r} must be a finite number {allowed}, got {_shown(value)}")


def asks_for_workers(data: DataConfig) -> bool:
    """Whether the config names a number of loader workers above 0 (`auto` leaves it to the run)."""
    return data.num_workers != "auto" and data.num_workers > 0


def _check_together(config: TrainConfig) -> None:
    """Keys whose allowed values depend on each other."""
    if len(config.optim.betas) != 2:
        raise UserError(f"config key 'optim.betas' must hold two numbers (Adam's), got {_shown(config.optim.betas)}")
    if isinstance(config.data.num_workers, str) and config.data.num_workers != "auto":
        raise UserError(f"config key 'data.num_workers' must be a number >= 0 or auto, got {config.data.num_workers!r}")
    if config.data.preload is True and asks_for_workers(config.data):
        raise UserError(
            f"config keys data.preload and data.num_workers {config.data.num_workers}: a preloaded store is read "
            "from memory in the training process; each loader worker would hold a copy of it. Set "
            "data.num_workers=0"
        )
    if config.data.views is not None and not config.data.views:
        raise UserError("config key 'data.views' must name at least one of the store's views (null: all of them)")
    if config.data.views is not None and len(set(config.data.views)) < len(config.data.views):
        twice = next(view for index, view in enumerate(config.data.views) if view in config.data.views[:index])
        raise UserError(f"config key 'data.views' names a view twice: {twice!r}")
    sampler = config.sampler
    negatives = (sampler.negative_bg_prob, sampler.negative_other_prob, sampler.negative_border_prob)
    if not math.isclose(sum(negatives), 1.0, abs_tol=1e-6):
        raise UserError(
            "config keys sampler.negative_bg_prob, negative_other_prob and negative_border_prob must add up to 1, "
            f"got {' + '.join(f'{value:g}' for value in negatives)} = {sum(negatives):g}"
        )


def _shown(value: Any) -> str:
    """A value for a message, cut short: a config's value may be a list of millions (its message took 8 GB)."""
    return _SHORT_REPR.repr(value)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # Python 3.11's takes no limits as arguments
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxlong = 3, 6, 6, 60, 40
    return short


_SHORT_REPR = _short_repr()


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigValueError(key, f"config key {key!r} must be a list, got {_shown(value)}")
        return [_coerce(item, item_type, key) for item in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):  # text that is no number, an integer past float's range
            pass
    elif hint is str:
        if isinstance(value, str):
            return value
    type_name = getattr(hint, "__name__", str(hint))
    raise ConfigValueError(key, f"config key {key!r} must be {type_name}, got {_shown(value)}")
