"""The component-ladder report: each rung's val loss, the PAIRED per-seed step from the rung before (and each
leave-one-out against full gptoss) in nats and bits/byte, whether the step is resolved, and a waterfall plot.

Pure functions of result rows (dicts with variant, seed, final_val_loss, val_bpb and the model's shape), as
orchestrator.report.collect_rows makes them. Two trials with the same seed saw the same batches in the same order
and were scored on the same validation windows, so a step is measured on the per-seed differences: their mean,
standard deviation and a 95% Student-t interval mean +- t(n-1) * std / sqrt(n). A step whose interval contains 0
is "not resolved"; so is a step measured on one seed (no spread to judge it by).
"""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from typing import Optional

# Two-sided 95% quantiles of Student's t by degrees of freedom; beyond 30 the normal 1.96.
_T95 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]
# Rungs are compared within one model shape and one token budget (a budget sweep has a ladder per budget).
SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "num_experts", "experts_per_token", "budget")


def t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.96


def device_of(row: dict) -> str:
    """The device type a trial ran on, from its row's use_gpu (config.json): "cuda" (bf16 autocast) or "cpu" (fp32).
    Rows that do not record it are all "cpu"-or-unknown alike, so they still pair with each other."""
    return "cuda" if row.get("use_gpu") else "cpu"


def device_lines(rows: list[dict], group_key: str = "budget") -> list[str]:
    """A paragraph saying which device type each group of rows (by budget) ran on, when the rows span more than one
    ([] when they all ran on one): a loss difference between groups of different devices includes the device's."""
    devices = {device_of(r) for r in rows}
    if len(devices) < 2:
        return []
    groups: dict = defaultdict(lambda: defaultdict(set))
    for r in rows:
        groups[r.get(group_key) or 0][device_of(r)].add(r.get("model") or r.get("variant") or r.get("arch"))
    parts = []
    for key in sorted(groups, key=float):
        by_device = groups[key]
        label = _budget_label(key)
        if len(by_device) == 1:
            parts.append(f"{label}: {next(iter(by_device))}")
        else:
            mixed = "; ".join(f"{d} ({len(models)} models)" for d, models in sorted(by_device.items()))
            parts.append(f"{label}: MIXED {mixed}")
    return [
        "**These rows come from more than one device type** (cpu = fp32, cuda = bf16 autocast; the device adds its "
        "own difference to the loss). By budget: " + "; ".join(parts) + ". Paired differences pair only trials of "
        "the same seed and device type; a pair across devices is left out (fewer seeds in its row).",
        "",
    ]


def _budget_label(budget) -> str:
    from orchestrator.formatting import fmt_tokens

    return fmt_tokens(float(budget)) if budget else "-"


def paired_step(before: list[dict], after: list[dict]) -> dict:
    """after - before on the seeds both have: mean, std and 95% interval in nats, mean and std in bits/byte.

    Negative = `after` has the lower loss. resolved: the interval excludes 0 (False with fewer than 2 seeds).
    Only trials of the same seed AND device type are paired: a CPU (fp32) and a GPU (bf16 autocast) trial of one seed
    differ by the device too, by as much as the differences measured here."""
    by_seed = {(r["seed"], device_of(r)): r for r in before}
    pairs = [
        (by_seed[(r["seed"], device_of(r))], r)
        for r in sorted(after, key=lambda r: r["seed"])
        if (r["seed"], device_of(r)) in by_seed
    ]
    nats = [a["final_val_loss"] - b["final_val_loss"] for b, a in pairs]
    bpb = [a["val_bpb"] - b["val_bpb"] for b, a in pairs]
    n = len(nats)
    if n == 0:
        return dict(
            n=0, seeds=[], nats=None, nats_std=None, low=None, high=None, bpb=None, bpb_std=None, resolved=False
        )
    step = dict(
        n=n,
        seeds=[b["seed"] for b, _ in pairs],
        nats=statistics.fmean(nats),
        bpb=statistics.fmean(bpb),
        nats_std=None,
        bpb_std=None,
        low=None,
        high=None,
        resolved=False,
    )
    if n > 1:
        step["nats_std"], step["bpb_std"] = statistics.stdev(nats), statistics.stdev(bpb)
        half = t95(n - 1) * step["nats_std"] / math.sqrt(n)
        step["low"], step["high"] = step["nats"] - half, step["nats"] + half
        step["resolved"] = step["low"] > 0 or step["high"] < 0
    return step


