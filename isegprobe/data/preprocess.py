"""From a dataset sample to the square working-size views the featurizer sees.

A view is a crop of the original image (the whole image, a zoomed-in crop for scale jitter, or RITM's training
window), optionally flipped, resized to the working size. `stretch` resizes the crop to size x size like iSegProbe
and RITM's fixed working size; `letterbox` keeps the aspect ratio and pads, recording the valid box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from isegprobe.data.lookup_normalization import looked_up
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

RESIZE_RULES = ("stretch", "letterbox")
_SCALE_VIEW = re.compile(r"^scale(\d+(?:\.\d+)?)$")
# crop<k> and rcrop<k>: training windows, k from 1 (crop1, crop2, ... are different draws)
_WINDOW_VIEW = re.compile(r"^crop([1-9]\d{0,5})$")
_ORIENTED_WINDOW_VIEW = re.compile(r"^rcrop([1-9]\d{0,5})$")
# Quarter turns counter-clockwise, as np.rot90 (iSegProbe's RandomRotate90 draws among these).
_TURN_VIEWS = {"rot90": 1, "rot180": 2, "rot270": 3}
# np.rot90's quarter turns (counter-clockwise) as OpenCV's rotations.
_CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}
# RITM's and iSegProbe's training crops: UniformRandomResize(scale_range=(0.75, 1.25)), then a crop of the working
# size, the image zero-padded (centred, as PadIfNeeded) where it is smaller.
WINDOW_SCALE_RANGE = (0.75, 1.25)


@dataclass(frozen=True)
class ViewSpec:
    """`identity`, `hflip`, `vflip`, `rot90`/`rot180`/`rot270` (`turns` counter-clockwise), `scale<f>` (a crop 1/f
    of the image's side, placed by a per-item seed), `crop<k>` (`window`: RITM's training crop, the k-th of an item,
    drawn by a per-item seed) or `rcrop<k>` (that crop, then flipped and turned as drawn by the same seed:
    `drawn_orientation`)."""

    name: str
    flip: bool = False
    zoom: float = 1.0
    window: bool = False
    vflip: bool = False
    turns: int = 0
    drawn_orientation: bool = False

    @property
    def oriented(self) -> bool:
        """Whether the view flips or turns its crop."""
        return self.flip or self.vflip or self.turns > 0

    @property
    def from_identity(self) -> bool:
        """Whether the view is the identity view flipped or turned, nothing else: its pixels are the identity
        view's, rearranged."""
        return self.oriented and self.zoom == 1.0 and not self.window


@dataclass
class View:
    image: np.ndarray  # uint8 [S, S, 3]
    labels: np.ndarray  # uint16 [S, S]
    ignore: np.ndarray  # bool [S, S]
    valid_box: tuple[int, int, int, int]  # y0, x0, y1, x1 of real pixels in the working-size square
    crop_box: tuple[int, int, int, int]  # y0, x0, y1, x1 of the crop in original image pixels


def parse_views(text: str) -> list[ViewSpec]:
    """`identity,hflip,scale1.5` -> view specs; the first view must be `identity` (evaluation reads it)."""
    specs = []
    names = [part.strip() for part in text.split(",")]
    if "" in names:
        raise UserError(f"--views {text!r}: an empty view name (two commas together, or one at an end)")
    for name in names:
        match = _SCALE_VIEW.match(name)
        if name == "identity":
            specs.append(ViewSpec(name))
        elif name == "hflip":
            specs.append(ViewSpec(name, flip=True))
        elif name == "vflip":
            specs.append(ViewSpec(name, vflip=True))
        elif name in _TURN_VIEWS:
            specs.append(ViewSpec(name, turns=_TURN_VIEWS[name]))
        elif match and float(match.group(1)) > 1.0:
            specs.append(ViewSpec(name, zoom=float(match.group(1))))
        elif _WINDOW_VIEW.match(name):
            specs.append(ViewSpec(name, window=True))
        elif _ORIENTED_WINDOW_VIEW.match(name):
            specs.append(ViewSpec(name, window=True, drawn_orientation=True))
        else:
            raise UserError(
                f"--views: unknown view {name!r}; expected identity, hflip, vflip, rot90, rot180, rot270, scale<f> "
                "with f > 1 (scale1.5), crop<k> (crop1, crop2, ..., k from 1) or rcrop<k> (rcrop1, rcrop2, ...)"
            )
    if not specs or specs[0].name != "identity":
        raise UserError(f"--views {text!r}: the first view must be identity")
    if len({spec.name for spec in specs}) != len(specs):
        raise UserError(f"--views {text!r}: a view is listed twice")
    return specs


