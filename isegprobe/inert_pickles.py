"""torch.save files that pickle objects of other people's classes (training configs: OmegaConf, EasyDict, a model
builder), read without importing or running any of them.

torch's weights-only unpickler refuses every class it does not know. Here each class a file names stands in as an
inert `Placeholder`, or as a plain container where the pickle fills it item by item; nothing the file names is ever
imported or called, so such a file cannot execute code, and the tensors beside those objects can be read.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any

import torch


class Placeholder:
    """Stands in for any class or function a pickle names: it accepts whatever it is built with and keeps it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _empty_dict(*args: Any) -> dict:
    return {}


# Stand-ins that must behave like containers, because the pickle fills them item by item.
_CONTAINER_STAND_INS = {
    "easydict.EasyDict": collections.OrderedDict,
    "collections.defaultdict": _empty_dict,
    "builtins.dict": dict,
    "builtins.list": list,
}


# torch.save's format before torch 1.6 (a run of pickles, not a zip archive) opens with this pickled magic number.
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]


def is_legacy_torch_save(path: str | Path) -> bool:
    """Whether `path` is in torch.save's format before torch 1.6: torch lists the classes of zip archives only, so
    such a file cannot be read inertly, and deserves a message that says so rather than that it is no checkpoint."""
    with open(path, "rb") as file:
        return _LEGACY_MAGIC in file.read(64)


def load_inertly(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` with every global the file names standing in as an inert object.

    A class the pickle fills item by item (a dict subclass such as Lightning's `AttributeDict` of hyperparameters)
    needs a dict to stand in for it, and the pickle does not say which class is one: if placeholders fail for that
    reason, every named class stands in as an OrderedDict instead. Raises what torch raises for a file that is not a
    torch.save archive, or that neither reading fits."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    try:
        return _load_standing_in(path, names, Placeholder)
    except pickle.UnpicklingError as error:
        if "SETITEM" not in str(error):
            raise
        return _load_standing_in(path, names, collections.OrderedDict)


def _load_standing_in(path: str | Path, names: list[str], default: type) -> Any:
    stand_ins = [(_CONTAINER_STAND_INS.get(name, default), name) for name in names]
    with torch.serialization.safe_globals(stand_ins):
        return torch.load(path, map_location="cpu", weights_only=True)
