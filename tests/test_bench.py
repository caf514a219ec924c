import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ttsd.bench import (
    BenchBoard,
    BenchManifest,
    BenchMismatch,
    RunKey,
    load_manifest,
    load_pools,
    load_summaries,
    merged_manifest,
    plan_runs,
    pool_dir_for,
    pool_key,
    run_bench,
    run_dir_for,
    run_state,
    write_manifest,
)
from ttsd.cli import app
from ttsd.problems import load_problem
from ttsd.runs import PoolSummary, Summary
from ttsd.variants import parse_variants

PROBLEMS = ("reverse-string", "sum-two-numbers")
METHODS = ("sdpo", "best-of-k", "multi-turn")
BUDGET = 2


def small_options(tiny_model_dir) -> dict:
    return {"model": str(tiny_model_dir), "backend": "hf", "budget": BUDGET, "batch_size": 2, "max_tokens": 8}


def cli_options(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--backend", "hf", "--budget", str(BUDGET), "--batch-size", "2", "--max-tokens", "8"]


def fake_summary(key: RunKey, discovery_k: int | None) -> Summary:
    return Summary(
        problem_id=key.problem_id, method=key.method, seed=key.seed, discovered=discovery_k is not None,
        discovery_k=discovery_k, attempts_used=discovery_k or 4, budget=4, wall_s=0.1,
    )


def test_run_states_and_plan(tmp_path, examples_dir):
    problems = [load_problem(examples_dir / f"{p}.json") for p in PROBLEMS]
    done = RunKey(problem_id="reverse-string", method="sdpo", seed=0)
    partial = RunKey(problem_id="reverse-string", method="sdpo", seed=1)
    run_dir_for(tmp_path, done).mkdir(parents=True)
    (run_dir_for(tmp_path, done) / "summary.json").write_text(fake_summary(done, 3).model_dump_json())
    run_dir_for(tmp_path, partial).mkdir(parents=True)
    (run_dir_for(tmp_path, partial) / "attempts.jsonl").write_text("")
    plan = dict(plan_runs(tmp_path, problems, ["sdpo"], [0, 1, 2]))
    assert len(plan) == 6
    assert plan[done] == "done" and plan[partial] == "partial"
    assert plan[RunKey(problem_id="sum-two-numbers", method="sdpo", seed=2)] == "pending"
    assert run_state(tmp_path / "nowhere") == "pending"
    assert load_summaries(tmp_path) == {done: fake_summary(done, 3)}


def test_board_cells():
    board = BenchBoard(["p"], ["sdpo"], [0, 1, 2])
    keys = [RunKey(problem_id="p", method="sdpo", seed=s) for s in range(3)]
    board.update(keys[0], "done", fake_summary(keys[0], 2))
    board.update(keys[1], "skipped", fake_summary(keys[1], None))
    board.update(keys[2], "running", None)
    assert board.cell("p", "sdpo") == "2/3 [2 ✗] ▶1"
    pooled = BenchBoard(["p"], ["sdpo"], [0], pool=8)
    assert pooled.pool_cell("p") == "░░░░░░░░░░ 0/8 ✓0"
    pooled.update(pool_key("p"), "running", PoolSummary(problem_id="p", samples=4, passes=1, target=8))
    assert pooled.pool_cell("p") == "█████░░░░░ 4/8 ✓1 ▶"


def test_restart_may_add_problems_methods_seeds_but_not_change_options(tmp_path):
    first = BenchManifest(split="a", problem_ids=["p"], methods=["sdpo"], seeds=[0], solve_options={"budget": 8})
    assert merged_manifest(tmp_path, first) == first  # nothing there yet
    write_manifest(tmp_path, first)
    grown = merged_manifest(
        tmp_path,
        BenchManifest(split="a", problem_ids=["q", "p"], methods=["best-of-k"], seeds=[1, 0], solve_options={"budget": 8}),
    )
    assert grown.problem_ids == ["p", "q"] and grown.methods == ["sdpo", "best-of-k"] and grown.seeds == [0, 1]
    assert grown.created == first.created and grown.split == "a"
    write_manifest(tmp_path, merged_manifest(tmp_path, grown.model_copy(update={"split": "b"})))
    assert merged_manifest(tmp_path, first.model_copy(update={"split": "b"})).split == "a+b"
    write_manifest(tmp_path, first)
    changed = first.model_copy(update={"solve_options": {"budget": 16, "model": "m"}})
    with pytest.raises(BenchMismatch, match=r"budget: 8 → 16; model: '\(default\)' → 'm'"):
        merged_manifest(tmp_path, changed)
    assert load_manifest(tmp_path) == first  # the refused start left the bench as it was


def test_bench_cli_refuses_other_options_on_an_existing_bench(tmp_path, examples_dir):
    write_manifest(tmp_path, BenchManifest(split="x", problem_ids=["reverse-string"], methods=["sdpo"], seeds=[0],
                                           solve_options={"budget": 8}))
    result = CliRunner().invoke(
        app, ["bench", "--split", str(examples_dir / "reverse-string.json"), "--budget", "9", "--out", str(tmp_path)],
        terminal_width=300,
    )
    assert result.exit_code == 2 and "budget: 8 → 9" in result.output
    assert not (tmp_path / "runs").exists()


def test_bench_cli_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--split", "no-such-split", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "no split or problem 'no-such-split'" in result.output
    result = runner.invoke(app, ["bench", "--split", "reverse-string", "--workers", "2", "--ray", "auto"])
    assert result.exit_code == 2


def test_bench_cli_rejects_unknown_method(tmp_path, examples_dir):
    result = CliRunner().invoke(
        app, ["bench", "--split", str(examples_dir / "reverse-string.json"), "--methods", "sdpo,telepathy", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "telepathy" in result.output


@pytest.fixture(scope="module")
def small_bench(tiny_model_dir, examples_dir, tmp_path_factory):
    """2 problems × 3 methods × 2 seeds with the tiny random model, through the CLI, two workers."""
    problems_dir = tmp_path_factory.mktemp("problems")
    for problem_id in PROBLEMS:
        shutil.copy(examples_dir / f"{problem_id}.json", problems_dir)
    bench_dir = tmp_path_factory.mktemp("bench") / "bench"
    result = CliRunner().invoke(
        app,
        ["bench", "--split", str(problems_dir), "--methods", ",".join(METHODS), "--seeds", "2",
         "--workers", "2", "--out", str(bench_dir), *cli_options(tiny_model_dir)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    return bench_dir, problems_dir


def test_bench_writes_every_run(small_bench):
    bench_dir, _ = small_bench
    summaries = load_summaries(bench_dir)
    assert set(summaries) == {RunKey(problem_id=p, method=m, seed=s) for p in PROBLEMS for m in METHODS for s in (0, 1)}
    for key, summary in summaries.items():
        assert summary.budget == BUDGET and 1 <= summary.attempts_used <= BUDGET
        assert (run_dir_for(bench_dir, key) / "attempts.jsonl").is_file()
        # each worker's engine output went to its run's log, not the bench's terminal
        assert "Loading weights" in (run_dir_for(bench_dir, key) / "run.log").read_text()
    manifest = load_manifest(bench_dir)
    assert manifest.methods == list(METHODS) and manifest.seeds == [0, 1]
    assert manifest.solve_options["budget"] == BUDGET
    # the default pool, 4 × budget attempts per problem, drawn by a worker beside the runs
    assert manifest.pool == 4 * BUDGET
    pools = load_pools(bench_dir)
    assert sorted(pools) == sorted(PROBLEMS) and all(p.samples == 4 * BUDGET and p.finished for p in pools.values())
    assert all((pool_dir_for(bench_dir, p) / "attempts.jsonl").is_file() for p in PROBLEMS)


def test_restarted_bench_skips_finished_and_resumes_unfinished(small_bench, tiny_model_dir, examples_dir):
    bench_dir, problems_dir = small_bench
    key = RunKey(problem_id="reverse-string", method="best-of-k", seed=1)
    (run_dir_for(bench_dir, key) / "summary.json").unlink()
    assert run_state(run_dir_for(bench_dir, key)) == "partial"
    updates = []
    result = run_bench(
        bench_dir, [load_problem(examples_dir / f"{p}.json") for p in PROBLEMS], split=problems_dir.name, methods=list(METHODS),
        seeds=[0, 1], solve_options=small_options(tiny_model_dir), on_update=lambda k, state, s: updates.append((k, state)),
    )
    assert [o.key for o in result.outcomes] == [key] and not result.failed
    assert len(result.skipped) == len(PROBLEMS) * len(METHODS) * 2 - 1
    assert (key, "running") in updates and (key, "done") in updates
    assert run_state(run_dir_for(bench_dir, key)) == "done"


def test_compare_after_bench(small_bench):
    bench_dir, problems_dir = small_bench
    out = bench_dir / "report"
    result = CliRunner().invoke(app, ["compare", str(bench_dir), "--k", "1,2", "--out", str(out), "--simulations", "100"], terminal_width=250)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    scopes = {(s["scope"], s["name"]) for s in data["scopes"]}
    assert scopes == {("split", problems_dir.name), *(("problem", p) for p in PROBLEMS)}
    for s in data["scopes"]:
        assert sorted(m["method"] for m in s["methods"]) == sorted(METHODS)
        assert all(m["runs"] == (2 if s["scope"] == "problem" else 4) for m in s["methods"])
    # best-of-k from the bench's pool, and every run and the pool recorded its costs: all three axes
    split = next(s for s in data["scopes"] if s["scope"] == "split")
    best_of_k = next(m for m in split["methods"] if m["method"] == "best-of-k")
    assert best_of_k["samples"]["source"] == "pool" and best_of_k["samples"]["samples"] == 4 * BUDGET * len(PROBLEMS)
    assert split["missing_axes"] == [] and set(best_of_k["curves"]) == {"attempts", "compute", "wall"}
    markdown = (out / "compare.md").read_text()
    assert "## Per split" in markdown and "discovery@2" in markdown and "## What the data support" in markdown
    import matplotlib.image as mpimg

    image = mpimg.imread(out / "plots" / f"split-{problems_dir.name}.png")
    assert image.shape[0] >= 300 and image.shape[1] >= 400
    assert np.std(image[..., :3]) > 0.05
    assert len(list((out / "plots").glob("problem-*.png"))) == len(PROBLEMS)


def test_bench_on_local_ray(tiny_model_dir, examples_dir, tmp_path):
    import ray  # the `ray` extra: CI installs it, since this is the test of --ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_bench(
            tmp_path / "bench", [load_problem(examples_dir / "reverse-string.json")], split="ray", methods=["best-of-k"],
            seeds=[0, 1], solve_options=small_options(tiny_model_dir), ray_address="auto",
        )
    finally:
        ray.shutdown()
    assert not result.failed, [o.error for o in result.failed]
    summaries = load_summaries(tmp_path / "bench")
    assert sorted(k.seed for k in summaries) == [0, 1]
    assert all(s.method == "best-of-k" and s.attempts_used >= 1 for s in summaries.values())


def test_an_unfinished_summary_is_a_partial_run_not_a_result(tmp_path):
    # run_steps rewrites summary.json with finished=false after every step: a bench killed then
    # must resume that run, and compare must not read it as a result
    key = RunKey(problem_id="reverse-string", method="best-of-k", seed=0)
    run_dir = run_dir_for(tmp_path, key)
    run_dir.mkdir(parents=True)
    (run_dir / "steps.jsonl").write_text("")
    unfinished = fake_summary(key, None).model_copy(update={"finished": False, "attempts_used": 4, "budget": 8})
    (run_dir / "summary.json").write_text(unfinished.model_dump_json())
    assert run_state(run_dir) == "partial"
    assert load_summaries(tmp_path) == {}
    (run_dir / "summary.json").write_text(unfinished.model_copy(update={"finished": True}).model_dump_json())
    assert run_state(run_dir) == "done"
    assert set(load_summaries(tmp_path)) == {key}


def test_a_run_directory_with_only_a_log_is_pending(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.log").write_text("2026-01-01 00:00:00.000 the model was not found\n")
    assert run_state(run_dir) == "pending"  # a run that failed before it began starts afresh


@pytest.mark.parametrize("verbose", [False, True])
def test_bench_cli_keeps_engine_logs_off_the_terminal(tiny_model_dir, examples_dir, tmp_path, verbose):
    import subprocess
    import sys

    out = tmp_path / "bench"
    command = [sys.executable, "-m", "ttsd", "bench", "--split", str(examples_dir / "reverse-string.json"),
               "--methods", "best-of-k", "--seeds", "1", "--pool", "0", "--out", str(out), *cli_options(tiny_model_dir)]
    result = subprocess.run(command + (["--verbose"] if verbose else []), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 runs done" in result.stdout and "reverse-string" in result.stdout  # the board and its tally
    run_log = (run_dir_for(out, RunKey(problem_id="reverse-string", method="best-of-k", seed=0)) / "run.log").read_text()
    assert "Loading weights" in run_log
    assert ("Loading weights" in result.stdout + result.stderr) == verbose
    assert (out / "bench.log").is_file()


def test_workers_get_a_gpu_each_or_are_refused():
    from ttsd.bench import TooManyWorkers, worker_devices

    assert worker_devices(3, 0) == [None, None, None]  # no GPU: nothing to pin
    assert worker_devices(2, 4) == ["0", "1"]
    assert worker_devices(2, 2, visible="5,7") == ["5", "7"]  # the parent's own selection is handed out
    with pytest.raises(TooManyWorkers, match="--workers 1 or fewer"):
        worker_devices(2, 1)  # two full model copies on one card


def _device_of_this_worker(seconds: float) -> tuple[int, str | None]:
    import os
    import time

    time.sleep(seconds)  # long enough that the pool uses every worker
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_worker_process_claims_its_own_device():
    from ttsd.bench import process_pool

    with process_pool(2, ["3", "6"]) as pool:
        seen = dict(pool.map(_device_of_this_worker, [1.0] * 4))
    assert len(seen) == 2 and sorted(seen.values()) == ["3", "6"]
    import os

    with process_pool(2, [None, None]) as pool:  # no GPUs: the workers keep the parent's environment
        assert {device for _, device in pool.map(_device_of_this_worker, [0.0] * 2)} == {os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_bench_cli_refuses_more_workers_than_gpus(tmp_path, monkeypatch):
    import ttsd.engine.hardware as hardware

    monkeypatch.setattr(hardware, "gpu_count", lambda: 1)  # this machine has none; the rule is what is tested
    result = CliRunner().invoke(app, ["bench", "--split", "reverse-string", "--workers", "2", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--workers 2 on a machine with 1 GPU" in result.output
    assert not (tmp_path / "b").exists()


def test_variants_are_recorded_resumed_and_compared(tiny_model_dir, examples_dir, tmp_path):
    """sdpo and a variant without the source-line quote, one problem, one seed, the tiny model."""
    bench_dir = tmp_path / "bench"
    variants = "sdpo,sdpo-noquote=sdpo:--no-feedback-source-line:--feedback-unrun=skip"
    args = ["bench", "--split", str(examples_dir / "sum-two-numbers.json"), "--variants", variants, "--seeds", "1", "--pool", "0",
            "--out", str(bench_dir), *cli_options(tiny_model_dir)]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    manifest = load_manifest(bench_dir)
    assert manifest.methods == ["sdpo", "sdpo-noquote"]
    assert manifest.variants["sdpo-noquote"].overrides == {"feedback_source_line": False, "feedback_unrun": "skip"}
    assert "sdpo" not in manifest.variants  # a method as it is: its runs are sdpo's own
    noquote = RunKey(problem_id="sum-two-numbers", method="sdpo-noquote", seed=0)
    config = json.loads((run_dir_for(bench_dir, noquote) / "config.json").read_text())["config"]
    assert (config["method"], config["variant"], config["feedback_source_line"], config["feedback_unrun"]) == ("sdpo", "sdpo-noquote", False, "skip")
    plain = json.loads((run_dir_for(bench_dir, RunKey(problem_id="sum-two-numbers", method="sdpo", seed=0)) / "config.json").read_text())["config"]
    assert (plain["variant"], plain["feedback_source_line"], plain["feedback_unrun"]) == (None, True, "fixed-text")
    assert set(load_summaries(bench_dir)) == {noquote, RunKey(problem_id="sum-two-numbers", method="sdpo", seed=0)}

    # a restart resumes the unfinished variant run with the variant's own settings
    (run_dir_for(bench_dir, noquote) / "summary.json").unlink()
    updates = []
    again = run_bench(
        bench_dir, [load_problem(examples_dir / "sum-two-numbers.json")], split=manifest.split, methods=manifest.methods,
        seeds=[0], solve_options=manifest.solve_options, variants=list(manifest.variants.values()),
        on_update=lambda k, state, s: updates.append((k, state)),
    )
    assert [o.key for o in again.outcomes] == [noquote] and not again.failed and len(again.skipped) == 1
    assert load_summaries(bench_dir)[noquote].variant == "sdpo-noquote"
    # the same name with another definition is refused
    changed = [a if a != variants else "sdpo-noquote=sdpo:--no-feedback-input" for a in args]
    refused = CliRunner().invoke(app, changed, terminal_width=200)
    assert refused.exit_code == 2 and "sdpo-noquote" in refused.output

    report = CliRunner().invoke(app, ["compare", str(bench_dir), "--k", "1,2", "--simulations", "50"], terminal_width=250)
    assert report.exit_code == 0, report.output
    data = json.loads((bench_dir / "compare" / "compare.json").read_text())
    assert all(sorted(m["method"] for m in s["methods"]) == ["sdpo", "sdpo-noquote"] for s in data["scopes"])


def test_a_pooled_bench_leaves_out_best_of_k_runs_records_its_pool_and_grows_it(tiny_model_dir, examples_dir, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app, ["bench", "--split", str(examples_dir / "reverse-string.json"), "--seeds", "1", "--pool", "4", "--pool-batch", "3",
              "--out", str(out), *cli_options(tiny_model_dir)],
        terminal_width=250,
    )
    assert result.exit_code == 0, result.output
    assert "2 runs done, 1 pools drawn" in result.output and "4/4" in result.output
    manifest = load_manifest(out)
    assert manifest.methods == ["sdpo", "multi-turn"]  # best-of-k comes from the pool
    assert (manifest.pool, manifest.pool_batch) == (4, 3)
    pool = load_pools(out)["reverse-string"]
    assert (pool.samples, pool.target, pool.batch, pool.finished) == (4, 4, 3, True)
    lines = (pool_dir_for(out, "reverse-string") / "attempts.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 0, 0, 1]
    # a restart with a larger pool draws only the new attempts; the runs are skipped
    updates = []
    restarted = run_bench(
        out, [load_problem(examples_dir / "reverse-string.json")], split="reverse-string", methods=manifest.methods,
        seeds=[0], solve_options=manifest.solve_options, pool=6, pool_batch=3,
        on_update=lambda key, state, summary: updates.append((key.method, state, getattr(summary, "samples", None))),
    )
    assert [o.key for o in restarted.outcomes] == [pool_key("reverse-string")] and not restarted.failed
    assert ("pool", "running", 6) in updates  # the in-process pool reports each batch
    assert load_pools(out)["reverse-string"].samples == 6 and load_manifest(out).pool == 6
    more = (pool_dir_for(out, "reverse-string") / "attempts.jsonl").read_text().splitlines()
    assert more[:4] == lines and len(more) == 6


def test_bench_cli_concurrent_runs_share_one_engine(tiny_model_dir, examples_dir, tmp_path):
    """--concurrent 2: both seeds' runs in this process on one engine, each with its run.log; the
    same attempts as the one-at-a-time bench (tests/test_scheduler.py compares them in detail)."""
    bench_dir = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        ["bench", "--split", str(examples_dir / "sum-two-numbers.json"), "--methods", "best-of-k", "--seeds", "2",
         "--concurrent", "2", "--pool", "0", "--out", str(bench_dir), *cli_options(tiny_model_dir)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    summaries = load_summaries(bench_dir)
    assert set(summaries) == {RunKey(problem_id="sum-two-numbers", method="best-of-k", seed=s) for s in (0, 1)}
    for key in summaries:
        assert "sharing an engine with up to 2 runs" in (run_dir_for(bench_dir, key) / "run.log").read_text()


def test_a_concurrent_bench_with_a_pool_and_variants_equals_the_one_at_a_time_bench(tiny_model_dir, examples_dir, tmp_path):
    """--concurrent 3 with a pool and variants (one of them with a LoRA rank of its own: an engine
    of its own), float32: every run's attempts and steps as in the bench that runs one at a time;
    the live table showed the runs that shared the engine together."""
    variants = parse_variants("multi-turn,sdpo,sdpo-noquote=sdpo:--no-feedback-source-line,sdpo-r8=sdpo:--lora-rank=8")
    problems = [load_problem(examples_dir / f"{p}.json") for p in PROBLEMS]
    options = {**small_options(tiny_model_dir), "budget": 4, "dtype": "float32"}  # two steps: sdpo learns once
    benches = {}
    for concurrent in (1, 3):
        board = BenchBoard([p.id for p in problems], [v.name for v in variants], [0], pool=3)
        most_running = []

        def update(key, state, summary, board=board, most_running=most_running):
            board.update(key, state, summary)
            most_running.append(len(board.running_rows()))

        out = tmp_path / f"R{concurrent}"
        result = run_bench(out, problems, split="two", methods=[v.name for v in variants], seeds=[0], solve_options=options,
                           variants=variants, pool=3, concurrent=concurrent, on_update=update)
        assert not result.failed, [o.error for o in result.failed]
        assert len(result.outcomes) == len(PROBLEMS) * (len(variants) + 1)  # the runs and a pool each
        benches[concurrent] = out, max(most_running)
    (one, alone), (three, together) = benches[1], benches[3]
    assert alone == 1 and together == 3  # the live table's "running now" held every run on the engine
    assert load_summaries(one).keys() == load_summaries(three).keys()
    # Not compared: timings, and the stale-weights gap (the sampler's log-probs against the
    # trainer's: a batch of other rows and padding moves the sampler's by float rounding, ~1e-7).
    unshared = {"cost", "time_step_s", "time_sample_s", "time_judge_s", "time_score_s", "time_train_s", "time_sync_s",
                "stale_weights_gap"}
    for key in load_summaries(one):
        for name in ("attempts.jsonl", "steps.jsonl"):
            a, b = (
                [{k: v for k, v in json.loads(line).items() if k not in unshared}
                 for line in (run_dir_for(d, key) / name).read_text().splitlines()]
                for d in (one, three)
            )
            assert len(a) == len(b), (key, name)
            for x, y in zip(a, b):
                assert x == y, (key, name, {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)})
    for problem in PROBLEMS:
        a, b = ([json.loads(line)["response"] for line in (pool_dir_for(d, problem) / "attempts.jsonl").read_text().splitlines()]
                for d in (one, three))
        assert a == b and len(a) == 3


def test_bench_cli_refuses_concurrency_that_does_not_fit_or_mixes_with_workers(tiny_model_dir, examples_dir, tmp_path):
    split = str(examples_dir / "sum-two-numbers.json")
    mixed = CliRunner().invoke(app, ["bench", "--split", split, "--concurrent", "2", "--workers", "2", "--out", str(tmp_path / "a")])
    assert mixed.exit_code == 2 and "without --workers" in mixed.output
    # a billion runs' KV caches fit no machine: refused before anything starts, naming what does fit
    huge = CliRunner().invoke(
        app, ["bench", "--split", split, "--concurrent", str(10**9), "--out", str(tmp_path / "b"), *cli_options(tiny_model_dir)],
        terminal_width=300,
    )
    assert huge.exit_code == 2, huge.output
    assert "expected peak" in huge.output and "use --concurrent" in huge.output
    assert not (tmp_path / "b" / "runs").exists()


@pytest.mark.parametrize("variants, message", [
    ("sdpo,x=sdpo:--top-p=2", "--top-p=2"),
    ("x=telepathy", "not a method"),
    ("x=sdpo,x=multi-turn", "more than once"),
])
def test_bench_cli_refuses_bad_variants(tmp_path, examples_dir, variants, message):
    result = CliRunner().invoke(
        app, ["bench", "--split", str(examples_dir / "reverse-string.json"), "--variants", variants, "--out", str(tmp_path / "b")],
        terminal_width=250,
    )
    assert result.exit_code == 2 and message in result.output and "--variants" in result.output
    assert not (tmp_path / "b").exists()
