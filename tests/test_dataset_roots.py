"""Dataset roots are the user's: $ISEGPROBE_DATASETS's file, else the XDG config file; a dataset the file does not
name is looked for in data/<folder> here; --root wins. The loader options ship with the recipe, and a user's file may
override them key by key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dataset_trees import box, write_image, write_mask

from isegprobe.cli import main
from isegprobe.commands.datasets import datasets
from isegprobe.data import create_dataset
from isegprobe.data.roots import (
    CONFIG_ENV,
    dataset_options,
    load_dataset_config,
    options_source,
    require_root,
    resolve_root,
)
from isegprobe.demo.catalog import DatasetCatalog
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
    assert config.roots_source == f"data/<folder> under {home} (no {config.path})"
    with pytest.raises(UserError, match=r"data/SBD does not exist .*set roots\.sbd in .*config/isegprobe/datasets"):
        require_root("sbd", None)
    (home / "data" / "SBD").mkdir(parents=True)
    assert require_root("sbd", None) == Path("data/SBD")


def test_the_xdg_file_then_the_environment_variable_then_root_win(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = write_yaml(home / "config" / "isegprobe" / "datasets.yaml", {"roots": {"sbd": "/xdg/SBD", "davis": None}})
    assert resolve_root("sbd", None) == Path("/xdg/SBD")
    assert resolve_root("grabcut", None) == Path("data/GrabCut"), "a dataset the file does not name: its default"
    assert resolve_root("davis", None) is None, "null: no root"
    with pytest.raises(UserError, match=rf"no folder given for davis and none set under roots\.davis in {xdg}"):
        require_root("davis", None)
    with pytest.raises(UserError, match=rf"^roots\.sbd in {xdg}: /xdg/SBD does not exist"):
        require_root("sbd", None)
    assert load_dataset_config().roots_source == f"{xdg}, else data/<folder> under {home}"
    named = write_yaml(home / "mine.yaml", {"roots": {"sbd": "~/SBD"}})
    monkeypatch.setenv(CONFIG_ENV, str(named))
    assert resolve_root("sbd", None) == Path("~/SBD").expanduser()
    assert resolve_root("davis", None) == Path("data/DAVIS"), "the XDG file is not read then"
    assert load_dataset_config().roots_source.startswith(f"{named} (${CONFIG_ENV}), else")
    assert resolve_root("sbd", "elsewhere") == Path("elsewhere")
    holds = r"img and inst and train\.txt or img and inst and val\.txt"
    with pytest.raises(
        UserError, match=rf"^--root elsewhere does not exist \(expected sbd's folder, which holds {holds}\)"
    ):
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
    bad.write_text("[]\n")  # a list: it was read as an empty file
    with pytest.raises(UserError, match=rf"{bad}: expected a mapping with the keys options and roots"):
        load_dataset_config()
    write_yaml(bad, {"roots": {"grabcutt": "data/GrabCut"}})  # it was ignored, GrabCut read from its default folder
    with pytest.raises(UserError, match=r"roots\.grabcutt names no dataset; did you mean grabcut\?"):
        load_dataset_config()
    write_yaml(bad, {"options": {"sdb": {"train": {}}}})
    with pytest.raises(UserError, match=r"options\.sdb names no dataset; did you mean sbd\?"):
        load_dataset_config()
    write_yaml(bad, {"roots": {"grabcut": "data/A", "GrabCut": "data/B"}})  # B was read for grabcut, unsaid
    with pytest.raises(UserError, match=r"roots names dataset grabcut twice \(GrabCut and grabcut\); keep one"):
        load_dataset_config()


def test_shipped_options_apply_and_the_users_win(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dataset_options("sbd", "train") == {"buggy_mask_threshold": 0.08}
    assert dataset_options("sbd", "val") == {}
    assert options_source("sbd", "train").endswith("datasets.yaml")
    mine = write_yaml(home / "mine.yaml", {"roots": {}, "options": {"SBD": {"train": {"buggy_mask_threshold": 0.1}}}})
    monkeypatch.setenv(CONFIG_ENV, str(mine))
    assert dataset_options("sbd", "train") == {"buggy_mask_threshold": 0.1}
    assert options_source("sbd", "train") == str(mine)
    assert options_source("lvis", "train") != str(mine)


def test_datasets_list_says_where_each_root_comes_from(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def row(output: str, name: str) -> list[str]:
        return next(line for line in output.splitlines() if line.startswith(f"{name} ")).split()

    result = CliRunner().invoke(datasets, ["list"])
    assert result.exit_code == 0, result.output
    assert f"roots from data/<folder> under {home} (no {home / 'config'}" in result.output
    assert row(result.output, "grabcut")[-3:] == ["data/GrabCut", "default", "missing"]
    assert row(result.output, "custom")[-4:] == ["-", "default", "not", "set"]
    (home / "SBD").mkdir()
    monkeypatch.setenv(CONFIG_ENV, str(write_yaml(home / "mine.yaml", {"roots": {"sbd": str(home / "SBD")}})))
    result = CliRunner().invoke(datasets, ["list"])
    assert f"roots from {home / 'mine.yaml'} (${CONFIG_ENV}), else data/<folder>" in result.output
    assert row(result.output, "sbd")[-5:] == [str(home / "SBD"), "file", "layout", "not", "found"]
    assert row(result.output, "grabcut")[-2:] == ["default", "missing"]


def test_every_command_that_reads_a_dataset_tells_a_missing_folder_alike_and_reads_the_default(home: Path) -> None:
    """extract-features, evaluate --online, the demo and datasets check all find a dataset's folder the same way
    (the demo took only --root before), and say the same when it is missing."""
    missing = (
        rf"data/GrabCut does not exist \(grabcut's default folder, under {home}; expected grabcut's folder, which "
        r"holds data_GT and boundary_GT\); pass --root DIR"
    )
    extract = ["extract-features", "--dataset", "grabcut", "--featurizer", "vit_tiny_patch16_224", "--size", "32"]
    result = CliRunner().invoke(main, [*extract, "--out", str(home / "cache")])
    assert result.exit_code == 1 and re.search(missing, result.output), result.output
    with pytest.raises(UserError, match=missing):
        DatasetCatalog.from_options("grabcut", None, "test")
    with pytest.raises(UserError, match=r"--root: no folder given for custom, which has no default; pass --root DIR"):
        DatasetCatalog.from_options("custom", None, "test")

    for stem in ("a", "b"):
        write_image(home / "data" / "GrabCut" / "data_GT" / f"{stem}.jpg")
        write_mask(home / "data" / "GrabCut" / "boundary_GT" / f"{stem}.bmp", box(24, 32, 2, 2, 9, 9))
    assert DatasetCatalog.from_options("grabcut", None, "test").names() == ["a", "b"]
    assert len(DatasetCatalog.from_options("builtin", None, "test").names()) == 12


def test_a_root_given_for_the_builtin_scenes_is_refused(home: Path) -> None:
    """It was ignored: `datasets check builtin --root FOLDER` checked the scenes and said nothing of FOLDER."""
    result = CliRunner().invoke(datasets, ["check", "builtin", "--root", str(home / "GrabCut")])
    assert result.exit_code == 1
    assert "the builtin scenes are made by code and read no folder; leave --root out" in result.output
    with pytest.raises(UserError, match="builtin scenes are made by code"):
        create_dataset("builtin", home, "test")


def test_a_folder_without_the_datasets_layout_is_told_with_where_its_path_came_from(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader knows only the folder; the message must name the setting to change, as for a missing folder."""

    def refusal(*arguments: str) -> str:
        result = CliRunner().invoke(main, ["datasets", "check", "grabcut", *arguments])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        return " ".join(result.output.split())

    lacking = "expected the GrabCut layout with data_GT/ inside, not found"
    (home / "data" / "GrabCut").mkdir(parents=True)
    config = home / "config" / "isegprobe" / "datasets.yaml"
    said = refusal()
    hint = f"pass --root DIR or set roots.grabcut in {config}"
    assert f"data/GrabCut (grabcut's default folder, under {home}): {lacking}; {hint}" in said
    assert "--root data" not in said
    empty = home / "empty"
    empty.mkdir()
    mine = write_yaml(home / "mine.yaml", {"roots": {"grabcut": str(empty)}})
    monkeypatch.setenv(CONFIG_ENV, str(mine))
    assert f"{empty} (roots.grabcut in {mine}): {lacking}" in refusal()
    assert f"--root {empty}: {lacking}" in refusal("--root", str(empty))
    with pytest.raises(UserError, match=rf"^{re.escape(str(empty))} \(roots\.grabcut in .*mine\.yaml\): expected"):
        DatasetCatalog.from_options("grabcut", None, "test")
