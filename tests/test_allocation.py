import itertools

import numpy as np
import pytest

from ustat_grpo.scaling import allocation as al
from ustat_grpo.policies.bandits import ContextualSoftmaxBandit, default_bandit
from ustat_grpo.scaling.constants import prompt_statistics
from ustat_grpo.theory.mse import exact_mse
from ustat_grpo.core.testing import assert_mc_close


def _pieces(rng, P):
    return rng.gamma(0.7, 2.0, P), rng.gamma(0.7, 5.0, P)


def _obj(a2, a3, s):
    s = np.asarray(s, float)
    return float(np.sum(a2 / s + a3 / (s * (s - 1))))


# ------------------------------------------------------------------ per-prompt pieces

def test_per_prompt_error_is_prop3_on_a_bandit():
    # a2/G + a3/(G(G-1)) of the exact pieces is exact_mse's per-prompt leave-one-out MSE
    m = default_bandit().moments()
    a2, a3 = al.moment_error_pieces(m)
    for G in (2, 3, 7, 16):
        np.testing.assert_allclose(a2 / G + a3 / (G * (G - 1)), exact_mse(m, "leave_one_out", G).total,
                                   rtol=1e-12)


def test_prompt_error_pieces_unbiased_monte_carlo():
    pol = default_bandit()
    m = pol.moments()
    ex2, ex3 = al.moment_error_pieces(m)
    rng = np.random.default_rng(7)
    R, M = 400, 8
    P = m.num_contexts
    s = pol.sample(R * P, M, rng=rng)                       # prompts drawn from f: regroup by id
    a2s, a3s = al.prompt_error_pieces(prompt_statistics(s.rewards, s.scores, prompt_ids=range(R * P)))
    pid = s.prompt_ids
    est, se, exact = [], [], []
    for x in range(P):
        for v, e in ((a2s[pid == x], ex2[x]), (a3s[pid == x], ex3[x])):
            est.append(v.mean()); se.append(v.std(ddof=1) / np.sqrt(v.size)); exact.append(e)
    assert_mc_close(est, se, exact)


def test_prompt_error_pieces_type():
    with pytest.raises(TypeError, match="stats"):
        al.prompt_error_pieces({"g": 1})


# ------------------------------------------------------------------ greedy optimum vs brute force

@pytest.mark.parametrize("seed", range(6))
def test_optimal_allocation_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    P = int(rng.integers(2, 5))
    a2, a3 = _pieces(rng, P)
    if seed == 0:
        a3[:] = 0.0
    if seed == 1:
        a2[0] = 0.0
    for budget, mult, mx in ((2 * P + 7, 1, None), (4 * P + 8, 2, None), (3 * P + 5, 1, 6), (6 * P, 3, 9)):
        if budget % mult:
            budget += mult - budget % mult
        try:
            fast = al.optimal_allocation(a2, a3, budget, multiple=mult, max_size=mx)
        except ValueError:
            with pytest.raises(ValueError):
                al._optimal_allocation_naive(a2, a3, budget, multiple=mult, max_size=mx)
            continue
        naive = al._optimal_allocation_naive(a2, a3, budget, multiple=mult, max_size=mx)
        assert fast.sum() == budget and np.all(fast >= 2) and np.all(fast % mult == 0)
        if mx is not None:
            assert np.all(fast <= mx)
        assert _obj(a2, a3, fast) == pytest.approx(_obj(a2, a3, naive), rel=1e-13)


def test_optimal_allocation_brute_force_min_size_and_ties():
    # equal pieces: every optimal allocation is as equal as possible; min_size raises the floor
    s = al.optimal_allocation([1.0] * 3, [2.0] * 3, 14, min_size=4)
    assert sorted(s.tolist()) == [4, 5, 5]
    assert s.tolist() == [5, 5, 4]                         # ties go to the lowest index
    naive = al._optimal_allocation_naive([1.0] * 3, [2.0] * 3, 14, min_size=4)
    assert sorted(naive.tolist()) == [4, 5, 5]


def test_optimal_allocation_neyman_limit():
    # a3 = 0: G_i proportional to sqrt(a2_i) when that is an integer allocation
    a2 = np.array([1.0, 4.0, 9.0, 16.0])
    assert al.optimal_allocation(a2, np.zeros(4), 50).tolist() == [5, 10, 15, 20]


def test_optimal_allocation_negative_control_not_uniform_for_heterogeneous():
    a2, a3 = np.array([0.01, 10.0]), np.array([0.01, 10.0])
    s = al.optimal_allocation(a2, a3, 20)
    assert s[1] > s[0]
    assert _obj(a2, a3, s) < _obj(a2, a3, [10, 10])


