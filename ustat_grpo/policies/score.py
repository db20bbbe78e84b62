"""Per-sample score functions of a torch causal LM, their Gram matrices and a seeded sketch.

The score of a sequence is ``W = grad_theta log pi_theta(y | x) = sum_t grad_theta log
pi_theta(y_t | x, y_<t)`` over its completion tokens (arXiv 2603.01162, Section 2), computed for
many sequences at once with ``torch.func.vmap(grad(...))`` over ``functional_call``, chunked to
bound memory, optionally followed by a seeded Johnson-Lindenstrauss projection (:class:`Sketch`).
:mod:`ustat_grpo.policies.lm` re-exports every public name here.
"""
from __future__ import annotations

import inspect
import math
import weakref

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..core._random import torch_seed

__all__ = ["sequence_logprob", "token_logprobs", "parameter_names", "per_sample_scores", "Sketch", "gram",
           "squared_errors"]


def parameter_names(model, params: str | list | None = None) -> list[str]:
    """Names of the parameters that scores are taken with respect to, in ``named_parameters`` order.

    ``params`` is ``None`` (all), a list of names, or a substring every chosen name contains.
    """
    names = [n for n, _ in model.named_parameters()]
    if params is None:
        return names
    if isinstance(params, str):
        chosen = [n for n in names if params in n]
    else:
        unknown = set(params) - set(names)
        if unknown:
            raise ValueError(f"unknown parameter names: {sorted(unknown)}")
        chosen = [n for n in names if n in set(params)]
    if not chosen:
        raise ValueError(f"no parameter matches {params!r}")
    return chosen


def _embedding_name(model) -> str:
    emb = model.get_input_embeddings().weight
    for n, p in model.named_parameters():
        if p is emb:
            return n
    raise ValueError("input embedding weight is not a named parameter")


def _logprob_fn(model, frozen: dict, emb_name: str, temperature: float = 1.0):
    """``f(trainable, ids (T,), mask (T,)) -> sum_t mask_t log pi_T(ids_t | ids_<t)``.

    ``pi_T = softmax(z / T)`` over the full vocabulary, as GRPO trainers differentiate it (logits
    in float32, or float64 for a float64 model).  The embedding lookup happens here
    (``inputs_embeds``) so that no data-dependent check on ``input_ids`` runs under ``vmap``; right
    padding needs no attention mask under causal attention.
    """

    def f(trainable, ids, mask):
        p = {**frozen, **trainable}
        emb = torch.nn.functional.embedding(ids[None], p[emb_name])  # (1, T, D)
        logits = functional_call(model, p, (), {"inputs_embeds": emb, "use_cache": False}).logits
        return _masked_logprob(logits, ids[None], mask[None], temperature)[0]

    return f


def sequence_logprob(model, sequences: torch.Tensor, completion_mask: torch.Tensor, *,
                     temperature: float = 1.0) -> torch.Tensor:
    """``log pi_T(y_i | x_i)`` of every sequence, differentiable: what GRPO trainers differentiate.

    One batched forward of ``sequences (N, T)`` (prompt + completion, right-padded; causal attention
    makes the padding irrelevant) and the masked sum over completion tokens of
    ``log_softmax(z / T)`` (:func:`per_sample_scores` is the per-sequence gradient of this).

    Returns
    -------
    Tensor (N,)
    """
    return token_logprobs(model, sequences, completion_mask, temperature=temperature).sum(-1)


