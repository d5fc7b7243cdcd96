"""YAML loading that refuses a mapping with the same key twice.

PyYAML's ``safe_load`` keeps the last of two equal keys, so a config with ``lr`` written twice runs
silently with one of them. This loader raises instead, naming the key and both lines.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice (a subclass of ``yaml.YAMLError``)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that checks every mapping for repeated keys before building it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in with ``<<`` may be overridden: that is what merging is for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if seen is not None:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {key!r} on line {line} (first on line {seen}); remove one of them",
                    key_node.start_mark,
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` on a repeated mapping key."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
