"""The self-teacher's prompts: the context SDPO re-prompts the same model with, per attempt.

Teacher context (the paper's Table 2): the original question; then, if another attempt of the same
batch passed, "Correct solution:" and that attempt (thinking stripped); then, if this attempt
failed with feedback, "The following is feedback from your unsuccessful earlier attempt:" and the
feedback; then "Correctly solve the original question." The student's own response is scored under
it. An attempt with neither a peer solution nor feedback gets no teacher context (None): it adds no
loss; neither does a truncated or format-error attempt when `skip_unrun` (SolveConfig.feedback_unrun
= "skip": such an attempt never ran, so its feedback is a fixed text with nothing of the problem). The wording is `PromptTemplates.reprompt`, `.solution` and `.feedback` (`ttsd.prompts`, where
the student's prompt and the defaults' sources are too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ttsd.engine.chat import Messages
from ttsd.prompts import DEFAULT_TEMPLATES, PromptTemplates, chat_messages, strip_thinking, task_prompt

if TYPE_CHECKING:
    from ttsd.judge import Judgement
    from ttsd.problems.model import Problem


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
    return chat_messages(templates, ("user", content))


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
    skip_unrun: bool = False,
) -> list[Messages | None]:
    """Teacher messages for every attempt of a batch (None where the attempt adds no loss).
    `skip_unrun`: truncated and format-error attempts get None (left out of the learning batch)."""
    from ttsd.judge import Verdict

    if len(responses) != len(judgements):
        raise ValueError(f"{len(responses)} responses but {len(judgements)} judgements")
    passed = [j.passed for j in judgements]
    unrun = (Verdict.truncated, Verdict.format_error)
    return [
        None
        if skip_unrun and j.verdict in unrun
        else teacher_messages(
            problem,
            feedback=j.feedback if use_feedback and not j.passed else None,
            peer_solution=peer_solution(i, responses, passed) if use_peer_solutions else None,
            templates=templates,
        )
        for i, j in enumerate(judgements)
    ]