def token_logprobs(model, sequences: torch.Tensor, completion_mask: torch.Tensor, *,
                   temperature: float = 1.0) -> torch.Tensor:
    """Per-token ``mask_t log pi_T(y_t | x, y_<t)``, differentiable, shape ``(N, T - 1)``.

    Entry ``t`` belongs to token ``t + 1`` of ``sequences``; masked (prompt, padding) entries are 0,
    so ``token_logprobs(...).sum(-1) == sequence_logprob(...)``.  Token-level importance ratios
    (Algorithm 2, PPO clipping) and per-token KL estimators need this form.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dev = next(model.parameters()).device
    ids, mask = sequences.to(dev), completion_mask.to(dev)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits   # (N, T, V)
    return _masked_token_logprobs(logits, ids, mask, temperature)


def _masked_token_logprobs(logits, ids, mask, temperature: float = 1.0):
    """``mask_t log pi_T(ids_t | ids_<t)``: logits (n, T, V), ids and mask (n, T) -> (n, T - 1).

    The one definition of the token log-probability, shared by the vmap and the hook paths and by
    training: ``pi_T = softmax(z / T)`` over the full vocabulary (logits in float32, float64 for a
    float64 model).
    """
    z = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))  # (n, T-1, V)
    if temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, -1)  # (n, T-1, V)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (n, T-1)
    return tok * mask[:, 1:].to(tok.dtype)


def _masked_logprob(logits, ids, mask, temperature: float = 1.0):
    """``sum_t mask_t log pi_T(ids_t | ids_<t)`` per row: logits (n, T, V), ids and mask (n, T) -> (n,)."""
    return _masked_token_logprobs(logits, ids, mask, temperature).sum(-1)


# --------------------------------------------------------------------------- per-sample grads by hooks
#
# For models whose trainable parameters all sit in nn.Linear, transformers' Conv1D, nn.Embedding
# and nn.LayerNorm modules, per-sample gradients follow from ONE batched forward and a backward to
# the module outputs only (no weight gradients): a Linear weight's score is sum_t g_t a_t^T, one
# bmm per layer written straight into its columns of the output, so no (N, *shape) temporaries are
# copied into the (N, d) matrix.  The vmap(grad) path stays the reference: the first call on a
# model checks two sequences against it and keeps the hooks only if they agree.

def _module_kinds():
    kinds = {torch.nn.Linear: "linear", torch.nn.Embedding: "embedding", torch.nn.LayerNorm: "layer_norm"}
    try:
        from transformers.pytorch_utils import Conv1D
        kinds[Conv1D] = "conv1d"
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    return kinds


def _hook_plan(model, trainable: dict):
    """``[(module, kind, [(name, attr)])]`` covering every trainable parameter, or ``None``."""
    kinds = _module_kinds()
    by_id = {id(p): n for n, p in trainable.items()}
    plan, seen = [], set()
    for _, m in model.named_modules():
        own = [(by_id[id(p)], a) for a, p in m.named_parameters(recurse=False) if id(p) in by_id]
        if not own:
            continue
        kind = kinds.get(type(m))                    # exact types: a subclass may use its weights otherwise
        if kind is None:
            return None
        if kind == "embedding" and (m.max_norm is not None or m.scale_grad_by_freq or m.sparse):
            return None
        if kind == "layer_norm" and len(m.normalized_shape) != 1:
            return None
        plan.append((m, kind, own))
        seen.update(n for n, _ in own)
    return plan if seen == set(trainable) else None


def _scores_by_hooks(model, plan, ids, mask, views, temperature=1.0) -> bool:
    """Write the scores of ``ids (c, T)`` into ``views[name] (c, *shape)``; ``False`` if not possible."""
    c, T = ids.shape
    seen, calls = {}, {}

    def hook(m, inp, out):
        if not out.requires_grad:                    # frozen model: start the graph here
            out = out.detach().requires_grad_()
        seen[m] = (inp[0], out)
        calls[m] = calls.get(m, 0) + 1
        return out

    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    if "position_ids" in inspect.signature(model.forward).parameters:       # per-row positions (c, T)
        kw["position_ids"] = torch.arange(T, device=ids.device).expand(c, T)
    handles = [m.register_forward_hook(hook) for m, _, _ in plan]
    try:
        with torch.enable_grad():
            logits = model(**kw).logits                                     # (c, T, V)
            loss = _masked_logprob(logits, ids, mask, temperature).sum()
    finally:
        for h in handles:
            h.remove()
    if any(calls.get(m) != 1 or seen[m][1].shape[0] != c for m, _, _ in plan):
        return False                                 # a module skipped, reused, or not per sequence
    gouts = torch.autograd.grad(loss, [seen[m][1] for m, _, _ in plan], allow_unused=True)
    with torch.no_grad():
        return _write_hooked(plan, gouts, {m: v[0].detach() for m, v in seen.items()}, views, c)


def _write_hooked(plan, gouts, inputs, views, c) -> bool:
    """Per-sample parameter gradients from module inputs and output gradients, into ``views``."""
    written = set()
    for (m, kind, own), gout in zip(plan, gouts):
        a = inputs[m]
        for name, attr in own:
            v = views[name]                                                         # (c, *shape)
            if gout is None:                         # no path to the loss
                if name not in written:
                    v.zero_()
                written.add(name)
                continue
            g = gout.reshape(c, -1, gout.shape[-1])                                 # (c, T, out)
            tied = name in written                   # a second use of a tied weight: add
            dst = None if tied else v
            if kind in ("linear", "conv1d") and attr == "weight":
                x = a.reshape(c, -1, a.shape[-1]).to(g.dtype)                       # (c, T, in)
                if kind == "linear":                 # weight (out, in): sum_t g_t a_t^T
                    r = torch.bmm(g.transpose(1, 2), x, out=dst)
                else:                                # Conv1D weight (in, out): sum_t a_t g_t^T
                    r = torch.bmm(x.transpose(1, 2), g, out=dst)
            elif attr == "bias":
                r = torch.sum(g, 1, out=dst)
            elif kind == "layer_norm" and attr == "weight":
                xhat = torch.nn.functional.layer_norm(a, m.normalized_shape, eps=m.eps)
                r = torch.sum(g * xhat.reshape(g.shape).to(g.dtype), 1, out=dst)
            elif kind == "embedding" and attr == "weight":
                r = torch.zeros_like(v) if tied else v.zero_()                     # (c, V, D)
                r.scatter_add_(1, a.reshape(c, -1, 1).expand(-1, -1, g.shape[-1]), g.to(r.dtype))
                if m.padding_idx is not None:
                    r[:, m.padding_idx] = 0
            else:
                return False
            if tied:
                v.add_(r)
            written.add(name)
    return True


_HOOKS_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Sketch:
    """Seeded Johnson-Lindenstrauss sketch ``x -> Pi x`` from ``dim`` to ``k`` dimensions.

    ``Pi`` has i.i.d. entries ``N(0, 1/k)`` (``kind="gaussian"``) or ``±1/sqrt(k)``
    (``"rademacher"``), generated in column blocks, each from its own seed
    ``SeedSequence([seed, block])``, so ``Pi`` depends only on ``(dim, k, kind, seed)``.

    Notes
    -----
    ``<Pi a, Pi b>`` is unbiased for ``<a, b>``; with Gaussian entries its variance is
    ``(|a|^2 |b|^2 + <a, b>^2) / k``, and Rademacher entries give at most that
    (:meth:`inner_product_std`).  Squared norms are within a factor ``1 ± eps`` for all of ``n``
    points with high probability once ``k >= 8 log(n) / eps^2``.
    """

    def __init__(self, dim: int, k: int, *, kind: str = "gaussian", seed: int = 0,
                 block: int = 1 << 14, cache_bytes: int = 1 << 28):
        if kind not in ("gaussian", "rademacher"):
            raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")
        if k < 1 or dim < 1:
            raise ValueError("dim and k must be positive")
        self.dim, self.k, self.kind, self.seed, self.block = int(dim), int(k), kind, int(seed), block
        self._cache: dict[int, torch.Tensor] | None = {} if dim * k * 4 <= cache_bytes else None

    def _block(self, b: int, dtype, device) -> torch.Tensor:
        if self._cache is not None and b in self._cache:
            return self._cache[b].to(dtype=dtype, device=device)
        width = min(self.block, self.dim - b * self.block)
        s = torch_seed([self.seed, b])
        gen = torch.Generator().manual_seed(s)
        if self.kind == "gaussian":
            m = torch.randn(width, self.k, generator=gen)
        else:
            m = torch.randint(0, 2, (width, self.k), generator=gen).float().mul_(2).sub_(1)
        m /= math.sqrt(self.k)  # (width, k)
        if self._cache is not None:
            self._cache[b] = m
        return m.to(dtype=dtype, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Project rows: ``x`` (n, dim) -> (n, k)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dim {self.dim}, got {x.shape[-1]}")
        out = x.new_zeros(*x.shape[:-1], self.k)
        for b in range(math.ceil(self.dim / self.block)):
            sl = slice(b * self.block, (b + 1) * self.block)
            out += x[..., sl] @ self._block(b, x.dtype, x.device)
        return out

    def inner_product_std(self, a, b) -> np.ndarray:
        """Standard deviation bound of ``<Pi a, Pi b> - <a, b>`` (rows of ``a``, ``b`` paired)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        na, nb, ab = (a * a).sum(-1), (b * b).sum(-1), (a * b).sum(-1)
        return np.sqrt((na * nb + ab ** 2) / self.k)


