"""The package's conventions (docs/conventions.md), checked: one implementation per helper, scripts that
run as modules without sys.path edits or private helpers, one name per concept."""
from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ustat_grpo.theory import estimators as est
from ustat_grpo.theory import presets
from ustat_grpo.core.interval import jackknife_covariance
from ustat_grpo.scaling.optimum import group_size_divisors

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ one helper each

def test_jackknife_covariance_is_the_delete_one_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    stat = lambda a: np.array([a[:, 0].mean(), a[:, 1].var(), a[:, 0] @ a[:, 2] / len(a)])
    reps = np.array([stat(np.delete(x, i, axis=0)) for i in range(len(x))])     # (n, 3) leave-one-out
    n = len(x)
    naive = np.zeros((3, 3))
    for i in range(n):
        d = reps[i] - sum(reps[k] for k in range(n)) / n
        naive += np.outer(d, d)
    naive *= (n - 1) / n
    np.testing.assert_allclose(jackknife_covariance(reps), naive, rtol=1e-12, atol=0)
    # of the mean it is s^2 / n exactly (the textbook identity), and 1-d input gives that float
    assert jackknife_covariance(reps[:, 0]) == pytest.approx(x[:, 0].var(ddof=1) / n, rel=1e-12)
    assert isinstance(jackknife_covariance(reps[:, 0]), float)
    for bad in ([1.0], np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="replicates must have shape"):
            jackknife_covariance(bad)


def test_group_size_divisors_equal_the_naive_list():
    for budget in range(1, 400):
        naive = [g for g in range(2, budget + 1) if budget % g == 0]
        assert group_size_divisors(budget) == naive, budget
        assert group_size_divisors(budget, max_group_size=7) == [g for g in naive if g <= 7], budget
    assert group_size_divisors(np.int64(819_200))[-3:] == [204_800, 409_600, 819_200]
    for bad in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="budget must be a positive integer"):
            group_size_divisors(bad)


def test_one_std_normalized_at_a_fixed_eps():
    from ustat_grpo.scaling.pool import CRITERION_ESTIMATORS, POOL_ESTIMATORS
    from ustat_grpo.theory.scale_free import ESTIMATOR_FUNCTIONS

    rng = np.random.default_rng(1)
    r, s = rng.integers(0, 2, size=(50, 6)).astype(float), rng.normal(size=(50, 6, 4))
    trl = est.std_normalized(r, s, preset="grpo")
    for f in (est.ESTIMATORS["std_normalized"], POOL_ESTIMATORS["std_normalized"][0],
              CRITERION_ESTIMATORS["std_normalized"][0], ESTIMATOR_FUNCTIONS["std_normalized"]):
        np.testing.assert_array_equal(f(r, s), trl)
    np.testing.assert_array_equal(ESTIMATOR_FUNCTIONS["std_normalized_verl"](r, s),
                                  est.std_normalized(r, s, preset="verl_grpo"))
    assert presets.TRL_EPS == presets.PRESETS["grpo"].eps == 1e-4


def test_estimator_names_are_the_estimators_names():
    """Pool / criterion labels are estimator names (``group_mean``, not the framework word ``dr_grpo``)."""
    from ustat_grpo.scaling.pool import CRITERION_ESTIMATORS, POOL_ESTIMATORS
    from ustat_grpo.theory.scale_free import ESTIMATOR_FUNCTIONS

    base = lambda k: k.removesuffix("_batch").split("_verl")[0].split("_openrlhf")[0].split("_noeps")[0]
    for table in (POOL_ESTIMATORS, CRITERION_ESTIMATORS, ESTIMATOR_FUNCTIONS):
        assert all(base(k) in est.ESTIMATORS for k in table), sorted(table)
    assert est.NAIVE.keys() - {"leave_one_out_pairs"} <= est.ESTIMATORS.keys() | {"prompt_baseline"}
    import ustat_grpo.policies.lm as lm
    import ustat_grpo.policies.policy as policy
    assert not hasattr(lm, "Policy") and hasattr(policy, "Policy")          # Policy: the protocol only


# ------------------------------------------------------------------------------------ scripts

def _script_files():
    return sorted(p for d in ("simulations", "paper_checks") for p in (REPO / d).glob("*.py"))


