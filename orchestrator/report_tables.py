"""The report's tables: models and their labels, the lr table, GPT-OSS vs GPT-2 per depth, architectures, params and
experts, and the sentence saying what tokens the losses are over. Pure functions of result rows."""

from __future__ import annotations

import statistics
from collections import defaultdict

from orchestrator.formatting import fmt_tokens
from orchestrator.ladder import device_of, mean_pm


def loss_scope_line(rows: list[dict]) -> str:
    """One sentence: the validation tokens every final val loss of `rows` is over (grouped when they differ)."""
    groups: dict = defaultdict(int)
    for r in rows:
        groups[(r.get("val_scope") or "unknown", r.get("val_tokens"), r.get("val_windows"), r.get("val_fraction"))] += 1
    parts = []
    for (scope, tokens, windows, fraction), n in sorted(groups.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        if tokens is None:
            parts.append(f"{n} trial(s): not recorded")
            continue
        share = f", {fraction:.2%} of the split's target tokens" if fraction is not None else ""
        parts.append(f"{n} trial(s): {tokens:,} target tokens, {windows} windows, {scope}{share}")
    return "Tokens these losses are over (each trial's final evaluation): " + "; ".join(parts) + "."


def _millions(n) -> str:
    return f"{n / 1e6:.2f}M"


def _model_key(r: dict) -> tuple:
    """What makes two trials the same model: arch, depth, width, heads, experts, top-k, variant, tied head and dropout
    (not seed, not lr, not budget)."""
    return (
        r["arch"],
        r["n_layers"],
        r["d_model"],
        r["n_heads"],
        str(r["num_experts"]),
        str(r["experts_per_token"]),
        r.get("variant") or "",
        bool(r.get("tied", r["arch"] == "gpt2")),
        float(r.get("dropout") or 0.0),
    )


def model_label(r: dict) -> str:
    """A model's name in the budget tables and plots, built from _model_key: gptoss-L4-E4k2-d128-h4, gpt2-untied-L4-...,
    v-+rope-L4-... for a variant, -do0.1 for dropout."""
    arch, layers, width, heads, experts, top_k, variant, tied, dropout = _model_key(r)
    head = f"v-{variant}" if variant else arch
    if tied != (arch == "gpt2") and not variant:
        head += "-tied" if tied else "-untied"
    parts = [head, f"L{layers}"] + ([f"E{experts}k{top_k}"] if arch == "gptoss" and not variant else [])
    return "-".join(parts + [f"d{width}", f"h{heads}"] + ([f"do{dropout:g}"] if dropout else []))


def _budget_text(tokens) -> str:
    return fmt_tokens(tokens) if tokens else "-"


def _by_model_and_lr(rows: list[dict]) -> dict:
    """(model key + budget) -> lr -> rows: lrs are compared among trials of the same model and budget."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[_model_key(r) + (r.get("budget"),)][r["lr"]].append(r)
    return groups


def _best_lr(by_lr: dict) -> float:
    return min(by_lr, key=lambda lr: statistics.fmean(r["final_val_loss"] for r in by_lr[lr]))


def best_lr_rows(rows: list[dict]) -> list[dict]:
    """Where a model was trained at several learning rates, keep only the trials of the lr with the lowest mean final
    val loss over seeds: architectures are compared each at its own best lr."""
    kept = {id(r) for by_lr in _by_model_and_lr(rows).values() for r in by_lr[_best_lr(by_lr)]}
    return [r for r in rows if id(r) in kept]


def _routed(r: dict) -> bool:
    """A gptoss row whose MLP is the mixture of experts (rows from before the mlp column are)."""
    return r["arch"] == "gptoss" and r.get("mlp", "moe") == "moe"


def lr_table(rows: list[dict]) -> list[str]:
    """Models trained at more than one lr: one row each, the mean final val loss (± std over seeds) at every lr of the
    sweep, the best in bold, and whether the best is at the edge of that model's grid (then it is not yet known to be
    the best: extend the grid)."""
    groups = {k: v for k, v in _by_model_and_lr(rows).items() if len(v) > 1}
    if not groups:
        return []
    grid = sorted({lr for by_lr in groups.values() for lr in by_lr})
    lines = [
        "| model | layers | experts (top-k) | budget | "
        + " | ".join(f"lr {lr:g}" for lr in grid)
        + " | best lr | seeds |",
        "|---|---:|---:|---:|" + "---:|" * len(grid) + "---:|---:|",
    ]
    for key in sorted(groups, key=str):
        by_lr = groups[key]
        experts = f"{key[4]} ({key[5]})" if _routed(next(iter(by_lr.values()))[0]) else "-"
        arch = f"{key[0]} ({key[6]})" if key[6] else key[0]
        best = _best_lr(by_lr)
        cells = []
        for lr in grid:
            cell = mean_pm([r["final_val_loss"] for r in by_lr[lr]]) if lr in by_lr else ""
            cells.append(f"**{cell}**" if lr == best else cell)
        edge = " (edge)" if best in (min(by_lr), max(by_lr)) else ""
        seeds = sorted({len(v) for v in by_lr.values()})
        lines.append(
            f"| {arch} | {key[1]} | {experts} | {_budget_text(key[-1])} | {' | '.join(cells)} | {best:g}{edge} | "
            f"{'/'.join(map(str, seeds))} |"
        )
    return lines


def _improvement(oss: list[dict], gpt2: list[dict], key: str = "final_val_loss", percent: bool = True) -> str:
    """GPT-2 - GPT-OSS of `key`: relative in % (percent=True), else absolute (nats, or bits/byte). With seeds on both
    sides the pairs share a seed (same data order, same validation windows), so the spread is that of the paired
    differences."""

    def diff(g: float, o: float) -> float:
        return (g - o) / g * 100 if percent else g - o

    g, o = statistics.fmean(r[key] for r in gpt2), statistics.fmean(r[key] for r in oss)
    text = f"{diff(g, o):+.1f}%" if percent else f"{diff(g, o):+.4f}"
    by_seed = {(r["seed"], device_of(r)): r[key] for r in gpt2}  # same seed and device type only
    paired = [diff(by_seed[(r["seed"], device_of(r))], r[key]) for r in oss if (r["seed"], device_of(r)) in by_seed]
    if len(paired) > 1:
        text += f" ± {statistics.stdev(paired):.1f}" if percent else f" ± {statistics.stdev(paired):.4f}"
    return text


def headline_table(rows: list[dict]) -> list[str]:
    """Per budget and depth (and expert count): GPT-OSS vs GPT-2 val loss over seeds, and the improvement in %,
    in nats per token and in bits per byte."""
    by_depth: dict = defaultdict(lambda: defaultdict(list))
    for r in best_lr_rows(rows):
        if r["arch"] == "gpt2" and (not r.get("tied", True) or r.get("dropout")):
            # GPT-2 as the seed defines it (tied head, no dropout) is the reference; other GPT-2s: budget tables
            continue
        key = ("gpt2", "") if r["arch"] == "gpt2" else ("gptoss", r["num_experts"])
        by_depth[(r.get("budget") or 0, r["n_layers"])][key].append(r)
    lines = [
        "| budget (tokens) | layers | experts | GPT-OSS val loss | GPT-2 val loss | improvement | improvement (nats) | "
        "improvement (bits/byte) | GPT-OSS bits/byte | GPT-2 bits/byte | seeds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for budget, depth in sorted(by_depth):
        groups = by_depth[(budget, depth)]
        gpt2 = groups.get(("gpt2", ""), [])
        for key in sorted(k for k in groups if k[0] == "gptoss"):
            oss = groups[key]
            oss_loss = [r["final_val_loss"] for r in oss]
            gpt2_loss = [r["final_val_loss"] for r in gpt2]
            gains = (
                [
                    _improvement(oss, gpt2),
                    _improvement(oss, gpt2, percent=False),
                    _improvement(oss, gpt2, "val_bpb", percent=False),
                ]
                if gpt2
                else ["n/a"] * 3
            )
            lines.append(
                f"| {_budget_text(budget)} | {depth} | {key[1]} | {mean_pm(oss_loss)} | "
                f"{mean_pm(gpt2_loss) if gpt2_loss else 'n/a'} | "
                f"{' | '.join(gains)} | "
                f"{mean_pm([r['val_bpb'] for r in oss])} | "
                f"{mean_pm([r['val_bpb'] for r in gpt2]) if gpt2 else 'n/a'} | "
                f"{len(oss)} / {len(gpt2)} |"
            )
        if not any(k[0] == "gptoss" for k in groups) and gpt2:
            lines.append(
                f"| {_budget_text(budget)} | {depth} | | n/a | {mean_pm([r['final_val_loss'] for r in gpt2])} | "
                "n/a | n/a | n/a | "
                f"n/a | {mean_pm([r['val_bpb'] for r in gpt2])} | 0 / {len(gpt2)} |"
            )
    return lines


def architecture_table(rows: list[dict]) -> list[str]:
    seen, lines = (
        set(),
        [
            "| arch | experts (top-k) | layers | hidden | heads | total params | active params | non-embedding | "
            "FLOPs/token | "
            "size bf16 | checkpoint on disk | tokens/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ],
    )
    for r in rows:
        key = _model_key(r)
        if key in seen:
            continue
        seen.add(key)
        same = [x for x in rows if _model_key(x) == key]
        tps = [x["tokens_per_s"] for x in same if x["tokens_per_s"]]
        experts = f"{r['num_experts']} ({r['experts_per_token']})" if _routed(r) else "-"
        fpt = f"{r['flops_per_token'] / 1e6:.1f}M" if r.get("flops_per_token") else "n/a"
        speed = f"{statistics.fmean(tps):,.0f}" if tps else "n/a"
        on_disk = f"{r['checkpoint_bytes'] / 2**20:.1f} MiB" if r.get("checkpoint_bytes") else "n/a"
        arch = f"{r['arch']} ({r['variant']})" if r.get("variant") else r["arch"]
        lines.append(
            f"| {arch} | {experts} | {r['n_layers']} | {r['d_model']} | {r['n_heads']} | "
            f"{_millions(r['total_params'])} | "
            f"{_millions(r['active_params'])} | {_millions(r['non_embedding_params'])} | {fpt} | "
            f"{r['bytes_bf16'] / 2**20:.1f} MiB | "
            f"{on_disk} | {speed} |"
        )
    return lines


def speed_note(rows: list[dict], sweep: dict) -> str:
    """Where the tokens/s column was measured: the device, and how many trials shared the machine."""
    devices = sorted({"GPU" if r.get("use_gpu") else "CPU" for r in rows})
    shared = sweep.get("concurrent")
    return (
        "FLOPs/token: forward and backward, attention included (gptoss/accounting.py). tokens/s: steady-state "
        f"training throughput of one trial, mean over the model's trials, on {' and '.join(devices)}"
        + (f" with {shared} trials sharing the machine" if shared else "")
        + ": a measure of that setting, not of "
        "either architecture's best speed."
    )


def params_table(rows: list[dict]) -> list[str]:
    lines = ["| trial | active params | total params | train FLOPs | final val loss |", "|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["active_params"]):
        flops = f"{r['train_flops']:.3g}" if r.get("train_flops") else "n/a"
        lines.append(
            f"| {r['trial']} | {_millions(r['active_params'])} | {_millions(r['total_params'])} | {flops} | "
            f"{r['final_val_loss']:.4f} |"
        )
    return lines


def best_experts_table(rows: list[dict]) -> list[str]:
    lines = ["| layers | best expert count | mean val loss | all counts (mean val loss) |", "|---:|---:|---:|---|"]
    by_depth: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["arch"] == "gptoss":
            by_depth[r["n_layers"]][r["num_experts"]].append(r["final_val_loss"])
    for depth in sorted(by_depth):
        means = {e: statistics.fmean(v) for e, v in by_depth[depth].items()}
        best = min(means, key=means.get)
        others = ", ".join(f"{e}: {m:.4f}" for e, m in sorted(means.items()))
        lines.append(f"| {depth} | {best} | {means[best]:.4f} | {others} |")
    return lines


def largest_budget_rows(rows: list[dict]) -> list[dict]:
    top = max((r.get("budget") or 0 for r in rows), default=0)
    return [r for r in rows if (r.get("budget") or 0) == top]
