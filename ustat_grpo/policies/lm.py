"""Transformer policies on the arithmetic task and their per-sample score functions.

A *policy* is a Hugging Face causal LM plus its tokenizer and a prompt format.  Completions are
sampled exactly from the model (temperature 1, no top-k / top-p), the reward is the binary
verifier of :mod:`ustat_grpo.policies.arithmetic`, and the score of a completion ``y`` is

    W = grad_theta log pi_theta(y | x) = sum_t grad_theta log pi_theta(y_t | x, y_<t)

(arXiv 2603.01162, Section 2: a plain sum over completion tokens, no length normalisation),
computed for many completions at once with ``torch.func.vmap(grad(...))`` over
``functional_call``, chunked to bound memory, optionally followed by a seeded random projection
(:class:`Sketch`); that machinery lives in :mod:`ustat_grpo.policies.score` and is re-exported here.

Built-in policies (no download needed) live in ``ustat_grpo/data/builtin_lm``: a 2-layer GPT-2
with a character-level tokenizer, trained by ``scripts/train_builtin_lm.py`` (seeded,
deterministic, a few CPU minutes) and checked against SHA-256 sums on load.  Variants:

``weak``     early checkpoint, compact zero-shot prompt     (mirrors the paper's base model)
``strong``   final checkpoint, compact zero-shot prompt     (mirrors Instruct)
``fewshot``  final checkpoint, compact few-shot prompt      (mirrors Instruct + ICL)

The compact prompts drop the paper's constant instruction line, which carries no information for
a model trained only on this task: zero-shot ``"<problem>"`` (e.g. ``"15 + 25 ="``) and few-shot
``"15 + 25 = 40\\n20 + 30 - 15 = 35\\n3 * 4 = 12\\n24 / 6 = 4\\n25 - (10 + 5) = 10\\n<problem>"``,
i.e. the paper's five worked examples in the same order; the completion is ``" <answer>"`` and EOS.
User models get the paper's verbatim templates (through the chat template when there is one).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import arithmetic
from ..core._random import default_rng, torch_generator
from .policy import Sample
from .score import Sketch, gram, parameter_names, per_sample_scores, sequence_logprob, squared_errors

__all__ = [
    "BUILTIN_DIR", "BUILTIN_VARIANTS", "COMPACT_FEW_SHOT_PREFIX", "LanguageModelPolicy", "load_policy",
    "build_tokenizer", "format_compact", "Completions", "sample_completions", "parameter_names",
    "per_sample_scores", "sequence_logprob", "Sketch", "gram", "squared_errors", "sample_prompt",
    "resolve_device", "check_model_directory", "context_length", "check_prompt_length", "BUILTIN_CHAT_TEMPLATE",
    "save_builtin_tokenizer", "export_builtin",
]

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "data" / "builtin_lm"
# variant -> (weights file, prompt format)
BUILTIN_VARIANTS = {
    "weak": ("model-weak.safetensors", "compact_zero_shot"),
    "strong": ("model-strong.safetensors", "compact_zero_shot"),
    "fewshot": ("model-strong.safetensors", "compact_few_shot"),
}
COMPACT_FEW_SHOT_PREFIX = "15 + 25 = 40\n20 + 30 - 15 = 35\n3 * 4 = 12\n24 / 6 = 4\n25 - (10 + 5) = 10\n"
# Characters of the built-in tokenizer: everything in the paper's two prompts and the answers.
_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ +-*/()=.:,!?\n"
_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available (under ``torchrun``, the GPU ``LOCAL_RANK``), else CPU."""
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device(device)


#: Chat template of the built-in tokenizer: the training format, ``<bos>`` + the user turn's text
#: (the compact prompt) and nothing else; ``add_generation_prompt`` adds nothing, since the
#: completion " <answer>" follows the prompt directly.  Only user turns exist in that format.
BUILTIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'user' -%}"
    "{{- raise_exception('the built-in arithmetic model takes user turns only: its training format is the "
    "bare problem text (role ' + message['role'] + ' given)') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}{{- part['text'] -}}{%- endfor -%}{%- endif -%}"
    "{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
)


