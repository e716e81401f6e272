"""Upsamplers by name, timm style: each method's file registers a factory and `create_upsampler` builds it."""

from __future__ import annotations

from collections.abc import Callable

from isegprobe.registry import Registry
from isegprobe.upsamplers.base import Upsampler

UpsamplerFactory = Callable[[int, str | None], Upsampler]
UPSAMPLERS: Registry[UpsamplerFactory] = Registry("upsampler")


def register_upsampler(name: str) -> Callable[[UpsamplerFactory], UpsamplerFactory]:
    """Decorate a `(dim, weights) -> Upsampler` factory to make it `create_upsampler(name, ...)`."""
    return UPSAMPLERS.register(name)


def list_upsamplers() -> list[str]:
    return UPSAMPLERS.names()


def create_upsampler(name: str, dim: int, weights: str | None = None) -> Upsampler:
    """Build upsampler `name` for `dim`-channel features; `weights`: the file its authors publish, if it has one.

    With `weights=None` a method must still build (randomly initialised): `load_probe` rebuilds upsamplers that way
    and fills their weights from the probe checkpoint.
    """
    return UPSAMPLERS.get(name)(dim, weights)
