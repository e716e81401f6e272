"""Upsamplers by name, timm style: each method's file registers a factory and `create_upsampler` builds it."""

from __future__ import annotations

from collections.abc import Callable

from isegprobe.errors import UserError
from isegprobe.upsamplers.base import Upsampler

UpsamplerFactory = Callable[[int, str | None], Upsampler]
_REGISTRY: dict[str, UpsamplerFactory] = {}


def register_upsampler(name: str) -> Callable[[UpsamplerFactory], UpsamplerFactory]:
    def decorator(factory: UpsamplerFactory) -> UpsamplerFactory:
        _REGISTRY[name.lower()] = factory
        return factory

    return decorator


def list_upsamplers() -> list[str]:
    return sorted(_REGISTRY)


def create_upsampler(name: str, dim: int, weights: str | None = None) -> Upsampler:
    """Build upsampler `name` for `dim`-channel features; `weights`: the file its authors publish, if it has one.

    With `weights=None` a method must still build (randomly initialised): `load_probe` rebuilds upsamplers that way
    and fills their weights from the probe checkpoint.
    """
    factory = _REGISTRY.get(name.lower())
    if factory is None:
        raise UserError(f"unknown upsampler {name!r}; known: {', '.join(list_upsamplers())}")
    return factory(dim, weights)
