"""Fetching the datasets that have public archives, resumably and checked, into the layout the loaders read.

Only the standard library talks HTTP. A transfer writes `<archive>.part` and, when the connection drops, continues
with an HTTP Range request (within the run, and again on the next run of the same command). The finished file must
have the length the server announced and, where one is known, the published SHA-256. Archive authors publish no
checksums for these files and this table records none it could not verify: `sha256=None` means the size is checked and
the computed hash is printed, so a user can pin it with `--sha256` on later downloads.
"""

from __future__ import annotations

import http.client
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from isegprobe.data.catalog import dataset_facts, has_layout
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.home_paths import expand_home

CHUNK_BYTES = 1 << 20
ZIP_SIGNATURE = b"PK\x03\x04"  # how a zip archive's first entry begins
RETRIES = 3
TIMEOUT_S = 60
_FBRS = "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0"


# An archive may unpack to 1 GiB, or to 50 times its size: dataset archives (compressed images and masks) unpack to
# a few times theirs.
MOST_EXPANSION = 50
UNPACKED_BYTES_ALWAYS_ALLOWED = 2**30


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None  # None: no checksum published that we could verify
    size: int | None  # None: only the server's announced length is checked
    after: str = ""  # what the user still has to do once it is unpacked


ARCHIVES: dict[str, Archive] = {
    "grabcut": Archive(f"{_FBRS}/GrabCut.zip", sha256=None, size=None),
    "berkeley": Archive(f"{_FBRS}/Berkeley.zip", sha256=None, size=None),
    "davis": Archive(f"{_FBRS}/DAVIS.zip", sha256=None, size=None),
    "coco_mval": Archive(f"{_FBRS}/COCO_MVal.zip", sha256=None, size=None),
    "sbd": Archive(
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        sha256=None,
        size=None,
    ),
    "cocolvis": Archive(
        "https://github.com/saic-vul/ritm_interactive_segmentation/releases/download/v1.0/cocolvis_annotation.tar.gz",
        sha256=None,
        size=None,
        after="these are the annotations only: put the LVIS v1 images (COCO 2017) in train/images/ and val/images/",
    ),
}


def _total_length(url: str, response: http.client.HTTPResponse, offset: int) -> int | None:
    """The whole file's length, from Content-Range (a resumed transfer) or Content-Length (a fresh one)."""
    content_range = response.headers.get("Content-Range")
    if content_range:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range)
        if not match or int(match.group(1)) != offset:
            raise UserError(f"{url}: asked for bytes from {offset}, the server sent {content_range!r}")
        return int(match.group(2)) if match.group(2) != "*" else None
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _transfer(url: str, part: Path) -> int | None:
    """One request: append to `part` from where it stops; returns the file's full length if the server told it."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the part may already be whole
            match = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
            return int(match.group(1)) if match else offset
        raise UserError(f"{url}: HTTP {error.code} {error.reason}") from None
    with response:
        if offset and response.status != 206:  # the server ignored the Range header: start over
            offset = 0
        total = _total_length(url, response, offset)
        with open(part, "ab" if offset else "wb") as file, _byte_progress(part, total, offset) as progress:
            while chunk := response.read(CHUNK_BYTES):
                file.write(chunk)
                progress.update(len(chunk))
    return total


def _byte_progress(part: Path, total: int | None, offset: int) -> tqdm:
    """Bytes received of the archive's length (when the server tells it), with an ETA; on a terminal only."""
    name = part.name.removesuffix(".part")
    return tqdm(
        desc=name,
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=None,
        file=sys.stderr,
    )


