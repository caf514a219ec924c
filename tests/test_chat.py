"""Chat prompts through the model's own template, thinking off by default."""

from __future__ import annotations

import pytest

from ttsd.engine.chat import ChatMessage, chat_prompt_ids, chat_prompt_text

QWEN3_LIKE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


@pytest.fixture()
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_is_the_template_with_generation_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def solve"}]
    text = chat_prompt_text(tokenizer, messages)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\ndef solve<|im_end|>\n<|im_start|>assistant\n"
    ids = chat_prompt_ids(tokenizer, messages)
    assert tokenizer.decode(ids) == text
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens are single ids
    assert chat_prompt_ids(tokenizer, [ChatMessage(role=m["role"], content=m["content"]) for m in messages]) == ids


def test_thinking_off_by_default_on_qwen3_style_templates(tokenizer):
    tokenizer.chat_template = QWEN3_LIKE
    messages = [{"role": "user", "content": "hi"}]
    assert chat_prompt_text(tokenizer, messages).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert chat_prompt_text(tokenizer, messages, enable_thinking=True).endswith("<|im_start|>assistant\n")


def test_bad_messages_and_missing_template(tokenizer):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        chat_prompt_ids(tokenizer, [{"role": "wizard", "content": "x"}])
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        chat_prompt_ids(tokenizer, [{"role": "user", "content": "x"}])


@pytest.mark.slow
def test_smollm2_prompt_has_no_duplicate_specials():
    from transformers import AutoTokenizer

    from ttsd.engine.models import DEFAULT_MODEL, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Print 3."}])
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its default system prompt
    assert text.endswith("<|im_start|>user\nPrint 3.<|im_end|>\n<|im_start|>assistant\n")
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(start) == 3 and ids[0] == start
