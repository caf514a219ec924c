"""SolveConfig: defaults, file loading with overrides, clear errors naming the file and field."""

from __future__ import annotations

import json
import typing

import pytest

from ttsd.config import METHODS, ConfigError, SolveConfig, load_config


def test_every_default_passes_its_own_field_rules():
    # pydantic does not validate defaults: a default outside its own bounds or choices would only
    # fail when a saved config.json is loaded again
    defaults = SolveConfig()
    assert SolveConfig.model_validate(defaults.model_dump(mode="json")) == defaults


def test_every_field_explains_itself_on_the_command_line():
    undescribed = [name for name, field in SolveConfig.model_fields.items() if not (field.description or "").strip()]
    assert not undescribed


def test_only_sdpo_learns():
    assert [SolveConfig(method=m).learns for m in METHODS] == [True, False, False]
    assert METHODS == typing.get_args(SolveConfig.model_fields["method"].annotation)


def test_default_lora_targets_are_modules_of_a_llama_model(tiny_model_dir):
    # SmolLM2, the default model, is a Llama; a misspelt target would make PEFT fail at the first run
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(SolveConfig().lora_target_modules) <= leaf_names


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"budget": 32, "method": "best-of-k", "seed": 7}))
    config = load_config(path, {"budget": "8", "seed": None})
    assert (config.budget, config.method, config.seed) == (8, "best-of-k", 7)


def test_a_runs_config_json_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": SolveConfig(budget=5).model_dump(mode="json"), "versions": {}}))
    assert load_config(path).budget == 5


@pytest.mark.parametrize(
    "content, needle",
    [("{oops", "invalid JSON"), ("[1]", "JSON object"), ('{"budget": 0}', "budget"), ('{"bogus": 1}', "bogus"),
     ('{"method": "magic"}', "method")],
)
def test_bad_files_name_the_problem(tmp_path, content, needle):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle) as error:
        load_config(path)
    assert str(path) in str(error.value)