def _by_shape(rows: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """Rows with a variant, grouped by model shape, then by variant."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("variant"):
            groups[tuple(str(r.get(k, "")) for k in SHAPE_KEYS)][r["variant"]].append(r)
    return groups


def _ordered_shapes(rows: list[dict]) -> list[tuple[tuple, dict[str, list[dict]]]]:
    """_by_shape's groups in order: by shape, then by budget as a number."""
    at = SHAPE_KEYS.index("budget")
    return sorted(_by_shape(rows).items(), key=lambda kv: (kv[0][:at], float(kv[0][at] or 0)))


def ladder_steps(by_variant: dict[str, list[dict]]) -> list[dict]:
    """The ladder rungs present, in ladder order, each with its step from the previous rung present."""
    from gptoss.variants import LADDER  # here, not at the top: importing gptoss loads torch, which `report` avoids

    out, previous = [], None
    for rung in LADDER:
        if rung not in by_variant:
            continue
        out.append(
            dict(
                variant=rung,
                rows=by_variant[rung],
                previous=previous,
                step=paired_step(by_variant[previous], by_variant[rung]) if previous else None,
            )
        )
        previous = rung
    return out


def leave_one_out_steps(by_variant: dict[str, list[dict]]) -> list[dict]:
    """Each leave-one-out present against full gptoss: no-X - gptoss, so positive = X lowers the loss by that much."""
    from gptoss.variants import LEAVE_ONE_OUT

    if "gptoss" not in by_variant:
        return []
    return [
        dict(
            variant=name,
            rows=by_variant[name],
            previous="gptoss",
            step=paired_step(by_variant["gptoss"], by_variant[name]),
        )
        for name in LEAVE_ONE_OUT
        if name in by_variant
    ]


def mean_pm(values: list[float]) -> str:
    """'mean ± std' over seeds to 4 decimals (the mean alone for one seed)."""
    mean = statistics.fmean(values)
    return f"{mean:.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def _signed(x: Optional[float], digits: int = 4) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


def _verdict(step: dict) -> str:
    if step["n"] == 0:
        return "no shared seeds"
    if step["n"] == 1:
        return "not resolved (1 seed)"
    return "resolved" if step["resolved"] else "not resolved"


def loss_cells(rows: list[dict]) -> str:
    """'val loss | bits/byte' table cells: mean ± std over the rows' seeds."""
    return f"{mean_pm([r['final_val_loss'] for r in rows])} | {mean_pm([r['val_bpb'] for r in rows])}"


def step_cells(step: dict) -> str:
    """A paired_step as table cells: 'nats | paired std | 95% interval | bits/byte | seeds | verdict'."""
    interval = f"[{step['low']:+.4f}, {step['high']:+.4f}]" if step["low"] is not None else "-"
    std = f"{step['nats_std']:.4f}" if step["nats_std"] is not None else "-"
    return f"{_signed(step['nats'])} | {std} | {interval} | {_signed(step['bpb'])} | {step['n']} | {_verdict(step)}"


def _table(entries: list[dict], step_label: str) -> list[str]:
    lines = [
        f"| variant | val loss (nats) | bits/byte | {step_label} (nats) | paired std | 95% interval | "
        f"{step_label} (bits/byte) | seeds | |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for e in entries:
        rows, step = e["rows"], e["step"]
        if step is None:
            lines.append(f"| {e['variant']} | {loss_cells(rows)} | | | | | {len(rows)} | start |")
            continue
        lines.append(f"| {e['variant']} | {loss_cells(rows)} | {step_cells(step)} |")
    return lines


def _shape_title(shape: tuple) -> str:
    return ", ".join(
        f"{int(v):,} tokens" if k == "budget" else f"{k} {v}"
        for k, v in zip(SHAPE_KEYS, shape)
        if v not in ("", "None")
    )


def ladder_section(rows: list[dict]) -> list[str]:
    """Markdown: per model shape, the ladder table and the leave-one-out table (whichever variants are present)."""
    out = [
        "Each rung turns one GPT-OSS component on, starting from GPT-2 (gptoss/variants.py). **step** = this "
        "rung's loss minus the previous rung's (ladder) or minus full gptoss's (leave-one-out), computed per seed "
        "and averaged: negative on the ladder = the component lowers the loss; positive in a leave-one-out = the "
        "component left out was worth that much. Paired std and the 95% Student-t interval are those of the "
        "per-seed differences (same seed = same batches, same validation windows); a step whose interval "
        "contains 0, or that has one seed, is **not resolved**.",
        "",
    ]
    for shape, by_variant in _ordered_shapes(rows):
        steps, loo = ladder_steps(by_variant), leave_one_out_steps(by_variant)
        title = _shape_title(shape)
        if steps:
            out += [f"### Ladder ({title})", "", *_table(steps, "step"), ""]
            if len(steps) > 1:
                total = paired_step(steps[0]["rows"], steps[-1]["rows"])
                out += [
                    f"{steps[0]['variant']} -> {steps[-1]['variant']}: {_signed(total['nats'])} nats "
                    f"({_signed(total['bpb'])} bits/byte) over {total['n']} paired seed(s), {_verdict(total)}.",
                    "",
                ]
        if loo:
            out += [f"### Leave one out, against full gptoss ({title})", "", *_table(loo, "no-X − gptoss"), ""]
        elif any(v.startswith("gptoss-no-") for v in by_variant):
            out += [f"Leave-one-out variants ran without a `gptoss` variant to compare them with ({title}).", ""]
    out += ["![component ladder waterfall](ladder.png)", ""]
    return out


def has_variants(rows: list[dict]) -> bool:
    return any(r.get("variant") for r in rows)


def plot_waterfall(rows: list[dict]) -> bytes:
    """PNG: per shape, the ladder as a waterfall (each rung's paired step as a floating bar from the previous rung's
    mean, its 95% interval as an error bar) and, where present, the leave-one-out steps as horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _ordered_shapes(rows)
    fig, axes = plt.subplots(max(1, len(groups)), 2, figsize=(13, 4.5 * max(1, len(groups))), squeeze=False)
    for (shape, by_variant), (ax_ladder, ax_loo) in zip(groups, axes):
        steps = ladder_steps(by_variant)
        means = [statistics.fmean(r["final_val_loss"] for r in e["rows"]) for e in steps]
        # Each bar is the PAIRED step, drawn from the previous rung's mean; the dots are each rung's own mean (they
        # differ from the bar's end only where the two rungs ran different seeds).
        for i, (e, mean) in enumerate(zip(steps, means)):
            ax_ladder.plot(i, mean, "o", color="black", ms=4)
            step = e["step"]
            if step is None or step["nats"] is None:
                continue
            start = means[i - 1]
            ax_ladder.bar(
                i,
                step["nats"],
                bottom=start,
                width=0.6,
                alpha=0.8,
                color="tab:green" if step["nats"] < 0 else "tab:red",
            )
            if step["low"] is not None:
                ax_ladder.errorbar(
                    i + 0.15,
                    start + step["nats"],
                    yerr=(step["high"] - step["low"]) / 2,
                    color="black",
                    capsize=3,
                    lw=1,
                )
            ax_ladder.annotate(
                f"{step['nats']:+.3f}",
                (i, max(start, start + step["nats"])),
                ha="center",
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax_ladder.set_xticks(range(len(steps)), [e["variant"] for e in steps], rotation=35, ha="right")
        if means:
            span = max(means) - min(means) or 0.05
            ax_ladder.set_ylim(min(means) - 0.3 * span, max(means) + 0.3 * span)
        ax_ladder.set_ylabel("final validation loss (nats/token)")
        ax_ladder.set_title(f"Ladder: GPT-2 -> GPT-OSS\n({_shape_title(shape)})", fontsize=9)
        ax_ladder.grid(axis="y", alpha=0.3)

        loo = [e for e in leave_one_out_steps(by_variant) if e["step"]["n"]]
        if not loo:
            ax_loo.set_axis_off()
            continue
        values = [e["step"]["nats"] for e in loo]
        errors = [(e["step"]["high"] - e["step"]["low"]) / 2 if e["step"]["low"] is not None else 0 for e in loo]
        ax_loo.barh(
            range(len(loo)),
            values,
            xerr=errors,
            capsize=4,
            color=["tab:green" if v > 0 else "tab:red" for v in values],
            alpha=0.8,
        )
        ax_loo.set_yticks(range(len(loo)), [e["variant"] for e in loo])
        ax_loo.axvline(0, color="black", lw=1)
        ax_loo.set_xlabel("loss without the component - loss of gptoss (nats; > 0: the component helps)")
        ax_loo.set_title("Leave one out", fontsize=9)
        ax_loo.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
