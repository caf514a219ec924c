"""The copy diagnostic: does the self-teacher up-weight the tokens its feedback quotes? (pure math)

The feedback the teacher sees often repeats text of the attempt itself: the failing source line
("Line 3 in f: total += x"), what the program printed, the input the attempt's own test code used.
A teacher that merely copies from its context finds those tokens more likely than the student did,
whether or not they are right, and the reverse-KL loss then pushes the student *towards* the bug.
This module splits an attempt's teacher-minus-student gaps g_t (ttsd.sdpo.diagnostics) into the
tokens that appear verbatim in the feedback ("quoted") and the others.

The matching rule ("appears verbatim", `quoted_tokens`):

1. Both texts are whitespace-normalised the same way (`normalise`): each run of whitespace becomes
   one "\\n" if it holds a line break, else one " ". Indentation and the feedback's stripped source
   lines then compare equal, while a line break never matches a space (a quote cannot run from the
   end of one line of the attempt into the next as if they were one line).
2. A character of the attempt is *covered* when it lies in a window of MIN_QUOTE_CHARS consecutive
   normalised characters that occurs as a substring of the normalised feedback. The union of those
   windows is exactly the union of all common substrings at least MIN_QUOTE_CHARS long.
3. A token is *quoted* when it has at least one non-whitespace character and every non-whitespace
   character of it is covered. Whitespace-only tokens (indentation, line breaks) are never quoted.

MIN_QUOTE_CHARS = 10 is the length of "total += x", the shortest quoted line worth catching;
common fragments stay below it: "return " (7), "\\nreturn " (8), a lone bracket or colon (1), so an
attempt's `return` or indentation does not count as copied because the quoted line has them too.

Aggregates, over the quoted set Q and the other scored tokens O of one attempt (T = Q ∪ O):

    quoted_gap = (1/|Q|) Σ_{t∈Q} g_t      other_gap = (1/|O|) Σ_{t∈O} g_t     (`split_gaps`)

pooled over attempts (and steps) as token means, each side by its own tokens (`pool`). The alarm
(`copy_alarm`): quoted_gap − other_gap > COPY_ALARM_NATS over at least COPY_ALARM_MIN_TOKENS quoted
tokens pooled over the run so far: the teacher prefers the quoted tokens by more than e^0.5 ≈ 1.65×
per token beyond its view of the rest. The fix it names: `--no-feedback-source-line` (quote only the
line number and function), see docs/feedback.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttsd.runs import CopyGap

MIN_QUOTE_CHARS = 10  # normalised characters a common substring needs to count as a quote
COPY_ALARM_NATS = 0.5  # quoted_gap − other_gap (nats/token) above which the run warns
COPY_ALARM_MIN_TOKENS = 50  # quoted tokens (pooled over the run) before the alarm may ring
COPY_FIX = "--no-feedback-source-line"


def normalise(text: str) -> tuple[str, list[int]]:
    """`text` with each whitespace run collapsed (to "\\n" if it holds one, else " "), and for every
    character of the result the index in `text` where its run starts."""
    out: list[str] = []
    origin: list[int] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            j = i
            while j < len(text) and text[j].isspace():
                j += 1
            out.append("\n" if "\n" in text[i:j] else " ")
            origin.append(i)
            i = j
        else:
            out.append(text[i])
            origin.append(i)
            i += 1
    return "".join(out), origin


def covered_characters(text: str, feedback: str, min_chars: int = MIN_QUOTE_CHARS) -> list[bool]:
    """Per character of `text`: does it lie in a common substring (after `normalise`) of at least
    `min_chars` normalised characters with `feedback`? A collapsed whitespace run is covered as one."""
    if min_chars < 1:
        raise ValueError("min_chars must be at least 1")
    norm_text, origin = normalise(text)
    norm_feedback, _ = normalise(feedback)
    windows = {norm_feedback[i : i + min_chars] for i in range(len(norm_feedback) - min_chars + 1)}
    covered_norm = [False] * len(norm_text)
    for start in range(len(norm_text) - min_chars + 1):
        if norm_text[start : start + min_chars] in windows:
            for j in range(start, start + min_chars):
                covered_norm[j] = True
    covered = [False] * len(text)
    for j, flag in enumerate(covered_norm):
        if flag:
            end = origin[j + 1] if j + 1 < len(origin) else len(text)
            for i in range(origin[j], end):
                covered[i] = True
    return covered


def quoted_tokens(token_texts: Sequence[str], feedback: str, min_chars: int = MIN_QUOTE_CHARS) -> list[bool]:
    """Per token (its text piece; the pieces joined are the attempt): is it quoted in `feedback`?
    The rule is this module's docstring: every non-whitespace character covered, at least one."""
    text = "".join(token_texts)
    if not feedback.strip() or not text:
        return [False] * len(token_texts)
    covered = covered_characters(text, feedback, min_chars)
    quoted = []
    offset = 0
    for piece in token_texts:
        marks = [covered[offset + i] for i, c in enumerate(piece) if not c.isspace()]
        quoted.append(bool(marks) and all(marks))
        offset += len(piece)
    return quoted


def split_gaps(gaps: Sequence[float], quoted: Sequence[bool]) -> CopyGap:
    """The attempt's mean gap on its quoted tokens and on the others (None for an empty side)."""
    if len(gaps) != len(quoted):
        raise ValueError(f"{len(gaps)} gaps but {len(quoted)} quoted flags")
    inside = [g for g, q in zip(gaps, quoted) if q]
    outside = [g for g, q in zip(gaps, quoted) if not q]
    return CopyGap(
        quoted_tokens=len(inside),
        quoted_gap=math.fsum(inside) / len(inside) if inside else None,
        other_tokens=len(outside),
        other_gap=math.fsum(outside) / len(outside) if outside else None,
    )


def pool(parts: Sequence[CopyGap | None]) -> CopyGap | None:
    """Token means over several attempts or steps: each side weighted by its own token counts."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None

    def mean(pairs: list[tuple[float | None, int]]) -> tuple[float | None, int]:
        total = sum(n for g, n in pairs if g is not None)
        if total == 0:
            return None, 0
        return math.fsum(g * n for g, n in pairs if g is not None) / total, total

    quoted_gap, quoted_n = mean([(p.quoted_gap, p.quoted_tokens) for p in parts])
    other_gap, other_n = mean([(p.other_gap, p.other_tokens) for p in parts])
    return CopyGap(quoted_tokens=quoted_n, quoted_gap=quoted_gap, other_tokens=other_n, other_gap=other_gap)


def copy_alarm(pooled: CopyGap | None, min_tokens: int = COPY_ALARM_MIN_TOKENS, nats: float = COPY_ALARM_NATS) -> str | None:
    """The warning when the teacher up-weights quoted tokens (this module's docstring), else None."""
    if pooled is None or pooled.excess is None or pooled.quoted_tokens < min_tokens or pooled.excess <= nats:
        return None
    return (
        f"the self-teacher favours the tokens its feedback quotes: {pooled.quoted_gap:+.3f} nats/token on "
        f"{pooled.quoted_tokens} quoted tokens vs {pooled.other_gap:+.3f} on the others (excess "
        f"{pooled.excess:+.3f} > {nats:g}): it may be copying the bug from its prompt into the student; "
        f"try {COPY_FIX} (give only the failing line's number and function, docs/feedback.md)"
    )
