"""Model sizes as a sweep axis: a shape (model fields applied together, e.g. {d_model: 64, n_layers: 4, n_heads: 4}, or
its compact spelling L4-d64-h4), its label, the sweep's list of shapes checked, the held-out size of a predict-then-
verify sweep, and which shape a finished trial's model config is. Pure planning: no storage, no Ray."""

from __future__ import annotations

import re
from typing import Any, Optional, Union

NAME_KEY = "name"  # a shape's optional label: `{name: small, d_model: 64, ...}`
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_TOKEN_RE = re.compile(r"^([A-Za-z_]+?)(\d+(?:\.\d+)?)$")


def _short_names() -> dict[str, str]:
    from orchestrator.sweep_plan import _SHORT

    return _SHORT


def _rank(field: str) -> tuple:
    from orchestrator.sweep_plan import _axis_rank

    return _axis_rank(field)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_compact(text: str) -> dict:
    """'L4-d64-h4' (or 'd64-L4-h4', any order) -> {n_layers: 4, d_model: 64, n_heads: 4}: each part is a trial-name
    abbreviation (L, d, h, hd, kv, i, E, k, ...) or a field name, followed by its number."""
    by_short = {short: field for field, short in _short_names().items()}
    shape: dict = {}
    for part in str(text).split("-"):
        match = _TOKEN_RE.match(part)
        if not match:
            raise ValueError(
                f"size {text!r}: part {part!r} is not an abbreviation and a number such as L4, d64, h4 or hd16"
            )
        key, number = match.groups()
        field = by_short.get(key, key)
        if field in shape:
            raise ValueError(f"size {text!r} gives {field} twice")
        shape[field] = float(number) if "." in number else int(number)
    return shape


def normalise_shape(shape: Union[str, dict], allowed: set[str], kinds: dict) -> dict:
    """A shape as a dict of model fields (plus an optional name), checked: every field a model field, of its type.
    `kinds`: field -> the type it takes (None: not checked)."""
    from orchestrator.setting_types import TYPE_WORDS, is_type, yaml_number_hint

    if isinstance(shape, str):
        shape = parse_compact(shape)
    if not isinstance(shape, dict):
        raise ValueError(f"a size must be a mapping such as {{d_model: 64, n_layers: 4, n_heads: 4}}, got {shape!r}")
    shape = dict(shape)
    name = shape.pop(NAME_KEY, None)
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise ValueError(f"size name {name!r} must be letters, digits, '.', '_' or '-' (at most 40)")
    if not shape:
        raise ValueError(f"size {name or shape!r} sets no model field; give e.g. d_model, n_layers, n_heads")
    for field, value in shape.items():
        if field not in allowed:
            raise ValueError(f"size field {field!r} is not a model field; allowed: {', '.join(sorted(allowed))}")
        kind = kinds.get(field)
        if kind is not None and not is_type(value, kind):
            raise ValueError(
                f"size field {field!r} takes {TYPE_WORDS[kind]} values, got {value!r}" + yaml_number_hint(value, kind)
            )
    ordered = dict(sorted(shape.items(), key=lambda kv: _rank(kv[0])))
    return {**({NAME_KEY: name} if name else {}), **ordered}


def fields_of(shape: dict) -> dict:
    """The model fields a shape sets (its name left out)."""
    return {k: v for k, v in shape.items() if k != NAME_KEY}


def shape_label(shape: dict) -> str:
    """A shape's label in reports and predictions: its name, else its fields abbreviated in trial-name order
    (L4-d64-h4)."""
    if shape.get(NAME_KEY):
        return str(shape[NAME_KEY])
    short = _short_names()
    ordered = sorted(fields_of(shape).items(), key=lambda kv: _rank(kv[0]))
    return "-".join(f"{short.get(k, k)}{_fmt(v)}" for k, v in ordered)


def check_sizes(sizes: list, grid: dict, allowed: set[str], kinds: dict) -> list[dict]:
    """The sweep's sizes normalised; a ValueError naming what is wrong: not a list, a field that is also a grid axis,
    two shapes alike or of one label."""
    if not isinstance(sizes, list) or not sizes:
        raise ValueError(
            f"sizes must be a non-empty list of shapes such as [{{d_model: 64, n_layers: 4}}], got {sizes!r}"
        )
    shapes = [normalise_shape(s, allowed, kinds) for s in sizes]
    for shape in shapes:
        both = sorted(set(fields_of(shape)) & set(grid))
        if both:
            raise ValueError(f"size field(s) {', '.join(both)} are also grid axes; give each in sizes or in the grid")
    labels = [shape_label(s) for s in shapes]
    seen: set = set()
    for shape, label in zip(shapes, labels):
        key = tuple(sorted(fields_of(shape).items()))
        if key in seen or labels.count(label) > 1:
            raise ValueError(f"size {label} is given twice; give every shape once")
        seen.add(key)
    return shapes


def resolve_holdout(holdout: dict, sizes: list[dict], budgets: list[int], single_budget: Optional[int]) -> dict:
    """{size: label, budget: tokens} of a held-out point, checked against the sweep's sizes and budgets; `size` may be
    a label or a shape (mapping or compact spelling)."""
    if not isinstance(holdout, dict) or set(holdout) != {"size", "budget"}:
        raise ValueError(f"holdout must be {{size: <size label or shape>, budget: <tokens>}}, got {holdout!r}")
    if not sizes:
        raise ValueError("holdout needs sizes: the held-out point is one of the sweep's sizes")
    labels = [shape_label(s) for s in sizes]
    size = holdout["size"]
    if not (isinstance(size, str) and size in labels):
        try:
            wanted = fields_of(normalise_shape(size, set(fields_of_all(sizes)), {}))
        except ValueError:
            wanted = None
        match = [shape_label(s) for s in sizes if fields_of(s) == wanted]
        if not match:
            raise ValueError(f"holdout size {size!r} is none of the sweep's sizes ({', '.join(labels)})")
        size = match[0]
    budget = holdout["budget"]
    allowed = budgets or ([single_budget] if single_budget else [])
    if isinstance(budget, bool) or not isinstance(budget, int) or budget not in allowed:
        raise ValueError(
            f"holdout budget {budget!r} is not one of the sweep's budgets ({', '.join(map(str, allowed)) or 'none'})"
        )
    return dict(size=size, budget=budget)


def fields_of_all(sizes: list[dict]) -> list[str]:
    return sorted({k for s in sizes for k in fields_of(s)})


def size_of_model(model_config: dict, sizes: list[dict]) -> Optional[str]:
    """The label of the shape a trial's model config is: the first of `sizes` whose fields (those the model has) it
    matches; None when none does."""
    for shape in sizes:
        own = {k: v for k, v in fields_of(shape).items() if k in model_config}
        if own and all(model_config[k] == v for k, v in own.items()):
            return shape_label(shape)
    return None
