"""The student's prompt and the prompt wording: the paper's code prompt, editable, validated."""

import pytest
from pydantic import ValidationError

from tests.prompt_cases import FUNCTIONAL, STDIN
from ttsd.engine.chat import ChatMessage
from ttsd.prompts import PromptTemplates, strip_thinking, student_messages, task_prompt


def test_task_prompt_is_the_papers_code_prompt():
    text = task_prompt(STDIN)
    assert text.startswith(
        "You are a coding expert. You will be given a coding problem, and you need to write a correct "
        "Python program that matches the specification and passes all tests."
    )
    assert "please provide the complete code in a code block enclosed with ``` ```.\n\nPrint a + b." in text
    assert text.endswith("write its answer to standard output.")  # stdin note for stdin problems
    assert "signature" not in text


def test_task_prompt_states_the_problems_own_time_limit():
    # The paper's prompt says "1 second"; the judge enforces Problem.time_limit_s, so the prompt must too.
    assert "The time limit is 1 second. You may start" in task_prompt(STDIN.model_copy(update={"time_limit_s": 1.0}))
    assert "The time limit is 6 seconds. You may start" in task_prompt(STDIN.model_copy(update={"time_limit_s": 6.0}))
    assert "The time limit is 2.5 seconds." in task_prompt(STDIN.model_copy(update={"time_limit_s": 2.5}))


def test_functional_prompt_carries_the_signature():
    text = task_prompt(FUNCTIONAL)
    assert text.endswith(
        "Reverse the string s.\n\nYour solution should have the following signature: ```python\n"
        "class Solution:\n    def reverseString(self, s: str) -> str:\n```"
    )
    assert "standard input" not in text
    assert student_messages(FUNCTIONAL) == [ChatMessage(role="user", content=text)]


def test_strip_thinking():
    assert strip_thinking("<think>a\nb</think>\n\nanswer") == "answer"
    assert strip_thinking("x<think>1</think>y<think>2</think>z") == "xyz"
    assert strip_thinking("thoughts begun in the prompt</think>\nanswer") == "answer"
    assert strip_thinking("<think>unclosed ```python\nprint(1)\n```") == "<think>unclosed ```python\nprint(1)\n```"
    assert strip_thinking("no thinking at all") == "no thinking at all"


def test_templates_are_editable_and_validated():
    custom = PromptTemplates(system="Be brief.", task="Solve: {title}\n{problem}", stdin="")
    messages = student_messages(STDIN.model_copy(update={"title": "Sum"}), templates=custom)
    assert messages == [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Solve: Sum\nPrint a + b.")]
    assert PromptTemplates.model_validate_json('{"feedback": "\\nFeedback: {feedback_raw}"}').feedback == "\nFeedback: {feedback_raw}"

    with pytest.raises(ValidationError, match="unknown placeholder"):
        PromptTemplates(feedback="{feedback_raw} {verdict}")
    with pytest.raises(ValidationError, match=r"must contain \{problem\}"):
        PromptTemplates(task="Write code.")
    with pytest.raises(ValidationError, match="not a valid format string"):
        PromptTemplates(solution="{successful_previous_attempt} {")
    with pytest.raises(ValidationError, match="extra"):
        PromptTemplates(feedbak="typo")
    braces = PromptTemplates(stdin="\n\nRead {{json}} from stdin.")
    assert task_prompt(STDIN, braces).endswith("Read {json} from stdin.")
