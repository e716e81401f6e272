"""Whether a dataset's image is the one a store's pixels were made of: the same picture decoded or resized a little
differently is, another picture under the same name is not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from isegprobe.cache.image_match import (
    MAX_MEAN_DIFFERENCE,
    image_mismatch,
    require_the_stored_image,
    working_image,
)
from isegprobe.errors import UserError

PREPROCESSING = {"size": 56, "resize": "letterbox"}


def photo(seed: int) -> np.ndarray:
    """A smooth picture of full contrast (random noise blurred, then stretched), as photos are: resizing or
    recompressing it changes it little."""
    noise = np.random.default_rng(seed).integers(0, 256, (60, 80, 3), np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)


def test_the_same_picture_decoded_or_resized_otherwise_is_the_same_image() -> None:
    stored = working_image(photo(0), PREPROCESSING)
    recompressed = cv2.imdecode(cv2.imencode(".jpg", photo(0), [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)
    area = cv2.resize(photo(0), (56, 42), interpolation=cv2.INTER_AREA)
    other_resize = np.zeros_like(stored)
    other_resize[7:49] = area
    for fresh in (working_image(recompressed, PREPROCESSING), other_resize):
        assert image_mismatch(stored, fresh) is None
        require_the_stored_image("s.zarr", "a", "root", stored, fresh)


@pytest.mark.parametrize("other", ["another picture", "another size", "brighter by more than the allowance"])
def test_another_picture_under_the_same_name_is_refused(other: str) -> None:
    stored = working_image(photo(0), PREPROCESSING)
    fresh = {
        "another picture": working_image(photo(1), PREPROCESSING),
        "another size": working_image(photo(0), {"size": 28, "resize": "letterbox"}),
        "brighter by more than the allowance": np.clip(stored.astype(int) + int(MAX_MEAN_DIFFERENCE) + 4, 0, 255),
    }[other].astype(np.uint8)
    assert image_mismatch(stored, fresh) is not None
    with pytest.raises(UserError, match=r"s\.zarr: item 'a' under root is not the image this store was extracted"):
        require_the_stored_image("s.zarr", "a", "root", stored, fresh)
