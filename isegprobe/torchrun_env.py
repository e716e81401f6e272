"""What torchrun tells a process through its environment: its rank, and how many ranks run on this machine. Read
without torch, so that the command modules' options (extract-features' default --workers) and their --help start
without it; `distributed.py` joins the process group."""

from __future__ import annotations

import os

from isegprobe.errors import UserError


def current_rank() -> int:
    """This process's rank as torchrun sets it (0 outside torchrun)."""
    return launcher_number("RANK", 0, least=0)


def ranks_on_this_machine() -> int:
    """The torchrun ranks on this machine (LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return launcher_number("LOCAL_WORLD_SIZE", 1, least=1)


def launcher_number(name: str, default: int, least: int) -> int:
    """A count torchrun puts in the environment (WORLD_SIZE, RANK, ...), read as a whole number of at least `least`;
    one left over from another job, or mistyped, is named."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise UserError(
            f"{name}={text!r} in the environment: torchrun sets it to a whole number of at least {least}; unset it "
            "to run one process"
        )
    return value
