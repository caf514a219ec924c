"""`SolveConfig`: every setting of one run, in one pydantic object.

Every field is a `ttsd solve` option (the CLI is generated from this model, so `--help` shows the
descriptions below) and the whole object can be loaded from a JSON file with `--config FILE`; options
given on the command line override the file. The resolved config is saved as RUN_DIR/config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttsd.engine.lora import LoraSettings
from ttsd.judge.feedback import FeedbackOptions
from ttsd.prompts import PromptTemplates

Method = Literal["sdpo", "best-of-k", "multi-turn"]
METHODS: tuple[str, ...] = get_args(Method)

# How the default learning rate was chosen: docs/learning-rate.md.
DEFAULT_LEARNING_RATE = 1e-4
_LORA = LoraSettings()  # the LoRA defaults live in ttsd.engine.lora


class SolveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = Field("sdpo", description="sdpo (self-distillation), best-of-k (independent samples) or multi-turn (feedback kept in context)")
    model: str = Field("smollm2-135m-instruct", description="built-in alias, local model folder or Hugging Face id")
    backend: Literal["auto", "vllm", "hf"] = Field("auto", description="sampler: vllm, hf (transformers generate) or auto (vllm when installed)")
    sandbox: Literal["local", "docker"] = Field("local", description="where attempts run: local (bubblewrap) or docker")
    budget: int = Field(64, ge=1, description="attempts allowed in total (discovery@k counts attempts)")
    batch_size: int = Field(16, ge=1, description="attempts sampled per step (the paper's n)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature; the losses use the same temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(1024, ge=1, description="most tokens per attempt; a longer one is judged 'truncated'")
    seed: int = Field(0, description="seed of every random stream (sampling, LoRA init)")
    learning_rate: float = Field(DEFAULT_LEARNING_RATE, gt=0, description="AdamW learning rate for the LoRA adapter (docs/learning-rate.md)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    lora_rank: int = Field(_LORA.rank, ge=1, description="LoRA rank")
    lora_alpha: float = Field(_LORA.alpha, gt=0, description="LoRA alpha (the update is alpha/rank · BA)")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(_LORA.target_modules),
        description="module names LoRA wraps (comma-separated on the command line)",
    )
    optimizer_steps: int = Field(1, ge=1, description="gradient steps per batch; >1 uses clipped importance weights")
    importance_clip: float = Field(2.0, gt=0, description="upper clip of the importance ratio when optimizer_steps > 1")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    loss: Literal["logit", "token"] = Field("logit", description="logit: top-K + tail distillation; token: sampled-token estimator")
    divergence: Literal["reverse_kl", "forward_kl", "jsd"] = Field("reverse_kl", description="divergence of the logit-level loss")
    jsd_alpha: float = Field(0.5, gt=0, lt=1, description="mixing weight of the generalized JSD")
    top_k: int = Field(20, ge=1, description="student top-K tokens distilled per position (plus one tail bucket)")
    teacher: Literal["ema", "frozen", "trust-region"] = Field(
        "ema",
        description="ema: EMA of the student's adapter; frozen: the initial model; trust-region: logits "
        "lerp(initial model, current student, --trust-region-alpha)",
    )
    ema_rate: float = Field(0.01, ge=0, le=1, description="EMA rate of the teacher (0 = frozen initial teacher)")
    trust_region_alpha: float = Field(
        0.01, ge=0, le=1, description="trust-region teacher: weight of the current student in the logit lerp (0 = initial model)"
    )
    use_feedback: bool = Field(True, description="put the attempt's feedback in the teacher context")
    use_peer_solution: bool = Field(
        True, description="put another passing attempt of the batch in the teacher context (the paper's default; docs/feedback.md)"
    )
    # What the feedback text shows (ttsd.judge.feedback.FeedbackOptions; docs/feedback.md says what the
    # SDPO paper and LeetCode / LiveCodeBench show). Each removes exactly the part it names.
    feedback_source_line: bool = Field(
        True, description="runtime errors: quote the failing source line ('Line 3 in f: total += x'); off: only its line "
        "number and function ('Line 3 in f'), so the self-teacher cannot copy the buggy line (docs/feedback.md)",
    )
    feedback_input: bool = Field(True, description="show the failing test's input ('Last Executed Input' / 'Input', as LeetCode does)")
    feedback_printed_output: bool = Field(True, description="show what the program printed besides its answer ('Printed Output', 'Stderr')")
    feedback_expected_output: bool = Field(True, description="wrong answers: show the expected output ('Expected')")
    feedback_unrun: Literal["fixed-text", "skip"] = Field(
        "fixed-text", description="truncated and no-code-block attempts (never run): fixed-text: learn from the fixed "
        "'Truncated' / 'Format Error' feedback; skip: leave them out of the learning batch (docs/feedback.md)",
    )
    continue_after_discovery: bool = Field(False, description="keep going after the first passing attempt until the budget is spent")
    context_limit: int = Field(32768, ge=256, description="multi-turn: most prompt tokens; the oldest feedback is dropped first")
    multi_turn_chat: bool = Field(False, description="multi-turn: alternate the model's attempts and the feedback as chat turns")
    judge_workers: int = Field(4, ge=1, description="attempts judged concurrently")
    gradient_checkpointing: bool = Field(
        True, description="recompute activations in backward: far less trainer memory for ~25% more training time"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="trainer device")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="trainer and sampler dtype (auto: bfloat16 on a GPU or a CPU with hardware bf16, else float32)")
    max_model_len: int | None = Field(
        None, ge=256,
        description="tokens the sampler holds per attempt (vLLM's max_model_len); default: the longest prompt "
        "+ max_tokens, so no backend stops an attempt before max_tokens; a smaller value is refused",
    )
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1, description="vLLM's share of the GPU (the trainer uses the rest)")
    variant: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the name of the bench variant this run belongs to (`ttsd bench --variants`, ttsd.variants); "
        "`ttsd compare` shows each variant as its own row",
    )
    report_to: Literal["none", "tensorboard"] = Field("none", description="also write every step's scalars for this tool: tensorboard (RUN_DIR/tensorboard; needs the tensorboard extra)")
    templates: PromptTemplates = Field(default_factory=PromptTemplates, description="prompt wording: a JSON object of PromptTemplates fields (ttsd/prompts.py), inline or in a file")

    @property
    def learns(self) -> bool:
        return self.method == "sdpo"

    def feedback_options(self) -> FeedbackOptions:
        """The judge's feedback content as these fields set it."""
        return FeedbackOptions(
            source_line=self.feedback_source_line, input=self.feedback_input,
            printed_output=self.feedback_printed_output, expected_output=self.feedback_expected_output,
        )

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, target_modules=self.lora_target_modules)