def per_sample_scores(model, sequences: torch.Tensor, completion_mask: torch.Tensor, *,
                      params: str | list | None = None, chunk_size: int = 32,
                      projection: Sketch | None = None, flatten: bool = True, temperature: float = 1.0,
                      method: str = "auto"):
    """Per-sample scores ``grad_theta log pi_theta(y_i | x_i)``, flattened.

    Parameters
    ----------
    model : transformers causal LM (eval mode)
    sequences : LongTensor (N, T)
        Prompt + completion, right-padded.
    completion_mask : Tensor (N, T)
        1 on completion tokens: ``log pi(y|x) = sum_t mask_t log pi(seq_t | seq_<t)``.
    params : None, list of names, or substring
        Parameters to differentiate (see :func:`parameter_names`); the others are held fixed.
    chunk_size : int
        Sequences per ``vmap`` call; bounds peak memory at ``chunk_size`` x (gradient + activations).
    projection : Sketch, optional
        Apply this sketch to each chunk (output dim ``projection.k``).
    flatten : bool
        ``False``: return ``{name: Tensor (N, *shape)}`` per parameter, skipping the copy into one
        (N, d) matrix (a Gram matrix is the sum of the per-parameter Gram matrices).
    temperature : float
        Score of ``pi_T = softmax(z / T)``: ``grad log_softmax(z / T)[y]`` summed over completion
        tokens (TRL / verl / OpenRLHF's training log-probabilities); 1 is the plain policy.

    method : {"auto", "vmap", "hooks"}
        ``"vmap"``: ``vmap(grad(f))`` over ``functional_call`` (torch.func), any model.
        ``"hooks"``: one batched forward, a backward to the module outputs, and one ``bmm`` per
        weight written into the output (models whose chosen parameters all sit in ``nn.Linear``,
        transformers' ``Conv1D``, ``nn.Embedding`` or ``nn.LayerNorm``; GPT-2).  ``"auto"``: hooks
        where they apply and agree with vmap on two sequences (checked once per model and
        parameter set), else vmap.

    Returns
    -------
    Tensor (N, d) or (N, k), or dict of per-parameter tensors
        Columns follow ``parameter_names(model, params)`` order, each parameter flattened.

    Notes
    -----
    Both methods equal one autograd backward pass per sequence (tested to 1e-5 relative in
    float32).  The output is allocated once and each chunk written into its rows.
    """
    if method not in ("auto", "vmap", "hooks"):
        raise ValueError(f"method must be 'auto', 'vmap' or 'hooks', got {method!r}")
    if not flatten and projection is not None:
        raise ValueError("projection needs flatten=True")
    names = parameter_names(model, params)
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    trainable = {n: all_params[n] for n in names}
    dev = next(model.parameters()).device
    N = sequences.shape[0]
    shapes = {n: tuple(trainable[n].shape) for n in names}
    sizes = [trainable[n].numel() for n in names]
    dtype = trainable[names[0]].dtype
    live = dict(model.named_parameters())                  # the module attributes (not detached copies)
    plan = _hook_plan(model, {n: live[n] for n in names}) if method != "vmap" else None
    if method == "hooks" and plan is None:
        raise ValueError("method='hooks' needs every chosen parameter in nn.Linear, Conv1D, "
                         "nn.Embedding or nn.LayerNorm modules")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if plan is not None:
        out = _scores_hooked(model, plan, names, shapes, sizes, dtype, dev, sequences, completion_mask,
                             chunk_size, projection, flatten, check=method == "auto", temperature=temperature)
        if out is not None:
            return out
        if method == "hooks":
            raise ValueError("method='hooks': this model calls a hooked module other than once per sequence")
    frozen = {n: p for n, p in all_params.items() if n not in trainable}
    frozen.update({n: b for n, b in model.named_buffers()})
    f = _logprob_fn(model, frozen, _embedding_name(model), temperature)
    g = vmap(grad(f), in_dims=(None, 0, 0))
    out = _allocate(names, shapes, sizes, dtype, dev, N, projection, flatten)
    for start in range(0, N, chunk_size):
        ids = sequences[start:start + chunk_size].to(dev)
        mk = completion_mask[start:start + chunk_size].to(dev)
        grads = g(trainable, ids, mk)
        rows = slice(start, start + ids.shape[0])
        if not flatten:
            for n in names:
                out[n][rows] = grads[n]
        elif projection is None:
            torch.cat([grads[n].reshape(ids.shape[0], -1) for n in names], 1, out=out[rows])
        else:
            out[rows] = projection(torch.cat([grads[n].reshape(ids.shape[0], -1) for n in names], 1))
    return out


