"""Where training curves go: TensorBoard and a plain CSV by default, Weights & Biases on request."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Collection
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from isegprobe.atomic_files import atomic_write_bytes
from isegprobe.errors import UserError, writing_to
from isegprobe.output_files import TENSORBOARD_FOLDER

WANDB_RUN_ID = "wandb_run_id"
WANDB_AT_LEAST = (0, 19, 10)  # reinit="create_new"
SCALARS_CSV = "scalars.csv"
EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\.")  # the second TensorBoard's writer made the file in


class RunLogger:
    """One call logs to every sink. `scalars.csv` (columns step, tag, value) reads without TensorBoard, e.g. with
    `pandas.read_csv(run / "scalars.csv").pivot(index="step", columns="tag", values="value")`."""

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        tensorboard: bool = True,
        use_wandb: bool = False,
        wandb_project: str = "isegprobe",
        write_csv: bool = True,
        resumed_at: int | None = None,
    ) -> None:
        """`resumed_at`: the step a resumed run restarts from; what the interrupted run logged after it (past its
        last checkpoint) is dropped, since the resumed run logs those steps again: CSV rows are removed, and
        TensorBoard is told to hide the old events from the next step on (its `purge_step`), which would otherwise
        draw the two runs' values over each other."""
        self.run_dir = Path(run_dir)
        self._tensorboard = None
        self._wandb = None
        with writing_to(self.run_dir / SCALARS_CSV):
            self._csv_file = _open_csv(self.run_dir / SCALARS_CSV, resumed_at) if write_csv else None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = resumed_at + 1 if resumed_at is not None else None
            if resumed_at is not None:
                _wait_to_sort_after(self.run_dir / TENSORBOARD_FOLDER)
            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_FOLDER), purge_step=purge_step)
        if use_wandb:
            self._wandb = self._start_wandb(config, wandb_project, resumed=resumed_at is not None)

    def _start_wandb(self, config: dict[str, Any], project: str, resumed: bool) -> Any:
        """The run's W&B run; its id is kept in `run_dir/wandb_run_id`, so that a resumed run continues that W&B run
        rather than starting a second one of the same name (W&B keeps the first values of a step logged twice,
        which a resumed run logs as the interrupted one did)."""
        id_file = self.run_dir / WANDB_RUN_ID
        kept_id = (id_file.read_text().strip() or None) if resumed and id_file.is_file() else None
        run = start_wandb(self.run_dir, config, project, job_type="train", run_id=kept_id)
        if kept_id is None:
            with writing_to(id_file):
                atomic_write_bytes(id_file, run.id.encode())
        return run

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._csv_file is not None:
            with writing_to(self.run_dir / SCALARS_CSV):
                csv.writer(self._csv_file).writerows([step, tag, value] for tag, value in values.items())
                self._csv_file.flush()
        if self._tensorboard is not None:
            with writing_to(self.run_dir / TENSORBOARD_FOLDER):
                for tag, value in values.items():
                    self._tensorboard.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def images(self, tag: str, images: Tensor, step: int) -> None:
        """images: [N, 3, H, W] floats in [0, 1]."""
        if self._tensorboard is not None:
            with writing_to(self.run_dir / TENSORBOARD_FOLDER):
                self._tensorboard.add_images(tag, images, step)
        if self._wandb is not None:
            # W&B takes float arrays as 0-255 values, so [0, 1] floats would show black: hand it bytes.
            pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            pictures = [_wandb().Image(picture) for picture in pixels]
            self._wandb.log({tag: pictures}, step=step)

    def close(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        if self._tensorboard is not None:
            with writing_to(self.run_dir / TENSORBOARD_FOLDER):
                self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wait_to_sort_after(log_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second it was made in, then
    the host, the process and a counter of the process's writers (which sorts 10 before 9). A resumed run's file
    made in the same second as the interrupted run's last one could be read first, and its purge would then hide
    nothing but its own steps: waiting for the second after it makes it the last. A file named more than a second
    ahead of this clock (another machine's) is not waited for: at most two seconds pass here."""
    names = (EVENT_FILE.match(path.name) for path in log_dir.glob("events.out.tfevents.*"))
    newest = max((int(found.group(1)) for found in names if found), default=None)
    if newest is None or newest > int(time.time()) + 1:
        return
    while int(time.time()) <= newest:
        time.sleep(0.05)


def _open_csv(path: Path, resumed_at: int | None) -> TextIO:
    """`path` opened for appending rows: started afresh, or, for a resumed run, holding its rows up to the step the
    run resumes from (rewritten through a temporary file, so an interruption never loses the earlier rows; a row the
    interrupted run left half-written is dropped)."""
    kept: list[list[str]] = []
    if resumed_at is not None and path.is_file():
        with path.open(newline="") as existing:
            rows = [row for row in csv.reader(existing) if len(row) == 3 and row[0].isdigit()]
        kept = [row for row in rows if int(row[0]) <= resumed_at]
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "tag", "value"])
        writer.writerows(kept)
    partial.replace(path)
    return path.open("a", newline="")


def logged_steps(path: Path, prefix: str, names: Collection[str]) -> dict[int, dict[str, float]]:
    """The steps that the `scalars.csv` at `path` logged every one of `names` at, under `prefix` (`train/loss`: prefix
    `train/`, name `loss`), each with its values by name; other tags, and rows cut short as they were written, are
    passed over."""
    logged: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return logged
    with path.open(newline="") as file:
        for row in csv.reader(file):
            if len(row) != 3 or not row[0].isdigit() or not row[1].startswith(prefix):
                continue
            name = row[1].removeprefix(prefix)
            if name in names:
                with suppress(ValueError):  # a value cut short as it was written
                    logged.setdefault(int(row[0]), {})[name] = float(row[2])
    return {step: values for step, values in logged.items() if values.keys() >= set(names)}


def start_wandb(run_dir: Path, config: dict[str, Any], project: str, job_type: str, run_id: str | None = None) -> Any:
    """A W&B run named after `run_dir` that keeps its files there (`.log`, `.summary`, `.finish`); with `run_id`,
    that W&B run continued. `WANDB_MODE=offline` works without a network: `wandb sync` uploads the run later.

    Each call makes a run of its own, open beside the others (`reinit="create_new"`): probes trained side by side log
    one run each. By default a second `wandb.init` in a process hands back the first run, which then got every
    probe's scalars."""
    wandb = _wandb()
    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        name=run_dir.name,
        dir=str(run_dir),
        config=config,
        job_type=job_type,
        reinit="create_new",
        id=run_id,
        resume="allow" if run_id else None,
    )


def _wandb() -> Any:
    """The wandb module, of a version that keeps several runs open in one process."""
    try:
        import wandb
    except ImportError as error:
        raise UserError(
            "--wandb needs the wandb package: pip install -e '.[wandb]' in isegprobe's source folder (or drop --wandb)"
        ) from error
    version = tuple(int(part) for part in re.findall(r"\d+", wandb.__version__)[:3])
    if version < WANDB_AT_LEAST:
        raise UserError(
            f"--wandb needs wandb {'.'.join(map(str, WANDB_AT_LEAST))} or newer (a run per probe trained side by "
            f"side), and {wandb.__version__} is installed: pip install -U wandb (or drop --wandb)"
        )
    return wandb
