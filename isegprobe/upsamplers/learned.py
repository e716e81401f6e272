"""What every upsampler with weights shares: the authors' checkpoint loader hook and frozen-means-eval."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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
    the batch).
    """

    trainable = True
    scale: int | None = None
    follows_train_mode = False
    # How the guidance images its authors' checkpoints learnt from were normalized: "imagenet" (ImageNet's mean and
    # std, whatever the featurizer), or None where the method does not depend on it (LoftUp rescales each image by
    # its own range; JAFAR takes the featurizer's own statistics, as the probe gives them).
    guidance_statistics: str | None = None

    def train(self: LearnedT, mode: bool = True) -> LearnedT:
        learns = any(parameter.requires_grad for parameter in self.parameters())
        return super().train(mode and (learns or self.follows_train_mode))

    def follow_train_mode(self) -> None:
        """Switch to training mode with the probe even when frozen, as the research code's `net.train()` does.

        Its BatchNorm then normalizes by batch statistics and moves its running statistics towards them, and the
        eval-mode passes of the iterative clicks use those moved statistics, as the research code's do. Evaluation
        uses the authors' (the research code reloads their file, since it saves no upsampler): they are kept beside
        the moving ones (`authors_running_mean`, ... of each BatchNorm, saved with the probe) for
        `use_authors_statistics`. A probe saved before they were kept never moved its statistics, so its running
        ones are the authors'.
        """
        self.follows_train_mode = True
        for module in self._batch_norms():
            for name in _STATISTICS:
                module.register_buffer(f"authors_{name}", getattr(module, name).clone())
        self.register_load_state_dict_pre_hook(_authors_statistics_of_older_probes)

    def use_authors_statistics(self) -> None:
        """Put the authors' running statistics back into every BatchNorm, for evaluation."""
        for module in self._batch_norms():
            if hasattr(module, "authors_running_mean"):
                for name in _STATISTICS:
                    getattr(module, name).copy_(getattr(module, f"authors_{name}"))

    def _batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [module for module in self.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]

    def load_checkpoint(self, path: Path) -> None:
        """Load the checkpoint file the method's authors publish, strictly."""
        raise NotImplementedError


_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _authors_statistics_of_older_probes(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """A state dict saved before the authors' statistics were kept beside the running ones: they are its running
    ones, which training did not move then."""
    for name, child in module.named_modules():
        if not hasattr(child, "authors_running_mean"):
            continue
        where = f"{prefix}{name}." if name else prefix
        for statistic in _STATISTICS:
            if f"{where}authors_{statistic}" not in state_dict and f"{where}{statistic}" in state_dict:
                state_dict[f"{where}authors_{statistic}"] = state_dict[f"{where}{statistic}"]


def with_weights(upsampler: LearnedT, weights: str | None) -> LearnedT:
    """`upsampler` as built (random init, train mode), or loaded from the authors' file and put in eval mode."""
    if weights is None:
        return upsampler
    upsampler.load_checkpoint(Path(weights))
    return upsampler.eval()
