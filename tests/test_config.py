"""SolveConfig: defaults, file loading with overrides, clear errors naming the file and field."""

from __future__ import annotations

import json

import pytest

from ttsd.config import ConfigError, SolveConfig, load_config


def test_defaults_match_the_paper_settings():
    config = SolveConfig()
    assert (config.method, config.batch_size, config.temperature, config.top_k, config.grad_clip) == ("sdpo", 16, 1.0, 20, 1.0)
    assert config.ema_rate == 0.01 and config.context_limit == 32768 and config.divergence == "reverse_kl"


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