def download_file(
    url: str, dest: Path, sha256: str | None = None, size: int | None = None, retries: int = RETRIES
) -> str:
    """Download `url` to `dest` (resuming `dest.part`), check its length and hash; returns the SHA-256."""
    part = dest.with_name(dest.name + ".part")
    made = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    total: int | None = None
    for attempt in range(retries + 1):
        try:
            total = _transfer(url, part)
            received = part.stat().st_size
            if total is None or received >= total:
                break
            failure = f"the connection closed at {received} of {total} bytes"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            failure = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
        if attempt == retries:
            if not part.exists():
                for folder in made:  # innermost first: a download that got nothing leaves no empty folders
                    folder.rmdir()
                raise UserError(
                    f"{url}: could not download ({failure}), not one byte came; is there a network to it here? "
                    "Download the archive elsewhere and pass it with --url file://PATH (or a mirror's URL)"
                )
            kept = f"{part.stat().st_size} bytes kept in {part}"
            raise UserError(f"{url}: download interrupted ({failure}); {kept}, run the same command to resume")
    received = part.stat().st_size
    expected_size = size if size is not None else total
    if expected_size is not None and received != expected_size:
        part.unlink()
        raise UserError(
            f"{url}: got {received} bytes, expected {expected_size}; the partial file was removed, try again"
        )
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise UserError(f"{url}: SHA-256 mismatch: expected {sha256.lower()}, got {digest}; the file was removed")
    part.replace(dest)
    return digest


