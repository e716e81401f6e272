"""Values read from the config of an iSegProbe research checkpoint, each checked as it is read: OmegaConf nodes
(inert placeholders here) unwrapped, sections that must be dicts, names, whole numbers within the range isegprobe's
config allows, and every refusal naming the checkpoint and its own field, with the value cut short."""

from __future__ import annotations

import reprlib
from dataclasses import fields
from typing import Any

from torch import Tensor

from isegprobe.config import Range
from isegprobe.errors import UserError
from isegprobe.inert_pickles import Placeholder

# Checkpoint values in messages: long enough for any name the research code uses, short for hostile ones.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80


def config_params(config: Any, source: str) -> dict[str, Any]:
    """The research model's constructor arguments, which its config keeps as entries {"value": ..., ...}."""
    entries = as_mapping(as_mapping(config, "config", source).get("params"), "config's params", source)
    params = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise UserError(
                f"{source}: its config's params entry {shown_value(name)} is {shown_value(entry)}, expected a dict "
                "with a 'value'"
            )
        params[name] = entry.get("value")
    return params


def as_mapping(value: Any, what: str, source: str) -> dict[str, Any]:
    """`value` as a dict, {} for None: the research code's config sections are dicts (EasyDicts), absent ones None."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{source}: its {what} is {shown_value(value)}, expected a dict")
    return dict(value)


def name_in(section: dict[str, Any], key: str, where: str, source: str) -> str | None:
    """`section[key]` where the research code names a registered type or mode; None when absent."""
    value = plain_value(section.get(key))
    if value is not None and not isinstance(value, str):
        raise UserError(f"{source}: its {where}.{key} is {shown_value(value)}, expected a name")
    return value


def whole_number(value: Any, what: str, config_class: type, key: str, source: str) -> int:
    """A count or size from the checkpoint, refused rather than truncated (int("7.9"), NaN) and checked against
    the range isegprobe allows `config_class.key`, under the checkpoint's own name `what`."""
    value = plain_value(value)
    if not is_whole_number(value):
        shown = "missing" if value is None else shown_value(value)
        raise UserError(f"{source}: its {what} is {shown}, expected a whole number")
    return within_range(int(value), what, allowed_range(config_class, key), source)


def is_whole_number(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def within_range(number: int, what: str, allowed: Range, source: str) -> int:
    if number not in allowed:
        raise UserError(f"{source}: its {what} is {number}, expected a value {allowed}")
    return number


def allowed_range(config_class: type, key: str) -> Range:
    """The range isegprobe's config allows `key`: a value taken from a checkpoint is checked against it here, where
    the message can name the checkpoint's field rather than a config key the user never set."""
    return next(item.metadata["range"] for item in fields(config_class) if item.name == key)


def shown_value(value: Any) -> str:
    """A value from the checkpoint in a one-line message, cut short: it may be a tensor or a long list."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return " ".join(_SHOWN.repr(value).split())


def plain_value(value: Any) -> Any:
    """`value` with the stand-ins of OmegaConf nodes replaced by what they hold: a ListConfig or DictConfig keeps its
    items in `_content`, a value node its value in `_val`."""
    if isinstance(value, Placeholder) and isinstance(getattr(value, "state", None), dict):
        state = value.state
        if "_content" in state:
            return plain_value(state["_content"])
        if "_val" in state:
            return plain_value(state["_val"])
    if isinstance(value, list | tuple):
        return [plain_value(item) for item in value]
    if isinstance(value, dict):
        return {key: plain_value(item) for key, item in value.items()}
    return value


def config_section(params: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = params.get(name)
    if not isinstance(section, dict):
        raise UserError(f"{source}: the checkpoint's config has no {name}")
    return dict(section)
