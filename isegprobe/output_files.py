"""Where a command writes a file a user named with --out: a file's path, never a folder, and never one of the files
a training run or an evaluation keeps as its results; and output folders that a refused command made, taken away."""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from isegprobe.errors import UserError

EVALUATION_FILES = ("results.json", "results.csv", "ious.npz")
# Where `evaluate --vis-preds` draws its overlays in a results folder: vis/<dataset>/.
OVERLAY_FOLDER = "vis"
# A run's checkpoints (`checkpoint_files` of `last` and `best`), its settings and its logged scalars.
RUN_FILES = (
    "last.safetensors",
    "last.optim.safetensors",
    "last.json",
    "best.safetensors",
    "best.optim.safetensors",
    "best.json",
    "config.yaml",
    "scalars.csv",
)
RUN_MARKERS = ("last.json", "best.json")
CHECKPOINT_PREFIXES = ("last.", "best.")  # the files of a checkpoint (`checkpoint_files` of last and best) begin so
EVALUATION_MARKERS = ("results.json", "ious.npz")  # evaluate's alone: a table of any name may be called results.csv
TENSORBOARD_FOLDER = "tensorboard"  # a run's event files, in a folder of its own
FOLDER_NAMES = ("", ".", "..")  # what a path's last part reads when the path names a folder


def enclosing_store(folder: Path) -> Path | None:
    """The Zarr store that `folder` is or lies inside (a folder with a `zarr.json` among it and its parents)."""
    resolved = folder.resolve()
    return next((candidate for candidate in (resolved, *resolved.parents) if (candidate / "zarr.json").is_file()), None)


def run_markers_in(folder: Path) -> list[str]:
    """The files that make `folder` a training run's (its checkpoints' metadata), those it holds."""
    return [marker for marker in RUN_MARKERS if (folder / marker).is_file()]


def run_files_in(folder: Path) -> list[str]:
    """Every file of a training run that `folder` holds, its TensorBoard folder too: not its markers alone, since a
    run folder that lost its last.json still holds that run's best checkpoint and logs."""
    held = [name for name in RUN_FILES if (folder / name).exists()]
    return [*held, f"{TENSORBOARD_FOLDER}/"] if (folder / TENSORBOARD_FOLDER).exists() else held


def evaluation_markers_in(folder: Path) -> list[str]:
    """The files that make `folder` an evaluation's (its results and curves), those it holds."""
    return [marker for marker in EVALUATION_MARKERS if (folder / marker).exists()]


def refuse_to_replace_a_kept_file(path: Path) -> None:
    """A table, statistics or a picture written to `path` must not go into a feature store (where it replaced the
    store's own metadata or a shard, and where `extract-features --overwrite` deletes what it holds) nor replace a
    file of the training run or the evaluation (its overlays included) in its folder: `cache stats --out
    RUN/best.json` left the run neither resumable nor evaluable, and `report --out RUN/tensorboard/events...` its
    TensorBoard log a table."""
    store = enclosing_store(path.parent)
    if store is not None:
        raise UserError(f"{path}: inside the feature store {store}, which a file written here damages; name another")
    if not path.is_file():
        return
    folder = path.parent
    if path.name in RUN_FILES and run_markers_in(folder):
        raise UserError(f"{path}: a file of the training run in {folder}, which this would replace; name another")
    if folder.name == TENSORBOARD_FOLDER and run_markers_in(folder.parent):
        raise UserError(f"{path}: a TensorBoard log of the training run in {folder.parent}; name another file")
    if path.name in EVALUATION_FILES and (folder / "results.json").is_file():
        raise UserError(f"{path}: a file of the evaluation in {folder}, which this would replace; name another")
    if folder.parent.name == OVERLAY_FOLDER and (folder.parent.parent / "results.json").is_file():
        raise UserError(
            f"{path}: an overlay of the evaluation in {folder.parent.parent}, which only evaluating again would draw "
            "again; name another"
        )


def replaceable_file(path: Path) -> Path:
    """The file that writing `path` replaces: `path`, or the regular file a symbolic link there points to (the link
    stays). Anything else that stands there is refused: a write replaces its file whole, and `cache stats --out
    /dev/null` had turned /dev/null into a file of statistics."""
    if path.is_symlink() and path.is_file():
        return path.resolve()
    if os.path.lexists(path) and not path.is_file() and not path.is_dir():
        kinds = (
            (path.is_symlink, "a symbolic link to nothing"),
            (path.is_fifo, "a named pipe"),
            (path.is_char_device, "a device"),
            (path.is_block_device, "a device"),
            (path.is_socket, "a socket"),
        )
        kind = next((name for test, name in kinds if test()), "not a regular file")
        raise UserError(f"{path}: {kind}, which writing a file here would replace; give a regular file's path")
    return path


def output_file(out: str | Path, option: str = "--out") -> Path:
    """`out` as the path of a file to write. An empty one, one that ends in a path separator and one that names a
    folder are refused: pathlib reads them as the current folder or drops the separator, so the file would be
    written somewhere the user did not name (`figs/` as ./figs.png, `rep/` as a file named rep). So is one that the
    write would refuse (a run's or an evaluation's file, a pipe): before the command's work, not after it."""
    text = os.fspath(out)
    separators = tuple(separator for separator in (os.sep, os.altsep) if separator)
    if not text:
        raise UserError(f"{option} '': empty; give the path of the file to write")
    if text.endswith(separators):
        raise UserError(f"{option} {text}: ends in a path separator, so it names a folder; give a file's path")
    if Path(text).name in FOLDER_NAMES or Path(text).is_dir():
        raise UserError(f"{option} {text}: a folder; give a file's path")
    refuse_to_replace_a_kept_file(replaceable_file(Path(text)))
    return Path(text)


def text_output_file(out: str | Path, option: str = "--out") -> Path:
    """`output_file` for a table or statistics written as text. An existing file there that is not text (a picture,
    an array) is refused too: `report --out RESULTS/iou_vs_clicks.png` replaced the evaluation's plot with a table."""
    path = output_file(out, option)
    if path.is_file() and not _reads_as_text(path):
        raise UserError(
            f"{option} {out}: an existing file that is not text (a picture or data), which the text written here "
            "would replace; name a text file (.md, .csv, .json)"
        )
    return path


def _reads_as_text(path: Path) -> bool:
    """Whether the file's first 8 KiB are UTF-8 text without NUL bytes (a character cut at the end is text)."""
    with path.open("rb") as file:
        head = file.read(8192)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


@contextmanager
def folders_removed_if_left_empty(folders: Sequence[Path]) -> Iterator[None]:
    """Those of `folders` (and of their parents) that do not exist yet are removed again if the `with` body fails
    before writing anything into them: a refused `train --out runs/new` left an empty runs/new behind, which reads as
    a run that was started."""
    made = [folder for path in folders for folder in (path, *path.parents) if not folder.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(set(made), key=lambda path: len(path.parts), reverse=True):
            with suppress(OSError):  # not empty, or already gone: kept as it is
                folder.rmdir()
        raise
