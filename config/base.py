"""What every section of the configuration shares: strict models (unknown keys rejected), and reading a YAML
file into one with errors that name the file, the line and the key path."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(Exception):
    """A configuration problem, with the file, the key path and the line where it is."""


def load_yaml(path: str | Path, model: type[M], name_of: Callable[[list[str]], str | None] | None = None,
              context: dict[str, object] | None = None) -> M:  # fmt: skip
    """Read a YAML file into ``model``; a ConfigError names the file, the line and the key path of every
    problem, prefixed by ``name_of(key path)`` when that names the item (a policy rule's id)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_describe(path, node, exc, name_of)) from exc


def _describe(path: Path, root: yaml.Node | None, exc: ValidationError,
              name_of: Callable[[list[str]], str | None] | None = None) -> str:  # fmt: skip
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        # A cross-field check reports its own path in the message ("models.x.routes.0.upstream: ...").
        own = re.match(r"^([\w.*-]+): (.*)$", message)
        if own and not loc:
            loc, message = own.group(1).split("."), own.group(2)
        key = ".".join(loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        name = name_of(loc) if name_of is not None else None
        lines.append(f"{where}: {name + ': ' if name else ''}{key}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the deepest node along loc that exists in the YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                found: yaml.Node = key if _is_empty(value) else value
                return found
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item: yaml.Node = node.value[int(part)]
        return item
    return None


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith("null")
