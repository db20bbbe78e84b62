"""The group-statistics half of a verl integration on verl's data layout (no verl installed)."""
import numpy as np
import pytest

from ustat_grpo.scaling.constants import merge_statistics, prompt_statistics
from ustat_grpo.integrations.verl import group_by_uid, sequence_rewards, uid_statistics


def _verl_batch(rng, n_prompts=6, G=4, k=3, T=7):
    """Rollouts of ``n_prompts`` prompts x G, shuffled across the batch as verl's balance_batch does,
    with the reward on the last response token."""
    z = (rng.random((n_prompts, G)) < 0.5).astype(float)                     # (P, G) true groups
    w = rng.normal(size=(n_prompts, G, k))
    lengths = rng.integers(1, T + 1, size=(n_prompts, G))
    perm = rng.permutation(n_prompts * G)                                    # batch row -> (p, g)
    uid = np.array([f"uid-{p}" for p in range(n_prompts) for _ in range(G)], dtype=object)[perm]
    mask = (np.arange(T)[None, :] < lengths.reshape(-1)[perm][:, None]).astype(float)   # (n, T)
    scores_tok = np.zeros((n_prompts * G, T))
    scores_tok[np.arange(n_prompts * G), lengths.reshape(-1)[perm] - 1] = z.reshape(-1)[perm]
    return z, w, uid, scores_tok, mask, w.reshape(-1, k)[perm], perm


def test_uid_groups_equal_the_true_groups_exactly():
    rng = np.random.default_rng(0)
    z, w, uid, tok, mask, w_rows, perm = _verl_batch(rng)
    r = sequence_rewards(tok, mask)
    np.testing.assert_array_equal(r, z.reshape(-1)[perm])
    u, idx = group_by_uid(uid)
    order = [int(x.split("-")[1]) for x in u]                                # prompts in first-appearance order
    st = uid_statistics(uid, r, w_rows)
    # within a group the rows keep batch order: compare with the true group in that order
    for gi, p in enumerate(order):
        members = perm[idx[gi]] % z.shape[1]                                 # which sample of prompt p
        ref = prompt_statistics(z[p][members][None], w[p][members][None], keep_scores=True)
        np.testing.assert_array_equal(st.g[gi], ref.g[0])
        np.testing.assert_array_equal(st.zzq[gi], ref.zzq[0])
    # negative control: TRL's consecutive blocks are the wrong groups on verl's layout
    blocks = prompt_statistics(r.reshape(-1, z.shape[1]), w_rows.reshape(z.shape[0], z.shape[1], -1))
    assert not np.allclose(np.sort(blocks.g_norm2), np.sort(st.g_norm2))


def test_windows_merge_with_disjoint_prompt_ids_and_bad_layouts_are_refused():
    rng = np.random.default_rng(1)
    _, _, uid, tok, mask, w_rows, _ = _verl_batch(rng)
    a = uid_statistics(uid, sequence_rewards(tok, mask), w_rows, prompt_ids=range(6))
    b = uid_statistics(uid, sequence_rewards(tok, mask), w_rows, prompt_ids=range(100, 106))
    assert len(merge_statistics(a, b)) == 12
    with pytest.raises(ValueError, match="different sizes"):
        group_by_uid(["a", "a", "b"])
    with pytest.raises(ValueError, match="need rewards"):
        uid_statistics(uid, np.zeros(3), w_rows)
    with pytest.raises(ValueError, match="both be"):
        sequence_rewards(tok, mask[:, :3])
