"""What a training config asks of its store: the working size, and the featurizer and input normalization a preset
that reproduces a published model was made for; and what a store's labels say of how they were made."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from isegprobe.cache.schema import check_same_featurizer, identity_value, store_fingerprint
from isegprobe.cache.store import FeatureStore
from isegprobe.config import DataConfig, UpsamplerConfig
from isegprobe.errors import UserError
from isegprobe.featurizers.normalization import IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS


def check_store_fits(
    data: DataConfig,
    preprocessing: dict[str, Any],
    provenance: dict[str, Any] | None,
    views: Sequence[str] | None = None,
) -> None:
    """Refuse a store extracted otherwise than `data.size`, `data.featurizer` and `data.normalization` say, or
    without the `data.views` asked for (where the store's `views` are given). Every difference is named at once, with
    the extraction that fits them all: a research preset differs from a plain store in all four, and one told at a
    time took an extraction each."""
    if data.normalization not in (None, *NORMALIZATIONS):
        raise UserError(
            f"data.normalization must be null (any) or one of {', '.join(NORMALIZATIONS)}, got {data.normalization!r}"
        )
    differences, flags, otherwise = [], [], []
    for key in ("featurizer", "normalization"):
        value, found = getattr(data, key), identity_value(provenance or {}, "name" if key == "featurizer" else key)
        if value is not None and value != found:
            differences.append(f"data.{key} is {value!r} but the store was extracted with {found!r}")
            flags.append(f"--{key} {value}")
    size = int(preprocessing["size"])
    if data.size is not None and data.size != size:
        differences.append(f"data.size is {data.size} but the store was extracted at {size} px")
        flags.append(f"--size {data.size}")
        otherwise.append(f"train at the store's size with --set data.size={size}")
    lacking = [view for view in data.views or [] if views is not None and view not in views]
    if lacking:
        differences.append(
            f"data.views asks for {', '.join(lacking)}, which the store lacks (it has {', '.join(views)})"
        )
        flags.append("--views " + ",".join(dict.fromkeys(["identity", *data.views])))
        otherwise.append("train on views it has (--set data.views=...)")
    if differences:
        model_of_the_preset = any(flag.startswith(("--featurizer", "--normalization")) for flag in flags)
        otherwise = ["choose another preset"] if model_of_the_preset else otherwise
        raise UserError(
            f"{'; '.join(differences)}: extract the dataset with {' '.join(flags)} for this config, or "
            f"{', or '.join(otherwise)}"
        )


class OldLabelsWarning(UserWarning):
    """The store's labels were made by a rule that later changed to match the research code's."""


def warn_when_labels_predate_crop_filters(dataset: dict[str, Any]) -> None:
    """`dataset` is a store's `dataset` attribute. SBD train stores extracted before the loader's options were
    recorded had objects under 80 pixels erased from their labels, where RITM keeps them labelled and leaves them
    out as targets on each crop only (`sampler.min_object_area`)."""
    if dataset.get("name") == "sbd" and dataset.get("split") == "train" and "options" not in dataset:
        warnings.warn(
            "this SBD train store was extracted by an earlier isegprobe, which erased objects under 80 pixels from "
            "its labels; RITM keeps them as other objects' pixels for the negative clicks and leaves them out as "
            "targets on each crop only. Extract it again (--overwrite) to train as the research code does",
            OldLabelsWarning,
            stacklevel=2,
        )


class UniformDrawsWarning(UserWarning):
    """SBD's training images are drawn uniformly, where RITM and the iSegProbe research code weight them."""


def warn_when_sbd_is_drawn_uniformly(dataset: dict[str, Any], sample_weights: str | None) -> None:
    """`dataset` is a store's `dataset` attribute. RITM's recipe, which the research code trains with, draws SBD's
    training images by their scores (its assets/sbd_samples_weights.pkl, not shipped here): without
    `data.sample_weights` an epoch draws them uniformly, another recipe."""
    if dataset.get("name") == "sbd" and dataset.get("split") == "train" and sample_weights is None:
        warnings.warn(
            "training on SBD train with its images drawn uniformly: RITM and the iSegProbe research code draw them "
            "by per-image scores; --set data.sample_weights=PATH/sbd_samples_weights.pkl (the research code's "
            "assets/) trains as they do",
            UniformDrawsWarning,
            stacklevel=2,
        )


class GuidanceStatisticsWarning(UserWarning):
    """A learned upsampler's guidance images are normalized otherwise than its authors' checkpoint learnt from."""


def warn_when_guidance_is_normalized_otherwise(
    upsampler: nn.Module, config: UpsamplerConfig, preprocessing: dict[str, Any]
) -> None:
    """The probe guides its upsampler with the images as the store normalizes them (the featurizer's input). FeatUp,
    AnyUp and LiFT learnt from ImageNet-normalized images whatever the backbone, so their authors' weights on a
    store of other statistics (a CLIP's own, `--normalization model`) see images shifted from what they learnt."""
    if config.weights is None or getattr(upsampler, "guidance_statistics", None) != "imagenet":
        return
    mean, std = (tuple(float(value) for value in preprocessing[key]) for key in ("mean", "std"))
    if np.allclose(mean, IMAGENET_MEAN, atol=1e-4) and np.allclose(std, IMAGENET_STD, atol=1e-4):
        return
    warnings.warn(
        f"model.upsampler.weights: {config.name}'s authors trained it on guidance images normalized by ImageNet's "
        f"mean and std; this store's images are normalized by mean {_rounded(mean)} and std {_rounded(std)}, which "
        "it gets instead. A store extracted with --normalization imagenet gives it the images it learnt from",
        GuidanceStatisticsWarning,
        stacklevel=2,
    )


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(value, 4) for value in values]


