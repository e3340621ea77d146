"""Predict, then verify, on a sweep directory: which trials are the held-out size's, the held-out size's parameter
counts from the model accounting (a meta-device model: nothing trained, nothing allocated), and predictions.json
written once, from the other sizes' results, before any held-out trial starts."""

from __future__ import annotations

import json
from typing import Optional

from orchestrator.report import TRIALS_DIR, collect_rows
from orchestrator.report_sizes import PREDICTIONS_FILE, add_size_fields
from orchestrator.storage import Storage, open_storage


def parse_predict(text: str) -> dict:
    """--predict SIZE,BUDGET -> {size, budget}; a ValueError saying the form otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not parts[0] or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(
            f"--predict takes SIZE,BUDGET such as L4-d256-h4,4194304 (a size label and tokens), got {text!r}"
        )
    return dict(size=parts[0], budget=int(parts[1]))


def sweep_config_of(sweep: dict):
    """The SweepConfig a sweep.json records (None for a sweep.json from before sizes, or one that no longer checks)."""
    from dataclasses import fields

    from orchestrator.config import TrainConfig
    from orchestrator.sweep_plan import SweepConfig

    if not sweep.get("base"):
        return None
    names = {f.name for f in fields(SweepConfig)} - {"base"}
    try:
        return SweepConfig(base=TrainConfig.from_dict(sweep["base"]), **{k: sweep[k] for k in names if k in sweep})
    except (ValueError, TypeError):
        return None


def held_out_points(cfg, size: str) -> list:
    from orchestrator.sweep_plan import expand_grid

    return [p for p in expand_grid(cfg) if p.size == size]


def is_held_out(name: str, point_names: set[str]) -> bool:
    """A trial of a held-out point: the point's own run, or (with budgets) its long run or a branch, <point>-D<n>."""
    return name in point_names or name.rsplit("-D", 1)[0] in point_names


def held_out_params(cfg, size: str, vocab_size: int) -> dict[str, int]:
    """Non-embedding parameters per family at the held-out size, from a model built on the meta device (as
    trainer.plan_run counts them), so that the prediction needs no held-out trial."""
    import torch

    from gptoss import build_model, count_params
    from orchestrator.report_sizes import family_of_point

    out = {}
    for point in held_out_points(cfg, size):
        tcfg = point.train_config(cfg.base, "unused", cfg.workers_per_trial)
        with torch.device("meta"):
            model = build_model(
                point.arch, tcfg.preset, **{**tcfg.resolved_model_overrides(), "vocab_size": vocab_size}
            )
        out.setdefault(family_of_point(point, cfg), int(count_params(model)["non_embedding"]))
    return out


def _started(storage: Storage, root: str, trials: list[str]) -> list[str]:
    return [t for t in trials if storage.exists(f"{root}/{TRIALS_DIR}/{t}")]


def write_predictions(sweep_dir: str, holdout: dict, show: Optional[callable] = None) -> dict:
    """Fit every size but the held-out one and write <sweep>/predictions.json (atomically); returns the predictions.
    Refuses, in one line, to replace a predictions.json once a held-out trial has started: that file is the evidence
    that the prediction came first."""
    from orchestrator.predictions import predict, predictions_json, with_other_budgets
    from orchestrator.report import _existing_local

    storage = open_storage(sweep_dir) if "://" in sweep_dir else _existing_local(sweep_dir)
    root = storage.root
    sweep = json.loads(storage.read_text(f"{root}/sweep.json")) if storage.exists(f"{root}/sweep.json") else {}
    cfg = sweep_config_of(sweep)
    if cfg is None or not cfg.sizes:
        raise ValueError(f"{sweep_dir} is not a sweep over sizes (its sweep.json has no sizes); predict needs one")
    from orchestrator.sizes import resolve_holdout

    holdout = resolve_holdout(holdout, cfg.sizes, cfg.budgets, cfg.base.max_tokens)
    points = {p.name for p in held_out_points(cfg, holdout["size"])}
    held = [t for t in sweep.get("trials") or sweep.get("points") or [] if is_held_out(t, points)]
    started = _started(storage, root, held)
    if storage.exists(f"{root}/{PREDICTIONS_FILE}") and started:
        raise ValueError(
            f"{root}/{PREDICTIONS_FILE} exists and held-out trial {started[0]} has started; it is kept as the record "
            "of what was predicted first (move it away yourself to predict again)"
        )
    configs: dict = {}
    rows, _ = collect_rows(storage, root, None, configs)
    add_size_fields(rows, configs, cfg.sizes, always=True)
    rows = [r for r in rows if r["size"] != holdout["size"]]
    if not rows:
        raise ValueError(f"{sweep_dir} has no finished trials outside the held-out size {holdout['size']}")
    vocab = int(next(iter(configs.values())).get("vocab_size") or 0)
    base = cfg.base
    params = held_out_params(cfg, holdout["size"], vocab)

    def at(budget: int) -> dict:
        steps = type(base).from_dict({**base.to_dict(), "max_tokens": budget, "max_steps": None})
        tokens = steps.total_steps(cfg.workers_per_trial) * base.tokens_per_step(cfg.workers_per_trial)
        return predict(rows, dict(holdout, budget=budget, tokens=tokens, params_non_embedding=params))

    # The held-out size trains every budget of the sweep: each is predicted, the holdout's own one first.
    others = [b for b in cfg.budgets if b != holdout["budget"]]
    predictions = with_other_budgets(at(holdout["budget"]), {b: at(b) for b in others})
    storage.write_text(f"{root}/{PREDICTIONS_FILE}", predictions_json(predictions))
    if show:
        show(f"predictions for {holdout['size']} at {holdout['budget']:,} tokens -> {storage.uri_of(PREDICTIONS_FILE)}")
    return predictions
