"""How images are standardized before the featurizer: with the model's own statistics, or with ImageNet's for every
model, as the iSegProbe research code does (its base model normalizes every input with ImageNet mean/std, whatever
the network was trained with: AugReg ViTs with 0.5/0.5, CLIP with its own).

The choice changes the features, so it is part of a featurizer's provenance and a store made one way is never read
as the other.
"""

from __future__ import annotations

from isegprobe.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMALIZATIONS = ("model", "imagenet")
DEFAULT_NORMALIZATION = "model"

Statistics = tuple[tuple[float, float, float], tuple[float, float, float]]


def input_statistics(normalization: str, model_statistics: Statistics) -> Statistics:
    """(mean, std) the images are standardized with under `normalization`."""
    if normalization == "model":
        return model_statistics
    if normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    raise UserError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
