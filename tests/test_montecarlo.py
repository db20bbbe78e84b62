"""Tests for ustat_grpo.experiments.montecarlo: streams, exactness of the Monte Carlo MSE, resume, merge, I/O."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr

from ustat_grpo.experiments import finite_action
from ustat_grpo.experiments import montecarlo as mc
from ustat_grpo.policies.bandits import ContextualSoftmaxBandit, GaussianPolicyBandit, Sample, SoftmaxBandit
from ustat_grpo.core.provenance import write_netcdf
from ustat_grpo.core.testing import assert_mc_close

DATA_VARS = ("count", "mse", "m2", "mse_se", "exact")


# ---------------------------------------------------------------------------- private test policy

@dataclass(frozen=True)
class _Moments:
    prompt_probs: np.ndarray
    value: np.ndarray
    grad: np.ndarray


class ProtocolOnlyPolicy:
    """A finite policy that offers only the architecture protocol (no softmax attributes).

    ``P`` prompts, outputs ``y in {0..K-1}`` with probabilities ``probs[x]``, arbitrary score
    vectors ``table[x, y]`` (d = 2) and deterministic rewards ``reward[x, y]``.  The engine does not
    need ``E[W | x] = 0``, so the table need not be a true score.
    """

    def __init__(self):
        self.prompt_probs = np.array([0.3, 0.7])
        self.probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
        self.table = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]],
                               [[0.5, 0.5], [2.0, -1.0], [0.0, -0.5]]])
        self.reward = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.5]])
        self.theta = np.zeros(2)

    def moments(self, theta=None):
        value = (self.probs * self.reward).sum(-1)
        grad = np.einsum("pk,pkd->pd", self.probs * self.reward, self.table)
        return _Moments(self.prompt_probs, value, grad)

    def gradient(self, theta=None):
        return self.prompt_probs @ self.moments().grad

    def sample(self, num_prompts, num_generations, *, rng, theta=None):
        lead = np.shape(theta)[:-1] if theta is not None and np.ndim(theta) == 2 else ()
        x = rng.choice(2, size=lead + (num_prompts,), p=self.prompt_probs)
        u = rng.random(x.shape + (num_generations,))
        y = (u[..., None] > np.cumsum(self.probs[x], -1)[..., None, :]).sum(-1).clip(0, 2)
        xg = np.broadcast_to(x[..., None], y.shape)
        return Sample(rewards=self.reward[xg, y], scores=self.table[xg, y], prompt_ids=x)


# module-level estimators (picklable) for the custom-estimator paths
def est_vanilla(rewards, scores, *, values=None):
    return np.einsum("...g,...gd->...d", rewards, scores) / rewards.shape[-1]


def est_loo(rewards, scores, *, values=None):
    G = rewards.shape[-1]
    c = rewards - rewards.mean(-1, keepdims=True)
    return np.einsum("...g,...gd->...d", c, scores) / (G - 1)


def est_oracle(rewards, scores, *, values=None):
    return np.einsum("...g,...gd->...d", rewards - values[..., None], scores) / rewards.shape[-1]


def est_median_baseline(rewards, scores, *, values=None):
    """Not affine in the rewards: exercises the semi-generic part of the fast path."""
    c = rewards - np.median(rewards, axis=-1, keepdims=True)
    return np.einsum("...g,...gd->...d", c, scores) / rewards.shape[-1]


CUSTOM = {"vanilla": est_vanilla, "leave_one_out": est_loo, "oracle": est_oracle}


def enumerated_mse(probs, table, reward, prompt_probs, estimator, G, B):
    """Exact minibatch MSE by enumerating every group of G outputs (finite, deterministic rewards).

    With ``Y = g_hat(X)`` for one prompt, the minibatch mean of B i.i.d. copies has
    ``E||mean - g||^2 = ||E Y - g||^2 + (E||Y||^2 - ||E Y||^2) / B``.
    """
    P, K, d = table.shape
    g = np.einsum("p,pk,pkd->d", prompt_probs, probs * reward, table)
    values = (probs * reward).sum(-1)
    EY, EY2 = np.zeros(d), 0.0
    for x in range(P):
        for ys in itertools.product(range(K), repeat=G):
            p = prompt_probs[x] * np.prod(probs[x, list(ys)])
            est = estimator(reward[x, list(ys)], table[x, list(ys)], values=np.array(values[x]))
            EY += p * est
            EY2 += p * float(est @ est)
    return float((EY - g) @ (EY - g) + (EY2 - EY @ EY) / B)


def small_bandit():
    return SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])


def contextual_bandit():
    rng = np.random.default_rng(20260101)
    return ContextualSoftmaxBandit(rng.normal(size=(4, 3, 2)), success_probs=rng.random((4, 3)),
                                   prompt_probs=[0.1, 0.2, 0.3, 0.4], theta=[0.3, -0.2])


def data_equal(a, b):
    for v in DATA_VARS:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    for c in ("estimator", "num_generations", "num_prompts"):
        np.testing.assert_array_equal(a[c].values, b[c].values)


# ---------------------------------------------------------------------------- building blocks

def test_categorical_sampler_equals_searchsorted():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(9), size=4)
    probs[1] = [0.5, 0.5, 0, 0, 0, 0, 0, 0, 0]                    # empty categories
    probs[2] = [1e-6, 2e-6, 3e-6, 0.3, 0.7 - 6e-6, 0, 0, 0, 0]     # several CDF points in one bin
    sampler = finite_action._CategoricalSampler(probs)
    assert sampler.steps >= 3
    u = rng.random((4, 50_000))
    u[:, :3] = [0.0, 0.5, 1 - 2 ** -53]                            # edges
    ids = sampler(u, row=np.arange(4))                             # row broadcast along the last axis
    for x in range(4):
        naive = np.searchsorted(np.cumsum(probs[x])[:-1], u[x], side="right")
        np.testing.assert_array_equal(ids[x] - 9 * x, naive)
    per_element = sampler(u, row=np.broadcast_to(np.arange(4)[:, None], u.shape))
    np.testing.assert_array_equal(per_element, ids)


@pytest.fixture(params=["numba", "numpy"])
def kernel(request, monkeypatch):
    """Run a test with the numba kernel (ustat_grpo.experiments._numba_kernel; skipped without numba) and
    with the numpy path: they must give the same bits."""
    from ustat_grpo.experiments import _numba_kernel

    if request.param == "numpy":
        monkeypatch.setenv("USTAT_GRPO_NO_NUMBA", "1")
    elif _numba_kernel.load() is None:
        pytest.skip("numba is not installed")
    return request.param


def _one_prompt_policies():
    rng = np.random.default_rng(7)
    yield SoftmaxBandit([0.2, 0.9, 0.5, 0.7], theta=[0.0, 0.5, -0.5, 1.0])
    yield SoftmaxBandit(rng.uniform(size=10), theta=rng.normal(size=10))
    yield SoftmaxBandit([0.3, 0.6, 0.1], theta=[9.0, 0.0, -9.0])              # one arm ~ always
    yield SoftmaxBandit(rewards=[0.0, 1.0, 0.5], theta=[0.3, 0.1, -0.2])       # M = 1: no reward draws
    yield SoftmaxBandit(np.array([0.0, 1.0, 0.5]), theta=[0.0, 0.5, -0.5])     # rewards that never vary


@pytest.mark.parametrize("nbins, rbits", [(None, None), (16, None), (None, 1), (16, 2)])
def test_fused_one_prompt_sampler_equals_block_sampler(nbins, rbits, monkeypatch, kernel):
    """Same histogram and the same stream consumption as the unfused (per-pull) block sampler.

    ``nbins = 16`` leaves most arm bins undecided and ``rbits = 1, 2`` most reward bins, so most
    pulls go through the exact resolution.
    """
    if nbins is not None:
        monkeypatch.setattr(finite_action._OnePromptSampler, "NBINS", nbins)
    if rbits is not None:
        monkeypatch.setattr(finite_action._OnePromptSampler, "RBITS", rbits)
    for pol in _one_prompt_policies():
        fam = finite_action.FiniteActionModel.from_policy(pol)
        samplers = finite_action.samplers_for(fam)
        assert samplers[-2].kernel == kernel
        for R, B, G in [(50, 1, 64), (7, 3, 5), (40, 2, 1)]:
            ws = finite_action.workspace((R, B, G))
            a, b = np.random.default_rng(R * G + B), np.random.default_rng(R * G + B)
            fused = samplers[-2](a, R, B, G)
            np.testing.assert_array_equal(fused, finite_action._draw_histograms(fam, b, R, B, G, samplers, ws)[3])
            assert a.random() == b.random()                               # same draws consumed


def test_raw_words_are_the_uniforms():
    """The fused sampler reads words: ``Generator.random`` is ``(w >> 11) * 2**-53`` of the same
    words, and ``advance(n)`` consumes what ``n`` uniforms would."""
    a, b = np.random.default_rng(31), np.random.default_rng(31)
    u = a.random(1000)
    np.testing.assert_array_equal(u, (b.bit_generator.random_raw(1000) >> np.uint64(11)) * 2.0 ** -53)
    a.random(37)
    b.bit_generator.advance(37)
    np.testing.assert_array_equal(a.random(5), b.random(5))


def test_one_prompt_tables_equal_searchsorted():
    """The arm table of the fused sampler (runs of arms between change points) equals the naive
    per-bin searchsorted, also with CDF points on bin edges and empty arms."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        K = int(rng.integers(2, 30))
        p = rng.dirichlet(np.ones(K) * rng.uniform(0.05, 3))
        if trial % 3 == 0:
            p = np.round(p * 64) / 64                                  # CDF points on bin edges
            p[p == 0] = 1e-300                                         # (nearly) empty arms
            p /= p.sum()
        fam = finite_action.FiniteActionModel.from_policy(
            SoftmaxBandit(rng.uniform(size=K), theta=np.log(p)))
        one = finite_action.samplers_for(fam)[-2]
        nb, nr = one.NBINS, 2 ** one.RBITS
        edges = np.arange(nb) / nb
        lo = np.searchsorted(one.cdf, edges, side="right")
        hi = np.searchsorted(one.cdf, edges + 1.0 / nb, side="left")
        np.testing.assert_array_equal(one.arm_lut, np.where(hi == lo, lo, K) * nr)
        left = np.arange(nr) / nr                                      # reward table, row by row
        for a in range(K):
            f = fam.reward_probs[0, a, 0]
            want = np.where(left + 1 / nr <= f, 2 * a, np.where(left >= f, 2 * a + 1, 2 * K))
            np.testing.assert_array_equal(one.cell_lut[a * nr:(a + 1) * nr], want)
        assert (one.cell_lut[K * nr:] == 2 * K).all()


