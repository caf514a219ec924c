"""Learning diagnostics of an SDPO run: does the self-teacher say anything, and did training help?

Notation as in ttsd.sdpo.loss: y an attempt's sampled tokens, x the student prompt, c the teacher
context (x plus the attempt's feedback and/or a peer's passing solution). Every log-prob is the
sampling distribution's, log_softmax(z / τ) over the full vocabulary, in nats.

Teacher-minus-student gap, per token t of a failed attempt y:

    g_t = log π_T(y_t | c, y<t) − log π_S(y_t | x, y<t)

g_t < 0: with the feedback in view the teacher finds the token less likely than the student did (it
blames the token); g_t > 0: the feedback makes it more likely. g_t is the advantage A_t of the
token-level loss, scored before the step's update. Aggregates:

    attempt   ḡ_i = (1 / T_i) Σ_t g_{i,t}                         (`attempt_gap`)
    step      G   = Σ_i Σ_t g_{i,t} / Σ_i T_i                     (`pooled_gap`: a token mean, as the loss)
    run       mean of G over the steps that have one               (`run_gap`)

G ≈ 0 step after step says the feedback changes nothing the model believes: there is no signal.

Discovery likelihood of the discovered solution y* (sampled by θ_d, the weights at discovery):

    ℓ(θ) = Σ_t log π_θ(y*_t | x, y*<t)           ℓ(θ) / T per token
    gain = ℓ(θ_d) − ℓ(θ_0)                       (`discovery_likelihood`)

θ_0 the initial weights: LoRA's B starts at 0, so the adapter disabled computes θ_0 exactly.
gain > 0: training made the solution exp(gain) times more likely. A discovery before any update has
θ_d = θ_0, so its gain is 0 by definition (`updates_before` = 0 records why).

Stale-weights alarm: the step's `stale_weights_gap` is the mean |log π_trainer(y_t) − log π_sampler(y_t)|
over the sampled tokens; it measures kernel and dtype rounding (~1e-3 nats in bf16) unless the
sampler serves other weights. With top_p < 1 vLLM's log-probs are renormalised over the nucleus of
mass M ≥ top_p, which adds up to −log(top_p) per token; the alarm threshold is

    STALE_WEIGHTS_NATS + (−log top_p)

Everything here is plain Python (no torch): the sdpo step hands over lists of floats.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

from ttsd.runs import DiscoveryLikelihood, StepRecord, TokenGapRecord

log = logging.getLogger(__name__)

STALE_WEIGHTS_NATS = 0.1  # mean |trainer − sampler| per token; rounding stays ~100x below it
SIGNIFICANT_DIGITS = 3  # of a stored per-token gap: about float16 precision
DECODE_WINDOW = 8  # tokens of left context when decoding one token's text (a UTF-8 char spans ≤ 4)


def token_gaps(teacher_logprobs: Sequence[float], student_logprobs: Sequence[float]) -> list[float]:
    """g_t = log π_T(y_t) − log π_S(y_t), token by token (the two sequences score the same tokens)."""
    if len(teacher_logprobs) != len(student_logprobs):
        raise ValueError(f"{len(teacher_logprobs)} teacher log-probs but {len(student_logprobs)} student log-probs")
    return [float(t) - float(s) for t, s in zip(teacher_logprobs, student_logprobs)]


def attempt_gap(gaps: Sequence[float] | None) -> float | None:
    """ḡ = (1 / T) Σ_t g_t; None for no tokens."""
    if not gaps:
        return None
    return math.fsum(gaps) / len(gaps)


def pooled_gap(per_attempt: Sequence[Sequence[float]]) -> float | None:
    """G = Σ_i Σ_t g_{i,t} / Σ_i T_i: every token of every attempt counts once; None for no tokens."""
    total = sum(len(g) for g in per_attempt)
    if total == 0:
        return None
    return math.fsum(math.fsum(g) for g in per_attempt) / total


def run_gap(step_gaps: Sequence[float | None]) -> float | None:
    """The mean of the steps' G, over the steps that have one (None when none has)."""
    values = [g for g in step_gaps if g is not None]
    return math.fsum(values) / len(values) if values else None


