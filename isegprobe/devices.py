"""Device choice in one place: every command runs on CUDA when a GPU is visible, else on the CPU, unless --device
says otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from isegprobe.errors import UserError


def featurizer_autocast(device: torch.device) -> torch.autocast:
    """The frozen featurizer's precision: bf16 (fp16 where bf16 is missing) autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def from_host(values: torch.Tensor | np.ndarray | Sequence, device: torch.device | str | None) -> torch.Tensor:
    """Values the host made (clicks, draws, picks), on `device` without waiting for it. A plain copy from the host to a
    GPU first waits for every kernel queued there; this one (`non_blocking`) is staged at once and ordered before the
    kernels that read it, so the host goes on queueing work. The values must not be changed afterwards."""
    return torch.as_tensor(values).to(device=device, non_blocking=True)


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
    """`cuda` when a GPU is visible, else `cpu`: the device of every command that is not told otherwise (--help
    says so: `commands.options.DEVICE_RULE`)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """The device a command runs on: `device` as given (cpu, cuda, cuda:N), else `default_device()`. A GPU asked for
    where there is none is refused here, before any work starts."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: no CUDA device is available here")
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"--device {device}: this machine has {count} CUDA device(s), numbered from 0")
    return str(parsed)
