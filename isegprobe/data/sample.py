"""The one type every dataset loader yields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """One image with its object instances.

    `labels` is an instance label map: 0 is background, k > 0 is instance k (1..num_instances). Overlapping
    instances are painted in the loader's order, later on top. `ignore` marks pixels that count neither as
    object nor as background (GrabCut's boundary band, VOC's 255), for every instance of the image.
    """

    id: str
    image: np.ndarray  # uint8 [H, W, 3], RGB
    labels: np.ndarray  # uint16 [H, W]
    ignore: np.ndarray  # bool [H, W]

    def __post_init__(self) -> None:
        height, width = self.image.shape[:2]
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(
                f"sample {self.id}: image must be uint8 [H, W, 3], got {self.image.dtype} {self.image.shape}"
            )
        for name in ("labels", "ignore"):
            if getattr(self, name).shape != (height, width):
                raise ValueError(
                    f"sample {self.id}: {name} shape {getattr(self, name).shape} "
                    f"differs from image size {(height, width)}"
                )

    @property
    def num_instances(self) -> int:
        return int(self.labels.max())

    def instance_mask(self, instance: int) -> np.ndarray:
        """Boolean mask of instance `instance` (1-based)."""
        return self.labels == instance
