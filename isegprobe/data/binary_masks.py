"""One rule for every mask file that draws one object (GrabCut, Berkeley, DAVIS, COCO_MVal, Open Images, custom).

RITM's GrabCut rule: a value above 128 is object and, where the family has an ignore band, exactly 128 is ignored;
the rest is background. A mask saved lossily (JPEG) keeps its object this way, where a rule of "exactly 255" would
turn its object pixels 129-254 into background without a word, and a rule of "not 0" would turn the JPEG's noise
around the object into object. On the published masks (0 and 255, plus GrabCut's and Berkeley's 128 band) it gives
what RITM's loaders give, including its DAVIS loader, which counts any non-zero value as object.
"""

from __future__ import annotations

import numpy as np

OBJECT_ABOVE = 128
IGNORE_VALUE = 128


def object_and_ignore(values: np.ndarray, ignore_band: bool) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore) boolean maps of a mask's values; `ignore` is all False for a family without a band."""
    ignore = values == IGNORE_VALUE if ignore_band else np.zeros(values.shape, bool)
    return values > OBJECT_ABOVE, ignore
