"""`~` and `~user` in paths the user gives (options, datasets.yaml, configs), expanded with a message where
`Path.expanduser` raises a bare RuntimeError: a user unknown on this machine, or no home directory to expand to."""

from __future__ import annotations

from pathlib import Path

from isegprobe.errors import UserError


def expand_home(path: str | Path) -> Path:
    """`path` with a leading `~` or `~user` replaced by that home directory."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path).split("/", 1)[0][1:] or "this process's user"
        raise UserError(f"{path}: no home directory for {user} on this machine, so its ~ cannot be expanded") from None
