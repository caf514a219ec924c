"""Problems and phrases the prompt tests share (student, teacher and multi-turn prompts)."""

from ttsd.problems.model import Problem, TestCase

FEEDBACK_HEADER = "The following is feedback from your unsuccessful earlier attempt:"
ASK = "Correctly solve the original question."

STDIN = Problem(
    id="sum", statement="Print a + b.\n", kind="stdin", tests=[TestCase(input="1 2\n", output="3\n")]
)
FUNCTIONAL = Problem(
    id="rev",
    statement="Reverse the string s.",
    kind="functional",
    starter_code="class Solution:\n    def reverseString(self, s: str) -> str:\n        ",
    entry_point="reverseString",
    tests=[TestCase(input='"ab"', output='"ba"')],
)


def only_user_content(messages) -> str:
    """The content of a prompt that must be exactly one user message."""
    assert [m.role for m in messages] == ["user"]
    return messages[0].content
