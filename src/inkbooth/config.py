"""Typed stage configs: dataclasses whose fields carry their help text.

A config is loaded strictly: unknown keys and values of the wrong type are errors that name the
key, the expected type and where the value came from. The same dataclass drives the CLI flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type."""


_BOOL_WORDS = {"yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}
# Largest YAML document read as a config (a config is a few KB; this bounds what a file can cost).
MAX_YAML_BYTES = 1 << 20
# Deepest nesting of lists and mappings in a config (ours nest 3 deep). PyYAML's composer and the JSON
# decoder recurse per level: 100,000 levels (200 KB of "[") ended in "maximum recursion depth exceeded".
MAX_DEPTH = 64


def _too_deep(where: str, line: int | None = None) -> ConfigError:
    at = f" (line {line})" if line is not None else ""
    return ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels{at}; not a config")


def yaml_load(text: str, where: str = "config") -> Any:
    """YAML as configs read it: no aliases or anchors (an alias bomb is refused, not expanded), no
    nesting deeper than ``MAX_DEPTH``, and only true/false are booleans (``mixed_precision: no`` stays
    the string "no")."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(f"{where}: YAML aliases are not allowed in a config (line {event.start_mark.line + 1})")
            event = self.peek_event()
            if getattr(event, "anchor", None):
                raise ConfigError(f"{where}: YAML anchors are not allowed in a config (line {event.start_mark.line + 1})")
            # Counted as nodes are composed, before the next level recurses: refused long before Python's limit.
            if self.depth >= MAX_DEPTH:
                raise _too_deep(where, event.start_mark.line + 1)
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_YAML_BYTES} bytes; not a config")
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None


def json_load(text: str, where: str = "config") -> Any:
    """JSON as configs read it: no larger than ``MAX_YAML_BYTES``, no nesting deeper than ``MAX_DEPTH``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_YAML_BYTES} bytes; not a config")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON: {e}") from None
    except RecursionError:  # the decoder recurses per level
        raise _too_deep(where) from None
    stack = [(loaded, 1)]
    while stack:  # iterative: the check itself must not recurse
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _too_deep(where)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return loaded


def option(default: Any = dataclasses.MISSING, help: str = "", *, min: float | None = None,
           max: float | None = None, **metadata: Any) -> Any:
    """A config field with its help text (and a factory for mutable defaults).

    ``min``/``max`` bound a numeric field (checked by ``check_ranges``, which loading runs).
    ``secret=True`` marks a value that must never be printed, hashed into a key or recorded
    (``to_dict`` shows it as ``"***"``).
    """
    if min is not None:
        metadata["min"] = min
    if max is not None:
        metadata["max"] = max
    shown = not metadata.get("secret")  # a secret is not in the dataclass's repr either
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help, **metadata},
                                 repr=shown)
    return dataclasses.field(default=default, metadata={"help": help, **metadata}, repr=shown)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; the few safe widenings (int -> float) are applied."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected None, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, source=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        # The YAML 1.1 words, which our YAML loader keeps as strings (see yaml_load).
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        # YAML 1.1 (PyYAML) reads "5e-6" as a string: it wants a dot in floats. Accept the literal.
        if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value.strip()):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # JSON and protobuf Structs (KFP dict parameters) carry every number as a float.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str = "config") -> T:
    """Build the dataclass `cls` from `data`, refusing unknown keys and wrongly typed values."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    values = {}
    for name, f in known.items():
        if name in data:
            value = data[name]
            if (isinstance(value, Mapping) and dataclasses.is_dataclass(hints[name])
                    and f.default_factory is not dataclasses.MISSING):
                # A nested config given in part keeps the field's own defaults for the rest
                # (e.g. a cluster file setting train's GPU keeps train's memory, retries, caching).
                value = {**to_dict(f.default_factory()), **value}
            values[name] = _coerce(value, hints[name], f"{source}: {name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {name!r} ({_type_name(hints[name])})")
    obj = cls(**values)
    check_ranges(obj, source)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    return obj


def nested(cls: type[T], value: Any, *, source: str) -> T:
    """A nested config section given to a config built in Python: the defaults for None, a plain
    mapping checked as a file's would be, a ``cls`` instance as it is."""
    if value is None:
        return cls()
    if isinstance(value, Mapping):
        return from_dict(cls, value, source=source)
    return value


def check_ranges(cfg: Any, source: str = "config") -> None:
    """Every numeric field within its ``min``/``max`` and finite (nested configs too); ConfigError if not."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{source}: {f.name}")
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        where = f"{source}: {f.name}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = (f"between {lo} and {hi}" if lo is not None and hi is not None
                      else f"at least {lo}" if lo is not None else f"at most {hi}")
            raise ConfigError(f"{where}: must be {bounds}, got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-able data; secret fields (set ones) show as ``"***"``."""
    data = dataclasses.asdict(cfg)
    _redact_secrets(cfg, data)
    return data


def _redact_secrets(cfg: Any, data: dict[str, Any]) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("secret") and value:
            data[f.name] = "***"
        elif dataclasses.is_dataclass(value) and isinstance(data.get(f.name), dict):
            _redact_secrets(value, data[f.name])


def config_hash(cfg: Any) -> str:
    """A stable content key for a config (sha256 of its canonical JSON)."""
    blob = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Load `cls` from a YAML/JSON file (optional), then apply `overrides` on top."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
        if str(path).endswith(".json"):
            loaded = json_load(text, str(path))
        else:
            loaded = yaml_load(text, str(path))
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        data.update(loaded or {})
    data.update(overrides or {})
    return from_dict(cls, data, source=source)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per config field, with the field's help text; values are parsed as YAML scalars."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} [{_type_name(hints[f.name])}; default: {default!r}]"
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f"cfg__{f.name}", default=argparse.SUPPRESS,
            metavar=f.name.upper(), help=help_text,
        )


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The config fields set on the command line, parsed (strings stay strings for str fields)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"cfg__{f.name}"
        if key not in vars(args):
            continue
        raw = getattr(args, key)
        out[f.name] = raw if hints[f.name] is str else yaml_load(raw, f"--{f.name.replace('_', '-')}")
    return out
