"""Where each dataset lives on this machine, and the loader options the recipe gives each dataset and split.

Roots are a user setting, so none ship with the package. They come from the user's datasets.yaml: the file
`$ISEGPROBE_DATASETS` names if set, else `$XDG_CONFIG_HOME/isegprobe/datasets.yaml` (~/.config/isegprobe/) if it
exists; a dataset the file does not name (or every dataset, without a file) is looked for in `data/<its folder>`
under the current directory, where `isegprobe datasets download NAME --to data` puts it. A --root option always wins.
In the file, `null` means no root, `~` is expanded and relative roots are taken from the current directory. The
loader options (RITM's SBD training filters, ...) are part of the recipe and ship in isegprobe.configs'
datasets.yaml; an `options:` mapping of the same shape in the user's file wins key by key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from isegprobe.data.catalog import BUILTIN, CATALOG, dataset_facts, refuse_a_builtin_root
from isegprobe.errors import DatasetLayoutError, UserError
from isegprobe.home_paths import expand_home
from isegprobe.yaml_text import load_yaml

CONFIG_ENV = "ISEGPROBE_DATASETS"
DATA_DIR = Path("data")
SHIPPED_OPTIONS = resources.files("isegprobe.configs") / "datasets.yaml"

Options = dict[str, dict[str, dict[str, Any]]]  # dataset -> split -> keyword -> value


@dataclass(frozen=True)
class DatasetConfig:
    path: Path  # the user's datasets.yaml: the one read, or where one would be read
    from_file: bool  # whether that file exists
    named_by_env: bool  # whether $ISEGPROBE_DATASETS named it
    user_roots: dict[str, str | None]  # the roots the file sets (null: none)
    options: Options  # the shipped options with the user's on top
    user_options: frozenset[tuple[str, str]]  # the (dataset, split) pairs whose options the user's file sets

    def root(self, name: str) -> str | None:
        """`name`'s root: the file's entry if it has one, else the data/<folder> default."""
        name = name.lower()
        return self.user_roots[name] if name in self.user_roots else default_root(name)

    def root_origin(self, name: str) -> str:
        return "file" if name.lower() in self.user_roots else "default"

    @property
    def roots_source(self) -> str:
        """Where the roots come from, for `datasets list`."""
        defaults = f"{DATA_DIR}/<folder> under {Path.cwd()}"
        if not self.from_file:
            return f"{defaults} (no {self.path})"
        named = f" (${CONFIG_ENV})" if self.named_by_env else ""
        return f"{self.path}{named}, else {defaults}"

    def options_source(self, name: str, split: str) -> str:
        return str(self.path if (name.lower(), split) in self.user_options else SHIPPED_OPTIONS)


def user_config_path() -> tuple[Path, bool]:
    """The user's datasets.yaml, and whether `$ISEGPROBE_DATASETS` named it (then it must exist)."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        return expand_home(named), True
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", ""))
    if not config_home.is_absolute():  # unset, empty or relative: the XDG default
        config_home = Path.home() / ".config"
    return config_home / "isegprobe" / "datasets.yaml", False


def default_root(name: str) -> str | None:
    """The dataset's conventional folder under the current directory (`datasets download NAME --to data`)."""
    facts = CATALOG.get(name.lower())
    return str(DATA_DIR / facts.folder) if facts is not None and facts.folder else None


def load_dataset_config() -> DatasetConfig:
    path, named_by_env = user_config_path()
    if named_by_env and not path.is_file():
        raise UserError(f"${CONFIG_ENV}: {path} is not a file (expected a YAML file with roots: NAME: FOLDER)")
    options = _read(SHIPPED_OPTIONS, {"options"})["options"]
    if not path.is_file():
        return DatasetConfig(path, False, False, {}, options, frozenset())
    user = _read(path, {"roots", "options"})
    user_options = set()
    for name, by_split in user["options"].items():
        for split, keywords in by_split.items():
            options.setdefault(name, {}).setdefault(split, {}).update(keywords)
            user_options.add((name, split))
    return DatasetConfig(path, True, named_by_env, user["roots"], options, frozenset(user_options))


def _read(path: Path | Traversable, keys: set[str]) -> dict[str, Any]:
    """`path`'s mapping with the given top-level keys (each missing one empty), checked for shape."""
    try:
        data = load_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    data = {} if data is None else data  # an empty file
    if not isinstance(data, dict) or set(data) - keys:
        raise UserError(f"{path}: expected a mapping with the keys {' and '.join(sorted(keys))}")
    roots, options = data.get("roots") or {}, data.get("options") or {}
    if not isinstance(roots, dict) or not all(value is None or isinstance(value, str) for value in roots.values()):
        raise UserError(f"{path}: roots must map dataset names to folders (or null)")
    if not isinstance(options, dict):
        raise UserError(f"{path}: options must map dataset names to splits")
    for name, by_split in options.items():
        if not isinstance(by_split, dict) or not all(isinstance(value, dict) for value in by_split.values()):
            raise UserError(f"{path}: options.{name} must map split names to keyword mappings")
    for section, names in (("roots", roots), ("options", options)):
        _refuse_unknown_datasets(path, section, names)
        _refuse_names_twice_in_other_case(path, section, names)
    return {
        "roots": {str(name).lower(): value for name, value in roots.items()},
        "options": {
            str(name).lower(): {str(split): dict(keywords) for split, keywords in by_split.items()}
            for name, by_split in options.items()
        },
    }


