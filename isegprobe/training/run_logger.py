"""Where training curves go: TensorBoard by default, Weights & Biases on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from isegprobe.errors import UserError


class RunLogger:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        tensorboard: bool = True,
        use_wandb: bool = False,
        wandb_project: str = "isegprobe",
    ) -> None:
        run_dir = Path(run_dir)
        self._tensorboard = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if use_wandb:
            self._wandb = _start_wandb(run_dir, config, wandb_project)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._tensorboard is not None:
            for tag, value in values.items():
                self._tensorboard.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def images(self, tag: str, images: Tensor, step: int) -> None:
        """images: [N, 3, H, W] floats in [0, 1]."""
        if self._tensorboard is not None:
            self._tensorboard.add_images(tag, images, step)
        if self._wandb is not None:
            pictures = [self._wandb.Image(image.permute(1, 2, 0).numpy()) for image in images]
            self._wandb.log({tag: pictures}, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _start_wandb(run_dir: Path, config: dict[str, Any], project: str) -> Any:
    try:
        import wandb
    except ImportError as error:
        raise UserError("--wandb needs the wandb package: pip install 'isegprobe[wandb]' (or drop --wandb)") from error
    wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config)
    return wandb
