"""The synthetic arithmetic task of arXiv 2603.01162, Section 5.1, and its binary verifier.

Five categories of medium-difficulty integer questions, drawn uniformly (the paper's Figure 4
set has 500 questions).  The paper's few-shot calculator prompt shows one example per category,
which fixes what the category names mean ("k-step" counts the operands):

================  ==========================  =========================================
category          paper example               generator used here
================  ==========================  =========================================
``two_step``      ``15 + 25 =``               ``a ± b``, ``a, b`` in 1..50
``three_step``    ``20 + 30 - 15 =``          ``a ± b ± c``, operands in 1..50
``multiply``      ``3 * 4 =``                 ``a * b``, ``a, b`` in 2..12
``divide``        ``24 / 6 =``                ``(a*b) / b``, ``a, b`` in 2..12 (exact)
``parentheses``   ``25 - (10 + 5) =``         ``a ± (b ± c)``, ``a`` in 10..50, ``b, c`` in 1..20
================  ==========================  =========================================

Answers may be negative.  The reward is 1 when the integer extracted from the completion by
:func:`extract_answer` equals the ground truth and 0 otherwise (no number -> 0).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..core._random import default_rng
from ..core._serialize import jsonable

__all__ = [
    "CATEGORIES", "Problem", "make_problem", "make_dataset", "question_set", "ZERO_SHOT_TEMPLATE",
    "FEW_SHOT_TEMPLATE", "format_prompt", "extract_answer", "verify",
]

CATEGORIES = ("two_step", "three_step", "multiply", "divide", "parentheses")

# Appendix C of arXiv 2603.01162, verbatim.  The extracted text labels them the other way round;
# the few-shot prompt is logically the ICL one (spec section 5, item 10).
ZERO_SHOT_TEMPLATE = "Solve the arithmetic problem. Return ONLY the final integer.\n{problem}"
FEW_SHOT_TEMPLATE = (
    "You are a calculator. Solve the arithmetic problem and return ONLY the final integer.\n"
    "\n"
    "Examples:\n"
    "Problem: 15 + 25 =\n"
    "Answer: 40\n"
    "Problem: 20 + 30 - 15 =\n"
    "Answer: 35\n"
    "Problem: 3 * 4 =\n"
    "Answer: 12\n"
    "Problem: 24 / 6 =\n"
    "Answer: 4\n"
    "Problem: 25 - (10 + 5) =\n"
    "Answer: 10\n"
    "\n"
    "Now solve:\n"
    "Problem: {problem}"
)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One arithmetic question.

    Attributes
    ----------
    text : str
        The question as written in the prompt, ending in ``" ="``, e.g. ``"25 - (10 + 5) ="``.
    answer : int
        Ground truth.
    category : str
        One of :data:`CATEGORIES`.
    """

    text: str
    answer: int
    category: str

    def to_dict(self) -> dict:
        return jsonable({"text": self.text, "answer": self.answer, "category": self.category})


def _pm(rng: np.random.Generator) -> str:
    return "+" if rng.integers(2) == 0 else "-"


def make_problem(category: str, rng: np.random.Generator) -> Problem:
    """Draw one problem of ``category`` (see the module table for the ranges)."""
    if category == "two_step":
        a, b = rng.integers(1, 51, size=2)
        op = _pm(rng)
        expr = f"{a} {op} {b}"
    elif category == "three_step":
        a, b, c = rng.integers(1, 51, size=3)
        expr = f"{a} {_pm(rng)} {b} {_pm(rng)} {c}"
    elif category == "multiply":
        a, b = rng.integers(2, 13, size=2)
        expr = f"{a} * {b}"
    elif category == "divide":
        q, b = rng.integers(2, 13, size=2)
        expr = f"{q * b} / {b}"
    elif category == "parentheses":
        a = rng.integers(10, 51)
        b, c = rng.integers(1, 21, size=2)
        expr = f"{a} {_pm(rng)} ({b} {_pm(rng)} {c})"
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    answer = _evaluate(expr)
    return Problem(text=f"{expr} =", answer=answer, category=category)


def _evaluate(expr: str) -> int:
    """Exact integer value of a generated expression (only digits, + - * / ( ) and spaces)."""
    if not re.fullmatch(r"[0-9+\-*/() ]+", expr):
        raise ValueError(f"not a generated expression: {expr!r}")
    # Integer division: the generator only emits exact quotients, checked below.
    value = eval(expr.replace("/", "//"), {"__builtins__": {}}, {})  # noqa: S307 - vetted charset
    if "/" in expr:
        num, den = (int(t) for t in expr.split("/"))
        if num % den:
            raise ValueError(f"inexact division in {expr!r}")
    return int(value)


