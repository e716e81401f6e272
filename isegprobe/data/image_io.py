"""Reading images and masks from disk with errors that name the file.

OpenCV decodes a truncated JPEG (an interrupted download or copy) without an error: it fills the missing part with
grey and prints a warning nobody reads, and the benchmark would then be run on that grey. So the file's bytes are
checked for the end of the image before decoding: a JPEG needs an end-of-image marker after its last scan, a PNG
its whole IEND chunk.

Pixels are read as stored: an EXIF orientation tag is ignored, for images and masks alike. The benchmarks' masks
were drawn on the stored pixels, and OpenCV would otherwise turn a phone photo by its tag but not the mask beside it.
The first file read with such a tag is named in a warning, since a mask drawn on the turned picture would not line
up.

An image's size is read from its header before it is decoded, so that a file declaring more pixels than the limit
(`ISEGPROBE_MAX_PIXELS`, `--max-pixels`) is refused without spending its memory.
"""

from __future__ import annotations

import io
import os
import threading
import unicodedata
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from isegprobe.data.gray_png import GrayPng, plain_gray_png
from isegprobe.data.image_headers import declared_size, jpeg_first_scan
from isegprobe.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_PIXELS_ENV = "ISEGPROBE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000

_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
GREY_MASK_RULE = "draw the object in grey levels above 128 (255) on 0, with 128 for pixels to ignore"
_PNG_START, _PNG_END = b"\x89PNG", b"IEND"


def set_max_pixels(limit: int) -> None:
    """The pixel limit for this process and the processes it starts (loader workers inherit the environment)."""
    os.environ[MAX_PIXELS_ENV] = str(limit)


