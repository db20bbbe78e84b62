"""Scores at temperature T, the configured sampler, the pool-resampled MSE(G) and the self-check."""
import itertools

import numpy as np
import pytest
import torch

from ustat_grpo.policies import lm
from ustat_grpo.scaling import pool

torch.set_num_threads(1)


def _sharp(model, scale=8.0):
    """Scale the output head so that the tiny model's next-token law is far from uniform."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    return model


def _policy(dtype=torch.float32, max_new_tokens=3, scale=40.0):
    import _tiny_task as tt

    tok = tt.tokenizer()
    net = _sharp(tt.model(tok, dtype=dtype), scale)
    return lm.LanguageModelPolicy(model=net, tokenizer=tok, template="zero_shot", name="tiny", max_new_tokens=max_new_tokens)


def test_scores_at_temperature_equal_explicit_log_softmax_reference():
    pol = _policy(dtype=torch.float64)
    ids = torch.tensor([[1, 40, 41, 42, 50, 51, 2], [1, 40, 43, 44, 45, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 0, 0]], dtype=torch.float64)
    T = 0.7
    s = lm.per_sample_scores(pol.model, ids, mask, temperature=T)
    names = lm.parameter_names(pol.model)
    for i in range(2):
        pol.model.zero_grad(set_to_none=True)
        z = pol.model(input_ids=ids[i:i + 1]).logits[0, :-1]  # (T-1, V)
        lp = torch.log_softmax(z / T, -1).gather(-1, ids[i, 1:, None])[:, 0]
        (lp * mask[i, 1:]).sum().backward()
        ref = torch.cat([dict(pol.model.named_parameters())[n].grad.reshape(-1) for n in names])
        torch.testing.assert_close(s[i], ref, rtol=1e-10, atol=1e-12)
    # T = 1 is the unchanged default path
    torch.testing.assert_close(lm.per_sample_scores(pol.model, ids, mask, temperature=1.0),
                               lm.per_sample_scores(pol.model, ids, mask), rtol=0, atol=0)
    with pytest.raises(ValueError, match="temperature"):
        lm.per_sample_scores(pol.model, ids, mask, temperature=0.0)


@pytest.mark.parametrize("T", [0.5, 1.0, 1.7])
def test_exact_enumeration_mean_score_is_zero(T):
    """sum_y pi_T(y) grad log pi_T(y) = 0 over every completion of <= 3 tokens (float64)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=5, n_positions=16, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    cfg._attn_implementation = "eager"
    net = _sharp(GPT2LMHeadModel(cfg).double().eval(), 4.0)
    eos, prompt, L = 4, [0, 1], 3
    seqs = [list(y) for n in range(1, L + 1) for y in itertools.product(range(5), repeat=n)
            if eos not in y[:-1] and (y[-1] == eos or n == L)]  # terminated by EOS, or of length L
    width = len(prompt) + L
    ids = torch.tensor([prompt + y + [0] * (L - len(y)) for y in seqs])  # (K, width)
    mask = torch.tensor([[0.0] * len(prompt) + [1.0] * len(y) + [0.0] * (L - len(y)) for y in seqs],
                        dtype=torch.float64)
    with torch.no_grad():
        lp = torch.log_softmax(net(input_ids=ids).logits[:, :-1] / T, -1).gather(-1, ids[:, 1:, None])[..., 0]
        prob = torch.exp((lp * mask[:, 1:]).sum(1))  # (K,)
    assert ids.shape[1] == width and abs(float(prob.sum()) - 1) < 1e-12
    s = lm.per_sample_scores(net, ids, mask, temperature=T, chunk_size=64)  # (K, d)
    mean = (prob[:, None] * s).sum(0)
    assert float(mean.abs().max()) < 1e-12, float(mean.abs().max())
    assert float(s.abs().max()) > 1e-2  # the scores themselves are not trivially zero
    if T != 1.0:  # negative control: scoring at the wrong temperature leaves a mean
        wrong = (prob[:, None] * lm.per_sample_scores(net, ids, mask, temperature=1.0, chunk_size=64)).sum(0)
        assert float(wrong.abs().max()) > 1e-3


