"""The self-teacher's context: the paper's wording, in the paper's order."""

import pytest

from tests.prompt_cases import ASK, FEEDBACK_HEADER, FUNCTIONAL, STDIN, only_user_content
from ttsd.engine.chat import ChatMessage
from ttsd.judge import Judgement, Verdict
from ttsd.prompts import PromptTemplates, task_prompt
from ttsd.sdpo.prompts import peer_solution, teacher_contexts, teacher_messages


def test_teacher_context_order_and_wording():
    feedback = "Wrong answer on test 1\nExpected: ba\nGot: ab\n"
    peer = "<think>\nlet me think\n</think>\n```python\nclass Solution:\n    def reverseString(self, s): return s[::-1]\n```"
    text = only_user_content(teacher_messages(FUNCTIONAL, feedback, peer))
    question = task_prompt(FUNCTIONAL)
    assert text == (
        f"{question}\n\nCorrect solution:\n\n"
        "```python\nclass Solution:\n    def reverseString(self, s): return s[::-1]\n```"
        f"\n\n{FEEDBACK_HEADER}\n\nWrong answer on test 1\nExpected: ba\nGot: ab"
        f"\n\n{ASK}"
    )
    assert "think" not in text  # the peer's reasoning is stripped


def test_teacher_context_with_only_one_of_feedback_or_solution():
    only_feedback = only_user_content(teacher_messages(STDIN, "Runtime error: NameError"))
    assert FEEDBACK_HEADER in only_feedback and "Correct solution:" not in only_feedback
    assert only_feedback.index("Print a + b.") < only_feedback.index(FEEDBACK_HEADER) < only_feedback.index(ASK)
    only_solution = only_user_content(teacher_messages(STDIN, None, "print(sum(map(int, input().split())))"))
    assert "Correct solution:" in only_solution and FEEDBACK_HEADER not in only_solution
    assert only_solution.endswith(ASK)


def test_no_feedback_and_no_peer_means_no_teacher():
    assert teacher_messages(STDIN, None) is None
    assert teacher_messages(STDIN, "   \n", None) is None
    assert teacher_messages(STDIN, "", "<think>only thoughts</think>") is None


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
    first, third = only_user_content(contexts[0]), only_user_content(contexts[2])
    assert "Correct solution:\n\nwinner" in first and "WA on test 1" in first
    assert "ZeroDivisionError" in third and "winner" in third
    assert contexts[1] is None  # the only passing attempt: no feedback, and never its own demonstration

    two_winners = teacher_contexts(STDIN, ["w1", "w2"], [judgements[1], judgements[1]])
    assert "Correct solution:\n\nw2" in only_user_content(two_winners[0]) and FEEDBACK_HEADER not in only_user_content(two_winners[0])
    assert "Correct solution:\n\nw1" in only_user_content(two_winners[1])

    alone = teacher_contexts(STDIN, ["r0", "r1"], [judgements[0], judgements[0]], use_feedback=False)
    assert alone == [None, None]  # no feedback allowed, nobody passed: no loss from this batch
    no_peers = teacher_contexts(STDIN, responses, judgements, use_peer_solutions=False)
    assert no_peers[1] is None and "winner" not in only_user_content(no_peers[0])
    with pytest.raises(ValueError):
        teacher_contexts(STDIN, ["r0"], judgements)


def test_teacher_prompt_uses_the_edited_templates():
    custom = PromptTemplates(system="Be brief.", task="Solve: {title}\n{problem}", stdin="")
    messages = teacher_messages(STDIN.model_copy(update={"title": "Sum"}), "bad", templates=custom)
    assert messages[0] == ChatMessage(role="system", content="Be brief.")
    assert messages[1].content == f"Solve: Sum\nPrint a + b.\n\n{FEEDBACK_HEADER}\n\nbad\n\n{ASK}"


def test_unrun_attempts_can_be_left_out_of_the_learning_batch():
    from ttsd.judge import FORMAT_ERROR_FEEDBACK, TRUNCATED_FEEDBACK

    judgements = [
        Judgement(verdict=Verdict.truncated, feedback=TRUNCATED_FEEDBACK),
        Judgement(verdict=Verdict.format_error, feedback=FORMAT_ERROR_FEEDBACK),
        Judgement(verdict=Verdict.runtime_error, feedback="NameError"),
        Judgement(verdict=Verdict.accepted),
    ]
    responses = ["cut", "prose", "crash", "winner"]
    kept = teacher_contexts(STDIN, responses, judgements)
    assert TRUNCATED_FEEDBACK.splitlines()[1] in only_user_content(kept[0])  # the default: the fixed text
    assert FORMAT_ERROR_FEEDBACK.splitlines()[1] in only_user_content(kept[1])
    skipped = teacher_contexts(STDIN, responses, judgements, skip_unrun=True)
    assert skipped[:2] == [None, None]  # even with a peer solution in the batch
    assert skipped[2:] == kept[2:]
