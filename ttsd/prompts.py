"""The prompt wording (`PromptTemplates`) and the student's prompt, which every method samples from.

Every builder returns chat messages (`ttsd.engine.chat.ChatMessage`) for the engine's chat template
(`ttsd.engine.chat.chat_prompt_ids`). The wording lives in one pydantic model, `PromptTemplates`,
whose defaults are the paper's; a run config can override any field. The method-specific prompts
build on this module: the self-teacher's context in `ttsd.sdpo.prompts`, the multi-turn baseline's
in `ttsd.methods.multi_turn`.

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
- `pytest`: ours: a pytest problem's visible test file is part of its specification (its
  failures are the feedback), so the student sees it, with the module name the tests import.
- `reprompt`, `solution`, `feedback`: the self-teacher templates of the reference code
  (`SelfDistillationConfig`: reprompt_template, solution_template, feedback_template), same
  wording and placeholder names (templates can be copied between the two); only the whitespace is
  evened out to one blank line between sections (the reference leaves 1 to 4 newlines).
- `feedback_turn`: ours, for the chat-turn variant of the multi-turn baseline: one user turn per
  failed attempt, in the teacher's wording.

Imports nothing heavy: the config (and so the CLI's `--help`) imports this module.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttsd.engine.chat import ChatMessage, Messages, Role

if TYPE_CHECKING:
    from ttsd.problems.model import Problem

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
    pytest: str = Field(
        "\n\nYour program is saved as {module}.py and tested with pytest. The visible tests:"
        "\n```python\n{test_file}\n```",
        description="appended to the statement of pytest problems: {test_file} is the visible test file",
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
        "pytest": ({"module", "test_file"}, {"test_file"}),
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


def chat_messages(templates: PromptTemplates, *turns: tuple[Role, str]) -> Messages:
    """The turns (role, content) as chat messages, after the templates' system message if there is one."""
    system = [ChatMessage(role="system", content=templates.system.format())] if templates.system else []
    return system + [ChatMessage(role=role, content=content) for role, content in turns]


def task_prompt(problem: Problem, templates: PromptTemplates = DEFAULT_TEMPLATES) -> str:
    """The student's user message: the task template around statement + signature or stdin note."""
    body = problem.statement.strip()
    if problem.starter_code.strip():
        body += templates.signature.format(
            starter_code=problem.starter_code.rstrip(), entry_point=problem.entry_point or ""
        )
    elif problem.kind == "stdin":
        body += templates.stdin.format()
    if problem.kind == "pytest":
        body += templates.pytest.format(module=problem.module_name, test_file=(problem.test_file or "").rstrip())
    return templates.task.format(
        problem=body, statement=problem.statement.strip(), title=problem.title,
        time_limit_s=problem.time_limit_s, time_limit=describe_seconds(problem.time_limit_s),
    )


def describe_seconds(seconds: float) -> str:
    """1.0 -> "1 second", 6.0 -> "6 seconds", 2.5 -> "2.5 seconds"."""
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")


def student_messages(problem: Problem, templates: PromptTemplates = DEFAULT_TEMPLATES) -> Messages:
    """The chat messages every attempt is sampled from (and the student is scored under)."""
    return chat_messages(templates, ("user", task_prompt(problem, templates)))
