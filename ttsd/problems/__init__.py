"""Problems: the `problem.json` format, loading with clear errors, and importers.

Owner: problems helper. The model below is the shared contract; extend it, don't rename fields.
"""

from ttsd.problems.model import Problem, ProblemKind, TestCase

__all__ = ["Problem", "ProblemKind", "TestCase"]
