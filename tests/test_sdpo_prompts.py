"""Student, teacher and multi-turn prompts: the paper's wording, in the paper's order."""

import pytest
from pydantic import ValidationError

from ttsd.judge import Judgement, Verdict
from ttsd.problems.model import Problem, TestCase
from ttsd.sdpo.prompts import (
    PAPER_TASK,
    PromptTemplates,
    chat_turn_messages,
    fit_chat_turn_messages,
    fit_multi_turn_messages,
    fit_to_token_limit,
    multi_turn_messages,
    peer_solution,
    strip_thinking,
    student_messages,
    task_prompt,
    teacher_contexts,
    teacher_messages,
)

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


def _content(messages) -> str:
    assert [m["role"] for m in messages] == ["user"]
    return messages[0]["content"]


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
    assert student_messages(FUNCTIONAL) == [{"role": "user", "content": text}]


def test_teacher_context_order_and_wording():
    feedback = "Wrong answer on test 1\nExpected: ba\nGot: ab\n"
    peer = "<think>\nlet me think\n</think>\n```python\nclass Solution:\n    def reverseString(self, s): return s[::-1]\n```"
    text = _content(teacher_messages(FUNCTIONAL, feedback, peer))
    question = task_prompt(FUNCTIONAL)
    assert text == (
        f"{question}\n\nCorrect solution:\n\n"
        "```python\nclass Solution:\n    def reverseString(self, s): return s[::-1]\n```"
        f"\n\n{FEEDBACK_HEADER}\n\nWrong answer on test 1\nExpected: ba\nGot: ab"
        f"\n\n{ASK}"
    )
    assert "think" not in text  # the peer's reasoning is stripped


def test_teacher_context_with_only_one_of_feedback_or_solution():
    only_feedback = _content(teacher_messages(STDIN, "Runtime error: NameError"))
    assert FEEDBACK_HEADER in only_feedback and "Correct solution:" not in only_feedback
    assert only_feedback.index("Print a + b.") < only_feedback.index(FEEDBACK_HEADER) < only_feedback.index(ASK)
    only_solution = _content(teacher_messages(STDIN, None, "print(sum(map(int, input().split())))"))
    assert "Correct solution:" in only_solution and FEEDBACK_HEADER not in only_solution
    assert only_solution.endswith(ASK)


def test_no_feedback_and_no_peer_means_no_teacher():
    assert teacher_messages(STDIN, None) is None
    assert teacher_messages(STDIN, "   \n", None) is None
    assert teacher_messages(STDIN, "", "<think>only thoughts</think>") is None


def test_strip_thinking():
    assert strip_thinking("<think>a\nb</think>\n\nanswer") == "answer"
    assert strip_thinking("x<think>1</think>y<think>2</think>z") == "xyz"
    assert strip_thinking("thoughts begun in the prompt</think>\nanswer") == "answer"
    assert strip_thinking("<think>unclosed ```python\nprint(1)\n```") == "<think>unclosed ```python\nprint(1)\n```"
    assert strip_thinking("no thinking at all") == "no thinking at all"


def test_peer_solution_is_another_passing_attempt():
    responses = ["a", "b", "c", "d"]
    passed = [False, True, False, True]
    assert peer_solution(0, responses, passed) == "b"
    assert peer_solution(1, responses, passed) == "d"  # never the attempt itself
    assert peer_solution(3, responses, passed) == "b"
    assert peer_solution(1, ["a", "b"], [False, True]) is None


def test_teacher_contexts_for_a_batch():
    judgements = [
        Judgement(verdict=Verdict.wrong_answer, tests_passed=0, tests_total=2, feedback="WA on test 1"),
        Judgement(verdict=Verdict.accepted, tests_passed=2, tests_total=2),
        Judgement(verdict=Verdict.runtime_error, feedback="Traceback: ZeroDivisionError"),
    ]
    responses = ["r0", "<think>t</think>winner", "r2"]
    contexts = teacher_contexts(STDIN, responses, judgements)
    first, third = _content(contexts[0]), _content(contexts[2])
    assert "Correct solution:\n\nwinner" in first and "WA on test 1" in first
    assert "ZeroDivisionError" in third and "winner" in third
    assert contexts[1] is None  # the only passing attempt: no feedback, and never its own demonstration

    two_winners = teacher_contexts(STDIN, ["w1", "w2"], [judgements[1], judgements[1]])
    assert "Correct solution:\n\nw2" in _content(two_winners[0]) and FEEDBACK_HEADER not in _content(two_winners[0])
    assert "Correct solution:\n\nw1" in _content(two_winners[1])

    alone = teacher_contexts(STDIN, ["r0", "r1"], [judgements[0], judgements[0]], use_feedback=False)
    assert alone == [None, None]  # no feedback allowed, nobody passed: no loss from this batch
    no_peers = teacher_contexts(STDIN, responses, judgements, use_peer_solutions=False)
    assert no_peers[1] is None and "winner" not in _content(no_peers[0])
    with pytest.raises(ValueError):
        teacher_contexts(STDIN, ["r0"], judgements)


