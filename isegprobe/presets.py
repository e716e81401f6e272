"""Training presets and config files: where a `--config` source is found, and how `base:` chains unfold.

The presets are YAML files in the package `isegprobe.configs` (the repository's top-level configs/train/), read with
importlib.resources so that an installed isegprobe finds them wherever it runs. A file may start from another with
`base: NAME` (a preset) or `base: PATH.yaml` (relative to the file that names it) and then says only what differs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home
from isegprobe.yaml_text import load_yaml

PRESET_SUFFIX = ".yaml"
BASE_KEY = "base"

ConfigFile = Path | Traversable


class ConfigChoiceWarning(UserWarning):
    """A --config that reads otherwise than its user likely meant: a file that bears a preset's name, a file that
    holds no settings."""


def preset_folder() -> Traversable:
    return resources.files("isegprobe.configs") / "train"


def list_presets() -> list[str]:
    return sorted(
        item.name.removesuffix(PRESET_SUFFIX) for item in preset_folder().iterdir() if item.name.endswith(PRESET_SUFFIX)
    )


def find_config_file(source: str | Path, relative_to: Path | None = None) -> ConfigFile:
    """A YAML file (a relative path from `relative_to`, else the current directory) or a preset name (`sbd_224`).

    A folder is never a config, so a preset's name finds the preset beside a folder of that name: `isegprobe
    quickstart` writes into `quickstart/` by default and then trains the `quickstart` preset, which a folder
    refused ahead of presets made fail on every fresh machine."""
    path = expand_home(source)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    text = str(source)
    preset = preset_folder() / f"{text}{PRESET_SUFFIX}"
    names_a_preset = Path(text).suffix not in (".yaml", ".yml") and "/" not in text and preset.is_file()
    if path.is_file():
        if names_a_preset:
            warnings.warn(
                ConfigChoiceWarning(
                    f"{text}: the file {path.resolve()} is read, not the preset {text}; rename the file (or give "
                    "the preset's own path) if the preset was meant"
                ),
                stacklevel=2,
            )
        return path.resolve()  # one name per file, so that a chain of bases that comes back is seen to
    if names_a_preset:
        return preset
    if path.is_dir():
        raise UserError(f"{path} is a folder: name a YAML file in it, or a preset ({', '.join(list_presets())})")
    raise UserError(f"no file {str(path)!r} and no preset {text!r}; presets: {', '.join(list_presets())}")


def read_config_layers(source: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The mappings of `source` and of its chain of bases, the farthest base first, each with its file's name."""
    layers: list[tuple[str, dict[str, Any]]] = []
    file = _find(source, None, "--config")
    while True:
        name = str(file)
        data = _read_mapping(file)
        base = data.pop(BASE_KEY, None)
        layers.append((name, data))
        if base is None:
            return layers[::-1]
        if not isinstance(base, str) or not base:
            raise UserError(f"--config: {name}: base must be a preset name or a YAML path, got {base!r}")
        file = _find(base, file.parent if isinstance(file, Path) else None, f"--config: {name}: base")
        chain = [seen for seen, _ in layers]
        if str(file) in chain:
            raise UserError(f"--config: {name}: base {base!r} makes a cycle: {' -> '.join([*chain, str(file)])}")


def _find(source: str | Path, relative_to: Path | None, where: str) -> ConfigFile:
    try:
        return find_config_file(source, relative_to)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


MOST_CONFIG_BYTES = 1 << 20  # a config of a few hundred lines is a few kB


def _read_mapping(file: ConfigFile) -> dict[str, Any]:
    try:
        text = file.read_text()
        if len(text) > MOST_CONFIG_BYTES:
            raise UserError(f"--config: {file}: {len(text)} characters, more than a config holds ({MOST_CONFIG_BYTES})")
        loaded = load_yaml(text)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"--config: {file} is not valid YAML: {error}") from None
    if loaded is not None and not isinstance(loaded, Mapping):
        raise UserError(f"--config: {file} must hold a mapping at the top level")
    if not loaded:
        warnings.warn(ConfigChoiceWarning(f"--config: {file} holds no settings: the defaults apply"), stacklevel=2)
    return dict(loaded or {})
