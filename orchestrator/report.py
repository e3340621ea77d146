"""Sweep reports: results.csv/json, REPORT.md (GPT-OSS vs GPT-2 tables) and PNG plots, rebuilt from the trial runs."""

from __future__ import annotations

import csv
import io
import json
from typing import Optional

from orchestrator.budget_report import budget_section
from orchestrator.report_markdown import render_markdown
from orchestrator.report_plots import plot_curves, plot_loss_vs_compute, plot_loss_vs_params
from orchestrator.report_sizes import SIZE_COLUMNS, add_size_fields, size_files
from orchestrator.report_tables import best_lr_rows, model_label
from orchestrator.run_dir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, WEIGHTS_FILE
from orchestrator.storage import Storage, open_storage

TRIALS_DIR = "trials"
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
# Only runs whose last evaluation also scored a sample of the training split have these (final_train_fields).
TRAIN_COLUMNS = ["train_eval_loss", "train_eval_tokens", "final_train_loss"]


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
    summary_path, config_path = f"{trial_path}/{SUMMARY_FILE}", f"{trial_path}/{CONFIG_FILE}"
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
    metrics_path = f"{trial_path}/{METRICS_FILE}"
    if storage.exists(metrics_path):
        try:
            records = [json.loads(line) for line in storage.read_text(metrics_path).splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            raise DamagedTrial(f"{metrics_path} has a line that is not valid JSON (truncated or damaged)") from None
    return summary, config, records


def collect_rows(
    storage: Storage, sweep_path: str, skipped: Optional[list] = None, configs: Optional[dict] = None
) -> tuple[list[dict], dict[str, list[dict]]]:
    """One row per finished trial (a trial run with a summary), and each trial's eval curve. A trial whose files are
    damaged is left out; (trial, why) goes to `skipped` when given; each trial's config.json to `configs`."""
    rows, curves = [], {}
    for trial_path in storage.list_dirs(f"{sweep_path}/{TRIALS_DIR}"):
        name = trial_path.rsplit("/", 1)[-1]
        if ".old-" in name or not storage.exists(f"{trial_path}/{SUMMARY_FILE}"):
            continue
        try:
            summary, config, records = _trial_files(storage, trial_path)
        except DamagedTrial as exc:
            if skipped is not None:
                skipped.append((name, str(exc)))
            continue
        if configs is not None:
            configs[name] = config
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
                checkpoint_bytes=storage.size(f"{checkpoint}/{WEIGHTS_FILE}") if checkpoint else 0,
                flops_per_token=fpt,
                train_flops=fpt * summary["tokens"] if fpt else None,
                tokens_per_s=tps,
                train_s=summary["tokens"] / tps if tps else None,  # time spent in training steps: no start-up, no evals
                wall_s=summary.get("wall_s"),
                checkpoint=checkpoint,
                use_gpu=bool(config.get("use_gpu")),
                device="cuda" if config.get("use_gpu") else "cpu",
                **final_eval_scope(evals[-1] if evals else {}, cfg),
                **final_train_fields(evals[-1] if evals else {}),
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


def final_train_fields(record: dict) -> dict:
    """The final model's loss on the training split's sample and the last training window's mean loss, for runs
    whose last evaluation scored the sample (TRAIN_COLUMNS); {} for the others, whose rows stay as they were."""
    if record.get("train_eval_loss") is None:
        return {}
    return dict(
        train_eval_loss=record["train_eval_loss"],
        train_eval_tokens=record.get("train_eval_tokens"),
        final_train_loss=record.get("train_loss"),
    )


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


def write_report(sweep_dir: str, baseline: Optional[str] = None) -> dict:
    """(Re)build every report file of a sweep from its trial runs; returns where they are. `baseline` (an arch, a
    variant or a model label as in the budget tables; several comma-separated) is what the data and compute
    multipliers are measured against; by default the one the sweep recorded, else gpt2."""
    storage = open_storage(sweep_dir) if "://" in sweep_dir else _existing_local(sweep_dir)
    root = storage.root
    sweep = json.loads(storage.read_text(f"{root}/sweep.json")) if storage.exists(f"{root}/sweep.json") else {}
    skipped: list = []
    configs: dict = {}
    rows, curves = collect_rows(storage, root, skipped, configs)
    if not rows:
        damaged = f" ({len(skipped)} damaged: {skipped[0][1]})" if skipped else ""
        raise ValueError(
            f"{sweep_dir} holds no finished trials (trials/<name>/summary.json){damaged}; "
            f"run `python cli.py sweep` first"
        )
    baseline = baseline or sweep.get("baseline") or "gpt2"
    missing = unfinished_points(sweep, rows)
    sized = add_size_fields(rows, configs, sweep.get("sizes") or [])
    buf = io.StringIO()
    trained = TRAIN_COLUMNS if any("train_eval_loss" in r for r in rows) else []
    writer = csv.DictWriter(
        buf, fieldnames=COLUMNS + trained + (SIZE_COLUMNS if sized else []), restval="", lineterminator="\n"
    )
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
    size_lines = size_files(storage, root, rows, baseline, references) if sized else None
    status = status_lines(sweep, rows, missing, skipped)
    storage.write_text(
        f"{root}/REPORT.md",
        "".join(line + "\n" for line in status)
        + render_markdown(rows, sweep, budget, reference_table, baseline, size_lines),
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