def test_block_errors_batched_equal_per_block_twin(monkeypatch, kernel):
    """Several blocks per call give, bit for bit, the errors of one ``errors_finite`` per block
    (unequal block sizes, B > 1, a non-power-of-two G, M = 1 and every affine estimator)."""
    names = ("vanilla", "leave_one_out", "oracle", "group_mean", "std_normalized")
    pols = [SoftmaxBandit([0.2, 0.9, 0.5, 0.7], theta=[0.0, 0.5, -0.5, 1.0]),
            SoftmaxBandit(rewards=[0.0, 1.0, 0.5], theta=[0.3, 0.1, -0.2])]
    for pol in pols:
        fam = finite_action.FiniteActionModel.from_policy(pol)
        for G, B, sizes in [(8, 1, [50, 50, 50, 13]), (5, 3, [40, 40, 7]), (16, 2, [1, 30])]:
            task = mc._Task(policy=pol, estimators=names, funcs=None, G=G, B=B, num_replicates=sum(sizes),
                            block_size=max(sizes), seed=0, gradient=fam.gradient(), values=fam.value(),
                            fam=fam, affine=frozenset(names))
            kids = np.random.SeedSequence(G * B).spawn(len(sizes))
            errors = finite_action.BlockErrors(task)
            assert errors.fused
            with np.errstate(all="ignore"):
                batched = errors([np.random.default_rng(k) for k in kids], sizes)
                samplers = finite_action.samplers_for(fam)
                twin = np.concatenate([finite_action.errors_finite(
                    task, np.random.default_rng(k), r, samplers, finite_action.workspace((r, B, G)))
                    for k, r in zip(kids, sizes)], axis=1)
            np.testing.assert_array_equal(batched, twin)
    # and through run_grid: one block per call vs the default batching, same bytes
    kw = dict(num_generations=(4, 7), num_prompts=(1, 2), num_replicates=2000, seed=12, block_size=150,
              estimators=names, scheduler="serial", progress=False)
    batched = mc.run_grid(pols[0], **kw)
    monkeypatch.setattr(finite_action.BlockErrors, "BATCH_GENERATIONS", 1)
    data_equal(batched, mc.run_grid(pols[0], **kw))


