"""The policy protocols and the RNG convention (ustat_grpo.policies.policy, ustat_grpo.core._random)."""
import numpy as np
import pytest
import torch

from ustat_grpo.core import _random
from ustat_grpo.policies.policy import ExactMoments, KnownOptimum, Policy, ReplicatedSampling, Sample


def test_default_rng_passes_generators_through_and_reads_seeds():
    gen = np.random.default_rng(3)
    assert _random.default_rng(gen) is gen
    np.testing.assert_array_equal(_random.default_rng(3).random(4), np.random.default_rng(3).random(4))
    np.testing.assert_array_equal(_random.default_rng(np.random.SeedSequence(3)).random(4),
                                  np.random.default_rng(3).random(4))


def test_torch_generator_from_seed_sequence_is_the_lm_stream():
    """A SeedSequence seeds torch with its first uint64 word shifted right by one (the scheme
    behind sampler.prompt_samples); an int is read as SeedSequence(int); torch generators pass through."""
    ss = np.random.SeedSequence(11)
    want = int(ss.generate_state(1, np.uint64)[0]) >> 1
    assert _random.torch_seed(ss) == want == _random.torch_seed(11)
    a = torch.rand(5, generator=_random.torch_generator(ss))
    b = torch.rand(5, generator=torch.Generator().manual_seed(want))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    assert _random.torch_generator(g) is g
    assert 0 <= _random.torch_seed(np.random.default_rng(0)) < 2 ** 63


def test_torch_generator_from_a_numpy_generator_advances_it():
    gen = np.random.default_rng(2)
    s1, s2 = _random.torch_seed(gen), _random.torch_seed(gen)
    assert s1 != s2
    gen2 = np.random.default_rng(2)
    assert _random.torch_seed(gen2) == s1


def test_protocol_members():
    class _Minimal:
        dim = 1
        theta = np.zeros(1)

        def with_theta(self, theta):
            return self

        def sample(self, num_prompts, num_generations, *, rng=None):
            return Sample(rewards=np.zeros((num_prompts, num_generations)),
                          scores=np.zeros((num_prompts, num_generations, 1)),
                          prompt_ids=np.zeros(num_prompts, int))

    pol = _Minimal()
    assert isinstance(pol, Policy)
    assert not any(isinstance(pol, p) for p in (ReplicatedSampling, ExactMoments, KnownOptimum))
    assert not isinstance(object(), Policy)
    assert "Sample" in str(pol.sample(1, 2))
    with pytest.raises(TypeError):
        Policy()