class ConfigError(ValueError):
    """A config file or option is invalid; the message names the file and the field."""


class ContextTooLong(ConfigError):
    """The prompt and max_tokens do not fit in max_model_len or in the model's own context."""


def context_length(prompt_tokens: int, max_tokens: int, requested: int | None, model_limit: int | None) -> int:
    """The sampler's context length: prompt_tokens + max_tokens, or `requested` when it holds that much.

    Why not a fixed default: vLLM ends an attempt at its context length, Hugging Face `generate` only
    at max_tokens, so a context shorter than prompt + max_tokens made the backends judge different
    attempts (a 4096 default with max_tokens 8192 silently cut vLLM's). Raises ContextTooLong when
    `requested` is too small or the model's own context (`model_limit`) cannot hold the attempt.
    """
    needed = prompt_tokens + max_tokens
    if requested is not None and requested < needed:
        raise ContextTooLong(
            f"max_model_len {requested} cannot hold a {prompt_tokens}-token prompt and max_tokens {max_tokens} "
            f"({needed} tokens): vLLM would stop attempts that Hugging Face samples in full. Raise --max-model-len "
            "(or leave it out) or lower --max-tokens."
        )
    length = needed if requested is None else requested
    if model_limit is not None and length > model_limit:
        raise ContextTooLong(
            f"the model's context is {model_limit} tokens; a {prompt_tokens}-token prompt and max_tokens {max_tokens} "
            f"need {length}: lower --max-tokens" + ("" if requested is None else " or --max-model-len")
        )
    return length


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SolveConfig:
    """The config from `path` (JSON; may be a run's config.json) with `overrides` on top."""
    data: dict[str, Any] = {}
    source = "options"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        data = data.get("config", data)  # a run's config.json nests the config
    merged = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return SolveConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None
