"""GRPO training of a transformer policy (``ustat_grpo.experiments.lm_train``) against independent computations."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from ustat_grpo.policies import arithmetic, lm
from ustat_grpo.core._random import child_seed_sequence
from ustat_grpo.experiments import lm_train
from ustat_grpo.theory.estimators import leave_one_out
from ustat_grpo.policies.score import per_sample_scores, sequence_logprob, token_logprobs


@pytest.fixture(scope="module")
def weak():
    torch.set_num_threads(1)
    return lm.load_policy(variant="weak", device="cpu")


def test_token_logprobs_sum_to_sequence_logprob(weak):
    comp = lm.sample_completions(weak, weak.encode(arithmetic.make_dataset(1, seed=3)[0]), 5, rng=0)
    tok = token_logprobs(weak.model, comp.sequences, comp.completion_mask)
    assert tok.shape == (5, comp.sequences.shape[1] - 1)
    n_prompt = len(weak.encode(arithmetic.make_dataset(1, seed=3)[0]))
    assert torch.all(tok[:, : n_prompt - 1] == 0)                            # prompt masked
    with torch.no_grad():                                                    # naive twin: one row, one token at a time
        for r in range(5):
            ids, mask = comp.sequences[r], comp.completion_mask[r]
            logits = weak.model(input_ids=ids[None]).logits[0]
            ref = [float(torch.log_softmax(logits[t - 1].double(), -1)[ids[t]]) if mask[t] else 0.0
                   for t in range(1, len(ids))]
            np.testing.assert_allclose(tok[r].numpy(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tok.sum(-1), sequence_logprob(weak.model, comp.sequences, comp.completion_mask))


def test_several_prompts_of_equal_length_sample_like_one(weak):
    ids = weak.encode("12 + 34 =")
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    one = lm.sample_completions(weak, ids, 4, rng=gen())
    nested = lm.sample_completions(weak, [ids], 4, rng=gen())
    assert torch.equal(one.sequences, nested.sequences)
    two = lm.sample_completions(weak, [ids, weak.encode("56 - 78 =")], 3, rng=gen())
    assert two.sequences.shape[0] == 6 and len(two.texts) == 6
    assert torch.equal(two.sequences[:3, :len(ids)], torch.tensor([ids] * 3))


def test_canonical_probability_is_the_unpadded_teacher_forced_probability(weak):
    problems = arithmetic.make_dataset(6, seed=4)                 # prompts of different lengths: padding
    p = lm_train.canonical_probability(weak, problems)
    for q, prob in zip(problems, p):
        prompt = weak.encode(q)
        comp = weak.tokenizer(f" {q.answer}", add_special_tokens=False)["input_ids"] + [weak.tokenizer.eos_token_id]
        seq = torch.tensor([prompt + comp])
        mask = torch.tensor([[0.0] * len(prompt) + [1.0] * len(comp)])
        with torch.no_grad():
            ref = float(sequence_logprob(weak.model, seq, mask)[0].exp())
        assert prob == pytest.approx(ref, rel=1e-5)
    assert len({len(weak.encode(q)) for q in problems}) > 1


def _first_step_estimate(policy, cfg, seed):
    """The GRPO estimator 1/(BG) sum A W of the first step, from per-sample scores (independent path)."""
    ss = np.random.SeedSequence(seed)
    problems = lm_train.fresh_problems(cfg.num_prompts, child_seed_sequence(ss, 0, 0))
    seqs, mask, Z = lm_train._rollouts(policy, problems, cfg.num_generations, child_seed_sequence(ss, 1, 0), 1.0)
    W = per_sample_scores(policy.model, seqs, mask).double().numpy()          # (N, d), hooks / vmap
    A = Z - (Z.sum(1, keepdims=True) - Z) / (cfg.num_generations - 1)        # leave-one-out advantage
    return np.einsum("n,nd->d", A.reshape(-1), W) / cfg.budget, Z, W


def test_first_sgd_step_is_the_grpo_estimator(weak, tmp_path):
    cfg = lm_train.TrainConfig(num_steps=1, budget=12, num_generations=3, advantage="rloo", optimizer="sgd",
                               learning_rate=0.5, eval_every=1, num_eval=4)
    g, Z, _ = _first_step_estimate(weak, cfg, 11)
    res = lm_train.train_grpo(weak, cfg, rng=11, checkpoint_steps=[1], checkpoint_dir=tmp_path)
    assert res.reward[0] == pytest.approx(Z.mean())
    assert res.grad_norm[0] == pytest.approx(np.linalg.norm(g), rel=1e-4)
    after = lm.load_policy(res.checkpoints[1], template="compact_zero_shot", device="cpu")
    step = after.theta - weak.theta
    np.testing.assert_allclose(step, cfg.learning_rate * g, rtol=1e-3, atol=1e-6)
    assert after.max_new_tokens == weak.max_new_tokens == 8                   # compact template: built-in budget


def test_first_sgd_step_with_dapo_loss_is_the_std_normalised_sum_over_total_tokens(weak, tmp_path):
    """TRL's defaults: std-normalised advantage (eps 1e-4 on the Bessel std, zero-std groups 0) and
    loss_type="dapo": sum_bg A_bg W_bg divided by the step's number of completion tokens."""
    cfg = lm_train.TrainConfig(num_steps=1, budget=16, num_generations=4, advantage="grpo", loss_type="dapo",
                               optimizer="sgd", learning_rate=0.5, eval_every=1, num_eval=4)
    ss = np.random.SeedSequence(0)
    problems = lm_train.fresh_problems(cfg.num_prompts, child_seed_sequence(ss, 0, 0))
    seqs, mask, Z = lm_train._rollouts(weak, problems, cfg.num_generations, child_seed_sequence(ss, 1, 0), 1.0)
    W = per_sample_scores(weak.model, seqs, mask).double().numpy()           # (N, d)
    sd = Z.std(1, ddof=1, keepdims=True)
    A = np.where(sd > 0, (Z - Z.mean(1, keepdims=True)) / (sd + 1e-4), 0.0)  # (B, G)
    tokens = float(mask.sum())
    assert 0 < (sd > 0).sum() and tokens > cfg.budget                        # a non-trivial step
    g = np.einsum("n,nd->d", A.reshape(-1), W) / tokens
    res = lm_train.train_grpo(weak, cfg, rng=0, checkpoint_steps=[1], checkpoint_dir=tmp_path)
    assert res.grad_norm[0] == pytest.approx(np.linalg.norm(g), rel=1e-4)
    after = lm.load_policy(res.checkpoints[1], template="compact_zero_shot", device="cpu")
    np.testing.assert_allclose(after.theta - weak.theta, cfg.learning_rate * g, rtol=1e-3, atol=1e-6)
    seq = lm_train.train_grpo(weak, lm_train.TrainConfig(**{**cfg.__dict__, "loss_type": "sequence_sum"}), rng=0)
    assert seq.grad_norm[0] == pytest.approx(np.linalg.norm(g) * tokens / cfg.budget, rel=1e-4)  # control: scale