def test_pool_blocks_equals_chan_block_by_block():
    rng = np.random.default_rng(4)
    for sizes in ([64, 64, 64], [64, 64, 17], [5]):
        err = rng.exponential(size=(3, sum(sizes)))
        start = (np.zeros(3, np.int64), np.full(3, np.nan), np.full(3, np.nan))
        for acc in (start, mc._chan(*start, *mc._block_stats(rng.exponential(size=(3, 9))))):
            want, lo = acc, 0
            for r in sizes:
                want = mc._chan(*want, *mc._block_stats(err[:, lo:lo + r].copy()))
                lo += r
            got = mc._pool_blocks(acc, err, sizes)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)


def test_fast_path_histograms_match_stored_hash(kernel):
    """The stream -> histogram map of the fast path is pinned (integer counts: no BLAS in the hash)."""
    import hashlib
    pol = SoftmaxBandit([0.2, 0.9, 0.5, 0.7], theta=[0.0, 0.5, -0.5, 1.0])
    fam = finite_action.FiniteActionModel.from_policy(pol)
    samplers = finite_action.samplers_for(fam)
    R, B, G = 300, 2, 16
    h_fused, h_blocks = hashlib.sha256(), hashlib.sha256()
    for child in np.random.SeedSequence(2026).spawn(3):
        h_fused.update(np.asarray(samplers[-2](np.random.default_rng(child), R, B, G), np.int64).tobytes())
        hist = finite_action._draw_histograms(fam, np.random.default_rng(child), R, B, G, samplers,
                                              finite_action.workspace((R, B, G)))[3]
        h_blocks.update(np.asarray(hist, np.int64).tobytes())
    stored = "c71955d93fd84b75c280f292e6e5000abb4c736ecf4a0e944a004f15b6529f70"   # before the fused sampler
    assert h_fused.hexdigest() == h_blocks.hexdigest() == stored


