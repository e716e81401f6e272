"""Stopping a run whose loss became NaN or infinite before its checkpoints take in the broken weights.

One optimizer step on a non-finite loss makes every weight NaN, and every step after it trains on nothing; a run
that goes on writes those weights over its last good checkpoint. The loss of each step is watched on the device
(no wait for the GPU), and read back only where the run logs or saves, with the weights themselves checked before a
save: under torchrun a non-finite loss on one rank reaches the others' weights through the averaged gradients.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from isegprobe.errors import UserError


class Diverged(UserError):
    """A run's loss or weights are no longer finite: that run stops, its checkpoints as they were. `first_step`: the
    first step whose loss was not finite (None when only the weights showed it), which the check, made where the
    run logs or saves, may find some steps later."""

    def __init__(self, message: str, first_step: int | None = None) -> None:
        super().__init__(message)
        self.first_step = first_step


class DivergenceWatch:
    """Remembers the first step whose loss was not finite; `check` stops the run once there is one."""

    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss: Tensor, step: int) -> None:
        """Note the loss of step `step` (counted from 1), without reading it back."""
        bad = ~torch.isfinite(loss) & (self.first_step < 0)
        self.first_step = torch.where(bad, torch.full_like(self.first_step, step), self.first_step)

    def check(self, probe: nn.Module, step: int, lr: float, run_dir: Path, saved_step: int | None) -> None:
        """Raise when a loss so far was not finite or the weights are not: the checkpoints written before stay."""
        first = int(self.first_step)
        flags = [torch.isfinite(parameter).all() for parameter in probe.parameters()]
        if first < 0 and (not flags or bool(torch.stack(flags).all())):  # one read-back for all the weights
            return
        when = f"at step {first}" if first >= 0 else f"by step {step} (in the weights)"
        kept = (
            f"the checkpoints in {run_dir} are kept as they were (last: step {saved_step}); `--resume --set "
            "optim.lr=...` continues from there"
            if saved_step is not None
            else f"no checkpoint was written to {run_dir}"
        )
        raise Diverged(
            f"the training loss became NaN or infinite {when} (optim.lr {lr:g}); the run stopped without saving "
            f"these weights: {kept}. A lower optim.lr, or a store checked with `isegprobe cache verify`, may help",
            first if first >= 0 else None,
        )
