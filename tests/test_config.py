"""Training config: defaults = iSegProbe's SBD recipe, presets and their bases, `--set` overrides, and errors that name
the key or the file."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from isegprobe.cli import main
from isegprobe.config import SamplerConfig, TrainConfig
from isegprobe.config_loading import RenamedConfigKeyWarning, config_to_dict, load_train_config, train_config_from_dict
from isegprobe.errors import UserError
from isegprobe.model import FUSIONS, list_click_encoders
from isegprobe.presets import BASE_KEY, ConfigChoiceWarning, list_presets, preset_folder
from isegprobe.upsamplers import list_upsamplers
from isegprobe.yaml_text import load_yaml


def test_defaults_are_the_isegprobe_sbd_recipe() -> None:
    config = TrainConfig()
    assert (config.optim.lr, config.optim.betas, config.optim.eps) == (5e-5, [0.9, 0.999], 1e-8)
    assert (config.schedule.epochs, config.schedule.milestones, config.schedule.gamma) == (20, [17, 20], 0.1)
    assert (config.data.batch_size, config.data.size, config.data.keep_background_prob) == (8, 224, 0.01)
    assert config.sampler.min_object_area == 80, "RITM's min_object_area, on each crop"
    assert (config.loss.alpha, config.loss.gamma) == (0.5, 2.0)
    assert (config.sampler.max_points, config.sampler.prob_gamma, config.sampler.merge_objects_prob) == (24, 0.8, 0.15)
    assert config.clicks.max_num_next_clicks == 3
    assert config.model.click_radius == 5
    assert (config.model.fusion, config.model.click_encoder.name, config.model.head.width) == (
        "after_backbone",
        "patch_embed",
        None,
    )
    assert (config.model.click_encoder.depth, config.model.click_encoder.heads, config.model.click_encoder.mlp_dim) == (
        6,
        8,
        2048,
    )


def preset_text(name: str) -> str:
    return (preset_folder() / f"{name}.yaml").read_text()


def test_presets_load_and_say_which_head_they_use() -> None:
    assert set(list_presets()) == {
        "fast_cpu",
        "quickstart",
        "sbd_224",
        "sbd_448",
        "sbd_dinov2_patch-embed",
        "sbd_dinov2_simple-vit_noup",
        "sbd_maskclip_patch-embed_noup",
        "sbd_research",
        "sbd_vit_patch-embed_noup",
    }
    assert load_train_config("sbd_224") == TrainConfig()
    sbd_448 = load_train_config("sbd_448")
    assert sbd_448.data.size == 448 and sbd_448.model.head.width is None
    fast = load_train_config("fast_cpu")
    assert fast.model.head.width == 64 and fast.data.batch_size == 4
    for name in list_presets():
        assert "# Head:" in preset_text(name), name


def test_a_preset_says_only_what_differs_from_its_base() -> None:
    assert yaml.safe_load(preset_text("sbd_448")) == {"base": "sbd_224", "data": {"size": 448}}
    for name in list_presets():
        data = yaml.safe_load(preset_text(name))
        base = data.pop(BASE_KEY, None)
        if base is None:
            continue
        inherited = config_to_dict(load_train_config(base))
        for key, value in _leaves(data):
            assert _lookup(inherited, key) != value, f"{name}: {key} is {value!r} in its base {base} already"


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data[key]
    return data


def test_the_dinov2_patch_embed_preset_takes_its_upsampler_by_override() -> None:
    """One preset for the research code's five DINOv2 patch-embed configurations: the upsampler is an override, and
    a frozen learned one runs in training mode as the research code runs it."""
    bilinear = load_train_config("sbd_dinov2_patch-embed")
    assert (bilinear.model.upsampler.name, bilinear.model.fusion, bilinear.data.featurizer) == (
        "bilinear",
        "before_backbone",
        "dinov2_vits14",
    )
    lift = load_train_config("sbd_dinov2_patch-embed", ["model.upsampler.name=lift", "model.upsampler.weights=w.pth"])
    assert lift.model.upsampler.train_mode_when_frozen and lift.model.upsampler.weights == "w.pth"
    assert config_to_dict(lift)["data"] == config_to_dict(bilinear)["data"]


def test_a_preset_is_found_by_name_or_by_path() -> None:
    assert load_train_config(Path(str(preset_folder() / "fast_cpu.yaml"))) == load_train_config("fast_cpu")
    with pytest.raises(UserError, match="sbd_999"):
        load_train_config("sbd_999")
    with pytest.raises(UserError, match="no file 'sbd_224.yaml'"):
        load_train_config("sbd_224.yaml")


def test_a_preset_is_found_beside_a_folder_of_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`isegprobe quickstart` writes into ./quickstart and then trains the `quickstart` preset; a folder is never a
    config, so a folder of another name is still refused as a folder, and one of a preset's name hides nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "results").mkdir()
    assert load_train_config("quickstart").model.head.width == 64
    (tmp_path / "mine.yaml").write_text("base: quickstart\n")
    assert load_train_config("mine.yaml") == load_train_config("quickstart")
    with pytest.raises(UserError, match="results is a folder: name a YAML file in it, or a preset"):
        load_train_config("results")


def test_a_file_that_bears_a_presets_name_or_holds_nothing_is_read_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file `fast_cpu` in the current folder won over the preset, and an empty or comment-only file meant the
    defaults, each without a word."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast_cpu").write_text("optim: {lr: 0.5}\n")
    with pytest.warns(ConfigChoiceWarning, match="fast_cpu: the file .*fast_cpu is read, not the preset fast_cpu"):
        assert load_train_config("fast_cpu").optim.lr == 0.5
    (tmp_path / "empty.yaml").write_text("# to be filled in\n")
    with pytest.warns(ConfigChoiceWarning, match="empty.yaml holds no settings: the defaults apply"):
        assert load_train_config("empty.yaml") == load_train_config(None)


def test_bases_chain_from_a_file_to_presets_and_to_files_beside_it(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: fast_cpu\noptim:\n  lr: 1.0e-3\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "short.yaml").write_text("base: ../mine.yaml\nschedule:\n  max_iters: 5\n")
    config = load_train_config(tmp_path / "runs" / "short.yaml")
    assert config == load_train_config("fast_cpu", ["optim.lr=1e-3", "schedule.max_iters=5"])
    assert load_train_config("quickstart").model.head.width == 64, "quickstart -> fast_cpu -> sbd_224"


def test_a_base_cycle_or_an_unknown_base_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    cycle = r"b\.yaml: base 'a\.yaml' makes a cycle: \S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml$"
    with pytest.raises(UserError, match=cycle):
        load_train_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(UserError, match=r"self\.yaml: base 'self\.yaml' makes a cycle"):
        load_train_config(tmp_path / "self.yaml")
    (tmp_path / "lost.yaml").write_text("base: sbd_999\n")
    with pytest.raises(UserError, match=r"lost\.yaml: base: no file .*and no preset 'sbd_999'; presets: fast_cpu"):
        load_train_config(tmp_path / "lost.yaml")
    (tmp_path / "listed.yaml").write_text("base: [sbd_224]\n")
    with pytest.raises(UserError, match=r"listed\.yaml: base must be a preset name or a YAML path"):
        load_train_config(tmp_path / "listed.yaml")


def test_a_config_file_that_is_not_text_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "binary.yaml").write_bytes(bytes(range(128, 256)))
    with pytest.raises(UserError, match=r"binary\.yaml is not valid YAML: 'utf-8' codec can't decode"):
        load_train_config(str(tmp_path / "binary.yaml"))


def billion_laughs(levels: int = 9) -> str:
    """A list of nine lists of nine ... of nine strings, in a few hundred bytes of aliases."""
    names = "abcdefghij"
    lines = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"&{names[k]} [{', '.join([f'*{names[k - 1]}'] * 9)}]" for k in range(1, levels)]
    return f"[{', '.join(lines)}]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # 387 million strings once expanded: a message printing the value took all memory.
        (f"base: fast_cpu\nmodel: {billion_laughs()}\n", "more than 1000000 values once its aliases"),
        (f"base: fast_cpu\noptim:\n  lr: {billion_laughs()}\n", "more than 1000000 values once its aliases"),
        # A RecursionError traceback from PyYAML.
        ("optim:\n  lr: " + "[" * 100_000 + "]" * 100_000 + "\n", "is not valid YAML: nested too deeply"),
        # A TypeError traceback: the duplicate-key check hashed the key.
        ("? [a, b]\n: 1\n", "(?s)is not valid YAML: .*a key must be a plain value"),
        ("optim: {? {x: 1} : 2}\n", "(?s)is not valid YAML: .*a key must be a plain value"),
        # 90 MB of views took 262 s and 8 GB to refuse, the message holding every one of them.
        ("data:\n  views: [" + ", ".join(["identity"] * 150_000) + "]\n", "characters, more than a config holds"),
    ],
    ids=["alias-bomb-mapping", "alias-bomb-number", "deep", "list-key", "mapping-key", "huge"],
)
def test_hostile_yaml_is_refused_without_spending_memory(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "hostile.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_train_config(str(tmp_path / "hostile.yaml"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"seed={10**400}", r"'seed' must be a finite number >= 0 and <= 9223372036854775807, got 1000.*\.\.\.0+$"),
        (f"optim.lr={10**400}", r"'optim.lr' must be float, got 1000.*\.\.\.0+$"),  # an OverflowError traceback
        (
            "optim.betas=[" + ", ".join(["2"] * 100_000) + "]",
            r"finite numbers >= 0 and < 1, got \[2.0, 2.0, .*\]$",
        ),
    ],
    ids=["seed", "lr", "betas"],
)
def test_values_far_out_of_range_are_refused_and_shown_cut_short(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as refused:
        load_train_config("fast_cpu", [override])
    assert len(str(refused.value)) < 300


def test_an_override_through_a_value_names_the_override_not_the_preset() -> None:
    """`--set optim.lr.x=1` was blamed on sbd_224.yaml, the preset that gave optim.lr its value."""
    with pytest.raises(UserError, match=r"^--set 'optim.lr.x=1': optim.lr is a value, not a group of keys"):
        load_train_config("fast_cpu", ["optim.lr.x=1"])


def test_an_argument_that_is_not_utf8_is_refused_before_any_command_runs(tmp_path: Path) -> None:
    """A path of Latin-1 bytes crashed every command that records its command line (a UnicodeEncodeError
    traceback), after making its folder."""
    out = os.fsdecode(os.fsencode(tmp_path) + b"/run\xe9")
    result = CliRunner().invoke(main, ["train", "--config", "fast_cpu", "--out", out, "--max-iters", "1"])
    assert result.exit_code == 2
    assert "the argument b'" in result.output and "run\\xe9' is not UTF-8 text" in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_a_key_written_twice_is_refused_where_yaml_would_keep_the_last(tmp_path: Path) -> None:
    (tmp_path / "twice.yaml").write_text("base: quickstart\noptim:\n  lr: 1.0e-3\n  lr: 1.0e-4\n")
    with pytest.raises(UserError, match=r"(?s)twice\.yaml is not valid YAML: .*the key 'lr' is written twice"):
        load_train_config(str(tmp_path / "twice.yaml"))


def test_merge_keys_read_as_yaml_means_them_and_their_keys_may_be_written_over(tmp_path: Path) -> None:
    (tmp_path / "merged.yaml").write_text(
        "base: quickstart\nshared: &adam {lr: 1.0e-3, eps: 1.0e-6}\noptim:\n  <<: *adam\n  lr: 2.0e-3\n"
    )
    with pytest.raises(UserError, match="unknown config key 'shared'"):  # the anchor's own key is still a key
        load_train_config(str(tmp_path / "merged.yaml"))
    (tmp_path / "merged.yaml").write_text("base: quickstart\noptim: &adam\n  eps: 1.0e-6\n  lr: 1.0e-3\n")
    assert load_train_config(str(tmp_path / "merged.yaml")).optim.eps == 1e-6
    assert load_yaml("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n")["b"] == {"x": 3, "y": 2}


def test_values_read_as_they_look_not_as_yaml_1_1_types_them() -> None:
    """YAML 1.1 (PyYAML's) reads 1:30 as 90, 017 as 15, 2024-06-01 as a date and off as false."""
    assert load_train_config("quickstart", ["logging.wandb_project=2024-06-01"]).logging.wandb_project == "2024-06-01"
    assert load_train_config("quickstart", ["logging.wandb_project=off"]).logging.wandb_project == "off"
    for override, message in (
        ("seed=1:30", "'seed' must be int, got '1:30'"),
        ("seed=017", "'seed' must be int, got '017'"),
        ("logging.tensorboard=off", "'logging.tensorboard' must be bool, got 'off'"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            load_train_config("quickstart", [override])
    assert load_yaml("[0x10, 0b11, 1.5, .inf, true, null, 1e-4]") == [16, 3, 1.5, float("inf"), True, None, "1e-4"]


def test_a_bad_key_in_a_base_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("optim:\n  lrr: 1.0\n")
    (tmp_path / "child.yaml").write_text("base: typo.yaml\n")
    with pytest.raises(UserError, match=r"typo\.yaml: unknown config key 'optim\.lrr'"):
        load_train_config(tmp_path / "child.yaml")


def test_overrides_are_parsed_as_yaml_scalars() -> None:
    config = load_train_config(
        "sbd_224",
        [
            "optim.lr=1e-4",
            "model.head.width=64",
            "schedule.milestones=[5, 8]",
            "schedule.max_iters=300",
            "model.upsampler.weights=/weights/loftup.pth",
            "logging.tensorboard=false",
            "model.upsampler.name=identity",
        ],
    )
    assert config.optim.lr == 1e-4 and isinstance(config.optim.lr, float)
    assert config.model.head.width == 64
    assert config.schedule.milestones == [5, 8]
    assert config.schedule.max_iters == 300
    assert config.model.upsampler.weights == "/weights/loftup.pth"
    assert config.logging.tensorboard is False
    assert config.model.upsampler.name == "identity"
    assert load_train_config("fast_cpu", ["model.head.width=null"]).model.head.width is None


def test_unknown_keys_are_errors_that_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'optim.lrr'"):
        load_train_config("sbd_224", ["optim.lrr=1e-4"])
    with pytest.raises(UserError, match="'model.head.depth'"):
        load_train_config(None, ["model.head.depth=3"])
    preset = tmp_path / "typo.yaml"
    preset.write_text("model:\n  upsampler:\n    nmae: bilinear\n")
    with pytest.raises(UserError, match="'model.upsampler.nmae'"):
        load_train_config(preset)


def test_values_of_the_wrong_type_are_errors_that_name_the_key() -> None:
    with pytest.raises(UserError, match="'data.batch_size'"):
        load_train_config(None, ["data.batch_size=eight"])
    with pytest.raises(UserError, match="'optim.lr'"):
        load_train_config(None, ["optim.lr=true"])
    with pytest.raises(UserError, match="'model.head'"):
        load_train_config(None, ["model.head=64"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        load_train_config(None, ["optim.lr"])


@pytest.mark.parametrize(
    ("key", "value", "choices"),
    [
        ("model.upsampler.name", "foo", ", ".join(list_upsamplers())),
        ("model.fusion", "bar", ", ".join(FUSIONS)),
        ("model.click_encoder.name", "mlp", ", ".join(list_click_encoders())),
        ("data.click_sampling", "host", "auto, loader, device"),
        ("data.preload", "always", "true, false, auto"),
    ],
    ids=["upsampler", "fusion", "click-encoder", "click-sampling", "preload"],
)
def test_a_word_outside_its_choices_is_refused_naming_the_key_the_value_and_the_choices(
    tmp_path: Path, key: str, value: str, choices: str
) -> None:
    """`--show-config --set model.upsampler.name=foo` printed the config and exited 0, and a YAML file with it loaded:
    only the training refused the unknown upsampler, when it built the probe."""
    message = f"config key '{key}' must be one of {choices}, got '{value}'"
    shown = CliRunner().invoke(main, ["train", "--show-config", "--config", "quickstart", "--set", f"{key}={value}"])
    assert shown.exit_code == 1 and message in shown.output, shown.output
    nested: object = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    (tmp_path / "word.yaml").write_text(yaml.safe_dump({"base": "quickstart", **nested}))
    with pytest.raises(UserError, match=f"^--config: .*word\\.yaml: {re.escape(message)}$"):
        load_train_config(tmp_path / "word.yaml")


def test_a_word_in_another_case_is_kept_in_lower_case() -> None:
    """`model.upsampler.name=Bilinear` trained bilinear, as names are read in any case, but the run recorded
    `Bilinear`, and its labels then differed from those of the `bilinear` runs."""
    config = load_train_config(
        "quickstart",
        ["model.upsampler.name=Bilinear", "model.fusion=After_Backbone", "model.click_encoder.name=SIMPLE_VIT"],
    )
    assert (config.model.upsampler.name, config.model.fusion, config.model.click_encoder.name) == (
        "bilinear",
        "after_backbone",
        "simple_vit",
    )
    assert load_train_config("quickstart", ["data.preload=Auto"]).data.preload == "auto"


def test_the_old_name_of_the_upsampler_fine_tune_key_still_loads(tmp_path: Path) -> None:
    """`model.upsampler.trainable` is now `fine_tune`: configs saved with the old name (YAML files, run folders,
    checkpoints) and `--set` with it load as before, with a warning that names the new key."""
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  upsampler:\n    name: lift\n    trainable: true\n")
    with pytest.warns(RenamedConfigKeyWarning, match="'model.upsampler.fine_tune'"):
        assert load_train_config(old).model.upsampler.fine_tune is True
    with pytest.warns(RenamedConfigKeyWarning):
        assert load_train_config(None, ["model.upsampler.trainable=true"]).model.upsampler.fine_tune is True
    saved = config_to_dict(TrainConfig())
    saved["model"]["upsampler"]["trainable"] = saved["model"]["upsampler"].pop("fine_tune")
    with pytest.warns(RenamedConfigKeyWarning):
        assert train_config_from_dict(saved) == TrainConfig()
    both = {"model": {"upsampler": {"trainable": True, "fine_tune": False}}}
    with pytest.raises(UserError, match="give only 'model.upsampler.fine_tune'"):
        train_config_from_dict(both)


def test_a_config_survives_its_dict_form() -> None:
    config = load_train_config("fast_cpu", ["schedule.max_iters=7", "model.click_encoder.name=simple_vit"])
    assert train_config_from_dict(config_to_dict(config)) == config


def test_show_config_lists_every_key_with_what_it_takes_as_yaml_that_reads_back(tmp_path: Path) -> None:
    shown = CliRunner().invoke(main, ["train", "--show-config", "--config", "sbd_224", "--set", "optim.lr=1e-4"])
    assert shown.exit_code == 0, shown.output
    assert "\n  click_radius: 5  # >= 1 and <= 100\n" in shown.output
    assert "\n    name: bilinear  # one of anyup, bicubic, bilinear, featup_jbu, " in shown.output
    assert "\n  num_workers: auto  # >= 0, or auto\n" in shown.output
    # Each section says what its keys do, above it: the sampler's otherwise unexplained keys included.
    sampler = shown.output.split("\nsampler:\n")[0].rsplit("\n# RITM's MultiPointSampler", 1)[1]
    assert all(f"`{key}`" in " ".join(sampler.split()) for key in dataclasses.asdict(SamplerConfig()))
    assert "\n  # How click maps become tokens:" in shown.output, "a nested section's, indented with it"
    assert max(len(line) for line in shown.output.splitlines() if line.lstrip().startswith("#")) <= 120
    (tmp_path / "shown.yaml").write_text(shown.output)
    assert load_train_config(tmp_path / "shown.yaml") == load_train_config("sbd_224", ["optim.lr=1e-4"])
