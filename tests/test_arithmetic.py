"""Tests of the arithmetic task and its verifier (ustat_grpo.policies.arithmetic)."""
import collections
import re

import numpy as np
import pytest

from ustat_grpo.policies import arithmetic as ar


def test_dataset_is_seeded_balanced_and_correct():
    ds = ar.make_dataset(500, seed=0)
    assert len(ds) == 500
    assert collections.Counter(p.category for p in ds) == {c: 100 for c in ar.CATEGORIES}
    assert ds == ar.make_dataset(500, seed=0)
    assert ds != ar.make_dataset(500, seed=1)
    for p in ds:
        expr = p.text.removesuffix(" =")
        assert p.text.endswith(" =")
        # Independent evaluation with Python fractions: exact integer results only.
        from fractions import Fraction
        val = eval(re.sub(r"(\d+)", r"Fraction(\1)", expr), {"Fraction": Fraction})
        assert val.denominator == 1 and int(val) == p.answer
        assert abs(p.answer) < 200


def test_categories_match_paper_examples():
    rng = np.random.default_rng(3)
    shapes = {
        "two_step": r"\d+ [+-] \d+ =", "three_step": r"\d+ [+-] \d+ [+-] \d+ =",
        "multiply": r"\d+ \* \d+ =", "divide": r"\d+ / \d+ =",
        "parentheses": r"\d+ [+-] \(\d+ [+-] \d+\) =",
    }
    for cat, pat in shapes.items():
        for _ in range(50):
            assert re.fullmatch(pat, ar.make_problem(cat, rng).text)
    with pytest.raises(ValueError):
        ar.make_problem("exp", rng)


def test_templates_verbatim():
    p = ar.Problem(text="7 * 8 =", answer=56, category="multiply")
    assert ar.format_prompt(p) == (
        "Solve the arithmetic problem. Return ONLY the final integer.\n7 * 8 =")
    few = ar.format_prompt(p, "few_shot")
    assert few.startswith("You are a calculator. Solve the arithmetic problem and return ONLY")
    assert "Problem: 25 - (10 + 5) =\nAnswer: 10\n\nNow solve:\nProblem: 7 * 8 =" in few
    assert few.endswith("Problem: 7 * 8 =")
    with pytest.raises(ValueError):
        ar.format_prompt(p, "chain_of_thought")


@pytest.mark.parametrize("text, expected", [
    ("40", 40), (" 40", 40), ("40\n", 40), ("-7", -7), ("- 7", -7), ("\u22127", -7),
    ("\u2013 12", -12), ("+5", 5), ("  35.", 35), ("35 apples", 35), ("4.0", 4),
    ("4.5", None), ("The answer is -3.", -3), ("Answer: 10\nProblem: 3 + 4 =", 10),
    ("15 + 25 = 40", 40), ("x = -8 because", -8), ("(-9)", -9), ("1,234", 1234),
    ("", None), ("   \n  ", None), ("no idea", None), ("abc", None), ("Answer:", None),
    ("12\n13", 12), ("Answer: 7\nAnswer: 9", 9), ("\\boxed{-21}", -21),
    ("3-5", 3), ("v2", None), ("007", 7), (" 40<eos>", 40), ("--5", -5),
])
def test_extract_answer_adversarial(text, expected):
    assert ar.extract_answer(text) == expected


def test_verify_binary_reward():
    assert ar.verify(" 40", 40) == 1.0
    assert ar.verify(" 41", 40) == 0.0
    assert ar.verify("forty", 40) == 0.0
    assert ar.verify("-40", 40) == 0.0
    assert ar.verify("0", 0) == 1.0
    assert ar.verify(None, 0) == 0.0
    # The gold answers of the whole set are recovered from their own rendering.
    for p in ar.make_dataset(100, seed=5):
        assert ar.verify(f" {p.answer}\n", p.answer) == 1.0
        assert ar.verify(f"{p.text} {p.answer}", p.answer) == 1.0
        assert ar.verify(f" {p.answer + 1}", p.answer) == 0.0


def test_question_set_extends_the_paper_set_prefix_stably():
    """Questions 0..499 are the paper's set; each further block of 500 is another balanced, seeded
    set; a shorter request is a prefix of a longer one (so a pilot's prompt p keeps its question)."""
    from collections import Counter

    from ustat_grpo.policies.arithmetic import CATEGORIES, make_dataset, question_set

    q = question_set(1100, seed=3)
    assert q[:500] == make_dataset(500, seed=3)
    assert q[500:1000] == make_dataset(500, seed=[3, 1]) != q[:500]
    assert question_set(731, seed=3) == q[:731] and question_set(0) == []
    assert Counter(p.category for p in q[500:1000]) == {c: 100 for c in CATEGORIES}
    with pytest.raises(ValueError):
        question_set(-1)
