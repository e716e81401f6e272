"""What `evaluate --overwrite` does with the pictures (--vis-preds) and features (--save-feats) of the evaluation
it replaces: they go with its results, once the new one has written its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isegprobe.inference.results import ResultsWriter
from isegprobe.output_files import OVERLAY_FOLDER


@contextmanager
def replacing_earlier_pictures_and_features(out_dir: Path, writer: ResultsWriter) -> Iterator[None]:
    """--overwrite replaces an evaluation: the pictures (--vis-preds) and features (--save-feats) of the one it
    replaces go with its results, or they would sit beside the new ones as theirs, and a resumed --vis-preds would
    take an earlier probe's pictures of an object for its own and not draw it. They are moved aside until the new
    evaluation writes its first results, and put back if it stops before (an unreadable image in its first batch):
    the earlier results stay until then, and must keep their pictures."""
    aside = {}
    for kind in (OVERLAY_FOLDER, "feats"):
        folder, kept = out_dir / kind, out_dir / f".{kind}.replaced"
        _remove_file_or_folder(kept)  # left by an --overwrite that was killed before its first results
        if folder.is_symlink() or folder.is_dir():  # a file so named is the user's: drawing into it is refused
            folder.rename(kept)
            aside[folder] = kept
    try:
        yield
    finally:
        for folder, kept in aside.items():
            if writer.written:
                _remove_file_or_folder(kept)
            else:
                _remove_file_or_folder(folder)  # what the new evaluation drew before it stopped
                kept.rename(folder)


def _remove_file_or_folder(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
