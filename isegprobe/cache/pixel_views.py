"""Which views of a store keep pixels of their own, and how the others get theirs when they are read.

A flip or quarter turn of the identity view is the identity view's pixels rearranged (`orient_view`), so a store
keeps its image, labels and ignore mask once: compressing and writing them again cost the loader workers as much
CPU as all the rest of an item (zstd on a 448 px photo, 6 to 8 ms a view) and took half the store's pixel bytes.
Features stay per view: the featurizer sees each view. The attrs' `layout.pixel_views` lists, in order, the views
along the pixel arrays' view axis; a store of schema 1 has no such list and keeps every view's pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from isegprobe.data.preprocess import ViewSpec, orient, orient_tensor, parse_views
from isegprobe.errors import UserError


@dataclass(frozen=True)
class PixelSource:
    """Where a view's pixels are: entry `stored` of the pixel arrays' view axis, flipped and turned as the view
    `rearranged_by` says (None for a view stored as itself)."""

    stored: int
    rearranged_by: ViewSpec | None = None

    def orient(self, array: np.ndarray) -> np.ndarray:
        """The view's pixels from the stored entry's (y, x first): a strided view, no copy."""
        return array if self.rearranged_by is None else orient(array, self.rearranged_by)

    def orient_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """`orient` for an entry kept as a tensor, on its device."""
        return tensor if self.rearranged_by is None else orient_tensor(tensor, self.rearranged_by)


def stored_pixel_views(views: list[str]) -> list[str]:
    """The views whose pixels a new store keeps: all but the flips and turns of the identity view."""
    return [spec.name for spec in parse_views(",".join(views)) if not spec.from_identity]


def pixel_sources(attrs: Mapping[str, Any]) -> list[PixelSource]:
    """Each view's `PixelSource`, in the order of `attrs['views']`."""
    specs = parse_views(",".join(attrs["views"]))
    stored = pixel_views(attrs)
    return [
        PixelSource(stored.index(spec.name)) if spec.name in stored else PixelSource(stored.index("identity"), spec)
        for spec in specs
    ]


def pixel_views(attrs: Mapping[str, Any]) -> list[str]:
    """The views along the pixel arrays' view axis (every view, in a store of schema 1)."""
    return list(attrs["layout"].get("pixel_views", attrs["views"]))


def check_pixel_views(attrs: Mapping[str, Any]) -> str | None:
    """What `layout.pixel_views` was expected to be, if the attrs' is not (None if it is fine): distinct views of
    the store, identity among them, and every view left out a flip or turn of the identity view."""
    stored = attrs["layout"].get("pixel_views", attrs["views"])
    if not isinstance(stored, list) or not all(isinstance(name, str) for name in stored):
        return "a list of view names"
    try:
        specs = parse_views(",".join(attrs["views"]))
    except UserError as error:
        return f"views that parse ({error})"
    names = [spec.name for spec in specs]
    if "identity" not in stored or len(set(stored)) != len(stored) or not set(stored) <= set(names):
        return f"distinct names among the views {names}, identity included"
    derived = [spec.name for spec in specs if spec.name not in stored and not spec.from_identity]
    if derived:
        return f"every view but the flips and turns of identity, {derived} included"
    return None
