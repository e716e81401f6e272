"""Weights files that an option or a config key names, checked when a command starts.

A weights file is read only where its model is built: after the dataset was opened, the featurizer built (a hub
download included) and the store read, so a missing or unreadable file stopped a command minutes in, with a message
that named the path but not the option or key that gave it. Every command checks its weights paths before any of
that work; reading the file's content stays with `state_dicts.read_state_dict`.
"""

from __future__ import annotations

import os

from isegprobe.errors import UserError
from isegprobe.home_paths import expand_home

# The words a featurizer's weights option takes besides a file's path.
FEATURIZER_WEIGHT_WORDS = ("hub", "random")


def require_weights_file(path: str, given_as: str, expected: str = "a weights file") -> None:
    """A UserError unless `path` is a file this user can read, naming `given_as` (the option or config key that
    gave it: `--upsampler-weights`, `model.upsampler.weights`), the path as given and what was `expected`."""
    where = f"{given_as}: {path}"
    file = expand_home(path)
    try:
        if not file.exists():
            if file.is_symlink():
                raise UserError(f"{where} is a link to a file that does not exist ({os.readlink(file)})")
            raise UserError(f"{where} does not exist (expected {expected})")
        if file.is_dir():
            raise UserError(f"{where} is a folder (expected {expected})")
        if not file.is_file():  # a named pipe: opening it would wait for a writer
            raise UserError(f"{where} is not a regular file (expected {expected})")
        with open(file, "rb") as handle:
            handle.read(1)
    except OSError as error:  # a file, or a folder on its way, that this user may not read
        raise UserError(
            f"{where}: cannot read it ({error.strerror or error}): give this user read access to it, or copy it "
            "where they have"
        ) from None


def require_featurizer_weights(weights: str | None, given_as: str) -> None:
    """`require_weights_file` for a featurizer's weights option, which also takes the words hub and random."""
    if weights is not None and weights not in FEATURIZER_WEIGHT_WORDS:
        require_weights_file(weights, given_as, f"{', '.join(FEATURIZER_WEIGHT_WORDS)} or a weights file")


def require_recorded_weights_file(recorded: str | None, recorded_by: str) -> None:
    """A UserError where the featurizer's weights file that a checkpoint or store records (its path on the machine
    that wrote it) is not there, naming the path, `recorded_by` (what was made with it, and what records it) and
    `--weights`, which every command that rebuilds a recorded featurizer takes for its new place."""
    if recorded not in (None, *FEATURIZER_WEIGHT_WORDS) and not expand_home(recorded).is_file():
        raise UserError(
            f"{recorded}: the featurizer weights file {recorded_by} is not there; `--weights PATH` says where it is "
            "now (the same file: its sha256 is checked)"
        )
