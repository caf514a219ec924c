"""LoRA adapters (ttsd.engine.lora): the tensor walk under PEFT's keys, and the atomic folder writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ttsd.engine import lora
from ttsd.engine.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_bytes, adapter_parameters, peft_adapter_tensors, write_adapter


def _peft_model(tiny_model_dir, target_modules=("q_proj", "v_proj"), seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=list(target_modules)))
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_(0.0, 0.1)
    return model


def _leftovers(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_peft_keys_are_the_walks_keys_for_plain_lora_and_peft_wins_where_they_differ(tiny_model_dir):
    from peft import get_peft_model_state_dict

    model = _peft_model(tiny_model_dir)
    state = get_peft_model_state_dict(model)
    tensors = peft_adapter_tensors(model)
    assert tensors.keys() == state.keys() == adapter_parameters(model).keys()
    live = dict(model.named_parameters())
    # the live parameters themselves (no copies), twice (the second answer comes from the cache)
    for answer in (tensors, peft_adapter_tensors(model)):
        assert all(any(t is p for p in live.values()) for t in answer.values())
    assert adapter_bytes(model) == sum(t.numel() * 4 for t in state.values())
    assert adapter_bytes(model, dtype=torch.bfloat16) == adapter_bytes(model) // 2

    # LoRA on the embeddings: PEFT's state dict also holds the embedding layer, which is not an
    # adapter parameter; the files must still hold what PEFT saves.
    with pytest.warns(UserWarning, match="save_embedding_layers"):
        embedded = _peft_model(tiny_model_dir, target_modules=("q_proj", "embed_tokens"))
        state = get_peft_model_state_dict(embedded)
        tensors = peft_adapter_tensors(embedded)
    assert tensors.keys() == state.keys() and set(adapter_parameters(embedded)) < set(tensors)


def test_written_folder_reloads_with_peft_in_the_requested_dtype(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = _peft_model(tiny_model_dir)
    folder = write_adapter(model, tmp_path / "nested" / "adapter", base_model="the-base")
    assert sorted(p.name for p in folder.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    assert config["inference_mode"] is True and config["base_model_name_or_path"] == "the-base"
    assert config["target_modules"] == ["q_proj", "v_proj"]  # a set in PEFT's config: sorted
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder)
    ids = torch.tensor([[7, 2, 30, 11, 4]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6, rtol=0)

    cast = load_file(str(write_adapter(model, tmp_path / "bf16", dtype=torch.bfloat16) / ADAPTER_WEIGHTS))
    assert {t.dtype for t in cast.values()} == {torch.bfloat16}
    assert _leftovers(folder) == [] and _leftovers(tmp_path / "bf16") == []


def test_rewriting_a_folder_replaces_it_whole(tiny_model_dir, tmp_path):
    folder = tmp_path / "adapter"
    write_adapter(_peft_model(tiny_model_dir, seed=1), folder)
    (folder / "stale.txt").write_text("from an older write")
    newer = _peft_model(tiny_model_dir, seed=2)
    write_adapter(newer, folder)
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    assert all(torch.equal(saved[k], t.detach()) for k, t in peft_adapter_tensors(newer).items())
    assert not (folder / "stale.txt").exists() and _leftovers(folder) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_write_stopped_midway_leaves_the_folder_complete_or_absent(tiny_model_dir, tmp_path, monkeypatch, existing):
    """A stop after the weights and before the config (as a kill would): the reader finds the old
    folder untouched, or no folder at all; nothing half-written is left beside it."""
    folder = tmp_path / "adapter"
    if existing:
        write_adapter(_peft_model(tiny_model_dir, seed=3), folder)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
    written = []

    def stop_after_the_weights(directory, config):
        written.append(sorted(p.name for p in directory.iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(lora, "write_adapter_config", stop_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        write_adapter(_peft_model(tiny_model_dir, seed=4), folder)
    assert written == [[ADAPTER_WEIGHTS]]  # the stop came with the new weights on disk
    if existing:
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    else:
        assert not folder.exists()
    assert _leftovers(folder) == []
