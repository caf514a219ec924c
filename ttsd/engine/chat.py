"""Chat prompts through the model's own chat template, and the one chat-message type.

`ChatMessage` is what every prompt builder returns (`ttsd.prompts`, `ttsd.sdpo.prompts`,
`ttsd.methods.multi_turn`) and what the engine renders; plain {"role", "content"} mappings given here
are validated into it. Imports nothing heavy (the config imports it through `ttsd.prompts`).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel


Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel, frozen=True):
    role: Role
    content: str


Messages = list[ChatMessage]


def _as_dicts(messages: Sequence[ChatMessage | Mapping[str, Any]]) -> list[dict[str, str]]:
    return [
        (m if isinstance(m, ChatMessage) else ChatMessage.model_validate(dict(m))).model_dump() for m in messages
    ]


def chat_prompt_text(tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, Any]], enable_thinking: bool = False) -> str:
    """The rendered prompt, ending with the assistant's generation prompt.

    `enable_thinking` is passed to the template: Qwen3-style templates then open and close an empty
    <think></think> block (thinking off); templates that do not know the variable ignore it.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("This tokenizer has no chat template; use an instruction-tuned model.")
    return tokenizer.apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def chat_prompt_ids(tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, Any]], enable_thinking: bool = False) -> list[int]:
    """Token ids of the chat prompt (template + generation prompt; thinking off by default).

    The template already writes every special token it wants (BOS included where the model uses one),
    so the text is encoded without adding special tokens again.
    """
    text = chat_prompt_text(tokenizer, messages, enable_thinking=enable_thinking)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
