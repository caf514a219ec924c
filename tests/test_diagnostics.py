"""Learning diagnostics: the equations of ttsd.sdpo.diagnostics against hand-computed values, the
discovery likelihood on the real scorer (θ_0 is the adapter disabled, exactly), and an sdpo run's
files (steps, attempts, summary, token_gaps.jsonl) agreeing with each other."""

from __future__ import annotations

import json
import logging
import math

import pytest

from ttsd.methods.scheduler import fulfil
from ttsd.runs import StepRecord
from ttsd.sdpo import diagnostics
from tests.conftest import REPO


def test_token_gaps_and_their_means_by_hand():
    gaps = diagnostics.token_gaps([-1.0, -0.5, -3.0], [-2.0, -0.5, -1.0])
    assert gaps == [1.0, 0.0, -2.0]
    assert diagnostics.attempt_gap(gaps) == pytest.approx(-1 / 3)
    assert diagnostics.attempt_gap([]) is None and diagnostics.attempt_gap(None) is None
    # pooled over tokens: (1 + 0 − 2 + 4) / 4 = 0.75, not the mean of attempt means (−1/3 + 4) / 2
    assert diagnostics.pooled_gap([gaps, [4.0]]) == pytest.approx(0.75)
    assert diagnostics.pooled_gap([]) is None
    assert diagnostics.run_gap([0.5, None, -0.25]) == pytest.approx(0.125)
    assert diagnostics.run_gap([None, None]) is None
    with pytest.raises(ValueError):
        diagnostics.token_gaps([0.0], [0.0, 1.0])


def test_discovery_likelihood_by_hand():
    record = diagnostics.discovery_likelihood([-1.0, -2.0, -3.0, -2.0], [-0.5, -1.0, -1.5, -1.0], updates_before=3)
    assert (record.tokens, record.updates_before) == (4, 3)
    assert (record.initial_nats, record.discovery_nats, record.gain_nats) == (-8.0, -4.0, 4.0)
    assert (record.per_token_initial_nats, record.per_token_discovery_nats, record.per_token_gain_nats) == (-2.0, -1.0, 1.0)
    with pytest.raises(ValueError):
        diagnostics.discovery_likelihood([], [], updates_before=0)


def test_stale_weights_alarm_allows_for_the_nucleus(caplog):
    assert diagnostics.stale_weights_threshold(1.0) == pytest.approx(0.1)
    assert diagnostics.stale_weights_threshold(0.5) == pytest.approx(0.1 + math.log(2))
    assert diagnostics.stale_weights_alarm(0.05, 1.0) is None and diagnostics.stale_weights_alarm(None, 1.0) is None
    assert diagnostics.stale_weights_alarm(0.5, 0.5) is None  # within what renormalising over half the mass explains
    assert "stale weights" in diagnostics.stale_weights_alarm(0.5, 1.0)
    record = StepRecord(step=4, attempts=8, stale_weights_gap=0.3)
    with caplog.at_level(logging.WARNING, logger="ttsd"):
        diagnostics.annotate_step(record, [[1.0, -1.0], None, [2.0]], top_p=1.0)
    assert record.teacher_logprob_gap == pytest.approx(2 / 3)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "step 4" in caplog.records[0].getMessage()


def test_compact_keeps_three_significant_digits():
    assert [diagnostics.compact(v) for v in (-12.3456, 0.00123456, 1.0, -0.0)] == [-12.3, 0.00123, 1.0, 0.0]


