"""The learning-rate schedule as a pure function of the step, so a resumed run needs only the step to continue."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from isegprobe.config import ScheduleConfig


@dataclass(frozen=True)
class StepSchedule:
    """MultiStepLR with milestones in epochs: during epoch e the rate is lr * gamma**(milestones <= e)."""

    base_lr: float
    milestones: tuple[int, ...]
    gamma: float
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def from_config(cls, config: ScheduleConfig, base_lr: float, num_items: int, batch_size: int) -> StepSchedule:
        """An epoch is its full batches: RITM's loader drops the last, partial one (SBD train: 1062 steps of 8, not
        1063), unless the images do not fill one batch, when the epoch is that one batch (`drops_last_batch`)."""
        steps_per_epoch = max(1, num_items // batch_size)
        total_steps = config.epochs * steps_per_epoch
        if config.max_iters is not None:
            total_steps = min(total_steps, config.max_iters)
        return cls(base_lr, tuple(sorted(config.milestones)), config.gamma, steps_per_epoch, total_steps)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, self.epoch_of(step))


def drops_last_batch(num_items: int, batch_size: int) -> bool:
    """Whether an epoch leaves out its last, partial batch, as `StepSchedule` counts its steps."""
    return num_items >= batch_size
