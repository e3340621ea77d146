"""The report's "Size" section: loss against model size per budget, the joint fits with their intervals, each
family's compute-optimal frontier, the compute multiplier against compute, the prediction check, and their plots.
Pure functions of result rows and fits; no storage, no Ray."""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from typing import Optional

import numpy as np

from orchestrator.frontiers import compute_points, frontier, multipliers_along
from orchestrator.laws import (
    HUBER_DELTA,
    LawFit,
    compute_model,
    epochs_of,
    family_of,
    fit_families,
    interval_method,
    loss_tokens_text,
    params_of,
    size_of,
)
from orchestrator.predictions import budget_of, prediction_check

PLOT_FILES = dict(
    loss_vs_params="size_loss_vs_params.png", frontier="size_frontier.png", multiplier="size_multiplier.png"
)


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _fmt_g(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def _fmt_interval(iv, fmt=_fmt_g) -> str:
    return f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else ""


def _count(n: float) -> str:
    from orchestrator.formatting import fmt_tokens

    return fmt_tokens(n)


def _sizes_in_order(rows: list[dict]) -> list[str]:
    by_size = defaultdict(list)
    for r in rows:
        by_size[size_of(r)].append(params_of(r))
    return sorted(by_size, key=lambda s: statistics.fmean(by_size[s]))


def loss_table(rows: list[dict], unique_tokens: Optional[float] = None) -> list[str]:
    """Per budget, one row per family: the mean loss ± std over seeds at every size (N and seeds in each cell), and
    the epochs the budget is where they are known."""
    sizes = _sizes_in_order(rows)
    cells = defaultdict(list)
    for r in rows:
        cells[(budget_of(r), family_of(r), size_of(r))].append(r)
    lines = [
        "| budget (tokens) | epochs | family | " + " | ".join(sizes) + " |",
        "|---:|---:|---|" + "---:|" * len(sizes),
    ]
    for budget in sorted({k[0] for k in cells}):
        for fam in sorted({k[1] for k in cells if k[0] == budget}):
            parts, epochs = [], set()
            for s in sizes:
                rs = cells.get((budget, fam, s), [])
                if not rs:
                    parts.append("")
                    continue
                losses = [float(r["final_val_loss"]) for r in rs]
                std = f" ± {statistics.stdev(losses):.4f}" if len(losses) > 1 else ""
                parts.append(f"{statistics.fmean(losses):.4f}{std} ({_count(params_of(rs[0]))}, {len(losses)})")
                epochs |= {round(e, 2) for e in (epochs_of(r, unique_tokens) for r in rs) if e is not None}
            ep = ", ".join(f"{e:g}" for e in sorted(epochs)) or "-"
            lines.append(f"| {_count(budget)} | {ep} | {fam} | " + " | ".join(parts) + " |")
    return lines


def fit_table(fits: dict[str, LawFit]) -> list[str]:
    lines = [
        "| family | sizes × budgets (points, rows, seeds) | E (nats) | A | alpha | B | beta | "
        "N_opt ∝ C^a, a | rms log residual | interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    methods: list[str] = []
    for fam, f in fits.items():
        shape = f"{len(f.sizes)} × {len(f.budgets)} ({f.points}, {f.rows}, {len(f.seeds)})"
        if f.law is not None and f.interval_method not in methods:
            methods.append(f.interval_method)
        if f.law is None:
            lines.append(f"| {fam} | {shape} | no fit: {f.reason} | | | | | | | |")
            continue
        law, iv = f.law, f.intervals

        def cell(k, fmt):
            return f"{fmt(getattr(law, k))}{_fmt_interval(iv.get(k), fmt)}"

        a = law.beta / (law.alpha + law.beta) if law.alpha + law.beta > 0 else math.nan
        lines.append(
            f"| {fam} | {shape} | {cell('E', lambda v: _fmt(v))} | {cell('A', _fmt_g)} | "
            f"{cell('alpha', lambda v: _fmt(v, 3))} | {cell('B', _fmt_g)} | {cell('beta', lambda v: _fmt(v, 3))} | "
            f"{_fmt(a, 3)} | {f.rmse_log:.2g} | ({methods.index(f.interval_method) + 1}) |"
        )
    return lines + ["", *(f"({i + 1}) Intervals: {m}." for i, m in enumerate(methods))]


def frontier_table(fits: dict[str, LawFit], baseline: str) -> list[str]:
    fitted = {k: f for k, f in fits.items() if f.law is not None}
    flops = compute_points(fitted)
    base = fitted.get(baseline)
    lines = [
        f"| training FLOPs | family | N_opt | D_opt | L_opt (nats) | compute multiplier over {baseline} | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for fam, f in fitted.items():
        fr = frontier(f.law, f.compute, flops)
        mult = multipliers_along(f, base, flops) if base is not None and fam != baseline else None
        for j, c in enumerate(flops):
            note = []
            if not (f.compute_range[0] <= c <= f.compute_range[1]):
                note.append("extrapolated (compute)")
            if not (min(f.sizes) <= fr["n_opt"][j] <= max(f.sizes)):
                note.append("N_opt outside measured sizes")
            m = "baseline" if fam == baseline else "-"
            if mult:
                row = mult[j]
                m = f"{_fmt_g(row.multiplier)}x{_fmt_interval(row.interval)}"
                if row.extrapolated and "extrapolated (compute)" not in note:
                    note.append(f"extrapolated ({baseline}'s compute)")
            lines.append(
                f"| {c:.3g} | {fam} | {_count(fr['n_opt'][j])} | {_count(fr['d_opt'][j])} | "
                f"{fr['loss'][j]:.4f} | {m} | {'; '.join(note)} |"
            )
    if base is not None:
        for fam, f in fitted.items():
            if fam != baseline:
                how = "the same draw of seeds for both" if f.seeds == base.seeds else "independent draws for each"
                lines += [
                    "",
                    f"{fam}'s multiplier interval: the seed resamples of both fits ({how}); "
                    f"{interval_method(len(f.seeds))}.",
                ]
    return lines


def check_table(checks: list[dict], predictions: dict, baseline: Optional[str] = None) -> list[str]:
    h = predictions["holdout"]
    budgets = sorted({c["budget"] for c in checks})
    where = f"at {_count(h['budget'])} tokens" if len(budgets) < 2 else f"at {', '.join(map(_count, budgets))} tokens"
    lines = [
        f"Held out: size {h['size']} {where}, fitted on every other size "
        f"({predictions.get('loss', 'validation loss as recorded')}).",
        "",
        "| family | budget | predicted (nats) | interval | measured (nats) | seeds | error = measured − predicted "
        "(nats) | inside the interval |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    methods: list[str] = []
    for c in checks:
        iv = "-"
        if c["interval"]:
            if c["interval_method"] not in methods:
                methods.append(c["interval_method"])
            iv = f"[{c['interval'][0]:.4f}, {c['interval'][1]:.4f}] ({methods.index(c['interval_method']) + 1})"
        std = f" ± {c['measured_std']:.4f}" if c["measured_std"] is not None else ""
        inside = "-" if c["inside"] is None else ("yes" if c["inside"] else "**no**")
        err = f"{c['error_nats']:+.4f}" if c["error_nats"] is not None else (c["reason"] or "-")
        lines.append(
            f"| {c['family']} | {_count(c['budget'])} | {_fmt(c['predicted'])} | {iv} | {_fmt(c['measured'])}{std} | "
            f"{c['seeds']} | {err} | {inside} |"
        )
    return lines + ["", *(f"({i + 1}) Interval: {m}." for i, m in enumerate(methods)), *_gap_lines(checks, baseline)]


def _gap_lines(checks: list[dict], baseline: Optional[str]) -> list[str]:
    """Each family's predicted and measured difference from the baseline at the held-out size, per budget: what the
    laws say about the gap at a size they never saw."""
    by = {(c["family"], c["budget"]): c for c in checks}
    out = []
    for (fam, budget), c in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = by.get((baseline, budget))
        if fam == baseline or base is None or c["predicted"] is None or base["predicted"] is None:
            continue
        text = f"{fam} - {baseline} at {_count(budget)}: predicted {c['predicted'] - base['predicted']:+.4f} nats"
        if c["measured"] is not None and base["measured"] is not None:
            text += f", measured {c['measured'] - base['measured']:+.4f}"
        out.append(f"- {text}")
    return (
        ["", "The gap at the held-out size (differences of the predictions above, and of the measured means):", ""]
        + out
        if out
        else []
    )


def size_section(
    rows: list[dict],
    baseline: str,
    predictions: Optional[dict] = None,
    *,
    effective_data: bool = False,
    unique_tokens: Optional[float] = None,
    compute: str = "auto",
    fits: Optional[dict[str, LawFit]] = None,
) -> list[str]:
    """Markdown lines of the report's "## Size" section: loss against N per budget, the joint fits with intervals,
    frontiers and the compute multiplier over `baseline` against compute, and the prediction check. The plots it
    links are PLOT_FILES (size_plots makes them)."""
    fits = (
        fits
        if fits is not None
        else fit_families(rows, effective_data=effective_data, unique_tokens=unique_tokens, compute=compute)
    )
    what = loss_tokens_text(rows)
    n_seeds = sorted({len(f.seeds) for f in fits.values()})
    lines = [
        "## Size",
        "",
        f"Losses are the {what}; N is non-embedding parameters, D training tokens"
        + (", corrected for repetition to effective tokens D' (Muennighoff et al. 2023)" if effective_data else "")
        + ".",
        "",
        f"![loss vs params]({PLOT_FILES['loss_vs_params']})",
        "",
        "### Loss against N, per budget",
        "",
        "Each cell: mean ± std over seeds (N, seeds). Epochs: training tokens over the unique tokens, where known.",
        "",
        *loss_table(rows, unique_tokens),
        "",
        "### Joint fits L(N, D) = E + A N^-alpha + B D^-beta",
        "",
        "Chinchilla approach 3 (Hoffmann et al. 2022, as re-done by Besiroglu et al. 2024): Huber loss (delta "
        f"{HUBER_DELTA:g}) on log loss, L-BFGS-B from the best of a wide start grid. Intervals resample whole seeds "
        f"(seeds per family: {', '.join(map(str, n_seeds))}); they show seed noise only, not the error of the law's "
        "form. a = beta / (alpha + beta) is the exponent of N_opt in compute.",
        "",
        *fit_table(fits),
    ]
    unfitted = [f for f in fits.values() if f.law is None]
    if unfitted:
        lines += ["", *(f"- {f.family}: no fit ({f.reason}), so no frontier and no multiplier." for f in unfitted)]
    fitted = [f for f in fits.values() if f.law is not None]
    if fitted:
        compute_text = fitted[0].compute.describe()
        lines += [
            "",
            f"### Compute-optimal frontiers and the compute multiplier over {baseline}",
            "",
            f"Along each family's frontier ({compute_text}): the N and D that minimise its fitted law at a compute C, "
            f"and the multiplier k with L_opt_{baseline}(k C) = L_opt_family(C): {baseline} needs k times the "
            "compute for the same loss (k > 1: the family is ahead). Rows beyond the measured compute are "
            "extrapolations of the law.",
            "",
            f"![frontiers]({PLOT_FILES['frontier']})",
            "",
        ]
        if baseline not in fits:
            lines += [f"No family named {baseline}: families are {', '.join(fits)}.", ""]
        elif fits[baseline].law is None:
            lines += [f"{baseline} has no fit, so no multiplier.", ""]
        else:
            lines += [f"![multiplier]({PLOT_FILES['multiplier']})", ""]
        lines += frontier_table(fits, baseline)
    if predictions is not None:
        lines += [
            "",
            "### Prediction check",
            "",
            *check_table(prediction_check(predictions, rows), predictions, baseline),
        ]
    return lines


# ----------------------------------------------------------------------------------------------
# Plots.


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_vs_params(rows: list[dict], fits: dict[str, LawFit], references: Optional[list] = None) -> bytes:
    """Final val loss against N: one line per family per budget (colour = family, marker = budget), the fitted law
    at each budget dotted, the n-gram references as horizontal lines."""
    from orchestrator.formatting import draw_references

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>p*h"
    budgets = sorted({budget_of(r) for r in rows})
    for i, fam in enumerate(sorted({family_of(r) for r in rows})):
        color = colors[i % len(colors)]
        for j, b in enumerate(budgets):
            by_n = defaultdict(list)
            for r in rows:
                if family_of(r) == fam and budget_of(r) == b:
                    by_n[params_of(r)].append(float(r["final_val_loss"]))
            if not by_n:
                continue
            ns = sorted(by_n)
            ax.plot(
                ns,
                [statistics.fmean(by_n[n]) for n in ns],
                marker=markers[j % len(markers)],
                color=color,
                label=f"{fam} @ {_count(b)} tokens",
            )
            f = fits.get(fam)
            if f is not None and f.law is not None and not f.effective_data:
                grid = np.geomspace(min(ns) / 2, max(ns) * 2, 50)
                ax.plot(grid, f.law.loss(grid, b), linestyle=":", color=color, linewidth=1)
    draw_references(ax, references or [])
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Loss against size, per budget (dotted: the joint fit)")
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_frontiers(rows: list[dict], fits: dict[str, LawFit], references: Optional[list] = None) -> bytes:
    """Loss against training FLOPs: every measured point, and each fitted family's compute-optimal frontier (solid
    in its measured compute range, dashed beyond)."""
    from orchestrator.formatting import draw_references

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (fam, f) in enumerate(sorted(fits.items())):
        color = colors[i % len(colors)]
        model = f.compute or compute_model([r for r in rows if family_of(r) == fam])
        pts = [
            (model.flops(params_of(r), float(r["tokens"])), float(r["final_val_loss"]))
            for r in rows
            if family_of(r) == fam
        ]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=12, alpha=0.6, label=f"{fam} runs")
        if f.law is None:
            continue
        lo, hi = f.compute_range
        inside = np.geomspace(lo, hi, 40)
        beyond = np.geomspace(hi, hi * 100, 20)
        ax.plot(inside, frontier(f.law, f.compute, inside)["loss"], color=color, label=f"{fam} frontier")
        ax.plot(beyond, frontier(f.law, f.compute, beyond)["loss"], color=color, linestyle="--")
    draw_references(ax, references or [])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Loss against compute, with each family's compute-optimal frontier (dashed: extrapolated)")
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_multipliers(fits: dict[str, LawFit], baseline: str) -> bytes:
    """The compute multiplier of every fitted family over `baseline` against compute, with its seed-resample band;
    beyond the measured compute shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base = fits.get(baseline)
    fitted = {k: f for k, f in fits.items() if f.law is not None}
    if base is not None and base.law is not None and fitted:
        pts = compute_points(fitted, extra_decades=2, per_range=2)
        grid = np.geomspace(pts.min(), pts.max(), 40)
        for i, (fam, f) in enumerate(sorted(fitted.items())):
            if fam == baseline:
                continue
            rows = multipliers_along(f, base, grid)
            color = colors[i % len(colors)]
            ax.plot(grid, [r.multiplier for r in rows], color=color, label=f"{fam} over {baseline}")
            lo = [r.interval[0] if r.interval else np.nan for r in rows]
            hi = [r.interval[1] if r.interval else np.nan for r in rows]
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2)
        measured_hi = max(f.compute_range[1] for f in fitted.values())
        ax.axvspan(measured_hi, grid.max(), color="gray", alpha=0.1, label="beyond measured compute")
        ax.legend(fontsize=7)
    ax.axhline(1.0, color="gray", linewidth=0.9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(f"compute multiplier over {baseline}")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Compute multiplier along the frontiers")
    fig.tight_layout()
    return _figure_bytes(fig)


def size_plots(
    rows: list[dict], baseline: str, references: Optional[list] = None, fits: Optional[dict[str, LawFit]] = None, **kw
) -> dict[str, bytes]:
    """The Size section's PNGs by file name (PLOT_FILES)."""
    fits = fits if fits is not None else fit_families(rows, **kw)
    return {
        PLOT_FILES["loss_vs_params"]: plot_loss_vs_params(rows, fits, references),
        PLOT_FILES["frontier"]: plot_frontiers(rows, fits, references),
        PLOT_FILES["multiplier"]: plot_multipliers(fits, baseline),
    }
