"""Type checks of dataclass fields read from JSON or YAML, with messages that name the field and the fix.

Without them a wrongly typed field fails deep inside (a TypeError or AttributeError) or, worse, works wrongly: a
string where a list of strings is expected is iterated character by character.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

__all__ = ["check_field_types", "describe_type", "matches_type"]


def _args(tp) -> tuple:
    return typing.get_args(tp)


def matches_type(value: Any, tp) -> bool:
    """Whether a JSON-like `value` fits the annotation `tp` (ints pass for floats, lists for tuples; bools are not
    numbers)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in _args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(matches_type(v, _args(tp)[0]) for v in value)
    if origin is tuple:
        args = _args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args))
    if origin is dict:
        key, val = _args(tp)
        return isinstance(value, dict) and all(matches_type(k, key) and matches_type(v, val) for k, v in value.items())
    return isinstance(value, origin or tp)


def describe_type(tp) -> str:
    """Plain words for an annotation: ``list[str] | None`` -> ``a list of strings or null``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in _args(tp))
    names = {
        type(None): "null",
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Any: "any value",
    }
    if tp in names:
        return names[tp]
    plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
    if origin is list:
        return f"a list of {plural.get(_args(tp)[0], describe_type(_args(tp)[0]))}"
    if origin is tuple:
        return f"a list of {len(_args(tp))} {plural.get(_args(tp)[0], 'values')}"
    if origin is dict:
        key, val = _args(tp)
        return f"an object of {plural.get(key, 'keys')} to {plural.get(val, describe_type(val))}"
    return getattr(tp, "__name__", str(tp))


def check_field_types(obj, what: str | None = None) -> None:
    """Raise a `ValueError` naming the first field of dataclass `obj` whose value does not fit its annotation.

    Args:
        obj: a dataclass instance (annotations may be strings: `from __future__ import annotations`).
        what (`str`, *optional*): how to name the object in the message (default: its class name).
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints.get(f.name, Any)
        if not matches_type(value, tp):
            hint = ""
            if (
                isinstance(value, str)
                and typing.get_origin(tp) is list
                or (
                    typing.get_origin(tp) in (typing.Union, types.UnionType)
                    and any(typing.get_origin(a) is list for a in _args(tp))
                    and isinstance(value, str)
                )
            ):
                hint = f'; write ["{value}"] for a single item'
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ValueError(
                f"{what or type(obj).__name__} field {f.name!r} must be {describe_type(tp)} "
                f"(got {type(value).__name__} {shown}){hint}."
            )
