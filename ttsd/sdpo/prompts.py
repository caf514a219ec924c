"""The prompts: the coding task (student), the self-teacher's context, and the multi-turn baseline.

Every builder returns a chat message list ([{"role": "user", "content": ...}, ...]) for the
engine's chat template (`ttsd.engine.chat.chat_prompt_ids`). The wording lives in one pydantic
model, `PromptTemplates`, whose defaults are the paper's; a run config can override any field.

Where the defaults come from (Hübotter et al., "Reinforcement Learning via Self-Distillation",
arXiv 2601.20802, Table 2, and its reference code github.com/lasgroup/SDPO):

- `task`: the code prompt of the SDPO data pipeline (`data/format/prompts.py`, CODE_PROMPT),
  verbatim but for one word: the paper's "The time limit is 1 second" (true of its LiveCodeBench
  problems) names the problem's own limit here, `{time_limit}` ("1 second", "6 seconds"), since the
  judge enforces `Problem.time_limit_s` and a prompt that understated it would mislead the model.
- `signature`: the same pipeline's LiveCodeBench formatting (`data/utils/livecodebench.py`),
  appended for problems with starter code. The paper strips `self` to call a bare function; our
  judge calls `Solution().<entry_point>` as LiveCodeBench does, so the starter code goes in as is.
- `stdin`: ours. The paper adds nothing (LiveCodeBench stdin statements say where input comes
  from); ours states it for problems whose statements do not.
- `reprompt`, `solution`, `feedback`: the self-teacher templates of the reference code
  (`SelfDistillationConfig`: reprompt_template, solution_template, feedback_template), same
  wording and placeholder names (templates can be copied between the two); only the whitespace is
  evened out to one blank line between sections (the reference leaves 1 to 4 newlines).
- `feedback_turn`: ours, for the chat-turn variant of the multi-turn baseline: one user turn per
  failed attempt, in the teacher's wording.

Teacher context (the paper's Table 2): the original question; then, if another attempt of the same
batch passed, "Correct solution:" and that attempt (thinking stripped); then, if this attempt
failed with feedback, "The following is feedback from your unsuccessful earlier attempt:" and the
feedback; then "Correctly solve the original question." The student's own response is scored under
it. An attempt with neither a peer solution nor feedback gets no teacher context (None): it adds no
loss.

Multi-turn baseline: the question, then the feedback template holding every earlier feedback,
oldest first, joined by blank lines, then "Correctly solve the original question."
(`multi_turn_messages`); or as a conversation, assistant attempts alternating with user feedback
(`chat_turn_messages`). `fit_*` drop the oldest feedback first until a token limit is met.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from ttsd.judge import Judgement
    from ttsd.problems.model import Problem

Messages = list[dict[str, str]]

PAPER_TASK = (
    "You are a coding expert. You will be given a coding problem, and you need to write a correct Python "
    "program that matches the specification and passes all tests. The time limit is {time_limit}. You may start "
    "by outlining your thought process. In the end, please provide the complete code in a code block "
    "enclosed with ``` ```.\n\n{problem}"
)


class PromptTemplates(BaseModel):
    """The wording of every prompt (Python `str.format` templates; write a literal brace as {{ }})."""

    model_config = ConfigDict(extra="forbid")

    system: str | None = Field(None, description="optional system message before every prompt")
    task: str = Field(PAPER_TASK, description="the student's prompt; {problem} is the statement + sections below")
    signature: str = Field(
        "\n\nYour solution should have the following signature: ```python\n{starter_code}\n```",
        description="appended to the statement when the problem has starter code",
    )
    stdin: str = Field(
        "\n\nYour program should read its input from standard input and write its answer to standard output.",
        description="appended to the statement of stdin problems",
    )
    reprompt: str = Field(
        "{prompt}{solution}{feedback}\n\nCorrectly solve the original question.",
        description="the self-teacher's prompt: {prompt} is the student's, {solution} and {feedback} the sections",
    )
    solution: str = Field(
        "\n\nCorrect solution:\n\n{successful_previous_attempt}",
        description="the peer-solution section of the teacher prompt",
    )
    feedback: str = Field(
        "\n\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}",
        description="the feedback section of the teacher prompt and of the multi-turn prompt",
    )
    feedback_turn: str = Field(
        "The following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}\n\n"
        "Correctly solve the original question.",
        description="one user turn of the chat-turn multi-turn baseline",
    )

    # field -> (placeholders it may use, placeholders it must use)
    PLACEHOLDERS: ClassVar[dict[str, tuple[set[str], set[str]]]] = {
        "system": (set(), set()),
        "task": ({"problem", "statement", "title", "time_limit_s", "time_limit"}, {"problem"}),
        "signature": ({"starter_code", "entry_point"}, {"starter_code"}),
        "stdin": (set(), set()),
        "reprompt": ({"prompt", "solution", "feedback"}, {"prompt", "solution", "feedback"}),
        "solution": ({"successful_previous_attempt"}, {"successful_previous_attempt"}),
        "feedback": ({"feedback_raw"}, {"feedback_raw"}),
        "feedback_turn": ({"feedback_raw"}, {"feedback_raw"}),
    }

    @model_validator(mode="after")
    def _placeholders_known(self) -> PromptTemplates:
        for field, (allowed, required) in self.PLACEHOLDERS.items():
            template = getattr(self, field)
            if template is None:
                continue
            try:
                used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            except ValueError as error:
                raise ValueError(f"template {field!r} is not a valid format string ({error}); write braces as {{{{ }}}}")
            if "" in used or any(not name.isidentifier() for name in used):
                raise ValueError(f"template {field!r} uses a positional or indexed placeholder; use named ones")
            if unknown := used - allowed:
                raise ValueError(
                    f"template {field!r} uses unknown placeholder(s) {sorted(unknown)}; "
                    f"allowed: {sorted(allowed) or 'none (write braces as {{ }})'}"
                )
            if missing := required - used:
                raise ValueError(f"template {field!r} must contain {', '.join('{' + m + '}' for m in sorted(missing))}")
        return self


DEFAULT_TEMPLATES = PromptTemplates()

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", flags=re.DOTALL)
_THINK_PREFIX = re.compile(r"^.*?</think>\s*", flags=re.DOTALL)


def strip_thinking(text: str) -> str:
    """Remove <think>…</think> blocks, and a leading thought whose <think> was in the prompt.

    An unclosed <think> is left alone: what follows it may be the only copy of the program.
    """
    text = _THINK_BLOCK.sub("", text)
    return _THINK_PREFIX.sub("", text, count=1)


def _messages(templates: PromptTemplates, *turns: tuple[str, str]) -> Messages:
    system = [{"role": "system", "content": templates.system.format()}] if templates.system else []
    return system + [{"role": role, "content": content} for role, content in turns]


def task_prompt(problem: Problem, templates: PromptTemplates = DEFAULT_TEMPLATES) -> str:
    """The student's user message: the task template around statement + signature or stdin note."""
    body = problem.statement.strip()
    if problem.starter_code.strip():
        body += templates.signature.format(
            starter_code=problem.starter_code.rstrip(), entry_point=problem.entry_point or ""
        )
    elif problem.kind == "stdin":
        body += templates.stdin.format()
    return templates.task.format(
        problem=body, statement=problem.statement.strip(), title=problem.title,
        time_limit_s=problem.time_limit_s, time_limit=describe_seconds(problem.time_limit_s),
    )