@pytest.mark.parametrize("kw, match", [
    ({"budget": 5}, "below num_prompts x min_size"),
    ({"budget": 13, "multiple": 2}, "not a multiple"),
    ({"budget": 40, "max_size": 6}, "exceeds num_prompts x max_size"),
    ({"budget": 12, "min_size": 1}, "min_size must be >= 2"),
    ({"budget": 12, "min_size": 5, "max_size": 4}, "no group size"),
    ({"budget": 12.0}, "budget must be an integer"),
])
def test_optimal_allocation_infeasible(kw, match):
    budget = kw.pop("budget")
    with pytest.raises((ValueError, TypeError), match=match):
        al.optimal_allocation([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], budget, **kw)


def test_optimal_allocation_bad_pieces():
    with pytest.raises(ValueError, match="non-negative"):
        al.optimal_allocation([1.0, -0.1], [1.0, 1.0], 8)
    with pytest.raises(ValueError, match="same length"):
        al.optimal_allocation([1.0, 1.0], [1.0], 8)
    with pytest.raises(ValueError, match="finite"):
        al.optimal_allocation([1.0, np.nan], [1.0, 1.0], 8)


# ------------------------------------------------------------------ the other rules

@pytest.mark.parametrize("seed", range(5))
def test_knapsack_rl_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    P = int(rng.integers(2, 5))
    p = rng.uniform(0, 1, P)
    if seed == 0:
        p[0] = 0.0
    for budget, mult, mx in ((3 * P + 4, 1, None), (4 * P, 2, 8), (2 * P + 3, 1, 5)):
        fast = al.knapsack_rl_allocation(p, budget, multiple=mult, max_size=mx)
        naive = al._knapsack_rl_allocation_naive(p, budget, multiple=mult, max_size=mx)
        assert fast.sum() == budget and np.all(fast >= 2) and np.all(fast % mult == 0)
        v = lambda s: float(np.sum(p * (1 - p) ** 2 * (1 - p ** s - (1 - p) ** s)))
        assert v(fast) == pytest.approx(v(naive), rel=1e-13, abs=1e-15)


def test_knapsack_rl_value_formula():
    # probability that k Bernoulli(p) rewards are not all equal, by enumeration, times p(1-p)^2
    p, k = 0.3, 4
    mixed = sum(p ** sum(o) * (1 - p) ** (k - sum(o)) for o in itertools.product((0, 1), repeat=k)
                if 0 < sum(o) < k)
    assert al.knapsack_rl_value(p, k) == pytest.approx(p * (1 - p) ** 2 * mixed, rel=1e-14)


def test_pass_rate_allocation_neyman_and_brute_force():
    # p(1-p) = 1/4, 4/25 * ... choose p so sqrt(p(1-p)) are in ratio 5:4:3 -> sizes 10:8:6
    p = np.array([0.5, 0.2, 0.1])                          # sqrt(pq) = 0.5, 0.4, 0.3
    assert al.pass_rate_allocation(p, 24).tolist() == [10, 8, 6]
    rng = np.random.default_rng(3)
    for _ in range(4):
        q = rng.uniform(0, 1, 3)
        s = al.pass_rate_allocation(q, 17, max_size=9)
        b = al._optimal_allocation_naive(q * (1 - q), np.zeros(3), 17, max_size=9)
        assert _obj(q * (1 - q), 0, s) == pytest.approx(_obj(q * (1 - q), 0, b), rel=1e-13)
    assert al.pass_rate_allocation([0.0, 1.0, 0.5], 12).tolist() == [2, 2, 8]


def test_pass_rate_bad_input():
    with pytest.raises(ValueError, match="p must lie"):
        al.pass_rate_allocation([0.5, 1.2], 8)
    with pytest.raises(ValueError, match="p must lie"):
        al.knapsack_rl_allocation([-0.1, 0.5], 8)


def test_uniform_allocation():
    assert al.uniform_allocation(4, 32).tolist() == [8] * 4
    assert al.uniform_allocation(3, 10).tolist() == [4, 3, 3]
    with pytest.raises(ValueError, match="below 2"):
        al.uniform_allocation(4, 7)
    with pytest.raises(TypeError, match="num_prompts"):
        al.uniform_allocation(4.0, 8)


# ------------------------------------------------------------------ batch MSE with unequal G

