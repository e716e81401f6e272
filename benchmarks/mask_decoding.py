"""Decoding mask PNGs: OpenCV's decoder against the library's (`isegprobe/data/gray_png.py`), side by side.

Every item of an extraction decodes its masks in a loader worker: the folder datasets' one PNG per object, COCO+LVIS's
PNG-encoded label layers. OpenCV spends most of a mask's time in zlib 1.2's inflate; the library inflates plain 8-bit
greyscale PNGs with ISA-L and undoes the rows' filters with array operations, and leaves every other PNG to OpenCV.
This script writes the built-in scenes' objects as 640x480 masks (one PNG per object, 0 and 255) and as label layers
(object k has the value k), each the way OpenCV writes them (default, and level 9) and the way Pillow does, and times
`cv2.imdecode` against `decode_bytes` (what the datasets call) on the same files, interleaved. It also says how many
files the library decoded itself (the rest went to OpenCV) and checks that every mask came out as OpenCV decodes it.
The library's time includes the checks that the datasets made before OpenCV decoded a file, as they still do (a
truncated file, the pixel limit: about 0.04 ms), and for a file it leaves to OpenCV, its inflate that found rows it
does not undo.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import cv2
import numpy as np
from common import Check, base_parser, interleave, median, report, setup, table
from PIL import Image

from isegprobe.data.builtin import render_scene
from isegprobe.data.gray_png import plain_gray_png
from isegprobe.data.image_io import decode_bytes


def opencv_png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def opencv_png_level_9(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def pillow_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


WRITERS: dict[str, Callable[[np.ndarray], bytes]] = {
    "OpenCV": opencv_png,
    "OpenCV, level 9": opencv_png_level_9,
    "Pillow": pillow_png,
}


def masks(scenes: int, width: int) -> dict[str, list[np.ndarray]]:
    """The scenes' objects as binary masks (0/255, one per object) and as label layers (one per scene)."""
    height = width * 3 // 4
    binary, layers = [], []
    for index in range(scenes):
        labels = cv2.resize(render_scene(10_000 + index)[1], (width, height), interpolation=cv2.INTER_NEAREST)
        layers.append(labels.astype(np.uint8))
        binary += [(labels == instance).astype(np.uint8) * 255 for instance in range(1, int(labels.max()) + 1)]
    return {"object masks": binary, "label layers": layers}


def opencv_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def library_decode(data: bytes) -> np.ndarray:
    return decode_bytes(data, cv2.IMREAD_UNCHANGED, "mask.png", "mask")


def decoded_by_library(data: bytes) -> bool:
    png = plain_gray_png(data)
    return png is not None and png.decode() is not None


def seconds_per_file(decode: Callable[[bytes], object], files: list[bytes]) -> float:
    started = time.perf_counter()
    for data in files:
        decode(data)
    return (time.perf_counter() - started) / len(files)


def main() -> None:
    parser = base_parser("mask_decoding", __doc__)
    parser.add_argument("--scenes", type=int, default=32, help="built-in scenes whose objects become masks")
    parser.add_argument("--size", type=int, default=640, help="the masks' width in pixels (their height is 3/4 of it)")
    args = parser.parse_args()
    setup(args)
    rows, results, all_equal = [], {}, True
    for kind, arrays in masks(args.scenes, args.size).items():
        for writer_name, writer in WRITERS.items():
            files = [writer(array) for array in arrays]
            for data, array in zip(files, arrays, strict=True):
                ours = library_decode(data)
                all_equal &= np.array_equal(ours, array) and np.array_equal(ours, opencv_decode(data))
            timings = interleave(
                {
                    "opencv": lambda _round, files=files: seconds_per_file(opencv_decode, files),
                    "library": lambda _round, files=files: seconds_per_file(library_decode, files),
                },
                args.repeats,
            )
            opencv_ms, library_ms = (1000 * median(timings[mode]) for mode in ("opencv", "library"))
            share = sum(decoded_by_library(data) for data in files) / len(files)
            rows.append([kind, writer_name, len(files), opencv_ms, library_ms, opencv_ms / library_ms, share])
            results[f"{kind}, {writer_name}"] = {
                "files": len(files),
                "opencv_ms": opencv_ms,
                "library_ms": library_ms,
                "ratio": opencv_ms / library_ms,
                "decoded_by_library": share,
            }
    headers = ["masks", "written by", "files", "OpenCV ms", "library ms", "OpenCV / library", "decoded by gray_png"]
    title = f"{args.scenes} built-in scenes' objects at {args.size}x{args.size * 3 // 4}, ms per file (one thread)"
    opencv_written = min(row[5] for row in rows if row[1] == "OpenCV")
    checks = [
        Check("every mask decoded as OpenCV decodes it (1 = all)", float(all_equal), 1.0),
        Check("OpenCV / library, files OpenCV wrote at its default (the lower of the two kinds)", opencv_written, 1.0),
    ]
    results["all_equal"] = all_equal
    report("mask_decoding", args, {title: table(headers, rows)}, checks, results)


if __name__ == "__main__":
    main()
