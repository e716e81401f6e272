"""The user's permission to load files that carry code, scoped to one command.

TorchScript archives (OpenAI's CLIP `.pt` files, for one) can only be loaded by running the code they carry, so a
command loads them only when the user says so with --allow-torchscript. The permission is given once per command but
used deep down, where a featurizer or an upsampler reads its weights file; it is held here for the length of a
block instead of being passed through every factory in between, which have nothing else to do with files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ALLOW_TORCHSCRIPT = "--allow-torchscript"

_torchscript_allowed: ContextVar[bool] = ContextVar("torchscript_allowed", default=False)


@contextmanager
def allowing_torchscript(allowed: bool = True) -> Iterator[None]:
    """Within the block, TorchScript weights files are loaded (`allowed`) or refused (the default everywhere else)."""
    token = _torchscript_allowed.set(allowed)
    try:
        yield
    finally:
        _torchscript_allowed.reset(token)


def torchscript_allowed() -> bool:
    """Whether the user allowed this command to load TorchScript archives."""
    return _torchscript_allowed.get()
