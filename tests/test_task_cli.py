"""Bring your own task end to end: measure_task (Python API) and fit_scaling --dataset (CLI)."""
import json

import numpy as np
import pytest
import torch

import _tiny_task as tt
from ustat_grpo.cli import fit_scaling
from ustat_grpo.policies import lm
from ustat_grpo.measurement.measure import measure_task
from ustat_grpo.measurement.sampler import prompt_order

torch.set_num_threads(1)

REWARD_FILE = '''
def correct(prompts, completions, completion_ids, answer, **kwargs):
    """GSM8K-style: 1 for '#### <answer>', else partial credit by length (so rewards vary)."""
    return [1.0 if f"#### {a}" in c else 0.1 * (len(ids) % 3) for c, ids, a in zip(completions, completion_ids, answer)]

def broken(completions, **kwargs):
    raise RuntimeError("reward server down")
'''


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # a non-neutral generation_config must not leak into sampling
    return tt.model_dir(tmp_path_factory.mktemp("tiny_llama"), generation_config=dict(do_sample=True, top_k=2, top_p=0.5,
                                                                                     temperature=0.3))


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(6):
        a, b = (int(x) for x in rng.integers(1, 50, size=2))
        rows.append({"prompt": f"Natalia sold {a} clips in April and {b} in May. How many clips? "
                               "Answer after ####.", "answer": str(a + b)})
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "rewards.py").write_text(REWARD_FILE)
    return d


def _cli(model_dir, gsm8k, *extra):
    return ["--model", str(model_dir), "--dataset", str(gsm8k / "train.jsonl"), "--reward",
            f"{gsm8k / 'rewards.py'}:correct", "--max-completion-length", "6", "--num-prompts", "5",
            "--samples-per-prompt", "16", "--budget", "32", "--device", "cpu", *extra]


def test_cli_end_to_end_lora_temperature(model_dir, gsm8k, tmp_path, capsys):
    pytest.importorskip("peft")                               # the [task] extra
    out = tmp_path / "rec.json"
    rc = fit_scaling.main(_cli(model_dir, gsm8k, "--temperature", "0.7", "--lora-r", "2",
                               "--lora-target-modules", "q_proj", "v_proj", "--num-generations", "2,4,8",
                               "--format", "json", "--output", str(out)))
    assert rc == 0, capsys.readouterr().err
    d = json.loads(out.read_text())
    rec = d["recommendation"]
    assert d["kind"] == "mse" and (rec["num_generations"] >= 2 if rec["interior"] else
                                   rec["num_generations"] is None and "no interior optimum" in rec["reason"])
    card = d["card"]
    assert card["sampling"]["temperature"] == 0.7 and card["case"] == "exact"
    assert card["sampling"]["model_generation_config"] == "ignored"
    assert card["peft"]["r"] == 2 and card["params_selection"] == "trainable"
    assert card["params_count"] == 4  # lora_A / lora_B of q_proj and v_proj, one layer
    assert card["reward"]["names"] == ["correct"] and card["prompt_format"] == "standard"
    assert card["score_mean"]["passed"] is True and "peft" in card["versions"]
    est = d["estimators"]
    assert est["estimators"] == ["leave_one_out", "std_normalized", "group_mean"] and est["num_generations"] == [2, 4, 8]
    for name in est["estimators"]:                            # per estimator: its G and interval
        pick = est["recommended"][name]
        assert pick["num_generations"] in (2, 4, 8) and pick["interval"][0] <= pick["num_generations"]
    for k in ("A1", "A2", "A3", "g_star_exact", "mse_table", "warnings"):  # existing keys unchanged
        assert k in d
    rc = fit_scaling.main(_cli(model_dir, gsm8k, "--temperature", "0.7", "--top-p", "0.6", "--params", "regex:mlp"))
    text = capsys.readouterr().out
    assert rc == 0 and "Estimator card" in text and "Estimators: scale-free criterion R(G)" in text
    assert "case: truncated" in text and "mean truncated mass" in text


