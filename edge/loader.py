"""The one validating loader: frozen dataclasses from YAML or JSON, every error with its key path.

The config file, a model's frontend parameters and its manifest are all read through
`build()`, so they share one set of rules: unknown keys are errors (with the closest known key),
values must have the field's type (an int is not a bool, "256" is not a number), numeric bounds
come from the field (`setting(..., ge=…)`), a section may check itself (`validate()`), a key a
section no longer has (its `REMOVED`) is ignored with a warning saying why, and every
error says where: file, line (for YAML), key path, what is wrong, what is allowed. The same field
metadata documents the config (`lungedge.example.yaml` is generated from it).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

log = logging.getLogger(__name__)


class ValidationError(ValueError):
    """Data that does not fit its dataclass: where it is and what is allowed."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None,
                 key_path: str = "") -> None:
        self.message, self.source, self.line, self.key_path = message, source, line, key_path
        where = source or "<input>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}")


class Invalid(ValueError):
    """Raised by a dataclass's `validate()`: `key` (relative to it) and what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def wire(**schema: Any) -> dict[str, Any]:
    """A required field's JSON Schema constraints (minimum, maximum, pattern, minLength), as
    `field(metadata=wire(...))`: a plain `field()` call, so type checkers see it has no
    default."""
    return {"schema": schema}


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None) -> Any:
    """A field with its one-line documentation and numeric bounds."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """A nested dataclass field (a config section), defaulting to its defaults."""
    return field(default_factory=cls, metadata={"doc": doc})


def complete(doc: str = "") -> dict[str, Any]:
    """The metadata of a nested dataclass whose every key must be given, as
    `field(metadata=complete(...))` (a manifest pins every frontend parameter: a default there
    would silently describe another model)."""
    return {"doc": doc, "complete": True}


def from_yaml(cls: type, text: str, source: str) -> Any:
    """Parse YAML text and build `cls`; errors carry the YAML line of the offending key."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(f"not valid YAML: {problem}", source=source,
                              line=mark.line + 1 if mark else None) from None
    if node is None:
        return build(cls, {}, source=source)
    lines: dict[str, int] = {}
    data = _plain(node, "", lines, source)
    return build(cls, data, source=source, lines=lines)