def build_tokenizer():
    """The built-in character-level tokenizer (a ``PreTrainedTokenizerFast``).

    One token per character of :data:`_CHARS` plus ``<pad> <bos> <eos> <unk>``; built with the
    ``tokenizers`` library (a BPE model with no merges is a character model).  As the models were
    trained (``<bos>`` + prompt characters), ``tokenizer(text)`` adds ``<bos>`` (a
    ``TemplateProcessing`` post-processor; ``add_special_tokens=False`` gives the bare
    characters), and :data:`BUILTIN_CHAT_TEMPLATE` renders a user turn as ``<bos>`` + its text.
    So a user's pipeline (TRL's ``tokenizer(prompt)`` or ``apply_chat_template``) gives a saved
    built-in checkpoint the ids :meth:`LanguageModelPolicy.encode` gives the built-in model.
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate((*_SPECIALS, *_CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B:1",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = BUILTIN_CHAT_TEMPLATE
    return fast


def save_builtin_tokenizer(tokenizer, path) -> None:
    """Write the built-in tokenizer's files so that every supported ``transformers`` reads them.

    ``save_pretrained``, then in ``tokenizer_config.json``: the fast-tokenizer class name
    (transformers 5 writes ``TokenizersBackend``, which 4.x cannot load) and the chat template
    (transformers 5 writes it to ``chat_template.jinja``, which older versions do not read).
    """
    import json

    path = Path(path)
    tokenizer.save_pretrained(path)
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("backend", None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
    if getattr(tokenizer, "chat_template", None):
        cfg["chat_template"] = tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def export_builtin(variant: str, path) -> str:
    """Save a built-in variant as a local Hugging Face directory, usable as a user's checkpoint.

    The directory holds the GPT-2 weights of ``variant`` (``save_pretrained``) and the built-in
    tokenizer with its BOS post-processor and chat template (:func:`save_builtin_tokenizer`):
    prompts passed as TRL passes them (a plain string through ``tokenizer(text)``, or
    ``[{"role": "user", "content": text}]`` through the chat template) get the token ids the
    built-in path uses, so the checkpoint reproduces the built-in model's accuracy.  The prompt
    text is the compact format (:func:`format_compact`: ``"15 + 25 ="``; the ``fewshot`` variant
    needs :data:`COMPACT_FEW_SHOT_PREFIX` in the prompt text itself).

    Returns
    -------
    str
        ``path``.
    """
    net, tok, _ = _load_builtin(variant, "eager")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(path)
    save_builtin_tokenizer(tok, path)
    return str(path)


def format_compact(problem: arithmetic.Problem | str, template: str = "compact_zero_shot") -> str:
    """Compact prompt of the built-in models (see the module docstring for the mapping)."""
    text = problem.text if isinstance(problem, arithmetic.Problem) else str(problem)
    if template == "compact_zero_shot":
        return text
    if template == "compact_few_shot":
        return COMPACT_FEW_SHOT_PREFIX + text
    raise ValueError(f"unknown compact template {template!r}")


@dataclass(kw_only=True)
class LanguageModelPolicy:
    """A causal LM, its tokenizer and how questions are turned into prompts.

    Satisfies the ``Policy`` protocol of :mod:`ustat_grpo.policies.policy`: ``theta`` is the flat vector
    of all parameters (``named_parameters`` order, float64), ``with_theta`` loads one into a copy
    of the model, and :meth:`sample` draws questions of the arithmetic set, completions and the
    full-parameter scores.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        In eval mode (no dropout), on ``device`` (or spread over several by a ``device_map``;
        ``device`` is then that of the input embeddings, where prompts go).
    tokenizer : transformers tokenizer
    template : str
        ``"zero_shot"`` / ``"few_shot"`` (paper, verbatim) or ``"compact_zero_shot"`` /
        ``"compact_few_shot"`` (built-in models).
    name : str
    use_chat_template : bool
        Wrap the prompt in the tokenizer's chat template (user turn + generation prompt).
    max_new_tokens : int
        Completions stop at EOS or after this many tokens.
    """

    model: object
    tokenizer: object
    template: str
    name: str
    use_chat_template: bool = False
    max_new_tokens: int = 8
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def prompt(self, problem: arithmetic.Problem | str) -> str:
        """The prompt text of ``problem`` (before tokenisation)."""
        if self.template.startswith("compact"):
            text = format_compact(problem, self.template)
        else:
            text = arithmetic.format_prompt(problem, self.template)
        if self.use_chat_template and not self.template.startswith("compact"):
            # the compact formats are the built-in models' training format: no template around them
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        return text

    def encode(self, problem: arithmetic.Problem | str) -> list[int]:
        """Prompt token ids (BOS first for the built-in models)."""
        if self.template.startswith("compact"):
            ids = self.tokenizer(self.prompt(problem), add_special_tokens=False)["input_ids"]
            bos = self.tokenizer.bos_token_id
            return [bos, *ids] if bos is not None else list(ids)
        # A chat template already holds the special tokens; plain prompts get the tokenizer's own.
        return list(self.tokenizer(self.prompt(problem),
                                   add_special_tokens=not self.use_chat_template)["input_ids"])

    @property
    def eos_token_ids(self) -> list[int]:
        """Tokens that end a completion: the tokenizer's EOS and the generation config's."""
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
        return sorted(i for i in ids if i is not None)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def dim(self) -> int:
        """``d``, the number of parameters (the length of :attr:`theta`)."""
        return self.num_parameters

    @property
    def theta(self) -> np.ndarray:
        """All parameters as one float64 vector ``(d,)`` (a copy; the parameters may sit on several
        devices, as under a ``device_map``)."""
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1).double().cpu() for p in self.model.parameters()]).numpy()

    def with_theta(self, theta) -> LanguageModelPolicy:
        """The same policy with a deep copy of the model holding parameters ``theta (d,)``."""
        t = np.asarray(theta, float)
        if t.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},), got {t.shape}")
        model = copy.deepcopy(self.model)
        start = 0
        with torch.no_grad():
            for p in model.parameters():                 # each on its own device (device_map)
                p.copy_(torch.as_tensor(t[start:start + p.numel()]).view_as(p))
                start += p.numel()
        return dataclasses.replace(self, model=model)

    def sample(self, num_prompts: int, num_generations: int, *, rng=None, problems=None,
               chunk_size: int = 32) -> Sample:
        """``B`` questions drawn uniformly from ``problems``, ``G`` completions each, and their scores.

        Parameters
        ----------
        num_prompts, num_generations : int
            B and G.
        rng : None, int, SeedSequence or numpy.random.Generator
            Through :func:`numpy.random.default_rng`: the generator draws the question ids, then
            one torch seed per question (``_random.torch_generator``).
        problems : list of arithmetic.Problem, optional
            Default ``arithmetic.make_dataset(500, seed=0)``.

        Returns
        -------
        Sample
            ``rewards (B, G)`` binary, ``scores (B, G, d)`` float64 over all parameters,
            ``prompt_ids (B,)`` indices into ``problems``.
        """
        gen = default_rng(rng)
        problems = arithmetic.make_dataset(500, seed=0) if problems is None else list(problems)
        pid = gen.choice(len(problems), size=int(num_prompts))
        rewards, scores = [], []
        for p in pid:
            comp, r = sample_prompt(self, problems[p], int(num_generations), rng=gen)
            s = per_sample_scores(self.model, comp.sequences, comp.completion_mask, chunk_size=chunk_size)
            rewards.append(r)
            scores.append(s.double().cpu().numpy())
        return Sample(rewards=np.stack(rewards).astype(float), scores=np.stack(scores), prompt_ids=pid)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_builtin(directory: Path) -> None:
    sums = directory / "SHA256SUMS"
    if not sums.exists():
        raise FileNotFoundError(f"{sums} is missing; rebuild with scripts/train_builtin_lm.py")
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        got = _sha256(directory / name)
        if got != digest:
            raise ValueError(f"checksum mismatch for {directory / name}: {got} != {digest}")


@functools.lru_cache(maxsize=None)
def _dtype_keyword() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` from transformers 4.56 on (where
    ``torch_dtype`` is deprecated), ``torch_dtype`` before.  ``from_pretrained`` takes ``**kwargs``,
    so the name cannot be read from its signature; the version is the only witness."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _load_builtin(variant: str, attn_implementation: str):
    """``(model, tokenizer, template)`` of a built-in variant, after the checksum test."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    if variant not in BUILTIN_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(BUILTIN_VARIANTS)}, got {variant!r}")
    _verify_builtin(BUILTIN_DIR)
    weights, template = BUILTIN_VARIANTS[variant]
    config = GPT2Config.from_pretrained(BUILTIN_DIR)
    config._attn_implementation = attn_implementation
    net = GPT2LMHeadModel(config)
    missing, unexpected = net.load_state_dict(load_file(BUILTIN_DIR / weights), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"bad built-in weights: missing {missing}, unexpected {unexpected}")
    net.tie_weights()
    return net, AutoTokenizer.from_pretrained(BUILTIN_DIR, local_files_only=True), template


