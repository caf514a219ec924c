"""`ttsd show RUN_DIR [--attempt K]`: one attempt of a run, each token coloured by where the
self-teacher disagreed with the student.

The colour of token y_t is its teacher-minus-student log-prob g_t = log π_T(y_t) − log π_S(y_t)
(RUN_DIR/token_gaps.jsonl, ttsd.sdpo.diagnostics) on a diverging scale: red where the teacher,
having seen the feedback, finds the token less likely than the student did (it blames it), blue
where it finds it more likely, uncoloured near 0. Four shades per side, at |g_t| ≥ 0.1, 0.25, 0.5
and 1 × `--scale` nats. Tokens that appear verbatim in the feedback (the copy diagnostic,
ttsd.sdpo.copying) are underlined, and the attempt's mean gap on them and on the others is shown:
a teacher that copies its feedback colours the quoted line blue. Attempts no self-teacher scored (baselines, passing attempts, a discovery
batch) are shown plainly, with the reason.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel

from ttsd.cli.app import app, fail
from ttsd.runs import AttemptRecord, DiscoveryLikelihood, RunDir, TokenGapRecord

DEFAULT_SCALE_NATS = 1.0  # SmolLM2 on sum-two-numbers: most blamed tokens between −0.1 and −3 nats
SHADE_STEPS = (0.1, 0.25, 0.5, 1.0)  # |g| / scale at which each shade starts
# ColorBrewer RdBu, light to strong; white text on the two strong shades
BLAMED = ((253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43))
FAVOURED = ((209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172))


class TokenView(BaseModel):
    text: str
    gap: float  # log π_T − log π_S, nats
    quoted: bool = False  # appears verbatim in the teacher's feedback (ttsd.sdpo.copying)


class AttemptView(BaseModel):
    """What `ttsd show --json` prints."""

    run_dir: str
    method: str
    attempts_in_run: int
    chosen_because: str  # why this attempt (given by --attempt, or the default's reason)
    attempt: AttemptRecord
    tokens: list[TokenView] | None  # None: no self-teacher scored this attempt (see `note`)
    note: str | None
    scale_nats: float
    discovery_likelihood: DiscoveryLikelihood | None = None  # when the attempt is the discovered one


def shade(gap: float, scale: float) -> tuple[int, int, int] | None:
    """The background of a token with gap `gap`: None below 0.1·scale, else the shade of the
    largest step |gap| / scale reaches, red for gap < 0 (blamed), blue for gap > 0."""
    level = sum(abs(gap) >= step * scale for step in SHADE_STEPS)
    if level == 0:
        return None
    return (BLAMED if gap < 0 else FAVOURED)[level - 1]


def _style(gap: float, scale: float) -> Any:
    from rich.color import Color
    from rich.style import Style

    background = shade(gap, scale)
    if background is None:
        return None
    strong = background in (BLAMED[2], BLAMED[3], FAVOURED[2], FAVOURED[3])
    return Style(bgcolor=Color.from_rgb(*background), color="white" if strong else "black")


def visible(text: str) -> str:
    """Control characters (a random model emits them) as escapes, so the terminal shows them."""
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) != "Cc" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def pick_attempt(attempts: list[AttemptRecord], gaps: dict[int, TokenGapRecord]) -> tuple[AttemptRecord, str]:
    """The attempt to show by default and why: the discovered one, else the last one the self-teacher
    scored, else the last one."""
    discovered = next((a for a in attempts if a.passed), None)
    if discovered is not None:
        return discovered, "the discovered solution"
    scored = [a for a in attempts if a.k in gaps]
    if scored:
        return scored[-1], "the last failed attempt the self-teacher scored"
    return attempts[-1], "the last attempt (no attempt has token gaps)"


def why_no_gaps(attempt: AttemptRecord, method: str, attempts: list[AttemptRecord], budget: int | None = None) -> str:
    if method != "sdpo":
        return f"{method} does not learn: no self-teacher scored its attempts"
    if attempt.passed:
        return "a passing attempt gets no feedback, so no self-teacher scored it"
    if any(a.passed for a in attempts if a.step == attempt.step):
        return "its batch discovered a solution, so the step ended before the self-teacher scored it"
    if budget is not None and attempt.step == attempts[-1].step and len(attempts) >= budget:
        return "the budget's last batch: no attempt was left to use an update, so it learnt nothing and no self-teacher scored it"
    return "no self-teacher scored it (an attempt without tokens, or a run from before token gaps were saved)"


def attempt_view(run: RunDir, k: int | None, scale: float) -> AttemptView:
    attempts = run.attempts()
    if not attempts:
        fail(f"{run.path} has no attempts yet")
    gaps = run.token_gaps()
    if k is None:
        attempt, reason = pick_attempt(attempts, gaps)
    else:
        attempt = next((a for a in attempts if a.k == k), None)
        if attempt is None:
            fail(f"attempt {k} is not in {run.path}: it has attempts {attempts[0].k}..{attempts[-1].k}")
        reason = "--attempt"
    config = run.config_data().get("config", {})
    method = config.get("method", "sdpo")
    line = gaps.get(attempt.k)
    summary = run.summary()
    return AttemptView(
        run_dir=str(run.path),
        method=method,
        attempts_in_run=len(attempts),
        chosen_because=reason,
        attempt=attempt,
        tokens=token_views(line) if line else None,
        note=None if line else why_no_gaps(attempt, method, attempts, config.get("budget")),
        scale_nats=scale,
        discovery_likelihood=summary.discovery_likelihood if summary and summary.discovery_k == attempt.k else None,
    )


def token_views(line: TokenGapRecord) -> list[TokenView]:
    quoted = set(line.quoted or ())
    return [TokenView(text=t, gap=g, quoted=i in quoted) for i, (t, g) in enumerate(zip(line.tokens, line.gaps))]


def coloured_response(tokens: list[TokenView], scale: float) -> Any:
    from rich.style import Style
    from rich.text import Text

    text = Text()
    for token in tokens:
        style = _style(token.gap, scale)
        if token.quoted:  # underlined: the feedback quotes it
            style = Style(underline=True) if style is None else style + Style(underline=True)
        piece = visible(token.text)
        if style is not None and "\n" in piece:  # a newline has no background: mark it where it is
            head, _, tail = piece.partition("\n")
            text.append(head + "↵", style)
            text.append("\n" + tail, style if tail.strip() else None)
        else:
            text.append(piece, style)
    return text


def legend(scale: float) -> Any:
    from rich.text import Text

    text = Text("teacher − student log-prob (nats): ")
    for index in reversed(range(len(SHADE_STEPS))):
        text.append(f" ≤−{SHADE_STEPS[index] * scale:g} ", _style(-SHADE_STEPS[index] * scale, scale))
    text.append("  ~0  ")
    for index in range(len(SHADE_STEPS)):
        text.append(f" ≥+{SHADE_STEPS[index] * scale:g} ", _style(SHADE_STEPS[index] * scale, scale))
    text.append("\nred: with the feedback in view the teacher finds the token less likely (it blames it); "
                "blue: more likely; underlined: the token appears verbatim in the feedback", style="dim")
    return text


def render(view: AttemptView) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    from ttsd.cli.check import verdict_style

    console = Console(highlight=False)
    a = view.attempt
    console.print(Text(f"{view.run_dir} · {view.method} · attempt {a.k} of {view.attempts_in_run} (step {a.step}) · "
                       f"chosen: {view.chosen_because}", style="dim"))
    facts = f"   {a.tests_passed}/{a.tests_total} tests passed   {a.num_tokens} tokens ({a.finish_reason})"
    if a.teacher_logprob_gap is not None:
        facts += f"   mean teacher − student {a.teacher_logprob_gap:+.4f} nats/token"
    if a.copy_gap is not None:
        from ttsd.cli.solve import describe_copy_gap

        facts += f"   quoted | other: {describe_copy_gap(a.copy_gap)}"
    console.print(Text.assemble((a.verdict.value.replace("_", " ").upper(), verdict_style(a.verdict)), facts))
    if view.discovery_likelihood is not None:
        from ttsd.sdpo.diagnostics import describe_discovery

        console.print(describe_discovery(view.discovery_likelihood))
    if a.feedback:
        console.print(Panel(Text(a.feedback), title="feedback (what the self-teacher saw)", title_align="left"))
    if view.tokens is None:
        console.print(Panel(Text(visible(a.response)), title="response", title_align="left"))
        console.print(Text(f"not coloured: {view.note}", style="yellow"))
        return
    console.print(Panel(coloured_response(view.tokens, view.scale_nats), title="response, coloured by token", title_align="left"))
    console.print(legend(view.scale_nats))


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (made by `ttsd solve` or `ttsd bench`).")],
    attempt: Annotated[Optional[int], typer.Option("--attempt", "-k", help="Attempt number k (1-based, as in attempts.jsonl); without it: the discovered one, else the last failed one the self-teacher scored.")] = None,
    scale: Annotated[float, typer.Option("--scale", min=0.001, help="Nats of teacher − student log-prob at the strongest colour (shades start at 0.1, 0.25, 0.5 and 1 × scale).")] = DEFAULT_SCALE_NATS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the attempt, its tokens and their gaps as one JSON object.")] = False,
) -> None:
    """One attempt: verdict, feedback, and its code with every token coloured by the teacher − student log-prob."""
    try:
        run = RunDir.open(run_dir)
    except FileNotFoundError as error:
        fail(str(error))
    view = attempt_view(run, attempt, scale)
    if as_json:
        typer.echo(json.dumps(view.model_dump(mode="json")))
    else:
        render(view)
