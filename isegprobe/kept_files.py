"""The files a training run and an evaluation keep as their results, which no output a user names may replace."""

from __future__ import annotations

from pathlib import Path

from isegprobe.errors import UserError

EVALUATION_FILES = ("results.json", "results.csv", "ious.npz")
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


def refuse_to_replace_a_kept_file(path: Path) -> None:
    """A table, statistics or a picture written to `path` must not replace a file of the training run or the
    evaluation in its folder: `cache stats --out RUN/best.json` left the run neither resumable nor evaluable."""
    if not path.is_file():
        return
    folder = path.parent
    if path.name in RUN_FILES and any((folder / marker).is_file() for marker in RUN_MARKERS):
        raise UserError(f"{path}: a file of the training run in {folder}, which this would replace; name another")
    if path.name in EVALUATION_FILES and (folder / "results.json").is_file():
        raise UserError(f"{path}: a file of the evaluation in {folder}, which this would replace; name another")
