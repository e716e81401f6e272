"""Training configuration: what a config holds, as typed dataclasses with every default, range and choice.

`config_loading.py` reads YAML presets and `--set key.sub=value` overrides into them. Every default lives here, so a
preset lists only what it means to say and a checkpoint's JSON describes its run in full. The defaults are the SBD
recipe of the iSegProbe research code (arXiv 2505.02075; RITM/SimpleClick training settings). Every number has its
allowed range beside its default (`number`), checked when a config is built, so a value such as `optim.lr=inf` or
`schedule.epochs=-3` stops the command at once instead of training on nonsense; every key that takes a word has its
choices (`word_choices`), checked alike. Where presets are found and how their `base:` chains unfold:
isegprobe.presets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a numeric config key accepts (each item, for a list); NaN and infinities never."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_bound(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {_bound(self.high)}")
        return " and ".join(bounds)


def _bound(value: float) -> str:
    """An integer bound in full (the largest seed is 9223372036854775807, which `:g` rounds up to 9.22337e+18)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1)
OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)
SEED = Range(0, 2**63 - 1)  # what torch.manual_seed takes
# The largest working size: a view of it is 50 MiB of pixels, a shard of them gigabytes; the probes run at 224-672.
MAX_WORKING_SIZE = 4096
CLICK_SAMPLING = ("auto", "loader", "device")
PRELOAD = (True, False, "auto")


def word_choices() -> dict[str, tuple[Any, ...]]:
    """The values each key that takes a word accepts. The fusions, click encoders and upsamplers are known beside the
    parts they build, whose modules read this one's dataclasses: they are looked up when a config is checked (a
    module may have registered more by then), not when this module is imported."""
    from isegprobe.model import FUSIONS, list_click_encoders
    from isegprobe.upsamplers import list_upsamplers

    return {
        "model.fusion": FUSIONS,
        "model.upsampler.name": tuple(list_upsamplers()),
        "model.click_encoder.name": tuple(list_click_encoders()),
        "data.click_sampling": CLICK_SAMPLING,
        "data.preload": PRELOAD,
    }


def listed_choices(values: Sequence[Any]) -> str:
    """Choices as a config writes them: `true, false, auto`, not Python's `True, False, auto`."""
    return ", ".join(str(value).lower() if isinstance(value, bool) else str(value) for value in values)


def number(default: Any, allowed: Range) -> Any:
    """A numeric field (or list of numbers) with its default and allowed range."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"range": allowed})
    return field(default=default, metadata={"range": allowed})


@dataclass
class ClickEncoderConfig:
    """How click maps become tokens: `patch_embed` and `simple_vit` on the patch grid, `conv` at high resolution."""

    name: str = "patch_embed"
    # simple_vit's size; the bounds are far above any probe's and keep a typo from asking for terabytes
    depth: int = number(6, Range(1, 64))
    heads: int = number(8, Range(1, 64))
    mlp_dim: int = number(2048, Range(1, 16384))
    dim_head: int = number(64, Range(1, 1024))


@dataclass
class UpsamplerConfig:
    """`fine_tune`: train a learned upsampler's weights with the probe (one without learned weights, such as
    bilinear, has none to train). `train_mode_when_frozen`: a frozen learned upsampler still switches to training
    mode while the probe trains (BatchNorm on batch statistics, moving its running statistics, dropout on), as the
    iSegProbe research code's `net.train()` does; evaluation uses the authors' running statistics. Off by default,
    since frozen means eval."""

    name: str = "bilinear"
    weights: str | None = None
    fine_tune: bool = False
    train_mode_when_frozen: bool = False


@dataclass
class HeadConfig:
    """`width: null` is iSegProbe's full head (3x3 convs at the feature dim); a number adds a 1x1 reduction first."""

    width: int | None = number(None, AT_LEAST_ONE)


