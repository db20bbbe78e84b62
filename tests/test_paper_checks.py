"""Run every registered paper check under pytest (slow ones only with ``-m slow``)."""
import pytest

from paper_checks import load_all, run_check

CHECKS = load_all()
# also slow under pytest (the default run stays under 4 minutes; .ci/run job 3 runs them): each of
# these takes 20-50 s of the 2-core CI machine
_SLOW_HERE = {"Fig4-lm", "Thm7-universality", "C7", "C9"}


@pytest.mark.parametrize(
    "cid",
    [pytest.param(k, marks=pytest.mark.slow) if v.slow or k in _SLOW_HERE else k
     for k, v in CHECKS.items()],
)
def test_paper_check(cid):
    out = run_check(CHECKS[cid])
    assert out.passed, f"{cid}: expected {out.expected}, observed {out.observed}; {out.details}"
