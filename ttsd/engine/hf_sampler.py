"""The Hugging Face sampler: batched `generate` (left padding) with an optional PEFT LoRA adapter.

Log-prob convention (shared with the scorer and the vLLM backend): the log-prob of a sampled token is
taken under the temperature-scaled distribution over the full vocabulary,

    log p(y_t) = log_softmax(z_t / T)[y_t]        (z_t: the model's raw logits; T = 1 when T = 0)

i.e. *before* top-p truncation (with top_p = 1, the default, this is exactly the distribution sampled
from; it equals vLLM's `logprobs_mode="processed_logprobs"` when top_p = 1).

Token ids of a sample that stopped include the stop (EOS) token, and its log-prob: the teacher must
score the decision to stop too. The text is decoded without special tokens.

Two ways to decode (`decode=`):
- "generate": transformers' `generate` with a dynamic cache (any device, any model).
- "cuda-graphs": `ttsd.engine.static_decode`: a static KV cache and one CUDA graph replay per decode
  step, with the LoRA adapter active (CUDA only; why and how fast: that module and
  benchmarks/bench_hf_sampler.py). "static" is the same loop without graphs, on any device (what
  the CPU tests compare with "generate").
"auto" is "cuda-graphs" on a GPU and "generate" elsewhere. When the fast path cannot serve a model
or a graph cannot be captured, the sampler logs why once and uses `generate` from then on.

Two ways to hold weights:
- own model: `HFSampler(model_path)`; `load_adapter(dir)` loads a PEFT adapter from disk.
- shared with the trainer: `HFSampler(policy=policy)` samples from the policy's in-memory model and its
  live "default" adapter: weight sync is free (nothing is copied). `load_adapter(None)` switches to the
  base weights, `load_adapter(dir)` serves an adapter loaded from disk into a separate slot (the
  trainer's adapter is never overwritten), `use_policy_adapter(name)` returns to a live adapter.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from ttsd.engine.lora import STUDENT, write_adapter
from ttsd.engine.logprob_recorder import LogprobRecorder
from ttsd.engine.types import Sample, SamplingSettings, check_sample_request

Decode = Literal["auto", "generate", "static", "cuda-graphs"]
logger = logging.getLogger(__name__)


@contextmanager
def _keep_requires_grad(model: Any) -> Iterator[None]:
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            if name in flags:
                p.requires_grad_(flags[name])


class HFSampler:
    """Implements `ttsd.engine.types.Sampler` with transformers' `generate`."""

    backend = "hf"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        policy: Any = None,
        adapter: str | None = "default",
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 64,
        decode: Decode = "auto",
    ) -> None:
        from ttsd.engine.hardware import pick_device, pick_dtype

        if decode not in ("auto", "generate", "static", "cuda-graphs"):
            raise ValueError(f"decode must be auto, generate, static or cuda-graphs, not {decode!r}")
        self.max_batch_size = max_batch_size
        self.decode = decode
        self.fallback_reason: str | None = None  # why the fast path was given up, once it was
        self.last_decode: dict[str, Any] = {}  # the path the last batch took, and its timings
        self._loaded_count = 0
        self._loaded_name: str | None = None
        if policy is not None:
            self.policy = policy
            self.tokenizer = policy.tokenizer
            self._peft = policy.model
            self._base = None
            self._active: str | None = adapter
            self.device = policy.device
        else:
            if model_path is None:
                raise ValueError("HFSampler needs a model_path or a policy")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.policy = None
            self.device = pick_device(device)
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self._base = AutoModelForCausalLM.from_pretrained(model_path, dtype=pick_dtype(dtype, self.device))
            self._base.to(self.device).eval().requires_grad_(False)
            self._peft = None
            self._active = None
        self.eos_ids = self._stop_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]

    def _stop_ids(self) -> list[int]:
        model = self._peft if self._peft is not None else self._base
        configured = model.generation_config.eos_token_id
        ids = configured if isinstance(configured, list) else ([configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids = [*ids, self.tokenizer.eos_token_id]
        if not ids:
            raise ValueError("the model defines no EOS token; cannot tell when a sample stops")
        return sorted(set(ids))

    # ----- weights ----------------------------------------------------------------------------
    def load_adapter(self, adapter_dir: Path | None) -> None:
        """Serve the PEFT adapter in adapter_dir from now on (None: base weights)."""
        if adapter_dir is None:
            self._active = None
            return
        from peft import PeftModel

        name = f"sampler_{self._loaded_count}"
        self._loaded_count += 1
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, str(adapter_dir), adapter_name=name)
            self._peft.eval().requires_grad_(False)
        else:
            with _keep_requires_grad(self._peft):
                self._peft.load_adapter(str(adapter_dir), adapter_name=name)
                for param_name, parameter in self._peft.named_parameters():
                    if f".{name}." in param_name:
                        parameter.requires_grad_(False)
        previous = self._loaded_name
        self._loaded_name = name
        self._active = name
        if previous is not None:
            with _keep_requires_grad(self._peft):
                if self._peft.active_adapter == previous:
                    self._peft.set_adapter(name)
                self._peft.delete_adapter(previous)

    def sync_adapter(self, model: Any, adapter_name: str = STUDENT) -> None:
        """Serve `model`'s adapter `adapter_name`: free when it is the shared policy's model, else a
        copy via disk."""
        if self.policy is not None and model is self.policy.model:
            self.use_policy_adapter(adapter_name)
            return
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            self.load_adapter(write_adapter(model, Path(directory) / "adapter", adapter_name))

    def sleep(self) -> None:
        """Free what the fast path keeps between calls (KV caches, CUDA graphs: `static_decode`),
        so the learning step has that memory; the weights stay (a shared model is the trainer's own)."""
        self._release_decode_sessions()

    def wake(self) -> None:
        """Nothing to reload: the next call makes its cache (and graphs) again."""

    def _release_decode_sessions(self) -> None:
        from ttsd.engine.static_decode import release_decode_sessions

        for model in (self._peft, self._base):
            if model is not None:
                release_decode_sessions(model)

    def use_policy_adapter(self, name: str = "default") -> None:
        """Shared mode: sample from the policy's live adapter `name` (no copy)."""
        if self.policy is None:
            raise ValueError("this sampler does not share a policy's model")
        self._active = name

    @contextmanager
    def _serving(self, mixed: bool = False) -> Iterator[Any]:
        """The model to sample from, computing with the served adapter; `mixed`: with every adapter
        on (each row names its own, `sample(adapters=)`)."""
        model = self._peft if self._peft is not None else self._base
        was_training = model.training
        model.eval()  # eval: no gradient checkpointing, so the KV cache is used (and PEFT allows mixed batches)
        try:
            with _keep_requires_grad(model):
                if self._peft is None or mixed:
                    yield model
                elif self._active is None:
                    with self._peft.disable_adapter():
                        yield model
                else:
                    previous = self._peft.active_adapter
                    self._peft.set_adapter(self._active)
                    try:
                        yield model
                    finally:
                        self._peft.set_adapter(previous)
        finally:
            model.train(was_training)

    # ----- sampling ---------------------------------------------------------------------------
    def concurrent_sequences(self, sequence_tokens: int) -> int:
        """Rows decoded at once: `max_batch_size` (a call of more runs them in turn)."""
        return self.max_batch_size

    def can_mix_adapters(self) -> bool:
        """Can one call give each prompt its own adapter of the shared policy (`sample(adapters=)`)?
        On the `generate` path, by PEFT's mixed-adapter batches; the static-cache fast path
        (CUDA) computes one dense adapter per call, so there the caller groups by adapter."""
        return self.policy is not None and self._fast_path() is None

    def sample(
        self, prompts: list[list[int]], n: int, settings: SamplingSettings = SamplingSettings(),
        seeds: Sequence[int] | None = None, adapters: Sequence[str | None] | None = None,
    ) -> list[list[Sample]]:
        """For each prompt, n samples (rows batched up to max_batch_size). Same seed => same samples.

        Sample j of prompt i draws from its own generator seeded `settings.seed + i * n + j`
        (vLLM's seeds), or `seeds[i] + j` when `seeds` (one base seed per prompt: what the
        scheduler sends when it batches requests of several runs) is given. A sample therefore
        depends on its prompt and seed only, not on the other rows of its batch
        (tests/test_hf_sampler.py). No seed at all: one stream from torch's global generator.

        `adapters` (only where `can_mix_adapters()`): prompt i's rows compute with the shared
        policy's adapter `adapters[i]` (None: the base weights), whatever adapter is served."""
        import torch

        check_sample_request(prompts, n)
        if adapters is not None:
            if len(adapters) != len(prompts):
                raise ValueError(f"{len(adapters)} adapters for {len(prompts)} prompts")
            if not self.can_mix_adapters():
                raise ValueError("this sampler serves one adapter per call (no shared policy, or the fast decode path)")
        rows = [index for index in range(len(prompts)) for _ in range(n)]
        row_seeds = _row_seeds(settings.seed if seeds is None else list(seeds), len(prompts), n)
        results: list[list[Sample]] = [[] for _ in prompts]
        devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._serving(mixed=adapters is not None) as model:
            for start in range(0, len(rows), self.max_batch_size):
                batch = rows[start : start + self.max_batch_size]
                batch_seeds = None if row_seeds is None else row_seeds[start : start + self.max_batch_size]
                names = None if adapters is None else [adapters[i] or BASE_ROWS for i in batch]
                for index, sample in zip(
                    batch, self._generate(model, [prompts[i] for i in batch], settings, batch_seeds, names)
                ):
                    results[index].append(sample)
        return results

    def _generate(
        self, model: Any, prompts: list[list[int]], settings: SamplingSettings, seeds: list[int] | None = None,
        adapter_names: list[str] | None = None,
    ) -> list[Sample]:
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        max_tokens = settings.max_tokens
        generators = None if seeds is None else [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        options = dict(
            temperature=settings.temperature, top_p=settings.top_p, max_tokens=max_tokens, eos_ids=self.eos_ids,
            pad_id=self.pad_id, generators=generators,
        )
        if adapter_names is not None:  # PEFT's mixed batch: generate only (see `can_mix_adapters`)
            new_tokens, logprobs = generate_with_logprobs(
                model, input_ids.to(self.device), attention_mask.to(self.device), adapter_names=adapter_names, **options
            )
            self.last_decode = {"path": "generate", "mixed_adapters": len(set(adapter_names))}
        else:
            new_tokens, logprobs = self._decode_batch(model, input_ids.to(self.device), attention_mask.to(self.device), options)
        stops = set(self.eos_ids)
        samples = []
        for row in range(len(prompts)):
            ids = new_tokens[row].tolist()
            end = next((i + 1 for i, token in enumerate(ids) if token in stops), None)
            finish = "stop" if end is not None else "length"
            ids = ids[:end] if end is not None else ids[:max_tokens]
            samples.append(
                Sample(
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    token_ids=ids,
                    logprobs=logprobs[row, : len(ids)].tolist(),
                    finish_reason=finish,
                )
            )
        return samples

    def _fast_path(self) -> str | None:
        """The static-cache loop this batch should try ("static" or "cuda-graphs"), or None for generate."""
        if self.fallback_reason is not None or self.decode == "generate":
            return None
        on_gpu = self.device.startswith("cuda")
        if self.decode == "auto":
            return "cuda-graphs" if on_gpu else None
        if self.decode == "cuda-graphs" and not on_gpu:
            self._give_up_fast_path(f"CUDA graphs need a CUDA device (this sampler runs on {self.device})")
            return None
        return self.decode

    def _give_up_fast_path(self, reason: str) -> None:
        self.fallback_reason = reason
        logger.warning("ttsd: the fast HF decode path is off (%s); sampling with transformers generate", reason)

    def _decode_batch(self, model: Any, input_ids: Any, attention_mask: Any, options: dict[str, Any]) -> tuple[Any, Any]:
        """(new tokens, log-probs) of one left-padded batch, by the fast path when it can serve it."""
        import torch

        from ttsd.engine.static_decode import FastPathUnavailable, static_decode

        fast = self._fast_path()
        if fast is not None:
            cuda = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
            # A failed attempt must not change the random stream the fallback then draws from.
            rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda])
            try:
                tokens, logprobs, stats = static_decode(model, input_ids, attention_mask, cuda_graphs=fast == "cuda-graphs", **options)
                self.last_decode = {"path": fast, **stats.__dict__}
                return tokens, logprobs
            except FastPathUnavailable as reason:
                self._give_up_fast_path(str(reason))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
                self._give_up_fast_path(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            torch.set_rng_state(rng[0])
            for device, state in zip(cuda, rng[1]):
                torch.cuda.set_rng_state(state, device)
        tokens, logprobs = generate_with_logprobs(model, input_ids, attention_mask, **options)
        self.last_decode = {"path": "generate"}
        return tokens, logprobs

    def close(self) -> None:
        self._release_decode_sessions()
        self._peft = None
        self._base = None
        self.policy = None


BASE_ROWS = "__base__"  # PEFT's name for rows of a mixed batch that use no adapter


def _row_seeds(seed: int | list[int] | None, prompts: int, n: int) -> list[int] | None:
    """The seed of every row (prompt i's sample j at row i * n + j); see `HFSampler.sample`."""
    if seed is None:
        return None
    bases = [seed + i * n for i in range(prompts)] if isinstance(seed, int) else list(seed)
    if len(bases) != prompts:
        raise ValueError(f"{len(bases)} seeds for {prompts} prompts")
    return [base + j for base in bases for j in range(n)]


def generate_with_logprobs(
    model: Any, input_ids: Any, attention_mask: Any, *, temperature: float, top_p: float, max_tokens: int,
    eos_ids: list[int], pad_id: int, generators: list[Any] | None = None, adapter_names: list[str] | None = None,
) -> tuple[Any, Any]:
    """transformers `generate` on a left-padded batch; (new tokens, log-probs) as (rows, steps) CPU tensors.
    `generators`: one per row, each row's tokens drawn from its own (see `LogprobRecorder`).
    `adapter_names`: one PEFT adapter per row (`BASE_ROWS`: the base weights), a mixed batch."""
    from transformers import GenerationConfig, LogitsProcessorList

    recorder = LogprobRecorder(temperature, top_p, generators)
    config = GenerationConfig(
        do_sample=temperature > 0,
        temperature=1.0,  # applied by the recorder, which is the only logits processor
        top_p=1.0,
        top_k=0,
        # Unset fields are filled from the model's generation_config, and a checkpoint's
        # repetition_penalty (Qwen2.5-Instruct ships 1.05) would reshape the distribution behind
        # the recorder's back: the log-probs would no longer be the distribution sampled from.
        repetition_penalty=1.0,
        max_new_tokens=max_tokens,
        eos_token_id=eos_ids or None,
        pad_token_id=pad_id,
    )
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=config,
        logits_processor=LogitsProcessorList([recorder]),
        **({} if adapter_names is None else {"adapter_names": adapter_names}),
    )
    width = input_ids.shape[1]
    return output[:, width:].cpu(), recorder.finish(output[:, -1]).cpu()
