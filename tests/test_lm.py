"""Tests of transformer policies and per-sample scores (ustat_grpo.policies.lm).

Tiny randomly initialised GPT-2 and Qwen2 models (real transformers architectures) keep the
default run fast; the shipped built-in weights are exercised by the sampling tests.
"""
import shutil

import numpy as np
import pytest
import torch

from ustat_grpo.policies import arithmetic, lm
from ustat_grpo.measurement import sampler

torch.set_num_threads(1)


def _tiny(arch: str, dtype=torch.float32, n_positions=64):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=80, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
                         tie_word_embeddings=True)
        cfg._attn_implementation = "eager"
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = Qwen2Config(vocab_size=80, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=0)
        cfg._attn_implementation = "eager"
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype).eval()


def _batch(rng, n=6, t=14):
    ids = torch.as_tensor(rng.integers(4, 80, size=(n, t)))  # (N, T)
    mask = torch.zeros(n, t)  # (N, T)
    for i in range(n):  # prompt of 6 tokens, completion of random length, then right padding
        end = 6 + int(rng.integers(1, t - 6 + 1))
        mask[i, 6:end] = 1
        ids[i, end:] = 0
    return ids, mask


def _autograd_score(model, ids, mask, names):
    """Naive twin: one ordinary backward pass per sequence."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids[None]).logits[0, :-1]  # (T-1, V)
    lp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1).gather(-1, ids[1:, None])[:, 0]
    (lp * mask[1:]).sum().backward()
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.reshape(-1) if params[n].grad is not None
                      else torch.zeros(params[n].numel()) for n in names])


@pytest.mark.parametrize("method", ["auto", "vmap"])
@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
@pytest.mark.parametrize("subset", [None, "h.1.", "layers.1."])
def test_per_sample_scores_equal_autograd(arch, subset, method):
    if subset is not None and (subset.startswith("h.") != (arch == "gpt2")):
        pytest.skip("subset names belong to the other architecture")
    rng = np.random.default_rng(11)
    model = _tiny(arch)
    ids, mask = _batch(rng)
    names = lm.parameter_names(model, subset)
    s = lm.per_sample_scores(model, ids, mask, params=subset, chunk_size=4, method=method)  # (N, d)
    assert s.shape == (ids.shape[0], sum(model.get_parameter(n).numel() for n in names))
    for i in range(ids.shape[0]):
        ref = _autograd_score(model, ids[i], mask[i], names)
        rel = (s[i] - ref).norm() / ref.norm()
        assert rel < 1e-5, (i, float(rel))
    # Negative control: the score of another sequence is far off.
    assert (s[0] - _autograd_score(model, ids[1], mask[1], names)).norm() > 0.1 * s[0].norm()


def test_scores_float64_and_chunking_invariance():
    rng = np.random.default_rng(5)
    model = _tiny("gpt2", torch.float64)
    ids, mask = _batch(rng, n=5)
    a = lm.per_sample_scores(model, ids, mask, chunk_size=5)
    b = lm.per_sample_scores(model, ids, mask, chunk_size=2)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    names = lm.parameter_names(model)
    ref = _autograd_score(model, ids[3], mask[3], names)
    torch.testing.assert_close(a[3], ref, rtol=1e-10, atol=1e-12)


def test_hook_scores_equal_vmap_frozen_tied_and_projected():
    """The hook path (GPT-2: Conv1D, LayerNorm, tied embedding / LM head) equals the vmap path."""
    from ustat_grpo.policies import score

    rng = np.random.default_rng(8)
    model = _tiny("gpt2")
    ids, mask = _batch(rng, n=5)
    ref = lm.per_sample_scores(model, ids, mask, chunk_size=2, method="vmap")
    hooks = lm.per_sample_scores(model, ids, mask, chunk_size=2, method="hooks")
    torch.testing.assert_close(hooks, ref, rtol=1e-5, atol=1e-6)
    lm.per_sample_scores(model, ids, mask, chunk_size=3)
    assert score._HOOKS_CHECKED[model][(tuple(lm.parameter_names(model)), 1.0)] is True   # auto chose hooks
    for p in model.parameters():                       # frozen model: the graph starts at the hooks
        p.requires_grad_(False)
    torch.testing.assert_close(lm.per_sample_scores(model, ids, mask, method="hooks"), ref, rtol=1e-5, atol=1e-6)
    sk = lm.Sketch(ref.shape[1], 7, seed=1)
    torch.testing.assert_close(lm.per_sample_scores(model, ids, mask, chunk_size=2, projection=sk),
                               sk(ref), rtol=1e-4, atol=1e-6)
    parts = lm.per_sample_scores(model, ids, mask, params="ln_f", flatten=False, method="hooks")
    assert set(parts) == {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    with pytest.raises(ValueError, match="hooks"):
        lm.per_sample_scores(_tiny("qwen2"), ids, mask, method="hooks")    # RMSNorm: vmap only
    with pytest.raises(ValueError, match="method"):
        lm.per_sample_scores(model, ids, mask, method="jit")


def test_gram_trick_equals_direct_norm():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(10, 300))
    v = rng.normal(size=300)
    w = rng.normal(size=(7, 10))
    direct = ((w @ s - v) ** 2).sum(-1)
    fast = lm.squared_errors(w, lm.gram(s), s @ v, v @ v)
    np.testing.assert_allclose(fast, direct, rtol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_sketch_preserves_inner_products(kind):
    rng = np.random.default_rng(8)
    d, k, n = 3000, 256, 12
    x = torch.as_tensor(rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=(n, 1)))
    sk = lm.Sketch(d, k, kind=kind, seed=3, block=1000)
    y = sk(x)
    assert y.shape == (n, k)
    torch.testing.assert_close(y, lm.Sketch(d, k, kind=kind, seed=3, block=1000)(x))
    assert not torch.allclose(y, lm.Sketch(d, k, kind=kind, seed=4, block=1000)(x))
    xi, xj = np.triu_indices(n)
    xn = x.numpy()
    err = (y @ y.T).numpy()[xi, xj] - (xn @ xn.T)[xi, xj]
    z = err / sk.inner_product_std(xn[xi], xn[xj])
    assert np.abs(z).max() < 5.5  # 78 pairs, family-wise alpha ~ 3e-6
    # Unbiasedness across seeds: mean z over 40 independent sketches of one pair.
    zs = []
    for seed in range(40):
        yy = lm.Sketch(d, 64, kind=kind, seed=100 + seed, block=1000)(x[:2])
        zs.append(((yy[0] @ yy[1]).item() - xn[0] @ xn[1])
                  / lm.Sketch(d, 64).inner_product_std(xn[0], xn[1]))
    assert abs(np.mean(zs)) * np.sqrt(40) < 5.0
    # Negative control: a sketch missing its 1/sqrt(k) scale breaks the bound.
    z_bad = (err + (xn @ xn.T)[xi, xj]) * (k - 1) / sk.inner_product_std(xn[xi], xn[xj])
    assert np.abs(z_bad).max() > 5.5


def test_builtin_tokenizer_roundtrip():
    tok = lm.build_tokenizer()
    text = arithmetic.format_prompt("25 - (10 + 5) =", "few_shot")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.unk_token_id not in ids
    assert tok.decode(ids) == text


@pytest.fixture(scope="module")
def builtin():
    return lm.load_policy(None, variant="strong", device="cpu")


def test_builtin_checksum_verified(tmp_path):
    d = tmp_path / "b"
    shutil.copytree(lm.BUILTIN_DIR, d)
    lm._verify_builtin(d)
    with open(d / "model-weak.safetensors", "r+b") as fh:
        fh.seek(-3, 2)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="checksum mismatch"):
        lm._verify_builtin(d)


def test_sampling_is_exact_for_first_token(builtin):
    """First completion token frequencies match pi_theta(. | x) (binomial z-bound, 5 tokens)."""
    prob = arithmetic.Problem(text="23 + 19 =", answer=42, category="two_step")
    ids = builtin.encode(prob)
    with torch.no_grad():
        p = torch.softmax(builtin.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
    gen = torch.Generator().manual_seed(0)
    pol = lm.LanguageModelPolicy(model=builtin.model, tokenizer=builtin.tokenizer, template=builtin.template,
                    name="x", max_new_tokens=1)
    n = 4000
    comp = lm.sample_completions(pol, ids, n, rng=gen)
    first = comp.sequences[:, len(ids)]
    top = torch.argsort(p, descending=True)[:5]
    for t in top:
        phat = (first == t).double().mean()
        z = (phat - p[t]) / torch.sqrt(p[t] * (1 - p[t]) / n)
        assert abs(float(z)) < 5.3, (int(t), float(phat), float(p[t]))


def test_truncation_warns(builtin):
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="no longer"):
        lm.sample_completions(builtin, builtin.encode("2 + 2 ="), 2, rng=gen, top_k=5)


def test_prompt_samples_shapes_determinism_and_score_consistency(builtin):
    r, s = sampler.prompt_samples(builtin, num_prompts=2, samples_per_prompt=8, rng=7,
                             projection_dim=None)
    assert r.shape == (2, 8) and s.shape == (2, 8, builtin.num_parameters)
    assert set(np.unique(r)) <= {0.0, 1.0}
    r2, s2 = sampler.prompt_samples(builtin, num_prompts=2, samples_per_prompt=8, rng=7,
                               projection_dim=None)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_array_equal(s, s2)
    rp, sp = sampler.prompt_samples(builtin, num_prompts=2, samples_per_prompt=8, rng=7,
                               projection_dim=64)
    np.testing.assert_array_equal(r, rp)
    assert sp.shape == (2, 8, 64)
    sk = lm.Sketch(builtin.num_parameters, 64, seed=7)
    np.testing.assert_allclose(sp[0], sk(torch.as_tensor(s[0]).float()).double().numpy(),
                               rtol=1e-4, atol=1e-4 * np.abs(sp[0]).max())


def test_fig4_replicate_errors_match_direct_computation():
    """Gram-only replicate errors of simulations/fig4_lm.py equal explicit vector arithmetic."""
    from simulations.fig4_lm import estimator_weights, replicate_errors

    rng = np.random.default_rng(4)
    N, d, G = 20, 50, 4
    s = rng.normal(size=(N, d))
    z = rng.integers(0, 2, size=N).astype(float)
    errs = replicate_errors(lm.gram(s), z, G, 3, rng=np.random.default_rng(9))
    idx_rng = np.random.default_rng(9)
    for r in range(3):
        perm = idx_rng.permutation(N)
        grp, ref = perm[:G], perm[G:]
        a = z[ref, None] * s[ref]  # (m, d)
        v = a.mean(0)
        g2 = (a.sum(0) @ a.sum(0) - (a * a).sum()) / (len(ref) * (len(ref) - 1))
        w = estimator_weights(z[grp][None], np.array([z[ref].mean()]))
        for name in ("vanilla", "leave_one_out", "oracle"):
            est = w[name][0] @ s[grp]
            direct = est @ est - 2 * est @ v + g2
            np.testing.assert_allclose(errs[name][r], direct, rtol=1e-10)
    # GRPO weights are the leave-one-out closed form (1/(G-1)) (z_i - zbar).
    zz = rng.integers(0, 2, size=(5, G)).astype(float)
    np.testing.assert_allclose(estimator_weights(zz, zz.mean(-1))["leave_one_out"],
                               (zz - zz.mean(-1, keepdims=True)) / (G - 1), atol=1e-12)


def test_load_user_model_directory(tmp_path):
    """A local HF directory (tiny GPT-2 + the built-in tokenizer) loads, samples and scores."""
    model = _tiny("gpt2", n_positions=96)
    tok = lm.build_tokenizer()
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    pol = lm.load_policy(tmp_path, device="cpu", max_new_tokens=4)
    # the built-in tokenizer has a chat template (a user turn -> <bos> + its text), so it is used
    assert pol.template == "few_shot" and pol.use_chat_template
    assert pol.prompt("1 + 1 =").startswith("<bos>") and pol.prompt("1 + 1 =").endswith("Now solve:\nProblem: 1 + 1 =")
    assert pol.encode("1 + 1 =")[:2] != [tok.bos_token_id] * 2
    pol = lm.load_policy(tmp_path, device="cpu", max_new_tokens=4, template="zero_shot")
    r, s = sampler.prompt_samples(pol, num_prompts=1, samples_per_prompt=3, rng=0, projection_dim=16)
    assert r.shape == (1, 3) and s.shape == (1, 3, 16) and np.isfinite(s).all()


def test_unflattened_scores_match_flat():
    rng = np.random.default_rng(3)
    model = _tiny("gpt2")
    ids, mask = _batch(rng, n=4)
    flat = lm.per_sample_scores(model, ids, mask, chunk_size=3)
    parts = lm.per_sample_scores(model, ids, mask, chunk_size=3, flatten=False)
    torch.testing.assert_close(torch.cat([parts[n].reshape(4, -1) for n in lm.parameter_names(model)], 1), flat)


# --------------------------------------------------------------------------- GPU paths (CUDA only)

@pytest.mark.gpu
@pytest.mark.parametrize("method", ["auto", "vmap"])
@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_gpu_scores_equal_cpu_autograd(arch, method):
    """Per-sample scores computed on CUDA equal plain CPU autograd (fp32, 1e-4 relative)."""
    rng = np.random.default_rng(21)
    model = _tiny(arch)
    ids, mask = _batch(rng)
    names = lm.parameter_names(model)
    ref = torch.stack([_autograd_score(model, ids[i], mask[i], names) for i in range(len(ids))])
    s = lm.per_sample_scores(model.cuda(), ids.cuda(), mask.cuda(), chunk_size=4, method=method)
    assert s.device.type == "cuda"
    rel = (s.cpu() - ref).norm(dim=1) / ref.norm(dim=1)
    assert float(rel.max()) < 1e-4, rel


@pytest.mark.gpu
def test_gpu_prompt_samples_builtin_deterministic():
    """The built-in policy runs on CUDA end to end; the same seed gives the same numbers."""
    pol = lm.load_policy(None, variant="weak", device="cuda")
    assert pol.device.type == "cuda"
    a = sampler.prompt_samples(pol, num_prompts=2, samples_per_prompt=8, rng=3, projection_dim=32)
    b = sampler.prompt_samples(pol, num_prompts=2, samples_per_prompt=8, rng=3, projection_dim=32)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    assert a[1].shape == (2, 8, 32) and np.isfinite(a[1]).all()


def test_gpu_check_script_says_no_gpu(tmp_path):
    """scripts/gpu_check.sh on a machine without CUDA: exit 77, a clear message, nothing written."""
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the whole check")
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    res = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, check=False)
    assert res.returncode == 77, res.stderr
    assert "no GPU" in res.stderr
    assert not (tmp_path / "out").exists()


def test_prompt_samples_keep_the_per_question_seed_stream(builtin):
    """Question ``p`` of ``prompt_samples(rng=s)`` is sampled by the torch generator seeded with
    ``int(SeedSequence(s).spawn(P)[p].generate_state(1, uint64)[0]) >> 1`` (the published stream)."""
    r, _ = sampler.prompt_samples(builtin, num_prompts=2, samples_per_prompt=6, rng=5, projection_dim=16)
    problems = arithmetic.make_dataset(500, seed=0)[:2]
    for p, ss in enumerate(np.random.SeedSequence(5).spawn(2)):
        gen = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0]) >> 1)
        comp = lm.sample_completions(builtin, builtin.encode(problems[p]), 6, rng=gen)
        want = [arithmetic.verify(t, problems[p].answer) for t in comp.texts]
        np.testing.assert_array_equal(r[p], want)


def test_policy_satisfies_the_protocol(builtin):
    from ustat_grpo.policies.policy import ExactMoments, Policy, Sample

    assert isinstance(builtin, Policy) and not isinstance(builtin, ExactMoments)
    th = builtin.theta
    assert th.shape == (builtin.dim,) and th.dtype == np.float64
    s = builtin.sample(2, 3, rng=4)
    assert isinstance(s, Sample) and s.rewards.shape == (2, 3) and s.scores.shape == (2, 3, builtin.dim)
    s2 = builtin.sample(2, 3, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(s.prompt_ids, s2.prompt_ids)
    np.testing.assert_array_equal(s.scores, s2.scores)
    moved = builtin.with_theta(th * 0.5)
    np.testing.assert_allclose(moved.theta, th * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(builtin.theta, th)  # the original model is untouched
    with pytest.raises(ValueError, match="theta must have shape"):
        builtin.with_theta(th[:-1])


def test_hook_scores_honour_the_temperature():
    # both score paths differentiate log_softmax(z / T); the hook path must not ignore T
    rng = np.random.default_rng(9)
    model = _tiny("gpt2")
    ids, mask = _batch(rng, n=4)
    ref = lm.per_sample_scores(model, ids, mask, method="vmap", temperature=0.7)
    hooks = lm.per_sample_scores(model, ids, mask, method="hooks", temperature=0.7)
    torch.testing.assert_close(hooks, ref, rtol=1e-5, atol=1e-6)
    plain = lm.per_sample_scores(model, ids, mask, method="hooks")
    assert (hooks - plain).norm() > 1e-3 * plain.norm()            # control: T changes the score


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_sequence_logprob_is_what_the_scores_differentiate(arch):
    # the public training log-probability: its per-sequence gradient is per_sample_scores' row
    rng = np.random.default_rng(11)
    model = _tiny(arch)
    ids, mask = _batch(rng, n=3)
    scores = lm.per_sample_scores(model, ids, mask, temperature=0.8)
    names = lm.parameter_names(model)
    for i in range(3):
        model.zero_grad(set_to_none=True)
        lm.sequence_logprob(model, ids[i:i + 1], mask[i:i + 1], temperature=0.8).sum().backward()
        g = torch.cat([dict(model.named_parameters())[n].grad.reshape(-1) for n in names])
        torch.testing.assert_close(scores[i], g, rtol=1e-5, atol=1e-6)
    lp = lm.sequence_logprob(model, ids, mask)
    assert lp.shape == (3,) and bool((lp < 0).all())


def test_saved_builtin_checkpoint_with_its_compact_template(tmp_path):
    # issue 15: a saved built-in checkpoint has 128 positions; the paper's few-shot prompt does not fit
    from ustat_grpo.cli import fit_scaling as fs
    pol = lm.load_policy(None, variant="weak", device="cpu")
    pol.model.save_pretrained(tmp_path)
    pol.tokenizer.save_pretrained(tmp_path)
    argv = ["--model", str(tmp_path), "--num-prompts", "4", "--samples-per-prompt", "8", "--projection-dim", "16",
            "--format", "json", "--template", "compact_zero_shot", "--first-question", "100"]
    assert fs.main(argv) == 0
    rewards, _ = sampler.prompt_samples(str(tmp_path), num_prompts=4, samples_per_prompt=8, rng=0, device="cpu",
                                        projection_dim=16, template="compact_zero_shot", first_question=496)
    assert rewards.shape == (4, 8)
    # past the paper's 500: the next seeded set (arithmetic.question_set), a prefix of any longer run
    s = sampler.arithmetic_sampler(str(tmp_path), num_prompts=4, first_question=498, device="cpu")
    rows = s.data.rows                       # chat messages: the saved tokenizer has a chat template
    text = [r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"] for r in rows]
    assert [r["answer"] for r in rows] == [p.answer for p in arithmetic.question_set(502)[498:]]
    assert all(p.text in t for p, t in zip(arithmetic.question_set(502)[498:], text))
    assert all(p.text in t for p, t in zip(arithmetic.make_dataset(500)[498:], text[:2]))
    with pytest.raises(ValueError, match=">= 0"):
        sampler.arithmetic_sampler(str(tmp_path), num_prompts=4, first_question=-1, device="cpu")


# --------------------------------------------------------------------------- device_map (accelerate)

def _saved_weak(path):
    pol = lm.load_policy(None, variant="weak", device="cpu")
    pol.model.save_pretrained(path)
    pol.tokenizer.save_pretrained(path)
    return str(path)


def _same_samples(a, b, *, exact=True):
    """Same completions (rewards) and scores from the same seed under two loads of one checkpoint."""
    ra, sa = sampler.prompt_samples(a, num_prompts=3, samples_per_prompt=8, rng=3, projection_dim=32)
    rb, sb = sampler.prompt_samples(b, num_prompts=3, samples_per_prompt=8, rng=3, projection_dim=32)
    np.testing.assert_array_equal(ra, rb)
    if exact:
        np.testing.assert_array_equal(sa, sb)
    else:
        np.testing.assert_allclose(sa, sb, rtol=1e-4, atol=1e-6)


def test_device_map_auto_on_cpu_equals_a_plain_load(tmp_path):
    """A saved built-in checkpoint loaded with device_map="auto" (accelerate; all on the CPU here) has
    the same theta and samples the same completions and scores as a plain load, bit for bit."""
    pytest.importorskip("accelerate")
    if torch.cuda.is_available():
        pytest.skip("with a GPU, auto places the model there: test_gpu_device_map_* cover it")
    path = _saved_weak(tmp_path)
    plain = lm.load_policy(path, template="compact_zero_shot", device="cpu")
    mapped = lm.load_policy(path, template="compact_zero_shot", device_map="auto")
    assert mapped.device == torch.device("cpu") and mapped.max_new_tokens == plain.max_new_tokens
    assert {p.device.type for p in mapped.model.parameters()} == {"cpu"}
    np.testing.assert_array_equal(mapped.theta, plain.theta)
    _same_samples(plain, mapped)
    again = mapped.with_theta(plain.theta)               # parameter by parameter (one device or several)
    np.testing.assert_array_equal(again.theta, plain.theta)


def test_device_map_errors_are_clear(tmp_path, monkeypatch):
    import importlib.util

    with pytest.raises(ValueError, match="built-in models fit on one device"):
        lm.load_policy(None, device_map="auto")
    with pytest.raises(ValueError, match="not both"):
        lm.load_policy(str(tmp_path), device="cpu", device_map="auto")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ImportError, match="pip install accelerate"):
        lm.load_policy(str(tmp_path), device_map="auto")


def test_cli_device_map_usage_errors(capsys, tmp_path):
    from ustat_grpo.cli import fit_scaling as fs

    for argv, msg in [(["--device-map", "auto"], "needs --model PATH"),
                      (["--model", str(tmp_path), "--device-map", "auto", "--device", "cpu"], "not both"),
                      (["--model", str(tmp_path), "--device-map", "{0: 1}"], "not a JSON object"),
                      (["--source", "bandit", "--device-map", "auto"],
                       "--device-map is not an option of the built-in toy bandit")]:
        assert fs.main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err


@pytest.mark.gpu
def test_gpu_device_map_auto_equals_a_plain_gpu_load(tmp_path):
    """On one GPU, device_map="auto" puts the whole model there: same theta, same samples as device="cuda"."""
    pytest.importorskip("accelerate")
    path = _saved_weak(tmp_path)
    plain = lm.load_policy(path, template="compact_zero_shot", device="cuda:0")
    mapped = lm.load_policy(path, template="compact_zero_shot", device_map="auto")
    assert mapped.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(mapped.theta, plain.theta)
    _same_samples(plain, mapped)


@pytest.mark.gpu
def test_gpu_device_map_over_two_gpus(tmp_path):
    """A real multi-device map (layer 0 on cuda:0, layer 1 and the final norm on cuda:1): the
    parameters sit on both GPUs, theta is the checkpoint's, and the samples are a one-GPU load's
    (same completions; scores to 1e-4)."""
    pytest.importorskip("accelerate")
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    path = _saved_weak(tmp_path)
    split = {"transformer.wte": 0, "transformer.wpe": 0, "transformer.drop": 0, "transformer.h.0": 0,
             "transformer.h.1": 1, "transformer.ln_f": 1, "lm_head": 0}   # lm_head is tied to wte
    plain = lm.load_policy(path, template="compact_zero_shot", device="cuda:0")
    mapped = lm.load_policy(path, template="compact_zero_shot", device_map=split)
    assert {str(p.device) for p in mapped.model.parameters()} == {"cuda:0", "cuda:1"}
    assert mapped.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(mapped.theta, plain.theta)
    _same_samples(plain, mapped, exact=False)


@pytest.mark.gpu
def test_gpu_device_map_with_cpu_offload_is_refused(tmp_path):
    """Offloaded layers have no resident parameters to score: a clear error, not wrong numbers."""
    pytest.importorskip("accelerate")
    path = _saved_weak(tmp_path)
    split = {"transformer.wte": 0, "transformer.wpe": 0, "transformer.drop": 0, "transformer.h.0": 0,
             "transformer.h.1": "cpu", "transformer.ln_f": "cpu", "lm_head": 0}
    with pytest.raises(ValueError, match="offloads layers"):
        lm.load_policy(path, template="compact_zero_shot", device_map=split)


# --------------------------------------------------------------------------- model directories, context

def test_directories_that_hold_no_causal_lm_get_one_clear_error(tmp_path):
    import json

    # issue 20: an empty directory gave a message about sentencepiece; a non-causal one 3.5 KB of classes
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*: an empty directory: missing config.json, weights .*tokenizer"):
        lm.load_policy(empty, device="cpu")
    saved = tmp_path / "ckpt"
    model = _tiny("gpt2", n_positions=96)
    model.save_pretrained(saved)
    with pytest.raises(ValueError, match=r"ckpt.*: no causal LM: missing tokenizer files") as exc:
        lm.load_policy(saved, device="cpu")
    assert len(str(exc.value)) < 300 and "\n" not in str(exc.value)
    lm.build_tokenizer().save_pretrained(saved)
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps(cfg | {"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(ValueError, match=r"model_type 't5' \(T5Model\), which AutoModelForCausalLM cannot load"):
        lm.load_policy(saved, device="cpu")
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        lm.load_policy(saved, device="cpu")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        lm.load_policy(tmp_path / "nowhere", device="cpu")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        lm.load_policy(tmp_path / "file.txt", device="cpu")
    (saved / "config.json").write_text(json.dumps(cfg))
    lm.check_model_directory(saved)                   # a good directory passes


def test_check_prompt_length_names_prompt_length_and_context(builtin):
    pol = builtin
    assert lm.context_length(pol) == 128 == lm.context_length(pol.model)
    assert lm.check_prompt_length(pol, [1] * 120, index=3) == 128         # 120 + 8 fits exactly
    with pytest.raises(ValueError, match=r"^prompt 7: 121 tokens \+ max_new_tokens=8 = 129 exceeds the "
                                         r"model's context of 128 tokens"):
        lm.check_prompt_length(pol, [1] * 121, index=7)
    with pytest.raises(ValueError, match="prompt: 100 tokens"):
        lm.check_prompt_length(pol, [1] * 100, 64)
    # what the check prevents: GPT-2's position table fails deep in torch
    with pytest.raises(IndexError):
        pol.model(torch.ones(1, 129, dtype=torch.long))
    assert lm.check_prompt_length(torch.nn.Linear(2, 2), [1] * 10**4, 10) is None   # no context defined


# --------------------------------------------------------------------------- the built-in as a user's checkpoint

def test_builtin_tokenizer_adds_bos_and_renders_the_training_format():
    tok = lm.build_tokenizer()
    text = "15 + 25 ="
    chars = tok(text, add_special_tokens=False)["input_ids"]
    assert len(chars) == len(text) and tok.bos_token_id not in chars
    assert tok(text)["input_ids"] == [tok.bos_token_id, *chars]          # TRL: add_special_tokens=True
    msgs = [{"role": "user", "content": text}]
    for gen in (True, False):                                            # the generation prompt adds nothing
        assert tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False) == "<bos>" + text
    parts = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    assert tok.apply_chat_template(parts, add_generation_prompt=True, tokenize=False) == "<bos>" + text
    with pytest.raises(Exception, match="user turns only"):
        tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *msgs], tokenize=False)
    # the compact format of Policy.encode is unchanged: <bos> + characters, not <bos><bos> + ...
    pol = lm.load_policy(None, variant="weak", device="cpu")
    assert pol.encode(text) == [tok.bos_token_id, *chars]


def test_exported_builtin_checkpoint_reproduces_the_builtin_model(tmp_path):
    """issue 20: an exported built-in checkpoint given prompts as TRL passes them (plain strings, chat
    messages) gets the built-in ids, hence the same completions under a seed and the same accuracy."""
    from ustat_grpo.experiments import lm_train
    from ustat_grpo.measurement import task

    builtin = lm.load_policy(None, variant="weak", device="cpu")
    path = lm.export_builtin("weak", tmp_path / "weak")
    user = lm.load_policy(path, device="cpu", template="compact_zero_shot")
    tok = user.tokenizer
    assert user.use_chat_template and user.max_new_tokens == builtin.max_new_tokens == 8
    problems = arithmetic.make_dataset(500, seed=0)[:24]
    plain, chat = [], []
    for p in problems:
        ref = builtin.encode(p)
        plain.append(task.encode_prompt(tok, p.text))
        chat.append(task.encode_prompt(tok, [{"role": "user", "content": p.text}]))
        assert plain[-1] == ref and chat[-1] == ref and user.encode(p) == ref
    rewards = {}
    for name, pol, ids in (("builtin", builtin, [builtin.encode(p) for p in problems]),
                           ("plain", user, plain), ("chat", user, chat),
                           ("no_bos", user, [tok(p.text, add_special_tokens=False)["input_ids"] for p in problems])):
        out = []
        for k, (p, x) in enumerate(zip(problems, ids)):
            comp = lm.sample_completions(pol, x, 16, rng=100 + k)
            out.append([arithmetic.verify(t, p.answer) for t in comp.texts])
            if name != "no_bos":
                rewards.setdefault(("texts", k), comp.texts)
                assert rewards[("texts", k)] == comp.texts, (name, k)
        rewards[name] = np.asarray(out, float)
    np.testing.assert_array_equal(rewards["plain"], rewards["builtin"])
    np.testing.assert_array_equal(rewards["chat"], rewards["builtin"])
    # negative control: the old export (no BOS) samples other completions under the same seeds
    assert not np.array_equal(rewards["no_bos"], rewards["builtin"])
    # a training checkpoint of the built-in policy carries the tokenizer's BOS rule and chat template
    saved = lm_train.save_checkpoint(builtin, tmp_path / "ckpt")
    again = lm.load_policy(saved, device="cpu", template="compact_zero_shot")
    assert all(task.encode_prompt(again.tokenizer, [{"role": "user", "content": p.text}]) == builtin.encode(p)
               and task.encode_prompt(again.tokenizer, p.text) == builtin.encode(p) for p in problems[:4])