@dataclass
class ModelConfig:
    click_encoder: ClickEncoderConfig = field(default_factory=ClickEncoderConfig)
    fusion: str = "after_backbone"
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    click_radius: int = number(5, Range(1, 100))  # px at the working size; the research code's is 5
    # How bilinear resizes to the image place the patch grid: false aligns pixel centres (every token over its own
    # patch); true aligns the corner pixels, the iSegProbe research code's geometry, which the presets of its models
    # and the probes imported from it keep so that their numbers compare with its own.
    align_corners: bool = False
    # The probe's training arithmetic on CUDA: false is float32, as the research code trains (and as the CPU always
    # runs); true runs the probe's forward, an early-fusion featurizer's included, under bf16 autocast, faster on a
    # GPU but another rounding at every layer. Evaluation has its own rule (`evaluate --protocol`).
    mixed_precision: bool = False
    # Rounding as the iSegProbe research code's: true computes what that code's own model copies compute otherwise
    # as they do: a featurizer the probe runs itself (early fusion, --online, evaluation's online passes) as that code
    # loads it on the device (MaskCLIP float16 on CUDA, as OpenAI's clip.load leaves it there; DINOv2 and the ViT's
    # keys with attention written out instead of PyTorch's fused kernel), the attention of a simple_vit click
    # encoder written out too, LoftUp and FeatUp's JBU as their authors' forwards compute them, and that code's
    # channel orders (click maps stacked [previous mask, positive, negative], a ViT's keys read head minor). The
    # research presets set it; `evaluate --protocol iSegProbe` runs every probe so.
    research_precision: bool = False


@dataclass
class OptimConfig:
    """Adam (`torch.optim.Adam`): `lr` its learning rate (the schedule's milestones scale it), `betas` and `eps` its
    moment decays and the term its step divides by beside sqrt(v), `weight_decay` its L2 penalty."""

    lr: float = number(5e-5, POSITIVE)
    betas: list[float] = number([0.9, 0.999], Range(0, 1, high_open=True))
    eps: float = number(1e-8, POSITIVE)  # Adam divides by sqrt(v) + eps, and v is 0 where no gradient came yet
    weight_decay: float = number(0.0, NON_NEGATIVE)


@dataclass
class ScheduleConfig:
    """MultiStep decay with milestones counted in epochs, as RITM steps its scheduler once per epoch: the learning
    rate is multiplied by `gamma` at each of `milestones`. `max_iters` (optimizer steps) ends the run earlier than
    `epochs` would; null: the epochs decide."""

    epochs: int = number(20, AT_LEAST_ONE)
    milestones: list[int] = number([17, 20], NON_NEGATIVE)
    gamma: float = number(0.1, Range(0, 1, low_open=True))
    max_iters: int | None = number(None, NON_NEGATIVE)


