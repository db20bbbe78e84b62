"""Tests for the optional C kernel (ustat_grpo/_mc_kernel.c, loaded by ustat_grpo._ckernel).

The kernel must give the numpy path's histograms, generator states and errors bit for bit, so
results never depend on whether a compiler exists.  Tests that need the compiled kernel skip when
it cannot be built; the fallback tests run everywhere.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from ustat_grpo import _ckernel, finite_action
from ustat_grpo import montecarlo as mc
from ustat_grpo.bandits import SoftmaxBandit
from ustat_grpo.estimators import ESTIMATORS

LIB = _ckernel.load()
needs_c = pytest.mark.skipif(LIB is None, reason="no C compiler: the numpy path runs")
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
    the C table's bin edges and the numpy table's)."""
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


@needs_c
@pytest.mark.parametrize("K", [2, 3, 10, 37])
def test_c_histograms_equal_numpy_twins(K):
    """C histograms == the fused numpy sampler == the per-pull sampler, and the generator ends in
    the same state, over K, M, G, B, block sizes (odd numbers of groups) and seeds."""
    rng = np.random.default_rng(K)
    for probs in _arm_laws(K, rng):
        for fail in _fails(K, rng):
            fam = _model(probs, fail)
            samplers = finite_action.samplers_for(fam)
            one = samplers[-2]
            assert one.kernel == "C"
            for R, B, G in [(1, 1, 2), (5, 1, 3), (33, 2, 3), (16, 3, 64), (7, 1, 64)]:
                seed = int(rng.integers(2 ** 32))
                a, b, c = (np.random.default_rng(seed) for _ in range(3))
                hist = one(a, R, B, G)
                np.testing.assert_array_equal(hist, _numpy_twin(one, b, R, B, G))
                ws = finite_action.workspace((R, B, G))
                np.testing.assert_array_equal(
                    hist, finite_action._draw_histograms(fam, c, R, B, G, samplers, ws)[3])
                assert a.bit_generator.state == b.bit_generator.state == c.bit_generator.state


@needs_c
def test_c_histograms_other_bit_generators_and_generic_kernel(monkeypatch):
    """The next_raw kernel (any bit generator; PCG64 too when the inline PCG64 is off) gives the
    per-pull sampler's counts (other bit generators: the fused numpy sampler's ``advance`` is
    PCG64's) and the numpy fused sampler's."""
    rng = np.random.default_rng(5)
    fam = _model(rng.dirichlet(np.ones(6)), rng.uniform(size=6))
    samplers = finite_action.samplers_for(fam)
    one = samplers[-2]
    for bg in (np.random.SFC64, np.random.Philox, np.random.PCG64DXSM):
        a, b = np.random.Generator(bg(3)), np.random.Generator(bg(3))
        ws = finite_action.workspace((20, 2, 9))
        np.testing.assert_array_equal(
            one(a, 20, 2, 9), finite_action._draw_histograms(fam, b, 20, 2, 9, samplers, ws)[3])
        assert a.random() == b.random()
    with pytest.raises(AttributeError):            # 32-bit raw words: not C's; numpy's needs advance
        one(np.random.Generator(np.random.MT19937(3)), 20, 2, 9)
    monkeypatch.setattr(LIB, "pcg64_inline", False)
    for M1 in (False, True):
        fam = _model(rng.dirichlet(np.ones(4)), None if M1 else rng.uniform(size=4))
        one = finite_action.samplers_for(fam)[-2]
        a, b = np.random.default_rng(8), np.random.default_rng(8)
        np.testing.assert_array_equal(one(a, 31, 1, 5), _numpy_twin(one, b, 31, 1, 5))
        assert a.bit_generator.state == b.bit_generator.state


@needs_c
def test_inline_pcg64_and_jump_equal_numpy():
    for seed in (0, 1, 2 ** 70 + 3):
        bg = np.random.PCG64(seed)
        w = _ckernel.pcg64_words(bg)
        out = np.empty(777, np.uint64)
        assert LIB.ustat_pcg64_raw(w.ctypes.data, out.size, out.ctypes.data) == 0
        np.testing.assert_array_equal(out, bg.random_raw(out.size))
        np.testing.assert_array_equal(w, _ckernel.pcg64_words(bg))
        for delta in (0, 1, 12345, 2 ** 40 + 7):
            w = _ckernel.pcg64_words(bg)
            assert LIB.ustat_pcg64_jump(w.ctypes.data, delta) == 0
            bg.advance(delta)
            np.testing.assert_array_equal(w, _ckernel.pcg64_words(bg))


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


_WORD = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)


class _Bitgen(ctypes.Structure):
    _fields_ = [("state", ctypes.c_void_p), ("next_uint64", ctypes.c_void_p),
                ("next_uint32", ctypes.c_void_p), ("next_double", ctypes.c_void_p),
                ("next_raw", ctypes.c_void_p)]


def _crafted_hist(one, words, n, G):
    """Run the next_raw kernel on a given word sequence (a ctypes bit generator)."""
    it = iter(words.tolist())
    cb = _WORD(lambda _: next(it))
    bg = _Bitgen(None, None, None, None, ctypes.cast(cb, ctypes.c_void_p).value)
    c = one._c
    out = np.empty((n, one.KM))
    arms = np.empty(n * G, np.int32)
    rthr = c["rthr"]
    rc = LIB.ustat_hist_block(ctypes.addressof(bg), n, G, c["athr"].ctypes.data, one.K,
                              c["lut"].ctypes.data, one.C_LUT_BITS,
                              None if rthr is None else rthr.ctypes.data, arms.ctypes.data,
                              out.ctypes.data)
    assert rc == 0
    return out


