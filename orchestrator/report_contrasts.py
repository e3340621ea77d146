"""The report's paired contrasts across sizes and budgets (orchestrator/contrasts.py) as markdown: one table per
contrast, how it moves with size, the share of the baseline's gap each measured component carries from both ends,
and the train - val gaps."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Optional

from orchestrator.contrasts import (
    Contrast,
    contrasts_for,
    gap_contrast,
    paired_cells,
    repetition,
    shares,
    size_trend,
)
from orchestrator.formatting import fmt_tokens
from orchestrator.laws import epochs_of, family_of, params_of, size_of
from orchestrator.predictions import budget_of

HOW = (
    "Each cell: the mean over seeds of the per-seed difference (same seed = same batches in the same order, same "
    "device type) in nats of final validation loss, its 95% Student-t interval over those seeds, and the seed count; "
    "**bold** where the interval excludes 0. Negative: the second-named model has the lower loss."
)


def _sizes(rows: list[dict], family: str) -> list[str]:
    n_of = defaultdict(list)
    for r in rows:
        n_of[size_of(r)].append(params_of(r) if family_of(r) == family else float("inf"))
    return sorted(n_of, key=lambda s: (min(n_of[s]), s))


def _n_of(rows: list[dict], family: str, size: str) -> Optional[float]:
    ns = [params_of(r) for r in rows if family_of(r) == family and size_of(r) == size]
    return statistics.fmean(ns) if ns else None


def _cell(mean: Optional[float], low: Optional[float], high: Optional[float], n: int, resolved: bool, pct=False) -> str:
    if mean is None:
        return ""
    f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:+.3f}")
    text = f"{f(mean)} [{f(low)}, {f(high)}] ({n})" if low is not None else f"{f(mean)} ({n})"
    return f"**{text}**" if resolved and not pct else text


def _budget_header(rows: list[dict], budgets: list[float], unique_tokens: Optional[float]) -> str:
    labels = []
    for b in budgets:
        epochs = sorted({round(e, 2) for r in rows if budget_of(r) == b for e in [epochs_of(r, unique_tokens)] if e})
        labels.append(f"{fmt_tokens(b)}" + (f" ({epochs[0]:g} ep)" if len(epochs) == 1 else ""))
    return " | ".join(labels)


def contrast_table(rows: list[dict], c: Contrast, unique_tokens: Optional[float] = None) -> list[str]:
    cells = paired_cells(rows, c)
    if not cells:
        return []
    budgets = sorted({b for _, b in cells})
    sizes = [s for s in _sizes(rows, c.reference) if any((s, b) in cells for b in budgets)]
    lines = [
        f"#### {c.label}: {c.changed} - {c.reference}" if c.component else f"#### {c.label}",
        "",
        f"| size | N ({c.reference}) | " + _budget_header(rows, budgets, unique_tokens) + " |",
        "|---|---:|" + "---|" * len(budgets),
    ]
    for s in sizes:
        parts = []
        for b in budgets:
            st = cells.get((s, b))
            parts.append(_cell(st["nats"], st["low"], st["high"], st["n"], st["resolved"]) if st and st["n"] else "")
        lines.append(f"| {s} | {fmt_tokens(_n_of(rows, c.reference, s) or 0)} | " + " | ".join(parts) + " |")
    trend = size_trend(rows, c)
    if trend:
        slope = [_cell(**{k: trend[b]["slope"][k] for k in ("mean", "low", "high", "n", "resolved")})
                 if b in trend else "" for b in budgets]  # fmt: skip
        span = [_cell(**{k: trend[b]["span"][k] for k in ("mean", "low", "high", "n", "resolved")})
                if b in trend and trend[b]["span"]["n"] else "" for b in budgets]  # fmt: skip
        lines.append("| per doubling of N (slope) | | " + " | ".join(slope) + " |")
        first = next(iter(trend.values()))
        lines.append(f"| {first['largest']} minus {first['smallest']} | | " + " | ".join(span) + " |")
    return lines


def share_table(rows: list[dict], component: str, parts: list[Contrast], whole: Contrast) -> list[str]:
    """The share of `whole` that `component` carries, one line per measured direction, per size and budget."""
    lines = []
    for part in parts:
        cells = shares(rows, part, whole)
        if not cells:
            continue
        if not lines:
            budgets = sorted({b for _, b in cells})
            lines = [
                "| size | measured as | " + " | ".join(fmt_tokens(b) for b in budgets) + " |",
                "|---|---|" + "---|" * len(budgets),
            ]
        for s in _sizes(rows, whole.reference):
            if not any((s, b) in cells for b in budgets):
                continue
            row = [_cell(**{k: cells[(s, b)][k] for k in ("mean", "low", "high", "n")}, resolved=False, pct=True)
                   if (s, b) in cells else "" for b in budgets]  # fmt: skip
            lines.append(f"| {s} | {part.label} | " + " | ".join(row) + " |")
    return lines


def repetition_table(rows: list[dict], families: list[str]) -> list[str]:
    reps = repetition(rows)
    if not reps:
        return []
    budgets = sorted({b for _, _, b in reps})
    lines = [
        "| family | size | " + " | ".join(fmt_tokens(b) for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for fam in families:
        for s in _sizes(rows, fam):
            if not any((fam, s, b) in reps for b in budgets):
                continue
            row = [_cell(**{k: reps[(fam, s, b)][k] for k in ("mean", "low", "high", "n")}, resolved=False)
                   if (fam, s, b) in reps else "" for b in budgets]  # fmt: skip
            lines.append(f"| {fam} | {s} | " + " | ".join(row) + " |")
    return lines


def contrast_lines(rows: list[dict], baseline: str, unique_tokens: Optional[float] = None) -> list[str]:
    """The "### Paired contrasts" subsection ([] with fewer than two families)."""
    families = sorted({family_of(r) for r in rows})
    contrasts = contrasts_for(set(families), baseline)
    if not contrasts:
        return []
    lines = [
        "### Paired contrasts at every size and budget",
        "",
        HOW + " Columns are budgets (epochs of the training split). The slope row: each seed's least-squares slope "
        "of its differences against log2 N of the first-named family, then the mean and t interval over seeds "
        "(positive with a negative difference: the gap narrows as the models grow); the row below it, each seed's "
        "difference at the largest size minus that at the smallest.",
        "",
    ]
    for c in contrasts:
        table = contrast_table(rows, c, unique_tokens)
        lines += [*table, ""] if table else []
    whole = next((c for c in contrasts if c.component is None and c.changed == "gptoss"), None)
    if whole is not None:
        by_component = defaultdict(list)
        for c in contrasts:
            if c.component is not None:
                by_component[c.component].append(c)
        for component, parts in by_component.items():
            table = share_table(rows, component, parts, whole)
            if table:
                lines += [
                    f"#### Share of {whole.label} that {component} carries",
                    "",
                    f"The component's difference over the whole gap, per seed (mean [95% t interval] (seeds)): "
                    f"measured where it is added to {whole.reference} and where it is removed from "
                    f"{whole.changed}, which bound it from both ends when the components interact.",
                    "",
                    *table,
                    "",
                ]
    reps = repetition_table(rows, families)
    if reps:
        lines += [
            "### What repetition does: train-split minus validation loss",
            "",
            "The final model scored on a fixed sample of training windows spread over the split (as many as the "
            "validation split has), exactly as validation is scored; each cell its loss there minus its validation "
            "loss, mean [95% t interval] (seeds). Below one epoch most sampled windows were never trained on; from "
            "one epoch on all were, so the gap is what the model holds of its training windows beyond what carries "
            "to new text.",
            "",
            *reps,
            "",
        ]
        if whole is not None:
            gaps = gap_contrast(rows, whole)
            if gaps:
                budgets = sorted({b for _, b in gaps})
                lines += [
                    f"Paired by seed, {whole.changed}'s train - val gap minus {whole.reference}'s (negative: "
                    f"{whole.changed} fits its training windows further beyond new text):",
                    "",
                    "| size | " + " | ".join(fmt_tokens(b) for b in budgets) + " |",
                    "|---|" + "---|" * len(budgets),
                ]
                for s in _sizes(rows, whole.reference):
                    row = [_cell(**{k: gaps[(s, b)][k] for k in ("mean", "low", "high", "n", "resolved")})
                           if (s, b) in gaps else "" for b in budgets]  # fmt: skip
                    if any(row):
                        lines.append(f"| {s} | " + " | ".join(row) + " |")
                lines.append("")
    return lines