def _crop_box(height: int, width: int, spec: ViewSpec, seed: int, size: int) -> tuple[int, int, int, int]:
    """The view's region of the original image (y0, x0, y1, x1); a training window may reach past its edges."""
    if spec.window:
        rng = np.random.default_rng(seed)
        side = max(1, round(size / rng.uniform(*WINDOW_SCALE_RANGE)))
        y0, x0 = _window_start(height, side, rng), _window_start(width, side, rng)
        return y0, x0, y0 + side, x0 + side
    if spec.zoom == 1.0:
        return 0, 0, height, width
    crop_h, crop_w = max(1, round(height / spec.zoom)), max(1, round(width / spec.zoom))
    rng = np.random.default_rng(seed)
    y0 = int(rng.integers(0, height - crop_h + 1))
    x0 = int(rng.integers(0, width - crop_w + 1))
    return y0, x0, y0 + crop_h, x0 + crop_w


def _window_start(length: int, side: int, rng: np.random.Generator) -> int:
    """Where a window of `side` pixels starts along an image side of `length`: anywhere it fits, else centred on
    the image with the padding split evenly (PadIfNeeded's centre, then a crop of the padded image)."""
    if side <= length:
        return int(rng.integers(0, length - side + 1))
    return -((side - length) // 2)


def _padded_region(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """`array[y0:y1, x0:x1]`, with zeros where the box reaches past the array's edges."""
    y0, x0, y1, x1 = box
    height, width = array.shape[:2]
    if y0 >= 0 and x0 >= 0 and y1 <= height and x1 <= width:
        return np.ascontiguousarray(array[y0:y1, x0:x1])
    region = np.zeros((y1 - y0, x1 - x0) + array.shape[2:], array.dtype)
    top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    region[top - y0 : bottom - y0, left - x0 : right - x0] = array[top:bottom, left:right]
    return region


def _real_pixels(box: tuple[int, int, int, int], height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where the image's own pixels of a square window `box` land in the working square (the rest is padding)."""
    y0, x0, y1, x1 = box
    scale = size / (y1 - y0)
    top, bottom = _at_least_a_pixel(round((max(y0, 0) - y0) * scale), round((min(y1, height) - y0) * scale), size)
    left, right = _at_least_a_pixel(round((max(x0, 0) - x0) * scale), round((min(x1, width) - x0) * scale), size)
    return top, left, bottom, right


def _at_least_a_pixel(start: int, end: int, size: int) -> tuple[int, int]:
    """An image side that the window shrinks to less than a working pixel (a one-pixel-high image in a wider
    window) rounds to no pixel at all; it keeps one, the pixel its start rounds to."""
    if end > start:
        return start, end
    start = min(start, size - 1)
    return start, start + 1


def resize_into_square(
    array: np.ndarray, size: int, rule: str, interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The working-size square of an image (or mask) by `rule` (stretch or letterbox), and where the image lies in
    it (y0, x0, y1, x1): the one resize that extraction, online evaluation and the demo share."""
    height, width = array.shape[:2]
    if rule == "stretch":
        return cv2.resize(array, (size, size), interpolation=interpolation), (0, 0, size, size)
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size) + array.shape[2:], array.dtype)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas, (y0, x0, y0 + new_h, x0 + new_w)


def make_view(sample: Sample, spec: ViewSpec, size: int, rule: str, seed: int) -> View:
    """One view of `sample`; `seed` places the scale-jitter crop or the training window, so that re-extraction
    gives the same one."""
    if rule not in RESIZE_RULES:
        raise UserError(f"--resize: expected one of {RESIZE_RULES}, got {rule!r}")
    height, width = sample.image.shape[:2]
    box = _crop_box(height, width, spec, seed, size)
    image = _padded_region(sample.image, box)
    labels = _padded_region(sample.labels, box)
    ignore = _padded_region(sample.ignore, box)
    image, valid_box = resize_into_square(image, size, rule, cv2.INTER_LINEAR)
    labels, _ = resize_into_square(labels, size, rule, cv2.INTER_NEAREST)
    if ignore.any():
        ignore, _ = resize_into_square(ignore.astype(np.uint8), size, rule, cv2.INTER_NEAREST)
    else:  # most images ignore no pixel: nothing to resize
        ignore = np.zeros((size, size), np.uint8)
    if spec.window:
        valid_box = _real_pixels(box, height, width, size)
    orientation = drawn_orientation(seed) if spec.drawn_orientation else spec
    return orient_view(View(image, labels, ignore.astype(bool), valid_box, box), orientation, size)


def drawn_orientation(seed: int) -> ViewSpec:
    """The flips and quarter turns of an `rcrop<k>` view, drawn as the iSegProbe research code's training augmentation
    draws them at every step: albumentations' `Flip` (with probability 1/2, horizontal, vertical or both, alike
    likely), then `RandomRotate90` (with probability 1/2, 0 to 3 quarter turns counter-clockwise, alike likely). A
    random window flipped and turned is, in distribution, a window of the image flipped and turned first, as that code
    orders them. The draws come from a stream of the item's seed of their own, so the window is `crop<k>`'s."""
    rng = np.random.default_rng([seed, 1])
    flip, vflip, turns = False, False, 0
    if rng.random() < 0.5:
        flip, vflip = ((True, True), (False, True), (True, False))[int(rng.integers(3))]
    if rng.random() < 0.5:
        turns = int(rng.integers(4))
    return ViewSpec("drawn", flip=flip, vflip=vflip, turns=turns)


def orient_view(view: View, spec: ViewSpec, size: int) -> View:
    """`view` flipped and turned as `spec` says. Flips and turns act after the resize, on the working square, so a
    flipped or turned view is the unflipped one rearranged pixel for pixel: flip averaging at evaluation lines
    predictions up exactly, and a store keeps only the identity view's pixels of such views (`cache.pixel_views`)."""
    if not spec.oriented:
        return view
    image, labels, ignore = (oriented_copy(a, spec) for a in (view.image, view.labels, view.ignore))
    return View(image, labels, ignore, orient_box(view.valid_box, spec, size), view.crop_box)


def orient(array: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """The first two axes (y, x) of `array` flipped, then turned counter-clockwise, as `spec` says; a strided view of
    `array`, not a copy."""
    if spec.flip:
        array = array[:, ::-1]
    if spec.vflip:
        array = array[::-1]
    return np.rot90(array, spec.turns) if spec.turns else array


def orient_tensor(tensor: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """`orient` for a tensor (y, x first), on its device; the same values, as a new tensor when anything moves."""
    if spec.flip:
        tensor = tensor.flip(1)
    if spec.vflip:
        tensor = tensor.flip(0)
    return torch.rot90(tensor, spec.turns, dims=(0, 1)) if spec.turns else tensor


def oriented_copy(array: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """`orient(array, spec)` as a new contiguous array, the same values, made by OpenCV's flip and rotate: numpy's
    strided copy of a mirrored 448 px image takes 1.3 ms, OpenCV's 0.03."""
    as_bytes = array.dtype == bool
    result = array.view(np.uint8) if as_bytes else array
    if spec.flip:
        result = cv2.flip(result, 1)
    if spec.vflip:
        result = cv2.flip(result, 0)
    if spec.turns:
        result = cv2.rotate(result, _CV2_TURNS[spec.turns])
    result = np.ascontiguousarray(result)  # no copy unless nothing above made one
    return result.view(bool) if as_bytes else result


def orient_box(box: tuple[int, int, int, int], spec: ViewSpec, size: int) -> tuple[int, int, int, int]:
    """A box (y0, x0, y1, x1) of the working square, moved as `orient` moves the pixels under it."""
    if spec.flip:
        box = (box[0], size - box[3], box[2], size - box[1])
    if spec.vflip:
        box = (size - box[2], box[1], size - box[0], box[3])
    for _ in range(spec.turns):
        box = (size - box[3], box[0], size - box[1], box[2])
    return box


def normalize_images(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], out: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 [B, 3, H, W] (or float already scaled to [0, 1]) -> float [B, 3, H, W], scaled to [0, 1] then
    standardized as the featurizer was trained. Every step after the one copy (into `out`, a float32 tensor of the
    same shape, when given) runs in place on it: the same arithmetic, one full-size tensor instead of three (on a CPU
    each fresh one costs its page faults again), never written into `images`. uint8 images on a CPU get the same
    values by table lookup (lookup_normalization.py)."""
    if images.device.type == "cpu" and images.dtype == torch.uint8:
        mean, std = tuple(float(value) for value in mean), tuple(float(value) for value in std)
        normalized = looked_up(images, _normalization_table(mean, std), out)
        if normalized is not None:
            return normalized
    return _normalized_by_arithmetic(images, mean, std, out)


@lru_cache(maxsize=16)
def _normalization_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 [256, C]: every uint8 value of every channel normalized by `_normalized_by_arithmetic`."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, len(mean), 256, 1)
    return _normalized_by_arithmetic(values, mean, std)[0, :, :, 0].T.contiguous().numpy()


def _normalized_by_arithmetic(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], out: torch.Tensor | None = None
) -> torch.Tensor:
    mean_t = _per_channel(tuple(float(value) for value in mean), images.device)
    std_t = _per_channel(tuple(float(value) for value in std), images.device)
    scaled = images.to(torch.float32, copy=True) if out is None else out.copy_(images)
    if not images.is_floating_point():
        scaled.div_(255.0)
    return scaled.sub_(mean_t).div_(std_t)


@lru_cache(maxsize=16)
def _per_channel(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """float32 [1, C, 1, 1] on `device`, made once and only read: made from Python numbers at every call, it was a
    copy from the host that waits for every kernel queued on a GPU, at every training step and every batch of an
    extraction."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).to(device)
