"""Tests of ustat_grpo.recommendation.recommend (the typed Recommendation) and ustat_grpo.measurement.measure."""
import dataclasses
import json
import math

import numpy as np
import pytest

from ustat_grpo.recommendation import report
from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.scaling.grid_fit import fit_mse_grid
from ustat_grpo.measurement.measure import bandit_mse_grid
from ustat_grpo.scaling.optimum import integer_optimum, mse_design
from ustat_grpo.scaling.performance import fit_performance_table
from ustat_grpo.recommendation.recommend import Recommendation, recommend

#: the stable JSON keys of ``fit_scaling --format json`` for MSE-type inputs (documented in --help)
STABLE_KEYS = {"A1", "A2", "A3", "A1_interval", "A2_interval", "A3_interval", "c1", "c2", "c3",
               "c1_interval", "c2_interval", "c3_interval", "g_star_paper", "g_star_paper_interval",
               "g_star_exact", "g_star_exact_interval", "g_star_integer", "g_star_integer_interval",
               "budget", "form", "recommendation", "mse_table", "warnings", "kind", "level", "curve"}


def _grid(A, budget=256, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    G = np.array([2, 4, 8, 16, 32, 64])
    B = budget // G
    mu = mse_design(B, G) @ np.asarray(A, float)
    return B, G, mu * (1 + noise * rng.standard_normal(len(G))), 0.02 * mu


@pytest.mark.parametrize("divisors_only", [False, True])
def test_recommendation_matches_brute_force_on_the_true_curve(divisors_only):
    A = np.array([0.01, 0.4, 0.49])                           # G*_exact = 1 + 7 = 8
    rec = recommend(fit_mse_grid(*_grid(A)), budget=96, divisors_only=divisors_only)
    # independent: evaluate the exact fixed-budget MSE over every admissible integer G
    gs = [g for g in range(2, 97) if not divisors_only or 96 % g == 0]
    mse = mse_design(96 / np.array(gs, float), np.array(gs, float)) @ A
    assert rec.num_generations == gs[int(np.argmin(mse))]
    assert rec.num_generations == integer_optimum(A[2] / A[0], budget=96, divisors_only=divisors_only)
    assert rec.g_star == pytest.approx(8.0, rel=1e-6) and rec.interior
    rows = {r.num_generations: r for r in rec.mse_table}
    assert min(r.relative for r in rec.mse_table) == pytest.approx(1.0)
    assert rows[rec.num_generations].relative == pytest.approx(1.0)
    div = rec.best_divisor
    divs = np.array([g for g in range(2, 97) if 96 % g == 0], float)
    assert div.num_generations == int(divs[np.argmin(mse_design(96 / divs, divs) @ A)])


def test_to_dict_is_json_safe_with_stable_keys_and_infinities():
    # A1 = 0: no interior optimum, the Fieller set is unbounded -> "inf" strings, strict JSON
    B, G, y, se = _grid([0.0, 0.4, 0.4], noise=0.02, seed=3)
    rec = recommend(fit_mse_grid(B, G, y, 10 * se), budget=256)  # noisy cells: A1 not significant
    d = rec.to_dict()
    assert STABLE_KEYS <= set(d)
    text = json.dumps(d, allow_nan=False)                      # no NaN/Infinity tokens
    assert not rec.interior and d["g_star_exact_interval"][1] == "inf"
    assert json.loads(text) == d
    assert "no interior optimum" in report.render_text(rec)


def test_recommendation_is_frozen_and_summarises():
    rec = recommend(fit_mse_grid(*_grid([0.01, 0.4, 0.49])), budget=256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.num_generations = 3
    assert str(rec) == rec.summary() and f"G = {rec.num_generations}" in rec.summary()
    assert isinstance(rec, Recommendation) and rec.kind == "mse"


def test_paper_form_uses_the_paper_fit():
    B, G, y, se = _grid([0.01, 0.4, 0.49])
    rec = recommend(fit_mse_grid(B, G, y, se), budget=256, form="paper",
                    paper_fit=fit_mse_grid(B, G, y, se, form="paper"))
    assert rec.model.form == "paper" and rec.optimum.form == "paper"
    assert rec.g_star == pytest.approx(rec.optimum.g_star_paper)
    d = rec.to_dict()
    assert d["c1"] == pytest.approx(float(rec.model.params[0])) and d["form"] == "paper"


def test_performance_recommendation_renders_without_json():
    table = np.array([[0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743],
                      [0.7703, 0.7679, 0.7697, 0.7793, 0.7819, 0.7665],
                      [0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]])
    G, N = np.tile([4, 8, 16, 32, 64, 128], 3), np.repeat([1024, 2048, 4096], 6)
    fit = fit_performance_table(N, G, table.ravel(), rng=0, n_boot=200)
    rec = recommend(fit, observed={"budget": N, "num_generations": G, "score": table.ravel()})
    assert rec.kind == "performance" and rec.num_generations is None
    d = rec.to_dict()
    assert d["recommendation"] == {"num_generations": None, "distinguishable": False, "group_size_matters": False,
                                   "reason": "the table cannot distinguish the candidate group sizes "
                                             "(differences within run-to-run noise)"}
    json.dumps(d, allow_nan=False)
    assert "cannot distinguish" in report.render_text(rec)
    # the figure's curve is the fit's own prediction
    u = math.log2(16)
    assert fit.predict([16], budget=2048)[0] == pytest.approx(fit.params[1] + fit.params[-2] * u + fit.params[-1] * u * u)


def test_bandit_grid_cells_do_not_depend_on_each_other():
    policy = default_bandit()
    small = bandit_mse_grid(policy, 32, 50, rng=7, max_group_size=8)      # G = 2, 4, 8
    full = bandit_mse_grid(policy, 32, 50, rng=7)                          # G = 2, 4, 8, 16, 32
    assert full.num_generations.tolist() == [2, 4, 8, 16, 32]
    np.testing.assert_array_equal(small.mse, full.mse[:3])
    other = bandit_mse_grid(policy, 32, 50, rng=8, max_group_size=8)
    assert not np.array_equal(small.mse, other.mse)


def test_heavy_tailed_prompts_are_flagged_and_light_tailed_ones_are_not():
    from ustat_grpo.scaling.constants import estimate_constants
    from ustat_grpo.recommendation.recommend import CONCENTRATION_WARNING, recommend

    rng = np.random.default_rng(3)
    P, M, d = 200, 8, 5
    z = (rng.random((P, M)) < 0.5).astype(float)
    mu = rng.normal(size=(P, 1, d))
    light = estimate_constants(z, mu * z[..., None] + rng.normal(size=(P, M, d)))      # g(x) = mu(x) Var Z
    mu_heavy = mu.copy()
    mu_heavy[:4] *= 30.0                                  # 2% of prompts with huge gradients
    heavy = estimate_constants(z, mu_heavy * z[..., None] + rng.normal(size=(P, M, d)))
    assert light.concentration < CONCENTRATION_WARNING < heavy.concentration
    warn = [w for w in recommend(heavy, budget=64).warnings if w.startswith("heavy-tailed prompts")]
    assert len(warn) == 1 and f"{heavy.concentration:.0%}" in warn[0]
    assert not [w for w in recommend(light, budget=64).warnings if w.startswith("heavy-tailed")]