def _allocate(names, shapes, sizes, dtype, dev, N, projection, flatten):
    if not flatten:
        return {n: torch.empty((N,) + shapes[n], dtype=dtype, device=dev) for n in names}
    return torch.empty(N, projection.k if projection is not None else sum(sizes), dtype=dtype, device=dev)


def _column_views(flat, names, shapes, sizes):
    """``{name: flat[:, columns of name].view(c, *shape)}`` (views: writes land in ``flat``)."""
    c = flat.shape[0]
    return {n: part.view((c,) + shapes[n]) for n, part in zip(names, flat.split(sizes, 1))}


def _scores_hooked(model, plan, names, shapes, sizes, dtype, dev, sequences, completion_mask,
                   chunk_size, projection, flatten, *, check, temperature=1.0):
    """:func:`per_sample_scores` by :func:`_scores_by_hooks`; ``None`` to use the vmap path."""
    N = sequences.shape[0]
    out = _allocate(names, shapes, sizes, dtype, dev, N, projection, flatten)
    work = torch.empty(min(chunk_size, N), sum(sizes), dtype=dtype, device=dev) if projection is not None else None
    for start in range(0, N, chunk_size):
        ids = sequences[start:start + chunk_size].to(dev)
        mk = completion_mask[start:start + chunk_size].to(dev)
        c = ids.shape[0]
        rows = slice(start, start + c)
        if not flatten:
            views = {n: out[n][rows] for n in names}
        else:
            views = _column_views(out[rows] if projection is None else work[:c], names, shapes, sizes)
        if not _scores_by_hooks(model, plan, ids, mk, views, temperature):
            return None
        if check and start == 0 and not _hooks_agree(model, names, ids[:2], mk[:2], views, temperature):
            return None
        if projection is not None:
            out[rows] = projection(work[:c])
    return out


