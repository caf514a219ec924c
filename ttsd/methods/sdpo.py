"""SDPO at test time: every failed attempt's feedback becomes a dense learning signal.

Each step:
  1. sample n attempts from the current student (seeded per step),
  2. judge them in parallel; a passing one is discovery (solution.py, adapter_at_discovery/),
  3. teacher contexts: question + optional peer solution + this attempt's feedback,
  4. the sampler sleeps (on a GPU its memory goes to the trainer), then `learn_from_batch`
     (ttsd.sdpo.learn): student log-probs with gradient under the plain prompt, teacher log-probs
     (EMA, frozen or trust-region, ttsd.sdpo.teacher) of the same tokens under the teacher context,
     the SDPO loss, backward per micro-batch, AdamW with gradient clipping, the teacher's update,
  5. the trainer gives its cached memory back, the sampler wakes and takes the new adapter
     (`Sampler.sync_adapter`: in memory for hf, an adapter update for vLLM).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from ttsd.methods.base import Method, StepOutcome
from ttsd.runs import AttemptRecord, StepRecord

if TYPE_CHECKING:
    from ttsd.sdpo.learn import LearningBatch


class Sdpo(Method):
    def setup(self) -> None:
        import torch

        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.engine.policy import Policy
        from ttsd.sdpo.learn import LearnSettings
        from ttsd.sdpo.prompts import student_messages
        from ttsd.sdpo.teacher import make_teacher

        config = self.config
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.make_judge()
        self.policy = Policy(
            self.model_path, lora=config.lora_settings(), device=config.device, dtype=config.dtype,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self._tokenizer = self.policy.tokenizer
        self.teacher = make_teacher(config.teacher, self.policy, config.ema_rate, config.trust_region_alpha)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.learn_settings = LearnSettings.from_config(config)
        self.prompt_ids = chat_prompt_ids(self.tokenizer, student_messages(self.problem, config.templates))
        self.sampler = self.make_sampler(policy=self.policy)

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
        if state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.sync_adapter(self.policy.model)

    def on_discovery(self) -> None:
        self.policy.save_adapter(self.run.discovery_adapter_dir)

    # ----- the step --------------------------------------------------------------------------
    def learning_batch(self, attempts: list) -> tuple[list[int], LearningBatch] | None:
        """The attempts with a teacher context (feedback or a peer's solution) and tokens — their
        indices and the batch they make — or None if there are none."""
        from ttsd.engine.chat import chat_prompt_ids
        from ttsd.sdpo.learn import LearningBatch
        from ttsd.sdpo.prompts import teacher_contexts

        config = self.config
        messages = teacher_contexts(
            self.problem, [a.response for a in attempts], [a.judgement for a in attempts], config.templates,
            use_feedback=config.use_feedback, use_peer_solutions=config.use_peer_solution,
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

    def run_step(self, step: int, num_attempts: int) -> StepOutcome:
        from ttsd.sdpo.learn import learn_from_batch
        from ttsd.sdpo.teacher import EmaTeacher

        attempts, time_sample, time_judge = self.sample_and_judge(self.prompt_ids, step, num_attempts)
        record = StepRecord(step=step, attempts=0, time_sample_s=time_sample, time_judge_s=time_judge)
        if any(a.judgement.passed for a in attempts) and not self.config.continue_after_discovery:
            return StepOutcome(attempts, record)
        chosen = self.learning_batch(attempts)
        if chosen is None:
            return StepOutcome(attempts, record)
        rows, batch = chosen

        self.sampler.sleep()  # on a GPU the engine's memory goes to the trainer for this step
        try:
            result = learn_from_batch(self.policy, self.teacher, self.optimizer, batch, self.learn_settings)
        finally:
            synced = time.monotonic()
            self.policy.release_cached_memory()  # before wake: the engine takes its memory back
            self.sampler.wake()
        self.sampler.sync_adapter(self.policy.model)
        record.time_sync_s = time.monotonic() - synced
        record.time_score_s, record.time_train_s = result.time_score_s, result.time_train_s
        record.loss, record.mean_kl, record.grad_norm = result.loss, result.mean_kl, result.grad_norm
        record.logprob_gap = result.logprob_gap
        record.extra = {"attempts_with_signal": len(rows), "tokens": result.num_tokens}
        if isinstance(self.teacher, EmaTeacher):  # 0 would mean the teacher is just the student again
            record.extra["teacher_student_gap"] = self.teacher.max_abs_difference()
        return StepOutcome(attempts, record)
