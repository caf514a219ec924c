"""SDPO at test time: every failed attempt's feedback becomes a dense learning signal.

Each step:
  1. sample n attempts from the current student (seeded per step),
  2. judge them in parallel; a passing one is discovery (solution.py, adapter_at_discovery/),
  3. teacher contexts: question + optional peer solution + this attempt's feedback,
  4. a `LearnRequest`: the engine's sampler sleeps (on a GPU its memory goes to the trainer), then `learn_from_batch`
     (ttsd.sdpo.learn): student log-probs with gradient under the plain prompt, teacher log-probs
     (EMA, frozen or trust-region, ttsd.sdpo.teacher) of the same tokens under the teacher context,
     the SDPO loss, backward per micro-batch, AdamW with gradient clipping, the teacher's update,
  5. the trainer gives its cached memory back, the sampler wakes and takes the new adapter
     (`Sampler.sync_adapter`: in memory for hf, an adapter update for vLLM).

The budget's last batch skips steps 3-5: no attempt is left to sample from the new weights, so
that update would be wasted compute (one of the four updates of a budget-64, batch-16 run).
Its StepRecord says so (`extra["learning_skipped"]`), and RUN_DIR/adapter/ is then the adapter
that sampled the last batch. Resume stays exact: the skip depends only on the attempts used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ttsd.methods.requests import LearnRequest, Step
from ttsd.methods.run_loop import Attempt, Method, StepOutcome
from ttsd.runs import AttemptRecord, StepRecord
from ttsd.sdpo import copying, diagnostics

if TYPE_CHECKING:
    from ttsd.sdpo.learn import LearningBatch

log = logging.getLogger(__name__)


class Sdpo(Method):
    """One sdpo run: its own adapter on the engine's base model (`Policy.add_student`), teacher,
    optimizer and torch random stream; it learns through `LearnRequest`s (one run at a time)."""

    copy_alarm_given = False  # the copy alarm (ttsd.sdpo.copying) rings once per run

    def setup(self) -> None:
        import torch

        from ttsd.sdpo.learn import LearnSettings
        from ttsd.sdpo.teacher import make_teacher

        config = self.config
        engine = self.attach_engine()
        self.prepare()
        engine.require_context(self.max_model_len)
        self.policy = engine.new_student(seed=config.seed)
        self.teacher = make_teacher(config.teacher, self.policy, config.ema_rate, config.trust_region_alpha)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.learn_settings = LearnSettings.from_config(config)
        # This run's own random stream (what dropout would draw from), kept apart from other runs'.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.torch_rng = torch.get_rng_state()
        self.copy_gaps: list = []  # each completed step's CopyGap, for the run's copy alarm

    def adapter(self) -> str | None:
        return self.policy.adapter

    def close(self) -> None:
        policy = getattr(self, "policy", None)
        if policy is not None and self.engine is not None:
            self.engine.drop_student(policy)
            self.policy = None
        super().close()

    # ----- resume ----------------------------------------------------------------------------
    def save_state(self, step: int) -> None:
        import torch

        state_dir = self.run.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "adapter": {k: v.cpu() for k, v in self.policy.adapter_state().items()},
            "optimizer": self.optimizer.state_dict(),
            "teacher": self.teacher.state_dict(),
            "torch_rng": self.torch_rng,
        }
        # One file per step: a crash between this file and the step's record resumes from the
        # previous step's file, which matches the result files.
        tmp = state_dir / f"trainer-{step}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(state_dir / f"trainer-{step}.pt")
        (state_dir / f"trainer-{step - 2}.pt").unlink(missing_ok=True)
        self.policy.save_adapter(self.run.adapter_dir)

    def restore(self, attempts: list[AttemptRecord], steps: list[StepRecord]) -> None:
        import torch

        self.copy_gaps = [s.copy_gap for s in steps]
        if not steps:
            return
        path = self.run.state_dir / f"trainer-{steps[-1].step}.pt"
        if not path.exists():
            raise RuntimeError(f"{path} is missing: the run cannot be resumed exactly")
        state = torch.load(path, weights_only=False)
        if state["step"] != steps[-1].step:
            raise RuntimeError(f"{path} is from step {state['step']}, steps.jsonl ends at step {steps[-1].step}")
        self.policy.load_adapter_state({k: v.to(self.policy.device) for k, v in state["adapter"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        if state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.torch_rng = state["torch_rng"]
        self.engine.adapter_updated(self.policy)

    def on_discovery(self) -> None:
        self.policy.save_adapter(self.run.discovery_adapter_dir)

    # ----- the step --------------------------------------------------------------------------
    def learning_batch(self, attempts: list[Attempt]) -> tuple[list[int], LearningBatch] | None:
        """The attempts with a teacher context (feedback or a peer's solution) and tokens — their
        indices and the batch they make — or None if there are none."""
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.sdpo.learn import LearningBatch
        from ttsd.sdpo.prompts import teacher_contexts

        config = self.config
        messages = teacher_contexts(
            self.problem, [a.response for a in attempts], [a.judgement for a in attempts], config.templates,
            use_feedback=config.use_feedback, use_peer_solutions=config.use_peer_solution,
            skip_unrun=config.feedback_unrun == "skip",
        )
        chosen = [i for i, m in enumerate(messages) if m is not None and attempts[i].token_ids]
        if not chosen:
            return None
        return chosen, LearningBatch(
            student_prompts=[self.prompt_ids] * len(chosen),
            teacher_contexts=[chat_prompt_ids(self.tokenizer, messages[i]) for i in chosen],
            responses=[attempts[i].token_ids for i in chosen],
            sampler_logprobs=[attempts[i].logprobs for i in chosen],
        )

    def run_step(self, step: int, num_attempts: int, last_batch: bool = False) -> Step[StepOutcome]:
        from ttsd.sdpo.teacher import EmaTeacher

        attempts, time_sample, time_judge = yield from self.sample_and_judge(self.prompt_ids, step, num_attempts)
        record = StepRecord(step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge)
        record.discovery_likelihood = self.discovery_likelihood(attempts)  # diagnostics: before any update on this batch
        if any(a.judgement.passed for a in attempts) and not self.config.continue_after_discovery:
            return StepOutcome(attempts, record)
        if last_batch:  # no attempt left to sample from the updated weights
            record.extra = {"learning_skipped": "no attempts left in the budget"}
            return StepOutcome(attempts, record)
        chosen = self.learning_batch(attempts)
        if chosen is None:
            return StepOutcome(attempts, record)
        rows, batch = chosen

        # The engine sleeps around it (on a GPU its memory goes to the trainer) and then serves the new adapter.
        answer = yield LearnRequest(lambda: self.learn(batch), adapter=self.policy.adapter)
        result = answer.result
        record.time_sync_s = answer.time_sync_s  # memory release, wake and adapter update
        self.note_teacher_gaps(attempts, rows, result.teacher_logprobs, result.student_logprobs)  # diagnostics
        record.time_score_s, record.time_train_s = result.time_score_s, result.time_train_s
        record.loss, record.mean_reverse_kl, record.grad_norm = result.loss, result.mean_reverse_kl, result.grad_norm
        record.stale_weights_gap = result.stale_weights_gap
        record.scored_tokens, record.trained_tokens = result.scored_tokens, result.trained_tokens
        record.extra = {"attempts_with_signal": len(rows), "tokens": result.num_tokens}
        if isinstance(self.teacher, EmaTeacher):  # 0 would mean the teacher is just the student again
            record.extra["ema_weight_distance"] = self.teacher.max_abs_difference()
        return StepOutcome(attempts, record)

    def learn(self, batch: LearningBatch) -> Any:
        """One learning step on this run's adapter, drawing from this run's random stream."""
        import torch

        from ttsd.sdpo.learn import learn_from_batch

        self.policy.activate()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_rng)
            result = learn_from_batch(self.policy, self.teacher, self.optimizer, batch, self.learn_settings)
            self.torch_rng = torch.get_rng_state()
        return result

    # ----- learning diagnostics (equations: ttsd.sdpo.diagnostics) ----------------------------
    def record_attempts(self, records: list[AttemptRecord], attempts: list[Attempt]) -> None:
        """The records with each attempt's mean teacher gap and copy diagnostic, then token_gaps.jsonl
        lines (what `ttsd show` colours by) for the attempts a self-teacher scored."""
        texts: list[list[str] | None] = [None] * len(attempts)
        if any(a.teacher_gaps for a in attempts):
            def decode(ids: Any) -> str:
                return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

            for i, attempt in enumerate(attempts):
                if attempt.teacher_gaps:
                    texts[i] = diagnostics.token_texts(decode, attempt.token_ids)
                    attempt.quoted = copying.quoted_tokens(texts[i], self.feedback_seen(attempt))
        for record, attempt in zip(records, attempts):
            record.teacher_logprob_gap = diagnostics.attempt_gap(attempt.teacher_gaps)
            if attempt.teacher_gaps and attempt.quoted is not None:
                record.copy_gap = copying.split_gaps(attempt.teacher_gaps, attempt.quoted)
        super().record_attempts(records, attempts)
        self.run.append_token_gaps(diagnostics.token_gap_records(
            [r.k for r in records], records[0].step, texts, [a.teacher_gaps for a in attempts], [a.quoted for a in attempts],
        ))

    def feedback_seen(self, attempt: Attempt) -> str:
        """The feedback text in this attempt's teacher context ("" when the context shows none)."""
        return attempt.judgement.feedback if self.config.use_feedback else ""

    def annotate_step(self, record: StepRecord, attempts: list[Attempt]) -> None:
        diagnostics.annotate_step(record, [a.teacher_gaps for a in attempts], self.config.top_p)
        record.copy_gap = copying.pool([
            copying.split_gaps(a.teacher_gaps, a.quoted) for a in attempts if a.teacher_gaps and a.quoted is not None
        ])
        self.copy_gaps.append(record.copy_gap)
        alarm = copying.copy_alarm(copying.pool(self.copy_gaps))
        if alarm is not None and not self.copy_alarm_given:
            self.copy_alarm_given = True
            log.warning("step %d: %s", record.step, alarm)

    def summary_diagnostics(self, steps: list[StepRecord]) -> dict[str, Any]:
        return {
            "teacher_logprob_gap": diagnostics.run_gap([s.teacher_logprob_gap for s in steps]),
            "discovery_likelihood": next((s.discovery_likelihood for s in steps if s.discovery_likelihood), None),
            "copy_gap": copying.pool([s.copy_gap for s in steps]),
        }

    def note_teacher_gaps(self, attempts: list[Attempt], rows: list[int], teacher_logprobs: Any, student_logprobs: Any) -> None:
        """Keep g_t = log π_T(y_t) − log π_S(y_t) on each failed attempt of `rows`: row r of
        `teacher_logprobs` and `student_logprobs` (padded (B, L) tensors, or lists of per-token
        lists) scores attempts[rows[r]], before any update on it. The loop aggregates and saves them."""
        def floats(values: Any, length: int) -> list[float]:
            values = values[:length]
            return values.detach().float().tolist() if hasattr(values, "detach") else [float(v) for v in values]

        for row, index in enumerate(rows):
            attempt = attempts[index]
            if attempt.judgement.passed or attempt.teacher_gaps is not None:
                continue
            length = len(attempt.token_ids)
            attempt.teacher_gaps = diagnostics.token_gaps(floats(teacher_logprobs[row], length), floats(student_logprobs[row], length))

    def updates_made(self) -> int:
        """Optimizer updates so far (AdamW counts them per parameter; restored on --resume)."""
        return max((int(state["step"]) for state in self.optimizer.state.values() if "step" in state), default=0)

    def discovery_likelihood(self, attempts: list[Attempt]) -> Any:
        """ℓ(θ_0) and ℓ(θ_d) of the batch's first passing attempt under the student prompt, or None.

        Called before the batch trains anything, so the current adapter is θ_d, the weights that
        sampled it; the adapter disabled is θ_0 (LoRA's B starts at 0)."""
        from ttsd.engine.scorer import score_tokens

        passing = next((a for a in attempts if a.judgement.passed and a.token_ids), None)
        if passing is None:
            return None
        self.policy.activate()
        options = dict(temperature=self.config.temperature, top_k=0, grad=False)
        length = len(passing.token_ids)
        found = score_tokens(self.policy.model, [self.prompt_ids], [passing.token_ids], **options)
        with self.policy.base_weights() as model:
            initial = score_tokens(model, [self.prompt_ids], [passing.token_ids], **options)
        return diagnostics.discovery_likelihood(
            initial.response_logprobs[0, :length].tolist(), found.response_logprobs[0, :length].tolist(), self.updates_made()
        )
