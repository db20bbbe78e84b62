"""Datasets, prompt formats and reward functions of a user's task (ustat_grpo.measurement.task, .rewards)."""
import asyncio
import functools
import json

import numpy as np
import pytest

from ustat_grpo.measurement import rewards as rw
from ustat_grpo.measurement import task

VERL_ROWS = [
    {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
     "ability": "math", "reward_model": {"style": "rule", "ground_truth": "5"},
     "extra_info": {"split": "train", "index": 0}},
    {"data_source": "openai/gsm8k", "prompt": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "What is 4 + 4?"}],
     "ability": "math", "reward_model": {"style": "rule", "ground_truth": "8"},
     "extra_info": {"split": "train", "index": 1, "answer": "8"}},
]


# ------------------------------------------------------------------------------------ datasets

def test_jsonl_standard_and_columns_forwarded(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"prompt": "a", "answer": 1, "completion": "x"},
                                                    {"prompt": "b", "answer": 2, "completion": "y"}]))
    t = task.load_task(p)
    assert t.prompt_format == "standard" and t.columns == ("answer",)
    assert [r["prompt"] for r in t.rows] == ["a", "b"] and "completion" not in t.rows[0]


def test_parquet_nested_verl_columns_intact(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    p = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(VERL_ROWS), p)
    t = task.load_task(p)
    assert t.prompt_format == "conversational"
    assert t.rows[0]["reward_model"] == {"style": "rule", "ground_truth": "5"}
    assert isinstance(t.rows[1]["prompt"], list) and t.rows[1]["prompt"][0]["role"] == "system"
    # Arrow struct unification: a key missing in one row comes back as None, never numpy
    assert t.rows[0]["extra_info"]["answer"] is None and t.rows[1]["extra_info"]["answer"] == "8"


def test_save_to_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "a", "solution": "1"}, {"prompt": "b", "solution": "2"}])
    ds.save_to_disk(tmp_path / "ds")
    assert len(task.load_task(tmp_path / "ds")) == 2
    datasets.DatasetDict(train=ds).save_to_disk(tmp_path / "dd")
    with pytest.raises(ValueError,
                       match=r"split=None: .*DatasetDict with splits \['train'\]; choose one with split=") as exc:
        task.load_task(tmp_path / "dd")
    assert "--" not in str(exc.value)
    with pytest.raises(ValueError, match="split='test': .* has no such split"):
        task.load_task(tmp_path / "dd", split="test")
    assert task.load_task(tmp_path / "dd", split="train").rows[1]["solution"] == "2"
    assert len(task.load_task(f"{tmp_path / 'dd'}@train")) == 2


def test_csv(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,answer\nWhat is 2?,2\nWhat is 3?,3\n")
    t = task.load_task(p)
    assert t.prompt_format == "standard" and len(t) == 2


@pytest.mark.parametrize("rows, match", [
    ([{"question": "a"}], "no prompt column 'prompt'"),
    ([{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]}], "mixed prompt formats"),
    ([{"prompt": "a", "completions": 1}], "collides"),
    ([{"prompt": [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}]}], "non-text parts"),
    ([{"prompt": 3}], "string or a list of chat messages"),
])
def test_bad_data_one_line(rows, match):
    with pytest.raises(ValueError, match=match) as exc:
        task.load_task(rows)
    assert "\n" not in str(exc.value) and "--" not in str(exc.value)


def test_encode_prompt_matches_trl_rules():
    import _tiny_task as tt

    tok = tt.tokenizer()
    ids = task.encode_prompt(tok, "What is 2?")
    assert ids[0] == tok.bos_token_id  # standard: add_special_tokens=True (TRL 1.16)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2?"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "And 3?"}]
    chat = task.encode_prompt(tok, msgs, chat_template_kwargs={"enable_thinking": False})
    ref = tok(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False),
              add_special_tokens=False)["input_ids"]
    assert chat == ref and chat[-1] == tok.convert_tokens_to_ids("<|nothink|>")
    assert task.chat_template_hash(tok) and task.chat_template_hash(tt.tokenizer(chat_template=False)) is None
    with pytest.raises(ValueError, match="chat template"):
        task.encode_prompt(tt.tokenizer(chat_template=False), msgs)


def test_sampling_config_trl_names():
    cfg = task.SamplingConfig.from_args({"temperature": 0.7, "top_p": 0.9})
    assert cfg.case == "truncated" and cfg.top_k == 0 and cfg.max_completion_length == 512

    class GRPOConfigLike:
        temperature, repetition_penalty = 0.5, 1.1

    assert task.SamplingConfig.from_args(GRPOConfigLike()).case == "penalised"
    assert task.SamplingConfig.from_args(None).case == "exact"
    with pytest.raises(ValueError, match="temperature"):
        task.SamplingConfig(temperature=0.0)