def test_one_prompt_affine_errors_equal_einsum_twin(kernel):
    """The B = 1 shortcut (scalars, skipped products and zeros, 2**-k scaling) gives the same bits."""
    pol = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    fam = finite_action.FiniteActionModel.from_policy(pol)
    names = ("vanilla", "leave_one_out", "oracle", "group_mean", "std_normalized")
    samplers = finite_action.samplers_for(fam)
    for G in (5, 8):
        task = mc._Task(policy=pol, estimators=names, funcs=None, G=G, B=1, num_replicates=500,
                        block_size=500, seed=0, gradient=fam.gradient(), values=fam.value(), fam=fam,
                        affine=frozenset(names))
        grp = finite_action._groups(fam, np.random.default_rng(G), 500, 1, G, samplers, None, fused=True)
        values = np.broadcast_to(fam.value()[0], (500, 1))
        fast = list(range(len(names)))
        with np.errstate(all="ignore"):
            coefs = [finite_action._affine_coefficients(n, grp.zbar, lambda g=grp, G=G: g.std(G), values, G)
                     for n in names]
            mine = finite_action._affine_errors_one_prompt(task, grp, fast, values)
        ca, cc = np.stack([c[0] for c in coefs]), np.stack([c[1] for c in coefs])
        est = np.einsum("erb,rbd->erd", ca, grp.ZW) + np.einsum("erb,rbd->erd", cc, grp.NW)
        diff = est / G - task.gradient
        np.testing.assert_array_equal(mine, np.einsum("erd,erd->er", diff, diff))


def test_chan_pooling_equals_concatenation():
    rng = np.random.default_rng(2)
    a, b = rng.exponential(size=(3, 17)), rng.exponential(size=(3, 5)) + 1.0
    pooled = mc._chan(*mc._block_stats(a), *mc._block_stats(b))
    both = np.concatenate([a, b], axis=1)
    np.testing.assert_array_equal(pooled[0], 22)
    np.testing.assert_allclose(pooled[1], both.mean(1), rtol=1e-13)
    np.testing.assert_allclose(pooled[2], both.var(1) * 22, rtol=1e-12)
    empty = (np.zeros(3, np.int64), np.full(3, np.nan), np.full(3, np.nan))
    np.testing.assert_allclose(mc._chan(*empty, *mc._block_stats(a))[1], a.mean(1), rtol=1e-15)


