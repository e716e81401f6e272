"""Every key of a training config with its value and what it takes, for `isegprobe train --show-config`: the keys that
`--set` and `--variant` change are otherwise found only by reading isegprobe/config.py or a run's config.yaml."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import typing
from typing import Any

import yaml

from isegprobe.config import TrainConfig, listed_choices, word_choices

_WIDTH = 118

# What the keys that take a word accept, as the config checks them (the numbers' ranges come from the config's own
# fields).
_CHOICES = {key: f"one of {listed_choices(values)}" for key, values in word_choices().items()}
_CHOICES["data.num_workers"] = ">= 0, or auto"


def annotated_config(config: TrainConfig) -> str:
    """`config` as YAML that `--config` reads back, each key followed by what it takes: a number's range or a word's
    choices."""
    lines = [
        "# The resolved config: defaults, then the preset or YAML files, then --set. Any key below can be given",
        "# as --set KEY=VALUE (e.g. --set optim.lr=1e-4 --set model.upsampler.name=lift), or in a YAML --config.",
        "# Each section says what its keys do; more in docs/training.md.",
    ]
    _add_section(config, "", 0, lines)
    return "\n".join(lines) + "\n"


def _add_section(section: Any, prefix: str, depth: int, lines: list[str]) -> None:
    hints = typing.get_type_hints(type(section))
    indent = "  " * depth
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hints[field.name]):
            lines.extend(_description(hints[field.name], indent))
            lines.append(f"{indent}{field.name}:")
            _add_section(value, f"{key}.", depth + 1, lines)
            continue
        takes = _CHOICES.get(key) or str(field.metadata.get("range") or "")
        if takes and type(None) in typing.get_args(hints[field.name]):
            takes += ", or null"
        rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
        lines.append(f"{indent}{field.name}: {rendered}" + (f"  # {takes}" if takes else ""))


def _description(section: type, indent: str) -> list[str]:
    """A section's docstring as comment lines above it, rewrapped to the listing's width; none for one without."""
    text = section.__doc__ if "__doc__" in vars(section) else None
    if not text or text.startswith(f"{section.__name__}("):  # the signature dataclasses write in for no docstring
        return []
    width = _WIDTH - len(indent) - 2
    return [
        f"{indent}# {line}"
        for paragraph in inspect.cleandoc(text).split("\n\n")
        for line in textwrap.wrap(" ".join(paragraph.split()), width) or [""]
    ]