# ------------------------------------------------------------------------------------- rewards

def _batch(n=4, conversational=False):
    texts = ["72", "#### 72", "", "5"][:n]
    comps = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    return dict(prompts=["q"] * n, completions=comps, completion_ids=[[1, 2]] * n,
                columns=[{"answer": "72", "reward_model": {"ground_truth": "72"}, "data_source": "x",
                          "extra_info": None}] * n, texts=texts)


def test_none_semantics_weighted_nansum():
    def half(completions, **kw):
        return [1.0, None, None, 0.5]

    def other(completions, **kw):
        return [None, 2.0, None, np.float32(1.0)]

    t = rw.compute_rewards([half, other], weights=[2.0, 1.0], **_batch())
    np.testing.assert_array_equal(t.total[[0, 1, 3]], [2.0, 2.0, 2.0])
    assert np.isnan(t.total[2]) and t.unscorable_rate == 0.25
    np.testing.assert_allclose(t.none_rate, [0.5, 0.5])
    with pytest.raises(ValueError, match="weights: 2 reward weights for 1 reward functions"):
        rw.compute_rewards([half], weights=[1, 2], **_batch())


def test_wrong_length_inf_and_types():
    with pytest.raises(rw.RewardError, match="does not match"):
        rw.compute_rewards([lambda completions, **kw: [1.0]], **_batch())
    with pytest.raises(rw.RewardError, match="inf"):
        rw.compute_rewards([lambda completions, **kw: [float("inf")] * 4], **_batch())
    torch = pytest.importorskip("torch")
    t = rw.compute_rewards([lambda completions, **kw: [True, np.int64(2), torch.tensor(0.5), None]], **_batch())
    np.testing.assert_array_equal(t.total[:3], [1.0, 2.0, 0.5])


def test_raising_reward_policies():
    def flaky(completions, **kw):
        if any(c == "" for c in completions):
            raise RuntimeError("empty")
        return [1.0] * len(completions)

    with pytest.raises(rw.RewardError, match="flaky raised RuntimeError"):
        rw.compute_rewards([flaky], **_batch())
    t = rw.compute_rewards([flaky], on_error="none", **_batch())
    assert t.errors.tolist() == [1] and np.isnan(t.total[2]) and t.total[0] == 1.0
    t = rw.compute_rewards([flaky], on_error="zero", **_batch())
    assert t.total[2] == 0.0 and t.errors.tolist() == [1]


def test_async_rewards_partial_and_callable_class():
    async def coro(completions, scale=1.0, **kw):
        await asyncio.sleep(0)
        return [scale] * len(completions)

    class AsyncCall:
        async def __call__(self, completions, **kw):
            return [3.0] * len(completions)

    part = functools.partial(coro, scale=2.0)
    assert rw.is_async(coro) and rw.is_async(part) and rw.is_async(AsyncCall())
    t = rw.compute_rewards([coro, part, AsyncCall()], **_batch())
    np.testing.assert_array_equal(t.per_function[0], [1.0, 2.0, 3.0])


def test_trl_call_contract_columns_and_conversational():
    seen = {}

    def f(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, answer, reward_model, **kw):
        seen.update(completions=completions, reward_model=reward_model, answer=answer)
        return [0.0] * len(completions)

    rw.compute_rewards([f], **_batch(conversational=True))
    assert seen["completions"][0] == [{"role": "assistant", "content": "72"}]
    assert seen["reward_model"][0] == {"ground_truth": "72"} and len(seen["answer"]) == 4


def test_verl_and_openrlhf_styles():
    def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0.0):
        assert extra_info["num_turns"] == 2  # None -> {} plus verl's keys
        return {"score": float(solution_str.strip().endswith(ground_truth)) + bonus, "acc": 1}

    def reward_func(queries, prompts, labels):
        import torch

        return {"rewards": torch.tensor([float(queries[0].startswith(prompts[0]))]), "scores": None}

    v = rw.RewardFunction.wrap(compute_score, kwargs={"bonus": 0.5})
    o = rw.RewardFunction.wrap(reward_func)
    assert (v.style, o.style) == ("verl", "openrlhf")
    t = rw.compute_rewards([v, o], **_batch(), prompt_texts=["q"] * 4)
    np.testing.assert_array_equal(t.per_function[:, 0], [1.5, 1.5, 0.5, 0.5])
    np.testing.assert_array_equal(t.per_function[:, 1], [1.0] * 4)


