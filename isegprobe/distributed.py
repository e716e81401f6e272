"""torchrun support in one place: join the process group the launcher describes, and wait for the others."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from isegprobe.errors import UserError


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


def refuse_ranks_that_differ(settings: dict[str, Any]) -> None:
    """Under torchrun every rank must run the same command. Ranks of other step counts wait for each other for ever
    in the gradients' all-reduce; ranks of other recipes average gradients of different steps, and rank 0 saves its
    own weights. `settings` (what this rank runs with) is compared with rank 0's on every rank, so all of them stop
    alike, naming the first setting that differs."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gathered: list[dict[str, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, settings)
    reference = gathered[0] or {}
    for rank, other in enumerate(gathered[1:], start=1):
        other = other or {}
        for key in sorted(reference.keys() | other.keys()):
            if reference.get(key) != other.get(key):
                raise UserError(
                    f"torchrun rank {rank} runs another command than rank 0: {key} is {other.get(key)!r} there and "
                    f"{reference.get(key)!r} on rank 0; start every rank with the same command, on the same files"
                )


class LostRank(Exception):
    """Another torchrun rank stopped (it failed, or was killed) while this one waited for it in a collective."""

    def __init__(self, step: int, kept: dict[str, int | None]) -> None:
        super().__init__(f"lost contact with another torchrun rank after step {step}")
        self.step, self.kept = step, kept


def lost_contact(error: BaseException) -> bool:
    """Whether `error` is a collective's failure because a peer went away: gloo raises a plain RuntimeError whose
    text names its transport ("Connection closed by peer"); NCCL and the rendezvous store raise torch's
    `DistError`s."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return isinstance(error, dist.DistError) or "/gloo/" in str(error)
