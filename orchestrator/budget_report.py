"""The report's budget section: per-budget gaps with paired intervals, the fit table, the multipliers with their
interval methods and extrapolation spreads, and the loss-against-budget plot. Pure functions of result rows and the
analysis in orchestrator/scaling.py."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

import numpy as np

from orchestrator.formatting import draw_references, fmt_tokens
from orchestrator.scaling import (
    MIN_BUDGETS_TO_FIT,
    ModelCurve,
    Multiplier,
    fit_power_law,
    model_curves,
    multipliers,
    pick_baseline,
    trend,
)


def _fmt_x(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2f}x"


def gap_table(
    rows: list[dict], curves: dict[str, ModelCurve], baseline: str, epoch_tokens: Optional[int] = None
) -> list[str]:
    """Per budget, each model's loss and bits/byte (mean ± std over seeds) and its PAIRED difference from the
    baseline's (model - baseline per seed, so negative = below the baseline) with its std and 95% t-interval.
    epoch_tokens (the training split's size) adds the epochs each budget is."""
    from orchestrator.ladder import loss_cells, paired_step, step_cells

    by_budget: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_budget[r["budget"]][r["model"]].append(r)
    epochs = "epochs | " if epoch_tokens else ""
    lines = [
        f"| budget | {epochs}model | val loss (nats) | bits/byte | − {baseline} (nats) | paired std | 95% interval | "
        f"− {baseline} (bits/byte) | seeds | |",
        "|---:|" + ("---:|" if epoch_tokens else "") + "---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for budget in sorted(by_budget):
        models = by_budget[budget]
        bases = {name: pick_baseline(curves, curves[name], baseline) for name in models}
        # The baseline first, then the others by name.
        for name in sorted(models, key=lambda n: (bases[n] is not curves[n], n)):
            mine, base = models[name], bases[name]
            head = f"| {fmt_tokens(budget)} | " + (f"{budget / epoch_tokens:.2f} | " if epoch_tokens else "")
            if base is None or base is curves[name] or base.model not in models:
                verdict = "baseline" if base is curves[name] else f"no {baseline} at this budget"
                lines.append(f"{head}{name} | {loss_cells(mine)} | | | | | {len(mine)} | {verdict} |")
                continue
            lines.append(f"{head}{name} | {loss_cells(mine)} | {step_cells(paired_step(models[base.model], mine))} |")
    return lines


def budget_section(
    rows: list[dict], baseline: str, references: list[tuple[str, float, float]], epoch_tokens: Optional[int] = None
) -> dict:
    """Markdown lines (each model against the baseline per budget, fits, multipliers, trends) and the
    loss-against-budget PNG for rows carrying `model` labels.

    baseline: an arch, variant or model label, or several comma-separated ("gpt2,+untied"): the first is what the
    per-budget differences are taken against; the multipliers are measured against each in turn.
    references: (name, nats/token, bits/byte) of count-based models, drawn as horizontal lines. epoch_tokens: the
    training split's size in tokens, for the epochs of each budget."""
    baselines = [b.strip() for b in baseline.split(",") if b.strip()] or ["gpt2"]
    curves = model_curves(rows)
    n_budgets = max(len(c.budgets) for c in curves.values())
    fits = {name: fit_power_law(c.tokens, c.loss) for name, c in curves.items()}
    lines = [
        "One line per model through its token budgets (mean over seeds; the band spans the seeds). Budgets of one "
        "model and seed share one WSD run: each smaller budget's cooldown branches from it.",
        "",
        "![loss vs budget](loss_vs_budget.png)",
        "",
    ]
    if n_budgets < 2:
        lines += [
            "Every model has a single budget: give the sweep `budgets:` (or --budgets) for curves, fits and "
            "multipliers."
        ]
        return dict(lines=lines, plot=plot_loss_vs_budget(curves, rows, references), fits=fits)
    first = baselines[0]
    lines += [
        f"### Each model against {first}, per budget",
        "",
        f"− {first} = the model's final val loss minus {first}'s, per seed (same seed = same batches), "
        "then averaged: negative = lower than the baseline. The 95% t-interval is mean +- t(n-1) * std / sqrt(n) "
        "over the n per-seed differences (seeds = n, the seeds both have). A difference whose interval contains 0, "
        "or that has one seed, is not resolved.",
        "",
        *gap_table(rows, curves, first, epoch_tokens),
        "",
    ]
    lines += ["### Fits L(D) = E + B * D^-beta (D in tokens)", ""]
    lines += ["| model | budgets | E (nats) | B | beta | rmse |", "|---|---:|---:|---:|---:|---:|"]
    for name, c in sorted(curves.items()):
        fit = fits[name]
        if fit:
            lines.append(
                f"| {name} | {len(c.budgets)} | {fit['E']:.4f} | {fit['B']:.4g} | {fit['beta']:.4f} | "
                f"{fit['rmse']:.2g} |"
            )
        else:
            lines.append(f"| {name} | {len(c.budgets)} | - | - | - | - |")
    if any(fits[n] is None for n in curves):
        lines += [
            "",
            f"Models with fewer than {MIN_BUDGETS_TO_FIT} budgets get no fit: their curves are read by log-log "
            "interpolation between budgets only, and nothing is extrapolated from a fit.",
        ]
    for against in baselines:
        lines += multiplier_lines(curves, fits, against)
    return dict(lines=lines, plot=plot_loss_vs_budget(curves, rows, references), fits=fits)


def multiplier_lines(curves: dict[str, ModelCurve], fits: dict[str, Optional[dict]], baseline: str) -> list[str]:
    """The multipliers table of every model against `baseline`'s curve, and which way each moves with the budget."""
    lines = [
        "",
        f"### Effective data and compute multipliers against {baseline}",
        "",
        f"At each budget of a model: the tokens (training FLOPs) {baseline} would need to reach that model's loss, "
        f"over the tokens (FLOPs) the model used, read on {baseline}'s curve by log-log interpolation. "
        "[Brackets: a 95% Student-t interval over the per-seed multipliers (on the log scale), each seed's loss read "
        f"on {baseline}'s curve of the same seed where both have the same seeds (paired), else on {baseline}'s mean "
        "curve; the interval column gives the method and the number of seeds.] *extrapolated* marks a loss outside "
        f"{baseline}'s measured range: the value is read off its fit when it has one, else its nearest segment "
        "extended, and the note gives the spread across extrapolation rules (power law over every budget, last "
        "segment in log-log, log-log line over the last three budgets); no seed interval covers that choice.",
        "",
        "| model | budget | val loss | baseline tokens needed | data multiplier | compute multiplier | interval | "
        "note |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    trends = []
    for name, c in sorted(curves.items()):
        base = pick_baseline(curves, c, baseline)
        if base is None:
            trends.append(
                f"- {name}: no {baseline} curve to compare with "
                "(none, or several without one of the same shape or depth)"
            )
            continue
        if base is c:
            continue
        if len(base.budgets) < 2:
            trends.append(f"- {name}: {base.model} has one budget, so its curve cannot be interpolated")
            continue
        result = multipliers(c, base, fits[base.model])
        for m in result:
            interval = f" [{m.data_interval[0]:.2f}, {m.data_interval[1]:.2f}]" if m.data_interval else ""
            c_interval = f" [{m.compute_interval[0]:.2f}, {m.compute_interval[1]:.2f}]" if m.compute_interval else ""
            lines.append(
                f"| {name} | {fmt_tokens(m.budget)} | {m.loss:.4f} | {fmt_tokens(m.baseline_tokens)} | "
                f"{_fmt_x(m.data)}{interval} | {_fmt_x(m.compute)}{c_interval} | {interval_cell(m)} | "
                f"{extrapolation_note(m)} |"
            )
        if len(result) > 1:
            direction = trend([m.data for m in result])
            trends.append(
                f"- {name} against {base.model}: data multiplier **{direction}** as the budget grows "
                f"({_fmt_x(result[0].data)} at {fmt_tokens(result[0].budget)} tokens, "
                f"{_fmt_x(result[-1].data)} at {fmt_tokens(result[-1].budget)})"
            )
    return lines + (["", *trends] if trends else [])


def interval_cell(m: Multiplier) -> str:
    """The interval's method and seed count, short: "t95, 3 seeds paired"; "none (1 seed)" without one."""
    if not m.data_interval:
        return "none (1 seed)"
    return f"t95, {m.seeds} seeds " + ("paired" if "paired" in m.interval_method else "vs mean curve")


def extrapolation_note(m: Multiplier) -> str:
    """'' inside the baseline's range; else that the value is extrapolated, past which bound, and the rules' spread."""
    if not m.extrapolated:
        return ""
    lo, hi = m.measured_range
    side = f"beyond the baseline's measured range (> {fmt_tokens(hi)} tokens)"
    if m.baseline_tokens < lo:
        side = f"below the baseline's measured range (< {fmt_tokens(lo)} tokens)"
    text = f"*extrapolated*: {side}"
    values = [v for v in m.by_rule.values() if math.isfinite(v)]
    if len(values) > 1:
        rules = ", ".join(f"{k} {_fmt_x(v)}" for k, v in m.by_rule.items())
        text += f"; {_fmt_x(min(values))}-{_fmt_x(max(values))} across rules ({rules})"
    return text


def plot_loss_vs_budget(
    curves: dict[str, ModelCurve], rows: list[dict], references: list[tuple[str, float, float]]
) -> bytes:
    """Two panels: final val loss against training tokens and against training FLOPs, one line per model through its
    budgets with the seeds' span as a band, and the n-gram references as horizontal lines."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, c) in enumerate(sorted(curves.items())):
        color = colors[i % len(colors)]
        seeds = np.array([c.seed_loss[s] for s in c.seeds])
        for ax, x in zip(axes, (c.tokens, c.flops)):
            if not np.all(np.isfinite(x)):
                continue
            ax.plot(x, c.loss, marker="o", color=color, label=name)
            if len(c.seeds) > 1:
                ax.fill_between(x, np.nanmin(seeds, axis=0), np.nanmax(seeds, axis=0), color=color, alpha=0.2)
    for ax, label in zip(axes, ("training tokens", "training FLOPs (forward + backward)")):
        draw_references(ax, references)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final validation loss (nats/token)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Loss against budget")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
