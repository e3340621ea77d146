"""Predict, then verify: the loss of a held-out (larger) size from a law fitted on every other size, with its
interval, the predictions.json that records it before the held-out trials run, and the check against what they
measured. Pure functions of result rows; no storage, no Ray."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import Optional

from orchestrator.laws import (
    BOOTSTRAP_SAMPLES,
    effective_tokens,
    epochs_of,
    family_of,
    fit_family,
    interval_method,
    jackknife_interval,
    loss_tokens_text,
    params_of,
    size_of,
    union_interval,
    weighted_interval,
)

PREDICTIONS_FORMAT = "nano-gpt-oss/predictions"
PREDICTIONS_VERSION = 1


def budget_of(r: dict) -> float:
    return float(r.get("budget") or r["tokens"])


def predict(
    rows: list[dict],
    holdout: dict,
    *,
    effective_data: bool = False,
    unique_tokens: Optional[float] = None,
    samples: int = BOOTSTRAP_SAMPLES,
    val_tokens_text: Optional[str] = None,
) -> dict:
    """Fit each family on every row except those of the held-out size and predict its loss at that size and budget.

    holdout: {"size": size label (size_of), "budget": tokens, optionally "tokens": the tokens the trial will train
    on (default the budget) and "params_non_embedding": {family: N} for sizes not yet in the rows}. Returns the
    JSON-serialisable predictions (predictions_json writes them)."""
    if "size" not in holdout or "budget" not in holdout:
        raise ValueError("holdout needs a size and a budget, e.g. {'size': 'L4-d256-h4', 'budget': 4194304}")
    size, budget = str(holdout["size"]), float(holdout["budget"])
    tokens = float(holdout.get("tokens") or budget)
    given_n = holdout.get("params_non_embedding") or {}
    by_family = defaultdict(list)
    for r in rows:
        by_family[family_of(r)].append(r)
    mode = "flops" if all(r.get("flops_per_token") for r in rows) else "6nd"
    families = {}
    for fam, rs in sorted(by_family.items()):
        held = [r for r in rs if size_of(r) == size]
        train = [r for r in rs if size_of(r) != size]
        n = given_n.get(fam) or (params_of(held[0]) if held else None)
        entry = dict(
            params_non_embedding=n,
            tokens=tokens,
            predicted_loss=None,
            interval=None,
            interval_method="",
            fit_interval=None,
            seed_std=None,
            seeds=[],
            fit=None,
            fitted_on=None,
            reason=None,
        )
        families[fam] = entry
        if n is None:
            entry["reason"] = (
                f"the non-embedding parameter count of {size} is unknown: give holdout params_non_embedding"
            )
            continue
        fit = fit_family(
            train, fam, effective_data=effective_data, unique_tokens=unique_tokens, compute=mode, samples=samples
        )
        entry["fitted_on"] = dict(points=fit.points, rows=fit.rows, sizes=fit.sizes, budgets=fit.budgets)
        entry["seeds"] = fit.seeds
        if fit.law is None:
            entry["reason"] = fit.reason
            continue
        d = tokens
        if effective_data:
            u = unique_tokens or (float(train[0]["tokens"]) / epochs_of(train[0], unique_tokens))
            d = effective_tokens(tokens, u)
        entry.update(_predicted(fit, train, n, d, samples))
        entry["fit"] = fit.law.as_dict()
        entry["extrapolated_in_size"] = bool(n > max(fit.sizes) or n < min(fit.sizes))
    return dict(
        format=PREDICTIONS_FORMAT,
        version=PREDICTIONS_VERSION,
        holdout=dict(size=size, budget=budget, tokens=tokens),
        loss=val_tokens_text or loss_tokens_text(rows),
        effective_data=effective_data,
        families=families,
    )


def _predicted(fit, train: list[dict], n: float, d: float, samples: int) -> dict:
    """The law's loss at (n, d) and its interval: the fit's (seed resamples, widened to the jackknife), then widened
    again by the seed noise of what will be measured, a mean over that many seeds."""
    from orchestrator.ladder import t95

    loss = float(fit.law.loss(n, d))
    good = [r for r in fit.resamples if r.law is not None]
    fit_interval = union_interval(
        weighted_interval([float(r.law.loss(n, d)) for r in good], [r.weight for r in good]),
        jackknife_interval(loss, [None if law is None else float(law.loss(n, d)) for law in fit.jackknife]),
    )
    m, rel = len(fit.seeds), pooled_seed_std(train)
    std = None if rel is None else rel * loss
    out = dict(predicted_loss=loss, fit_interval=list(fit_interval) if fit_interval else None, seed_std=std)
    if fit_interval and std is not None:
        half = t95(m - 1) * std / math.sqrt(m)
        out["interval"] = [fit_interval[0] - half, fit_interval[1] + half]
        out["interval_method"] = (
            f"the law's interval ({interval_method(m, samples)}), then ±{half:.4f} nats for the noise of the "
            f"measurement, a mean of {m} seeds: the 95% t half-width with the seed std {std:.4f} nats "
            f"({100 * rel:.2f}% of the loss, pooled over the fitted points)"
        )
    else:
        out["interval_method"] = interval_method(m, samples)
    return out


def pooled_seed_std(rows: list[dict]) -> Optional[float]:
    """The relative std of final loss between seeds of one (family, size, budget) point (std of log loss), pooled
    over the points with several seeds; None when no point has two. Relative, because the spread in nats grows with
    the loss: small models' points would otherwise set the noise of a large one."""
    cells = defaultdict(list)
    for r in rows:
        cells[(family_of(r), params_of(r), budget_of(r))].append(math.log(float(r["final_val_loss"])))
    ss = dof = 0.0
    for losses in cells.values():
        if len(losses) > 1:
            mean = statistics.fmean(losses)
            ss += sum((x - mean) ** 2 for x in losses)
            dof += len(losses) - 1
    return math.sqrt(ss / dof) if dof else None