def test_templates_are_editable_and_validated():
    custom = PromptTemplates(system="Be brief.", task="Solve: {title}\n{problem}", stdin="")
    messages = teacher_messages(STDIN.model_copy(update={"title": "Sum"}), "bad", templates=custom)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"].startswith("Solve: Sum\nPrint a + b.\n\n" + FEEDBACK_HEADER)
    assert PromptTemplates().task == PAPER_TASK
    assert PromptTemplates.model_validate_json('{"feedback": "\\nFeedback: {feedback_raw}"}').feedback

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


def test_multi_turn_prompt_joins_all_feedback_oldest_first():
    text = _content(multi_turn_messages(STDIN, ["first failure", "second failure\n"]))
    assert text == f"{task_prompt(STDIN)}\n\n{FEEDBACK_HEADER}\n\nfirst failure\n\nsecond failure\n\n{ASK}"
    assert multi_turn_messages(STDIN, []) == student_messages(STDIN)


def test_chat_turn_variant_alternates_attempts_and_feedback():
    messages = chat_turn_messages(STDIN, ["<think>x</think>attempt 1", "attempt 2"], ["fb 1", "fb 2"])
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == task_prompt(STDIN)
    assert messages[1]["content"] == "attempt 1"
    assert messages[2]["content"] == f"{FEEDBACK_HEADER}\n\nfb 1\n\n{ASK}"
    assert messages[4]["content"].startswith(FEEDBACK_HEADER + "\n\nfb 2")
    with pytest.raises(ValueError):
        chat_turn_messages(STDIN, ["a"], [])


def _word_count(messages) -> int:
    return sum(len(m["content"].split()) for m in messages)


def test_fit_drops_the_oldest_feedback_first():
    feedbacks = [f"failure {i} " + "word " * 20 for i in range(10)]
    full = _word_count(multi_turn_messages(STDIN, feedbacks))
    assert fit_multi_turn_messages(STDIN, feedbacks, full, _word_count).dropped == 0

    limit = full - 30  # needs two feedbacks (22 words each) gone
    fitted = fit_multi_turn_messages(STDIN, feedbacks, limit, _word_count)
    assert fitted.dropped == 2 and fitted.fits and fitted.num_tokens <= limit
    text = _content(fitted.messages)
    assert "failure 0 " not in text and "failure 1 " not in text and "failure 2 " in text
    assert fitted.messages == multi_turn_messages(STDIN, feedbacks[2:])

    tiny = fit_multi_turn_messages(STDIN, feedbacks, 3, _word_count)
    assert tiny.dropped == 10 and not tiny.fits and tiny.messages == student_messages(STDIN)


def test_fit_finds_the_fewest_drops_for_every_limit():
    sizes = [5, 1, 7, 2, 2, 9]

    def build(dropped):
        return [{"role": "user", "content": " ".join("w" * s for s in sizes[dropped:])}]

    def count(messages):
        return sum(len(w) for w in messages[0]["content"].split())

    for limit in range(0, sum(sizes) + 2):
        expected = next((d for d in range(len(sizes) + 1) if sum(sizes[d:]) <= limit), len(sizes))
        assert fit_to_token_limit(build, len(sizes), limit, count).dropped == expected, limit


def test_fit_chat_turns_drops_attempt_and_feedback_together():
    attempts = [f"attempt {i}" for i in range(4)]
    feedbacks = [f"feedback {i} " + "x " * 10 for i in range(4)]
    full = _word_count(chat_turn_messages(STDIN, attempts, feedbacks))
    fitted = fit_chat_turn_messages(STDIN, attempts, feedbacks, full - 1, _word_count)
    assert fitted.dropped == 1
    assert fitted.messages == chat_turn_messages(STDIN, attempts[1:], feedbacks[1:])
