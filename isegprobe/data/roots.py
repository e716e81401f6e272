"""Dataset roots and loader options from `configs/datasets.yaml`, so a command needs no --root once it is set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from isegprobe.errors import UserError

CONFIG_ENV = "ISEGPROBE_DATASETS"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "datasets.yaml"


@dataclass(frozen=True)
class DatasetConfig:
    path: Path
    roots: dict[str, str | None]
    options: dict[str, dict[str, dict[str, Any]]]  # dataset -> split -> keyword -> value


def config_path() -> Path:
    """`$ISEGPROBE_DATASETS` if set (a user's own copy), else the file shipped in the package."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override).expanduser() if override else DEFAULT_CONFIG


def load_dataset_config(path: Path | None = None) -> DatasetConfig:
    path = path or config_path()
    if not path.is_file():
        raise UserError(f"{path}: dataset config not found (set {CONFIG_ENV} to an existing file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict) or set(data) - {"roots", "options"}:
        raise UserError(f"{path}: expected a mapping with the keys roots and options")
    roots = data.get("roots") or {}
    options = data.get("options") or {}
    if not isinstance(roots, dict) or not all(value is None or isinstance(value, str) for value in roots.values()):
        raise UserError(f"{path}: roots must map dataset names to folders (or null)")
    for name, by_split in options.items():
        if not isinstance(by_split, dict) or not all(isinstance(value, dict) for value in by_split.values()):
            raise UserError(f"{path}: options.{name} must map split names to keyword mappings")
    return DatasetConfig(
        path, {str(k).lower(): v for k, v in roots.items()}, {str(k).lower(): v for k, v in options.items()}
    )


def resolve_root(name: str, root_option: str | Path | None) -> Path | None:
    """The root a command should use for dataset `name`: the --root option if given, else the configured one."""
    if root_option is not None:
        return Path(root_option).expanduser()
    configured = load_dataset_config().roots.get(name.lower())
    return Path(configured).expanduser() if configured else None


def require_root(name: str, root_option: str | Path | None) -> Path:
    root = resolve_root(name, root_option)
    if root is None:
        raise UserError(f"--root: no folder given for {name} and none set under roots.{name} in {config_path()}")
    if not root.exists():
        where = "--root" if root_option is not None else f"roots.{name} in {config_path()}"
        raise UserError(f"{where}: {root} does not exist")
    return root


def dataset_options(name: str, split: str) -> dict[str, Any]:
    """Loader keywords configured for this dataset and split (RITM's training filters, for instance)."""
    return dict(load_dataset_config().options.get(name.lower(), {}).get(split, {}))