@dataclass
class AugmentConfig:
    """On-the-fly augmentations of the cached views (isegprobe.training.augment): `photometric` (brightness,
    contrast, RGB shift) and `shift_rotate` (+-3 degrees, 3 % shift; online training only), iSegProbe's recipe."""

    photometric: bool = False
    shift_rotate: bool = False

    @property
    def enabled(self) -> bool:
        """Whether any augmentation runs: a sample is then made on the host, with NumPy and OpenCV."""
        return self.photometric or self.shift_rotate


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
    `preload`: read the training (and validation) store's entries in use into memory before the first step, for
    a fast GPU that would otherwise wait for the store's decoding; refused when they would not fit in memory, and
    with loader workers (each would hold a copy). `auto` (the default): on a GPU, when they fit and no loader
    workers are asked for; never on a CPU, whose step's arithmetic hides the reads.
    `num_workers`: DataLoader worker processes that read, decode and sample the batches beside the training process.
    `auto` (the default): on a GPU, up to 4 (fewer on a machine with fewer cores per torchrun rank)
    for a store read as training goes, none for one preloaded; none on a CPU, whose cores the step's arithmetic
    uses. Workers give the same batches as none.
    `click_sampling`: where each sample's target and initial clicks are drawn. `loader`: per image, in the data
    loader (its workers, if any); `device`: for the whole batch on the training device (training/batch_sampler.py),
    which spares a GPU run the per-image work of one CPU thread; `auto`: device on a GPU, loader otherwise. The
    draws are the same either way.
    """

    size: int | None = number(224, Range(1, MAX_WORKING_SIZE))
    batch_size: int = number(8, AT_LEAST_ONE)
    num_workers: int | str = number("auto", NON_NEGATIVE)
    views: list[str] | None = None
    featurizer: str | None = None
    normalization: str | None = None
    sample_weights: str | None = None
    sample_weights_gamma: float = number(1.25, NON_NEGATIVE)
    keep_background_prob: float = number(0.01, PROBABILITY)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preload: bool | str = "auto"
    click_sampling: str = "auto"


@dataclass
class SamplerConfig:
    """RITM's MultiPointSampler as SimpleClick trains on SBD: each sample's target object and first clicks.

    The target is one object of the view at least `min_object_area` pixels large (at the working size), or, with
    probability `merge_objects_prob`, 2 to `max_merged_objects` of them as one. Up to `max_points` positive and as
    many negative clicks follow, their counts drawn with weights `prob_gamma` ** count (below 1, few clicks are
    likelier). Positive clicks fall on the target eroded `positive_erode_iters` times by a 3x3 square (with
    probability `positive_erode_prob`; on the whole target if that leaves almost nothing), so they keep off its edge.
    Each negative click falls on the background (`negative_bg_prob`), on another object (`negative_other_prob`) or on
    a ring around the target `expand_ratio` * sqrt(its area) pixels wide (`negative_border_prob`); the three add up
    to 1.
    """

    # The upper bounds keep a step's work and memory finite (each sample holds max_points click rows; the weights
    # are prob_gamma to the power of a click count) with room far above any recipe's values.
    max_points: int = number(24, Range(1, 100))
    prob_gamma: float = number(0.8, Range(0, 10))
    merge_objects_prob: float = number(0.15, PROBABILITY)
    max_merged_objects: int = number(2, Range(2, 1000))
    expand_ratio: float = number(0.1, Range(0, 10))  # the negative ring's width, in multiples of sqrt(area)
    positive_erode_prob: float = number(0.9, PROBABILITY)
    positive_erode_iters: int = number(3, Range(0, MAX_WORKING_SIZE))
    negative_bg_prob: float = number(0.1, PROBABILITY)
    negative_other_prob: float = number(0.4, PROBABILITY)
    negative_border_prob: float = number(0.5, PROBABILITY)
    min_object_area: int = number(80, NON_NEGATIVE)


@dataclass
class ClicksConfig:
    """Iterative training clicks: each step draws a count from 0 to `max_num_next_clicks` and makes that many no-grad
    passes, each adding one click on a random pixel deep inside the larger error region (deeper than half its largest
    distance to the region's border, RITM's rule), and feeding its prediction back as the previous mask.
    `pred_threshold`: the probability above which a pixel counts as predicted object when the errors are found
    (RITM's 0.49)."""

    max_num_next_clicks: int = number(3, Range(0, 100))  # each a no-grad pass per step, as evaluate's at most 100
    pred_threshold: float = number(0.49, OPEN_UNIT)


@dataclass
class LossConfig:
    """RITM's NormalizedFocalLossSigmoid: the focal loss (`alpha` weighs the object's pixels against the background's,
    `gamma` how much the well-predicted pixels are discounted), its focal weights rescaled per image to add up to the
    number of pixels counted."""

    alpha: float = number(0.5, PROBABILITY)
    gamma: float = number(2.0, NON_NEGATIVE)


@dataclass
class LoggingConfig:
    """`every_steps`: how often the running means (loss, pixel BCE, IoU) are logged; `image_every_steps`: how often
    `num_images` prediction panels are; `tensorboard` writes both under the run's folder, and `wandb_project` names the
    W&B project when `train --wandb` logs there too."""

    every_steps: int = number(25, AT_LEAST_ONE)
    image_every_steps: int = number(500, AT_LEAST_ONE)
    num_images: int = number(4, AT_LEAST_ONE)
    tensorboard: bool = True
    wandb_project: str = "isegprobe"


@dataclass
class CheckpointConfig:
    """Checkpoints are written at every epoch end and at the end of the run; `every_steps` adds more in between."""

    every_steps: int | None = number(None, AT_LEAST_ONE)


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
    seed: int = number(0, SEED)