def test_sampled_mean_score_zero_at_temperature_and_mismatch_flagged():
    pol = _policy()
    ids = pol.tokenizer("What is 2 + 3?")["input_ids"]
    T = 0.7
    comp = lm.sample_completions(pol, ids, 600, rng=0, temperature=T)
    assert float(comp.log_ratio.abs().max()) == 0.0 and float(comp.truncated_mass.max()) == 0.0
    good = lm.per_sample_scores(pol.model, comp.sequences, comp.completion_mask, temperature=T, chunk_size=128)
    assert pool.score_mean_check(good.double().numpy()).passed
    bad = lm.per_sample_scores(pol.model, comp.sequences, comp.completion_mask, temperature=1.0, chunk_size=128)
    chk = pool.score_mean_check(bad.double().numpy())
    assert not chk.passed and chk.z > 10


def test_sampler_truncation_diagnostics_and_order():
    pol = _policy()
    ids = pol.tokenizer("What is 2 + 3?")["input_ids"]
    with pytest.warns(UserWarning, match="no longer"):
        lm.sample_completions(pol, ids, 2, rng=0, top_p=0.5)
    c = lm.sample_completions(pol, ids, 64, rng=0, temperature=0.8, top_p=0.8, warn=False)
    assert float(c.truncated_mass.mean()) > 0 and float(c.log_ratio.max()) <= 1e-6
    c = lm.sample_completions(pol, ids, 64, rng=0, top_k=1, warn=False)  # greedy: one distinct completion
    assert len({tuple(r) for r in c.completion_ids}) == 1
    c = lm.sample_completions(pol, ids, 32, rng=0, min_p=0.5, repetition_penalty=1.3, warn=False)
    assert np.isfinite(c.log_ratio.numpy()).all()
    # truncated flags: no EOS within max_new_tokens; the ids end with EOS otherwise
    for row, t in zip(c.completion_ids, c.truncated.tolist()):
        assert t == (row[-1] not in pol.eos_token_ids)


def test_default_sampler_unchanged_by_new_options():
    pol = _policy()
    ids = pol.tokenizer("What is 2 + 3?")["input_ids"]
    a = lm.sample_completions(pol, ids, 16, rng=3)
    b = lm.sample_completions(pol, ids, 16, rng=3, temperature=1.0, top_k=0, top_p=1.0, min_p=None,
                              repetition_penalty=1.0)
    assert torch.equal(a.sequences, b.sequences)


def test_pool_mse_leave_one_out_matches_exact_constants_and_negative_control():
    """Pool-resampled MSE(G) of leave-one-out = A1/B + A2/(BG) + A3/(BG(G-1)) on the toy bandit."""
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.theory.mse import constants as exact_constants
    from ustat_grpo.scaling.optimum import mse_design
    from ustat_grpo.core.testing import bonferroni_z

    policy = default_bandit()
    A = np.asarray(exact_constants(policy.moments()), float)[:3]
    s = policy.sample(400, 16, rng=np.random.default_rng(1))
    gs = [2, 4, 8]
    zmax = bonferroni_z(1e-6, len(gs))
    res = pool.pool_mse(s.rewards, s.scores, budget=64, num_generations=gs, estimators=("leave_one_out",), rng=2)
    exact = mse_design(64 / res.num_generations, res.num_generations) @ A
    z = (res.mse[0] - exact) / res.mse_se[0]
    assert np.all(np.abs(z) < zmax), z
    assert np.all(np.abs(res.bias_sq[0]) < zmax * res.bias_sq_se[0])
    bad = pool.pool_mse(s.rewards, s.scores, budget=64, num_generations=gs, estimators=("leave_one_out",),
                        rng=2, with_replacement=True)
    zb = (bad.mse[0] - exact) / bad.mse_se[0]
    assert np.any(np.abs(zb) > zmax), zb
    # and the constants measured from the same samples agree too
    from ustat_grpo.scaling.constants import estimate_constants

    est = estimate_constants(s.rewards, s.scores)
    pred = mse_design(64 / res.num_generations, res.num_generations) @ np.asarray(est.params)
    assert np.all(np.abs(pred - res.mse[0]) < zmax * np.hypot(res.mse_se[0], 0.05 * pred))
