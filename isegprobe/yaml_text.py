"""YAML read as `yaml.safe_load` reads it, but a key written twice in one mapping is an error: PyYAML keeps the last
one without a word, so a config with `lr:` twice would train with whichever came second."""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing a mapping that writes a key twice (a `yaml.YAMLError`, as other bad YAML)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