def test_cli_bad_input_and_raising_reward(model_dir, gsm8k, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    rc = fit_scaling.main(["--model", str(model_dir), "--dataset", str(bad), "--reward", "arithmetic"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "row 0: no prompt column 'prompt'" in errors[0] and "Traceback" not in err
    assert fit_scaling.main(["--dataset", str(gsm8k / "train.jsonl")]) == 2
    assert "--reward" in capsys.readouterr().err
    assert fit_scaling.main(["--source", "bandit", "--reward", "arithmetic"]) == 2
    capsys.readouterr()
    broken = ["--reward", f"{gsm8k / 'rewards.py'}:broken"]
    assert fit_scaling.main(_cli(model_dir, gsm8k, *broken)) == 1
    assert "broken raised RuntimeError: reward server down" in capsys.readouterr().err
    out = tmp_path / "r.json"
    rc = fit_scaling.main(_cli(model_dir, gsm8k, *broken, "--on-reward-error", "none", "--reward-weights", "1", "0.5",
                               "--format", "json", "--output", str(out)))
    assert rc == 0, capsys.readouterr().err
    rw = json.loads(out.read_text())["card"]["reward"]
    assert rw["error_count"] == [0, 80] and rw["none_rate"] == [0.0, 1.0] and rw["weights"] == [1.0, 0.5]


def test_python_api_conversational_verl_rows_none_and_async(model_dir, tmp_path):
    """GRPOTrainer-like objects: a model object, its tokenizer, a GRPOConfig-like args object."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"data_source": "openai/gsm8k",
             "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} + 3?"}],
             "reward_model": {"style": "rule", "ground_truth": str(i + 3)}, "extra_info": {"index": i}}
            for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    seen = {}

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        return {"score": float(len(solution_str) % 2), "pred": solution_str}

    async def sometimes_none(prompts, completions, completion_ids, reward_model, extra_info, **kw):
        if not seen:  # the first prompt's batch
            seen.update(completion=completions[0], reward_model=reward_model[0], prompt=prompts[0])
        return [None if len(ids) % 2 else 0.5 for ids in completion_ids]

    class Args:  # read by attribute name, like trl.GRPOConfig
        temperature, max_completion_length, reward_weights = 0.9, 5, [1.0, 2.0]
        chat_template_kwargs = {"enable_thinking": False}

    tok = AutoTokenizer.from_pretrained(model_dir)
    net = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    m = measure_task(net, [compute_score, sometimes_none], train_dataset=str(tmp_path / "train.parquet"), args=Args(),
                     processing_class=tok, params="all", samples_per_prompt=8, budget=16, projection_dim=64)
    c = m.card.to_dict()
    assert c["prompt_format"] == "conversational" and c["sampling"]["chat_template_kwargs"] == {"enable_thinking": False}
    first = int(prompt_order(4, 0)[0])                    # prompts are a seeded random sample of the rows
    assert seen["completion"][0]["role"] == "assistant" and seen["reward_model"]["ground_truth"] == str(first + 3)
    assert seen["prompt"][0]["role"] == "system"
    assert c["reward"]["styles"] == ["verl", "trl"] and 0 < c["reward"]["none_rate"][1] < 1
    assert c["sketch_dim"] == 64 and c["sampling"]["temperature"] == 0.9
    assert m.comparison.num_generations.tolist() == [2, 4] and np.isfinite(m.comparison.raw_mse).all()


def test_empty_completions_score_one_token():
    tok = tt.tokenizer()
    net = tt.model(tok)
    with torch.no_grad():  # EOS always wins: every completion is [eos], text ""
        net.get_output_embeddings().weight[tok.eos_token_id] = 50 * net.get_input_embeddings().weight.std()
        net.get_output_embeddings().weight[tok.eos_token_id] += net.model.norm.weight.detach().sign() * 50
    pol = lm.LanguageModelPolicy(model=net, tokenizer=tok, template="zero_shot", name="eos", max_new_tokens=4)
    comp = lm.sample_completions(pol, tok("What is 2?")["input_ids"], 8, rng=0, temperature=0.7)
    assert comp.completion_ids == [[tok.eos_token_id]] * 8 and comp.texts == [""] * 8
    assert not comp.truncated.any() and comp.completion_mask.sum(1).tolist() == [1.0] * 8
    s = lm.per_sample_scores(net, comp.sequences, comp.completion_mask, temperature=0.7)
    assert torch.isfinite(s).all()
