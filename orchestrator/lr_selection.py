"""Checks on learning rates chosen by one sweep and used by another (lr_from): do the two train under the same
schedule? Pure functions of training-config dicts (TrainConfig.to_dict(), or a sweep's `base`); no storage, no Ray."""

from __future__ import annotations

from typing import Optional

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
