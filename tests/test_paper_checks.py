"""Run every registered paper check under pytest (slow ones only with ``-m slow``)."""
import pytest

from paper_checks import load_all, run_check

CHECKS = load_all()


@pytest.mark.parametrize(
    "cid",
    [pytest.param(k, marks=pytest.mark.slow) if v.slow else k for k, v in CHECKS.items()],
)
def test_paper_check(cid):
    out = run_check(CHECKS[cid])
    assert out.passed, f"{cid}: expected {out.expected}, observed {out.observed}; {out.details}"
