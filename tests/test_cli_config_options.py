"""SolveConfig's fields as typed options, the same for `ttsd solve` and `ttsd bench`: types, choices,
bounds and defaults in --help; bad values exit 2 naming the option; a bench run gets the config a
solve run gets from the same options."""

from __future__ import annotations

import json

import annotated_types
import pytest
from typer.testing import CliRunner

from ttsd.cli import app
from ttsd.cli.config_options import describe_bounds
from ttsd.config import SolveConfig
from ttsd.runs import RunDir

WIDE = {"COLUMNS": "400"}  # one help line per option: rich wraps at the terminal width


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE, terminal_width=400)


def test_bounds_in_clicks_notation():
    assert describe_bounds([annotated_types.Ge(1)]) == "x>=1"
    assert describe_bounds([annotated_types.Gt(0)]) == "x>0"
    assert describe_bounds([annotated_types.Gt(0), annotated_types.Le(1)]) == "0<x<=1"
    assert describe_bounds([annotated_types.Ge(0), annotated_types.Lt(1)]) == "0<=x<1"
    assert describe_bounds([annotated_types.Le(5)]) == "x<=5"
    assert describe_bounds([]) is None


@pytest.mark.parametrize("command", ["solve", "bench"])
def test_help_shows_types_choices_bounds_and_defaults(command):
    result = _invoke(command, "--help")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
    assert "<reverse_kl|forward_kl|jsd>" in lines["--divergence"] and "[default: reverse_kl]" in lines["--divergence"]
    assert "<float> [0<x<=1]" in lines["--top-p"] and "[default: 1.0]" in lines["--top-p"]
    assert "<int> [x>=1]" in lines["--budget"] and "[default: 64]" in lines["--budget"]
    assert "<float> [0<x<1]" in lines["--jsd-alpha"]
    assert "--no-use-feedback" in lines["--use-feedback"] and "[default: on]" in lines["--use-feedback"]
    assert "<str,str,...>" in lines["--lora-target-modules"] and "[default: q_proj,k_proj,v_proj,o_proj," in lines["--lora-target-modules"]
    assert "<JSON object|FILE>" in lines["--templates"]
    # every field is an option; bench sets the method, the seed and the variant label of each run itself
    expected = {"--" + name.replace("_", "-") for name in SolveConfig.model_fields}
    if command == "bench":
        expected -= {"--method", "--seed", "--variant"}
        assert "--method" not in lines and "--seed" not in lines and "--set" not in lines and "--variant" not in lines
        assert "--variants" in lines
        assert "<sdpo|best-of-k|multi-turn,...>" in lines["--methods"]
    else:
        assert "<sdpo|best-of-k|multi-turn>" in lines["--method"]
    assert expected <= set(lines)


@pytest.mark.parametrize("command", ["solve", "bench"])
@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--top-p", "1.5", "less than or equal to 1"),
        ("--jsd-alpha", "1", "less than 1"),
        ("--budget", "0", "greater than or equal to 1"),
        ("--batch-size", "two", "valid integer"),
        ("--divergence", "kl", "'reverse_kl', 'forward_kl' or 'jsd'"),
        ("--templates", '{"task": "Write code."}', "must contain {problem}"),
        ("--templates", '{"tsak": "{problem}"}', "tsak"),
        ("--templates", "no-such-file.json", "neither a JSON object nor a readable file"),
    ],
)
def test_bad_values_exit_2_naming_the_option(command, option, value, message, tmp_path):
    result = _invoke(command, *(["sum-two-numbers"] if command == "solve" else []), option, value, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and message in result.output
    assert not (tmp_path / "out").exists()


def test_bench_rejects_an_unknown_method_by_name(tmp_path):
    result = _invoke("bench", "--split", "reverse-string", "--methods", "sdpo,telepathy", "--out", tmp_path / "b")
    assert result.exit_code == 2 and "'--methods'" in result.output and "'telepathy'" in result.output


def test_bench_runs_get_the_config_solve_gets_from_the_same_options(tiny_model_dir, tmp_path):
    templates = {"system": "Be brief."}
    (tmp_path / "templates.json").write_text(json.dumps(templates))
    shared = [
        "--model", tiny_model_dir, "--backend", "hf", "--budget", "2", "--batch-size", "2", "--max-tokens", "8",
        "--lora-target-modules", "q_proj, v_proj", "--top-p", "0.9", "--no-use-feedback", "--divergence", "jsd",
        "--learning-rate", "1e-3", "--lora-rank", "4",
    ]
    solved = _invoke("solve", "reverse-string", "--method", "sdpo", "--seed", "0", "--out", tmp_path / "solve",
                     "--templates", json.dumps(templates), *shared)
    assert solved.exit_code == 1, solved.output  # a random tiny model spends its budget
    benched = _invoke("bench", "--split", "reverse-string", "--methods", "sdpo", "--seeds", "1", "--out", tmp_path / "bench",
                      "--templates", tmp_path / "templates.json", *shared)
    assert benched.exit_code == 0, benched.output

    run_dirs = {"solve": tmp_path / "solve", "bench": tmp_path / "bench" / "runs" / "reverse-string" / "sdpo" / "seed-0"}
    configs = {name: json.loads((run / "config.json").read_text())["config"] for name, run in run_dirs.items()}
    assert configs["bench"] == configs["solve"]
    config = configs["bench"]
    assert config["lora_target_modules"] == ["q_proj", "v_proj"] and config["templates"]["system"] == "Be brief."
    assert (config["top_p"], config["use_feedback"], config["divergence"], config["lora_rank"]) == (0.9, False, "jsd", 4)
    for run in run_dirs.values():  # the list option reached the adapter
        adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
        assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
        assert RunDir.open(run).summary().attempts_used >= 1

    # A restarted bench keeps what it recorded: no option given again is no mismatch, and the run is skipped.
    again = _invoke("bench", "--split", "reverse-string", "--methods", "sdpo", "--seeds", "1", "--out", tmp_path / "bench")
    assert again.exit_code == 0, again.output
    assert "0 runs done, 0 pools drawn, 2 already finished" in again.output  # the run and its best-of-k pool
    changed = _invoke("bench", "--split", "reverse-string", "--methods", "sdpo", "--seeds", "1", "--out", tmp_path / "bench",
                      "--top-p", "0.8")
    assert changed.exit_code == 2 and "top_p: 0.9 → 0.8" in changed.output