def _check_device_map(model, device, device_map) -> None:
    """One clear error for a ``device_map`` that cannot be honoured."""
    import importlib.util

    if model is None:
        raise ValueError("device_map is for a model directory (model=PATH); the built-in models fit on one device")
    if str(device) != "auto":
        raise ValueError(f"give device or device_map, not both (device={device!r}, device_map={device_map!r})")
    if not isinstance(device_map, (dict, str)):
        raise ValueError(f"device_map must be a string such as 'auto' or a dict, got {type(device_map).__name__}")
    if importlib.util.find_spec("accelerate") is None:
        raise ImportError(f"device_map={device_map!r} needs the accelerate package (pip install accelerate), "
                          "which places the model's layers over the available devices")


#: files ``save_pretrained`` writes for a tokenizer (any one of them is enough to try a load)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model",
                    "vocab.txt")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json",
                    "*.pt", "*.pth", "tf_model.h5", "flax_model.msgpack")


def check_model_directory(path: str | os.PathLike) -> None:
    """Raise one clear error when ``path`` cannot hold a causal LM that :func:`load_policy` can load.

    Checks, before ``transformers`` is asked (whose own messages are a list of every model class
    or a note about sentencepiece): the directory exists; it has a ``config.json`` that is a JSON
    object whose ``model_type`` is a causal LM (``AutoModelForCausalLM``'s mapping, or an
    ``auto_map`` entry for remote code); weight files; tokenizer files.

    Raises
    ------
    FileNotFoundError
        No such directory.
    ValueError
        One line naming the directory and what is missing or wrong.
    """
    import json

    d = Path(path)
    if not d.exists():
        raise FileNotFoundError(f"model={str(path)!r}: no such directory")
    if not d.is_dir():
        raise ValueError(f"model={str(path)!r}: not a directory (a local Hugging Face model directory, as "
                         "save_pretrained writes it, is expected)")
    missing = []
    cfg = d / "config.json"
    if not cfg.is_file():
        missing.append("config.json")
    if not any(next(d.glob(pat), None) is not None for pat in _WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    if not any((d / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json or tokenizer.model)")
    if missing:
        what = "an empty directory" if not any(d.iterdir()) else "no causal LM"
        raise ValueError(f"model={str(path)!r}: {what}: missing {', '.join(missing)} (save the model and "
                         "its tokenizer with save_pretrained into this directory)")
    try:
        conf = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"model={str(path)!r}: config.json is not valid JSON ({exc})") from None
    if not isinstance(conf, dict):
        raise ValueError(f"model={str(path)!r}: config.json is not a JSON object")
    model_type = conf.get("model_type")
    if "AutoModelForCausalLM" in (conf.get("auto_map") or {}):
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type is None:
        raise ValueError(f"model={str(path)!r}: config.json has no model_type, so AutoModelForCausalLM cannot "
                         "tell which architecture to load")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        arch = ", ".join(conf.get("architectures") or []) or "no architectures listed"
        raise ValueError(f"model={str(path)!r}: config.json has model_type {model_type!r} ({arch}), which "
                         "AutoModelForCausalLM cannot load: not a causal language model")


def context_length(model) -> int | None:
    """The model's context in tokens: ``config.max_position_embeddings`` (or ``n_positions`` /
    ``n_ctx``), ``None`` when the config defines none.  ``model``: a model or a :class:`LanguageModelPolicy`."""
    config = getattr(getattr(model, "model", model), "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_length(policy, prompt_ids, max_new_tokens: int | None = None, *, index=None) -> int | None:
    """Raise ``ValueError`` when a prompt plus its completion budget exceeds the model's context.

    Parameters
    ----------
    policy : LanguageModelPolicy or a transformers model
        Its ``config.max_position_embeddings`` (or ``n_positions``) is the context.
    prompt_ids : sequence of int
        The prompt's token ids.
    max_new_tokens : int, optional
        Completion budget (default ``policy.max_new_tokens``).
    index : int or str, optional
        The prompt's index (dataset row), named in the message.

    Returns
    -------
    int or None
        The context length, ``None`` when the config defines none (nothing is checked then).

    Notes
    -----
    A model with learned positions (GPT-2) fails past its context deep in torch
    (``IndexError: index out of range in self``); a rotary model runs on but leaves the length it
    was trained for.  TRL 1.16 does not truncate prompts (own_task.md §1.1), so the prompt must be
    filtered, or ``max_completion_length`` lowered.
    """
    ctx = context_length(policy)
    budget = int(getattr(policy, "max_new_tokens", 0) if max_new_tokens is None else max_new_tokens)
    n = len(prompt_ids)
    if ctx is not None and n + budget > ctx:
        which = "prompt" if index is None else f"prompt {index}"
        raise ValueError(f"{which}: {n} tokens + max_new_tokens={budget} = {n + budget} exceeds the model's "
                         f"context of {ctx} tokens; filter or shorten the prompt, or lower max_new_tokens "
                         "(max_completion_length)")
    return ctx


def load_policy(model: str | os.PathLike | None = None, *, variant: str = "strong",
                template: str | None = None, device: str | torch.device = "auto",
                dtype: torch.dtype | str | None = None, max_new_tokens: int | None = None,
                attn_implementation: str = "eager", device_map: str | dict | None = None) -> LanguageModelPolicy:
    """Load the built-in policy (``model=None``) or a local Hugging Face causal-LM directory.

    Parameters
    ----------
    model : path or None
        A directory readable by ``AutoModelForCausalLM`` / ``AutoTokenizer`` (no download is
        attempted: ``local_files_only``); :func:`check_model_directory` first gives one clear
        error for a directory that holds no causal LM.  ``None``: the built-in model of ``variant``.
    variant : {"weak", "strong", "fewshot"}
        Built-in variant (ignored for user models).
    template : str, optional
        Prompt format; default ``"few_shot"`` for user models (the paper's calculator prompt) or
        the variant's compact format.
    device : "auto", "cpu", "cuda", ...
    dtype : torch dtype or its name, optional
        Parameter dtype (default float32).
    max_new_tokens : int, optional
        Default 8 for the built-in models and the compact templates (a saved built-in checkpoint),
        16 otherwise.
    attn_implementation : str
        ``"eager"`` by default: ``vmap`` has no batching rule for the fused CPU attention kernels.
    device_map : "auto", dict or None
        For a model too large for one device: passed to ``AutoModelForCausalLM.from_pretrained``
        (needs ``accelerate``), which places the layers over the GPUs itself; the model is not
        moved afterwards and :attr:`LanguageModelPolicy.device` is the device of its input embeddings.
        ``device`` must then stay ``"auto"``.  A map that offloads layers to CPU or disk is refused
        (``ValueError``): offloaded parameters are not resident, so their scores cannot be taken.
        Not for the built-in models (they fit anywhere).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device_map is not None:
        _check_device_map(model, device, device_map)
    dev = resolve_device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or torch.float32
    if model is None:
        net, tok, default_template = _load_builtin(variant, attn_implementation)
        name, chat = f"builtin:{variant}", False
        max_new_tokens = max_new_tokens or 8
    else:
        path = Path(model)
        check_model_directory(path)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        placed = {} if device_map is None else {"device_map": device_map}
        net = AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                   attn_implementation=attn_implementation,
                                                   **{_dtype_keyword(): dtype}, **placed)
        default_template = "few_shot"
        name, chat = str(path), bool(getattr(tok, "chat_template", None))
        # The compact formats are the built-in models' (short answers): their budget, 8 tokens.
        max_new_tokens = max_new_tokens or (8 if (template or "").startswith("compact") else 16)
    if device_map is None:
        net = net.to(device=dev, dtype=dtype).eval()
    else:                                                # placed by accelerate: moving it would undo that
        net = net.eval()
        if any(p.device.type == "meta" for p in net.parameters()):
            raise ValueError(f"device_map={device_map!r} offloads layers to CPU or disk "
                             f"({getattr(net, 'hf_device_map', device_map)}); "
                             "per-sample scores need every parameter resident on a device: more GPUs, or a "
                             "map without 'cpu'/'disk' entries")
        dev = net.get_input_embeddings().weight.device
    return LanguageModelPolicy(model=net, tokenizer=tok, template=template or default_template, name=name,
                  use_chat_template=chat, max_new_tokens=max_new_tokens, device=dev)


# --------------------------------------------------------------------------- sampling

@dataclass(frozen=True, kw_only=True)
class Completions:
    """``num_samples`` completions of one prompt.

    Attributes
    ----------
    sequences : LongTensor (M, T)
        Prompt then completion (EOS included when produced), right-padded with the pad id.
    completion_mask : Tensor (M, T)
        1 on completion tokens (the tokens whose log-probabilities make up log pi(y|x)).
    texts : list of str
        Decoded completions (special tokens dropped).
    completion_ids : list of list of int, optional
        Completion token ids, EOS included when produced (TRL's ``completion_ids``).
    truncated : BoolTensor (M,), optional
        The completion hit the length limit without an EOS (TRL: last id not in eos/pad).
    truncated_mass : Tensor (M,), optional
        Mean over the completion's tokens of ``1 - Z_t``: the ``pi_T`` mass that top-k / top-p /
        min-p removed (0 without truncation).
    log_ratio : Tensor (M,), optional
        ``sum_t log pi_T(y_t) - log q_t(y_t)``: sampler ``q`` against the policy ``pi_T`` that is
        differentiated (0 when they are equal; TRL's vLLM importance weight is its exponential).
    """

    sequences: torch.Tensor
    completion_mask: torch.Tensor
    texts: list
    completion_ids: list | None = None
    truncated: torch.Tensor | None = None
    truncated_mass: torch.Tensor | None = None
    log_ratio: torch.Tensor | None = None


def _pad_id(tok) -> int:
    for t in (tok.pad_token_id, tok.eos_token_id, 0):
        if t is not None:
            return int(t)
    return 0


@functools.lru_cache(maxsize=None)
def cache_keyword(model_class: type) -> str:
    """The name under which ``model_class.forward`` takes, and its output returns, the KV cache.

    ``transformers`` renamed ``past_key_values`` to ``cache`` in 5.24 (the old name is deprecated,
    to be removed in 5.40).  The name is read once per model class from the signature of
    ``forward``, so the same cache object the model returned goes back in by the keyword that the
    installed version expects, with no version switch.

    Examples
    --------
    >>> from transformers import GPT2LMHeadModel
    >>> cache_keyword(GPT2LMHeadModel) in ("cache", "past_key_values")
    True
    """
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _repetition_penalty(raw, seen, penalty):
    """transformers' ``RepetitionPenaltyLogitsProcessor``: seen tokens' logits / p (>0) or * p (<0)."""
    score = raw.gather(1, seen)  # (M, Tseen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return raw.scatter(1, seen, score)


def _truncate(logits, top_k, top_p, min_p):
    """top-k -> top-p -> min-p on tempered logits (transformers' order), removed tokens -> -inf."""
    if top_k:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        srt, idx = torch.sort(logits, descending=True)
        cum = torch.softmax(srt, -1).cumsum(-1)
        drop = (cum - torch.softmax(srt, -1)) > top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, idx, drop), -math.inf)
    if min_p:
        probs = torch.softmax(logits, -1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return logits


@torch.no_grad()
def sample_completions(policy: LanguageModelPolicy, prompt_ids: list[int], num_samples: int, *,
                       rng=None, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None,
                       min_p: float | None = None, repetition_penalty: float = 1.0,
                       warn: bool = True) -> Completions:
    """Sample completions (ancestral sampling with a KV cache) as a GRPO trainer configures it.

    ``prompt_ids`` is one prompt (a list of ids) or several prompts of equal length (a list of such
    lists, ``(P, Tp)``); each is sampled ``num_samples`` times, rows grouped by prompt
    (``P * num_samples`` rows).

    The default (temperature 1, nothing else) samples from pi_theta itself.  With ``temperature``
    T alone the sampler is ``pi_T = softmax(z / T)``, whose score is
    ``per_sample_scores(..., temperature=T)``.  ``repetition_penalty`` (applied to the raw logits
    first), then T, then ``top_k`` (0/None off) -> ``top_p`` -> ``min_p`` follow transformers'
    order; any of these makes the sampler ``q`` differ from ``pi_T`` (a warning says so unless
    ``warn=False``), and the returned ``truncated_mass`` / ``log_ratio`` measure by how much.
    The model's own ``generation_config`` is never read (only its EOS ids, as TRL reads them).
    ``rng`` is a ``torch.Generator`` (used as is) or anything :func:`numpy.random.default_rng`
    accepts, from which a generator on ``policy.device`` is seeded (``_random.torch_generator``).
    """
    processed = bool(top_k) or (top_p is not None and top_p < 1.0) or bool(min_p) or repetition_penalty != 1.0
    if warn and processed:
        warnings.warn("top-k/top-p/min-p truncation or a repetition penalty: completions no longer come "
                      "from pi_T = softmax(z/T), so grad log pi_T is not their score function", UserWarning,
                      stacklevel=2)
    model, dev = policy.model, policy.device
    generator = torch_generator(rng, dev)
    eos, pad = policy.eos_token_ids, _pad_id(policy.tokenizer)
    eos_t = torch.tensor(eos, dtype=torch.long, device=dev)
    prompt = torch.tensor(prompt_ids, device=dev)
    prompt = (prompt[None] if prompt.ndim == 1 else prompt).repeat_interleave(num_samples, 0)  # (M, Tp)
    num_rows = prompt.shape[0]
    # Finished rows keep being fed pad tokens whose outputs are discarded; an all-ones mask
    # keeps transformers from guessing that the batch is padded.
    attn = torch.ones_like(prompt)  # (M, Tp)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped LM
    key = cache_keyword(type(base))
    out = model(input_ids=prompt, attention_mask=attn, use_cache=True)
    past, logits = getattr(out, key), out.logits[:, -1]
    done = torch.zeros(num_rows, dtype=torch.bool, device=dev)
    new, mask = [], []
    lost = torch.zeros(num_rows, dtype=torch.float64, device=dev)  # sum_t (1 - Z_t)
    log_ratio = torch.zeros(num_rows, dtype=torch.float64, device=dev)
    for _ in range(policy.max_new_tokens):
        raw = logits.float()
        if repetition_penalty != 1.0:
            raw = _repetition_penalty(raw, torch.cat([prompt, *[t[:, None] for t in new]], 1), repetition_penalty)
        logits = raw / temperature
        if processed:
            logits = _truncate(logits, top_k, top_p, min_p)
        probs = torch.softmax(logits, -1)
        tok = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (M,)
        if processed:
            log_pi = torch.log_softmax(out.logits[:, -1].float() / temperature, -1)  # (M, V) policy pi_T
            live = (~done).double()
            lost += live * (1 - log_pi.exp().masked_fill(torch.isinf(logits), 0).sum(-1)).double().clamp(min=0)
            lq = torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0]
            log_ratio += live * (log_pi.gather(1, tok[:, None])[:, 0] - lq).double()
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        new.append(tok)
        mask.append(~done)
        done = done | torch.isin(tok, eos_t)
        if bool(done.all()):
            break
        attn = torch.cat([attn, attn[:, :1]], 1)  # (M, T + 1)
        out = model(input_ids=tok[:, None], attention_mask=attn, use_cache=True, **{key: past})
        past, logits = getattr(out, key), out.logits[:, -1]
    comp = torch.stack(new, 1)  # (M, Tc)
    cmask = torch.stack(mask, 1).to(torch.float32)  # (M, Tc)
    sequences = torch.cat([prompt, comp], 1)  # (M, Tp + Tc)
    completion_mask = torch.cat([torch.zeros_like(prompt, dtype=torch.float32), cmask], 1)
    texts = policy.tokenizer.batch_decode(comp.tolist(), skip_special_tokens=True)
    lengths = cmask.sum(1).long()  # (M,)
    ids = [row[:n] for row, n in zip(comp.tolist(), lengths.tolist())]
    truncated = torch.tensor([not (r and r[-1] in eos) for r in ids])
    return Completions(sequences=sequences.cpu(), completion_mask=completion_mask.cpu(),
                       texts=list(texts), completion_ids=ids, truncated=truncated,
                       truncated_mass=(lost / lengths.clamp(min=1)).cpu(), log_ratio=log_ratio.cpu())


# --------------------------------------------------------------------------- prompt samples

def sample_prompt(policy: LanguageModelPolicy, problem: arithmetic.Problem, num_samples: int, *, rng=None):
    """Completions and binary rewards ``(Completions, rewards (M,))`` for one question.

    ``rng`` as in :func:`sample_completions`; a SeedSequence ``ss`` seeds torch with
    ``generate_state(1, uint64)[0] >> 1`` (the stream of :func:`prompt_samples`).
    """
    comp = sample_completions(policy, policy.encode(problem), num_samples, rng=rng)
    rewards = np.array([arithmetic.verify(t, problem.answer) for t in comp.texts])
    return comp, rewards