def test_batch_mse_reduces_to_scaling_law():
    A1, A2, A3, B, G = 0.3, 2.0, 5.0, 6, 4
    assert al.batch_mse(A1, A2, A3, [G] * B) == pytest.approx(A1 / B + A2 / (B * G) + A3 / (B * G * (G - 1)),
                                                            rel=1e-15)
    with pytest.raises(ValueError, match=">= 2"):
        al.batch_mse(0.0, 1.0, 1.0, [1, 3])
    with pytest.raises(ValueError, match="integers"):
        al.batch_mse(0.0, 1.0, 1.0, [2.5, 3])


def test_batch_mse_unequal_sizes_monte_carlo():
    # batch of fixed prompts (strata known) with unequal G: E||mean_i ghat_i - mean_i g_i||^2 (A1 = 0 here
    # because the prompts are fixed, not sampled) and the sampled-prompt form with A1 by exact moments
    pol = default_bandit()
    m = pol.moments()
    a2, a3 = al.moment_error_pieces(m)
    sizes = np.array([2, 3, 5, 9, 2, 4, 6, 3])
    P = sizes.size
    rng = np.random.default_rng(11)
    R = 4000
    err = np.zeros((R, m.dim))
    for x in range(P):
        feats = pol.features[x:x + 1]
        sub = ContextualSoftmaxBandit(feats, reward_values=pol.reward_values[x:x + 1],
                                      reward_probs=pol.reward_probs[x:x + 1], theta=pol.theta)
        s = sub.sample(R, int(sizes[x]), rng=rng)        # (R, G) rewards, (R, G, d) scores
        z, w = s.rewards, s.scores
        G = sizes[x]
        loo = z - (z.sum(-1, keepdims=True) - z) / (G - 1)
        ghat = np.einsum("rg,rgd->rd", loo, w) / G
        err += (ghat - m.grad[x]) / P
    sq = (err ** 2).sum(-1)
    assert_mc_close(sq.mean(), sq.std(ddof=1) / np.sqrt(R), al.batch_mse(0.0, a2, a3, sizes))


# ------------------------------------------------------------------ allocate: strata, gain and its interval

def _pilot(identical=False, P=600, M=16, seed=0):
    from paper_checks.check_allocation import built_bandit

    b = built_bandit(identical=identical)
    s = b.sample(P, M, rng=np.random.default_rng(seed))
    return b, s, prompt_statistics(s.rewards, s.scores, keep_scores=True)


def test_allocate_heterogeneous_strata_is_suggested_and_covers_exact_gain():
    from ustat_grpo.theory.mse import constants

    b, s, st = _pilot()
    r = al.allocate(st, s.prompt_ids, budget=60, num_prompts=12)
    assert r.recommended and r.reason.startswith("suggested")
    assert r.sizes.sum() == 60 and r.sizes.size == 12 and r.counts.sum() == 12
    m = b.moments()
    a2, a3 = al.moment_error_pieces(m)
    who = np.repeat(np.arange(3), r.counts)
    A1 = constants(m)[0]
    exact = 1 - (al.batch_mse(A1, a2[who], a3[who], al.optimal_allocation(a2[who], a3[who], 60))
                 / al.batch_mse(A1, a2[who], a3[who], [5] * 12))
    assert r.gain_interval.low <= exact <= r.gain_interval.high
    # the predicted MSEs are the batch law on the stratum means of the unbiased pieces
    pa2, pa3 = al.prompt_error_pieces(st)
    m2 = np.array([pa2[s.prompt_ids == x].mean() for x in range(3)])
    m3 = np.array([pa3[s.prompt_ids == x].mean() for x in range(3)])
    assert r.mse_uniform == pytest.approx(al.batch_mse(r.a1, m2[who], m3[who], [5] * 12), rel=1e-12)
    assert r.mse_allocated == pytest.approx(al.batch_mse(r.a1, m2[who], m3[who], r.sizes), rel=1e-12)
    # the other rules, evaluated by the same law on the same batch, do not beat the optimum
    assert set(r.rules) == {"uniform", "optimal", "knapsack_rl", "pass_rate"}
    assert r.rules["optimal"] == r.mse_allocated
    assert all(r.rules["optimal"] <= v for v in r.rules.values())
    p_s = np.array([s.rewards[s.prompt_ids == x].mean() for x in range(3)])
    ks = al.knapsack_rl_allocation(p_s[who], 60)
    assert r.rules["knapsack_rl"] == pytest.approx(al.batch_mse(r.a1, m2[who], m3[who], ks), rel=1e-12)
    d = r.to_dict()
    import json
    json.dumps(d, allow_nan=False)
    assert d["recommended"] is True and len(d["strata"]) == 3


def test_allocate_negative_control_homogeneous():
    _, s, st = _pilot(identical=True)
    for B in (12, 10):
        r = al.allocate(st, s.prompt_ids, budget=60, num_prompts=B)
        assert not r.recommended
        assert r.reason.startswith("no gain; keep uniform G")
        assert r.gain_interval.low <= 0 <= r.gain_interval.high


