"""Training configuration: YAML presets -> typed dataclasses, with `--set key.sub=value` overrides.

Every default lives here, so a preset lists only what it means to say and a checkpoint's JSON describes its run in
full. The defaults are the seed's SBD recipe (RITM/SimpleClick training settings).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isegprobe.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs" / "train"


@dataclass
class ClickEncoderConfig:
    """How click maps become tokens: `patch_embed` and `simple_vit` on the patch grid, `conv` at high resolution."""

    name: str = "patch_embed"
    depth: int = 6
    heads: int = 8
    mlp_dim: int = 2048
    dim_head: int = 64


@dataclass
class UpsamplerConfig:
    """`trainable`: fine-tune a learned upsampler's weights with the probe. `train_mode_when_frozen`: a frozen
    learned upsampler still switches to training mode while the probe trains (BatchNorm on batch statistics,
    dropout on), as the iSegProbe research code's `net.train()` does; off by default, since frozen means eval."""

    name: str = "bilinear"
    weights: str | None = None
    trainable: bool = False
    train_mode_when_frozen: bool = False


@dataclass
class HeadConfig:
    """`width: null` is the seed's full head (3x3 convs at the feature dim); a number adds a 1x1 reduction first."""

    width: int | None = None


@dataclass
class ModelConfig:
    click_encoder: ClickEncoderConfig = field(default_factory=ClickEncoderConfig)
    fusion: str = "after_backbone"
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    click_radius: int = 5
    # How bilinear resizes to the image place the patch grid: false aligns pixel centres (every token over its own
    # patch); true aligns the corner pixels, the seed's geometry, which its presets and imported probes keep so that
    # their numbers compare with the seed's.
    align_corners: bool = False


@dataclass
class OptimConfig:
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class ScheduleConfig:
    """MultiStep decay with milestones counted in epochs, as RITM steps its scheduler once per epoch."""

    epochs: int = 20
    milestones: list[int] = field(default_factory=lambda: [17, 20])
    gamma: float = 0.1
    max_iters: int | None = None


@dataclass
class AugmentConfig:
    """On-the-fly augmentations of the cached views (isegprobe.training.augment): `photometric` (brightness,
    contrast, RGB shift) and `shift_rotate` (+-3 degrees, 3 % shift; online training only), iSegProbe's recipe."""

    photometric: bool = False
    shift_rotate: bool = False


@dataclass
class DataConfig:
    """`size` is the working size the store must have been extracted at (null accepts any); `views` the store's
    views to train on, one drawn per image and epoch (null: all of them), e.g. [identity, crop1, crop2] for an
    ablation without flips. `featurizer` and `normalization`: what the store must have been extracted with (null
    accepts any), so that a preset that reproduces a model trains on that model's features.

    `sample_weights`: RITM's per-image scores (its sbd_samples_weights.pkl, or a CSV index,image,score); an epoch
    then draws as many images as the store holds, with replacement, with probability (1 - score) ** gamma.
    `keep_background_prob`: a drawn view that holds no object is drawn again (among the image's other views) unless
    a coin with this probability says keep it, as RITM redraws empty crops (its keep_background_prob 0.01).
    """

    size: int | None = 224
    batch_size: int = 8
    num_workers: int = 0
    views: list[str] | None = None
    featurizer: str | None = None
    normalization: str | None = None
    sample_weights: str | None = None
    sample_weights_gamma: float = 1.25
    keep_background_prob: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class SamplerConfig:
    """RITM's MultiPointSampler as SimpleClick trains on SBD."""

    max_points: int = 24
    prob_gamma: float = 0.8
    merge_objects_prob: float = 0.15
    max_merged_objects: int = 2
    expand_ratio: float = 0.1
    positive_erode_prob: float = 0.9
    positive_erode_iters: int = 3
    negative_bg_prob: float = 0.1
    negative_other_prob: float = 0.4
    negative_border_prob: float = 0.5
    min_object_area: int = 80


@dataclass
class ClicksConfig:
    """Iterative training clicks: 0..max_num_next_clicks no-grad passes, each adding one click on the error."""

    max_num_next_clicks: int = 3
    pred_threshold: float = 0.49


@dataclass
class LossConfig:
    """RITM's NormalizedFocalLossSigmoid."""

    alpha: float = 0.5
    gamma: float = 2.0


@dataclass
class LoggingConfig:
    every_steps: int = 25
    image_every_steps: int = 500
    num_images: int = 4
    tensorboard: bool = True
    wandb_project: str = "isegprobe"


@dataclass
class CheckpointConfig:
    """Checkpoints are written at every epoch end and at the end of the run; `every_steps` adds more in between."""

    every_steps: int | None = None


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    clicks: ClicksConfig = field(default_factory=ClicksConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0


def list_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def resolve_preset(source: str | Path) -> Path:
    """A YAML path as given, or a preset name such as `sbd_224` from the package's configs/train/."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{Path(str(source)).stem}.yaml"
    if path.suffix not in (".yaml", ".yml") and preset.is_file():
        return preset
    raise UserError(
        f"--config: no file {str(source)!r} and no preset of that name; presets: {', '.join(list_presets())}"
    )


def load_train_config(source: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file or preset `source`, then `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    if source is not None:
        path = resolve_preset(source)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise UserError(f"--config: {path} is not valid YAML: {error}") from error
        if loaded is not None and not isinstance(loaded, Mapping):
            raise UserError(f"--config: {path} must hold a mapping at the top level")
        data = dict(loaded or {})
    return train_config_from_dict(data, overrides)


def train_config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Rebuild a config from a (possibly partial) nested dict, e.g. one saved in a checkpoint's JSON."""
    merged = config_to_dict(TrainConfig())
    _merge_into(merged, data, prefix="")
    for override in overrides:
        _apply_override(merged, override)
    return _build(TrainConfig, merged, prefix="")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_to_yaml(config: TrainConfig) -> str:
    """The whole resolved config (defaults, preset and overrides together) as YAML that `--config` reads back."""
    header = "# The config this run trains with: `isegprobe train --config THIS_FILE ...` trains the same probe.\n"
    return header + yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _merge_into(base: dict[str, Any], update: Mapping[str, Any], prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise UserError(f"unknown config key {dotted!r}; known here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise UserError(f"config key {dotted!r} must be a mapping, got {value!r}")
            _merge_into(base[key], value, prefix=f"{dotted}.")
        else:
            base[key] = value


def _apply_override(merged: dict[str, Any], override: str) -> None:
    key, separator, raw_value = override.partition("=")
    key = key.strip()
    if not separator or not key:
        raise UserError(f"--set {override!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise UserError(f"--set {override!r}: the value is not a YAML scalar or list: {error}") from error
    *parents, leaf = key.split(".")
    update: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        update = {parent: update}
    _merge_into(merged, update, prefix="")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):
        dotted = f"{prefix}{item.name}"
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            values[item.name] = _build(hint, data[item.name], prefix=f"{dotted}.")
        else:
            values[item.name] = _coerce(data[item.name], hint, dotted)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(item, item_type, key) for item in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    type_name = getattr(hint, "__name__", str(hint))
    raise UserError(f"config key {key!r} must be {type_name}, got {value!r}")