def test_first_step_estimate_is_the_leave_one_out_u_statistic(weak):
    cfg = lm_train.TrainConfig(num_steps=1, budget=12, num_generations=3, eval_every=1)
    g, Z, W = _first_step_estimate(weak, cfg, 5)
    np.testing.assert_allclose(leave_one_out(Z, W.reshape(*Z.shape, -1)).mean(0), g, rtol=1e-10, atol=1e-14)


def test_kl_term_has_zero_gradient_at_the_reference(weak):
    base = dict(num_steps=1, budget=8, num_generations=4, eval_every=1, num_eval=4)
    plain = lm_train.train_grpo(weak, lm_train.TrainConfig(**base), rng=2)
    kl = lm_train.train_grpo(weak, lm_train.TrainConfig(**base, beta=0.5), rng=2)
    assert kl.grad_norm[0] == pytest.approx(plain.grad_norm[0], rel=1e-6)


def test_training_is_reproducible_and_pairs_questions_across_g(weak):
    cfg = lm_train.TrainConfig(num_steps=3, budget=8, num_generations=2, eval_every=3, num_eval=8,
                               num_iterations=2, num_minibatches=2, learning_rate=1e-3)
    a = lm_train.train_grpo(weak, cfg, rng=9)
    b = lm_train.train_grpo(weak, cfg, rng=9)
    for k in ("reward", "grad_norm", "p_canonical", "frac_reward_zero_std"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.p_canonical.shape == (2,) and list(a.eval_steps) == [0, 3]
    ss = np.random.SeedSequence(9)
    q4 = lm_train.fresh_problems(4, child_seed_sequence(ss, 0, 1))
    q2 = lm_train.fresh_problems(2, child_seed_sequence(ss, 0, 1))
    assert q4[:2] == q2                                                       # G = 2 and G = 4 see the same questions
    assert a.auc() == pytest.approx(np.trapezoid(a.p_canonical, a.rollouts) / a.rollouts[-1]
                                    if hasattr(np, "trapezoid") else np.trapz(a.p_canonical, a.rollouts) / a.rollouts[-1])
    assert weak.theta.shape == (weak.dim,)                                   # the caller's policy is untouched
    np.testing.assert_array_equal(weak.theta, lm.load_policy(variant="weak", device="cpu").theta)


@pytest.mark.parametrize("bad", [dict(num_generations=3), dict(num_generations=1), dict(advantage="nope"),
                                 dict(optimizer="lion"), dict(loss_type="bnpo"), dict(num_minibatches=3),
                                 dict(learning_rate=0)])
def test_config_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        lm_train.TrainConfig(**{"budget": 16, "num_generations": 4, **bad})


# ------------------------------------------------------------------ per-question group sizes (issue #23)

#: Per-category pieces far apart, so the U-statistic rule gives unequal sizes to different categories.
_UNEQUAL = lm_train.CategoryAllocation(rule="ustat", a2=(1.0, 9.0, 36.0, 0.25, 100.0), a3=(0.0, 1.0, 0.0, 0.0, 4.0))


def _ragged_first_step(policy, cfg, seed, rows=None):
    """First-step gradient (1/B) sum_i (1/G_i) sum_j A_ij W_ij, question by question (naive twin),
    the sizes, rewards, scores and the number of completion tokens; ``rows`` restricts to those questions."""
    ss = np.random.SeedSequence(seed)
    problems = lm_train.fresh_problems(cfg.num_prompts, child_seed_sequence(ss, 0, 0))
    sizes = cfg.allocation.sizes([p.category for p in problems], cfg.budget)
    seqs, mask, Zs = lm_train._rollouts(policy, problems, sizes, child_seed_sequence(ss, 1, 0), 1.0)
    W = per_sample_scores(policy.model, seqs, mask).double().numpy()         # (N, d)
    start = np.r_[0, np.cumsum(sizes)]
    keep = range(len(problems)) if rows is None else rows
    g = np.zeros(W.shape[1])
    A_all = []
    for i in range(len(problems)):
        z, G = Zs[i], sizes[i]
        assert z.shape == (G,)
        A = z - (z.sum() - z) / (G - 1)                                      # leave-one-out, its own G_i
        A_all.append(A)
        if i in keep:
            g += A @ W[start[i]:start[i + 1]] / G
    return g / len(keep), sizes, Zs, W, np.concatenate(A_all), mask


def test_unequal_groups_first_sgd_step_is_the_average_of_per_question_estimators(weak, tmp_path):
    cfg = lm_train.TrainConfig(num_steps=1, budget=24, num_generations=4, advantage="rloo", optimizer="sgd",
                               learning_rate=0.5, eval_every=1, num_eval=4, allocation=_UNEQUAL)
    g, sizes, Zs, W, A, _ = _ragged_first_step(weak, cfg, 3)
    assert len(set(sizes.tolist())) > 1 and sizes.sum() == cfg.budget and len(sizes) == cfg.num_prompts
    res = lm_train.train_grpo(weak, cfg, rng=3, checkpoint_steps=[1], checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(res.group_sizes[0], sizes)
    np.testing.assert_array_equal(res.rollouts_per_step, [cfg.budget])
    assert res.reward[0] == pytest.approx(np.concatenate(Zs).mean())
    assert res.frac_reward_zero_std[0] == pytest.approx(np.mean([np.ptp(z) == 0 for z in Zs]))
    assert res.grad_norm[0] == pytest.approx(np.linalg.norm(g), rel=1e-4)
    after = lm.load_policy(res.checkpoints[1], template="compact_zero_shot", device="cpu")
    np.testing.assert_allclose(after.theta - weak.theta, cfg.learning_rate * g, rtol=1e-3, atol=1e-6)
    # control: the 1/(BG) weighting of equal groups would be a different vector here
    assert not np.allclose(A @ W / cfg.budget, g, rtol=1e-2)
    # first minibatch of two: the average over its own questions
    half = lm_train.TrainConfig(**{**cfg.__dict__, "num_minibatches": 2})
    g_half = _ragged_first_step(weak, half, 3, rows=range(cfg.num_prompts // 2))[0]
    assert lm_train.train_grpo(weak, half, rng=3).grad_norm[0] == pytest.approx(np.linalg.norm(g_half), rel=1e-4)


def test_unequal_groups_with_dapo_loss_divide_the_token_sum_by_the_total_tokens(weak):
    cfg = lm_train.TrainConfig(num_steps=1, budget=24, num_generations=4, advantage="rloo", loss_type="dapo",
                               optimizer="sgd", learning_rate=0.5, eval_every=1, num_eval=4, allocation=_UNEQUAL)
    _, sizes, _, W, A, mask = _ragged_first_step(weak, cfg, 3)
    assert len(set(sizes.tolist())) > 1
    g = A @ W / float(mask.sum())
    assert lm_train.train_grpo(weak, cfg, rng=3).grad_norm[0] == pytest.approx(np.linalg.norm(g), rel=1e-4)


def test_uniform_allocation_reproduces_the_fixed_g_run_bit_for_bit(weak):
    base = dict(num_steps=3, budget=12, num_generations=3, eval_every=1, num_eval=8, learning_rate=1e-3,
                num_minibatches=2, num_iterations=2)
    a = lm_train.train_grpo(weak, lm_train.TrainConfig(**base), rng=4)
    b = lm_train.train_grpo(weak, lm_train.TrainConfig(**base, allocation=dict(rule="uniform")), rng=4)
    for k in ("reward", "grad_norm", "p_canonical", "frac_reward_zero_std", "group_sizes"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    np.testing.assert_array_equal(a.rollouts_per_step, [12] * 3)
    assert a.to_dict()["rollouts_per_step"] == [12] * 3


def test_train_result_dict_is_strict_json_and_reads_back(weak):
    """``to_dict`` is plain JSON (no NaN literal): an unmeasured accuracy is ``"nan"`` and reads back
    as NaN into a float array, as the training grids' cached cells are read."""
    import json

    res = lm_train.train_grpo(weak, lm_train.TrainConfig(num_steps=2, budget=8, num_generations=4, eval_every=1,
                                                         num_eval=4), rng=5)
    res.accuracy[0] = np.nan                           # as when accuracy is not measured
    back = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    acc = np.full(res.accuracy.shape, 0.0)
    acc[:] = back["accuracy"]
    np.testing.assert_array_equal(acc, res.accuracy)   # NaN included (assert_array_equal treats NaN as equal)
    np.testing.assert_array_equal(np.asarray(back["p_canonical"], float), res.p_canonical)
    assert back["group_sizes"] == res.group_sizes.tolist()


def test_every_rule_spends_the_budget_exactly_on_the_same_questions():
    a2, a3, p = (1.0, 2.0, 3.0, 4.0, 5.0), (5.0, 4.0, 3.0, 2.0, 1.0), (0.05, 0.3, 0.5, 0.8, 1.0)
    cats = [q.category for q in lm_train.fresh_problems(16, 7)]
    for rule in lm_train.ALLOCATION_RULES:
        al = lm_train.CategoryAllocation(rule=rule, a2=a2, a3=a3, pass_rate=p)
        s = al.sizes(cats, 64)
        assert s.sum() == 64 and s.min() >= 2 and s.shape == (16,)
        same = [s[i] for i in range(16) if cats[i] == cats[0]]
        assert len(set(same)) <= 2                                           # a category's questions: equal up to 1
    cfg = lm_train.TrainConfig(budget=64, num_generations=4, allocation=al)
    assert lm_train.TrainConfig(**asdict(cfg)) == cfg                        # the JSON round trip of grid cells


@pytest.mark.parametrize("bad", [dict(rule="nope"), dict(rule="ustat", a2=(1.0,) * 5),
                                 dict(rule="knapsack"), dict(rule="pass_rate", pass_rate=(0.5,) * 4),
                                 dict(rule="pass_rate", pass_rate=(0.5, 0.5, 0.5, 0.5, 1.5)),
                                 dict(rule="uniform", min_size=1), dict(rule="uniform", max_size=1),
                                 dict(rule="uniform", categories=("a", "a")),
                                 dict(rule="ustat", a2=(1.0,) * 5, a3=(1.0, 1.0, -0.5, 1.0, 1.0))])
def test_category_allocation_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        lm_train.CategoryAllocation(**bad)


def test_category_allocation_rejects_unknown_categories_and_impossible_budgets():
    al = lm_train.CategoryAllocation(rule="uniform")
    with pytest.raises(ValueError, match="categories"):
        al.sizes(["two_step", "calculus"], 8)
    with pytest.raises(ValueError, match="budget"):
        al.sizes(["two_step"] * 5, 8)
    with pytest.raises(TypeError, match="allocation"):
        lm_train.TrainConfig(budget=16, num_generations=4, allocation="ustat")
