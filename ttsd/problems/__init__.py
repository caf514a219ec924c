"""Problems: the `problem.json` format (kinds stdin, functional, assert, evalplus) and loading with clear errors.

The model is the contract every other part reads; extend it, don't rename fields. A leaf: it
imports neither the judge nor the sandbox. Importers (LiveCodeBench, HumanEval, MBPP+) live above
the judge, in `ttsd.importers`.
"""

from ttsd.problems.loading import (
    EXAMPLES_DIR,
    ProblemFileError,
    ProblemFilesError,
    find_problem,
    load_problem,
    load_problems,
    parse_problem,
    save_problem,
)
from ttsd.problems.model import Problem, ProblemIssue, ProblemKind, TestCase

__all__ = [
    "EXAMPLES_DIR",
    "Problem",
    "ProblemFileError",
    "ProblemFilesError",
    "ProblemIssue",
    "ProblemKind",
    "TestCase",
    "find_problem",
    "load_problem",
    "load_problems",
    "parse_problem",
    "save_problem",
]
