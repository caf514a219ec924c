"""Problems: the `problem.json` format, loading with clear errors, and importers.

Owner: problems helper. The model is the shared contract; extend it, don't rename fields.
Importers (LiveCodeBench, HumanEval) live in `ttsd.problems.importers`.
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
