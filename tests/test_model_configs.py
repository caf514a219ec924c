"""The benchmarks' model shapes: parameter counts and the bytes a decode step reads, by hand."""

from __future__ import annotations

from benchmarks.model_configs import decode_read_bytes, model_config, parameter_count

QWEN3_8B_LAYER = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 12288  # q, o; k, v; gate, up, down


def test_qwen3_8b_parameters_count_the_untied_embedding_twice():
    assert QWEN3_8B_LAYER == 192_937_984
    assert parameter_count("qwen3-8b") == 36 * QWEN3_8B_LAYER + 2 * 151936 * 4096 == 8_190_427_136


def test_a_decode_step_reads_the_head_once_and_only_the_looked_up_embedding_rows():
    read = decode_read_bytes("qwen3-8b", batch=16, context_tokens=1000)
    assert read["weights"] == (36 * QWEN3_8B_LAYER + 151936 * 4096 + 16 * 4096) * 2
    # all parameters would count the 0.6B-parameter input embedding: 8% more than a step reads
    assert 1.07 < parameter_count("qwen3-8b") * 2 / read["weights"] < 1.09
    assert read["kv_cache"] == 16 * 1000 * 36 * 2 * 1024 * 2  # rows × positions × layers × (k, v) × kv_dim × bf16
    assert read["adapter"] == 0
    assert decode_read_bytes("qwen3-8b", 16, 1000, lora_rank=16)["adapter"] == 36 * 16 * (
        (4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 12288) * 3) * 2


def test_a_tied_model_reads_its_embedding_once_as_the_head():
    read = decode_read_bytes("smollm2-135m", batch=64, context_tokens=10, bytes_per_parameter=4)
    assert read["weights"] == parameter_count("smollm2-135m") * 4
    layer = 576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536
    assert read["weights"] == (30 * layer + 49152 * 576) * 4
    assert read["kv_cache"] == 64 * 10 * 30 * 2 * 192 * 4
    assert model_config("smollm2-135m").tie_word_embeddings
