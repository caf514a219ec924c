"""SDPO at test time: every failed attempt's feedback becomes a dense learning signal.

Each step:
  1. sample n attempts from the current student (seeded per step),
  2. judge them in parallel; a passing one is discovery (solution.py, adapter_at_discovery/),
  3. teacher contexts: question + optional peer solution + this attempt's feedback,
  4. student log-probs (with gradient) under the plain prompt; teacher log-probs (EMA adapter, the
     frozen initial model, or the trust-region lerp of the two; no gradient) of the same tokens under
     the teacher context,
  5. SDPO loss (ttsd.sdpo.loss), AdamW with gradient clipping, EMA teacher update,
  6. the new adapter goes to the sampler (in memory for hf; a saved adapter for vLLM).
"""

from __future__ import annotations

import random
import time
from typing import Any

from ttsd.methods.base import Method, StepOutcome
from ttsd.runs import AttemptRecord, StepRecord

TEACHER_ADAPTER = "teacher"


class Sdpo(Method):
    def setup(self) -> None:
        import torch

        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.engine.policy import LoraSettings, Policy
        from ttsd.prompts import student_messages

        config = self.config
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.make_judge()
        lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_target_modules)
        self.policy = Policy(
            self.model_path, lora=lora, device=config.device, dtype=config.dtype,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self._tokenizer = self.policy.tokenizer
        self.teacher = None
        if config.teacher == "ema" and config.ema_rate > 0:
            from ttsd.sdpo.teacher import EmaTeacher

            self.teacher = EmaTeacher(self.policy.model, rate=config.ema_rate)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.sampler = self.make_sampler(policy=self.policy)
        self.prompt_ids = chat_prompt_ids(self.tokenizer, student_messages(self.problem, config.templates))

    # ----- resume ----------------------------------------------------------------------------
    def save_state(self, step: int) -> None:
        import torch

        state_dir = self.run.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "adapter": {k: v.cpu() for k, v in self.policy.adapter_state().items()},
            "optimizer": self.optimizer.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "torch_rng": torch.get_rng_state(),
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
        if self.teacher is not None and state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        torch.set_rng_state(state["torch_rng"])
        self.sync_sampler()

    def on_discovery(self) -> None:
        self.policy.save_adapter(self.run.discovery_adapter_dir)

    # ----- the step --------------------------------------------------------------------------
    def sync_sampler(self) -> None:
        if self.sampler.backend == "vllm":  # hf shares the trainer's model: nothing to send
            self.sampler.load_adapter_from_model(self.policy.model)

    def teacher_scores(self, contexts: list[list[int]], responses: list[list[int]], given_ids: Any) -> Any:
        from ttsd.engine.scorer import score_tokens

        kwargs = dict(temperature=self.config.temperature, top_k=0, given_ids=given_ids, grad=False)
        if self.config.teacher == "trust-region":
            return score_tokens(self.policy.model, contexts, responses, trust_region_alpha=self.config.trust_region_alpha, **kwargs)
        if self.config.teacher == "frozen" or self.config.ema_rate == 0:
            with self.policy.using_adapter(None) as model:
                return score_tokens(model, contexts, responses, **kwargs)
        with self.teacher.swapped_in():
            return score_tokens(self.policy.model, contexts, responses, **kwargs)

    def run_step(self, step: int, num_attempts: int) -> StepOutcome:
        import torch

        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.engine.scorer import score_tokens
        from ttsd.sdpo.loss import importance_weights, sdpo_loss, token_level_loss
        from ttsd.sdpo.prompts import teacher_contexts

        config = self.config
        attempts, time_sample, time_judge = self.sample_and_judge(self.prompt_ids, step, num_attempts)
        record = StepRecord(step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge)
        record.discovery_likelihood = self.discovery_likelihood(attempts)  # diagnostics: before any update on this batch
        if any(a.judgement.passed for a in attempts) and not config.continue_after_discovery:
            return StepOutcome(attempts, record)

        messages = teacher_contexts(
            self.problem, [a.response for a in attempts], [a.judgement for a in attempts], config.templates,
            use_feedback=config.use_feedback, use_peer_solutions=config.use_peer_solution,
        )
        chosen = [i for i, m in enumerate(messages) if m is not None and attempts[i].token_ids]
        if not chosen:
            return StepOutcome(attempts, record)
        responses = [attempts[i].token_ids for i in chosen]
        contexts = [chat_prompt_ids(self.tokenizer, messages[i]) for i in chosen]
        student_prompts = [self.prompt_ids] * len(chosen)

        sampled_logprobs = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(attempts[i].logprobs, dtype=torch.float32) for i in chosen], batch_first=True
        ).to(self.policy.device)
        grad_norm, stats = 0.0, None
        for _ in range(config.optimizer_steps):
            t_score = time.monotonic()
            student = score_tokens(
                self.policy.model, student_prompts, responses, temperature=config.temperature,
                top_k=config.top_k, grad=True,
            )
            teacher = self.teacher_scores(contexts, responses, None if config.loss == "token" else student.topk_ids)
            record.time_score_s += time.monotonic() - t_score
            t_train = time.monotonic()
            if record.logprob_gap is None:
                gaps = [
                    (student.response_logprobs[row, : len(attempts[i].logprobs)].detach()
                     - torch.tensor(attempts[i].logprobs)).abs()
                    for row, i in enumerate(chosen)
                ]
                record.logprob_gap = float(torch.cat(gaps).mean()) if gaps else None
                self.note_teacher_gaps(attempts, chosen, teacher.response_logprobs, student.response_logprobs)  # diagnostics
            # Several steps on one batch: later steps are off-policy, so tokens are reweighted by
            # the (clipped, detached) ratio of current to sampling probabilities.
            weights = None
            if config.optimizer_steps > 1:
                weights = importance_weights(student.response_logprobs, sampled_logprobs, clip=config.importance_clip)
            if config.loss == "token":
                loss, stats = token_level_loss(
                    student.response_logprobs, teacher.response_logprobs, student.mask, weights
                )
            else:
                loss, stats = sdpo_loss(
                    student.topk_logprobs, teacher.given_logprobs, student.mask,
                    divergence=config.divergence, alpha=config.jsd_alpha, weights=weights,
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), config.grad_clip))
            self.optimizer.step()
            if self.teacher is not None:
                self.teacher.update()
            record.time_train_s += time.monotonic() - t_train
        t_sync = time.monotonic()
        self.sync_sampler()
        record.time_sync_s = time.monotonic() - t_sync
        record.loss, record.mean_kl, record.grad_norm = stats.loss, stats.mean_kl, grad_norm
        record.extra = {"attempts_with_signal": len(chosen), "tokens": stats.num_tokens}
        if self.teacher is not None:  # 0 would mean the teacher is just the student again
            record.extra["teacher_student_gap"] = self.teacher.max_abs_difference()
        return StepOutcome(attempts, record)

    # ----- learning diagnostics (equations: ttsd.sdpo.diagnostics) ----------------------------
    def note_teacher_gaps(self, attempts: list[Any], rows: list[int], teacher_logprobs: Any, student_logprobs: Any) -> None:
        """Keep g_t = log π_T(y_t) − log π_S(y_t) on each failed attempt of `rows`: row r of
        `teacher_logprobs` and `student_logprobs` (padded (B, L) tensors, or lists of per-token
        lists) scores attempts[rows[r]], before any update on it. The loop aggregates and saves them."""
        from ttsd.sdpo.diagnostics import token_gaps

        def floats(values: Any, length: int) -> list[float]:
            values = values[:length]
            return values.detach().float().tolist() if hasattr(values, "detach") else [float(v) for v in values]

        for row, index in enumerate(rows):
            attempt = attempts[index]
            if attempt.judgement.passed or attempt.teacher_gaps is not None:
                continue
            length = len(attempt.token_ids)
            attempt.teacher_gaps = token_gaps(floats(teacher_logprobs[row], length), floats(student_logprobs[row], length))

    def updates_made(self) -> int:
        """Optimizer updates so far (AdamW counts them per parameter; restored on --resume)."""
        return max((int(state["step"]) for state in self.optimizer.state.values() if "step" in state), default=0)

    def discovery_likelihood(self, attempts: list[Any]) -> Any:
        """ℓ(θ_0) and ℓ(θ_d) of the batch's first passing attempt under the student prompt, or None.

        Called before the batch trains anything, so the current adapter is θ_d, the weights that
        sampled it; the adapter disabled is θ_0 (LoRA's B starts at 0)."""
        from ttsd.engine.scorer import score_tokens
        from ttsd.sdpo.diagnostics import discovery_likelihood

        passing = next((a for a in attempts if a.judgement.passed and a.token_ids), None)
        if passing is None:
            return None
        options = dict(temperature=self.config.temperature, top_k=0, grad=False)
        length = len(passing.token_ids)
        found = score_tokens(self.policy.model, [self.prompt_ids], [passing.token_ids], **options)
        with self.policy.using_adapter(None) as model:
            initial = score_tokens(model, [self.prompt_ids], [passing.token_ids], **options)
        return discovery_likelihood(
            initial.response_logprobs[0, :length].tolist(), found.response_logprobs[0, :length].tolist(), self.updates_made()
        )
