"""Per-sample score functions of a torch causal LM, their Gram matrices and a seeded sketch.

The score of a sequence is ``W = grad_theta log pi_theta(y | x) = sum_t grad_theta log
pi_theta(y_t | x, y_<t)`` over its completion tokens (arXiv 2603.01162, Section 2), computed for
many sequences at once with ``torch.func.vmap(grad(...))`` over ``functional_call``, chunked to
bound memory, optionally followed by a seeded Johnson-Lindenstrauss projection (:class:`Sketch`).
:mod:`ustat_grpo.lm` re-exports every public name here.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

__all__ = ["parameter_names", "per_sample_scores", "Sketch", "gram", "squared_errors"]


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
        logits = functional_call(model, p, (), {"inputs_embeds": emb, "use_cache": False}).logits[0]
        z = logits[:-1].to(torch.promote_types(logits.dtype, torch.float32))  # (T-1, V)
        if temperature != 1.0:
            z = z / temperature
        logp = torch.log_softmax(z, -1)  # (T-1, V)
        tok = logp.gather(-1, ids[1:, None])[:, 0]  # (T-1,)
        return (tok * mask[1:].to(tok.dtype)).sum()

    return f


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
        s = int(np.random.SeedSequence([self.seed, b]).generate_state(1, np.uint64)[0]) >> 1
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
                      projection: Sketch | None = None, flatten: bool = True, temperature: float = 1.0):
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

    Returns
    -------
    Tensor (N, d) or (N, k), or dict of per-parameter tensors
        Columns follow ``parameter_names(model, params)`` order, each parameter flattened.

    Notes
    -----
    ``vmap(grad(f))`` over ``functional_call`` (torch.func); equals one autograd backward pass per
    sequence (tested to 1e-5 relative in float32).
    """
    names = parameter_names(model, params)
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    trainable = {n: all_params[n] for n in names}
    frozen = {n: p for n, p in all_params.items() if n not in trainable}
    frozen.update({n: b for n, b in model.named_buffers()})
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    f = _logprob_fn(model, frozen, _embedding_name(model), temperature)
    g = vmap(grad(f), in_dims=(None, 0, 0))
    dev = next(model.parameters()).device
    if not flatten and projection is not None:
        raise ValueError("projection needs flatten=True")
    out = []
    for start in range(0, sequences.shape[0], chunk_size):
        ids = sequences[start:start + chunk_size].to(dev)
        mk = completion_mask[start:start + chunk_size].to(dev)
        grads = g(trainable, ids, mk)
        if not flatten:
            out.append(grads)
            continue
        flat = torch.cat([grads[n].reshape(ids.shape[0], -1) for n in names], 1)  # (c, d)
        out.append(projection(flat) if projection is not None else flat)
    if not flatten:
        return {n: torch.cat([o[n] for o in out], 0) for n in names}
    return torch.cat(out, 0)


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