def test_allocate_cross_fitted_gain_can_be_negative_in_sample_cannot():
    # random labels on a heterogeneous pilot: strata carry no information; in-sample gain >= 0
    _, _s, st = _pilot(seed=4)
    lab = np.random.default_rng(9).integers(0, 6, len(st))
    r = al.allocate(st, lab, budget=120, num_prompts=20)
    assert r.gain_in_sample >= 0 and not r.recommended


def test_allocate_pass_rate_strata_sample_split():
    _, s, st = _pilot()
    labels, pieces = al.pass_rate_strata(st, bins=4)
    # labels from the first half, pieces from the second half
    ph = s.rewards[:, :8].mean(1)
    np.testing.assert_array_equal(labels == "p in [0, 0.25)", ph < 0.25)
    ref = prompt_statistics(s.rewards[:, 8:], s.scores[:, 8:])
    np.testing.assert_allclose(pieces.zzq, ref.zzq, rtol=1e-12)
    r = al.allocate(st, "pass_rate:4", budget=60, num_prompts=12)
    assert r.stratifier == "pass_rate:4" and set(r.strata) <= {"p in [0, 0.25)", "p in [0.25, 0.5)",
                                                               "p in [0.5, 0.75)", "p in [0.75, 1]"}
    with pytest.raises(ValueError, match="pass_rate:K"):
        al.allocate(st, "pass_rate:x", budget=60)


def test_allocate_bad_input():
    _, s, st = _pilot(P=40)
    with pytest.raises(ValueError, match="one label per prompt"):
        al.allocate(st, s.prompt_ids[:-1], budget=60)
    lab = np.zeros(len(st), int)
    lab[0] = 1
    with pytest.raises(ValueError, match=">= 2 pilot prompts"):
        al.allocate(st, lab, budget=60)
    with pytest.raises(TypeError, match="measurement_or_stats"):
        al.allocate(np.zeros(3), lab, budget=60)
    z = np.random.default_rng(0).normal(size=(10, 16))
    with pytest.raises(ValueError, match=r"rewards in \[0, 1\]"):
        al.pass_rate_strata(prompt_statistics(z, np.ones((10, 16, 2)) + z[..., None], keep_scores=True))
    with pytest.raises(ValueError, match="rewards and scores"):
        al.pass_rate_strata(prompt_statistics(s.rewards, s.scores))
    small = prompt_statistics(s.rewards[:, :6], s.scores[:, :6], keep_scores=True)
    with pytest.raises(ValueError, match=">= 8 samples per prompt"):
        al.pass_rate_strata(small)


# ------------------------------------------------------------------ the CLI: --allocate, JSON keys, exit 2

def _cli(capsys, argv):
    from ustat_grpo.cli import fit_scaling

    rc = fit_scaling.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


BANDIT = ["--source", "bandit", "--num-prompts", "48", "--samples-per-prompt", "16", "--replicates", "0"]


def test_cli_bandit_pass_rate_allocation_json(capsys):
    import json

    rc, out, err = _cli(capsys, [*BANDIT, "--allocate", "pass_rate:3", "--allocate-multiple", "2", "--format", "json"])
    assert rc == 0, err
    d = json.loads(out)
    a = d["allocation"]
    assert d["allocation_reason"] is None and a["stratifier"] == "pass_rate:3"
    assert sum(a["sizes"]) == d["budget"] and all(g % 2 == 0 and g >= 2 for g in a["sizes"])
    assert a["recommended"] == (a["gain_interval"][0] > 0)
    # the toy has no token lengths: compute_budget is null with a reason
    assert d["compute_budget"] is None and "prompt_length" in d["compute_budget_reason"]
    rc, out, err = _cli(capsys, [*BANDIT, "--allocate", "pass_rate:3"])
    assert rc == 0 and "Rollouts allocated across strata of prompts" in out
    rc, out, err = _cli(capsys, [*BANDIT, "--format", "json"])
    d = json.loads(out)
    assert d["allocation"] is None and d["allocation_reason"].startswith("not asked")


