"""GRPO training of a transformer policy (``ustat_grpo.lm_train``) against independent computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ustat_grpo import arithmetic, lm, lm_train
from ustat_grpo.estimators import leave_one_out
from ustat_grpo.score import per_sample_scores, sequence_logprob, token_logprobs


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
    problems = lm_train.fresh_problems(cfg.num_prompts, lm_train._stream(ss, 0, 0))
    seqs, mask, Z = lm_train._rollouts(policy, problems, cfg.num_generations, lm_train._stream(ss, 1, 0), 1.0)
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
    problems = lm_train.fresh_problems(cfg.num_prompts, lm_train._stream(ss, 0, 0))
    seqs, mask, Z = lm_train._rollouts(weak, problems, cfg.num_generations, lm_train._stream(ss, 1, 0), 1.0)
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
    q4 = lm_train.fresh_problems(4, lm_train._stream(ss, 0, 1))
    q2 = lm_train.fresh_problems(2, lm_train._stream(ss, 0, 1))
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
