"""Extraction: the program in a model response or a solution file (ttsd/judge/extraction.py)."""

from __future__ import annotations

import pytest

from ttsd.judge import Verdict, extract_code, program_from_text


def fence(code: str, language: str = "python") -> str:
    return f"```{language}\n{code}\n```"



@pytest.mark.parametrize("language", ["python", "py", "Python", "python3", ""])
def test_extract_python_fences(language):
    response = f"Here is my answer.\n{fence('print(1)', language)}\nDone."
    extraction = extract_code(response, "stop")
    assert extraction.verdict is None
    assert extraction.code == "print(1)"


def test_extract_takes_the_longest_python_block_and_ignores_other_languages():
    long_program = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"
    response = "\n".join(
        [fence("x = 1"), "and the full program:", fence(long_program), fence("int main() { return 0; /* long */ }", "cpp")]
    )
    assert extract_code(response).code == long_program


def test_extract_without_a_block_is_a_format_error():
    for response in ["print(1)  # no fences", "```cpp\nint x;\n```", "```python\nprint(1)\n", "```python\n\n```"]:
        extraction = extract_code(response, "stop")
        assert extraction.verdict == Verdict.format_error, response
        assert extraction.code is None


def test_extract_truncated_response_is_truncated_even_with_a_complete_block():
    response = fence("print(1)") + "\nNow let me also explain in great detail why"
    extraction = extract_code(response, "length")
    assert extraction.verdict == Verdict.truncated
    assert extraction.code == "print(1)"  # kept for logs, not judged
    assert extract_code("```python\nprint(", "length").verdict == Verdict.truncated


def test_extract_longer_fence_holds_triple_backticks():
    code = 's = "```"\nprint(s)'
    assert extract_code(f"````python\n{code}\n````").code == code


def test_solution_file_bare_program_or_response():
    bare = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert program_from_text(bare).code == bare
    assert program_from_text("Sure!\n" + fence("print(2)") + "\nbye").code == "print(2)"
    assert program_from_text("   \n").verdict == Verdict.format_error
    documented = 'def f():\n    """Use it like this:\n\n```python\nf()\n```\n"""\n    return 1\n'
    assert program_from_text(documented).code == documented  # valid Python: the file is the program
    broken = "print(1 +)\n"
    assert program_from_text(broken).code == broken  # judged (a syntax error), not a format error
