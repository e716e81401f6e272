"""torchrun support in one place: join the process group the launcher describes, and wait for the others."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins the process group when torchrun started several ranks."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = current_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    target = torch.device(device)
    if target.type == "cuda" and target.index is None and world > 1:
        target = torch.device("cuda", local_rank)
    if world > 1 and not dist.is_initialized():
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return rank, world, target


def current_rank() -> int:
    """This process's rank as torchrun sets it (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