def _extract(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                _refuse_a_bomb(archive, [(info.filename, info.file_size) for info in bundle.infolist()])
                for member in bundle.namelist():
                    target = (into / member).resolve()
                    if not target.is_relative_to(into.resolve()):
                        raise UserError(
                            f"{archive}: refusing to unpack {member!r}, it points outside the target folder"
                        )
                bundle.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                _refuse_a_bomb(archive, [(member.name, member.size) for member in bundle.getmembers()])
                bundle.extractall(into, filter="data")
        elif _begins_a_zip(archive):
            raise UserError(f"{archive}: a damaged or truncated zip archive (its directory at the end is missing)")
        else:
            raise UserError(f"{archive}: neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise UserError(f"{archive}: damaged archive ({error})") from None


def _begins_a_zip(archive: Path) -> bool:
    with archive.open("rb") as file:
        return file.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE


def _refuse_a_bomb(archive: Path, entries: list[tuple[str, int]]) -> None:
    """Refuse an archive whose entries add up to far more than it: images and masks, already compressed, unpack
    to a few times their archive, a file of zeros to a thousand times (3 GB written from a 3 MB zip)."""
    unpacked, packed = sum(size for _, size in entries), archive.stat().st_size
    if unpacked > max(UNPACKED_BYTES_ALWAYS_ALLOWED, MOST_EXPANSION * packed):
        name, largest = max(entries, key=lambda entry: entry[1])
        raise UserError(
            f"{archive}: refusing to unpack {unpacked} bytes from an archive of {packed}, more than "
            f"{MOST_EXPANSION} times its size (the largest entry, {name!r}, {largest} bytes): a damaged or hostile "
            "archive"
        )


def find_layout_root(name: str, top: Path, max_depth: int = 4) -> Path | None:
    """The folder under `top` (breadth first) that has `name`'s layout."""
    level = [top]
    for _ in range(max_depth + 1):
        for folder in level:
            if has_layout(name, folder):
                return folder
        level = [child for folder in level for child in sorted(folder.iterdir()) if child.is_dir()]
    return None


def _merge_conflicts(source: Path, target: Path) -> list[Path]:
    """The paths under `target` that moving `source` in would overwrite (a file there, or a file where the archive
    has a folder)."""
    if not target.exists():
        return []
    if not (source.is_dir() and target.is_dir()):
        return [target]
    return [conflict for child in sorted(source.iterdir()) for conflict in _merge_conflicts(child, target / child.name)]


def _merge_move(source: Path, target: Path) -> None:
    """Move `source`'s content into `target`, keeping what is there; `_merge_conflicts` has found nothing to
    overwrite."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        return
    for child in sorted(source.iterdir()):
        _merge_move(child, target / child.name)


def unpack(name: str, archive: Path, target: Path) -> Path:
    """Unpack `archive` and move the folder with `name`'s layout to `target` (merging into an existing folder)."""
    scratch = target.parent / f".{target.name}.unpacking"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        _extract(archive, scratch)
        found = find_layout_root(name, scratch)
        if found is None:
            layouts = " or ".join("+".join(layout) for layout in dataset_facts(name).layouts)
            raise UserError(f"{archive}: no folder with the {name} layout ({layouts}) inside")
        conflicts = _merge_conflicts(found, target)
        if conflicts:  # before anything is moved: a merge stopped halfway left a dataset that read as complete
            more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
            raise UserError(
                f"{conflicts[0]}{more}: already there, and the archive has its own; refusing to overwrite (nothing "
                "was moved: move them away and run again)"
            )
        _merge_move(found, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _archive_path(url: str, to: Path, target: Path) -> Path:
    """Where the archive at `url` is saved: named as the URL names it, unless that name is the dataset's own folder
    (a URL ending in `/GrabCut`), where the archive would stand in the way of its own unpacking, or no file name."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or to / name == target:
        name = f"{target.name}.archive"  # unpacking tells zip from tar by the bytes, not the name
    return to / name


def download_dataset(
    name: str,
    to: Path,
    url: str | None = None,
    sha256: str | None = None,
    keep_archive: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Download and unpack dataset `name` into `to/<its folder>`; returns that folder (the dataset's root)."""
    archive_info = ARCHIVES.get(name.lower())
    if archive_info is None:
        raise UserError(f"{name}: no public archive to download; datasets with one: {', '.join(sorted(ARCHIVES))}")
    facts = dataset_facts(name)
    target = to / facts.folder
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UserError(f"--sha256 {sha256}: expected a SHA-256, 64 hexadecimal digits")
    if _holds_the_dataset(facts.name, target):
        unread = " (--url not read)" if url is not None else ""
        echo(f"{target} already has the {facts.name} layout; nothing to download{unread}")
        return target
    expected = (sha256 or archive_info.sha256 or "").lower() or None
    size = archive_info.size if url is None else None
    url = _as_url(url) if url is not None else archive_info.url
    archive = _archive_path(url, to, target)
    if archive.exists() and not archive.is_file():
        raise UserError(f"{archive}: a folder where the archive {url} is to be saved; move it, or pass another --to")
    found = archive.exists()  # by hand, as the --url file itself, or by a run that could not unpack it: kept
    if found:
        digest = file_sha256(archive)
        if expected and digest != expected:
            raise UserError(
                f"{archive}: SHA-256 mismatch: expected {expected}, got {digest}; remove the file and run again"
            )
    else:
        echo(f"downloading {url} -> {archive}")
        digest = download_file(url, archive, expected, size)
    if expected:
        echo(f"sha256 {digest} (matches)")
    else:
        echo(f"sha256 {digest} (no published checksum to compare with; pass --sha256 {digest} to pin it next time)")
    echo(f"unpacking {archive.name} -> {target}")
    try:
        unpack(facts.name, archive, target)
    except UserError as error:
        if found:  # the next run would read it again, whatever --url it is given
            raise UserError(
                f"{error}; {archive} was there before this run and was unpacked instead of downloading {url}: move "
                "it away to download afresh"
            ) from None
        archive.unlink()
        raise UserError(f"{error}; the downloaded file was removed") from None
    if found:
        echo(f"kept {archive}, which was there before")
    elif not keep_archive:
        archive.unlink()
    if archive_info.after:
        echo(f"note: {archive_info.after}")
    return target


def _holds_the_dataset(name: str, target: Path) -> bool:
    """`name`'s layout with something in each of its folders: folders made by hand, still empty, are filled."""
    if not has_layout(name, target):
        return False
    parts = [target / part for layout in dataset_facts(name).layouts for part in layout if (target / part).exists()]
    return all(any(part.iterdir()) for part in parts if part.is_dir())


def _as_url(url: str) -> str:
    """`--url` as given, or a local archive's path as a file:// URL."""
    if url.startswith("file://"):
        local = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if not local.is_file():
            raise UserError(f"--url {url}: no archive file at {local}")
        return url
    if "://" in url:
        return url
    local = expand_home(url)
    if not local.is_file():
        raise UserError(f"--url {url}: neither a URL (https://..., file:///...) nor an archive file here")
    return local.resolve().as_uri()
