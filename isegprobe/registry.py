"""Named parts by registration, as timm registers its models: a module adds its entries with a decorator, and one
`create_*` function per family looks them up, so a new dataset, upsampler or click encoder is one file and one line.

Names are case-insensitive. Registering a name twice warns (naming both modules) and the later entry wins, so a user's
module may replace a built-in one on purpose but never by accident unnoticed.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from isegprobe.errors import UserError

Entry = TypeVar("Entry")


class RegistryWarning(UserWarning):
    """A name registered twice: the later entry replaces the earlier one."""


class Registry(Generic[Entry]):
    """Entries of one family by name. `kind` names the family in messages ("upsampler"); `where` is the option or
    config key a user sets the name with ("--dataset"), so an unknown name points at what to fix."""

    def __init__(self, kind: str, where: str | None = None) -> None:
        self.kind = kind
        self.where = where
        self._entries: dict[str, Entry] = {}
        self._modules: dict[str, str] = {}

    def register(self, name: str) -> Callable[[Entry], Entry]:
        """A decorator that registers the function or class it decorates under `name` and returns it unchanged."""

        def decorator(entry: Entry) -> Entry:
            key = name.lower()
            module = getattr(entry, "__module__", None) or "?"
            if key in self._entries:
                warnings.warn(
                    f"{self.kind} {name!r} is registered again by {module}; {self._modules[key]} registered it "
                    "first, and the later entry replaces it",
                    RegistryWarning,
                    stacklevel=2,
                )
            self._entries[key] = entry
            self._modules[key] = module
            return entry

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The entry registered as `name`; a UserError lists the known names (and the closest one) otherwise."""
        entry = self._entries.get(name.lower())
        if entry is None:
            raise UserError(self._unknown(name))
        return entry

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name.lower(), self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}{hint}"
