"""The report across model sizes: the row fields the laws need (size, non-embedding params, epochs, family), whether
the rows span more than one size, predictions.json read and written, and the Size section's lines and plot files."""

from __future__ import annotations

import json
import os
from typing import Optional

from orchestrator.storage import Storage

PREDICTIONS_FILE = "predictions.json"
# Row fields only a sweep over several sizes has (results.csv gains these columns then, and only then).
SIZE_COLUMNS = ["size", "family", "params_non_embedding", "params_non_embedding_active", "epochs"]
# N in the law is the total non-embedding count: for an MoE, every expert's weights (what the model holds), while
# its compute is the active count's (flops_per_token), so the frontiers compare models at the compute they cost.
LAW_PARAMS_TEXT = (
    "N is the total non-embedding parameter count (for an MoE every expert counts; its active count is in "
    "results.csv as params_non_embedding_active, and its training compute counts only the active experts)"
)


def _train_tokens(data_dir: Optional[str], cache: dict) -> Optional[int]:
    """The prepared data's training split size in tokens (its manifest), None where the data is not here."""
    if not data_dir or "://" in data_dir:
        return None
    if data_dir not in cache:
        try:
            with open(os.path.join(data_dir, "manifest.json")) as f:
                cache[data_dir] = int(json.load(f)["splits"]["train"]["tokens"])
        except (OSError, ValueError, KeyError, TypeError):
            cache[data_dir] = None
    return cache[data_dir]


def _family(r: dict, expert_counts: set) -> str:
    if r.get("variant"):
        return str(r["variant"])
    if r["arch"] == "gptoss" and len(expert_counts) > 1:
        return f"gptoss-E{r['num_experts']}"
    return r["arch"]


def family_of_point(point, cfg) -> str:
    """The family a sweep point's rows will have (as _family names a row), before the point has run."""
    from orchestrator.sweep_plan import expand_grid

    def variant(p) -> Optional[str]:
        return dict(p.params).get("variant") or (cfg.base.variant if p.arch == "gptoss" else None)

    experts = {
        str(dict(p.params).get("num_experts")) for p in expand_grid(cfg) if p.arch == "gptoss" and not variant(p)
    }
    row = dict(variant=variant(point), arch=point.arch, num_experts=dict(point.params).get("num_experts"))
    return _family(row, experts)


def add_size_fields(rows: list[dict], configs: dict[str, dict], sizes: list[dict], always: bool = False) -> bool:
    """Give every row the fields the laws read (SIZE_COLUMNS) when the rows span more than one size (or `always`);
    True then. With one size the rows stay as they are, so a report of such a sweep is what it always was.
    `configs`: each trial's config.json; `sizes`: the sweep's shapes (sweep.json), whose labels name the sizes."""
    from orchestrator.laws import size_of
    from orchestrator.sizes import size_of_model

    labels = {}
    for r in rows:
        model = configs.get(r["trial"], {}).get("model_config", {})
        labels[r["trial"]] = (size_of_model(model, sizes) if sizes else None) or size_of(r)
    if len(set(labels.values())) < 2 and not always:
        return False
    experts = {str(r["num_experts"]) for r in rows if r["arch"] == "gptoss" and not r.get("variant")}
    cache: dict = {}
    for r in rows:
        config = configs.get(r["trial"], {})
        params = config.get("params") or {}
        embedding = r["total_params"] - r["non_embedding_params"]
        r["size"] = labels[r["trial"]]
        r["family"] = _family(r, experts)
        r["params_non_embedding"] = r["non_embedding_params"]
        r["params_non_embedding_active"] = params.get("active_non_embedding", r["active_params"] - embedding)
        unique = _train_tokens(config.get("config", {}).get("data"), cache)
        if unique:
            r["epochs"] = r["tokens"] / unique
    return True


def read_predictions(storage: Storage, root: str) -> Optional[dict]:
    from orchestrator.predictions import load_predictions

    path = f"{root}/{PREDICTIONS_FILE}"
    if not storage.exists(path):
        return None
    return load_predictions(storage.read_text(path), path)


def size_files(storage: Storage, root: str, rows: list[dict], baseline: str, references: list) -> list[str]:
    """Write the Size section's plots into the sweep directory; return the section's lines (with the prediction
    check when predictions.json is there)."""
    from orchestrator.laws import fit_families
    from orchestrator.report_contrasts import contrast_lines
    from orchestrator.size_report import size_plots, size_section

    family = baseline.split(",")[0]
    rows, note = _at_best_lr(rows)
    fits = fit_families(rows)
    for name, data in size_plots(rows, family, references, fits=fits).items():
        storage.write_bytes(f"{root}/{name}", data)
    lines = size_section(rows, family, read_predictions(storage, root), fits=fits)
    return [*lines[:4], LAW_PARAMS_TEXT + ".", "", *note, *lines[4:], "", *contrast_lines(rows, family)]


def _at_best_lr(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The rows the Size section reads: where a model trained at several lrs, only its best lr's trials at each
    budget (report_tables.best_lr_rows), so that a fit and a pairing never mix lrs; and a line saying so."""
    from orchestrator.report_tables import best_lr_rows

    best = best_lr_rows(rows)
    if len(best) == len(rows):
        return rows, []
    return best, [
        f"Models trained at several learning rates enter this section at their best lr at each budget only "
        f"({len(best)} of {len(rows)} trials; the lr table above has them all).",
        "",
    ]