def test_scripts_do_not_edit_sys_path_or_import_private_helpers():
    offenders = []
    for path in _script_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                offenders.append(f"{path.name}: sys.path")
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mod = node.module
                ours = mod.split(".")[0] in ("ustat_grpo", "simulations", "paper_checks")
                if ours and any(part.startswith("_") for part in mod.split(".")):
                    offenders.append(f"{path.name}: from {mod}")
                if ours and any(a.name.startswith("_") and not a.name.startswith("__") for a in node.names):
                    offenders.append(f"{path.name}: from {mod} import {[a.name for a in node.names]}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("est", "estimators", "ustat_grpo"):
                offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize("module", ["simulations.fig4_bandit", "simulations.bench_wchisq", "paper_checks"])
def test_scripts_run_as_modules_from_the_repo_root(module):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"python -m {module}" in out.stdout


# ------------------------------------------------------------------------------------ random streams

_RNG_BUILDERS = {f"{m}.{f}" for m in ("np.random", "numpy.random")
                 for f in ("default_rng", "SeedSequence", "Generator", "PCG64", "RandomState", "seed")}


def _rng_builder_calls(source: str) -> list[str]:
    return [f"{node.lineno}: {ast.unparse(node.func)}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and ast.unparse(node.func) in _RNG_BUILDERS]


def test_generators_and_seed_sequences_are_built_only_in_core_random():
    """docs/conventions.md: ``core._random`` is the only module that builds numpy generators and seed
    sequences; every other module goes through its helpers (same bits, one rule)."""
    offenders = [f"{path.relative_to(REPO)}:{call}" for path in sorted((REPO / "ustat_grpo").rglob("*.py"))
                 if path.name != "_random.py" for call in _rng_builder_calls(path.read_text())]
    assert not offenders, offenders
    assert _rng_builder_calls("import numpy as np\ng = np.random.default_rng(0)\n") == ["2: np.random.default_rng"]
    assert _rng_builder_calls((REPO / "ustat_grpo" / "core" / "_random.py").read_text())    # the helpers do build


def test_child_seed_sequence_is_the_spawn_key_extension():
    from ustat_grpo.core._random import child_seed_sequence, keyed_seed_sequence

    ss = keyed_seed_sequence(7, 3)
    child = child_seed_sequence(ss, 2, 5)
    assert child.entropy == 7 and child.spawn_key == (3, 2, 5)
    np.testing.assert_array_equal(child.generate_state(4), np.random.SeedSequence(7, spawn_key=(3, 2, 5)).generate_state(4))
    assert child_seed_sequence(ss).spawn_key == ss.spawn_key


# ------------------------------------------------------------------------------------ to_dict

def test_every_to_dict_returns_through_the_one_converter():
    """Each ``to_dict`` of the package returns ``jsonable(...)`` (or a dict of ``jsonable`` values)."""
    names = ("jsonable", "_jsonable", "_json")
    offenders, count = [], 0
    for path in sorted((REPO / "ustat_grpo").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and fn.name == "to_dict":
                count += 1
                for r in (n for n in ast.walk(fn) if isinstance(n, ast.Return)):
                    v = r.value
                    inner = v.value if isinstance(v, ast.DictComp) else v
                    if not (isinstance(inner, ast.Call) and getattr(inner.func, "id", "") in names):
                        offenders.append(f"{path.name}:{r.lineno}")
    assert count >= 30 and not offenders, offenders


def test_to_dict_outputs_are_strict_json_with_non_finite_numbers_as_strings():
    import dataclasses
    import json

    from ustat_grpo.stats import kernels, ustat
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.scaling.constants import estimate_constants
    from ustat_grpo.scaling.optimum import optimal_group_size
    from ustat_grpo.scaling.pool import compare_estimators, pool_mse, score_mean_check
    from ustat_grpo.stats.wchisq import WeightedChiSquared

    rng = np.random.default_rng(3)
    smp = default_bandit().sample(40, 8, rng=rng)
    z, w = smp.rewards, smp.scores
    c = estimate_constants(z, w)
    results = [smp, c, c.optimal_group_size(budget=64), WeightedChiSquared([1.0, 0.5]),
               ustat.ustatistic(kernels.grpo_data(z[0], w[0]), kernels.grpo_kernel, method="vectorized"),
               compare_estimators(z, w, budget=64, num_generations=[2, 4], rng=1),
               pool_mse(z, w, budget=64, num_generations=[2, 4], rng=1), score_mean_check(w.reshape(-1, w.shape[-1])),
               optimal_group_size(np.array([0.0, 1.0, 1.0]), budget=64)]                # A1 = 0: unbounded G*
    results.append(dataclasses.replace(c, unconstrained=np.array([np.nan, np.inf, -np.inf])))
    texts = [json.dumps(r.to_dict(), allow_nan=False) for r in results]
    assert '"inf"' in texts[-2] and all(s in texts[-1] for s in ('"nan"', '"inf"', '"-inf"'))