def _hooks_agree(model, names, ids, mask, views, temperature=1.0) -> bool:
    """Once per (model, parameters, T): the hook scores of two sequences equal the vmap(grad) ones."""
    key = (tuple(names), float(temperature))
    seen = _HOOKS_CHECKED.setdefault(model, {})
    if key not in seen:
        ref = per_sample_scores(model, ids, mask, params=list(names), chunk_size=2, flatten=False,
                                method="vmap", temperature=temperature)
        mine = torch.cat([views[n][:ids.shape[0]].reshape(ids.shape[0], -1) for n in names], 1).float()
        ref = torch.cat([ref[n].reshape(ids.shape[0], -1) for n in names], 1).float()
        tol = max(1e-4, 64 * torch.finfo(views[names[0]].dtype).eps)
        err = (mine - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        seen[key] = bool((err <= tol).all())
    return seen[key]


def gram(scores) -> np.ndarray:
    """Gram matrix ``K = S S^T`` (float64), ``scores`` (N, d)."""
    s = torch.as_tensor(scores).double()
    return (s @ s.T).cpu().numpy()


def squared_errors(weights, gram_matrix, cross, ref_sq_norm) -> np.ndarray:
    """``|sum_i w_i s_i - v|^2 = w^T K w - 2 w^T (S v) + |v|^2`` for rows ``w`` of ``weights``.

    Parameters
    ----------
    weights : (..., N)
    gram_matrix : (N, N)   ``K = S S^T``
    cross : (N,)           ``S v``
    ref_sq_norm : float    ``|v|^2`` (or an unbiased estimate of it)

    Returns
    -------
    (...,) squared errors; the Gram trick of stats_anchors.md D.2.
    """
    w = np.asarray(weights, float)
    return (np.einsum("...i,ij,...j->...", w, gram_matrix, w) - 2 * w @ np.asarray(cross, float)
            + float(ref_sq_norm))
