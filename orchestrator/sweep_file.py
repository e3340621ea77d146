"""Sweep files and flags: load a sweep YAML, check every setting's type against its config dataclass, and merge the
file with the command line's flags (flags win) into a SweepConfig."""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

from orchestrator.config import TrainConfig
from orchestrator.setting_types import check_setting_types, is_type
from orchestrator.sweep_plan import SweepConfig


class DuplicateKey(ValueError):
    pass


def _unique_keys_loader():
    """yaml's SafeLoader, refusing a key given twice in one mapping (YAML itself lets the last one win in silence):
    `seq_len: 64` then `seq_len: 32`, or two `seed:` lines under `grid:`, is a mistake to name, not to guess."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise DuplicateKey(f"key {key!r} is given twice, on lines {seen[key] + 1} and "
                                       f"{key_node.start_mark.line + 1}; keep one")  # fmt: skip
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_sweep_yaml(path: str) -> dict:
    """A sweep file: train flags at the top level (names as in TrainConfig) and a `grid:` of axis -> list."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_unique_keys_loader()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep config {path} does not exist") from None
    except DuplicateKey as exc:
        raise ValueError(f"sweep config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"sweep config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"sweep config {path} must be a mapping of settings with a `grid:` section")
    return data


def _fields_of_sizes(sizes) -> set[str]:
    from orchestrator.sizes import parse_compact

    if not isinstance(sizes, list):
        return set()
    return {k for s in sizes for k in (parse_compact(s) if isinstance(s, str) else s if isinstance(s, dict) else {})}


DEFAULT_GRID = {"arch": ["gptoss", "gpt2"], "n_layers": [6, 8, 12], "num_experts": [4, 8, 16]}  # the seed's grid


def build_sweep_config(
    config_path: Optional[str], grid_flags: dict, sweep_flags: dict, train_flags: dict
) -> SweepConfig:
    """Merge a sweep YAML with command-line flags (flags win; None means not given) into a SweepConfig.

    Without a YAML, axes not given default to the seed's grid (unless variants are given: then the grid is the
    variants times the axes given). `variants:` (YAML) / --variants is the variant axis (grid's `variant`).
    `budget_tokens` (YAML) / --budget-tokens is the per-trial token budget; giving a budget or --max-steps on the
    command line replaces the other from the YAML.
    `budgets` (YAML list) / --budgets trains every point at several budgets (wsd branches) instead of one.
    """
    settings = load_sweep_yaml(config_path) if config_path else {}
    grid = settings.pop("grid", {}) or {}
    if not isinstance(grid, dict):
        raise ValueError(f"sweep config {config_path}: grid must be a mapping of axis -> list of values, got {grid!r}")
    grid = dict(grid)
    if "variants" in settings:
        variants = settings.pop("variants")
        if not isinstance(variants, list):
            raise ValueError(f"variants in {config_path} must be a list of variant names, got {variants!r}")
        grid["variant"] = variants
    grid.update({k: v for k, v in grid_flags.items() if v is not None})
    if not config_path and "variant" not in grid:
        shaped = _fields_of_sizes(sweep_flags.get("sizes") or settings.get("sizes") or [])
        for axis, default in DEFAULT_GRID.items():
            if axis not in shaped:  # a size's own fields are not also a default axis
                grid.setdefault(axis, default)
    sweep_keys = {f.name for f in fields(SweepConfig)} - {"base", "grid"}
    sweep_settings = {k: settings.pop(k) for k in list(settings) if k in sweep_keys}
    if "budget_tokens" in settings:
        if not is_type(settings["budget_tokens"], int):
            raise ValueError(
                f"sweep config {config_path}: budget_tokens must be an integer, got {settings['budget_tokens']!r}"
            )
        settings["max_tokens"] = settings.pop("budget_tokens")
    # One budget or a list of them: what the command line gives replaces what the file gives.
    if sweep_flags.get("budgets") is not None:
        settings.pop("max_tokens", None)
        settings.pop("max_steps", None)
    elif train_flags.get("max_tokens") is not None or train_flags.get("max_steps") is not None:
        sweep_settings.pop("budgets", None)
    sweep_settings.update({k: v for k, v in sweep_flags.items() if v is not None})
    if train_flags.get("max_tokens") is not None:
        settings.pop("max_steps", None)
    elif train_flags.get("max_steps") is not None:
        settings.pop("max_tokens", None)
    settings.update({k: v for k, v in train_flags.items() if v is not None})
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} in {config_path}; use train flag names "
            f"(e.g. seq_len, budget_tokens) and a grid: section"
        )
    settings.setdefault("data", "data/tinystories")
    where = f"sweep config {config_path}" if config_path else "sweep"
    check_setting_types(settings, TrainConfig, where)
    check_setting_types(sweep_settings, SweepConfig, where)
    return SweepConfig(base=TrainConfig(**settings), grid=grid, **sweep_settings)
