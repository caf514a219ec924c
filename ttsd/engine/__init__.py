"""Engine: models, chat prompts, samplers (vLLM, Hugging Face) with LoRA hot-swap, and the token scorer.

Contract (keep these names):
- `ttsd.engine.models`: `DEFAULT_MODEL`, `resolve_model(name) -> Path` (prepares built-in aliases),
  `ModelNotFound` (clear message on how to provide the model).
- `ttsd.engine.chat`: `chat_prompt_ids(tokenizer, messages) -> list[int]` (model's chat template,
  generation prompt added, Qwen3-style thinking off).
- `ttsd.engine.types`: `SamplingSettings` (temperature, top_p, max_tokens, seed; validated),
  `Sample`, `Sampler` (`sample(prompts, n, settings)`, `sync_adapter`, `sleep`, `wake`).
- `ttsd.engine.samplers`: `Sample`, `Sampler`, `make_sampler(backend, model_path, ...)`.
- `ttsd.engine.scorer`: `score_tokens(...)`.
- `ttsd.engine.lora`: `LoraSettings`, `adapter_parameters`, `write_adapter` (the one PEFT-folder writer, atomic).
- `ttsd.engine.vllm_patches`: the patches of vLLM 0.32's internals (each raises `VLLMPatchUnsupported` on another release).
"""
