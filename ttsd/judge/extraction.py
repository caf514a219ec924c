"""The program in a model response (or in a solution file): fenced blocks, the longest Python one.

Truncation convention (SDPO / LCB): a response that stopped because it hit the length limit
(`finish_reason == "length"`) is `truncated` and not run, even when it holds a complete code block;
the program found (if any) is still kept for logs.
"""

from __future__ import annotations

import re
import warnings

from pydantic import BaseModel

from ttsd.judge.harness import SOLUTION_FILE
from ttsd.judge.records import Verdict

PYTHON_FENCE_LANGUAGES = {"", "python", "py", "python3", "py3"}
_FENCE_OPEN = re.compile(r"^\s*(`{3,})\s*([A-Za-z0-9_+.#-]*)[^`]*$")


class Extraction(BaseModel):
    """The program found in a response; `verdict` is set when the response cannot be judged."""

    code: str | None = None
    verdict: Verdict | None = None  # format_error or truncated; None when `code` should be run


def code_blocks(response: str) -> list[tuple[str, str]]:
    """Every closed fenced block as (language, code), in order. An unclosed block is ignored."""
    blocks: list[tuple[str, str]] = []
    lines = response.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        for j in range(i + 1, len(lines)):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and set(stripped) == {"`"}:
                blocks.append((language, "\n".join(lines[i + 1 : j])))
                i = j + 1
                break
        else:
            break  # unclosed: nothing after it can be a closed block either
    return blocks


def extract_code(response: str, finish_reason: str | None = "stop") -> Extraction:
    """The program in a model response: the longest ```python / ```py / bare ``` block.

    No such block → `format_error`. `finish_reason == "length"` → `truncated` (the code, if a
    complete block exists, is kept for logs but not judged).
    """
    candidates = [code for language, code in code_blocks(response) if language in PYTHON_FENCE_LANGUAGES]
    candidates = [code for code in candidates if code.strip()]
    code = max(candidates, key=len) if candidates else None
    if finish_reason == "length":
        return Extraction(code=code, verdict=Verdict.truncated)
    if code is None:
        return Extraction(code=None, verdict=Verdict.format_error)
    return Extraction(code=code, verdict=None)


def looks_like_response(text: str) -> bool:
    """True when `text` holds a fenced block (a model response), False for a bare program."""
    return any(_FENCE_OPEN.match(line) for line in text.split("\n"))


def _compiles(text: str) -> bool:
    """Whether `text` is valid Python (compiled only, never run; warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(text, SOLUTION_FILE, "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return False
    return True


def program_from_text(text: str) -> Extraction:
    """A solution file's program: the file itself when it is a program, else extracted as from a
    response. Valid Python is a program even when a docstring holds fences; text with a fenced
    block that is not valid Python is a response; anything else is judged as written (a bare
    program with a syntax error gets a runtime error with its line, not a format error)."""
    if not text.strip():
        return Extraction(code=None, verdict=Verdict.format_error)
    if _compiles(text) or not looks_like_response(text):
        return Extraction(code=text, verdict=None)
    return extract_code(text, "stop")