@pytest.mark.parametrize("argv, msg", [
    ([*BANDIT, "--allocate", "category"], "no dataset columns"),
    ([*BANDIT, "--allocate", "pass_rate:zero"], "pass_rate:K"),
    ([*BANDIT, "--allocate-multiple", "2"], "option of --allocate"),
    ([*BANDIT, "--allocate", "pass_rate", "--allocate-multiple", "0"], "--allocate-multiple must be >= 1"),
])
def test_cli_bad_allocate_exit_2(capsys, argv, msg):
    rc, _out, err = _cli(capsys, argv)
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_cli_grid_file_with_allocate_exit_2(tmp_path, capsys):
    path = tmp_path / "grid.csv"
    path.write_text("num_prompts,num_generations,mse\n128,2,0.0141\n64,4,0.0092\n32,8,0.0081\n16,16,0.0088\n")
    rc, _out, err = _cli(capsys, [str(path), "--allocate", "pass_rate"])
    assert rc == 2 and "needs a pilot" in err


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    import json

    import _tiny_task as tt

    d = tmp_path_factory.mktemp("alloc_task")
    tt.model_dir(d / "model")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        a, b = (int(x) for x in rng.integers(1, 9, size=2))
        rows.append({"prompt": f"What is {a} + {b}?" + (" Think." * (i % 3)), "answer": str(a + b),
                     "level": "easy" if i % 2 else "hard"})
    (d / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "rewards.py").write_text("def correct(completions, completion_ids, answer, **kw):\n"
                                  "    return [1.0 if a in c else 0.1 * (len(i) % 3) for c, i, a in "
                                  "zip(completions, completion_ids, answer)]\n")
    return d


def _task_argv(d, *extra):
    return ["--model", str(d / "model"), "--dataset", str(d / "data.jsonl"), "--reward", f"{d / 'rewards.py'}:correct",
            "--max-completion-length", "4", "--num-prompts", "24", "--samples-per-prompt", "8",
            "--projection-dim", "8", "--device", "cpu", "--format", "json", "--budget", "64", *extra]


def test_cli_dataset_column_allocation_and_compute_budget(tiny_task, capsys, tmp_path):
    import json

    from transformers import AutoTokenizer

    from ustat_grpo.measurement import task as tk
    from ustat_grpo.measurement.pilot import load_pilot

    pilot = tmp_path / "p.nc"
    rc, out, err = _cli(capsys, _task_argv(tiny_task, "--allocate", "level", "--pilot", str(pilot)))
    assert rc == 0, err
    d = json.loads(out)
    a = d["allocation"]
    assert a["strata"] == ["easy", "hard"] and a["stratifier"] == "labels" and sum(a["sizes"]) == 64
    assert sum(a["num_pilot_prompts"]) <= 24
    # the cost model's prompt tokens are the mean encoded prompt length of the pilot's prompts
    cb = d["compute_budget"]
    stats, _ = load_pilot(str(pilot))
    tok = AutoTokenizer.from_pretrained(str(tiny_task / "model"))
    rows = [json.loads(x) for x in (tiny_task / "data.jsonl").read_text().splitlines()]
    lengths = {len(tk.encode_prompt(tok, r["prompt"])) for r in rows}
    assert set(np.unique(stats.extras["prompt_length"][1])) <= lengths
    assert cb["cost"]["prompt_tokens"] == pytest.approx(stats.extras["prompt_length"][1].mean())
    assert cb["cost"]["completion_tokens"] == pytest.approx(stats.extras["length"][1].mean())
    assert d["compute_budget_reason"] is None and cb["g_star_integer"] >= 2
    # the pilot file alone: pass-rate strata work, a column does not (exit 2, one line)
    rc, out, err = _cli(capsys, [str(pilot), "--allocate", "pass_rate:2", "--format", "json", "--budget", "64"])
    assert rc == 0, err
    assert json.loads(out)["compute_budget"] is not None
    rc, out, err = _cli(capsys, [str(pilot), "--allocate", "level"])
    assert rc == 2 and "a pilot file keeps no dataset columns" in err
    rc, out, err = _cli(capsys, _task_argv(tiny_task, "--allocate", "difficulty"))
    assert rc == 2 and "no such column" in err and "level" in err and len(err.strip().splitlines()) == 1


def test_builtin_task_category_labels_match_the_questions():
    from ustat_grpo.cli._fit_options import Options, build_sampler, strata_labels
    from ustat_grpo.policies.arithmetic import CATEGORIES, question_set

    opts = Options(num_prompts=12, allocate="category", first_question=7)
    sampler, P = build_sampler(opts, "builtin")
    lab = strata_labels(sampler, "builtin", "category", P, 7)
    qs = question_set(7 + P)[7:]
    assert [sampler.row(p)["answer"] for p in range(P)] == [qs[int(sampler.order[p])].answer for p in range(P)]
    assert lab == [qs[int(sampler.order[p])].category for p in range(P)] and set(lab) <= set(CATEGORIES)
    with pytest.raises(ValueError, match="no such column"):
        strata_labels(sampler, "builtin", "difficulty", P, 7)
