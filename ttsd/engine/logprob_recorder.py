"""The sampling distribution of the Hugging Face decode paths, and the log-prob each token is recorded with.

Both `generate` (`ttsd.engine.hf_sampler`) and the static-cache loop (`ttsd.engine.static_decode`)
hand the model's logits z_t to one `LogprobRecorder`, which applies the temperature and the nucleus
(top-p) filter and records, for the token then drawn, log_softmax(z_t / T)[y_t] over the full
vocabulary — before the top-p truncation (the convention the samplers and the scorer share; see
`ttsd.engine.hf_sampler`).
"""

from __future__ import annotations

from typing import Any


def top_p_mask(scaled: Any, top_p: float) -> Any:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches top_p."""
    import torch

    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))


class LogprobRecorder:
    """Logits processor (the only one): applies temperature and top-p, records the log-prob of each
    sampled token under log_softmax(z / T).

    At step t it sees the token sampled at step t-1 as input_ids[:, -1], so it keeps only one (B, V)
    log-prob matrix alive, never the full (steps, B, V) history.

    With `generators` (one seeded `torch.Generator` per row) it also draws each row's token from
    its own stream and hands the caller a distribution with all its mass on that token, so the
    caller's multinomial (generate's, or static_decode's) picks it: a row's samples then depend on
    its seed alone, not on which other rows share the batch (`ttsd.methods.scheduler` batches runs).
    """

    def __init__(self, temperature: float, top_p: float, generators: list[Any] | None = None) -> None:
        self.temperature = temperature if temperature > 0 else 1.0
        self.top_p = top_p
        self.generators = generators if temperature > 0 else None
        self.pending = None
        self.collected: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.pending is not None:
            self.collected.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        scaled = scores.float() / self.temperature
        self.pending = torch.log_softmax(scaled, dim=-1)
        if self.top_p < 1.0:
            scaled = top_p_mask(scaled, self.top_p)
        if self.generators is None:
            return scaled
        return self._per_row_choice(scaled)

    def _per_row_choice(self, scaled: Any) -> Any:
        """0 at the token each row draws from softmax(scaled) with its own generator, -inf elsewhere."""
        import torch

        if scaled.shape[0] != len(self.generators):
            raise ValueError(f"{scaled.shape[0]} rows but {len(self.generators)} generators")
        probs = torch.softmax(scaled, dim=-1)
        chosen = torch.stack([
            torch.multinomial(probs[row], 1, generator=generator) for row, generator in enumerate(self.generators)
        ])
        return torch.full_like(scaled, float("-inf")).scatter_(1, chosen, 0.0)

    def finish(self, last_tokens: Any) -> Any:
        import torch

        if self.pending is not None:
            self.collected.append(self.pending.gather(1, last_tokens[:, None]).squeeze(1))
            self.pending = None
        return torch.stack(self.collected, dim=1)
