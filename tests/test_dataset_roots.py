"""Dataset roots are the user's: $ISEGPROBE_DATASETS, else the XDG config file, else data/<folder> here; --root wins.
The loader options ship with the recipe, and a user's file may override them key by key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from isegprobe.commands.datasets import datasets
from isegprobe.data.roots import (
    CONFIG_ENV,
    dataset_options,
    load_dataset_config,
    options_source,
    require_root,
    resolve_root,
)
from isegprobe.errors import UserError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $ISEGPROBE_DATASETS, an empty XDG config folder, and the current directory in tmp_path: never the real
    ~/.config."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_without_a_user_file_each_dataset_is_looked_for_in_data(home: Path) -> None:
    config = load_dataset_config()
    assert not config.from_file and config.path == home / "config" / "isegprobe" / "datasets.yaml"
    assert resolve_root("GrabCut", None) == Path("data/GrabCut")
    assert resolve_root("pascalvoc", None) == Path("data/VOCdevkit/VOC2012")
    assert resolve_root("custom", None) is None, "your own data has no conventional folder"
    assert "the defaults data/<folder>" in config.roots_source
    with pytest.raises(UserError, match=r"data/SBD does not exist .*set roots\.sbd in .*config/isegprobe/datasets"):
        require_root("sbd", None)
    (home / "data" / "SBD").mkdir(parents=True)
    assert require_root("sbd", None) == Path("data/SBD")


def test_the_xdg_file_then_the_environment_variable_then_root_win(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = write_yaml(home / "config" / "isegprobe" / "datasets.yaml", {"roots": {"sbd": "/xdg/SBD"}})
    assert resolve_root("sbd", None) == Path("/xdg/SBD")
    assert resolve_root("grabcut", None) is None, "a user file lists every root it means; no data/ fallback"
    assert load_dataset_config().roots_source == str(xdg)
    named = write_yaml(home / "mine.yaml", {"roots": {"sbd": "~/SBD"}})
    monkeypatch.setenv(CONFIG_ENV, str(named))
    assert resolve_root("sbd", None) == Path("~/SBD").expanduser()
    assert load_dataset_config().roots_source == f"{named} (${CONFIG_ENV})"
    assert resolve_root("sbd", "elsewhere") == Path("elsewhere")
    with pytest.raises(UserError, match=r"^--root: elsewhere does not exist"):
        require_root("sbd", "elsewhere")


def test_a_relative_xdg_config_home_is_ignored(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative")
    monkeypatch.setenv("HOME", str(home / "user"))
    assert load_dataset_config().path == home / "user" / ".config" / "isegprobe" / "datasets.yaml"


def test_a_missing_or_malformed_user_file_is_named(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(home / "nowhere.yaml"))
    with pytest.raises(UserError, match=rf"\${CONFIG_ENV}: .*nowhere\.yaml is not a file \(expected a YAML file"):
        load_dataset_config()
    bad = write_yaml(home / "bad.yaml", {"root": {"sbd": "data/SBD"}})
    monkeypatch.setenv(CONFIG_ENV, str(bad))
    with pytest.raises(UserError, match=rf"{bad}: expected a mapping with the keys options and roots"):
        load_dataset_config()
    write_yaml(bad, {"roots": {"sbd": 3}})
    with pytest.raises(UserError, match="roots must map dataset names to folders"):
        load_dataset_config()


def test_shipped_options_apply_and_the_users_win_key_by_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dataset_options("sbd", "train") == {"min_object_area": 80, "buggy_mask_threshold": 0.08}
    assert dataset_options("sbd", "val") == {}
    assert options_source("sbd", "train").endswith("datasets.yaml")
    mine = write_yaml(home / "mine.yaml", {"roots": {}, "options": {"SBD": {"train": {"min_object_area": 10}}}})
    monkeypatch.setenv(CONFIG_ENV, str(mine))
    assert dataset_options("sbd", "train") == {"min_object_area": 10, "buggy_mask_threshold": 0.08}
    assert options_source("sbd", "train") == str(mine)
    assert options_source("lvis", "train") != str(mine)


def test_datasets_list_says_where_the_roots_come_from(home: Path) -> None:
    result = CliRunner().invoke(datasets, ["list"])
    assert result.exit_code == 0, result.output
    assert f"roots from the defaults data/<folder> under {home}" in result.output
    grabcut = next(line for line in result.output.splitlines() if line.startswith("grabcut "))
    assert "data/GrabCut" in grabcut and grabcut.endswith("missing")