def test_cell_streams_are_keyed_by_coordinates():
    s = mc.cell_seed_sequence(7, 8, 2)
    assert s.spawn_key == (8, 2)
    a = np.random.default_rng(mc.cell_seed_sequence(7, 8, 2).spawn(2)[1]).random(4)
    b = np.random.default_rng(mc.cell_seed_sequence(7, 8, 2).spawn(2)[1]).random(4)
    c = np.random.default_rng(mc.cell_seed_sequence(7, 2, 8).spawn(2)[1]).random(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------------------- correctness vs exact

def test_generic_path_matches_enumeration_and_negative_control():
    pol = ProtocolOnlyPolicy()
    Gs, Bs = (2, 3), (1, 4)
    ds = mc.run_grid(pol, estimators=CUSTOM, num_generations=Gs, num_prompts=Bs, num_replicates=20_000,
                     seed=11, scheduler="serial", progress=False, exact=None)
    assert ds.attrs["config"] and json.loads(ds.attrs["config"])["sampler"] == "generic"
    exact = np.array([[[enumerated_mse(pol.probs, pol.table, pol.reward, pol.prompt_probs, f, G, B)
                        for B in Bs] for G in Gs] for f in CUSTOM.values()])
    assert_mc_close(ds.mse.values, ds.mse_se.values, exact)
    # negative control: the paper's O(1/G^2) residual read as exactly A3/(BG^2) must be rejected
    wrong = exact.copy()
    mom = pol.moments()
    f = pol.prompt_probs
    sig2 = (pol.probs * pol.reward ** 2).sum(-1) - mom.value ** 2
    trI = np.einsum("pk,pkd,pkd->p", pol.probs, pol.table, pol.table)
    A3 = float(f @ (sig2 * trI + (mom.grad ** 2).sum(-1)))
    for j, G in enumerate(Gs):
        for k, B in enumerate(Bs):
            wrong[1, j, k] += A3 / (B * G * G) - A3 / (B * G * (G - 1))
    with pytest.raises(AssertionError):
        assert_mc_close(ds.mse.values, ds.mse_se.values, wrong)


def test_bandit_paths_match_exact_mse_and_each_other():
    pol = contextual_bandit()
    kw = dict(num_generations=(2, 8), num_prompts=(1, 3), num_replicates=20_000, seed=5,
              estimators=("vanilla", "leave_one_out", "oracle", "group_mean", "std_normalized"),
              scheduler="serial", progress=False)
    fast = mc.run_grid(pol, sampler="auto", **kw)
    slow = mc.run_grid(pol, sampler="generic", **kw)
    cfg = json.loads(fast.attrs["config"])
    assert cfg["sampler"] == "finite"
    assert set(cfg["affine_fast_path"]) == set(kw["estimators"])
    # both paths consume the stream in the same order (prompts, arms, rewards; inverse CDF), so
    # they agree to rounding; then the MC mean is judged against the exact MSE (mse.exact_mse)
    np.testing.assert_allclose(fast.mse.values, slow.mse.values, rtol=1e-10)
    known = fast.sel(estimator=["vanilla", "leave_one_out", "oracle", "group_mean"])
    assert_mc_close(known.mse.values, known.mse_se.values, known.exact.values)
    assert np.isnan(fast.exact.sel(estimator="std_normalized")).all()
    # negative control: swapping the exact values of grpo and oracle must fail
    swapped = known.exact.values[[0, 2, 1, 3]]
    with pytest.raises(AssertionError):
        assert_mc_close(known.mse.values, known.mse_se.values, swapped)


def test_fast_path_non_affine_estimator_falls_back_to_table_scores():
    pol = small_bandit()
    est = {"median": est_median_baseline, "vanilla": est_vanilla}
    kw = dict(estimators=est, num_generations=(3, 5), num_replicates=3000, seed=3, scheduler="serial",
              progress=False, exact=None)
    fast = mc.run_grid(pol, **kw)
    slow = mc.run_grid(pol, sampler="generic", **kw)
    assert json.loads(fast.attrs["config"])["affine_fast_path"] == ["vanilla"]
    np.testing.assert_allclose(fast.mse.values, slow.mse.values, rtol=1e-10)


def test_gaussian_policy_generic_matches_exact_mse():
    pol = GaussianPolicyBandit()
    ds = mc.run_grid(pol, num_generations=(4,), num_prompts=(1, 2), num_replicates=20_000, seed=8,
                     scheduler="serial", progress=False, estimators=("vanilla", "leave_one_out", "oracle"))
    assert json.loads(ds.attrs["config"])["sampler"] == "generic"
    assert_mc_close(ds.mse.values, ds.mse_se.values, ds.exact.values)
    with pytest.raises(AssertionError):            # negative control: B not divided out
        assert_mc_close(ds.mse.values, ds.mse_se.values, ds.exact.values * ds.num_prompts.values)


def test_exact_auto_uses_mse_module():
    from ustat_grpo.theory.mse import exact_mse

    pol = small_bandit()
    ds = mc.run_grid(pol, num_generations=(2, 4), num_prompts=(1, 3), num_replicates=10, seed=0,
                     scheduler="serial", progress=False)
    for e in ("vanilla", "leave_one_out", "oracle"):
        for G in (2, 4):
            for B in (1, 3):
                want = exact_mse(pol.moments(), e, G, B).total
                assert ds.exact.sel(estimator=e, num_generations=G, num_prompts=B) == want
    assert ds.exact.attrs["source"] == "ustat_grpo.theory.mse.exact_mse"


# ---------------------------------------------------------------------------- reproducibility

def test_same_seed_same_bytes_and_cells_independent_of_grid():
    pol = small_bandit()
    kw = dict(num_replicates=500, seed=42, scheduler="serial", progress=False, block_size=64)
    a = mc.run_grid(pol, num_generations=(2, 4, 8), num_prompts=(1, 2), **kw)
    b = mc.run_grid(pol, num_generations=(2, 4, 8), num_prompts=(1, 2), **kw)
    data_equal(a, b)
    part = mc.run_grid(pol, num_generations=(8, 4), num_prompts=(2,), **kw)   # other order, subset
    np.testing.assert_array_equal(part.mse.sel(num_generations=[4, 8]).values,
                                  a.mse.sel(num_generations=[4, 8], num_prompts=[2]).values)
    other = mc.run_grid(pol, num_generations=(2, 4, 8), num_prompts=(1, 2), **{**kw, "seed": 43})
    assert not np.array_equal(other.mse.values, a.mse.values)


def test_serial_and_process_pool_agree_exactly():
    pol = contextual_bandit()
    kw = dict(num_generations=(2, 4, 8), num_prompts=(1, 2), num_replicates=400, seed=9, progress=False)
    serial = mc.run_grid(pol, scheduler="serial", **kw)
    pool = mc.run_grid(pol, scheduler="processes", max_workers=2, **kw)
    data_equal(serial, pool)
    custom = dict(kw, estimators=CUSTOM, exact=None, num_generations=(2, 3))
    data_equal(mc.run_grid(ProtocolOnlyPolicy(), scheduler="serial", **custom),
               mc.run_grid(ProtocolOnlyPolicy(), scheduler="processes", max_workers=2, **custom))


def test_interrupted_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    pol = small_bandit()
    kw = dict(num_generations=(2, 4, 8), num_prompts=(1, 3), num_replicates=300, seed=4,
              scheduler="serial", progress=False, block_size=50)
    full = mc.run_grid(pol, **kw)

    real = mc._run_cell
    calls = []

    def interrupted_after_two(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((task.G, task.B))
        return real(task)

    monkeypatch.setattr(mc, "_run_cell", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        mc.run_grid(pol, checkpoint_dir=tmp_path, **kw)
    assert len(list(tmp_path.glob("cell-*.npz"))) == 2
    assert not list(tmp_path.glob("*.tmp*"))

    resumed_calls = []

    def counting(task):
        resumed_calls.append((task.G, task.B))
        return real(task)

    monkeypatch.setattr(mc, "_run_cell", counting)
    resumed = mc.run_grid(pol, checkpoint_dir=tmp_path, **kw)
    assert len(resumed_calls) == 4 and not set(resumed_calls) & set(calls)
    data_equal(full, resumed)
    # a different configuration must not reuse these checkpoints
    with pytest.raises(ValueError, match="different configuration"):
        mc.run_grid(pol, checkpoint_dir=tmp_path, **{**kw, "seed": 5})


def test_dask_local_cluster_agrees_with_serial():   # ~0.5 s: in the default run
    distributed = pytest.importorskip("distributed")
    pol = small_bandit()
    kw = dict(num_generations=(2, 4), num_prompts=(1, 2), num_replicates=300, seed=6, progress=False)
    serial = mc.run_grid(pol, scheduler="serial", **kw)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        by_client = mc.run_grid(pol, scheduler=client, **kw)
        by_address = mc.run_grid(pol, scheduler=cluster.scheduler_address, **kw)
    data_equal(serial, by_client)
    data_equal(serial, by_address)


# ---------------------------------------------------------------------------- I/O and merge

def test_netcdf_round_trip_and_provenance(tmp_path):
    pol = small_bandit()
    kw = dict(num_generations=(2, 4), num_replicates=100, seed=2 ** 40, scheduler="serial", progress=False,
              command="pytest run", extra_config={"note": "x"})
    a, b = mc.run_grid(pol, **kw), mc.run_grid(pol, **kw)
    write_netcdf(a, tmp_path / "a.nc")
    write_netcdf(b, tmp_path / "b.nc")
    ra, rb = xr.load_dataset(tmp_path / "a.nc", engine="h5netcdf"), xr.load_dataset(tmp_path / "b.nc")
    data_equal(a, ra)
    data_equal(ra, rb)
    assert ra.attrs["seed"] == str(2 ** 40)
    assert ra.attrs["command"] == "pytest run"
    cfg = json.loads(ra.attrs["config"])
    assert cfg["extra"] == {"note": "x"} and cfg["num_replicates"] == 100
    for key in ("package_version", "git_describe", "created"):
        assert ra.attrs[key]
    assert list(ra.estimator.values) == ["vanilla", "leave_one_out", "oracle"]


def test_merge_pools_sufficient_statistics():
    pol = small_bandit()
    kw = dict(num_replicates=300, scheduler="serial", progress=False, block_size=300)
    a = mc.run_grid(pol, num_generations=(2, 4), seed=1, **kw)
    b = mc.run_grid(pol, num_generations=(4, 8), seed=2, **kw)
    m = mc.merge(a, b)
    assert list(m.num_generations.values) == [2, 4, 8]
    np.testing.assert_array_equal(m["count"].sel(num_generations=[2, 4, 8]).values[:, :, 0],
                                  [[300, 600, 300]] * 3)
    np.testing.assert_array_equal(m.mse.sel(num_generations=2).values, a.mse.sel(num_generations=2).values)
    # pooled mean of two equal-size runs is the average of their means
    want = (a.mse.sel(num_generations=4) + b.mse.sel(num_generations=4)).values / 2
    np.testing.assert_allclose(m.mse.sel(num_generations=4).values, want, rtol=1e-14)
    assert m.attrs["seed"] == "1,2"
    assert len(json.loads(m.attrs["config"])) == 2
    assert (m.mse_se.sel(num_generations=4) < a.mse_se.sel(num_generations=4)).all()
    with pytest.raises(ValueError, match="identical"):
        mc.merge(a, mc.run_grid(pol, num_generations=(4,), seed=1, **kw))
    with pytest.raises(ValueError, match="different policies"):
        mc.merge(a, mc.run_grid(contextual_bandit(), num_generations=(4,), seed=3, **kw))
    with pytest.raises(ValueError, match="missing"):
        mc.merge(a, a[["mse"]])


def test_summary_lists_every_cell():
    ds = mc.run_grid(small_bandit(), num_generations=(2, 4), num_replicates=50, seed=0, scheduler="serial",
                     progress=False)
    text = mc.summary(ds)
    assert len(text.splitlines()) == 1 + 3 * 2
    assert "leave_one_out" in text


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(estimators=("vanilla", "nope")), "unknown estimator"),
    (dict(estimators=()), "empty"),
    (dict(estimators=("leave_one_out", "leave_one_out")), "duplicates"),
    (dict(num_generations=(0, 2)), "num_generations"),
    (dict(num_generations=(2.5,)), "num_generations"),
    (dict(num_generations=()), "empty"),
    (dict(num_prompts=(1, 1)), "duplicates"),
    (dict(num_replicates=1), "num_replicates"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(seed=None), "seed"),
    (dict(block_size=0), "block_size"),
    (dict(sampler="fast"), "sampler"),
    (dict(scheduler="threads"), "scheduler"),
    (dict(exact="yes"), "exact"),
])
def test_bad_input_raises_value_error(kwargs, match):
    base = dict(num_generations=(2,), num_replicates=10, seed=0, scheduler="serial", progress=False)
    with pytest.raises(ValueError, match=match):
        mc.run_grid(small_bandit(), **{**base, **kwargs})


