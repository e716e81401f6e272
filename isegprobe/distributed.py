"""torchrun support in one place: join the process group the launcher describes (`torchrun_env.py` reads it), and
wait for the others."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from isegprobe.errors import UserError
from isegprobe.torchrun_env import current_rank, launcher_number, ranks_on_this_machine

log = logging.getLogger(__name__)


def init_from_env(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins the process group when torchrun started several ranks."""
    world = launcher_number("WORLD_SIZE", 1, least=1)
    rank = current_rank()
    if rank >= world:
        raise UserError(
            f"RANK={rank} with WORLD_SIZE={world} in the environment: a rank counts from 0 to WORLD_SIZE - 1"
        )
    local_rank, ranks_here = launcher_number("LOCAL_RANK", 0, least=0), ranks_on_this_machine()
    if local_rank >= ranks_here and "LOCAL_WORLD_SIZE" in os.environ:
        raise UserError(
            f"LOCAL_RANK={local_rank} with LOCAL_WORLD_SIZE={ranks_here} in the environment: a rank on this machine "
            "counts from 0 to LOCAL_WORLD_SIZE - 1"
        )
    target = torch.device(device)
    if target.type == "cuda" and target.index is None and world > 1:
        target = torch.device("cuda", local_rank)
    if world > 1 and not dist.is_initialized():
        if target.type == "cuda":
            torch.cuda.set_device(target)
        if "TORCHELASTIC_RUN_ID" not in os.environ:
            log.warning(
                "WORLD_SIZE=%d is set, but torchrun did not start this process: it waits at %s:%s for the rest of "
                "those processes to join. Unset WORLD_SIZE and RANK to run one process",
                world,
                os.environ.get("MASTER_ADDR", "?"),
                os.environ.get("MASTER_PORT", "?"),
            )
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return rank, world, target


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
