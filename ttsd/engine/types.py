"""Shared engine types: how to sample, what a sampler returns, and the protocol both backends implement."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field


class SamplingSettings(BaseModel):
    """How every sample of one `Sampler.sample` call is drawn; validated here, once, for both backends.

    Sampling is from softmax(z / T) restricted to the nucleus of mass `top_p`, for at most
    `max_tokens` tokens; temperature 0 is greedy. The i-th prompt's samples use seeds derived from
    `seed` (each backend documents how); the same seed and weights give the same samples, and None
    draws from the process's random state. A sample's log-probs are always returned (see `Sample`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(1.0, ge=0, allow_inf_nan=False, description="softmax temperature T; 0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass: sample among the most likely tokens that reach it")
    max_tokens: int = Field(1024, ge=1, description="most new tokens per sample (finish_reason 'length' there)")
    seed: int | None = Field(None, description="seed of the call's random streams; None: unseeded")


def check_sample_request(prompts: Sequence[Sequence[int]], n: int) -> None:
    """Raise ValueError unless `n` is a positive count and every prompt has a token."""
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be at least 1, got {n}")
    empty = [index for index, prompt in enumerate(prompts) if len(prompt) == 0]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty: the first sampled token needs a context")


class Sample(BaseModel):
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each sampled token under the sampler (after temperature)
    finish_reason: Literal["stop", "length"]


class Sampler(Protocol):
    backend: str  # "vllm" or "hf"

    def sample(
        self, prompts: list[list[int]], n: int, settings: SamplingSettings = SamplingSettings(),
        seeds: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """For each prompt (token ids), n samples drawn as `settings` say. Same seed + same weights =>
        same samples. Sample j of prompt i draws with seed `settings.seed + i * n + j`, or
        `seeds[i] + j` when `seeds` is given (the scheduler batching runs): a sample depends on its
        prompt, seed and weights only, not on the rest of the call."""
        ...

    def concurrent_sequences(self, sequence_tokens: int) -> int:
        """How many sequences of `sequence_tokens` tokens (prompt + answer) one call decodes at
        once: the largest call that never waits for room (the best-of-k pool's batch)."""
        ...

    def load_adapter(self, adapter_dir: Path | None) -> None:
        """Serve the PEFT LoRA adapter saved in adapter_dir from now on (None: base weights)."""
        ...

    def sync_adapter(self, model: Any, adapter_name: str = "default") -> None:
        """A weight update: serve the trainer's PEFT model's adapter `adapter_name` from the next call on."""
        ...

    def sleep(self) -> None:
        """Free what the sampler holds on the accelerator while the trainer learns (may do nothing)."""
        ...

    def wake(self) -> None:
        """Take back what `sleep` freed; call after the trainer released its cached memory."""
        ...

    def close(self) -> None: ...
