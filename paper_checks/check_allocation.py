"""Rollouts allocated across prompts by the per-prompt error law (issue 23, check ``Alloc-bandit``).

With the prompt (stratum) known before sampling, the batch leave-one-out gradient with group size
``G_i`` for prompt ``i`` has MSE ``A1/B + (1/B^2) sum_i [a2_i/G_i + a3_i/(G_i(G_i-1))]``
(:func:`ustat_grpo.scaling.allocation.batch_mse`; arXiv 2603.01162, Prop. 3 prompt by prompt).  On a
contextual bandit with exact per-context moments:

1. the greedy allocation (:func:`~ustat_grpo.scaling.allocation.optimal_allocation`) equals the brute-force
   optimum over every allocation of a small budget;
2. its predicted within-prompt error ``(1/B^2) sum_i f_i(G_i)`` equals the exact error of the
   allocated estimator computed by enumerating every group of each context
   (:func:`ustat_grpo.theory.mse.enumerate_mse`, which shares no algebra with the law);
3. on a seeded pilot of that bandit, :func:`~ustat_grpo.scaling.allocation.allocate` suggests the
   allocation and its gain interval covers the exact gain;
4. negative controls: identical contexts give the uniform allocation (exact gain 0) and a pilot of
   them is not suggested an allocation; the paper's ``1/G^2`` residual written as exact disagrees
   with enumeration.
"""
from __future__ import annotations

import numpy as np

from paper_checks import Outcome, register

BUDGET, NUM_PROMPTS = 15, 3


def built_bandit(identical: bool = False):
    """Three contexts, two arms, binary rewards: nearly solved, nearly failed, and mixed."""
    from ustat_grpo.policies.bandits import ContextualSoftmaxBandit

    rng = np.random.default_rng(23)
    phi = rng.normal(size=(3, 2, 2)) * np.array([0.5, 1.0, 2.5])[:, None, None]
    sp = np.array([[0.9, 0.97], [0.03, 0.1], [0.2, 0.8]])
    if identical:
        phi, sp = np.repeat(phi[2:], 3, 0), np.repeat(sp[2:], 3, 0)
    return ContextualSoftmaxBandit(phi, success_probs=sp, theta=np.array([0.3, -0.2]))


def _exact_gain(a1, a2, a3, sizes, uniform):
    from ustat_grpo.scaling.allocation import batch_mse

    return 1 - batch_mse(a1, a2, a3, sizes) / batch_mse(a1, a2, a3, uniform)


@register("Alloc-bandit", "the allocation of rollouts across prompts that minimises the batch gradient error "
                          "A1/B + sum_i (a2_i/G_i + a3_i/(G_i(G_i-1)))/B^2 is found exactly by greedy marginal "
                          "allocation, its predicted error is the exact error, and homogeneous prompts get no "
                          "allocation", paper="2603.01162 (extension, issue 23)", seed=20261207)
def check_alloc_bandit(rng):
    from ustat_grpo.scaling import allocation as al
    from ustat_grpo.scaling.constants import prompt_statistics
    from ustat_grpo.theory.mse import constants, enumerate_mse

    b = built_bandit()
    m = b.moments()
    a2, a3 = al.moment_error_pieces(m)
    greedy = al.optimal_allocation(a2, a3, BUDGET)
    brute = al._optimal_allocation_naive(a2, a3, BUDGET)
    f = lambda s: float(np.sum(a2 / s + a3 / (s * (s - 1.0))))
    same_opt = bool(abs(f(greedy) - f(brute)) <= 1e-12 * f(brute))
    # exact error of the allocated estimator by enumeration, context by context
    enum = np.array([enumerate_mse(b, "leave_one_out", int(g)).mse[x] for x, g in enumerate(greedy)])
    predicted = al.batch_mse(0.0, a2, a3, greedy)
    enumerated = float(enum.sum() / NUM_PROMPTS**2)
    rel = abs(predicted / enumerated - 1)
    wrong = float(np.sum(a2 / greedy + a3 / greedy**2.0)) / NUM_PROMPTS**2       # paper's order as exact
    wrong_rel = abs(wrong / enumerated - 1)
    uni = al.uniform_allocation(NUM_PROMPTS, BUDGET)
    A1 = constants(m)[0]
    exact_gain = _exact_gain(A1, a2, a3, greedy, uni)

    # a seeded pilot: contexts are the strata (known before sampling)
    s = b.sample(600, 16, rng=rng)
    res = al.allocate(prompt_statistics(s.rewards, s.scores), s.prompt_ids, budget=60, num_prompts=12)
    who = np.repeat(np.arange(3), res.counts)
    truth = _exact_gain(A1, a2[who], a3[who], al.optimal_allocation(a2[who], a3[who], 60),
                        al.uniform_allocation(12, 60))
    covers = bool(res.gain_interval.low <= truth <= res.gain_interval.high)

    # negative control: identical contexts
    h = built_bandit(identical=True)
    h2, h3 = al.moment_error_pieces(h.moments())
    hg = al.optimal_allocation(h2, h3, BUDGET)
    h_gain = _exact_gain(constants(h.moments())[0], h2, h3, hg, uni)
    sh = h.sample(600, 16, rng=rng)
    hres = al.allocate(prompt_statistics(sh.rewards, sh.scores), sh.prompt_ids, budget=60, num_prompts=12)
    control = bool(abs(h_gain) < 1e-15 and not hres.recommended and "no gain" in hres.reason and wrong_rel > 1e-3)

    passed = same_opt and rel < 1e-10 and res.recommended and covers and control
    return Outcome(
        expected=("greedy = brute force; predicted = enumerated error (rel. < 1e-10); pilot: allocation suggested, "
                  "gain interval covers the exact gain; control: identical contexts -> exact gain 0, not suggested; "
                  "1/G^2 residual disagrees with enumeration"),
        observed=(f"greedy {greedy.tolist()} vs brute {brute.tolist()} (objective {'equal' if same_opt else 'DIFFERENT'}); "
                  f"predicted {predicted:.6g} vs enumerated {enumerated:.6g} (rel {rel:.1e}); exact gain at N={BUDGET}: "
                  f"{exact_gain:.1%}; pilot 600 x 16: gain {res.gain:.1%} [{res.gain_interval.low:.1%}, "
                  f"{res.gain_interval.high:.1%}] vs exact {truth:.1%}, suggested {res.recommended}; identical: exact "
                  f"gain {h_gain:.1e}, pilot gain {hres.gain:.1%} [{hres.gain_interval.low:.1%}, "
                  f"{hres.gain_interval.high:.1%}], suggested {hres.recommended}; 1/G^2 rel. err {wrong_rel:.1e}"),
        passed=bool(passed),
        details={"greedy": greedy.tolist(), "brute_force": brute.tolist(), "predicted": predicted,
                 "enumerated": enumerated, "a2": a2.tolist(), "a3": a3.tolist(), "exact_gain": exact_gain,
                 "pilot": res.to_dict(), "pilot_exact_gain": truth, "identical_pilot": hres.to_dict(),
                 "negative_control_failed": control})
