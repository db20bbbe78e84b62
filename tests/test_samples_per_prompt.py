"""Tests of ustat_grpo.measurement.samples_per_prompt: samples per prompt chosen from the pilot's own samples."""
import math

import numpy as np
import pytest

from simulations.samples_per_prompt import repeated_pilots, variance_with_se
from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.scaling.constants import _constants_from_pieces, prompt_pieces
from ustat_grpo.measurement.samples_per_prompt import (_fit, _optimum, choose_samples_per_prompt, hoeffding_basis,
                                     jackknife_constants)
from ustat_grpo.core.testing import bonferroni_z


def test_closed_form_jackknife_equals_removing_each_prompt():
    rng = np.random.default_rng(0)
    s = default_bandit().sample(12, 9, rng=rng)
    g, g2, st, zzq = prompt_pieces(s.rewards, s.scores)
    fast = jackknife_constants(g, g2, st + g2)
    for p in range(12):
        keep = np.arange(12) != p
        A = _constants_from_pieces(g[keep], g2[keep], st[keep], zzq[keep], None)   # the naive twin
        np.testing.assert_allclose(fast[p], A[[0, 2]], rtol=1e-12, atol=1e-15)


def test_hoeffding_basis_is_the_falling_factorial():
    m = np.array([4, 7, 30])
    want = np.stack([np.ones(3), 1 / m, 1 / (m * (m - 1)), 1 / (m * (m - 1) * (m - 2)),
                     1 / (m * (m - 1) * (m - 2) * (m - 3))], -1)
    np.testing.assert_allclose(hoeffding_basis(m), want, rtol=1e-14)


def test_fit_recovers_exact_coefficients_and_the_optimum_is_the_argmin():
    coef = np.array([0.3, 2.0, 50.0, 0.0, 400.0])
    sizes = np.array([4, 5, 6, 8, 11, 16, 23, 32])
    np.testing.assert_allclose(_fit(sizes, hoeffding_basis(sizes) @ coef), coef, rtol=1e-9, atol=1e-9)
    m = np.arange(4, 201)
    assert _optimum(coef, 200) == m[np.argmin(m * (hoeffding_basis(m) @ coef))]
    # the truncation a + b2/(M(M-1)): M v(M) = a M + b2/(M-1) is smallest at M - 1 = sqrt(b2/a)
    a, b2 = 0.5, 0.5 * 19.0 ** 2
    assert _optimum(np.array([a, 0, b2, 0, 0]), 200) == 20
    assert _optimum(np.array([1.0, 0, 0, 0, 0]), 64) == 4          # only prompt-to-prompt variance: smallest M
    assert _optimum(np.array([0, 0, 1.0, 0, 3.0]), 64) == 64       # only higher-order within-prompt noise: largest M


def test_rejects_pilots_it_cannot_use():
    rng = np.random.default_rng(1)
    s = default_bandit().sample(16, 4, rng=rng)
    with pytest.raises(ValueError, match="at least 5 samples"):
        choose_samples_per_prompt(s.rewards, s.scores)
    z, w = np.ones((16, 8)), rng.standard_normal((16, 8, 2))        # equal rewards: g = 0, A1 = A3 = 0
    with pytest.raises(ValueError, match="subsample sizes"):
        choose_samples_per_prompt(z, w, subsample_sizes=[4, 6, 8])
    with pytest.raises(ValueError, match="must be positive"):
        choose_samples_per_prompt(z, w)


def test_predicted_variance_matches_repeated_pilots_and_a_model_without_the_1_over_m_terms_does_not():
    # one pilot of 8192 x 32 on the toy bandit predicts Var(log G*-hat) of a 128 x 64 pilot (M twice
    # the pilot's); 600 independent 128 x 64 pilots measure it.  z uses both standard errors (the
    # prediction's from its jackknife over prompts, the Monte Carlo's from the fourth moment).  The
    # prediction is first order in 1/P; at P = 128 the simulation measured the variance of 1500 pilots
    # 19% above it on this bandit, inside the bound (z = -1.7).
    policy = default_bandit()
    s = policy.sample(8192, 32, rng=np.random.default_rng(20260115))
    res = choose_samples_per_prompt(s.rewards, s.scores, rng=7)
    mc, se = variance_with_se(repeated_pilots(policy, 128, 64, 600, rng=np.random.default_rng(31)))
    pred, spred = float(res.variance(128, 64)), float(res.standard_error(128, 64))
    bound = bonferroni_z(1e-6, 2)                                    # two claims: the model and its control
    z = (pred - mc) / math.hypot(se, spred)
    assert abs(z) <= bound, (pred, spred, mc, se)
    # negative control: no 1/M terms, v(M) = v(M0) (the variance would depend on the prompts only)
    wrong = float(res.per_prompt_variance(32)) / 128
    assert abs((wrong - mc) / math.hypot(se, spred)) > bound
    # the measured optimum lies above the pilot's M on this bandit (A1 is small: more samples per prompt)
    assert res.optimum > 32 and res.ratio > 1.0


def test_bench_pilot_prices_a_bandit_pilot(capsys):
    # simulations/bench_pilot.py on the toy bandit (the rule waits for 128 prompts)
    from simulations import bench_pilot as mod

    bandit, fixed = mod.benchmark(mod.Config(sources="bandit", target=0.8, max_prompts=1024, seed=1))
    assert 128 <= bandit.num_prompts < 1024 and bandit.rollouts == 16 * bandit.num_prompts
    assert bandit.fraction_of_run == bandit.rollouts / 819_200
    assert fixed.rollouts == 32_000 and math.isclose(fixed.fraction_of_grid, 32_000 / (6 * 819_200))
    lo, hi = bandit.interval
    assert bandit.reached and (hi - lo) / bandit.g_star <= 0.8
    # a cap below what the width needs is reported as such, not as success
    capped, _ = mod.benchmark(mod.Config(sources="bandit", samples_per_prompt=8, target=0.3, max_prompts=128))
    assert capped.num_prompts == 128 and not capped.reached
    assert "cap hit" in mod.render([capped], mod.Config())
    assert mod.main(["--sources", "nope"]) == 2
    assert "unknown source" in capsys.readouterr().err