def _naive(one, words, n, G):
    """Histogram from the words by the definition: searchsorted on the CDF, u2 >= P(m=0|a)."""
    u = (words >> np.uint64(11)).astype(float) * 2.0 ** -53
    arm = np.searchsorted(one.cdf, u[n:n + n * G], side="right")
    cell = arm if one.fail is None else 2 * arm + (u[n + n * G:] >= one.fail[arm])
    hist = np.zeros((n, one.KM))
    np.add.at(hist, (np.repeat(np.arange(n), G), cell), 1)
    return hist


@needs_c
@pytest.mark.parametrize("steps", [2 ** 12, 2 ** 20])
def test_c_kernel_on_words_at_the_edges(steps):
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
    c = one._c
    for key, step in (("athr", 1), ("rthr", 1), ("rthr", -1)):
        if key == "athr" and steps == 2 ** 12:
            continue                                       # edge points: the table decides
        saved = c[key]
        c[key] = saved.copy()
        part = c[key][:one.K - 1] if key == "athr" else c[key]          # not the sentinel
        part[part > 0] += np.uint64(1) if step > 0 else np.uint64(-1 & (2 ** 64 - 1))
        assert not np.array_equal(_crafted_hist(one, words, n, G), want), key
        c[key] = saved
    rolled = finite_action.samplers_for(_model(np.roll(p, 1), one.fail))[-2]
    assert not np.array_equal(_crafted_hist(rolled, words, n, G), want)


@needs_c
def test_c_affine_errors_equal_numpy(monkeypatch):
    """The B = 1 errors with g_hat - g from C == the numpy path, all affine estimators, G a power
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
            monkeypatch.setenv("USTAT_GRPO_NO_CKERNEL", "1")
            n = finite_action._errors(task, grp, 400)
            monkeypatch.delenv("USTAT_GRPO_NO_CKERNEL")
        np.testing.assert_array_equal(c, n)


def _squared(rewards, scores, *, values=None):
    """Not affine in the rewards: runs the unfused finite-action path."""
    return ESTIMATORS["vanilla"](np.asarray(rewards) ** 2, scores)


def _same_data(a, b):
    for v in DATA_VARS:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@needs_c
def test_run_grid_same_bits_with_and_without_kernel(monkeypatch):
    pols = [SoftmaxBandit([0.2, 0.9, 0.5, 0.7], theta=[0.0, 0.5, -0.5, 1.0]),
            SoftmaxBandit(rewards=[0.0, 1.0, 0.5], theta=[0.3, 0.1, -0.2])]
    for pol in pols:
        for est in (AFFINE, {"vanilla": ESTIMATORS["vanilla"], "squared": _squared}):  # fused; not
            kw = {"num_generations": (3, 8), "num_prompts": (1, 2), "num_replicates": 700,
                  "seed": 4, "block_size": 128, "estimators": est, "scheduler": "serial",
                  "progress": False}
            with_c = mc.run_grid(pol, **kw)
            monkeypatch.setenv("USTAT_GRPO_NO_CKERNEL", "1")
            without = mc.run_grid(pol, **kw)
            monkeypatch.delenv("USTAT_GRPO_NO_CKERNEL")
            _same_data(with_c, without)


def test_no_compiler_falls_back_to_numpy(monkeypatch, tmp_path):
    """A missing compiler gives load() None, the numpy sampler, and the same numbers."""
    pol = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    kw = {"num_generations": 4, "num_replicates": 300, "seed": 1,
          "estimators": ("vanilla", "oracle"), "scheduler": "serial", "progress": False}
    reference = mc.run_grid(pol, **kw)
    monkeypatch.setenv("USTAT_GRPO_CACHE", str(tmp_path / "cache"))
    for cc in (str(tmp_path / "no-such-compiler"), "false"):              # missing; failing
        monkeypatch.setenv("CC", cc)
        assert _ckernel.load() is None
        fam = finite_action.FiniteActionModel.from_policy(pol)
        assert finite_action.samplers_for(fam)[-2].kernel == "numpy"
        _same_data(mc.run_grid(pol, **kw), reference)
    assert not list((tmp_path / "cache").glob("*.so"))
    monkeypatch.delenv("CC")
    monkeypatch.setenv("USTAT_GRPO_NO_CKERNEL", "1")
    assert _ckernel.load() is None


@needs_c
def test_cache_compiles_once_and_in_parallel(monkeypatch, tmp_path):
    """A fresh cache directory gets one library file; concurrent compiles leave a whole file and
    no temporaries; a later load reuses the file."""
    monkeypatch.setenv("USTAT_GRPO_CACHE", str(tmp_path))
    monkeypatch.setattr(_ckernel, "_cache", {})
    path = str(tmp_path / "k.so")
    errs = []

    def build():
        try:
            _ckernel._compile("cc", path)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errs and [p.name for p in tmp_path.iterdir()] == ["k.so"]
    lib = _ckernel.load()
    assert lib is not None and lib.pcg64_inline
    files = sorted(tmp_path.glob("_mc_kernel-*.so"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    monkeypatch.setattr(_ckernel, "_cache", {})
    assert _ckernel.load() is not None
    assert files[0].stat().st_mtime_ns == mtime
