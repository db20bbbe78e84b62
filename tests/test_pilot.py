"""Tests of ustat_grpo.measurement.pilot and the mergeable per-prompt statistics of ustat_grpo.scaling.constants."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.scaling.constants import (constants_from_statistics, estimate_constants, merge_statistics,
                                  prompt_statistics)
from ustat_grpo.measurement.pilot import BanditSampler, load_pilot, run_pilot, shard_path

CREATED = "2026-01-01T00:00:00+00:00"          # fixed creation time: same inputs, same bytes
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _samples(P=24, M=16, seed=0):
    rng = np.random.default_rng(seed)
    s = default_bandit().sample(P, M, rng=rng)
    return s.rewards, s.scores


def test_statistics_reproduce_estimate_constants_exactly():
    z, w = _samples()
    whole = estimate_constants(z, w, n_groups=8)
    viastats = constants_from_statistics(prompt_statistics(z, w), n_groups=8)
    np.testing.assert_array_equal(viastats.unconstrained, whole.unconstrained)
    np.testing.assert_array_equal(viastats.covariance, whole.covariance)
    np.testing.assert_array_equal(viastats.plugin, whole.plugin)


def test_shards_merge_to_the_single_run():
    z, w = _samples()
    ids = np.random.default_rng(5).permutation(24)
    parts = [prompt_statistics(z[ids[k::3]], w[ids[k::3]], prompt_ids=ids[k::3]) for k in range(3)]
    merged = merge_statistics(parts[2], parts[0], parts[1])
    one = prompt_statistics(z, w)
    for f in ("prompt", "g", "g_norm2", "sigma2_trI", "zzq", "zzq_plugin", "rewards"):
        np.testing.assert_allclose(getattr(merged, f), getattr(one, f), rtol=1e-12, atol=0)
    np.testing.assert_allclose(constants_from_statistics(merged).unconstrained,
                               constants_from_statistics(one).unconstrained, rtol=1e-12)
    with pytest.raises(ValueError, match="overlap"):
        merge_statistics(parts[0], parts[0])


def test_pilot_equals_direct_sampling_and_one_rank_equals_two_ranks_bit_for_bit(tmp_path):
    sampler = BanditSampler(default_bandit(), 16)
    one = tmp_path / "one.nc"
    st1 = run_pilot(sampler, num_prompts=20, path=one, seed=3, batch_size=6, created=CREATED)
    # the same per-prompt streams drawn directly
    seqs = np.random.SeedSequence(3).spawn(20)
    direct = [sampler(p, seqs[p]) for p in range(20)]
    z = np.stack([d.rewards for d in direct]); w = np.stack([d.scores for d in direct])
    np.testing.assert_array_equal(constants_from_statistics(st1).unconstrained,
                                  estimate_constants(z, w).unconstrained)
    # two ranks, run one after the other in this process (rank 0 merges after both shards exist)
    two = tmp_path / "two.nc"
    assert run_pilot(sampler, num_prompts=20, path=two, seed=3, batch_size=6, created=CREATED,
                     rank=1, world_size=2) is None
    st2 = run_pilot(sampler, num_prompts=20, path=two, seed=3, batch_size=6, created=CREATED, rank=0, world_size=2)
    assert os.path.exists(shard_path(two, 1, 2))
    assert one.read_bytes() == two.read_bytes()
    np.testing.assert_array_equal(st1.g, st2.g)
    # reading shard files directly gives the same statistics, without touching a model
    merged, attrs = load_pilot([shard_path(two, 0, 2), shard_path(two, 1, 2)])
    np.testing.assert_array_equal(merged.g, st1.g)
    assert attrs["seed"] == "3" and int(attrs["ustat_grpo_pilot_num_prompts"]) == 20


def test_resume_refuses_another_configuration(tmp_path):
    sampler = BanditSampler(default_bandit(), 8)
    path = tmp_path / "p.nc"
    run_pilot(sampler, num_prompts=6, path=path, seed=0, batch_size=3, config={"model": "a"})
    with pytest.raises(ValueError, match="another configuration"):
        run_pilot(sampler, num_prompts=6, path=path, seed=0, batch_size=3, config={"model": "b"})


_SLOW_PILOT = """
import sys, time
import numpy as np
from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.measurement.pilot import BanditSampler, run_pilot
inner = BanditSampler(default_bandit(), 8)
def slow(p, seq):
    time.sleep(float(sys.argv[2]))
    return inner(p, seq)