def _refuse_names_twice_in_other_case(path: Path | Traversable, section: str, names: dict[Any, Any]) -> None:
    """Dataset names are read in any case, so `grabcut` and `GrabCut` are one dataset: the later one replaced the
    earlier without a word, where the same name written twice is refused as YAML."""
    seen: dict[str, Any] = {}
    for name in names:
        lowered = str(name).lower()
        if lowered in seen:
            raise UserError(f"{path}: {section} names dataset {lowered} twice ({seen[lowered]} and {name}); keep one")
        seen[lowered] = name


def _refuse_unknown_datasets(path: Path | Traversable, section: str, names: dict[Any, Any]) -> None:
    """A misspelled dataset under roots or options was ignored, and the dataset read from its default folder."""
    for name in names:
        if str(name).lower() not in CATALOG:
            close = difflib.get_close_matches(str(name).lower(), sorted(CATALOG), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(CATALOG))}"
            raise UserError(f"{path}: {section}.{name} names no dataset; {hint}")


def resolve_root(name: str, root_option: str | Path | None) -> Path | None:
    """The root a command should use for dataset `name`: the --root option if given, else the configured one."""
    if root_option is not None:
        return expand_home(root_option)
    configured = load_dataset_config().root(name)
    return expand_home(configured) if configured else None


def require_root(name: str, root_option: str | Path | None) -> Path:
    """`resolve_root`'s folder, which must exist; the error says where the root came from, what the folder should
    hold, and how to set one."""
    root = resolve_root(name, root_option)
    if root is not None and root.exists():
        return root
    holds = dataset_facts(name).folder_holds
    expected = f"expected {name}'s folder, which holds {holds}" if holds else f"expected {name}'s folder"
    if root_option is not None:
        raise UserError(f"--root {root} does not exist ({expected})")
    config = load_dataset_config()
    if config.root_origin(name) == "file":
        if root is None:
            raise UserError(f"--root: no folder given for {name} and none set under roots.{name} in {config.path}")
        raise UserError(f"roots.{name} in {config.path}: {root} does not exist ({expected})")
    if root is None:
        raise UserError(
            f"--root: no folder given for {name}, which has no default; pass --root DIR or set roots.{name} in "
            f"{config.path}"
        )
    raise UserError(
        f"{root} does not exist ({name}'s default folder, under {Path.cwd()}; {expected}); pass --root DIR or set "
        f"roots.{name} in {config.path}"
    )


def dataset_root(name: str, root_option: str | Path | None) -> Path | None:
    """The folder every command reads dataset `name` from: none for the built-in scenes, which ship in the package;
    `require_root`'s for any other, so that a missing folder is told alike everywhere, with where its path came from
    (--root, the user's datasets.yaml or the data/ default) and how to give another. An unknown name is refused
    first, as unknown."""
    if dataset_facts(name).name == BUILTIN:
        refuse_a_builtin_root(root_option)
        return None
    return require_root(name, root_option)


@contextmanager
def root_origin_told(name: str, root_option: str | Path | None) -> Iterator[None]:
    """Around reading dataset `name` from `dataset_root`'s folder: a folder that lacks the dataset's layout is told,
    as a missing one is, with where its path came from (--root, the user's datasets.yaml, the data/ default) and how
    to give another; the loader itself knows only the folder."""
    try:
        yield
    except DatasetLayoutError as error:
        if root_option is not None:
            raise
        config = load_dataset_config()
        if config.root_origin(name) == "file":
            raise UserError(f"{error.root} (roots.{name} in {config.path}): {error.expected}") from None
        raise UserError(
            f"{error.root} ({name}'s default folder, under {Path.cwd()}): {error.expected}; pass --root DIR or set "
            f"roots.{name} in {config.path}"
        ) from None


def dataset_options(name: str, split: str) -> dict[str, Any]:
    """Loader keywords for this dataset and split (RITM's training filters, for instance)."""
    return dict(load_dataset_config().options.get(name.lower(), {}).get(split, {}))


def options_source(name: str, split: str) -> str:
    """The file that sets `name`'s options for `split`, for error messages."""
    return load_dataset_config().options_source(name, split)
