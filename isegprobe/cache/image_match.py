"""Whether a dataset's images are the ones a store was extracted from.

A store is matched to its dataset by the items' ids alone, and two datasets of one layout share ids (`0001.jpg` in
every custom folder, the same SBD names in two copies of which one was edited). Extraction resumed with another
`--root` then added that dataset's items to the store, and an evaluation from a store with another `--root` paired
the store's features with that dataset's masks, both without a word and with numbers that looked fine. So an item's
image is made again at the working size, as extraction made it, and compared with the pixels the store keeps.

The comparison allows small differences: a store written by another version of the image decoder or of the resize
agrees with a fresh view to within a grey level or two on average, while another image differs by tens.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isegprobe.data.preprocess import resize_into_square
from isegprobe.errors import UserError

# Mean absolute difference, in grey levels of 0-255, above which two working-size images are not the same image.
MAX_MEAN_DIFFERENCE = 8.0


def working_image(image: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """uint8 [S, S, 3]: the identity view's pixels of a full-size image, as extraction makes them (`preprocessing` is
    a store's attribute of that name)."""
    return resize_into_square(image, preprocessing["size"], preprocessing["resize"], cv2.INTER_LINEAR)[0]


def image_mismatch(stored: np.ndarray, fresh: np.ndarray) -> str | None:
    """None where two uint8 [S, S, 3] working-size images are the same image (within MAX_MEAN_DIFFERENCE grey levels
    on average), else what a refusal says of them."""
    if stored.shape != fresh.shape:
        return f"its working-size pixels are {fresh.shape}, the store's {stored.shape}"
    difference = float(np.abs(stored.astype(np.int16) - fresh.astype(np.int16)).mean())
    if difference <= MAX_MEAN_DIFFERENCE:
        return None
    return f"its working-size pixels differ from the store's by {difference:.1f} grey levels on average"


def require_the_stored_image(
    store: str | Path, item_id: str, root: str | Path | None, stored: np.ndarray, fresh: np.ndarray
) -> None:
    """Refuse an evaluation that would pair the store's features of `item_id` with another image's masks."""
    mismatch = image_mismatch(stored, fresh)
    if mismatch is None:
        return
    raise UserError(
        f"{store}: item {item_id!r} under {root} is not the image this store was extracted from ({mismatch}); give "
        "--root the dataset the store was made of, or extract a store of this one"
    )
