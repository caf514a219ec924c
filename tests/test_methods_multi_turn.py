"""The multi-turn baseline's prompts: every earlier feedback, oldest dropped first to fit a limit."""

import pytest

from tests.prompt_cases import ASK, FEEDBACK_HEADER, STDIN, only_user_content
from ttsd.engine.chat import ChatMessage
from ttsd.methods.multi_turn import (
    chat_turn_messages,
    fit_chat_turn_messages,
    fit_multi_turn_messages,
    fit_to_token_limit,
    multi_turn_messages,
)
from ttsd.prompts import student_messages, task_prompt


def test_multi_turn_prompt_joins_all_feedback_oldest_first():
    text = only_user_content(multi_turn_messages(STDIN, ["first failure", "second failure\n"]))
    assert text == f"{task_prompt(STDIN)}\n\n{FEEDBACK_HEADER}\n\nfirst failure\n\nsecond failure\n\n{ASK}"
    assert multi_turn_messages(STDIN, []) == student_messages(STDIN)


def test_chat_turn_variant_alternates_attempts_and_feedback():
    messages = chat_turn_messages(STDIN, ["<think>x</think>attempt 1", "attempt 2"], ["fb 1", "fb 2"])
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0].content == task_prompt(STDIN)
    assert messages[1].content == "attempt 1"
    assert messages[2].content == f"{FEEDBACK_HEADER}\n\nfb 1\n\n{ASK}"
    assert messages[4].content.startswith(FEEDBACK_HEADER + "\n\nfb 2")
    with pytest.raises(ValueError):
        chat_turn_messages(STDIN, ["a"], [])


def _word_count(messages) -> int:
    return sum(len(m.content.split()) for m in messages)


def test_fit_drops_the_oldest_feedback_first():
    feedbacks = [f"failure {i} " + "word " * 20 for i in range(10)]
    full = _word_count(multi_turn_messages(STDIN, feedbacks))
    assert fit_multi_turn_messages(STDIN, feedbacks, full, _word_count).dropped == 0

    limit = full - 30  # needs two feedbacks (22 words each) gone
    fitted = fit_multi_turn_messages(STDIN, feedbacks, limit, _word_count)
    assert fitted.dropped == 2 and fitted.fits and fitted.num_tokens <= limit
    text = only_user_content(fitted.messages)
    assert "failure 0 " not in text and "failure 1 " not in text and "failure 2 " in text
    assert fitted.messages == multi_turn_messages(STDIN, feedbacks[2:])

    tiny = fit_multi_turn_messages(STDIN, feedbacks, 3, _word_count)
    assert tiny.dropped == 10 and not tiny.fits and tiny.messages == student_messages(STDIN)


def test_fit_finds_the_fewest_drops_for_every_limit():
    sizes = [5, 1, 7, 2, 2, 9]

    def build(dropped):
        return [ChatMessage(role="user", content=" ".join("w" * s for s in sizes[dropped:]))]

    def count(messages):
        return sum(len(w) for w in messages[0].content.split())

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
