"""RITM's zoom-in: from the second click on, the probe looks at a crop around the predicted object.

The box rules are RITM's (`ZoomIn` in isegm/inference/transforms/zoom_in.py, the box helpers in isegm/utils/misc.py)
with the settings of its evaluation: skip_clicks -1, expansion 1.4, crops of at least 200 px, and a new box only when
a positive click falls outside the current one or the current box's IoU with the new one drops under 0.5. Boxes are
RITM's (rmin, rmax, cmin, cmax) with both ends inclusive, so its rules, quirks included, read the same here.

The crop is resized to the store's working size with the store's resize rule (stretch, as SimpleClick's square
target size does, or letterbox), since that is what the probe was trained on. By default crop pixels, clicks and
probabilities are mapped with pixel centres aligned, the predictor's convention, so cropping and un-cropping are exact
inverses. RITM resizes with align_corners=True but scales clicks by the size ratio, which puts them up to half a crop
pixel off; `align_corners=True` does exactly that, on the image scaled to [0, 1] first and unrounded after, as RITM's
tensors are, for numbers that equal RITM's and iSegProbe's (`evaluate --protocol iSegProbe`).

With skip_clicks -1 the first click's box is the whole image, so a box always exists and RITM's
`check_possible_recalculation` (which acts only while there is none) never fires: it has no counterpart here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isegprobe.inference.clicker import Click
from isegprobe.inference.predictor import PredictionInput, WorkingView, mirror_view, to_original

Box = tuple[int, int, int, int]  # rmin, rmax, cmin, cmax; both ends inclusive


class ZoomIn:
    """One object's zoom-in: the current box and the previous probabilities at the original resolution.

    `image` is the original uint8 [H, W, 3]; crops are resized to `size` x `size` by `resize` ("stretch" or
    "letterbox"). With `flip`, the mirrored crop is predicted too (RITM flips after zooming). `align_corners`: RITM's
    own geometry (stretch only), see the module's docstring.
    """

    def __init__(
        self,
        image: np.ndarray,
        size: int,
        resize: str = "stretch",
        flip: bool = False,
        threshold: float = 0.5,
        device: torch.device | str = "cpu",
        expansion: float = 1.4,
        min_crop: int = 200,
        recompute_iou: float = 0.5,
        align_corners: bool = False,
    ) -> None:
        if align_corners and resize != "stretch":
            raise ValueError("RITM's zoom-in geometry (align_corners) stretches its crops; letterbox has none")
        self.image = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
        if align_corners:
            # What torchvision's to_tensor gives RITM's predictor: channel planes contiguous, as it copies them before
            # it divides; the crops' bilinear resize rounds otherwise on channels-last memory (up to 7e-7 on a CPU).
            self.image = self.image.contiguous() / 255.0
        self.size, self.resize, self.flip, self.threshold = size, resize, flip, threshold
        self.align_corners = align_corners
        self.expansion, self.min_crop, self.recompute_iou = expansion, min_crop, recompute_iou
        self.box: Box | None = None
        self.prev_probs = torch.zeros(image.shape[:2], device=device)
        self._view: WorkingView | None = None

    def inputs(self, clicks: Sequence[Click]) -> PredictionInput:
        """Choose the box for these clicks (all of them, the newest last) and crop image and previous probabilities."""
        self.box = self._next_box(clicks)
        rmin, rmax, cmin, cmax = self.box
        height, width = rmax - rmin + 1, cmax - cmin + 1
        valid_box = square_box(height, width, self.size, self.resize)
        corners = self.align_corners
        region = (slice(rmin, rmax + 1), slice(cmin, cmax + 1))
        if corners:
            # RITM resizes the image and the previous probabilities as one 4-channel tensor: on a CPU the bilinear
            # kernel rounds 3 channel planes otherwise than 4.
            both = torch.cat([self.image[:, region[0], region[1]], self.prev_probs[None, region[0], region[1]]])
            both = into_square(both, valid_box, self.size, corners)
            image, prev = both[:3], both[3]
        else:
            image = into_square(self.image[:, region[0], region[1]], valid_box, self.size, corners)
            prev = into_square(self.prev_probs[None, region[0], region[1]], valid_box, self.size, corners)[0]
            image = image.round().clamp(0, 255).to(torch.uint8)
        self._view = WorkingView(None, image, valid_box, (height, width), corners)
        local = [Click(click.y - rmin, click.x - cmin, click.is_positive) for click in clicks]
        return PredictionInput(self._view, mirror_view(self._view) if self.flip else None, local, prev)

    def to_original(self, probs: Tensor) -> Tensor:
        """Working-size probabilities of the crop -> [H, W], zero outside the box; kept for the next click."""
        if self._view is None or self.box is None:
            raise RuntimeError("call inputs() before to_original()")
        rmin, rmax, cmin, cmax = self.box
        full = torch.zeros_like(self.prev_probs)
        full[rmin : rmax + 1, cmin : cmax + 1] = to_original(probs, self._view)
        self.prev_probs = full
        return full

    def _next_box(self, clicks: Sequence[Click]) -> Box:
        """RITM's `ZoomIn.transform` with skip_clicks < 0."""
        height, width = self.prev_probs.shape
        mask = (self.prev_probs > self.threshold).cpu().numpy()
        if mask.any():
            current = object_box(mask, clicks, self.expansion, self.min_crop)
        else:
            current = (0, height - 1, 0, width - 1)
        if (
            self.box is None
            or not positive_clicks_inside(self.box, clicks)
            or box_iou(current, self.box) < self.recompute_iou
        ):
            return current
        return self.box


