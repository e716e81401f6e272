"""How a mask file that draws one object becomes (object, ignore) maps: each benchmark by the rule of the research
code's loader for it, so that NoC agrees with RITM-family papers on any file, and our own families by one rule that
survives lossy files.

- RITM's GrabCut loader (GrabCut, Berkeley) reads the first channel, ignores exactly 128, relabels every value above
  128 to 1 in place and then takes the value 1 as the object: so a pixel that was 1 already (an anti-aliased edge of a
  Berkeley mask) is object too. Every other value is background.
- RITM's DAVIS loader (DAVIS, COCO_MVal) takes the brightest of the three colour channels, as `cv2.imread` gives them
  (alpha dropped, 16-bit samples scaled to 8 bits), and any value above 0 as the object; nothing is ignored.
- custom and Open Images: above 128 is object and, for custom, exactly 128 ignored. A mask saved lossily (JPEG) keeps
  its object this way, where a rule of "exactly 255" would turn its object pixels 129-254 into background without a
  word, and a rule of "not 0" would turn the JPEG's noise around the object into object.

No benchmark publishes JPEG masks, and the research code's rules would read a JPEG's noise as object (any value above
0, or exactly 1), so a benchmark's mask stored as JPEG is read by the last rule too (`lossy`).
"""

from __future__ import annotations

import numpy as np

OBJECT_ABOVE = 128
IGNORE_VALUE = 128
RITM_RELABELLED = 1  # the value RITM's GrabCut loader gives the object, which an original 1 shares


def object_and_ignore(values: np.ndarray, ignore_band: bool) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore) boolean maps of a mask's values; `ignore` is all False for a family without a band."""
    ignore = values == IGNORE_VALUE if ignore_band else np.zeros(values.shape, bool)
    return values > OBJECT_ABOVE, ignore


def ritm_grabcut_rule(values: np.ndarray, lossy: bool) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore) of a mask's first channel [H, W] as RITM's GrabCut loader reads it."""
    obj, ignore = object_and_ignore(values, ignore_band=True)
    return obj if lossy else obj | (values == RITM_RELABELLED), ignore


def ritm_davis_rule(colour: np.ndarray, lossy: bool) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore) of a mask decoded as `cv2.imread` decodes colour ([H, W, 3] uint8), as RITM's DAVIS loader
    reads it."""
    return colour.max(axis=2) > (OBJECT_ABOVE if lossy else 0), np.zeros(colour.shape[:2], bool)
