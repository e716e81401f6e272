"""Device choice in one place."""

from __future__ import annotations

import torch


def default_device() -> str:
    """`cuda` when a GPU is visible, else `cpu`: the extraction and training defaults."""
    return "cuda" if torch.cuda.is_available() else "cpu"
