"""Shared engine types: what a sampler returns and the protocol both backends implement."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel


class Sample(BaseModel):
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each sampled token under the sampler (after temperature)
    finish_reason: Literal["stop", "length"]


class Sampler(Protocol):
    backend: str  # "vllm" or "hf"

    def sample(
        self,
        prompts: list[list[int]],
        n: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 1024,
        seed: int | None = None,
    ) -> list[list[Sample]]:
        """For each prompt (token ids), n samples. Same seed + same weights => same samples."""
        ...

    def concurrent_sequences(self, sequence_tokens: int) -> int:
        """How many sequences of `sequence_tokens` tokens (prompt + answer) one call decodes at
        once: the largest call that never waits for room (the best-of-k pool's batch)."""
        ...

    def load_adapter(self, adapter_dir: Path | None) -> None:
        """Serve the PEFT LoRA adapter saved in adapter_dir from now on (None: base weights)."""
        ...

    def sync_adapter(self, model: Any) -> None:
        """A weight update: serve the trainer's PEFT model's current adapter from the next call on."""
        ...

    def sleep(self) -> None:
        """Free what the sampler holds on the accelerator while the trainer learns (may do nothing)."""
        ...

    def wake(self) -> None:
        """Take back what `sleep` freed; call after the trainer released its cached memory."""
        ...

    def close(self) -> None: ...