def yaml_lines(text: str) -> dict[str, int]:
    """The line of every key path in YAML text ({} for text that does not parse)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    if node is not None:
        try:
            _plain(node, "", lines, "")
        except ValidationError:
            return lines
    return lines


def _plain(node: yaml.Node, path: str, lines: dict[str, int], source: str,
           within: frozenset[int] = frozenset()) -> Any:
    """A YAML node as plain Python, remembering the line of every key path."""
    line = node.start_mark.line + 1
    lines[path] = line
    if id(node) in within:  # `a: &x [*x]`: an alias inside itself would never end
        raise ValidationError("an alias (*name) that refers to itself", source=source,
                              line=line, key_path=path or "(top level)")
    within = within | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise ValidationError("a key must be a plain name", source=source,
                                      line=knode.start_mark.line + 1,
                                      key_path=path or "(top level)")
            key = str(knode.value)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ValidationError("key given twice", source=source,
                                      line=knode.start_mark.line + 1, key_path=child)
            out[key] = _plain(vnode, child, lines, source, within)
            lines[child] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, f"{path}[{i}]", lines, source, within)
                for i, v in enumerate(node.value)]
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except Exception as exc:  # PyYAML fails in many ways on garbage (a bad
        # tag, date or base64; `!!timestamp` with no value raises AttributeError): all of them
        # mean "this value is not one", and none may escape as a traceback
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(f"not a value lungedge reads: {problem}", source=source,
                              line=line, key_path=path or "(top level)") from None


def build(cls: type, data: Any, *, source: str = "", lines: dict[str, int] | None = None,
          complete: bool = False) -> Any:
    """An instance of dataclass `cls` from plain data (parsed JSON or YAML); with `complete`,
    every key must be given, defaults or not."""
    return _Builder(source, lines or {}).dataclass(cls, data, "", complete=complete)


class _Builder:
    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source, self.lines = source, lines

    def fail(self, path: str, message: str) -> typing.NoReturn:
        line = None
        probe = path
        while line is None and probe:  # the line of the key, or of the nearest enclosing one
            line = self.lines.get(probe)
            probe = probe.rpartition(".")[0]
        raise ValidationError(message, source=self.source, line=line if self.lines else None,
                              key_path=path or "(top level)")

    def dataclass(self, cls: type, data: Any, path: str, complete: bool) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping of keys to values, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = {}
        removed: dict[str, str] = getattr(cls, "REMOVED", {})
        for key, value in data.items():
            key = str(key)
            key_path = f"{path}.{key}" if path else key
            if key in removed:  # a key older files still hold: said, and ignored
                line = self.lines.get(key_path)
                log.warning("%s%s: %s: ignored: %s", self.source or "<input>",
                            f":{line}" if line else "", key_path, removed[key])
                continue
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.fail(key_path, f"unknown key{hint}; allowed here: {', '.join(fields)}")
            f = fields[key]
            values[key] = self.value(hints[key], value, key_path, f.metadata)
        required = [n for n, f in fields.items() if n not in values and (
            complete or (f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING))]
        if required:
            self.fail(path, f"missing key(s) {required}" + (
                ": every one must be given here" if complete else ""))
        try:
            obj = cls(**values)
        except (TypeError, ValueError) as exc:  # a __post_init__ that checks its fields
            self.fail(path, str(exc))
        validate = getattr(obj, "validate", None)
        if validate is not None:
            try:
                validate()
            except Invalid as exc:
                self.fail(f"{path}.{exc.key}" if path else exc.key, str(exc))
        return obj

    def value(self, tp: Any, value: Any, path: str, meta: Any) -> Any:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, path, complete=bool(meta.get("complete")))
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if origin in (tuple, list):
            if not isinstance(value, list | tuple):
                self.fail(path, f"expected a list, got {_kind(value)}")
            args = typing.get_args(tp)
            item = args[0] if args else Any
            items = [self.value(item, v, f"{path}[{i}]", {}) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(path, f"expected a mapping, got {_kind(value)}")
            item = typing.get_args(tp)[1] if typing.get_args(tp) else Any
            return {str(k): self.value(item, v, f"{path}.{k}", {}) for k, v in value.items()}
        if _is_union(tp) and value is not None:  # a section or a collection, or null
            structured = [o for o in typing.get_args(tp) if _structured(o)]
            if len(structured) == 1 and isinstance(value, dict | list | tuple):
                return self.value(structured[0], value, path, meta)
        for option in typing.get_args(tp) if _is_union(tp) else (tp,):
            if _structured(option):
                continue
            ok, converted = _coerce(option, value)
            if ok:
                self.check_bounds(converted, path, meta)
                return converted
        self.fail(path, f"expected {describe(tp)}, got {_kind(value)}")

    def check_bounds(self, value: Any, path: str, meta: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
        if ge is not None and value < ge:
            self.fail(path, f"must be ≥ {ge}, got {value}")
        if gt is not None and value <= gt:
            self.fail(path, f"must be > {gt}, got {value}")
        if le is not None and value > le:
            self.fail(path, f"must be ≤ {le}, got {value}")


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", tuple: "a list"}
    return kinds.get(type(value), repr(value))


def _structured(tp: Any) -> bool:
    """A dataclass or a collection: built by the loader, not coerced."""
    return (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or \
        typing.get_origin(tp) in (list, tuple, dict)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    if tp is type(None):
        return value is None, None
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"type {tp} is not supported by the loader")


def describe(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(describe(t) for t in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


# -- config files ----------------------------------------------------------------------------
class ConfigError(ValidationError):
    """A configuration problem a user can fix: where it is and what is allowed."""




def read_config_file(path: Path, example: str) -> str:
    """A config file's text; a missing or unreadable one is a ConfigError naming the file and,
    when missing, the example to start from."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such file; pass --config PATH or create it from {example}",
                          source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None


def example_of(cls: type, header: str, values: dict[str, Any]) -> str:
    """A documented YAML example of a config dataclass: `values` (by key path) where it is
    not to show the defaults."""
    out = [header]
    _example(cls, "", 0, out, values)
    return "".join(out)


def _example(cls: type, path: str, indent: int, out: list[str],
             values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(cls)
    pad = " " * indent
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        doc = f.metadata.get("doc", "") + _bounds(hints[f.name], f.metadata)
        if not indent and dataclasses.is_dataclass(hints[f.name]):
            out.append("\n")
        out += [f"{pad}# {line}\n" for line in textwrap.wrap(doc, 96 - indent)]
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            out.append(f"{pad}{f.name}:\n")
            _example(hints[f.name], key_path, indent + 2, out, values)
            continue
        default = f.default if f.default is not dataclasses.MISSING else \
            typing.cast(Callable[[], Any], f.default_factory)()
        value = values.get(key_path, default)
        out.append(pad + yaml.safe_dump({f.name: value}, default_flow_style=True,
                                        allow_unicode=True, width=1000).strip()[1:-1] + "\n")
        item = typing.get_args(hints[f.name])
        # a list of sections (rules, users): one commented out, documented
        if typing.get_origin(hints[f.name]) is list and item and isinstance(item[0], type) \
                and dataclasses.is_dataclass(item[0]):
            entry: list[str] = []
            _example(item[0], f"{key_path}[]", 0, entry, values)
            out.append(f"{pad}# for example, one entry:\n")
            first = True
            for line in "".join(entry).splitlines():
                if line.startswith("#"):
                    out.append(f"{pad}#     {line}\n")
                else:
                    out.append(f"{pad}#   {'- ' if first else '  '}{line}\n")
                    first = False

def _bounds(tp: Any, meta: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " One of: " + ", ".join(str(v) for v in typing.get_args(tp)) + "."
    parts = [f"{op} {meta[k]}" for k, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"))
             if meta.get(k) is not None]
    return f" ({', '.join(parts)})" if parts else ""
