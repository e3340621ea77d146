"""Settings against their dataclass fields' types, as YAML gives them (bool is not a number, 1e-3 without a dot is
text): one line naming the field, the expected type and the value."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

TYPE_WORDS = {int: "integer", float: "number", bool: "true/false", str: "text", dict: "mapping", list: "list"}


def is_type(value: Any, kind: type) -> bool:
    """YAML's types against a field's: bool is not a number, an integer is a valid float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def field_type(annotation: str) -> tuple[Optional[type], bool]:
    """(type, optional) of a dataclass field annotation written as a string (`Optional[int]`, `dict[str, Any]`)."""
    text = str(annotation).replace(" ", "")
    optional = text.startswith("Optional[") or text.endswith("|None")
    text = (
        text.removeprefix("Optional[").removesuffix("]") if text.startswith("Optional[") else text.removesuffix("|None")
    )
    base = text.split("[", 1)[0]
    return {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list}.get(base), optional


def check_setting_types(settings: dict, cls, where: str) -> None:
    """Every setting has its dataclass field's type; else one line naming the field, the expected type and the value."""
    annotations = {f.name: f.type for f in fields(cls)}
    for key, value in settings.items():
        if key not in annotations:
            continue
        kind, optional = field_type(annotations[key])
        if kind is None or (value is None and optional) or is_type(value, kind):
            continue
        wanted = TYPE_WORDS[kind] + (" or null" if optional else "")
        raise ValueError(
            f"{where}: {key} must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {value!r}"
            + yaml_number_hint(value, kind)
        )


def yaml_number_hint(value: Any, kind: type) -> str:
    """YAML 1.1 reads 1e-3 (no dot) as text: say so where a number was meant."""
    if kind in (int, float) and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (YAML reads {value} as text; write it with a dot, e.g. {float(value)!r})"
    return ""
