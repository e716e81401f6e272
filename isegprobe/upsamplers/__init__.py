"""Feature upsamplers behind one interface; importing a method's module registers it."""

from isegprobe.upsamplers import anyup, featup_jbu, identity, interpolation, jafar, lift, loftup  # noqa: F401  (registers the built-in methods)
from isegprobe.upsamplers.base import Upsampler
from isegprobe.upsamplers.registry import create_upsampler, list_upsamplers, register_upsampler

__all__ = ["Upsampler", "create_upsampler", "list_upsamplers", "register_upsampler"]
