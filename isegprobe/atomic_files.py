"""Files replaced all at once: written whole under a temporary name, synced, then moved over the old one, so that a
reader, a crash or a full disk never leaves a torn file. Checkpoints, results, logs and every file a user names with
--out are written so."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from isegprobe.errors import writing_to
from isegprobe.output_files import refuse_to_replace_a_kept_file, replaceable_file


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` all at once: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    temp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with writing_to(path, stand_in=temp_path), open(temp_path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a name too long to create is too long to remove: the first error tells
            temp_path.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_output_file(path: str | Path, data: bytes) -> None:
    """`atomic_write_bytes` into a path a user named, making its folders first, as the plots make theirs: a folder
    that does not exist yet is one to create, not one that vanished while the command ran. A file of a training run
    or an evaluation is never replaced (`refuse_to_replace_a_kept_file`)."""
    path = replaceable_file(Path(path))
    refuse_to_replace_a_kept_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; a file system that cannot sync a folder is left to its own order."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
