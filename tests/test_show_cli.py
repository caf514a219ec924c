"""`ttsd show`: the colour scale, the default attempt, and the command on real tiny-model runs made
through `ttsd solve` (the tiny model never passes, so every sdpo attempt is failed and scored)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ttsd.cli.show import BLAMED, FAVOURED, pick_attempt, shade, visible
from ttsd.runs import AttemptRecord, RunDir, TokenGapRecord
from tests.conftest import REPO


def _ttsd(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ttsd", *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env={**os.environ, **(env or {})})


def test_shades_diverge_from_zero_by_step():
    assert shade(0.0, 2.0) is None and shade(0.19, 2.0) is None and shade(-0.19, 2.0) is None
    assert [shade(-g, 2.0) for g in (0.2, 0.5, 1.0, 2.0, 9.0)] == [*BLAMED, BLAMED[-1]]
    assert [shade(g, 2.0) for g in (0.2, 0.5, 1.0, 2.0, 9.0)] == [*FAVOURED, FAVOURED[-1]]
    assert shade(-0.2, 1.0) == BLAMED[0] and shade(-0.2, 0.1) == BLAMED[-1]  # the scale stretches the steps


def test_control_characters_are_shown_escaped():
    assert visible("a\x1eb\n\tc\x00") == "a\\x1eb\n\tc\\x00"


def _attempt(k, step, verdict="wrong_answer"):
    return AttemptRecord(k=k, step=step, response="r", code=None, verdict=verdict, tests_passed=0, tests_total=1,
                         feedback="f", num_tokens=1, finish_reason="stop")


def test_the_default_attempt_is_the_discovery_else_the_last_scored():
    gaps = {k: TokenGapRecord(k=k, step=0, tokens=["r"], gaps=[-1.0]) for k in (1, 2)}
    attempts = [_attempt(1, 0), _attempt(2, 0), _attempt(3, 1)]
    assert [a.k for a in [pick_attempt(attempts, gaps)[0]]] == [2]
    found = attempts + [_attempt(4, 1, "accepted")]
    assert pick_attempt(found, gaps) == (found[3], "the discovered solution")
    assert pick_attempt(attempts, {})[0].k == 3


@pytest.fixture(scope="module")
def sdpo_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "sdpo"
    # budget 6: the self-teacher scores attempts 1-4 (the last batch, 5-6, learns nothing)
    result = _ttsd("solve", "sum-two-numbers", "--model", tiny_model_dir, "--backend", "hf", "--budget", "6",
                   "--batch-size", "2", "--max-tokens", "16", "--learning-rate", "1e-2", "--out", out)
    assert result.returncode == 1, result.stderr[-3000:]
    return out


def test_show_json_on_a_real_sdpo_run(sdpo_run):
    result = _ttsd("show", sdpo_run, "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    run = RunDir.open(sdpo_run)
    last = run.attempts()[3]
    assert sorted(run.token_gaps()) == [1, 2, 3, 4] and len(run.attempts()) == 6
    assert view["chosen_because"] == "the last failed attempt the self-teacher scored" and view["attempt"]["k"] == last.k == 4
    tokens = view["tokens"]
    assert len(tokens) == last.num_tokens and "".join(t["text"] for t in tokens).startswith(last.response)
    assert [t["gap"] for t in tokens] == run.token_gaps()[4].gaps
    assert view["attempt"]["feedback"] == last.feedback and view["note"] is None
    first = json.loads(_ttsd("show", sdpo_run, "--attempt", "1", "--json").stdout)
    assert first["attempt"]["k"] == 1 and first["chosen_because"] == "--attempt" and first["tokens"]
    unscored = json.loads(_ttsd("show", sdpo_run, "--attempt", "6", "--json").stdout)
    assert unscored["tokens"] is None and unscored["note"].startswith("the budget's last batch")


def test_show_colours_tokens_on_a_terminal(sdpo_run):
    colour = {"FORCE_COLOR": "1", "COLORTERM": "truecolor", "COLUMNS": "120"}
    result = _ttsd("show", sdpo_run, "--scale", "0.001", env=colour)  # every token at 1e-3 nats or more: the strongest shade
    assert result.returncode == 0, result.stderr
    gaps = RunDir.open(sdpo_run).token_gaps()[4].gaps
    response = result.stdout.split("response, coloured by token")[1].split("teacher − student log-prob")[0]
    assert ("48;2;178;24;43" in response) == any(g <= -1e-3 for g in gaps)  # blamed: strong red background
    assert ("48;2;33;102;172" in response) == any(g >= 1e-3 for g in gaps)  # favoured: strong blue background
    plain = _ttsd("show", sdpo_run, env={"COLUMNS": "120"}).stdout
    assert "TRUNCATED" in plain and "feedback (what the self-teacher saw)" in plain and "attempt 4 of 6" in plain


def test_show_explains_an_attempt_without_gaps(tiny_model_dir, tmp_path):
    out = tmp_path / "bok"
    made = _ttsd("solve", "sum-two-numbers", "--method", "best-of-k", "--model", tiny_model_dir, "--backend", "hf",
                 "--budget", "1", "--batch-size", "1", "--max-tokens", "8", "--out", out)
    assert made.returncode == 1, made.stderr[-3000:]
    view = json.loads(_ttsd("show", out, "--json").stdout)
    assert view["tokens"] is None and view["note"] == "best-of-k does not learn: no self-teacher scored its attempts"
    assert view["chosen_because"] == "the last attempt (no attempt has token gaps)"
    assert "not coloured: best-of-k does not learn" in _ttsd("show", out, env={"COLUMNS": "200"}).stdout


def test_show_bad_input_exits_2(sdpo_run, tmp_path):
    for args, message in (
        ((tmp_path,), "is not a run directory"),
        ((sdpo_run, "--attempt", "9"), "attempt 9 is not in"),
        ((sdpo_run, "--scale", "0"), "--scale"),
    ):
        result = _ttsd("show", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_quoted_tokens_are_underlined():
    from rich.console import Console

    from ttsd.cli.show import coloured_response, token_views

    line = TokenGapRecord(k=1, step=0, tokens=["a", " total += y", "\n"], gaps=[0.0, 2.0, 0.0], quoted=[1])
    views = token_views(line)
    assert [v.quoted for v in views] == [False, True, False]
    assert not any(v.quoted for v in token_views(line.model_copy(update={"quoted": None})))  # a run from before the copy diagnostic
    console = Console(force_terminal=True, color_system="truecolor", width=80)
    with console.capture() as captured:
        console.print(coloured_response(views, 1.0))
    ansi = captured.get()
    assert ansi.startswith("a\x1b[")  # the unquoted token near 0: no style at all
    codes, _, text = ansi[len("a\x1b["):].partition("m")
    assert text.startswith(" total += y") and "4" in codes.split(";")  # SGR 4: underline, with its blue background
