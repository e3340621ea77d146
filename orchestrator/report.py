"""Sweep reports: results.csv/json, REPORT.md (GPT-OSS vs GPT-2 tables) and PNG plots, rebuilt from the trial runs."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from typing import Optional

from orchestrator.budget_report import budget_section
from orchestrator.formatting import draw_references, fmt_tokens
from orchestrator.ladder import device_lines, device_of, mean_pm
from orchestrator.storage import Storage, open_storage

TRIALS_DIR = "trials"
WEIGHTS_NAME = "model.safetensors"  # as gptoss.checkpoint writes it; not imported, to keep torch out of `report`
COLUMNS = [
    "trial",
    "arch",
    "variant",
    "n_layers",
    "d_model",
    "n_heads",
    "num_experts",
    "experts_per_token",
    "tied",
    "dropout",
    "seed",
    "lr",
    "budget",
    "steps",
    "tokens",
    "final_val_loss",
    "best_val_loss",
    "val_bpb",
    "total_params",
    "active_params",
    "non_embedding_params",
    "bytes_bf16",
    "checkpoint_bytes",
    "flops_per_token",
    "train_flops",
    "tokens_per_s",
    "train_s",
    "wall_s",
    "checkpoint",
    "use_gpu",
    "mlp",
    "device",
    "val_tokens",
    "val_windows",
    "val_fraction",
    "val_scope",
]


class DamagedTrial(ValueError):
    """A trial's files cannot be read; the message names the file and what is wrong with it."""


# What a row needs from a trial's files; a trial lacking one is skipped with a warning naming the file and key.
_SUMMARY_KEYS = ("steps", "tokens", "final_val_loss", "best_val_loss", "final_val_bpb", "params")
_PARAMS_KEYS = ("total", "active", "embedding")
_CONFIG_KEYS = ("arch", "seed")


