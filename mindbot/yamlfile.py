"""Reading MindBot's YAML files (personas, voices, voice commands) with one-line errors.

Each file is read safely, with a key given twice refused (plain YAML silently keeps the last),
and every problem is one ``ConfigError`` line that names the file: what a person fixing a
deployment needs to see first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mindbot.errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice, which plain YAML silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: Path, what: str, *, expected: str, empty: str | None = None) -> dict:
    """The top-level mapping of a YAML file.

    Args:
        path: The file.
        what: What the file is, for messages ("persona file").
        expected: What the top level should be ("a mapping of fields").
        empty: What an empty file should have held, if not ``expected``.

    Raises:
        ConfigError: The file is missing, unreadable, not YAML (the line and column named),
            empty or not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read {what}: {one_line(reason)}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {describe_yaml_error(e)}") from None
    if data is None:
        raise ConfigError(f"{path}: {what} is empty; expected {empty or expected}")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected {expected} at the top level, got {kind}")
    return data


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """A YAML error as one line: ``invalid YAML at line L, column C: problem``."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {one_line(problem)}"


def one_line(text: Any) -> str:
    """``text`` with its whitespace, newlines included, collapsed to single spaces."""
    return " ".join(str(text).split())
