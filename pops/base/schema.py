"""One config mechanism: plain dataclasses, checked and coerced by pydantic.

`from_mapping(cls, data, what=...)` builds a (nested) dataclass from a YAML/JSON mapping or CLI strings: values are
coerced to the annotated types (ints for floats, "1e-5" for a float, lists for tuples), unknown keys are refused, and
every problem is ONE line naming the key (`ValueError`). Each config class keeps its own cross-field checks in
`__post_init__` (or a `validate` method) — the type layer lives here once.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


@cache
def _adapter(cls):
    from pydantic import ConfigDict, TypeAdapter  # pydantic (~0.3 s) only once a config is read

    for sub in _dataclasses_in(cls):
        # Unknown keys are an error: a typo must not silently fall back to a default.
        if "__pydantic_config__" not in sub.__dict__:
            sub.__pydantic_config__ = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return TypeAdapter(cls)


def _dataclasses_in(cls, seen: set | None = None) -> list[type]:
    """`cls` and every dataclass type reachable through its fields' defaults."""
    seen = set() if seen is None else seen
    if cls in seen or not dataclasses.is_dataclass(cls):
        return []
    seen.add(cls)
    found = [cls]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            found += _dataclasses_in(type(default), seen)
    return found


def from_mapping(cls: type[T], data: dict[str, Any] | None, *, what: str = "config") -> T:
    """A `cls` instance from `data`; a one-line ValueError naming the first bad key otherwise."""
    from pydantic import ValidationError

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a mapping, got {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        raise ValueError(_one_line(exc, cls, what)) from None


def _one_line(exc, cls, what: str) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "unexpected_keyword_argument":
        known = _known_keys(cls, error["loc"][:-1])
        return f"{what}: unknown key {key!r}" + (f"; known keys here: {', '.join(known)}" if known else "")
    if error["type"] == "value_error" and error.get("ctx", {}).get("error"):
        return f"{what}: {error['ctx']['error']}"
    shown = repr(error.get("input"))
    return f"{what}: {key or 'value'}: {error['msg'].lower()} (got {shown[:60]})"


def _known_keys(cls, loc) -> list[str]:
    for part in loc:
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        f = fields.get(part)
        if f is None:
            return []
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        cls = type(default)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def to_mapping(config: Any) -> dict:
    """A dataclass as a plain JSON/YAML-friendly dict (tuples as lists, paths as strings)."""
    return _plain(dataclasses.asdict(config))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(value)
    return value