def test_load_reward_specs(tmp_path, monkeypatch):
    f = tmp_path / "my_rewards.py"
    f.write_text("def correct(completions, answer, **kw):\n    return [float(c == a) for c, a in zip(completions, answer)]\n"
                 "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    assert rw.load_reward(f"{f}:correct").name == "correct"
    assert rw.load_reward(str(f)).style == "verl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert rw.load_reward("my_rewards:correct").style == "trl"
    assert rw.load_reward("my_rewards.correct").name == "correct"
    assert rw.load_reward("exact_match:answer").name == "exact_match[answer]"
    t = rw.compute_rewards(["arithmetic", "exact_match:answer"], **_batch())
    np.testing.assert_array_equal(t.per_function[:, 0], [1, 1, 0, 0])
    np.testing.assert_array_equal(t.per_function[:, 1], [1, 0, 0, 0])
    for bad, kind in [("nope", ValueError), ("no_such_module_xyz:f", ImportError),
                      (f"{tmp_path}/missing.py:f", FileNotFoundError), (f"{f}:nofunc", ValueError)]:
        with pytest.raises(kind) as exc:
            rw.load_reward(bad)
        assert "--reward" not in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(FileNotFoundError, match=r"^reward_funcs\[1\] '.*missing.py': no such file$"):
        rw.compute_rewards(["arithmetic", f"{tmp_path}/missing.py:f"], **_batch())
    with pytest.raises(TypeError, match=r"reward_funcs\[0\] a reward must be callable"):
        rw.compute_rewards([3], **_batch())


def test_math_verify_reward_on_and_off_main_thread():
    pytest.importorskip("math_verify")
    import threading

    b = _batch()
    b["completions"] = ["The final answer is $72$", "\\boxed{\\frac{144}{2}}", "#### 72", "\\boxed{5}"]
    b["columns"] = [{"solution": "72"}] * 3 + [{"solution": "\\frac{"}]
    t = rw.compute_rewards(["math_verify"], **b)
    assert t.per_function[:3, 0].tolist() == [1.0, 1.0, 0.0]
    out = {}
    th = threading.Thread(target=lambda: out.update(t=rw.compute_rewards(["math_verify"], **b)))
    th.start()
    th.join()
    np.testing.assert_array_equal(out["t"].per_function[:3, 0], t.per_function[:3, 0])


def test_library_modules_do_not_import_the_cli():
    import ast
    import pathlib

    import ustat_grpo

    for name in ("measurement/task", "measurement/rewards", "recommendation/tables"):
        tree = ast.parse((pathlib.Path(ustat_grpo.__file__).parent / f"{name}.py").read_text())
        imported = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any("_cli" in m for m in imported), name


def test_library_errors_are_plain_python_errors(tmp_path):
    from ustat_grpo.cli import _args as _cli
    from ustat_grpo.recommendation import tables as measurements

    cases = [(lambda: task.load_task(tmp_path / "none.jsonl"), FileNotFoundError, "none.jsonl: no such file"),
             (lambda: task.load_task([]), ValueError, "no rows"),
             (lambda: measurements.load_measurements(str(tmp_path / "m.csv")), FileNotFoundError, "no such file")]
    bad = tmp_path / "bad.csv"
    bad.write_text("budget,num_generations,score\n64,2,0.5\n64,x,0.5\n")
    cases.append((lambda: measurements.load_measurements(str(bad)), ValueError,
                  r"bad.csv: row 2 \(line 3\), column 'num_generations': 'x' is not a number"))
    for call, kind, match in cases:
        with pytest.raises(kind, match=match) as exc:
            call()
        assert not isinstance(exc.value, _cli.InputError)


@pytest.mark.parametrize("value, ok", [
    (True, 1.0), (np.bool_(False), 0.0), (3, 3.0), (np.float32(0.25), 0.25), (np.int64(2), 2.0),
    (np.array(0.5), 0.5), ("torch-0d", 0.5), ("torch-1elem", 0.5),
    ("1.0", None), (b"1", None), (1 + 0j, None), (np.array([0.5]), None), ([1.0], None), ({"score": 1}, None),
])
def test_rewards_must_be_real_numbers_as_trl_casts_them(value, ok):
    torch = pytest.importorskip("torch")
    value = {"torch-0d": torch.tensor(0.5), "torch-1elem": torch.tensor([0.5])}.get(value, value) \
        if isinstance(value, str) else value

    def my_reward(completions, **kw):
        return [1.0, value, None, 0.0]

    if ok is None:
        with pytest.raises(TypeError, match=r"reward function 'my_reward' returned .* for completion 1; "
                                            "a reward must be a real number or None"):
            rw.compute_rewards([my_reward], **_batch())
        # TRL's own cast fails on the same list
        with pytest.raises((TypeError, ValueError)):
            torch.tensor([1.0, value, float("nan"), 0.0], dtype=torch.float32)
    else:
        t = rw.compute_rewards([my_reward], **_batch())
        assert t.per_function[1, 0] == ok and np.isnan(t.per_function[2, 0])


# ----------------------------------------------------------------------------- trainer settings

def test_trainer_settings_trl_defaults_and_estimator():
    from types import SimpleNamespace

    d = task.TrainerSettings.from_args(None)
    assert (d.num_generations, d.scale_rewards, d.loss_type, d.num_iterations, d.epsilon, d.epsilon_high,
            d.beta, d.bf16) == (8, "group", "dapo", 1, 0.2, 0.2, 0.0, True)
    assert d.estimator() == "std_normalized" and d.preset == "grpo" and not d.batch_scaled
    cases = [({"scale_rewards": "none"}, "group_mean", "dr_grpo", False),
             ({"scale_rewards": False}, "group_mean", "dr_grpo", False),
             ({"scale_rewards": True}, "std_normalized", "grpo", False),
             ({"scale_rewards": "batch"}, "group_mean", "trl_grpo_batch", True)]
    for args, name, preset, batch in cases:
        for a in (args, SimpleNamespace(**args)):               # a dict, or a GRPOConfig stand-in
            s = task.TrainerSettings.from_args(a)
            assert (s.estimator(), s.preset, s.batch_scaled) == (name, preset, batch), args
    cfg = SimpleNamespace(num_generations=16, scale_rewards="none", loss_type="grpo", num_iterations=4,
                          epsilon=0.2, epsilon_high=0.28, beta=0.04, bf16=False, learning_rate=1e-6)
    s = task.TrainerSettings.from_args(cfg)
    assert s.num_generations == 16 and s.epsilon_high == 0.28 and s.length_normalized and not s.bf16
    notes = " ".join(s.notes())
    assert "num_iterations=4" in notes and "beta=0.04" in notes and "divided by its length" in notes
    assert "bf16" not in notes
    # bf16 left unset (None) is TRL's "not fp16"
    assert task.TrainerSettings.from_args({"bf16": None, "fp16": True}).bf16 is False
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and d["estimator"] == "group_mean" and d["preset"] == "dr_grpo"
    assert "group_mean" in str(s) and "\n" not in str(s)
    # the estimator the settings name is the advantage TRL computes for them
    from ustat_grpo.theory import advantages as adv
    r = np.array([1.0, 0, 0, 1, 0, 0, 0, 0])
    for scale in ("group", "batch", "none", True, False):
        s = task.TrainerSettings.from_args({"scale_rewards": scale, "num_generations": 4})
        np.testing.assert_array_equal(adv.advantages(r, num_generations=4, preset=s.preset),
                                      adv.advantages(r, num_generations=4, scale_rewards=scale))


@pytest.mark.parametrize("args, match", [
    ({"scale_rewards": "std"}, "scale_rewards must be"), ({"loss_type": "ppo"}, "loss_type must be one of"),
    ({"num_iterations": 0}, "num_iterations"), ({"num_generations": 1}, "num_generations"),
    ({"beta": -1.0}, "beta"),
])
def test_trainer_settings_reject_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        task.TrainerSettings.from_args(args)


# ----------------------------------------------------------------------------------- BOS check

def _char_tokenizer(*, adds_bos: bool, bos: bool = True, chat_template: str | None = None):
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list("abc 12?"))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    single = "<bos> $A" if adds_bos else "$A"
    tk.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<bos>", 1)])
    kw = dict(bos_token="<bos>") if bos else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                   **kw)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def test_bos_warning_fires_only_for_tokenizers_that_add_bos():
    import warnings as w

    pytest.importorskip("transformers")
    msgs = [{"role": "user", "content": "a b"}]
    no_bos_tpl = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    llama_like = _char_tokenizer(adds_bos=True, chat_template=no_bos_tpl)
    assert task.adds_bos(llama_like)
    with pytest.warns(UserWarning, match=r"do not start with BOS \('<bos>'\).*chat template does not render"):
        ids = task.encode_prompt(llama_like, msgs)
    assert ids[0] != llama_like.bos_token_id
    with pytest.warns(UserWarning, match="start with BOS twice"):
        task.encode_prompt(llama_like, "<bos>a b")
    # GPT-2 style (a BOS token that tokenizer(text) never adds) and Qwen style (no BOS token): silent
    gpt2_like = _char_tokenizer(adds_bos=False, chat_template=no_bos_tpl)
    qwen_like = _char_tokenizer(adds_bos=False, bos=False, chat_template=no_bos_tpl)
    with w.catch_warnings():
        w.simplefilter("error")
        for tok in (gpt2_like, qwen_like):
            assert not task.adds_bos(tok)
            task.encode_prompt(tok, "a b")
            task.encode_prompt(tok, msgs)
        good = _char_tokenizer(adds_bos=True, chat_template="{{ bos_token }}" + no_bos_tpl)
        assert task.encode_prompt(good, msgs) == task.encode_prompt(good, "a b") == [1, 4, 7, 5]
