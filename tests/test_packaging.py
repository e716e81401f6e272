"""setup.cfg lists its packages (isegprobe.configs lives in the top-level configs/, where find: cannot see it), so
the list must name every package in the tree, and the presets must exist once, in configs/."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_options() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser["options"]


def test_setup_cfg_lists_every_package_and_maps_the_presets() -> None:
    options = setup_options()
    listed = set(options["packages"].split())
    in_tree = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("isegprobe", "cache_tools")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert listed == in_tree | {"isegprobe.configs"}
    package_dir = dict(line.replace(" ", "").split("=") for line in options["package_dir"].split("\n") if line)
    assert package_dir == {"isegprobe.configs": "configs"}


def test_the_presets_live_only_in_the_top_level_configs_folder() -> None:
    assert (REPO / "configs").is_dir() and not (REPO / "configs").is_symlink()
    assert (REPO / "configs" / "__init__.py").is_file() and list((REPO / "configs" / "train").glob("*.yaml"))
    assert not (REPO / "isegprobe" / "configs").exists()
