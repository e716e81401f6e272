"""What a training config asks of its store: the working size, and the featurizer and input normalization a preset
that reproduces a published model was made for."""

from __future__ import annotations

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
