"""Tests of simulations/adaptive_pilot.py: the pool-resampling world of ``--source lm``.

The coverage check on the built-in model resamples one stored pool (``PoolSampler``) and takes
``pool_truth`` as the truth.  These tests pin that argument down: subsampled per-prompt pieces are
unbiased for the pool's (exactly, by enumeration; and through the sampler, by Monte Carlo), and a
pilot's constants are unbiased for ``pool_truth``, not for the other ``O(1/P0)`` formulas.
"""
import itertools
import json

import numpy as np

from simulations.adaptive_pilot import Config, PoolSampler, pool_truth, simulate, write_output
from ustat_grpo.scaling.constants import _constants_from_pieces, prompt_pieces, prompt_statistics
from ustat_grpo.core.provenance import provenance_attrs
from ustat_grpo.core.testing import assert_mc_close, bonferroni_z, mc_z


def _pool(rng, P0, M0, d, spread=1.0):
    """Binary rewards with prompt-dependent success rates, scores correlated with them."""
    p = rng.uniform(0.2, 0.8, size=(P0, 1))
    z = (rng.uniform(size=(P0, M0)) < p).astype(float)                      # (P0, M0)
    shift = spread * rng.standard_normal((P0, 1, d))                         # prompt-specific g(x)
    w = rng.standard_normal((P0, M0, d)) + z[..., None] * shift              # (P0, M0, d)
    return z, w


def _flat(pieces):
    g, g2, st, zzq = pieces
    return np.concatenate([g, g2[:, None], st[:, None], zzq[:, None]], axis=1)  # (P, d + 3)


def test_subsample_pieces_average_to_the_pool_pieces_exactly():
    """Mean over all C(M0, m) subsets of a prompt's samples = the full-sample U-statistics (1e-12)."""
    rng = np.random.default_rng(20260513)
    z, w = _pool(rng, 3, 8, 2)
    full = _flat(prompt_pieces(z, w))
    subsets = np.array(list(itertools.combinations(range(8), 5)))            # (56, 5)
    sub = np.stack([_flat(prompt_pieces(z[:, s], w[:, s])) for s in subsets])  # (56, P0, d + 3)
    np.testing.assert_allclose(sub.mean(0), full, rtol=1e-12, atol=1e-12)


def test_pool_sampler_pieces_are_unbiased_for_the_pool():
    """Through PoolSampler (one pool prompt): the mean of subsampled pieces over 4000 seeded draws
    is within a Bonferroni z bound (alpha 1e-6, 6 comparisons) of the full-pool pieces, with the
    Monte Carlo standard error sd / sqrt(n); the negative control, ||g_pool||^2 in place of the
    order-4 U-statistic G2 (the "natural" truth of ||g(x)||^2), is rejected."""
    rng = np.random.default_rng(513)
    z, w = _pool(rng, 1, 12, 3)
    sampler = PoolSampler(z, w, 5)
    n = 4000
    draws = np.stack([_flat(prompt_pieces(*(a[None] for a in sampler(i, s))))[0]
                      for i, s in enumerate(np.random.SeedSequence(7).spawn(n))])  # (n, d + 3)
    full = _flat(prompt_pieces(z, w))[0]
    se = draws.std(0, ddof=1) / np.sqrt(n)
    assert_mc_close(draws.mean(0), se, full)
    g = full[:3]
    wrong = full.copy()
    wrong[3] = g @ g
    assert abs(mc_z(draws.mean(0)[3], se[3], wrong[3])) > bonferroni_z(1e-6, 6)


def test_pilot_constants_are_unbiased_for_pool_truth():
    """Pilots of 6 prompts resampled from a 5-prompt pool: the mean of their unbiased A1..A3 over
    3000 pilots equals pool_truth (Bonferroni z, 3 comparisons); the negative control, the
    sampled-prompts formula on the pool (its P0/(P0-1) treats the pool as a sample of a larger
    population), is rejected for A1.  (The fixed-prompt-set formula, G2_x instead of ||g_x||^2 in
    the diagonal of ||mean g||^2, differs by O(1/(P0^2 M0)) per prompt, below this test's resolution.)"""
    rng = np.random.default_rng(1305)
    z, w = _pool(rng, 5, 10, 2, spread=2.0)
    sampler = PoolSampler(z, w, 5)
    reps = []
    for seq in np.random.SeedSequence(11).spawn(3000):
        draws = [sampler(p, s) for p, s in enumerate(seq.spawn(6))]
        st = prompt_statistics(np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws]))
        reps.append(_constants_from_pieces(st.g, st.g_norm2, st.sigma2_trI, st.zzq, None))
    reps = np.array(reps)                                                    # (R, 3)
    se = reps.std(0, ddof=1) / np.sqrt(len(reps))
    truth = pool_truth(z, w)
    assert_mc_close(reps.mean(0), se, truth)
    pieces = prompt_pieces(z, w)
    sampled = _constants_from_pieces(*pieces, None)[0]
    z_wrong = mc_z(reps.mean(0)[0], se[0], sampled)
    assert abs(z_wrong) > bonferroni_z(1e-6, 3), z_wrong


