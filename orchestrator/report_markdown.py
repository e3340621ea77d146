"""REPORT.md's text: render_markdown, one function per section, from result rows and the sections other modules
build (budgets, the ladder, sizes, reference lines). Pure functions of result rows."""

from __future__ import annotations

import json
from typing import Optional

from orchestrator.ladder import device_lines
from orchestrator.report_tables import (
    architecture_table,
    best_experts_table,
    best_lr_rows,
    headline_table,
    largest_budget_rows,
    loss_scope_line,
    lr_table,
    params_table,
    speed_note,
)

_SETTINGS = (
    "data",
    "preset",
    "seq_len",
    "batch_size",
    "grad_accum",
    "max_steps",
    "max_tokens",
    "lr",
    "min_lr",
    "warmup_steps",
    "schedule",
    "cooldown_frac",
    "weight_decay",
    "eval_every",
    "eval_windows",
)


def intro_lines(rows: list[dict], sweep: dict) -> list[str]:
    return [
        f"# Sweep report: {sweep.get('name', '?')}",
        "",
        f"{len(rows)} finished trials. Improvement = (GPT-2 loss - GPT-OSS loss) / GPT-2 loss: "
        "positive means GPT-OSS is better. "
        "Losses are final validation losses in nats per token on the same fixed validation windows; ± is the standard "
        "deviation over seeds; on the improvement it is that of the per-seed differences "
        "(trials with the same seed see the same batches in the same order).",
        "",
        *device_lines(rows),
    ]


def ladder_lines(rows: list[dict], scope: str) -> list[str]:
    """The component ladder's section, when some trials ran a named variant."""
    if not any(r.get("variant") for r in rows):
        return []
    from orchestrator.ladder import ladder_section

    return [
        "## Component ladder: where the difference comes from",
        "",
        *ladder_section(best_lr_rows(rows)),
        "",
        scope,
        "",
    ]


def headline_lines(plain: list[dict], scope: str) -> list[str]:
    headline = headline_table(plain) if plain else ["(every trial ran a named variant: see the component ladder)"]
    return ["## 1. GPT-OSS vs GPT-2 per depth", "", *headline, "", scope, ""]


def lr_lines(rows: list[dict], scope: str) -> list[str]:
    lrs = lr_table(rows)
    if not lrs:
        return []
    return [
        "Models trained at several learning rates are compared at their best lr (lowest mean final val loss, "
        "in bold); a best lr at the edge of the model's grid is marked:",
        "",
        *lrs,
        "",
        scope,
        "",
    ]


def architecture_lines(rows: list[dict], sweep: dict) -> list[str]:
    return ["## 2. Architectures", "", *architecture_table(rows), "", speed_note(rows, sweep), ""]


def params_lines(rows: list[dict], scope: str) -> list[str]:
    return [
        "## 3. Validation loss against parameters and compute",
        "",
        "Judge 'better per parameter' on both counts: "
        "an MoE model has more total parameters than it activates per token.",
        "",
        *params_table(rows),
        "",
        scope,
        "",
        "![final val loss vs params](loss_vs_params.png)",
        "",
        "![final val loss vs compute](loss_vs_compute.png)",
        "",
        "![val loss curves](loss_curves.png)",
        "",
    ]


def experts_lines(plain: list[dict]) -> list[str]:
    experts = best_experts_table(largest_budget_rows(plain))
    if len(experts) <= 2:
        return []
    several = len({r.get("budget") for r in plain}) > 1
    return ["## 4. Best expert count per depth", "", *(["At the largest budget.", ""] if several else []), *experts, ""]


def budget_lines(rows: list[dict], budget: Optional[dict], baseline: str, scope: str) -> list[str]:
    if not budget:
        return []
    return [
        f"## 4b. Loss against budget ({baseline.split(',')[0]} as the baseline)",
        "",
        *device_lines(rows),
        *budget["lines"],
        "",
        scope,
        "",
    ]


def reference_lines(reference_table: Optional[list]) -> list[str]:
    if not reference_table:
        return []
    return [
        "## 4c. Count-based reference models (horizontal lines on every loss plot)",
        "",
        "Fitted on the sweep's training tokens and scored on the whole validation split "
        "by `python cli.py baseline`. "
        "A model above the trigram line has not yet learned more than local word statistics.",
        "",
        *reference_table,
        "",
    ]


def settings_lines(sweep: dict) -> list[str]:
    base = sweep.get("base", {})
    settings = {k: base.get(k) for k in _SETTINGS if k in base}
    if sweep.get("budgets"):
        settings["budgets"] = sweep["budgets"]
    recorded = dict(
        settings=settings,
        grid=sweep.get("grid", {}),
        lr_by_arch=sweep.get("lr_by_arch", {}),
        lr_by_variant=sweep.get("lr_by_variant", {}),
        workers_per_trial=sweep.get("workers_per_trial"),
    )
    # Keys a sweep without them never had: committed reports of such sweeps stay as they were.
    for key in ("sizes", "holdout"):
        if sweep.get(key):
            recorded[key] = sweep[key]
    return ["## 5. Settings", "", "```json", json.dumps(recorded, indent=1), "```", ""]


def render_markdown(
    rows: list[dict],
    sweep: dict,
    budget: Optional[dict] = None,
    reference_table: Optional[list] = None,
    baseline: str = "gpt2",
    size_lines: Optional[list] = None,
) -> str:
    """REPORT.md after its status lines. size_lines: the "## Size" section (size_report.size_section), placed after
    the budget section, when the sweep spans more than one size."""
    scope = loss_scope_line(rows)
    # Variants (the component ladder) get their own section; the GPT-OSS vs GPT-2 tables keep the plain trials.
    plain = [r for r in rows if not r.get("variant")]
    out = [
        *intro_lines(rows, sweep),
        *ladder_lines(rows, scope),
        *headline_lines(plain, scope),
        *lr_lines(rows, scope),
        *architecture_lines(rows, sweep),
        *params_lines(rows, scope),
        *experts_lines(plain),
        *budget_lines(rows, budget, baseline, scope),
        *([*size_lines, ""] if size_lines else []),
        *reference_lines(reference_table),
        *settings_lines(sweep),
    ]
    return "\n".join(out)