def test_bad_policy_raises_value_error():
    with pytest.raises(ValueError, match="protocol"):
        mc.run_grid(object(), num_generations=(2,), seed=0, progress=False)
    with pytest.raises(ValueError, match="finite-action"):
        mc.run_grid(GaussianPolicyBandit(), num_generations=(2,), seed=0, sampler="finite", progress=False)


# ---------------------------------------------------------------------------- simulation scripts

def _scripts():
    """Import ``simulations`` whether pytest runs from the repository root or not."""
    import pathlib
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    import simulations.bench_mc
    import simulations.fig4_bandit

    return simulations.fig4_bandit, simulations.bench_mc


def test_fig4_script_writes_netcdf_and_png(tmp_path, capsys):
    fig4_bandit, _ = _scripts()

    out = tmp_path / "fig4"
    rc = fig4_bandit.main(["--num-generations", "4,8", "--num-replicates", "400", "--scheduler", "serial",
                           "--out", str(out), "--quiet", "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert rc == 0
    ds = xr.load_dataset(out / "fig4_bandit.nc")
    assert dict(ds.mse.sizes) == {"policy": 3, "estimator": 3, "num_generations": 2, "num_prompts": 1}
    np.testing.assert_allclose(ds.value.values, [0.2, 0.5, 0.8], rtol=1e-10)
    # the exact curve at G = 4, 8 is the exact value of the grid
    np.testing.assert_array_equal(ds.exact_curve.sel(G=[4, 8]).values, ds.exact.values[..., 0])
    assert ds.attrs["seed"] == "20260304" and json.loads(ds.attrs["config"])["script"]["num_replicates"] == 400
    assert (out / "fig4_bandit.png").stat().st_size > 10_000
    assert "max |z|" in capsys.readouterr().out
    # resume from the checkpoints: same data
    rc = fig4_bandit.main(["--num-generations", "4,8", "--num-replicates", "400", "--scheduler", "serial",
                           "--out", str(tmp_path / "again"), "--quiet", "--no-plot",
                           "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert rc == 0
    data_equal(ds.isel(policy=0), xr.load_dataset(tmp_path / "again" / "fig4_bandit.nc").isel(policy=0))
    assert fig4_bandit.main(["--num-generations", "1,4", "--out", str(tmp_path)]) == 2
    assert fig4_bandit.main(["--num-generations", "four", "--out", str(tmp_path)]) == 2


def test_bench_script_reports_ratios(capsys, tmp_path):
    _, bench_mc = _scripts()

    assert bench_mc.main(["--num-replicates", "2000", "--generic-replicates", "200", "--repeats", "1",
                          "--json", "--out", str(tmp_path / "bench.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    stored = json.loads((tmp_path / "bench.json").read_text())        # what the evidence page renders
    assert {k: stored[k] for k in res} == res and set(stored["rows"]) == set(res["min"]["seconds"])
    assert stored["rows"][0] == "floor: same uniforms, same streams"                # the table's order
    assert stored["machine"]["cores"] >= 1 and stored["provenance"]["seed"] == "0"
    for stat in ("median", "min"):
        r = res[stat]
        assert set(r["ratio_to_floor"]) == set(r["seconds"]) and len(r["seconds"]) == 6
        assert r["ratio_to_floor"]["floor: same uniforms, same streams"] == 1.0
    assert res["kernel"] in ("numba", "numpy")
    assert bench_mc.main(["--num-arms", "1"]) == 2


@pytest.mark.slow
def test_killed_script_resumes_to_identical_data(tmp_path):
    """Kill the fig4 script (SIGKILL) after some cells are checkpointed, rerun, compare bytes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "simulations", "fig4_bandit.py")
    args = ["--num-replicates", "300000", "--scheduler", "serial", "--quiet", "--no-plot"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, script, *args, "--out", str(tmp_path / "a"),
                             "--checkpoint-dir", str(ckpt)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while len(list(ckpt.glob("*/cell-*.npz"))) < 2 and proc.poll() is None:   # 2 cells, or exit
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(ckpt.glob("*/cell-*.npz")))
    assert 2 <= done < 15
    subprocess.run([sys.executable, script, *args, "--out", str(tmp_path / "a"), "--checkpoint-dir", str(ckpt)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, script, *args, "--out", str(tmp_path / "b")], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a = xr.load_dataset(tmp_path / "a" / "fig4_bandit.nc")
    b = xr.load_dataset(tmp_path / "b" / "fig4_bandit.nc")
    for v in ("count", "mse", "m2", "mse_se", "exact", "exact_curve"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