def describe_seconds(seconds: float) -> str:
    """1.0 -> "1 second", 6.0 -> "6 seconds", 2.5 -> "2.5 seconds"."""
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")


def student_messages(problem: Problem, templates: PromptTemplates = DEFAULT_TEMPLATES) -> Messages:
    """The chat messages every attempt is sampled from (and the student is scored under)."""
    return _messages(templates, ("user", task_prompt(problem, templates)))


def teacher_messages(
    problem: Problem,
    feedback: str | None,
    peer_solution: str | None = None,
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> Messages | None:
    """The self-teacher's context for one attempt, or None when it has nothing to add.

    feedback:      this attempt's feedback (None or blank: it passed, or the judge had nothing)
    peer_solution: another passing attempt of the same batch (thinking is stripped here)
    """
    has_feedback = bool(feedback and feedback.strip())
    solution = strip_thinking(peer_solution).strip() if peer_solution else ""
    if not has_feedback and not solution:
        return None
    content = templates.reprompt.format(
        prompt=task_prompt(problem, templates),
        solution=templates.solution.format(successful_previous_attempt=solution) if solution else "",
        feedback=templates.feedback.format(feedback_raw=feedback.strip()) if has_feedback else "",
    )
    return _messages(templates, ("user", content))


def peer_solution(index: int, responses: Sequence[str], passed: Sequence[bool]) -> str | None:
    """The first passing response of the batch other than `index` (as the reference code picks it)."""
    if len(responses) != len(passed):
        raise ValueError(f"{len(responses)} responses but {len(passed)} pass flags")
    return next((r for j, (r, ok) in enumerate(zip(responses, passed)) if ok and j != index), None)


def teacher_contexts(
    problem: Problem,
    responses: Sequence[str],
    judgements: Sequence[Judgement],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
    use_feedback: bool = True,
    use_peer_solutions: bool = True,
) -> list[Messages | None]:
    """Teacher messages for every attempt of a batch (None where the attempt adds no loss)."""
    if len(responses) != len(judgements):
        raise ValueError(f"{len(responses)} responses but {len(judgements)} judgements")
    passed = [j.passed for j in judgements]
    return [
        teacher_messages(
            problem,
            feedback=j.feedback if use_feedback and not j.passed else None,
            peer_solution=peer_solution(i, responses, passed) if use_peer_solutions else None,
            templates=templates,
        )
        for i, j in enumerate(judgements)
    ]


def multi_turn_messages(
    problem: Problem, feedbacks: Sequence[str], templates: PromptTemplates = DEFAULT_TEMPLATES
) -> Messages:
    """The multi-turn baseline's prompt: the question, every earlier feedback (oldest first), the ask.

    With no feedback it is the student prompt.
    """
    kept = [f.strip() for f in feedbacks if f and f.strip()]
    if not kept:
        return student_messages(problem, templates)
    content = templates.reprompt.format(
        prompt=task_prompt(problem, templates),
        solution="",
        feedback=templates.feedback.format(feedback_raw="\n\n".join(kept)),
    )
    return _messages(templates, ("user", content))


def chat_turn_messages(
    problem: Problem,
    attempts: Sequence[str],
    feedbacks: Sequence[str],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> Messages:
    """The multi-turn baseline as a conversation: question, then (attempt, feedback) turns, oldest first.

    Earlier attempts go in with their thinking stripped (as reasoning models' templates do).
    """
    if len(attempts) != len(feedbacks):
        raise ValueError(f"{len(attempts)} attempts but {len(feedbacks)} feedbacks")
    turns: list[tuple[str, str]] = [("user", task_prompt(problem, templates))]
    for attempt, feedback in zip(attempts, feedbacks):
        turns.append(("assistant", strip_thinking(attempt).strip()))
        turns.append(("user", templates.feedback_turn.format(feedback_raw=feedback.strip())))
    return _messages(templates, *turns)


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt cut to a token limit: `dropped` oldest items left out; `fits` False if even none fit."""

    messages: Messages
    dropped: int
    num_tokens: int
    fits: bool


def fit_to_token_limit(
    build: Callable[[int], Messages], num_items: int, max_tokens: int, count_tokens: Callable[[Messages], int]
) -> FittedPrompt:
    """The prompt `build(d)` with the fewest dropped oldest items d ∈ [0, num_items] within max_tokens.

    Dropping items never lengthens a prompt, so d is found by bisection: O(log n) token counts.
    """
    cache: dict[int, tuple[Messages, int]] = {}

    def measure(dropped: int) -> tuple[Messages, int]:
        if dropped not in cache:
            messages = build(dropped)
            cache[dropped] = (messages, count_tokens(messages))
        return cache[dropped]

    if measure(0)[1] <= max_tokens:
        low = 0
    elif measure(num_items)[1] > max_tokens:
        low = num_items
    else:
        too_many_kept, fits = 0, num_items  # invariant: build(too_many_kept) is too long, build(fits) fits
        while fits - too_many_kept > 1:
            middle = (too_many_kept + fits) // 2
            if measure(middle)[1] <= max_tokens:
                fits = middle
            else:
                too_many_kept = middle
        low = fits
    messages, num_tokens = measure(low)
    return FittedPrompt(messages=messages, dropped=low, num_tokens=num_tokens, fits=num_tokens <= max_tokens)


def fit_multi_turn_messages(
    problem: Problem,
    feedbacks: Sequence[str],
    max_tokens: int,
    count_tokens: Callable[[Messages], int],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> FittedPrompt:
    """`multi_turn_messages` dropping the oldest feedback first until the prompt has ≤ max_tokens.

    count_tokens: e.g. `lambda m: len(chat_prompt_ids(tokenizer, m))`.
    """
    feedbacks = list(feedbacks)
    return fit_to_token_limit(
        lambda d: multi_turn_messages(problem, feedbacks[d:], templates), len(feedbacks), max_tokens, count_tokens
    )


def fit_chat_turn_messages(
    problem: Problem,
    attempts: Sequence[str],
    feedbacks: Sequence[str],
    max_tokens: int,
    count_tokens: Callable[[Messages], int],
    templates: PromptTemplates = DEFAULT_TEMPLATES,
) -> FittedPrompt:
    """`chat_turn_messages` dropping the oldest (attempt, feedback) pairs first to fit max_tokens."""
    attempts, feedbacks = list(attempts), list(feedbacks)
    if len(attempts) != len(feedbacks):
        raise ValueError(f"{len(attempts)} attempts but {len(feedbacks)} feedbacks")
    return fit_to_token_limit(
        lambda d: chat_turn_messages(problem, attempts[d:], feedbacks[d:], templates),
        len(attempts),
        max_tokens,
        count_tokens,
    )
