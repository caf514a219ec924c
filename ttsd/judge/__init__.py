"""The judge: extract the program from a response, run it on the tests, give a verdict and feedback.

    judge = Judge(make_sandbox("local"), max_workers=4)
    j = judge.judge(problem, response_text, finish_reason="stop")
    js = judge.judge_many(problem, responses, finish_reasons)   # bounded concurrent pool, order kept

Semantics follow LiveCodeBench's `testing_util.py` (EvalPlus's for `evalplus` problems). Only
inputs enter the sandbox: the comparison with the expected output happens here, outside, from the
raw output or returned value, so nothing the program does inside can fake a pass (assert problems
excepted: their test code must run inside).

Modules, in the order a response goes through them:

* `extraction`: the program in a response (the longest Python block; `truncated`, `format_error`).
* `judge`: `Judge`, and how a verdict is reached (the order of the tests, the early stops).
* `one_test` (stdin, functional, assert: one process per test), `evalplus` (MBPP+: one process
  per group of tests) and `pytest_suite` (pytest problems: one process per test file, the test ids
  collected once per problem against a stand-in module), each running the program in the sandbox and classifying what came back;
  `sandboxed`: the harness job and reading its raw result; `harness.py`: the file that runs
  inside the sandbox around the program (plain Python, copied in with every job).
* `comparison`: output and value comparison (pure); `feedback`: the feedback text (pure).
* `records`: `Verdict`, `Judgement` and the record of each test run.
"""

from ttsd.judge.comparison import (
    EVALPLUS_FLOAT_ATOL,
    EVALPLUS_RTOL,
    decimals,
    decode_value,
    evalplus_match,
    lines_match,
    parse_arguments,
    show_call,
    show_value,
    stripped_lines,
    values_match,
)
from ttsd.judge.evalplus import call_reports, classify_calls, run_calls
from ttsd.judge.extraction import (
    PYTHON_FENCE_LANGUAGES,
    Extraction,
    code_blocks,
    extract_code,
    looks_like_response,
    program_from_text,
)
from ttsd.judge.feedback import (
    ALL_FEEDBACK,
    CUT_MARK,
    FEEDBACK_MAX_CHARS,
    FIELD_MAX_CHARS,
    FIELD_MAX_LINES,
    FORMAT_ERROR_FEEDBACK,
    HIDDEN_FAILURE_FEEDBACK,
    MAX_WRONG_ANSWERS_SHOWN,
    TRUNCATED_FEEDBACK,
    FeedbackOptions,
    clip_field,
    clip_total,
    feedback_text,
)
from ttsd.judge.harness import SOLUTION_FILE
from ttsd.judge.judge import Judge, prepare_tests
from ttsd.judge.one_test import Outcome, classify
from ttsd.judge.pytest_suite import PytestCollection, PytestCollectionError
from ttsd.judge.records import ErrorInfo, Judgement, PreparedTest, TestResult, TestRun, Verdict
from ttsd.judge.sandboxed import HARNESS_FILE, HARNESS_SOURCE

__all__ = [
    "ALL_FEEDBACK",
    "CUT_MARK",
    "EVALPLUS_FLOAT_ATOL",
    "EVALPLUS_RTOL",
    "FEEDBACK_MAX_CHARS",
    "FIELD_MAX_CHARS",
    "FIELD_MAX_LINES",
    "FORMAT_ERROR_FEEDBACK",
    "HARNESS_FILE",
    "HARNESS_SOURCE",
    "HIDDEN_FAILURE_FEEDBACK",
    "MAX_WRONG_ANSWERS_SHOWN",
    "PYTHON_FENCE_LANGUAGES",
    "SOLUTION_FILE",
    "TRUNCATED_FEEDBACK",
    "ErrorInfo",
    "Extraction",
    "FeedbackOptions",
    "Judge",
    "Judgement",
    "Outcome",
    "PreparedTest",
    "PytestCollection",
    "PytestCollectionError",
    "TestResult",
    "TestRun",
    "Verdict",
    "call_reports",
    "classify",
    "classify_calls",
    "clip_field",
    "clip_total",
    "code_blocks",
    "decimals",
    "decode_value",
    "evalplus_match",
    "extract_code",
    "feedback_text",
    "lines_match",
    "looks_like_response",
    "parse_arguments",
    "prepare_tests",
    "program_from_text",
    "run_calls",
    "show_call",
    "show_value",
    "stripped_lines",
    "values_match",
]