def object_box(mask: np.ndarray, clicks: Sequence[Click], expansion: float, min_crop: int) -> Box:
    """The predicted mask's box, positive clicks included, expanded and clamped to the image (`get_object_roi`)."""
    mask = mask.copy()
    for click in clicks:
        if click.is_positive:
            mask[click.y, click.x] = True
    height, width = mask.shape
    return clamp_box(expand_box(mask_box(mask), expansion, min_crop), 0, height - 1, 0, width - 1)


def mask_box(mask: np.ndarray) -> Box:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_box(box: Box, ratio: float, min_size: int) -> Box:
    """Scale the box about its centre by `ratio`, each side at least `min_size` (Python's round, half to even)."""
    rmin, rmax, cmin, cmax = box
    rcenter, ccenter = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(ratio * (rmax - rmin + 1), min_size)
    width = max(ratio * (cmax - cmin + 1), min_size)
    return (
        int(round(rcenter - 0.5 * height)),
        int(round(rcenter + 0.5 * height)),
        int(round(ccenter - 0.5 * width)),
        int(round(ccenter + 0.5 * width)),
    )


def clamp_box(box: Box, rmin: int, rmax: int, cmin: int, cmax: int) -> Box:
    return max(rmin, box[0]), min(rmax, box[1]), max(cmin, box[2]), min(cmax, box[3])


def box_iou(first: Box, second: Box) -> float:
    """RITM's `get_bbox_iou`: the product of the row and column interval IoUs."""
    return _interval_iou(first[0], first[1], second[0], second[1]) * _interval_iou(
        first[2], first[3], second[2], second[3]
    )


def _interval_iou(a: int, b: int, c: int, d: int) -> float:
    intersection = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return intersection / union


def positive_clicks_inside(box: Box, clicks: Sequence[Click]) -> bool:
    """RITM's `check_object_roi`: its upper bounds are exclusive, so a click on the last row or column is outside."""
    rmin, rmax, cmin, cmax = box
    return all(rmin <= click.y < rmax and cmin <= click.x < cmax for click in clicks if click.is_positive)


def square_box(height: int, width: int, size: int, resize: str) -> tuple[int, int, int, int]:
    """Where a height x width region lands in the working square (y0, x0, y1, x1): the rule views are made with."""
    if resize == "stretch":
        return 0, 0, size, size
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    y0, x0 = (size - new_height) // 2, (size - new_width) // 2
    return y0, x0, y0 + new_height, x0 + new_width


def into_square(region: Tensor, valid_box: tuple[int, int, int, int], size: int, align_corners: bool = False) -> Tensor:
    """float [C, h, w] -> [C, size, size]: bilinear (pixel centres aligned unless `align_corners`) into
    `valid_box`, zeros around it."""
    y0, x0, y1, x1 = valid_box
    square = region.new_zeros(region.shape[0], size, size)
    square[:, y0:y1, x0:x1] = F.interpolate(
        region[None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=align_corners
    )[0]
    return square