def predictions_json(predictions: dict) -> str:
    """predictions.json's text (the caller writes it atomically, before the held-out trials run)."""
    return json.dumps(predictions, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load_predictions(text: str, where: str = "predictions.json") -> dict:
    """Parse and check predictions.json; a ValueError naming the file and what is wrong otherwise."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{where} is not valid JSON: rewrite it with report --predict") from None
    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(f"{where} is not a predictions file (format is not {PREDICTIONS_FORMAT!r})")
    if data.get("version") != PREDICTIONS_VERSION:
        raise ValueError(f"{where} has version {data.get('version')}; this tool reads version {PREDICTIONS_VERSION}")
    if not isinstance(data.get("holdout"), dict) or not isinstance(data.get("families"), dict):
        raise ValueError(f"{where} lacks its holdout or families: rewrite it with report --predict")
    return data


def with_other_budgets(main: dict, others: dict[float, dict]) -> dict:
    """predictions.json's content with the held-out size's other budgets too: `by_budget` maps each budget (its
    tokens as a string, the main one included) to its families' predictions, made from the same rows."""
    by_budget = {float(main["holdout"]["budget"]): main["families"]}
    by_budget.update({float(b): p["families"] for b, p in others.items()})
    return dict(main, by_budget={f"{b:.0f}": fams for b, fams in sorted(by_budget.items())})


def prediction_check(predictions: dict, rows: list[dict]) -> list[dict]:
    """Per family (and per budget, where predictions.json has by_budget): the predicted loss and interval against
    the measured mean over seeds at the held-out size and that budget, the error (measured - predicted, nats), and
    whether the measurement falls inside the interval."""
    if predictions.get("by_budget"):
        out = []
        for budget, families in sorted(predictions["by_budget"].items(), key=lambda kv: float(kv[0])):
            one = dict(predictions, holdout=dict(predictions["holdout"], budget=float(budget)), families=families)
            out += [dict(c, budget=float(budget)) for c in _check_one_budget(one, rows)]
        return out
    return [dict(c, budget=float(predictions["holdout"]["budget"])) for c in _check_one_budget(predictions, rows)]


def _check_one_budget(predictions: dict, rows: list[dict]) -> list[dict]:
    size, budget = predictions["holdout"]["size"], float(predictions["holdout"]["budget"])
    out = []
    for fam, p in sorted(predictions["families"].items()):
        measured = [
            float(r["final_val_loss"])
            for r in rows
            if family_of(r) == fam and size_of(r) == size and budget_of(r) == budget
        ]
        mean = statistics.fmean(measured) if measured else None
        pred, interval = p.get("predicted_loss"), p.get("interval")
        out.append(
            dict(
                family=fam,
                predicted=pred,
                interval=interval,
                interval_method=p.get("interval_method", ""),
                measured=mean,
                measured_std=statistics.stdev(measured) if len(measured) > 1 else None,
                seeds=len(measured),
                error_nats=(mean - pred) if (mean is not None and pred is not None) else None,
                inside=(interval[0] <= mean <= interval[1]) if (mean is not None and interval) else None,
                reason=p.get("reason") or ("not measured yet" if mean is None else None),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# The report's Size section.
