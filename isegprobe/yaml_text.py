"""YAML read as `yaml.safe_load` reads it, with two differences that keep a config's values what they look like.

- A key written twice in one mapping is an error: PyYAML keeps the last one without a word, so a config with `lr:`
  twice would train with whichever came second.
- Plain scalars are typed by YAML 1.2's rules, not 1.1's: `1:30` is not the number 90 (base 60), `017` not 15 (octal),
  `2024-06-01` not a date and `off` or `no` not false; each stays the text it is, which a key that takes text keeps and
  a key that takes a number or a flag refuses, naming it. `true`/`false`, decimal, hexadecimal and binary numbers,
  floats and `.inf` read as before.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_1_1_ONLY = {
    "tag:yaml.org,2002:bool": re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    "tag:yaml.org,2002:int": re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    "tag:yaml.org,2002:float": re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    "tag:yaml.org,2002:timestamp": None,
}


def _plain_scalar_resolvers() -> dict[str | None, list[tuple[str, re.Pattern[str]]]]:
    """SafeLoader's implicit resolvers with the YAML 1.1 forms above narrowed (or, for timestamps, dropped)."""
    resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [(tag, _YAML_1_1_ONLY.get(tag, pattern)) for tag, pattern in entries]
        resolvers[first] = [(tag, pattern) for tag, pattern in kept if pattern is not None]
    return resolvers


class _UniqueKeyLoader(yaml.SafeLoader):
    yaml_implicit_resolvers = _plain_scalar_resolvers()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The keys a mapping writes itself must differ; those a merge key (`<<: *base`) brings in may be written
        over by them, as YAML's merge keys mean."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, "a key must be a plain value", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing a mapping that writes a key twice (a `yaml.YAMLError`, as other bad YAML) and
    typing plain scalars by YAML 1.2's rules (see the module). Nesting deeper than Python's recursion allows, and
    aliases that expand to more than MOST_VALUES values (a "billion laughs" of 353 bytes took all memory when a
    message printed it), are `yaml.YAMLError`s too."""
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    _refuse_expansion(loaded)
    return loaded


MOST_VALUES = 1_000_000


def _refuse_expansion(loaded: Any) -> None:
    """Count the values `loaded` holds as the aliases in it expand, up to MOST_VALUES."""
    pending, count = [loaded], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > MOST_VALUES:
            raise yaml.YAMLError(f"more than {MOST_VALUES} values once its aliases (*name) are expanded")
        if isinstance(value, Mapping):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