def discovery_likelihood(
    initial_logprobs: Sequence[float], discovery_logprobs: Sequence[float], updates_before: int
) -> DiscoveryLikelihood:
    """ℓ(θ_0), ℓ(θ_d), gain = ℓ(θ_d) − ℓ(θ_0) and their per-token means, from per-token log-probs.

    `updates_before` only labels the record: with 0 updates the adapter (B = 0) adds exactly zero,
    so the two scorings are equal and the gain is 0.0 (tests/test_diagnostics.py checks it on the
    real scorer)."""
    if len(initial_logprobs) != len(discovery_logprobs) or not initial_logprobs:
        raise ValueError("the discovered solution needs the same, non-zero number of log-probs under both weights")
    tokens = len(initial_logprobs)
    initial = math.fsum(initial_logprobs)
    discovery = math.fsum(discovery_logprobs)
    gain = discovery - initial
    return DiscoveryLikelihood(
        tokens=tokens,
        updates_before=updates_before,
        initial_nats=initial,
        discovery_nats=discovery,
        gain_nats=gain,
        per_token_initial_nats=initial / tokens,
        per_token_discovery_nats=discovery / tokens,
        per_token_gain_nats=gain / tokens,
    )


def describe_discovery(found: DiscoveryLikelihood) -> str:
    """What training did to the discovered solution's likelihood, in one sentence."""
    if found.updates_before == 0:
        return (
            f"found by the initial weights (no update before it): log-likelihood {found.initial_nats:.2f} nats "
            f"({found.per_token_initial_nats:.3f}/token), gain 0"
        )
    return (
        f"{found.updates_before} updates changed its log-likelihood by {found.gain_nats:+.2f} nats "
        f"({found.per_token_gain_nats:+.4f}/token): {found.initial_nats:.2f} → {found.discovery_nats:.2f}"
    )


def stale_weights_threshold(top_p: float) -> float:
    """STALE_WEIGHTS_NATS + (−log top_p): the nucleus renormalisation is not staleness."""
    return STALE_WEIGHTS_NATS - math.log(top_p)


def stale_weights_alarm(stale_weights_gap: float | None, top_p: float) -> str | None:
    """A message for the user when trainer and sampler disagree beyond rounding, else None."""
    if stale_weights_gap is None or stale_weights_gap <= stale_weights_threshold(top_p):
        return None
    return (
        f"trainer and sampler disagree by {stale_weights_gap:.3f} nats per sampled token (alarm above "
        f"{stale_weights_threshold(top_p):.3f}): the sampler may be serving stale weights"
    )


def compact(value: float) -> float:
    """`value` to SIGNIFICANT_DIGITS significant digits (short in JSON, about float16 precision)."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def token_texts(decode: Callable[[Sequence[int]], str], token_ids: Sequence[int], window: int = DECODE_WINDOW) -> list[str]:
    """The text each token adds, such that "".join(result) == decode(token_ids) for ordinary text.

    Each token is decoded after up to `window` tokens of context, and its text is the difference:
    decoding tokens one at a time breaks characters whose UTF-8 bytes span several byte-level
    tokens (the first tokens then add "" and the last one the whole character) and drops the
    leading space SentencePiece decoders strip from a sequence's first token."""
    pieces = []
    for t in range(len(token_ids)):
        start = max(0, t - window)
        before = decode(token_ids[start:t]) if t > start else ""
        after = decode(token_ids[start : t + 1])
        if after.endswith("\ufffd") and t + 1 < len(token_ids):  # an incomplete character: the token completing it shows it
            pieces.append("")
            continue
        before = before.rstrip("\ufffd")
        pieces.append(after[len(before):] if after.startswith(before) else decode(token_ids[t : t + 1]))
    return pieces


# ----- what the step loop calls ----------------------------------------------------------------
def annotate_step(record: StepRecord, attempt_token_gaps: Sequence[Sequence[float] | None], top_p: float) -> None:
    """Put the step's pooled gap G on `record` and warn the user when the stale-weights alarm rings."""
    record.teacher_logprob_gap = pooled_gap([g for g in attempt_token_gaps if g])
    alarm = stale_weights_alarm(record.stale_weights_gap, top_p)
    if alarm is not None:
        log.warning("step %d: %s", record.step, alarm)


def token_gap_records(
    ks: Sequence[int], step: int, texts: Sequence[Sequence[str] | None], gaps: Sequence[Sequence[float] | None],
    quoted: Sequence[Sequence[bool] | None] | None = None,
) -> list[TokenGapRecord]:
    """token_gaps.jsonl lines for the attempts that have gaps (k, token texts (`token_texts`), gaps and
    the quoted-token flags of ttsd.sdpo.copying aligned; a line keeps the quoted tokens' indices)."""
    flags = quoted if quoted is not None else [None] * len(ks)
    return [
        TokenGapRecord(
            k=k, step=step, tokens=list(pieces), gaps=[compact(g) for g in attempt_gaps],
            quoted=None if marks is None else [t for t, q in enumerate(marks) if q],
        )
        for k, pieces, attempt_gaps, marks in zip(ks, texts, gaps, flags)
        if attempt_gaps
    ]