def _read_json_file(storage: Storage, path: str) -> dict:
    if not storage.exists(path):
        raise DamagedTrial(f"{path} is missing")
    try:
        data = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedTrial(f"{path} is not valid JSON (truncated or damaged: {type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise DamagedTrial(f"{path} is not a JSON object")
    return data


def _require(data: dict, keys: tuple, path: str, what: str = "") -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DamagedTrial(f"{path} lacks {', '.join(what + k for k in missing)}")


def _trial_files(storage: Storage, trial_path: str) -> tuple[dict, dict, list[dict]]:
    """(summary, config, metrics records) of one trial, checked for what the report reads."""
    summary_path, config_path = f"{trial_path}/summary.json", f"{trial_path}/config.json"
    summary = _read_json_file(storage, summary_path)
    _require(summary, _SUMMARY_KEYS, summary_path)
    if summary["final_val_loss"] is None:
        raise DamagedTrial(f"{summary_path} has no final_val_loss (the trial never evaluated)")
    if not isinstance(summary["params"], dict):
        raise DamagedTrial(f"{summary_path}: params is not a mapping")
    _require(summary["params"], _PARAMS_KEYS, summary_path, "params.")
    config = _read_json_file(storage, config_path)
    if not isinstance(config.get("config"), dict):
        raise DamagedTrial(f"{config_path} lacks config")
    _require(config["config"], _CONFIG_KEYS, config_path, "config.")
    records = []
    metrics_path = f"{trial_path}/metrics.jsonl"
    if storage.exists(metrics_path):
        try:
            records = [json.loads(line) for line in storage.read_text(metrics_path).splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            raise DamagedTrial(f"{metrics_path} has a line that is not valid JSON (truncated or damaged)") from None
    return summary, config, records


def collect_rows(
    storage: Storage, sweep_path: str, skipped: Optional[list] = None
) -> tuple[list[dict], dict[str, list[dict]]]:
    """One row per finished trial (a trial run with a summary), and each trial's eval curve. A trial whose files are
    damaged is left out; (trial, why) goes to `skipped` when given."""
    rows, curves = [], {}
    for trial_path in storage.list_dirs(f"{sweep_path}/{TRIALS_DIR}"):
        name = trial_path.rsplit("/", 1)[-1]
        if ".old-" in name or not storage.exists(f"{trial_path}/summary.json"):
            continue
        try:
            summary, config, records = _trial_files(storage, trial_path)
        except DamagedTrial as exc:
            if skipped is not None:
                skipped.append((name, str(exc)))
            continue
        cfg, model, params = config["config"], config.get("model_config", {}), summary["params"]
        evals = [r for r in records if r.get("kind") == "eval"]
        curves[name] = [dict(tokens=r["tokens"], val_loss=r["val_loss"]) for r in evals]
        fpt = config.get("flops_per_token")
        checkpoint, tps = summary.get("best_checkpoint"), summary.get("tokens_per_s")
        rows.append(
            dict(
                trial=name,
                arch=cfg["arch"],
                variant=cfg.get("variant") or "",
                n_layers=model.get("n_layers"),
                d_model=model.get("d_model"),
                n_heads=model.get("n_heads"),
                num_experts=model.get("num_experts", "") if cfg["arch"] == "gptoss" else "",
                experts_per_token=model.get("experts_per_token", "") if cfg["arch"] == "gptoss" else "",
                mlp=model.get("mlp", "moe")
                if cfg["arch"] == "gptoss"
                else "gelu",  # a dense variant ignores its experts
                tied=bool(model.get("tie_embeddings", cfg["arch"] == "gpt2")),
                dropout=model.get("dropout") or 0.0,
                seed=cfg["seed"],
                lr=cfg["lr"] if cfg.get("lr") is not None else config.get("lr"),
                budget=cfg.get("max_tokens") or summary["tokens"],  # the token budget the trial was given
                steps=summary["steps"],
                tokens=summary["tokens"],
                final_val_loss=summary["final_val_loss"],
                best_val_loss=summary["best_val_loss"],
                val_bpb=summary["final_val_bpb"],
                total_params=params["total"],
                active_params=params["active"],
                non_embedding_params=params.get("non_embedding", params["total"] - params["embedding"]),
                bytes_bf16=params.get("bytes_bf16", 2 * params["total"]),
                checkpoint_bytes=storage.size(f"{checkpoint}/{WEIGHTS_NAME}") if checkpoint else 0,
                flops_per_token=fpt,
                train_flops=fpt * summary["tokens"] if fpt else None,
                tokens_per_s=tps,
                train_s=summary["tokens"] / tps if tps else None,  # time spent in training steps: no start-up, no evals
                wall_s=summary.get("wall_s"),
                checkpoint=checkpoint,
                use_gpu=bool(config.get("use_gpu")),
                device="cuda" if config.get("use_gpu") else "cpu",
                **final_eval_scope(evals[-1] if evals else {}, cfg),
            )
        )
    rows.sort(
        key=lambda r: (
            r["n_layers"] or 0,
            r["arch"],
            r["variant"],
            str(r["num_experts"]),
            r["seed"],
            r["budget"],
            r["trial"],
        )
    )
    return rows, curves


def final_eval_scope(record: dict, cfg: dict) -> dict:
    """What a trial's final val loss is over, from its last eval record: val_tokens, val_windows, val_fraction (of
    the split's target tokens; None where the record does not say) and val_scope. Records from before these fields
    carry val_tokens only: their scope follows from eval_windows (0 scored every full window, not the tail)."""
    tokens = record.get("val_tokens")
    if "val_scope" in record:
        return dict(
            val_tokens=tokens,
            val_windows=record.get("val_windows"),
            val_fraction=record.get("val_fraction"),
            val_scope=record["val_scope"],
        )
    seq = cfg.get("seq_len") or 0
    windows = tokens // seq if tokens and seq else None
    if tokens is None:
        scope = "unknown"
    elif not cfg.get("eval_windows"):
        scope = "every full window (the tail not scored)"
    else:
        scope = f"first {windows} windows"
    return dict(val_tokens=tokens, val_windows=windows, val_fraction=None, val_scope=scope)


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


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_curves(rows: list[dict], curves: dict, references: Optional[list] = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"gptoss": "tab:orange", "gpt2": "tab:blue"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for r in rows:
        pts = curves.get(r["trial"], [])
        if not pts:
            continue
        label = r["arch"] if r["arch"] not in labelled else None
        labelled.add(r["arch"])
        ax.plot(
            [p["tokens"] for p in pts],
            [p["val_loss"] for p in pts],
            color=colors.get(r["arch"], "gray"),
            alpha=0.75,
            marker=".",
            label=label,
        )
    draw_references(ax, references or [])
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss during training, every trial")
    ax.grid(alpha=0.3)
    ax.legend(title="architecture")
    fig.tight_layout()
    data = _fig_bytes(fig)
    plt.close(fig)
    return data


def _scatter_panels(rows: list[dict], panels: list[tuple[str, float, str]], references: Optional[list] = None) -> bytes:
    """Final val loss against one quantity per panel: (row key, divisor, axis label); one point per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"gptoss": "tab:orange", "gpt2": "tab:blue"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (key, scale, label) in zip(axes[0], panels):
        for arch in ("gpt2", "gptoss"):
            pts = [r for r in rows if r["arch"] == arch and r.get(key)]
            if pts:
                ax.scatter(
                    [r[key] / scale for r in pts], [r["final_val_loss"] for r in pts], color=colors[arch], label=arch
                )
                for r in pts:
                    tag = f"L{r['n_layers']}" + (f"E{r['num_experts']}" if arch == "gptoss" else "")
                    ax.annotate(
                        tag,
                        (r[key] / scale, r["final_val_loss"]),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        draw_references(ax, references or [])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss (nats/token)")
    axes[0][0].legend(title="architecture")
    fig.tight_layout()
    data = _fig_bytes(fig)
    plt.close(fig)
    return data


def plot_loss_vs_params(rows: list[dict], references: Optional[list] = None) -> bytes:
    return _scatter_panels(
        rows,
        [
            ("active_params", 1e6, "active parameters per token (millions)"),
            ("total_params", 1e6, "total parameters (millions)"),
        ],
        references,
    )


def plot_loss_vs_compute(rows: list[dict], references: Optional[list] = None) -> bytes:
    return _scatter_panels(
        rows,
        [
            ("train_flops", 1e12, "training compute (TFLOPs, forward + backward)"),
            ("train_s", 1, "training time (s in training steps, this machine)"),
        ],
        references,
    )


def ngram_references(
    data_dir: Optional[str], storage: Optional[Storage] = None, root: Optional[str] = None
) -> tuple[list[tuple[str, float, float]], list[str], Optional[int]]:
    """The n-gram lines of the data the sweep trained on (DATA_DIR/baselines.json, from `python cli.py baseline`):
    those fitted on the most training tokens; a table of every recorded fit; and the training split's size in tokens
    (None unless a fit used all of it). With a sweep directory, a copy of the fits is kept there, so that a report
    rebuilt where the data is not (a clean clone of committed results) draws the same lines."""
    from data_pipeline.ngram import BASELINES_NAME, load_baselines

    fits = load_baselines(data_dir) if data_dir and "://" not in data_dir else []
    kept = f"{root}/{BASELINES_NAME}" if storage is not None and root else None
    if fits and kept:
        storage.write_text(kept, json.dumps(dict(fits=fits), indent=1))
    elif kept and storage.exists(kept):
        try:
            fits = list(json.loads(storage.read_text(kept))["fits"])
        except (ValueError, KeyError, TypeError):
            fits = []
    if not fits:
        return [], [], None
    split = [f["train_tokens"] for f in fits if f.get("all_train_tokens")]
    names = {"unigram": "unigram", "kn_bigram": "KN bigram", "kn_trigram": "KN trigram"}
    widest = max(fits, key=lambda f: f["train_tokens"])
    lines = [f"{names.get(k, k)} ({widest['train_tokens'] / 1e6:.2f}M tokens)" for k in widest["models"]]
    refs = [(label, m["nats_per_token"], m["bits_per_byte"]) for label, m in zip(lines, widest["models"].values())]
    table = ["| reference model | fitted on (tokens) | val loss (nats/token) | bits/byte |", "|---|---:|---:|---:|"]
    for fit in fits:
        for key, m in fit["models"].items():
            table.append(
                f"| {names.get(key, key)} | {fit['train_tokens']:,} | {m['nats_per_token']:.4f} | "
                f"{m['bits_per_byte']:.4f} |"
            )
    return refs, table, (split[0] if split else None)


def _largest_budget(rows: list[dict]) -> list[dict]:
    top = max((r.get("budget") or 0 for r in rows), default=0)
    return [r for r in rows if (r.get("budget") or 0) == top]


def render_markdown(
    rows: list[dict],
    sweep: dict,
    budget: Optional[dict] = None,
    reference_table: Optional[list] = None,
    baseline: str = "gpt2",
) -> str:
    base = sweep.get("base", {})
    settings = {
        k: base.get(k)
        for k in (
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
        if k in base
    }
    if sweep.get("budgets"):
        settings["budgets"] = sweep["budgets"]
    lrs = lr_table(rows)
    scope = loss_scope_line(rows)
    lr_section = (
        [
            "Models trained at several learning rates are compared at their best lr (lowest mean final val loss, "
            "in bold); a best lr at the edge of the model's grid is marked:",
            "",
            *lrs,
            "",
            scope,
            "",
        ]
        if lrs
        else []
    )
    # Variants (the component ladder) get their own section; the GPT-OSS vs GPT-2 tables keep the plain trials.
    plain = [r for r in rows if not r.get("variant")]
    ladder_part = []
    if len(plain) < len(rows):
        from orchestrator.ladder import ladder_section

        ladder_part = [
            "## Component ladder: where the difference comes from",
            "",
            *ladder_section(best_lr_rows(rows)),
            "",
            scope,
            "",
        ]
    experts = best_experts_table(_largest_budget(plain))
    headline = headline_table(plain) if plain else ["(every trial ran a named variant: see the component ladder)"]
    out = [
        f"# Sweep report: {sweep.get('name', '?')}",
        "",
        f"{len(rows)} finished trials. Improvement = (GPT-2 loss - GPT-OSS loss) / GPT-2 loss: "
        "positive means GPT-OSS is better. "
        "Losses are final validation losses in nats per token on the same fixed validation windows; ± is the standard "
        "deviation over seeds; on the improvement it is that of the per-seed differences "
        "(trials with the same seed see the same batches in the same order).",
        "",
        *device_lines(rows),
        *ladder_part,
        "## 1. GPT-OSS vs GPT-2 per depth",
        "",
        *headline,
        "",
        scope,
        "",
        *lr_section,
        "## 2. Architectures",
        "",
        *architecture_table(rows),
        "",
        speed_note(rows, sweep),
        "",
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
        *(
            [
                "## 4. Best expert count per depth",
                "",
                *(["At the largest budget.", ""] if len({r.get("budget") for r in plain}) > 1 else []),
                *experts,
                "",
            ]
            if len(experts) > 2
            else []
        ),
        *(
            [
                f"## 4b. Loss against budget ({baseline.split(',')[0]} as the baseline)",
                "",
                *device_lines(rows),
                *budget["lines"],
                "",
                scope,
                "",
            ]
            if budget
            else []
        ),
        *(
            [
                "## 4c. Count-based reference models (horizontal lines on every loss plot)",
                "",
                "Fitted on the sweep's training tokens and scored on the whole validation split "
                "by `python cli.py baseline`. "
                "A model above the trigram line has not yet learned more than local word statistics.",
                "",
                *reference_table,
                "",
            ]
            if reference_table
            else []
        ),
        "## 5. Settings",
        "",
        "```json",
        json.dumps(
            dict(
                settings=settings,
                grid=sweep.get("grid", {}),
                lr_by_arch=sweep.get("lr_by_arch", {}),
                lr_by_variant=sweep.get("lr_by_variant", {}),
                workers_per_trial=sweep.get("workers_per_trial"),
            ),
            indent=1,
        ),
        "```",
        "",
    ]
    return "\n".join(out)


def write_report(sweep_dir: str, baseline: Optional[str] = None) -> dict:
    """(Re)build every report file of a sweep from its trial runs; returns where they are. `baseline` (an arch, a
    variant or a model label as in the budget tables; several comma-separated) is what the data and compute
    multipliers are measured against; by default the one the sweep recorded, else gpt2."""
    storage = open_storage(sweep_dir) if "://" in sweep_dir else _existing_local(sweep_dir)
    root = storage.root
    sweep = json.loads(storage.read_text(f"{root}/sweep.json")) if storage.exists(f"{root}/sweep.json") else {}
    skipped: list = []
    rows, curves = collect_rows(storage, root, skipped)
    if not rows:
        damaged = f" ({len(skipped)} damaged: {skipped[0][1]})" if skipped else ""
        raise ValueError(
            f"{sweep_dir} holds no finished trials (trials/<name>/summary.json){damaged}; "
            f"run `python cli.py sweep` first"
        )
    baseline = baseline or sweep.get("baseline") or "gpt2"
    missing = unfinished_points(sweep, rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(f"{root}/results.csv", buf.getvalue())
    storage.write_text(f"{root}/results.json", json.dumps(rows, indent=1))
    references, reference_table, split_tokens = ngram_references(sweep.get("base", {}).get("data"), storage, root)
    budget = budget_section([dict(r, model=model_label(r)) for r in rows], baseline, references, split_tokens)
    storage.write_bytes(f"{root}/loss_curves.png", plot_curves(rows, curves, references))
    storage.write_bytes(f"{root}/loss_vs_params.png", plot_loss_vs_params(rows, references))
    storage.write_bytes(f"{root}/loss_vs_compute.png", plot_loss_vs_compute(rows, references))
    storage.write_bytes(f"{root}/loss_vs_budget.png", budget["plot"])
    if any(r["variant"] for r in rows):
        from orchestrator.ladder import plot_waterfall

        storage.write_bytes(f"{root}/ladder.png", plot_waterfall(best_lr_rows(rows)))
    status = status_lines(sweep, rows, missing, skipped)
    storage.write_text(
        f"{root}/REPORT.md",
        "".join(line + "\n" for line in status) + render_markdown(rows, sweep, budget, reference_table, baseline),
    )
    return dict(
        trials=len(rows),
        report=storage.uri_of("REPORT.md"),
        rows=rows,
        unfinished=missing,
        skipped=skipped,
        fits=budget["fits"],
    )


def unfinished_points(sweep: dict, rows: list[dict]) -> list[str]:
    """The sweep's trials (sweep.json; with budgets, each point's long run and branches) without a result, in order."""
    done = {r["trial"] for r in rows}
    return [p for p in sweep.get("trials") or sweep.get("points", []) if p not in done]


def status_lines(sweep: dict, rows: list[dict], missing: list[str], skipped: list) -> list[str]:
    """The report's first lines when it does not cover the whole sweep (empty when it does)."""
    lines = []
    if missing:
        total = len(sweep.get("trials") or sweep.get("points", []))
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        early = " (ASHA stops weak trials early; those have no result either)" if sweep.get("asha") else ""
        lines.append(
            f"> **Unfinished sweep: {total - len(missing)} of {total} trials finished.** This report covers only "
            f"those; missing: {shown}{early}. Rerun `python cli.py sweep` with the same name to finish the rest "
            f"(finished trials are kept, not retrained)."
        )
    for name, why in skipped:
        lines.append(f"> **Trial {name} left out: {why}.**")
    return [text for line in lines for text in (line, "")]  # a blank line between: one paragraph each


def _existing_local(path: str) -> Storage:
    import os

    if not os.path.isdir(path):
        raise FileNotFoundError(f"no sweep directory at {path}")
    return open_storage(path)
