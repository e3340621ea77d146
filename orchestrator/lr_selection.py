"""Learning rates chosen by one sweep and used by another (`lr_from`): each model's best lr in a finished lr sweep,
applied to a new sweep's points, and whether the two train under the same schedule."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

from orchestrator.console import say
from orchestrator.report import TRIALS_DIR
from orchestrator.run_dir import CONFIG_FILE, SUMMARY_FILE

if TYPE_CHECKING:
    from orchestrator.sweep_plan import SweepConfig, TrialPoint


def _shape_of(config: dict) -> str:
    return f"L{config.get('n_layers')}-d{config.get('d_model')}-h{config.get('n_heads')}"


def best_lrs(sweep_dir: str) -> dict[str, dict]:
    """Each model's best lr in a finished sweep (a local directory or a storage URI): model (variant, else arch) ->
    {lr, val_loss (mean over seeds), grid (the lrs tried), edge (the best is the smallest or largest tried), shape,
    other_shapes}. Only trials that ran all their steps count.

    Lrs are compared within one shape only: a model tried at several shapes (a transfer check beside the grid) takes
    its lr from the shape with the widest lr grid (then the most trials, then the widest model), and other_shapes
    lists the rest with their own best lrs, so that a loss at one width never averages with a loss at another."""
    from orchestrator.storage import open_storage

    storage = open_storage(sweep_dir, writable=False)
    trials = storage.path(TRIALS_DIR)
    if not storage.is_dir(trials):
        raise ValueError(
            f"lr_from {sweep_dir}: no {TRIALS_DIR}/ folder there; name a sweep directory "
            f"(<storage>/<sweep name>) whose lr sweep has finished"
        )
    losses: dict[tuple[str, str], dict[float, list[float]]] = {}
    seeds: dict[tuple[str, str], set] = {}
    schedules: dict[tuple[str, str], dict] = {}
    widths: dict[str, int] = {}
    for trial in sorted(storage.list_dirs(trials)):
        if ".old-" in trial.rsplit("/", 1)[-1]:
            continue  # a run moved aside when it was started over
        try:
            saved = json.loads(storage.read_text(f"{trial}/{CONFIG_FILE}"))
            summary = json.loads(storage.read_text(f"{trial}/{SUMMARY_FILE}"))
        except (OSError, ValueError):
            continue  # unfinished or damaged: not a measurement
        if summary.get("final_val_loss") is None or summary.get("steps") != saved.get("total_steps"):
            continue
        config = saved["config"]
        key = (config.get("variant") or config["arch"], _shape_of(config))
        widths[key[1]] = int(config.get("d_model") or 0)
        losses.setdefault(key, {}).setdefault(float(saved["lr"]), []).append(float(summary["final_val_loss"]))
        seeds.setdefault(key, set()).add(config.get("seed"))
        schedules.setdefault(key, dict(config, total_steps=saved.get("total_steps")))
    if not losses:
        raise ValueError(f"lr_from {sweep_dir}: no finished trial there yet; run (or resume) that sweep first")
    per_shape = {}
    for key, by_lr in losses.items():
        means = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
        best = min(means, key=means.get)
        per_shape[key] = dict(
            lr=best,
            val_loss=means[best],
            grid=sorted(means),
            edge=len(means) > 1 and best in (min(means), max(means)),
            seeds=sorted(seeds[key], key=str),  # the seeds that chose it
            schedule=schedules[key],  # one of its trials' settings: what the lr was tuned under
            shape=key[1],
        )
    out = {}
    for model in sorted({m for m, _ in per_shape}):
        shapes = [s for m, s in per_shape if m == model]
        tuned = max(
            shapes,
            key=lambda s: (len(losses[model, s]), sum(map(len, losses[model, s].values())), widths[s], s),
        )
        out[model] = dict(
            per_shape[model, tuned],
            other_shapes={s: per_shape[model, s]["lr"] for s in sorted(shapes) if s != tuned},
        )
    return out


def apply_lr_from(cfg: "SweepConfig", points: list["TrialPoint"]) -> dict[str, dict]:
    """Fill lr_by_variant / lr_by_arch from cfg.lr_from's best lrs (explicit entries win); every point's model must
    be there. Warns where a chosen lr is at the edge of its grid. Returns the choices taken from lr_from."""
    found = best_lrs(cfg.lr_from)
    models = sorted({dict(p.params).get("variant") or p.arch for p in points})
    missing = [m for m in models if m not in found and m not in cfg.lr_by_variant and m not in cfg.lr_by_arch]
    if missing:
        raise ValueError(
            f"lr_from {cfg.lr_from} has no finished trial of {', '.join(missing)}; it has {', '.join(sorted(found))}"
        )
    for p in points:
        variant = dict(p.params).get("variant")
        model = variant or p.arch
        if model in found:
            (cfg.lr_by_variant if variant else cfg.lr_by_arch).setdefault(model, found[model]["lr"])
    chosen = {
        m: found[m]
        for m in models
        if m in found and (cfg.lr_by_variant.get(m) or cfg.lr_by_arch.get(m)) == found[m]["lr"]
    }
    several = [f"{m} at {c['shape']}" for m, c in chosen.items() if c["other_shapes"]]
    if several:
        say(
            f"lr_from {cfg.lr_from}: lrs compared within one shape; taken for {', '.join(several)}, where each "
            f"was tried at the most lrs"
        )
    edge = [f"{m} ({c['lr']:g})" for m, c in chosen.items() if c["edge"]]
    if edge:
        say(
            f"warning: lr_from {cfg.lr_from}: the best lr of {', '.join(edge)} is at the edge of its grid, so a better "
            f"one may lie beyond it; extend that sweep's lr grid to be sure"
        )
    for line in lr_from_warnings(cfg, chosen):
        say(line)
    return chosen


# The fields an lr is tuned to, as the names lr_sweep_schedule_mismatch returns.
SCHEDULE_FIELDS = ("warmup", "cooldown", "schedule", "batch", "seq")


def _steps(cfg: dict) -> Optional[int]:
    for key in ("total_steps", "max_steps"):
        if cfg.get(key):
            return int(cfg[key])
    return None


def resolved_warmup(cfg: dict) -> Optional[int]:
    """Warmup steps the config trains with: warmup_steps when set (at most the run's steps), else TrainConfig's
    default of 5% of the steps, at most 200; None when neither is known (no warmup_steps and no step count)."""
    steps = _steps(cfg)
    if cfg.get("warmup_steps") is not None:
        return min(int(cfg["warmup_steps"]), steps) if steps else int(cfg["warmup_steps"])
    return min(200, max(1, steps // 20)) if steps else None


def _schedule_values(cfg: dict) -> dict:
    kind = cfg.get("schedule") or "cosine"
    return dict(
        warmup=resolved_warmup(cfg),
        cooldown=float(cfg.get("cooldown_frac", 0.2)) if kind == "wsd" else None,  # only wsd cools down by it
        schedule=kind,
        batch=int(cfg.get("batch_size") or 0) * int(cfg.get("grad_accum") or 1),
        seq=cfg.get("seq_len"),
    )


def lr_sweep_schedule_mismatch(lr_sweep_config: dict, measured_config: dict) -> list[str]:
    """The schedule fields (among SCHEDULE_FIELDS, in that order) in which the sweep that chose the lrs and the
    sweep that measures with them differ: warmup (resolved warmup steps), cooldown (wsd's cooldown_frac), schedule
    (its kind), batch (sequences per optimizer step: batch_size x grad_accum) and seq (seq_len). [] when they agree.
    A field neither config knows (a warmup with no step count on one side) is compared as given."""
    lr, measured = _schedule_values(lr_sweep_config), _schedule_values(measured_config)
    return [name for name in SCHEDULE_FIELDS if lr[name] != measured[name]]


def measured_schedule(cfg: "SweepConfig") -> dict:
    """The settings a sweep's runs train under, as lr_sweep_schedule_mismatch compares them: with budgets, the long
    runs' (every budget shares their warmup and stable phase)."""
    base = cfg.base.to_dict()
    if cfg.budgets:
        base.update(max_tokens=max(cfg.budgets), max_steps=None)
    steps = type(cfg.base).from_dict(base).total_steps(cfg.workers_per_trial)
    return dict(base, total_steps=steps)


def lr_from_warnings(cfg: "SweepConfig", chosen: dict[str, dict]) -> list[str]:
    """What makes an lr taken from another sweep a biased choice here, one line each: a different schedule than it
    was tuned under, and measured seeds that also chose it (their losses lean toward the lr they picked)."""
    lines = []
    measured = measured_schedule(cfg)
    differ = sorted({f for c in chosen.values() for f in lr_sweep_schedule_mismatch(c["schedule"], measured)})
    if differ:
        lines.append(
            f"warning: lr_from {cfg.lr_from}: its lrs were tuned under another {', '.join(differ)} than this sweep "
            f"trains with; rerun the lr sweep with this sweep's schedule, or set those to match"
        )
    measured_seeds = set(cfg.grid.get("seed", [cfg.base.seed]))
    shared = sorted(measured_seeds & {s for c in chosen.values() for s in c["seeds"]}, key=str)
    if shared:
        lines.append(
            f"warning: lr_from {cfg.lr_from}: seed(s) {', '.join(map(str, shared))} chose the lrs there and are "
            f"measured here too, which biases each model's loss toward its own lr; measure on other seeds (e.g. "
            f"--seeds {','.join(str(s + 100) for s in sorted(measured_seeds))})"
        )
    return lines