def check_store_matches(store: FeatureStore, metadata: dict[str, Any]) -> None:
    """The store must hold the probe's featurizer at the probe's working size and resize rule: at another size the
    same click disks cover other parts of the objects, and the NoC would measure something the probe never saw."""
    check_same_featurizer(metadata.get("featurizer_provenance") or {}, store.attrs["featurizer"], str(store.path))
    trained, stored = metadata["preprocessing"], store.attrs["preprocessing"]
    wanted = (int(trained["size"]), trained.get("resize", "stretch"))
    found = (int(stored["size"]), stored.get("resize", "stretch"))
    if wanted != found:
        raise UserError(
            f"{store.path}: extracted at --size {found[0]} --resize {found[1]}, but the probe was trained at "
            f"--size {wanted[0]} --resize {wanted[1]}; extract the dataset that way for it"
        )


def check_resumed_validation(val_store: FeatureStore | None, metadata: dict[str, Any]) -> None:
    """A resumed run keeps picking its best checkpoint on what it picked it on before (`metadata`: its last.json):
    its training IoU, or one validation store. Another measurement would be compared with the best so far, and the
    best checkpoint would be a choice between numbers that do not compare."""
    recorded_path = metadata.get("val_store_path") or None
    before = f"the validation store {recorded_path}" if recorded_path else "its training IoU (no --val-store)"
    now = "no --val-store" if val_store is None else f"--val-store {val_store.path}"
    if (recorded_path is None) != (val_store is None):
        raise UserError(
            f"--resume: this run picks its best checkpoint on {before}; resuming with {now} would compare another "
            "measurement with its best so far: resume as it began, or train a new run"
        )
    recorded = metadata.get("val_store_fingerprint")  # absent from runs saved before it was recorded
    if val_store is not None and recorded is not None and recorded != store_fingerprint(val_store.attrs):
        raise UserError(
            f"--resume: this run picks its best checkpoint on {before}, and {now} is another store (its views or "
            "items differ): resume with that one, or train a new run"
        )


def check_resumed_store(store: FeatureStore, metadata: dict[str, Any]) -> None:
    """A resumed run must go on with the store it trained on (`metadata`: its last.json): another featurizer or
    size would train the probe on features it never saw, and other images would change its epochs, while the
    checkpoint would record the new store as the one it was trained on. A copy of the store elsewhere is the same."""
    check_store_matches(store, metadata)
    recorded = metadata.get("store_fingerprint")  # absent from runs saved before it was recorded
    if recorded is not None and recorded != store_fingerprint(store.attrs):
        trained_on = metadata.get("store_path") or "the one its last.json names"
        raise UserError(
            f"{store.path}: not the store this run trained on ({trained_on}): its views or items differ (extracted "
            "again since?); resume with that store, or start a new run"
        )
