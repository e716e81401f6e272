"""Writing tiny dataset trees in each family's on-disk layout, for the dataset tests."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import yaml
from scipy.io import savemat


def write_image(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A random RGB picture saved losslessly when the suffix allows (PNG/BMP), as JPEG otherwise; returns it as RGB."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = mask if mask.ndim == 2 else cv2.cvtColor(mask, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array)


def write_png_with_a_damaged_note(path: Path, side: int) -> None:
    """A PNG of side x side black pixels (a few kB for thousands of pixels a side) whose text note's checksum is
    wrong: Pillow refuses its header, OpenCV decodes it whole."""

    def chunk(kind: bytes, body: bytes, checksum_off: int = 0) -> bytes:
        checksum = zlib.crc32(kind + body) ^ checksum_off
        return len(body).to_bytes(4, "big") + kind + body + checksum.to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\0" * (1 + 3 * side) * side, 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"tEXt", b"Comment\0hi", checksum_off=1)
        + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )  # fmt: skip


def box(height: int, width: int, y0: int, x0: int, y1: int, x1: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = value
    return mask


def use_dataset_config(monkeypatch, tmp_path: Path, roots: dict | None = None, options: dict | None = None) -> Path:
    """Point $ISEGPROBE_DATASETS at a temporary config with these roots and options."""
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump({"roots": roots or {}, "options": options or {}}))
    monkeypatch.setenv("ISEGPROBE_DATASETS", str(path))
    return path


def berkeley_tree(root: Path, images: int, extra_masks: int, size: tuple[int, int] = (8, 10)) -> Path:
    """`images` pictures with one mask each; the first `extra_masks` pictures get a second object (`<stem>_2.png`)."""
    height, width = size
    for index in range(images):
        stem = f"{100000 + index}"
        write_image(root / "images" / f"{stem}.jpg", height, width, seed=index)
        write_mask(root / "masks" / f"{stem}.png", box(height, width, 1, 1, 4, 4))
        if index < extra_masks:
            write_mask(root / "masks" / f"{stem}_2.png", box(height, width, 5, 5, 8, 9))
    return root


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(
        str(path),
        {"GTinst": {"Segmentation": segmentation.astype(np.uint8), "Categories": np.ones((segmentation.max(), 1))}},
    )


def sbd_tree(root: Path) -> Path:
    """Two 48 x 64 images listed in val.txt: one with two objects, one (also in train.txt) with an object and two more
    that RITM's training filters concern: a "buggy" mask its loader drops, and an object under its minimum area,
    which only its sampler leaves out."""
    height, width = 48, 64
    two = np.zeros((height, width), np.uint8)
    two[2:10, 2:10] = 1
    two[12:18, 4:20] = 2
    one_plus_filtered = np.zeros((height, width), np.uint8)
    one_plus_filtered[5:15, 5:15] = 1
    one_plus_filtered[height - 1, 0] = 2  # a 1-pixel object: under RITM's min_object_area (80)
    rows = np.arange(45)  # a 2-pixel-thick diagonal: 90 pixels filling 4 % of its box, a "buggy" mask for RITM
    one_plus_filtered[rows, rows + 16] = 3
    one_plus_filtered[rows, rows + 17] = 3
    for name, segmentation in (("2008_000001", two), ("2008_000002", one_plus_filtered)):
        write_image(root / "img" / f"{name}.jpg", height, width)
        write_sbd_mat(root / "inst" / f"{name}.mat", segmentation)
    (root / "train.txt").write_text("2008_000002\n")
    (root / "val.txt").write_text("2008_000001\n2008_000002\n")
    return root
