"""Joint scaling laws: the approach-3 fit recovers a known law, refuses too few points, frontiers and multipliers
match their closed forms, a held-out size is predicted within its interval, and the Size section renders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from orchestrator.frontiers import compute_multiplier, frontier, multipliers_along
from orchestrator.law_intervals import distinct_resamples, interval_method, jackknife_interval, weighted_interval
from orchestrator.laws import (
    ComputeModel,
    Law,
    LawFit,
    compute_model,
    effective_tokens,
    fit_families,
    fit_family,
)
from orchestrator.predictions import load_predictions, predict, prediction_check, predictions_json
from orchestrator.size_report import size_plots, size_section

TRUE = Law(E=1.6, A=400.0, B=2000.0, alpha=0.35, beta=0.4)
SIZES = [1e6, 3e6, 1e7, 3e7]
BUDGETS = [1e8, 4e8, 1.6e9, 6.4e9]


def law_rows(family, law, sizes=SIZES, budgets=BUDGETS, seeds=(0, 1, 2), noise=0.0, seed_noise=0.0, rng=None, **extra):
    """Rows from a known law: multiplicative noise per point, and a per-seed offset shared by all of a seed's points
    (one seed's runs move together)."""
    rng = rng or np.random.default_rng(0)
    out = []
    for s in seeds:
        offset = rng.normal(0, seed_noise) if seed_noise else 0.0
        for i, n in enumerate(sizes):
            for d in budgets:
                loss = float(law.loss(n, d)) * math.exp(offset + (rng.normal(0, noise) if noise else 0.0))
                out.append(
                    dict(
                        arch=family,
                        seed=s,
                        params_non_embedding=n,
                        tokens=d,
                        budget=d,
                        final_val_loss=loss,
                        n_layers=4,
                        d_model=64 * (i + 1),
                        n_heads=4,
                        **extra,
                    )
                )
    return out


def test_the_joint_fit_recovers_a_known_law_through_noise():
    # 4 sizes x 4 budgets x 3 seeds, 0.2% noise per point and 0.1% per seed. Tolerances: alpha and beta within 10%,
    # E within 2%.
    rows = law_rows("gpt2", TRUE, noise=0.002, seed_noise=0.001, rng=np.random.default_rng(3))
    fit = fit_family(rows)
    assert fit.law is not None, fit.reason
    assert fit.law.alpha == pytest.approx(TRUE.alpha, rel=0.10)
    assert fit.law.beta == pytest.approx(TRUE.beta, rel=0.10)
    assert fit.law.E == pytest.approx(TRUE.E, rel=0.02)
    assert fit.rmse_log < 0.004
    # Three seeds: all 10 distinct resamples, each refitted once, probabilities summing to 1; the interval is their
    # whole range and says so.
    assert distinct_resamples(3) == 10 and len(fit.resamples) == 10
    assert sum(r.weight for r in fit.resamples) == pytest.approx(1.0)
    assert "10 distinct resamples of 3 seeds" in fit.interval_method
    # Widened to the leave-one-seed-out jackknife's t-interval (it is the wider one at 3 seeds), which holds the true
    # values here.
    assert len(fit.jackknife) == 3
    for k in ("E", "alpha", "beta"):
        lo, hi = fit.intervals[k]
        jk = jackknife_interval(getattr(fit.law, k), [getattr(law, k) for law in fit.jackknife])
        assert lo <= jk[0] < jk[1] <= hi
        assert lo <= getattr(TRUE, k) <= hi


def test_a_noise_free_law_is_recovered_exactly():
    fit = fit_family(law_rows("gpt2", TRUE, seeds=(0,)))
    assert fit.law.alpha == pytest.approx(TRUE.alpha, rel=1e-3)
    assert fit.law.beta == pytest.approx(TRUE.beta, rel=1e-3)
    assert fit.law.E == pytest.approx(TRUE.E, rel=1e-4)
    assert fit.law.A == pytest.approx(TRUE.A, rel=1e-2) and fit.law.B == pytest.approx(TRUE.B, rel=1e-2)
    assert fit.intervals == {} and fit.interval_method.startswith("1 seed: no interval")


def test_too_few_sizes_budgets_or_points_get_no_fit_and_a_reason():
    assert "2 size(s)" in fit_family(law_rows("g", TRUE, sizes=SIZES[:2])).reason  # refused before any fit
    assert "2 budget(s)" in fit_family(law_rows("g", TRUE, budgets=BUDGETS[:2])).reason
    grid = law_rows("g", TRUE, sizes=SIZES[:3], budgets=BUDGETS[:3], seeds=(0,))
    rows = [r for r in grid if (r["params_non_embedding"], r["tokens"]) != (SIZES[2], BUDGETS[2])]
    fit = fit_family(rows)  # 3 x 3 less one cell: 8 points, the least that is fitted
    assert fit.law is not None and fit.points == 8
    rows = [r for r in rows if not (r["tokens"] == BUDGETS[0] and r["params_non_embedding"] == SIZES[0])]
    fit = fit_family(rows)
    assert fit.law is None and "7 (size, budget) points" in fit.reason


def test_effective_data_follows_muennighoff_and_needs_epochs():
    u = 1e6
    assert effective_tokens(5e5, u) == 5e5  # fresh data is worth its count
    assert effective_tokens(2e6, u) == pytest.approx(u + u * 15.4 * (1 - math.exp(-1 / 15.4)))
    assert effective_tokens(2e6, u) < 2e6
    assert effective_tokens(1e12, u) == pytest.approx(u * (1 + 15.4))  # the ceiling
    with pytest.raises(ValueError, match="epochs or unique_tokens"):
        fit_family(law_rows("g", TRUE), effective_data=True)
    fit = fit_family(law_rows("g", TRUE, seeds=(0,)), effective_data=True, unique_tokens=1e12)  # nothing repeated
    assert fit.law.beta == pytest.approx(TRUE.beta, rel=1e-3)


def test_the_frontier_matches_the_closed_form_under_6nd():
    # With C = 6ND: N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).
    law, c = TRUE, np.array([1e15, 1e18, 1e21])
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    n_opt = g * (c / 6) ** (law.beta / (law.alpha + law.beta))
    fr = frontier(law, ComputeModel("6nd"), c)
    assert fr["n_opt"] == pytest.approx(n_opt, rel=1e-4)
    assert fr["d_opt"] == pytest.approx(c / (6 * n_opt), rel=1e-4)
    assert fr["loss"] == pytest.approx(law.loss(n_opt, c / (6 * n_opt)), rel=1e-9)


def test_the_multiplier_from_hand_made_rows_is_the_closed_form():
    # Same E, alpha, beta; x has half of A and B. Under 6ND, L_opt - E = K (C/6)^-gamma, gamma = alpha beta/(alpha
    # + beta), K linear in (A, B) jointly: K_x = K_base / 2, so k = 2^(1/gamma) at every compute.
    x_law = Law(E=TRUE.E, A=TRUE.A / 2, B=TRUE.B / 2, alpha=TRUE.alpha, beta=TRUE.beta)
    gamma = TRUE.alpha * TRUE.beta / (TRUE.alpha + TRUE.beta)
    expected = 2 ** (1 / gamma)
    c = np.array([1e15, 1e17, 1e20])
    assert compute_multiplier(x_law, ComputeModel("6nd"), TRUE, ComputeModel("6nd"), c) == pytest.approx(
        expected, rel=1e-4
    )
    rows = law_rows("gpt2", TRUE, seeds=(0, 1)) + law_rows("gptoss", x_law, seeds=(0, 1))
    fits = fit_families(rows)
    assert fits["gpt2"].compute.mode == "6nd"  # no flops_per_token on the rows
    mult = multipliers_along(fits["gptoss"], fits["gpt2"], c)
    assert [m.multiplier for m in mult] == pytest.approx([expected] * 3, rel=0.02)
    assert all(m.interval is not None for m in mult)
    assert [m.extrapolated for m in mult] == [False, True, True]  # measured compute is 6e14 to 1.2e18
    # The fitted frontier is the closed form's too.
    g = (TRUE.alpha * TRUE.A / (TRUE.beta * TRUE.B)) ** (1 / (TRUE.alpha + TRUE.beta))
    fitted = frontier(fits["gpt2"].law, fits["gpt2"].compute, c)
    assert fitted["n_opt"] == pytest.approx(g * (c / 6) ** (TRUE.beta / (TRUE.alpha + TRUE.beta)), rel=0.01)
    # FLOPs/token of exactly 6 N on the rows is the same compute: the same multiplier.
    for r in rows:
        r["flops_per_token"] = 6 * r["params_non_embedding"]
    fits = fit_families(rows)
    assert fits["gptoss"].compute.mode == "flops"
    assert [m.multiplier for m in multipliers_along(fits["gptoss"], fits["gpt2"], c)] == pytest.approx(
        [expected] * 3, rel=0.02
    )
    base = multipliers_along(fits["gpt2"], fits["gpt2"], c)
    assert [m.multiplier for m in base] == pytest.approx([1.0] * 3, rel=1e-6)


def test_flops_per_token_from_the_rows_is_interpolated_in_log_log():
    rows = [dict(params_non_embedding=n, flops_per_token=6 * n + 1e6) for n in (1e6, 1e7)]
    model = compute_model(rows)
    assert model.mode == "flops"
    assert model.flops(1e6, 10) == pytest.approx(7e7)
    # Beyond the last size the end segment is extended: the slope between the two sizes in log-log.
    slope = math.log(61e6 / 7e6) / math.log(10)
    assert model.flops(1e8, 1) == pytest.approx(61e6 * 10**slope)
    with pytest.raises(ValueError, match="compute must be"):
        compute_model(rows, "kaplan")


def _with_holdout():
    rng = np.random.default_rng(5)
    sizes = SIZES + [1e8]
    return law_rows("gpt2", TRUE, sizes=sizes, noise=0.002, rng=rng) + law_rows(
        "gptoss", Law(1.55, 300.0, 1500.0, 0.35, 0.4), sizes=sizes, noise=0.002, rng=rng
    )


def test_a_held_out_size_is_predicted_within_its_interval_and_checked():
    rows = _with_holdout()
    held = "L4-d320-h4"  # the fifth size, 1e8 parameters
    before = [r for r in rows if not (r["d_model"] == 320)]
    preds = predict(
        before, dict(size=held, budget=BUDGETS[-1], params_non_embedding=dict(gpt2=1e8, gptoss=1e8)), samples=50
    )
    text = predictions_json(preds)
    back = load_predictions(text)
    assert back == json.loads(text)
    for fam in ("gpt2", "gptoss"):
        p = back["families"][fam]
        assert p["fitted_on"]["sizes"] == SIZES and p["extrapolated_in_size"]
        assert p["interval"][0] < p["fit_interval"][0] <= p["predicted_loss"] <= p["fit_interval"][1] < p["interval"][1]
        assert p["seed_std"] == pytest.approx(0.002 * p["predicted_loss"], rel=0.3)  # the rows' noise, in nats
    checks = {c["family"]: c for c in prediction_check(back, rows)}
    for fam, c in checks.items():
        assert c["seeds"] == 3
        assert abs(c["error_nats"]) < 0.01, (fam, c)
        assert c["inside"], c
    # Before the held-out trials have run there is nothing to compare with.
    assert all(c["reason"] == "not measured yet" for c in prediction_check(back, before))
    fits = {f: LawFit(f, None, reason="not fitted in this test") for f in ("gpt2", "gptoss")}
    text = "\n".join(size_section(rows, "gpt2", back, fits=fits))
    assert "### Prediction check" in text and "Held out: size L4-d320-h4" in text
    assert text.count("| yes |") == 2 and "a mean of 3 seeds: the 95% t half-width" in text


def test_predictions_file_is_checked_on_load():
    with pytest.raises(ValueError, match="not valid JSON"):
        load_predictions("{")
    with pytest.raises(ValueError, match="not a predictions file"):
        load_predictions(json.dumps(dict(format="other")))
    with pytest.raises(ValueError, match="holdout needs a size"):
        predict(law_rows("g", TRUE), dict(budget=1e8))


def test_the_size_section_renders_with_and_without_a_fit():
    rows = law_rows("gpt2", TRUE, seeds=(0, 1), val_tokens=131072) + law_rows(
        "gptoss", Law(1.55, 300.0, 1500.0, 0.35, 0.4), seeds=(0, 1), val_tokens=131072
    )
    fits = fit_families(rows)
    lines = size_section(rows, "gpt2", fits=fits)
    text = "\n".join(lines)
    assert lines[0] == "## Size"
    assert "over 131,072 validation tokens" in text
    assert "range over all 3 distinct resamples of 2 seeds" in text
    assert "compute multiplier over gpt2" in text and "extrapolated (compute)" in text
    assert "size_multiplier.png" in text
    few = [r for r in rows if r["params_non_embedding"] in SIZES[:2]]
    text = "\n".join(size_section(few, "gpt2"))
    assert "no fit (2 size(s)" in text and "validation loss" in text
    assert "Compute-optimal" not in text
    plots = size_plots(rows, "gpt2", fits=fits)
    assert all(png.startswith(b"\x89PNG") for png in plots.values()) and len(plots) == 3


def test_a_prediction_reads_n_from_the_rows_when_the_held_out_size_has_run():
    rows = law_rows("gpt2", TRUE, seeds=(0,))  # one seed: a prediction, but no interval to check it against
    preds = predict(rows, dict(size="L4-d256-h4", budget=BUDGETS[-1]))
    p = preds["families"]["gpt2"]
    assert p["params_non_embedding"] == SIZES[-1] and p["fitted_on"]["sizes"] == SIZES[:3]
    assert p["predicted_loss"] == pytest.approx(float(TRUE.loss(SIZES[-1], BUDGETS[-1])), rel=1e-3)
    assert p["interval"] is None and "no interval" in p["interval_method"]
    (check,) = prediction_check(preds, rows)
    assert check["inside"] is None and abs(check["error_nats"]) < 3e-3
    missing = predict(rows, dict(size="L8-d512-h8", budget=BUDGETS[-1]))["families"]["gpt2"]
    assert missing["predicted_loss"] is None and "give holdout params_non_embedding" in missing["reason"]


def test_the_effective_data_option_recovers_a_law_in_effective_tokens():
    # Losses made from the law in D' (1e9 unique tokens: the largest budget is 6.4 epochs); read with the correction
    # the law comes back, read as if every token were fresh it does not.
    u = 1e9
    rows = law_rows("g", TRUE, seeds=(0,), unique_tokens=u)
    for r in rows:
        r["final_val_loss"] = float(TRUE.loss(r["params_non_embedding"], effective_tokens(r["tokens"], u)))
    corrected = fit_family(rows, effective_data=True)
    assert corrected.law.beta == pytest.approx(TRUE.beta, rel=1e-3) and corrected.law.E == pytest.approx(
        TRUE.E, rel=1e-3
    )
    assert fit_family(rows).law.E > TRUE.E * 1.01  # repeated tokens read as fresh: a higher floor
    text = "\n".join(size_section(rows, "g", effective_data=True))
    assert "effective tokens D'" in text and "| 6.4 | g |" in text  # the epochs of the largest budget


def test_interval_methods_follow_the_number_of_distinct_resamples():
    assert [distinct_resamples(n) for n in (1, 2, 3, 4, 5)] == [1, 3, 10, 35, 126]
    assert "no interval" in interval_method(1)
    assert "range over all 10 distinct resamples" in interval_method(3)
    assert "exact over all 35 distinct resamples" in interval_method(4)
    assert "200 random resamples of 462 distinct" in interval_method(6)
    # Few draws: the whole range. Many: the weighted 2.5% and 97.5% points.
    assert weighted_interval([3.0, 1.0, 2.0], [0.2, 0.3, 0.5]) == (1.0, 3.0)
    values = np.arange(100.0)
    assert weighted_interval(values, np.ones(100)) == (2.0, 97.0)
    skewed = np.where(values < 50, 1.0, 3.0)  # the lower half a third as likely: the 2.5% point moves from 2 to 4
    assert weighted_interval(values, skewed)[0] == 4.0
    assert weighted_interval([np.nan], [1.0]) is None


def test_families_with_different_seeds_get_independent_resamples():
    rng = np.random.default_rng(7)
    x_law = Law(E=TRUE.E, A=TRUE.A / 2, B=TRUE.B / 2, alpha=TRUE.alpha, beta=TRUE.beta)
    rows = law_rows("gpt2", TRUE, seeds=(0, 1, 2), noise=0.002, rng=rng) + law_rows(
        "gptoss", x_law, seeds=(5, 6), noise=0.002, rng=rng
    )
    fits = fit_families(rows)
    (m,) = multipliers_along(fits["gptoss"], fits["gpt2"], [1e16])
    # 3 x 10 pairs of draws: at least 20, so a 95% interval, which holds the point estimate.
    assert m.interval[0] < m.multiplier < m.interval[1]
    gamma = TRUE.alpha * TRUE.beta / (TRUE.alpha + TRUE.beta)
    assert m.multiplier == pytest.approx(2 ** (1 / gamma), rel=0.15)