def test_token_texts_join_to_the_decoded_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "def solve():\n    print('naïve → ünïcödé 😀')  # ok"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def decode(ids):
        return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces = diagnostics.token_texts(decode, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == decode(ids) == text + "<|im_end|>"
    assert "" in pieces  # the emoji's first byte-tokens add no text; the token completing it adds it whole
    assert any("😀" in piece for piece in pieces) and pieces[-1] == "<|im_end|>"


def test_token_texts_with_a_decoder_that_strips_the_first_space():
    vocabulary = {1: "▁a", 2: "▁b", 3: "c"}

    def decode(ids):  # SentencePiece style: "▁" is a space, the sequence's leading one is dropped
        return "".join(vocabulary[i] for i in ids).replace("▁", " ").removeprefix(" ")

    assert diagnostics.token_texts(decode, [1, 2, 3, 1]) == ["a", " b", "c", " a"]


def test_token_texts_with_a_character_cut_at_the_end():
    vocabulary = {1: b"a", 2: b"\xe2", 3: b"\x82", 4: b"\xac"}  # "\xe2\x82\xac" is the euro sign

    def decode(ids):
        return b"".join(vocabulary[i] for i in ids).decode("utf-8", errors="replace")

    assert diagnostics.token_texts(decode, [1, 2, 3, 4]) == ["a", "", "", "€"]
    assert diagnostics.token_texts(decode, [1, 2, 3]) == ["a", "", "\ufffd"]  # never completed: shown where it ends


# ----- on the real model ---------------------------------------------------------------------------
@pytest.fixture
def sdpo(tiny_model_dir, tmp_path):
    from ttsd.config import SolveConfig
    from ttsd.methods.sdpo import Sdpo
    from ttsd.problems import load_problem
    from ttsd.runs import RunDir

    # a generous time limit: the correct program must pass even on a machine busy with other work
    problem = load_problem(REPO / "problems" / "examples" / "sum-two-numbers.json").model_copy(update={"time_limit_s": 60.0})
    config = SolveConfig(model=str(tiny_model_dir), backend="hf", batch_size=2, max_tokens=24, seed=3, learning_rate=1e-2,
                         lora_rank=4, lora_alpha=8.0, judge_workers=2, dtype="float32", device="cpu")
    method = Sdpo(problem, config, RunDir.create(tmp_path / "run", config, problem), tiny_model_dir)
    method.setup()
    yield method
    method.close()


def _passing_attempt(method):
    """A correct program as tokens, judged for real: what a discovery hands the diagnostics."""
    from ttsd.methods.run_loop import Attempt

    response = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    ids = method.tokenizer(response, add_special_tokens=False)["input_ids"]
    judgement = method.judge.judge_many(method.problem, [response], ["stop"])[0]
    assert judgement.passed, judgement.feedback
    return Attempt(response, ids, [0.0] * len(ids), "stop", method.prompt_ids, judgement)


def test_discovery_likelihood_is_zero_gain_before_training_and_theta_0_is_the_base_model(sdpo, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from ttsd.engine.scorer import score_tokens

    passing = _passing_attempt(sdpo)
    before = sdpo.discovery_likelihood([passing])
    assert before.updates_before == 0 and before.tokens == len(passing.token_ids)
    assert before.gain_nats == 0.0 and before.initial_nats == before.discovery_nats < 0  # the same weights, exactly
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # no LoRA at all
    plain = score_tokens(base, [sdpo.prompt_ids], [passing.token_ids], top_k=0)
    assert before.initial_nats == pytest.approx(float(plain.response_logprobs[0].double().sum()), abs=1e-4)

    outcome = fulfil(sdpo.engine, sdpo.run_step(0, 2))  # the tiny model fails: feedback, a teacher, one update
    assert not any(a.judgement.passed for a in outcome.attempts) and outcome.record.loss is not None
    after = sdpo.discovery_likelihood([outcome.attempts[0], passing])
    assert after.updates_before == 1
    assert after.initial_nats == before.initial_nats  # the adapter disabled is still θ_0
    assert after.discovery_nats != before.discovery_nats and after.gain_nats == after.discovery_nats - after.initial_nats
    assert sdpo.discovery_likelihood(outcome.attempts) is None  # nothing passed: nothing to score


def test_failed_attempts_carry_teacher_gaps_that_match_the_scorer(sdpo):
    outcome = fulfil(sdpo.engine, sdpo.run_step(0, 2))
    for attempt in outcome.attempts:
        assert attempt.teacher_gaps is not None and len(attempt.teacher_gaps) == len(attempt.token_ids)
        assert any(g != 0.0 for g in attempt.teacher_gaps)  # the feedback context changes the view


def test_an_sdpo_run_records_gaps_consistently_across_its_files(tiny_model_dir, tmp_path):
    from ttsd.config import SolveConfig
    from ttsd.methods import solve
    from ttsd.problems import load_problem
    from ttsd.runs import RunDir

    problem = load_problem(REPO / "problems" / "examples" / "sum-two-numbers.json")
    config = SolveConfig(model=str(tiny_model_dir), backend="hf", budget=6, batch_size=2, max_tokens=24, seed=3,
                         learning_rate=1e-2, lora_rank=4, lora_alpha=8.0, judge_workers=2)
    summary = solve(problem, config, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    attempts, steps, token_gaps = run.attempts(), run.steps(), run.token_gaps()
    # every attempt failed, and the teacher scored those it learnt from: not the last batch's
    # (the budget's last batch skips its learning step, ttsd.methods.sdpo)
    assert sorted(token_gaps) == [1, 2, 3, 4]
    assert steps[-1].teacher_logprob_gap is None and all(a.teacher_logprob_gap is None for a in attempts[4:])
    attempts, steps = attempts[:4], steps[:2]
    for attempt in attempts:
        line = token_gaps[attempt.k]
        assert line.step == attempt.step and len(line.tokens) == len(line.gaps) == attempt.num_tokens
        assert "".join(line.tokens).startswith(attempt.response)  # plus the special tokens the response drops
        assert attempt.teacher_logprob_gap == pytest.approx(sum(line.gaps) / len(line.gaps), abs=1e-3)
    for step in steps:
        rows = [token_gaps[a.k].gaps for a in attempts if a.step == step.step]
        assert step.teacher_logprob_gap == pytest.approx(sum(map(sum, rows)) / sum(map(len, rows)), abs=1e-3)
    assert summary.teacher_logprob_gap == pytest.approx(sum(s.teacher_logprob_gap for s in steps) / len(steps))
    assert summary.discovery_likelihood is None
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["teacher_logprob_gap"] == summary.teacher_logprob_gap

    # the copy diagnostic: each scored attempt's tokens split into quoted and other, by the rule of
    # ttsd.sdpo.copying applied to its tokens and the feedback the teacher saw
    from ttsd.sdpo import copying

    for attempt in attempts:
        line = token_gaps[attempt.k]
        flags = copying.quoted_tokens(line.tokens, attempt.feedback)
        assert line.quoted == [t for t, q in enumerate(flags) if q]
        assert attempt.copy_gap.quoted_tokens + attempt.copy_gap.other_tokens == attempt.num_tokens
        assert attempt.copy_gap.quoted_tokens == len(line.quoted)
        assert attempt.copy_gap.other_gap == pytest.approx(
            sum(g for t, g in enumerate(line.gaps) if t not in line.quoted) / attempt.copy_gap.other_tokens, abs=1e-3)
    for step in steps:
        assert step.copy_gap == copying.pool([a.copy_gap for a in attempts if a.step == step.step])
    assert summary.copy_gap == copying.pool([s.copy_gap for s in steps])

    # a step that did not complete leaves no token gaps behind after a rollback
    run.steps_path.write_text(run.steps_path.read_text().splitlines(keepends=True)[0])
    run.rollback_to_completed_steps()
    assert sorted(run.token_gaps()) == [1, 2]


def test_teacher_gaps_from_padded_tensors_or_lists_agree(sdpo):
    import torch

    from ttsd.judge import Judgement, Verdict
    from ttsd.methods.run_loop import Attempt

    failed = Judgement(verdict=Verdict.wrong_answer, feedback="wrong")
    teacher, student = [[-1.0, -2.0], [-0.5]], [[-1.5, -1.0], [-0.25]]
    from_lists = [Attempt("r", [5, 6], [0.0, 0.0], "stop", [1], failed), Attempt("s", [7], [0.0], "stop", [1], failed)]
    sdpo.note_teacher_gaps(from_lists, [1, 0], teacher[::-1], student[::-1])  # row r scores attempts[rows[r]]
    padded = lambda rows: torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True)  # noqa: E731
    from_tensors = [Attempt("r", [5, 6], [0.0, 0.0], "stop", [1], failed), Attempt("s", [7], [0.0], "stop", [1], failed)]
    sdpo.note_teacher_gaps(from_tensors, [0, 1], padded(teacher), padded(student))
    assert [a.teacher_gaps for a in from_lists] == [a.teacher_gaps for a in from_tensors] == [[0.5, -1.0], [-0.25]]