run_pilot(slow, num_prompts=30, path=sys.argv[1], seed=11, batch_size=3, created="%s")
""" % CREATED


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_file_byte_for_byte(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_PILOT)
    ref = tmp_path / "ref.nc"
    subprocess.run([sys.executable, str(script), str(ref), "0"], check=True, env=env)
    path = tmp_path / "killed.nc"
    proc = subprocess.Popen([sys.executable, str(script), str(path), "0.05"], env=env)
    while not path.exists() and proc.poll() is None:               # first batch written, or exit
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial, _ = load_pilot(str(path))
    assert 3 <= len(partial) < 30
    subprocess.run([sys.executable, str(script), str(path), "0"], check=True, env=env)
    assert path.read_bytes() == ref.read_bytes()


def _gloo_worker(rank, world_size, init_file, path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        run_pilot(BanditSampler(default_bandit(), 16), num_prompts=20, path=path, seed=3, batch_size=6,
                  created=CREATED)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    mp = pytest.importorskip("torch.multiprocessing")
    one = tmp_path / "one.nc"
    run_pilot(BanditSampler(default_bandit(), 16), num_prompts=20, path=one, seed=3, batch_size=6, created=CREATED)
    two = tmp_path / "two.nc"
    mp.start_processes(_gloo_worker, args=(2, str(tmp_path / "init"), str(two)), nprocs=2, join=True,
                       start_method="spawn")
    assert one.read_bytes() == two.read_bytes()


_LM_ARGS = ["--num-prompts", "6", "--samples-per-prompt", "8", "--variant", "weak", "--projection-dim", "32",
            "--seed", "5", "--format", "json"]


def _cli_json(argv, env=None, keep_provenance=False):
    out = subprocess.run([sys.executable, "-m", "ustat_grpo.fit_scaling", *argv], capture_output=True, text=True,
                         env=env or dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    import json
    d = json.loads(out.stdout)
    d.pop("runtime_s")
    if not keep_provenance:                  # the command line, options and their hash differ by --pilot
        for k in ("command", "options", "input_hash", "source"):
            d.pop(k)
    return d


@pytest.mark.slow
def test_cli_pilot_file_gives_the_same_recommendation_and_reports_from_the_file(tmp_path):
    plain = _cli_json(_LM_ARGS)
    path = tmp_path / "pilot.nc"
    piloted = _cli_json(_LM_ARGS + ["--pilot", str(path)])
    assert piloted == plain                                            # same numbers, same input hash
    again = _cli_json(_LM_ARGS + ["--pilot", str(path)])               # resumed: nothing left to do
    assert again == plain
    from_file = _cli_json([str(path), "--format", "json"])             # no model touched
    assert from_file == plain


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_equal_one_process(tmp_path):
    pytest.importorskip("torch.distributed.run")
    # one thread in every process: float32 reductions then add in the same order (bit-identity holds
    # for equal thread counts on equal hardware, not across them)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    one = tmp_path / "one.nc"
    ref = _cli_json(_LM_ARGS + ["--pilot", str(one), "--device", "cpu"], env=env)
    two = tmp_path / "two.nc"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "ustat_grpo.fit_scaling", *_LM_ARGS, "--pilot", str(two), "--device", "cpu"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    d = json.loads(out.stdout)
    for k in ("runtime_s", "command", "options", "input_hash", "source"):   # the paths differ
        d.pop(k)
    assert d == ref
    from ustat_grpo.measurement.pilot import load_pilot
    a, _ = load_pilot(str(one))
    b, _ = load_pilot(str(two))
    np.testing.assert_array_equal(a.g, b.g)
    np.testing.assert_array_equal(a.rewards, b.rewards)


def test_adaptive_pilot_stops_when_the_interval_is_narrow_enough():
    from ustat_grpo.measurement.pilot import width_rule
    sampler = BanditSampler(default_bandit(), 16)
    rule = width_rule(0.8, budget=256)
    st = run_pilot(sampler, num_prompts=1000, seed=4, batch_size=8, stop=rule)
    assert 128 <= len(st) < 1000 and rule(st)
    # one batch fewer would not have stopped (the rule is checked after every batch)
    full = run_pilot(sampler, num_prompts=len(st) - 8, seed=4, batch_size=8)
    assert len(full) < 128 or not rule(full)
    with pytest.raises(ValueError, match="one process"):
        run_pilot(sampler, num_prompts=10, seed=0, path="unused.nc", stop=rule, rank=0, world_size=2)


@pytest.mark.slow
def test_cli_adaptive_pilot_reports_what_it_spent():
    d = _cli_json(["--samples-per-prompt", "8", "--variant", "weak", "--projection-dim", "32", "--seed", "2",
                   "--format", "json", "--target-width", "1000", "--min-prompts", "128"])
    # a huge target is met at the first check: the rule waits for --min-prompts (default 512)
    assert d["constants_source"].startswith("128 prompts x 8 completions")
    assert "(adaptive pilot, target width 1000.0: 1024 rollouts" in d["constants_source"]
