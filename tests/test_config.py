"""Training config: defaults = the seed's SBD recipe, presets, `--set` overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from isegprobe.config import (
    PRESET_DIR,
    TrainConfig,
    config_to_dict,
    list_presets,
    load_train_config,
    train_config_from_dict,
)
from isegprobe.errors import UserError


def test_defaults_are_the_seed_sbd_recipe() -> None:
    config = TrainConfig()
    assert (config.optim.lr, config.optim.betas, config.optim.eps) == (5e-5, [0.9, 0.999], 1e-8)
    assert (config.schedule.epochs, config.schedule.milestones, config.schedule.gamma) == (20, [17, 20], 0.1)
    assert (config.data.batch_size, config.data.size) == (8, 224)
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


def test_presets_load_and_say_which_head_they_use() -> None:
    assert {"sbd_224", "sbd_448", "fast_cpu"} <= set(list_presets())
    assert load_train_config("sbd_224") == TrainConfig()
    sbd_448 = load_train_config("sbd_448")
    assert sbd_448.data.size == 448 and sbd_448.model.head.width is None
    fast = load_train_config("fast_cpu")
    assert fast.model.head.width == 64 and fast.data.batch_size == 4
    for name in list_presets():
        assert "# Head:" in (PRESET_DIR / f"{name}.yaml").read_text(), name


def test_a_preset_is_found_by_name_or_by_path() -> None:
    assert load_train_config(PRESET_DIR / "fast_cpu.yaml") == load_train_config("fast_cpu")
    with pytest.raises(UserError, match="sbd_999"):
        load_train_config("sbd_999")


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


def test_a_config_survives_its_dict_form() -> None:
    config = load_train_config("fast_cpu", ["schedule.max_iters=7", "model.click_encoder.name=simple_vit"])
    assert train_config_from_dict(config_to_dict(config)) == config
