"""Device choice in one place."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def backbone_autocast(device: torch.device) -> torch.autocast:
    """The frozen backbone's precision: bf16 (fp16 where bf16 is missing) autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@contextmanager
def deterministic_arithmetic(enabled: bool = True) -> Iterator[None]:
    """The settings iSegProbe's evaluate.py runs under (its `seed_all`): deterministic cuDNN and cuBLAS kernels, no
    cuDNN autotuning, so that the same inputs give the same numbers on the same GPU in both codes. They are process
    wide and slow some kernels, so the previous ones come back on exit."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read by cuBLAS once, when CUDA starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def default_device() -> str:
    """`cuda` when a GPU is visible, else `cpu`: the extraction and training defaults."""
    return "cuda" if torch.cuda.is_available() else "cpu"
