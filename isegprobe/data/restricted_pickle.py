"""Reading RITM's pickles (COCO+LVIS annotations, SBD sample weights) without running anything a file names.

`pickle.load` calls whatever function a file names, so a crafted `hannotation.pickle` runs code. RITM's files hold
builtin containers, numbers and strings (the annotation file: image id -> {'num_instance_masks', 'hierarchy'}; the
SBD weights: (index, name, score) tuples) and numpy arrays and numbers (each mask file: the PNG bytes cv2.imencode
returns, one array per layer; the scores: numpy float32); the unpickler here admits only the numpy names those are
pickled with, under numpy 1's and numpy 2's module names, and refuses any other global.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from isegprobe.errors import UserError

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray, numeric

_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _package in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = multiarray._reconstruct  # arrays, protocols 2-4
    _NUMPY_GLOBALS[(f"{_package}.multiarray", "scalar")] = multiarray.scalar  # numpy numbers
    _NUMPY_GLOBALS[(f"{_package}.numeric", "_frombuffer")] = numeric._frombuffer  # arrays, protocol 5


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a class or function outside builtin containers and numpy arrays."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builtin containers, numbers and strings need no global; numpy arrays and scalars need the names above."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def read_ritm_pickle(path: Path) -> Any:
    """The object in RITM pickle `path`; a missing, damaged or foreign file is a UserError naming it, and one that
    names any other global is refused before anything it names is called."""
    try:
        with open(path, "rb") as file:
            return _ArraysOnlyUnpickler(file).load()
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except RefusedGlobal as error:
        raise UserError(
            f"{path}: refused to unpickle {error}: RITM's pickles hold only dicts, lists, numbers, strings and numpy "
            "arrays, and loading anything else could run code the file carries"
        ) from None
    except Exception as error:  # unpickling a damaged file raises many types; the user needs the file name
        raise UserError(f"{path}: cannot unpickle ({type(error).__name__}: {error})") from None
