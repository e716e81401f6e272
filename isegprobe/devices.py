"""Device choice in one place."""

from __future__ import annotations

import os

import torch


def backbone_autocast(device: torch.device) -> torch.autocast:
    """The frozen backbone's precision: bf16 (fp16 where bf16 is missing) autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def use_deterministic_arithmetic() -> None:
    """The settings iSegProbe's evaluate.py runs under (its `seed_all`): deterministic cuDNN and cuBLAS kernels, no
    cuDNN autotuning, so that the same inputs give the same numbers on the same GPU in both codes."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def default_device() -> str:
    """`cuda` when a GPU is visible, else `cpu`: the extraction and training defaults."""
    return "cuda" if torch.cuda.is_available() else "cpu"