def make_dataset(num_questions: int = 500, *, seed: int = 0) -> list[Problem]:
    """The seeded arithmetic set: ``num_questions`` problems, uniform over the five categories.

    Categories are balanced exactly (``num_questions // 5`` each, the remainder going to the
    first categories), then the list is shuffled; the same ``seed`` gives the same list.

    Parameters
    ----------
    num_questions : int
        Number of questions (the paper uses 500).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of Problem

    Examples
    --------
    >>> ds = make_dataset(10, seed=0)
    >>> len(ds), sorted({p.category for p in ds}) == sorted(CATEGORIES)
    (10, True)
    >>> all(isinstance(p.answer, int) for p in ds)
    True
    """
    if num_questions < 1:
        raise ValueError(f"num_questions must be >= 1, got {num_questions}")
    rng = default_rng(seed)
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(num_questions)]
    problems = [make_problem(c, rng) for c in cats]
    order = rng.permutation(num_questions)
    return [problems[i] for i in order]


#: Questions per block of :func:`question_set`: the size of the paper's set.
SET_SIZE = 500


def question_set(num_questions: int, *, seed: int = 0) -> list[Problem]:
    """The first ``num_questions`` questions of the task: the paper's set, then more of the same.

    Questions ``0 .. 499`` are ``make_dataset(500, seed=seed)``, the paper's set; block ``k = 1, 2,
    ...`` (questions ``500 k .. 500 k + 499``) is ``make_dataset(500, seed=[seed, k])``, another
    balanced, shuffled set of the five categories.  A prefix does not depend on how many questions
    are asked for, so a pilot's prompt ``p`` gets the same question whatever its cap.

    Examples
    --------
    >>> question_set(500) == make_dataset(500)
    True
    >>> question_set(1200)[:700] == question_set(700)
    True
    """
    if num_questions < 0:
        raise ValueError(f"num_questions must be >= 0, got {num_questions}")
    blocks = -(-num_questions // SET_SIZE)
    out = []
    for k in range(blocks):
        out += make_dataset(SET_SIZE, seed=seed if k == 0 else [seed, k])
    return out[:num_questions]


def format_prompt(problem: Problem | str, template: str = "zero_shot") -> str:
    """The paper's prompt for ``problem``.

    Parameters
    ----------
    problem : Problem or str
        The question (``Problem.text`` is used).
    template : {"zero_shot", "few_shot"}
        ``zero_shot``: "Solve the arithmetic problem. Return ONLY the final integer.\\n<problem>";
        ``few_shot``: the calculator prompt with five worked examples (Appendix C, verbatim).
    """
    text = problem.text if isinstance(problem, Problem) else str(problem)
    if template == "zero_shot":
        return ZERO_SHOT_TEMPLATE.format(problem=text)
    if template == "few_shot":
        return FEW_SHOT_TEMPLATE.format(problem=text)
    raise ValueError(f"template must be 'zero_shot' or 'few_shot', got {template!r}")


_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-", "\uff0d": "-", "\uff0b": "+"})
_ANSWER_CUE = re.compile(r"(?:final answer|answer is|answer|result is|result)\s*[:=]?", re.I)
# An optional sign directly before the digits (spaces allowed after the sign, not digits before),
# digits possibly grouped with commas, and an optional decimal part.
_NUMBER = re.compile(
    r"(?<![\w.])([+-]?)\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d])"
)


def extract_answer(text: str) -> int | None:
    """The final integer of a free-text completion, or ``None`` when there is none.

    Rules, in order:

    1. Unicode minus signs and dashes become ``-``; LaTeX ``\\boxed{...}`` wins if present.
    2. If the text has an answer cue ("Answer:", "the answer is", "result"), keep what follows the
       last cue.
    3. Keep the first non-empty line (a model continuing with a new "Problem:" is cut off).
    4. If the line contains ``=``, keep what follows the last ``=`` (``"15 + 25 = 40"`` -> 40).
    5. Return the first number in what is left: a sign directly before the digits counts
       (``"- 7"`` -> -7; ``"3-5"`` -> 3), commas group thousands (``"1,234"`` -> 1234), a decimal
       with a non-zero fractional part is not an integer (-> ``None``), ``"4.0"`` -> 4.

    Examples
    --------
    >>> extract_answer(" 40\\nProblem: 3 + 4 =")
    40
    >>> extract_answer("The answer is \u22127.")
    -7
    >>> extract_answer("no idea") is None
    True
    """
    if not isinstance(text, str):
        return None
    s = text.translate(_MINUS)
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", s)
    if boxed:
        s = boxed[-1]
    cues = list(_ANSWER_CUE.finditer(s))
    if cues:
        s = s[cues[-1].end():]
    lines = [ln for ln in s.splitlines() if ln.strip()]
    if not lines:
        return None
    s = lines[0]
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    m = _NUMBER.search(s)
    if m is None:
        return None
    sign, digits, frac = m.groups()
    if frac is not None and frac.strip("0"):
        return None
    value = int(digits.replace(",", ""))
    return -value if sign == "-" else value


def verify(text: str, answer: int) -> float:
    """Binary reward: 1.0 if :func:`extract_answer` of ``text`` equals ``answer``, else 0.0.

    Examples
    --------
    >>> verify("Answer: 35", 35), verify("35.5", 35), verify("", 0)
    (1.0, 0.0, 0.0)
    """
    got = extract_answer(text)
    return 1.0 if got is not None and got == int(answer) else 0.0
