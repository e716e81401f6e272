"""What a training config asks of its store: the working size, and the featurizer and input normalization a preset
that reproduces a published model was made for; and what a store's labels say of how they were made."""

from __future__ import annotations

import warnings
from typing import Any

from isegprobe.cache.schema import identity_value
from isegprobe.config import DataConfig
from isegprobe.errors import UserError


def check_store_fits(data: DataConfig, preprocessing: dict[str, Any], provenance: dict[str, Any] | None) -> None:
    """Refuse a store extracted otherwise than `data.size`, `data.featurizer` and `data.normalization` say."""
    size = int(preprocessing["size"])
    if data.size is not None and data.size != size:
        raise UserError(f"data.size is {data.size} but the store was extracted at {size} px")
    provenance = provenance or {}
    wanted = {"featurizer": (data.featurizer, "name"), "normalization": (data.normalization, "normalization")}
    for key, (value, provenance_key) in wanted.items():
        found = identity_value(provenance, provenance_key)
        if value is not None and value != found:
            option = "--featurizer" if key == "featurizer" else "--normalization"
            raise UserError(
                f"data.{key} is {value!r} but the store was extracted with {found!r}: extract it with "
                f"{option} {value}, or choose another preset"
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
