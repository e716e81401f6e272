"""What every upsampler with weights shares: the authors' checkpoint loader hook and frozen-means-eval."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from torch import nn

from isegprobe.upsamplers.base import Upsampler

LearnedT = TypeVar("LearnedT", bound="LearnedUpsampler")


class LearnedUpsampler(Upsampler):
    """An upsampler with learned weights.

    `scale` is the method's native factor (its output is then resized to the guidance image), or None where the method
    predicts the guidance image's grid directly. A frozen instance (no parameter requires grad) stays in eval mode when
    a probe calls `.train()`: its BatchNorm keeps the authors' running statistics and its dropout stays off. Unless
    `follow_train_mode()` was called: then it switches with the probe, as the iSegProbe research code's
    `net.train()` switches its frozen upsamplers (BatchNorm on batch statistics, dropout on, LoftUp's min-max over
    the batch), while the running statistics stay the authors' for evaluation, where the research code reloads them.
    """

    trainable = True
    scale: int | None = None
    follows_train_mode = False

    def train(self: LearnedT, mode: bool = True) -> LearnedT:
        learns = any(parameter.requires_grad for parameter in self.parameters())
        return super().train(mode and (learns or self.follows_train_mode))

    def follow_train_mode(self) -> None:
        """Switch to training mode with the probe even when frozen, without updating BatchNorm running statistics."""
        self.follows_train_mode = True
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                # Batch statistics in training mode, untouched running statistics (used in eval mode).
                module.track_running_stats = False

    def load_checkpoint(self, path: Path) -> None:
        """Load the checkpoint file the method's authors publish, strictly."""
        raise NotImplementedError


def with_weights(upsampler: LearnedT, weights: str | None) -> LearnedT:
    """`upsampler` as built (random init, train mode), or loaded from the authors' file and put in eval mode."""
    if weights is None:
        return upsampler
    upsampler.load_checkpoint(Path(weights))
    return upsampler.eval()
