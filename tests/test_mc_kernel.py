"""Tests for the optional numba kernel (ustat_grpo.experiments._numba_kernel, the extra ``fast``).

The kernel must give the numpy path's histograms, generator states and errors bit for bit, so
results never depend on whether numba is installed.  Tests that need numba skip without it; the
fallback tests run everywhere.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from ustat_grpo.experiments import _numba_kernel, finite_action
from ustat_grpo.experiments import montecarlo as mc
from ustat_grpo.policies.bandits import SoftmaxBandit
from ustat_grpo.theory.estimators import ESTIMATORS

KERN = _numba_kernel.load()
needs_numba = pytest.mark.skipif(KERN is None, reason="numba is not installed: the numpy path runs")
DATA_VARS = ("count", "mse", "m2", "mse_se", "exact")
AFFINE = ("vanilla", "leave_one_out", "oracle", "group_mean", "std_normalized")


def _model(probs, fail=None, d=3, seed=0):
    """A one-prompt FiniteActionModel with arm probabilities ``probs`` and, for M = 2,
    ``P(reward index 0 | arm) = fail`` (M = 1 when ``fail`` is None)."""
    rng = np.random.default_rng(seed)
    p = np.asarray(probs, float)
    K = p.size
    if fail is None:
        vals, rp = rng.normal(size=(1, K, 1)), np.ones((1, K, 1))
    else:
        f = np.asarray(fail, float)
        vals = np.stack([np.zeros(K), np.ones(K)], -1)[None]
        rp = np.stack([f, 1 - f], -1)[None]
    table = rng.normal(size=(1, K, d))
    return finite_action.FiniteActionModel(prompt_probs=np.ones(1), action_probs=p[None],
                                           score_table=table, reward_values=vals, reward_probs=rp)


def _arm_laws(K, rng):
    """Arm probabilities: generic; multiples of 2**-12 (every CDF point on a bin edge of both
    tables) with some empty arms; one arm only."""
    yield rng.dirichlet(np.ones(K))
    p = rng.integers(0, 5, size=K).astype(float)
    p[rng.integers(K)] += 1
    yield _edges(p)
    q = np.zeros(K)
    q[rng.integers(K)] = 1.0
    yield q


def _edges(p, steps=4096):
    """``p`` rescaled to multiples of ``1/steps`` summing to 1 (``steps = 2**12``: CDF points on
    the numba table's bin edges and the numpy table's)."""
    n = np.floor(p / p.sum() * steps)
    n[np.argmax(n)] += steps - n.sum()
    return n / steps


def _fails(K, rng):
    yield None                                                     # M = 1
    yield rng.uniform(size=K)
    f = rng.choice([0.0, 1.0, 0.5, 0.25], size=K)                  # 0, 1 and bin edges
    yield f


def _numpy_twin(one, gen, R, B, G):
    return one.resolve(*one.block(gen, R, B, G))[:, :-1]


@needs_numba
@pytest.mark.parametrize("K", [2, 3, 10, 37, 300])   # 300: int32 arms (uint8 up to 256)
def test_numba_histograms_equal_numpy_twins(K):
    """Numba histograms == the fused numpy sampler == the per-pull sampler, and the generator ends in
    the same state, over K, M, G, B, block sizes (odd numbers of groups) and seeds."""
    rng = np.random.default_rng(K)
    for probs in _arm_laws(K, rng):
        for fail in _fails(K, rng):
            fam = _model(probs, fail)
            samplers = finite_action.samplers_for(fam)
            one = samplers[-2]
            assert one.kernel == "numba"
            assert one._nb["cells"].dtype == (np.uint8 if K <= 256 else np.int32)
            for R, B, G in [(1, 1, 2), (5, 1, 3), (33, 2, 3), (16, 3, 64), (7, 1, 64)]:
                seed = int(rng.integers(2 ** 32))
                a, b, c = (np.random.default_rng(seed) for _ in range(3))
                hist = one(a, R, B, G)
                np.testing.assert_array_equal(hist, _numpy_twin(one, b, R, B, G))
                ws = finite_action.workspace((R, B, G))
                np.testing.assert_array_equal(
                    hist, finite_action._draw_histograms(fam, c, R, B, G, samplers, ws)[3])
                assert a.bit_generator.state == b.bit_generator.state == c.bit_generator.state


@needs_numba
def test_numba_histograms_other_bit_generators():
    """Through any numpy bit generator the kernel gives the per-pull sampler's counts and leaves the
    generator where the per-pull sampler does (the fused numpy sampler needs PCG64's ``advance``):
    the word generators through ``next_uint64 >> 11``, MT19937 (two-word doubles) through
    ``next_double``."""
    rng = np.random.default_rng(5)
    for M1 in (False, True):
        fam = _model(rng.dirichlet(np.ones(6)), None if M1 else rng.uniform(size=6))
        samplers = finite_action.samplers_for(fam)
        one = samplers[-2]
        for bg in (np.random.SFC64, np.random.Philox, np.random.PCG64DXSM, np.random.MT19937):
            a, b = np.random.Generator(bg(3)), np.random.Generator(bg(3))
            ws = finite_action.workspace((20, 2, 9))
            np.testing.assert_array_equal(
                one(a, 20, 2, 9), finite_action._draw_histograms(fam, b, 20, 2, 9, samplers, ws)[3])
            assert a.random() == b.random()


@pytest.mark.parametrize("name", _numba_kernel.WORD_GENERATORS)
def test_word_generators_doubles_are_top_53_bits(name):
    """For the kernel's word generators ``Generator.random`` is ``(next_uint64 >> 11) * 2**-53``
    (what lets the kernel read words); MT19937's doubles are not (negative control)."""
    for cls, want in ((getattr(np.random, name), True), (np.random.MT19937, False)):
        a, b = cls(11), cls(11)
        u = np.random.Generator(a).random(1000)
        w = b.random_raw(1000)
        assert np.array_equal(u, (w >> np.uint64(11)).astype(float) * 2.0 ** -53) == want, cls


def test_thresholds_decide_the_uniform_comparisons():
    """``u >= c`` iff ``(w >> 11) >= ceil(c 2**53)``, at and next to every threshold, for CDF-like
    values, bin edges, 0, 1, tiny and out-of-range values."""
    rng = np.random.default_rng(2)
    c = np.concatenate([rng.uniform(size=200), np.arange(17) / 16, [0.0, -0.0, 1.0, 5e-324, 1e-300,
                        1 - 2 ** -53, 1.5, -0.5, np.nextafter(0.5, 1), np.nextafter(0.5, 0)]])
    t = finite_action._thresholds(c)
    for dk in (-2, -1, 0, 1, 2):
        k = np.clip(t.astype(np.int64) + dk, 0, 2 ** 53 - 1).astype(np.uint64)
        u = k.astype(float) * 2.0 ** -53
        np.testing.assert_array_equal(u >= c, k >= t)
    assert finite_action._thresholds([np.nan])[0] == 2 ** 53            # u >= NaN is never true


if KERN is not None:
    import numba

    @numba.njit
    def _next_word_k(state):
        """``k = w >> 11`` of the next word of ``state`` (uint64: ``state[0]`` is the index of the next
        word, the words follow): a crafted stream for the kernel's own draw loop."""
        i = state[0]
        state[0] = i + np.uint64(1)
        return np.int64(state[i] >> np.uint64(11))

    HIST_FROM_WORDS = KERN.hist_kernel(_next_word_k)


def _crafted_hist(one, words, n, G):
    """The kernel's histogram of given words (prompt slots, arms, rewards; their uniforms
    ``(w >> 11) 2**-53``) in place of a generator's draws; checks that it reads each word once."""
    c = one._nb
    out = np.empty((n, one.KM))
    state = np.concatenate([np.ones(1, np.uint64), words])
    HIST_FROM_WORDS(state, n, G, c["athr"], c["lut"], c["shift"], c["rthr"],
                    np.empty(n * G, c["cells"].dtype), out)                # the production scratch type
    assert state[0] == 1 + words.size
    return out


def _naive(one, words, n, G):
    """Histogram from the words by the definition: searchsorted on the CDF, u2 >= P(m=0|a)."""
    u = (words >> np.uint64(11)).astype(float) * 2.0 ** -53
    arm = np.searchsorted(one.cdf, u[n:n + n * G], side="right")
    cell = arm if one.fail is None else 2 * arm + (u[n + n * G:] >= one.fail[arm])
    hist = np.zeros((n, one.KM))
    np.add.at(hist, (np.repeat(np.arange(n), G), cell), 1)
    return hist


@needs_numba
@pytest.mark.parametrize("steps", [2 ** 12, 2 ** 20])
def test_kernel_on_words_at_the_edges(steps):
    """Words whose uniforms are exactly a CDF point / P(m = 0 | a) or one step (2**-53) either
    side, 0 and the largest uniform: the kernel's cells are searchsorted's and ``u2 >= fail``'s.
    CDF points on the table's bin edges (``steps = 2**12``: decided by the table) and off them
    (``2**20``: decided by the scan).  Negative controls: thresholds one step off, or the arm law
    rolled, change the counts."""
    rng = np.random.default_rng(9)
    p = rng.uniform(size=10)
    p[3] = 0.0
    p = _edges(p, steps)                                   # CDF points: multiples of 1/steps
    fam = _model(p, np.concatenate([[0.0, 1.0, 0.5], rng.uniform(size=7)]))
    one = finite_action.samplers_for(fam)[-2]
    ks = (one.cdf * 2.0 ** 53)[:, None] + [-1, 0, 1]       # exact integers
    ks = np.concatenate([ks.ravel(), [0, 1, 2 ** 52, 2 ** 53 - 1]])
    ks = np.clip(ks, 0, 2 ** 53 - 1).astype(np.uint64)
    n, G = 3, ks.size
    arm_k = np.tile(ks, n)
    arm = np.searchsorted(one.cdf, arm_k.astype(float) * 2.0 ** -53, side="right")
    rew_k = np.ceil(one.fail[arm] * 2.0 ** 53) + rng.integers(-1, 2, size=arm.size)
    rew_k = np.clip(rew_k, 0, 2 ** 53 - 1).astype(np.uint64)
    low = rng.integers(0, 2 ** 11, size=(2, n * G), dtype=np.uint64)    # bits below the uniform
    words = np.concatenate([rng.integers(0, 2 ** 63, size=n, dtype=np.uint64),   # prompt slots
                            (arm_k << np.uint64(11)) | low[0], (rew_k << np.uint64(11)) | low[1]])
    want = _naive(one, words, n, G)
    np.testing.assert_array_equal(_crafted_hist(one, words, n, G), want)
    c = one._nb
    for key, step in (("athr", 1), ("rthr", 1), ("rthr", -1)):
        if key == "athr" and steps == 2 ** 12:
            continue                                       # edge points: the table decides
        saved = c[key]
        c[key] = saved.copy()
        part = c[key][:one.K - 1] if key == "athr" else c[key]          # not the sentinel
        part[part > 0] += step
        assert not np.array_equal(_crafted_hist(one, words, n, G), want), key
        c[key] = saved
    rolled = finite_action.samplers_for(_model(np.roll(p, 1), one.fail))[-2]
    assert not np.array_equal(_crafted_hist(rolled, words, n, G), want)


@needs_numba
def test_numba_affine_errors_equal_numpy(monkeypatch):
    """The B = 1 errors with g_hat - g from numba == the numpy path, all affine estimators, G a power
    of two or not."""
    pol = SoftmaxBandit([0.2, 0.9, 0.5, 0.4], theta=[0.0, 0.5, -0.5, 0.1])
    fam = finite_action.FiniteActionModel.from_policy(pol)
    samplers = finite_action.samplers_for(fam)
    for G in (2, 5, 8, 64):
        task = mc._Task(policy=pol, estimators=AFFINE, funcs=None, G=G, B=1, num_replicates=400,
                        block_size=400, seed=0, gradient=fam.gradient(), values=fam.value(), fam=fam,
                        affine=frozenset(AFFINE))
        grp = finite_action._groups(fam, np.random.default_rng(G), 400, 1, G, samplers, None, fused=True)
        with np.errstate(all="ignore"):
            c = finite_action._errors(task, grp, 400)
            monkeypatch.setenv("USTAT_GRPO_NO_NUMBA", "1")
            n = finite_action._errors(task, grp, 400)
            monkeypatch.delenv("USTAT_GRPO_NO_NUMBA")
        np.testing.assert_array_equal(c, n)


def _squared(rewards, scores, *, values=None):
    """Not affine in the rewards: runs the unfused finite-action path."""
    return ESTIMATORS["vanilla"](np.asarray(rewards) ** 2, scores)


def _same_data(a, b):
    for v in DATA_VARS:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@needs_numba
def test_run_grid_same_bits_with_and_without_kernel(monkeypatch):
    pols = [SoftmaxBandit([0.2, 0.9, 0.5, 0.7], theta=[0.0, 0.5, -0.5, 1.0]),
            SoftmaxBandit(rewards=[0.0, 1.0, 0.5], theta=[0.3, 0.1, -0.2])]
    for pol in pols:
        for est in (AFFINE, {"vanilla": ESTIMATORS["vanilla"], "squared": _squared}):  # fused; not
            kw = {"num_generations": (3, 8), "num_prompts": (1, 2), "num_replicates": 700,
                  "seed": 4, "block_size": 128, "estimators": est, "scheduler": "serial",
                  "progress": False}
            with_nb = mc.run_grid(pol, **kw)
            monkeypatch.setenv("USTAT_GRPO_NO_NUMBA", "1")
            without = mc.run_grid(pol, **kw)
            monkeypatch.delenv("USTAT_GRPO_NO_NUMBA")
            _same_data(with_nb, without)
            assert json_config(with_nb)["fast_path_kernel"] == "numba"
            assert json_config(without)["fast_path_kernel"] == "numpy"


def json_config(ds):
    import json
    return json.loads(ds.attrs["config"])


def test_without_numba_the_numpy_path_runs_announced(monkeypatch):
    """Without numba (its import fails) load() is None, the numpy sampler runs, a
    NumpyPathWarning says so once per process, and the numbers are the same."""
    pol = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    kw = {"num_generations": 4, "num_replicates": 300, "seed": 1,
          "estimators": ("vanilla", "oracle"), "scheduler": "serial", "progress": False}
    monkeypatch.delenv("USTAT_GRPO_NO_NUMBA", raising=False)
    reference = mc.run_grid(pol, **kw)
    fam = finite_action.FiniteActionModel.from_policy(pol)
    monkeypatch.setitem(sys.modules, "numba", None)                 # import numba -> ImportError
    monkeypatch.setattr(_numba_kernel, "_kernels", {})
    monkeypatch.setattr(_numba_kernel, "_announced", False)
    assert _numba_kernel.load() is None
    with pytest.warns(_numba_kernel.NumpyPathWarning, match="numba is not installed"):
        assert finite_action.samplers_for(fam)[-2].kernel == "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("error", _numba_kernel.NumpyPathWarning)   # once per process
        assert finite_action.samplers_for(fam)[-2].kernel == "numpy"
        ds = mc.run_grid(pol, **kw)
    _same_data(ds, reference)
    assert json_config(ds)["fast_path_kernel"] == "numpy"
    monkeypatch.setattr(_numba_kernel, "_announced", False)            # chosen: no warning
    monkeypatch.setenv("USTAT_GRPO_NO_NUMBA", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", _numba_kernel.NumpyPathWarning)
        assert finite_action.samplers_for(fam)[-2].kernel == "numpy"


@needs_numba
def test_no_compiler_or_subprocess_is_called(monkeypatch):
    """A run on the numba path starts no process but git (provenance): numba compiles in memory,
    and nothing is loaded from a cache directory."""
    calls = []
    real = subprocess.Popen.__init__

    def spy(self, args, *a, **k):
        calls.append(args if isinstance(args, str) else list(map(str, args)))
        return real(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    monkeypatch.setattr(_numba_kernel, "_kernels", {})                  # a fresh build
    pol = SoftmaxBandit([0.2, 0.9, 0.5, 0.6], theta=[0.0, 0.5, -0.5, 0.2])
    ds = mc.run_grid(pol, num_generations=8, num_replicates=200, seed=3, scheduler="serial",
                     progress=False, estimators=("vanilla", "oracle"))
    assert json_config(ds)["fast_path_kernel"] == "numba"
    assert all("git" in (c if isinstance(c, str) else c[0]) for c in calls), calls
