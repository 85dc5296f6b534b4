"""Loading a recipe: YAML text → nested dicts (with line numbers) → overrides → typed, checked objects."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from edgeclip.recipe.sections import FieldError, Recipe, RecipeError


def _describe(value: Any) -> str:
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, dict | list)
        else type(value).__name__
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {
        type(None): "null",
        float: "a number",
        int: "an integer",
        bool: "true or false",
        str: "a string",
    }.get(tp, str(tp))


class _Loader:
    def __init__(self, source: str, lines: dict[str, int], overridden: set[str]) -> None:
        self.source, self.lines, self.overridden = source, lines, overridden

    def error(self, path: str, message: str) -> RecipeError:
        where = self.source
        if any(path == o or path.startswith((o + ".", o + "[")) for o in self.overridden):
            return RecipeError(f"{where} (command-line override): {path}: {message}")
        line = self.lines.get(path)
        if line is None and path:  # an unknown or missing key: point at its parent mapping
            line = self.lines.get(path.rsplit(".", 1)[0] if "." in path else "")
        if line is not None:
            where += f":{line}"
        return RecipeError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in args:
                if arg is not type(None):
                    try:
                        return self.convert(arg, value, path)
                    except RecipeError:
                        if len(args) > 2:
                            continue
                        raise
        if origin is Literal:
            if value in typing.get_args(tp):
                return value
            raise self.error(path, f"expected {_type_name(tp)}, got {value!r}")
        if origin is tuple:
            if not isinstance(value, list | tuple):
                raise self.error(path, f"expected a list, got {_describe(value)}")
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise self.error(path, f"expected a list of {len(args)} items, got {len(value)}")
            return tuple(
                self.convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        if tp is float:
            return self.number(value, path)
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if tp in (bool, str) and isinstance(value, tp):
            return value
        raise self.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")

    def number(self, value: Any, path: str) -> float:
        """A finite float: NaN and ±inf would pass or fail range checks by accident."""
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise self.error(path, f"expected a number, got {_describe(value)}")
        if not math.isfinite(number):
            raise self.error(path, f"expected a finite number, got {value!r}")
        return number

    def build(self, cls: type, data: Any, path: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(path, f"expected a mapping, got {_describe(data)}")
        hints = typing.get_type_hints(cls)
        own = cls.__dict__.get(
            "__annotations__", {}
        )  # a section's own keys first, then shared ones
        fields = {
            f.name: f for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)
        }
        prefix = f"{path}." if path else ""
        for key in data:
            if key not in fields:
                raise self.error(
                    f"{prefix}{key}", f"unknown key; expected one of: {', '.join(fields)}"
                )
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = self.convert(hints[name], data[name], f"{prefix}{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(f"{prefix}{name}", f"missing; expected {_type_name(hints[name])}")
        try:
            return cls(**kwargs)
        except FieldError as err:
            raise self.error(f"{prefix}{err.key}", str(err)) from None


class _DuplicateKey(Exception):
    def __init__(self, path: str, first: int, again: int) -> None:
        self.path, self.first, self.again = path, first, again


def _line_numbers(
    node: yaml.Node, path: str = "", out: dict[str, int] | None = None
) -> dict[str, int]:
    """Map every key path ("pretrain.lr", "eval.templates[0]") to its 1-based line in the file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            line = key.start_mark.line + 1
            if sub in seen:  # YAML keeps the last value silently; a recipe must say one thing
                raise _DuplicateKey(sub, seen[sub], line)
            seen[sub] = out[sub] = line
            _line_numbers(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_numbers(value, f"{path}[{i}]", out)
    return out


def _apply_override(data: dict, override: str, source: str) -> None:
    if "=" not in override:
        raise RecipeError(f"{source}: override {override!r}: expected key.path=value")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise RecipeError(f"{source}: override {override!r}: {part} is not a mapping")
    node[parts[-1]] = value


def parse_recipe(text: str, source: str = "<recipe>", overrides: list[str] = ()) -> Recipe:
    """Parse recipe text; errors name ``source``, the key path and the line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{where}: YAML syntax error: {problem}") from None
    try:
        lines = _line_numbers(root) if root is not None else {}
    except _DuplicateKey as dup:
        raise RecipeError(
            f"{source}:{dup.again}: {dup.path}: set twice (lines {dup.first} and {dup.again}); "
            "keep one"
        ) from None
    if data is None:
        data = {}
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    loader = _Loader(source, lines, overridden)
    if not isinstance(data, dict):
        raise loader.error(
            "", f"expected a mapping of sections at the top level, got {_describe(data)}"
        )
    for override in overrides:
        _apply_override(data, override, source)
    recipe = loader.build(Recipe, data, "")
    object.__setattr__(recipe, "_where", loader)  # for Recipe.error: later checks name the line
    return recipe


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Load and validate a recipe file.

    Example:
        >>> recipe = load_recipe("recipes/demo.yaml", ["pretrain.steps=10"])  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot be read: {err}") from None
    return parse_recipe(text, str(path), overrides)