def max_pixels() -> int:
    """The largest width x height an image or mask may declare: `ISEGPROBE_MAX_PIXELS`, else 40 million."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return DEFAULT_MAX_PIXELS
    if not (value.isascii() and value.isdigit() and len(value) <= 18) or int(value) < 1:  # '²' is a digit too
        raise UserError(f"{MAX_PIXELS_ENV}={value[:40]!r}: expected a whole number of pixels >= 1, below 10**18")
    return int(value)


def largest_file() -> int:
    """Bytes an image file within the pixel limit may take: uncompressed 16-bit RGBA (8 bytes a pixel), and 64 MiB
    for what else a file holds (a camera's notes, its thumbnail, a video some phones append). A larger one was read
    whole before any check: 11 GB of memory for a 10 GB file, a MemoryError for a bigger one."""
    return 8 * max_pixels() + 64 * 2**20


def require_within_pixel_limit(height: int, width: int, name: str) -> None:
    if height * width > max_pixels():
        raise _too_large(name, f"{width} x {height} pixels ({height * width / 1e6:.1f} MP)")


def _too_large(name: str, size: str) -> UserError:
    limit = max_pixels()
    return UserError(
        f"{name}: {size} is above the limit of {limit} pixels ({limit / 1e6:g} MP); pass --max-pixels (or set "
        f"{MAX_PIXELS_ENV}) to read larger images"
    )


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB; OpenCV reads BGR and returns None (no exception) on unreadable files."""
    image = decode_file(path, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_gray(path: Path) -> np.ndarray:
    """uint8 [H, W]; for masks stored as 8-bit (or colour, taking the first channel) images."""
    return read_mask(path)[0]


def read_grey_mask(path: Path) -> np.ndarray:
    """uint8 [H, W] of a mask drawn in grey levels, for the families whose rule is our own (custom): a mask whose
    grey cannot be read without a guess is refused, naming what it holds, where taking its first channel would make
    a transparent background object or a red or yellow object background, without a word."""
    pixels = _mask_as_stored(_file_bytes(path, "mask"), path)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        see_through = int(np.count_nonzero(pixels[..., 3] != 255))
        if see_through:
            raise UserError(
                f"{path}: {see_through} pixels of this mask are transparent or partly so; a mask is read from its grey "
                f"levels, not its alpha channel: {GREY_MASK_RULE}"
            )
    if pixels.ndim == 3:
        colour = pixels[..., :3]
        coloured = int(np.count_nonzero((colour[..., 0] != colour[..., 1]) | (colour[..., 1] != colour[..., 2])))
        if coloured:
            raise UserError(f"{path}: a colour mask ({coloured} pixels are not grey): {GREY_MASK_RULE}")
        pixels = colour[..., 0]
    if 0 < int(pixels.max()) <= 1:
        raise UserError(f"{path}: a mask of 0 and 1 only: {GREY_MASK_RULE}, so multiply it by 255")
    return pixels


def read_mask(path: Path, colour: bool = False) -> tuple[np.ndarray, bool]:
    """(pixels, lossy) of a mask file: its first channel, uint8 [H, W], or with `colour` the three channels as
    `cv2.imread` decodes colour (alpha dropped, 16-bit samples scaled to 8 bits); `lossy` when the file is a JPEG,
    whose values around 0 and 255 are compression noise."""
    data = _file_bytes(path, "mask")
    if colour:
        return decode_bytes(data, cv2.IMREAD_COLOR, str(path), "mask"), data.startswith(_JPEG_START)
    mask = _mask_as_stored(data, path)
    return mask[..., 0] if mask.ndim == 3 else mask, data.startswith(_JPEG_START)


def _mask_as_stored(data: bytes, path: Path) -> np.ndarray:
    """A mask file's pixels with every channel it stores, which must be 8-bit."""
    pixels = decode_bytes(data, cv2.IMREAD_UNCHANGED, str(path), "mask")
    if pixels.dtype != np.uint8:
        raise UserError(f"{path}: expected an 8-bit mask, got {pixels.dtype}")
    return pixels


def decode_file(path: Path, flags: int, kind: str) -> np.ndarray:
    """The decoded array of an image file (`cv2.imread` flags); a missing, truncated, oversized or undecodable file
    is a UserError naming it, `kind` ("image", "mask") saying what it was read as."""
    return decode_bytes(_file_bytes(path, kind), flags, str(path), kind)


def _file_bytes(path: Path, kind: str) -> bytes:
    """The file's bytes, once its size is within what an image within the pixel limit can take."""
    try:
        size, most = Path(path).stat().st_size, largest_file()
        if size > most:
            raise UserError(
                f"{path}: {size / 2**30:.1f} GiB, more than any {kind} within the limit of {max_pixels()} pixels "
                f"takes ({most / 2**20:.0f} MiB); pass --max-pixels (or set {MAX_PIXELS_ENV}) to read larger images"
            )
        return Path(path).read_bytes()
    except OSError as error:
        if isinstance(error, FileNotFoundError) and Path(path).is_symlink():
            raise UserError(f"{path}: a link to a file that does not exist ({os.readlink(path)})") from None
        raise UserError(f"{path}: cannot read this {kind} ({error.strerror or error})") from None


def decode_bytes(data: bytes, flags: int, name: str, kind: str) -> np.ndarray:
    """`decode_file` for bytes already in memory (an upload), `name` saying where they came from."""
    require_complete(data, name, kind)
    png = plain_gray_png(data) if flags == cv2.IMREAD_UNCHANGED else None
    if png is not None and (pixels := _plain_pixels(png, name)) is not None:
        return pixels
    if png is None:  # a plain PNG's size was checked from its header already
        _check_declared_size(data, name, kind)
    if flags != cv2.IMREAD_UNCHANGED:  # IMREAD_UNCHANGED already ignores the tag
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    except cv2.error as error:  # OpenCV's own limits (more than 2**30 pixels) raise instead of returning None
        raise UserError(f"{name}: cannot read this {kind} ({getattr(error, 'err', error)})") from None
    if decoded is None:
        raise UserError(f"{name}: cannot read this {kind} ({_why_undecoded(data)})")
    require_within_pixel_limit(*decoded.shape[:2], name)  # formats whose header Pillow does not read
    return decoded


# Sample formats that Pillow reads in a header but OpenCV does not decode as 8-bit colour or grey.
_UNREAD_SAMPLES = {"F": "32-bit floating-point samples", "I": "32-bit integer samples"}


def _why_undecoded(data: bytes) -> str:
    """Why OpenCV returned no pixels for a file whose header was read: a TIFF of 32-bit samples (a float image
    saved by a scientific tool) is a whole, valid file, and calling it corrupt sent its owner looking for damage."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            samples, file_format = _UNREAD_SAMPLES.get(image.mode), image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        samples = None
    if samples is None:
        return "corrupt or not an image"
    return f"a {file_format} of {samples}, which is not read: save it with 8-bit samples, as PNG or JPEG"


def decode_packed_layer(data: bytes, name: str) -> np.ndarray | None:
    """`cv2.imdecode(data, cv2.IMREAD_UNCHANGED)` for an image packed inside a dataset's file (`name`), None for
    what OpenCV cannot decode included; a plain 8-bit greyscale PNG, as OpenCV writes label layers, is decoded by
    `gray_png` (the same pixels, a quarter of the time) within the pixel limit."""
    png = plain_gray_png(data)
    pixels = None if png is None else _plain_pixels(png, name)
    return pixels if pixels is not None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _plain_pixels(png: GrayPng, name: str) -> np.ndarray | None:
    """The pixels of a plain greyscale PNG once its size is within the limit; None to leave it to OpenCV (rows
    filtered with Average or Paeth)."""
    require_within_pixel_limit(png.height, png.width, name)
    return png.decode()


def require_complete(data: bytes, name: str, kind: str) -> None:
    """A truncated JPEG or PNG is a UserError naming it, before anything else reads the file."""
    if is_truncated(data):
        raise UserError(f"{name}: this {kind} file is truncated (it stops before the end of the image)")


def _check_declared_size(data: bytes, name: str, kind: str) -> None:
    """Refuse a file whose header declares more pixels than the limit, or whose header says no size: Pillow reads
    the header without decoding (and itself refuses one of more than twice `Image.MAX_IMAGE_PIXELS`, as a
    decompression bomb); a PNG or JPEG header that Pillow refuses is read by `declared_size`. OpenCV would decode
    such a file whatever its size, up to 2**30 pixels."""
    bomb = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(io.BytesIO(data)) as image:
                height, width = image.height, image.width
                orientation = _orientation(image)
    except Image.DecompressionBombError:
        if max_pixels() < bomb:
            raise _too_large(name, f"a size of more than {bomb} pixels") from None
        return
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        size = declared_size(data)
        if size is None:
            raise UserError(f"{name}: cannot read this {kind} (corrupt or not an image)") from None
        height, width = size
        orientation = 1
    require_within_pixel_limit(height, width, name)
    if orientation != 1 and not _TOLD_OF_ORIENTATION.is_set():
        _TOLD_OF_ORIENTATION.set()
        warnings.warn(
            f"{name}: its EXIF orientation tag turns it ({_TURNS.get(orientation, orientation)}) for display, but "
            "its pixels are read as stored, the way the benchmarks' masks were drawn: if its mask was drawn on the "
            "turned picture, the two do not line up (said of the first such file only)",
            OrientationTagWarning,
            stacklevel=2,
        )


class OrientationTagWarning(UserWarning):
    """An image carries an EXIF orientation tag, which is ignored: a phone photo's mask drawn on the turned picture
    would not line up with the pixels read, silently."""


_TOLD_OF_ORIENTATION = threading.Event()
_EXIF_ORIENTATION = 0x0112
_TURNS = {
    2: "mirrored",
    3: "a half turn",
    4: "mirrored upside down",
    5: "mirrored and a quarter turn",
    6: "a quarter turn clockwise",
    7: "mirrored and a quarter turn",
    8: "a quarter turn anticlockwise",
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation an opened image declares (1: as stored), read without decoding it: Pillow's `getexif`
    decodes a whole PNG whose notes carry no EXIF, which read every PNG twice and a PNG above the pixel limit before
    the limit refused it."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_EXIF_ORIENTATION, 1)


def is_truncated(data: bytes) -> bool:
    """True for a JPEG without an end-of-image marker after its first scan, or a PNG without its IEND chunk. Data
    after the end is allowed: some cameras append their own (a phone's motion photo, a whole video), whose bytes
    held a scan marker after their last end marker in about half of the files, which the rule "an end after the
    last scan" called truncated. No end marker can occur inside a scan's coded data (there a 0xFF byte is followed
    by 0 or a restart marker), so the first one after the first scan ends the image. A file that ends with an end
    marker, as nearly every one does, is told by its last bytes (5 us for a GrabCut JPEG), where searching its
    coded data took 0.13 ms, and 0.3 s for a JPEG of 64 MiB."""
    if data.startswith(_JPEG_START):
        first_scan = jpeg_first_scan(data)
        if first_scan is None:
            return data.rfind(_JPEG_END) < data.rfind(_JPEG_SCAN)
        if data.endswith(_JPEG_END) and len(data) - len(_JPEG_END) >= first_scan:
            return False
        return data.find(_JPEG_END, first_scan) == -1
    if data.startswith(_PNG_START):
        end = data.rfind(_PNG_END)
        return end == -1 or len(data) < end + len(_PNG_END) + 4  # the IEND chunk ends with its 4-byte CRC
    return False


def is_hidden(path: Path) -> bool:
    """A name that starts with "." names no image of a dataset: macOS leaves an AppleDouble file `._NAME.jpg` (its
    notes on NAME.jpg, not a picture) beside every file it copies to a disk of another format, and a `.DS_Store` in
    every folder it shows; a benchmark copied from a Mac stopped at the first of them."""
    return path.name.startswith(".")


def files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """The image files of `folder` grouped by their exact stem (file names compared as strings, never used as
    patterns: `a[1].jpg` is not `a1.jpg`); suffixes match case-insensitively (GrabCut mixes .jpg and .JPG); hidden
    files (`is_hidden`) are left out. A link whose file is gone stays, so that reading it says so instead of calling
    the image missing."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if is_hidden(path):
            continue
        if (path.is_file() or path.is_symlink() and not path.exists()) and path.suffix.lower() in IMAGE_SUFFIXES:
            require_utf8_name(path)
            groups.setdefault(path.stem, []).append(path)
    return groups


def require_utf8_name(path: Path) -> None:
    """A file's stem is its item's id, which goes into JSON, CSV and the names of picture files, all UTF-8: a name
    of other bytes was extracted and evaluated, then crashed `evaluate --vis-preds` and `plot predictions`."""
    try:
        path.name.encode()
    except UnicodeEncodeError:
        raise UserError(
            f"{path.parent}: the file name {os.fsencode(path.name)!r} is not UTF-8 text; an item's id is its file's "
            "name, written into results and picture names: rename it"
        ) from None


def unread_files_named(folder: Path, stem: str) -> str:
    """For a message saying that no image or mask of this name was found: what of that name is there but not read,
    a file in another format (` (a.gif is there, but only .jpg, ... files are read)`) or something that is no file
    (` (a.jpg is there, but it is a folder)`), or nothing."""
    named = sorted(path for path in folder.glob("*") if path.stem == stem)
    not_files = [path for path in named if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_file()]
    if not_files:
        return f" ({not_files[0].name} is there, but it is {_kind_of(not_files[0])})"
    unread = [path.name for path in named if path.suffix.lower() not in IMAGE_SUFFIXES]
    if not unread:
        return _differently_composed(folder, stem)
    verb = "is" if len(unread) == 1 else "are"
    return f" ({' and '.join(unread)} {verb} there, but only {', '.join(IMAGE_SUFFIXES)} files are read)"


def _differently_composed(folder: Path, stem: str) -> str:
    """A file whose name reads the same but is other bytes: `café` composed (NFC, as most systems write it) against
    decomposed (NFD, as macOS writes names), which a message quoting both names cannot show apart."""
    composed = unicodedata.normalize("NFC", stem)
    alike = sorted(
        path.name
        for path in folder.glob("*")
        if path.stem != stem and unicodedata.normalize("NFC", path.stem) == composed
    )
    if not alike:
        return ""
    return (
        f" ({alike[0]} is there, but its name is the same letters written in another Unicode form (composed or "
        "decomposed, NFC or NFD): rename one of the two so that they are the same bytes)"
    )


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "a folder"
    if path.is_fifo():
        return "a named pipe"
    return "no regular file"


def only_file(candidates: list[Path] | tuple[Path, ...], kind: str) -> Path:
    """The one file of a name; two files of one name (`a.jpg` beside `a.bmp`) would be paired by chance."""
    if len(candidates) > 1:
        others = " and ".join(path.name for path in candidates[1:])
        raise UserError(
            f"{candidates[0]} and {others}: {len(candidates)} {kind} files named {candidates[0].stem}; which one "
            "belongs to the item is ambiguous: keep one of them (rename or remove the others)"
        )
    return candidates[0]