def test_simulate_lm_source_on_a_cached_pool(tmp_path):
    """``--source lm`` runs run_pilot + width_rule on a cached pool (no model call) and reports per pilot."""
    rng = np.random.default_rng(31)
    z, w = _pool(rng, 40, 16, 4, spread=2.0)
    cfg = Config(source="lm", replicates=3, target=5.0, min_prompts=16, max_prompts=48,
                 pool_cache=str(tmp_path / "pool.npz"), pool_prompts=40, pool_samples=16, projection_dim=4)
    keys = ("variant", "pool_prompts", "pool_samples", "projection_dim", "pool_seed")
    meta = provenance_attrs(seed=0, config={k: getattr(cfg, k) for k in keys}, command="test")
    np.savez(tmp_path / "pool.npz", rewards=z, scores=w, provenance=json.dumps(meta))
    out = simulate(cfg)
    assert out["batch_size"] == 16 and out["max_prompts"] == 48
    assert out["intervals"].shape == (3, 3) and out["hits"].shape == (3,)
    assert np.all((out["sizes"] >= 16) & (out["sizes"] <= 48))
    A = pool_truth(z, w)
    assert out["g_true"] == 1 + np.sqrt(A[2] / A[0])
    import xarray as xr

    write_output(cfg, out, str(tmp_path / "out.nc"))
    ds = xr.load_dataset(tmp_path / "out.nc", engine="h5netcdf")
    np.testing.assert_array_equal(ds["num_prompts"].values, out["sizes"])
    assert ds.attrs["g_true"] == out["g_true"] and json.loads(ds.attrs["config"])["source"] == "lm"


def test_ratio_interval_compare_runs_three_intervals_on_the_same_pilots():
    """simulations/ratio_interval_compare.py: every method gives an ordered, non-negative interval."""
    from simulations.ratio_interval_compare import Config as CmpConfig, METHODS, simulate as cmp_simulate

    out = cmp_simulate(CmpConfig(source="bandit", num_prompts=64, replicates=3, bootstrap=49))
    assert set(out["intervals"]) == set(METHODS)
    for v in out["intervals"].values():
        assert v.shape == (3, 2) and np.all(v[:, 0] <= v[:, 1]) and np.all(v[:, 0] >= 0)


def test_adaptive_pilot_help_and_interval_option(capsys):
    """--help works (a bare '%' in a help string broke argparse) and --interval is threaded."""
    import pytest

    from simulations.adaptive_pilot import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "fieller_skew" in capsys.readouterr().out
    out = simulate(Config(replicates=2, max_prompts=160, interval="fieller_skew", fixed_prompts=130))
    assert out["fixed_prompts"] == 130 and out["intervals"].shape == (2, 3)


def test_stored_lm_coverage_is_within_the_binomial_band_of_nominal():
    """The committed adaptive-pilot runs on the built-in models (strong and weak; the defaults of
    ``fit_scaling --target-width``: M = 8, at least 512 and at most 1024 prompts; target 0.5; seeds
    0 and 1000; ``simulations/adaptive_pilot.py``) re-analysed: each interval's hit recomputed from
    its bounds and the truth, the Clopper-Pearson interval of each model's 600 pilots contains 0.95,
    and a pilot's median cost is under 1% of one Table-2 training run (800 x 1024 rollouts)."""
    import os

    import xarray as xr
    from scipy import stats

    from ustat_grpo.measurement.pilot import ADAPTIVE_MAX_PROMPTS, ADAPTIVE_MIN_PROMPTS, ADAPTIVE_SAMPLES_PER_PROMPT

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "results")
    counts = {}
    for variant in ("strong", "weak"):
        hits, rollouts = [], []
        for seed in (0, 1000):
            ds = xr.load_dataset(os.path.join(root, f"adaptive_pilot_lm_{variant}_seed{seed}.nc"), engine="h5netcdf")
            cfg = json.loads(ds.attrs["config"])
            assert (cfg["source"], cfg["variant"], cfg["samples_per_prompt"], cfg["min_prompts"], cfg["max_prompts"],
                    cfg["target"], cfg["seed"]) == ("lm", variant, ADAPTIVE_SAMPLES_PER_PROMPT, ADAPTIVE_MIN_PROMPTS,
                                                    ADAPTIVE_MAX_PROMPTS, 0.5, seed)
            g = ds.attrs["g_true"]
            hit = (ds["low"].values <= g) & (g <= ds["high"].values)
            np.testing.assert_array_equal(hit, ds["covers"].values.astype(bool))
            hits.append(hit)
            rollouts.append(ds["num_prompts"].values * cfg["samples_per_prompt"])
        hits = np.concatenate(hits)
        counts[variant] = (hits.size, int(hits.sum()))
        ci = stats.binomtest(int(hits.sum()), hits.size).proportion_ci(0.95, method="exact")
        assert ci.low <= 0.95 <= ci.high, (variant, counts[variant])
        assert np.median(np.concatenate(rollouts)) < 0.01 * 800 * 1024
    assert counts == {"strong": (600, 569), "weak": (600, 572)}
