"""`ttsd bench`: every problem × method × seed of a split, one run directory each, in one bench directory.

    BENCH_DIR/bench.json                                  BenchManifest (split, problems, methods, seeds, options)
    BENCH_DIR/runs/<problem_id>/<method>/seed-<s>/        a run directory (ttsd.runs), summary.json when finished
                                                          (<method>: a variant's name for a named variant, ttsd.variants)
    BENCH_DIR/bench.log                                   what the bench printed outside its runs (`ttsd bench`)
    BENCH_DIR/pool/<problem_id>/                         best-of-k pool: pool.json (PoolSummary) + attempts.jsonl (+ run.log)

best-of-k's baseline comes from a pool (`pool > 0`, ttsd.pool): N i.i.d. attempts per problem
from the base model, every one judged, drawn by best-of-k's own sampler with the bench's solve
options. Its pass count estimates pass@k for every k without the bias of runs that stop at
their first pass, from far fewer samples than seeds × budget. Seeded best-of-k runs are then not
needed (`ttsd bench` leaves them out of its default methods when it draws a pool), but can still be
asked for. A pool is one more task beside the runs (the same workers or Ray), keyed
`RunKey(problem_id, method=POOL, seed=0)`; a restarted bench grows a pool that has fewer than
`pool` attempts (resuming it: ttsd.pool) and skips one that has enough.

Each run's engine logs go to its RUN_DIR/run.log (`execute` captures them, ttsd.logs), whichever
process runs it; with `verbose` they are passed on to the bench's output as well.

A restarted bench skips finished runs (summary.json with `finished: true`; a run rewrites its
summary with `finished: false` after every step, so the file alone says nothing) and resumes the
others that have a run directory (`solve(..., resume=True)`). Runs are independent, so they can go in parallel:
- `workers > 1`: a process pool on this machine (spawned processes: each loads its own model). On a
  machine with GPUs each worker process gets a card of its own (CUDA_VISIBLE_DEVICES), and more
  workers than cards is refused: every run holds a full model, a trainer and an engine;
- `ray_address`: one Ray task per run (one GPU each when the cluster has GPUs, else one CPU).
  Ray workers write their run directories straight into BENCH_DIR, so BENCH_DIR must be on a
  filesystem every Ray node sees at the same path (NFS or similar) — the shared-filesystem assumption.

- `concurrent > 1`: up to that many runs at once in this process on ONE engine
  (`ttsd.methods.scheduler`): one base model, one sampler whose calls batch the waiting runs'
  requests, one judge pool, a LoRA adapter per sdpo run. A run's attempts are the same as alone.
  Each run's ttsd messages and failure go to its run.log; the engines' own output to bench.log.
  Pools are drawn first, one after another (a pool's calls are large batches already).

This module imports nothing heavy at import time (torch, vllm, ray stay inside functions).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ttsd.logs import RUN_LOG
from ttsd.problems import Problem
from ttsd.runs import PoolSummary, RunDir, Summary
from ttsd.stop_points import stop_point
from ttsd.variants import Variant

DEFAULT_METHODS = ("sdpo", "best-of-k", "multi-turn")
MANIFEST = "bench.json"
RUNS = "runs"
POOL = "pool"  # BENCH_DIR/pool/<problem_id>/{pool.json, attempts.jsonl}: best-of-k from i.i.d. attempts

RunState = Literal["done", "partial", "pending"]


class RunKey(BaseModel, frozen=True):
    problem_id: str
    method: str
    seed: int


class BenchManifest(BaseModel):
    split: str
    problem_ids: list[str]
    problem_files: dict[str, str] = {}  # id -> path of the problem file the bench used
    methods: list[str]  # the runs' labels: methods, and the names of variants (ttsd.variants)
    seeds: list[int]
    solve_options: dict[str, Any] = {}  # SolveConfig fields shared by every run (budget, model, ...)
    variants: dict[str, Variant] = {}  # name -> method + overrides, for the labels of `methods` that are named variants
    pool: int = 0  # best-of-k pool: attempts per problem (0: none; older benches have none)
    pool_batch: int | None = None  # attempts per sampler call in a pool (None: as many as the engine decodes at once)
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class RunTask(BaseModel):
    """Everything one worker needs to do one run: plain data, so it pickles to processes and Ray."""

    key: RunKey
    problem: Problem
    solve_options: dict[str, Any]
    run_dir: str
    resume: bool
    verbose: bool = False  # pass the run's log lines on to the bench's output too
    variant: Variant | None = None  # key.method names this variant (its method and overrides)
    pool_target: int | None = None  # set: this task draws the problem's best-of-k pool (run_dir: its pool dir) up to this many attempts
    pool_batch: int | None = None


class RunOutcome(BaseModel):
    key: RunKey
    summary: Summary | None = None
    pool: PoolSummary | None = None  # a pool task's result
    error: str | None = None


def pool_key(problem_id: str) -> RunKey:
    """The key of a problem's best-of-k pool among the bench's tasks."""
    return RunKey(problem_id=problem_id, method=POOL, seed=0)


def pool_dir_for(bench_dir: Path, problem_id: str) -> Path:
    return bench_dir / POOL / problem_id


def run_dir_for(bench_dir: Path, key: RunKey) -> Path:
    return bench_dir / RUNS / key.problem_id / key.method / f"seed-{key.seed}"


def run_state(run_dir: Path) -> RunState:
    if RunDir(run_dir).is_finished():
        return "done"
    # a run.log alone is a run that failed before it began (a bad model, say): it starts afresh
    if run_dir.is_dir() and any(path.name != RUN_LOG for path in run_dir.iterdir()):
        return "partial"
    return "pending"


def load_manifest(bench_dir: Path) -> BenchManifest | None:
    path = bench_dir / MANIFEST
    return BenchManifest.model_validate_json(path.read_text()) if path.is_file() else None


def load_summaries(bench_dir: Path) -> dict[RunKey, Summary]:
    """Every finished run under BENCH_DIR/runs (the key comes from the summary, not the path).

    A summary with `finished: false` is a run in progress or killed: not a result."""
    found: dict[RunKey, Summary] = {}
    for path in sorted((bench_dir / RUNS).glob("*/*/seed-*/summary.json")):
        summary = Summary.model_validate_json(path.read_text())
        if not summary.finished:
            continue
        label = summary.variant or summary.method  # a variant is its own row
        found[RunKey(problem_id=summary.problem_id, method=label, seed=summary.seed)] = summary
    return found


def load_pools(bench_dir: Path) -> dict[str, PoolSummary]:
    """problem_id -> its best-of-k pool (finished or not: a pool's samples are i.i.d., so a partial
    pool is a smaller valid sample; `PoolSummary.finished` says which)."""
    return {
        pool.problem_id: pool
        for path in sorted((bench_dir / POOL).glob("*/pool.json"))
        for pool in [PoolSummary.model_validate_json(path.read_text())]
    }


def plan_runs(
    bench_dir: Path, problems: Sequence[Problem], methods: Sequence[str], seeds: Sequence[int]
) -> list[tuple[RunKey, RunState]]:
    return [
        (key, run_state(run_dir_for(bench_dir, key)))
        for problem in problems
        for method in methods
        for seed in seeds
        for key in [RunKey(problem_id=problem.id, method=method, seed=seed)]
    ]


def solve_config(options: dict[str, Any], method: str, seed: int, variant: Variant | None = None):
    """The SolveConfig of one run: the shared options plus this run's method (or variant) and seed."""
    from ttsd.config import SolveConfig

    if variant is not None:
        return SolveConfig.model_validate({**variant.run_options(options), "seed": seed})
    return SolveConfig.model_validate({**options, "method": method, "seed": seed})


def execute(task: RunTask, on_pool_batch: Callable[[PoolSummary], None] | None = None) -> RunOutcome:
    """Do one run or pool in this process (also the body of a process-pool worker and of a Ray
    task); `on_pool_batch` sees a pool's summary after each of its batches."""
    try:
        from ttsd.logs import capture_output
        from ttsd.methods import solve
        from ttsd.pool import run_pool

        run_dir = Path(task.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if task.pool_target is not None:
            config = solve_config(task.solve_options, "best-of-k", 0)
            with capture_output(run_dir / RUN_LOG, tee=task.verbose):
                pool = run_pool(task.problem, config, run_dir, task.pool_target, task.pool_batch, on_pool_batch)
            return RunOutcome(key=task.key, pool=pool)
        config = solve_config(task.solve_options, task.key.method, task.key.seed, task.variant)
        with capture_output(run_dir / RUN_LOG, tee=task.verbose):
            summary = solve(task.problem, config, run_dir, resume=task.resume)
        return RunOutcome(key=task.key, summary=summary)
    except Exception as error:  # one failed run must not stop the bench: it is reported and rerun next time
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return RunOutcome(key=task.key, error=f"{detail}\n{traceback.format_exc(limit=-3)}")


def _execute_json(task_json: str) -> str:
    """Process-pool / Ray entry point: JSON in, JSON out (no pickling of pydantic classes needed)."""
    return execute(RunTask.model_validate_json(task_json)).model_dump_json()


class BenchResult(BaseModel):
    skipped: list[RunKey]
    outcomes: list[RunOutcome]

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.error is not None]


class TooManyWorkers(ValueError):
    """More parallel runs than GPUs on a GPU machine."""


def worker_devices(workers: int, gpus: int, visible: str | None = None) -> list[str | None]:
    """The CUDA_VISIBLE_DEVICES of each of `workers` parallel runs: one card each when the machine
    has `gpus` of them (`visible`: the parent's CUDA_VISIBLE_DEVICES, whose entries are handed out),
    None for all on a machine without GPUs. Raises TooManyWorkers when workers > gpus ≥ 1."""
    if workers < 1:
        raise ValueError("at least one worker")
    if gpus == 0:
        return [None] * workers
    if workers > gpus:
        raise TooManyWorkers(
            f"--workers {workers} on a machine with {gpus} GPU{'s' if gpus > 1 else ''}: every run loads a full "
            f"model, a trainer and an engine, so runs get a GPU each; use --workers {gpus} or fewer (or --ray)"
        )
    cards = [c.strip() for c in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    return cards[:workers]


def _claim_device(devices: Any) -> None:
    """Pool initializer: this worker process takes the next free card before anything touches CUDA."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()


def process_pool(workers: int, devices: list[str | None]) -> Any:
    """A pool of `workers` spawned processes, each on its device from `devices` (all None: no pinning)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (rich Live) and torch state that fork corrupts.
    context = multiprocessing.get_context("spawn")
    if all(device is None for device in devices):
        return ProcessPoolExecutor(max_workers=workers, mp_context=context)
    free = context.Queue()
    for device in devices:
        free.put(device)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_claim_device, initargs=(free,))


class BenchMismatch(ValueError):
    """The bench directory holds runs made with other solve options: mixing them would compare unlike runs."""


def check_solve_options(bench_dir: Path, solve_options: dict[str, Any], old: BenchManifest | None = None) -> None:
    """Raise BenchMismatch, naming each changed field, when BENCH_DIR was started with other solve
    options: finished runs are skipped, so they would disagree with new ones on budget, model or
    any other setting. `old`: the manifest already read, if the caller has it."""
    if old is None:
        old = load_manifest(bench_dir)
    if old is None or old.solve_options == solve_options:
        return
    keys = sorted(set(old.solve_options) | set(solve_options))
    changes = [
        f"{key}: {old.solve_options.get(key, '(default)')!r} → {solve_options.get(key, '(default)')!r}"
        for key in keys
        if old.solve_options.get(key) != solve_options.get(key)
    ]
    raise BenchMismatch(
        f"{bench_dir / MANIFEST} was made with other solve options ({'; '.join(changes)}); "
        "use the same options to resume this bench, or another --out for a new one"
    )


def merged_manifest(bench_dir: Path, manifest: BenchManifest) -> BenchManifest:
    """The manifest to write for a (re)started bench: problems, methods and seeds may grow between
    starts (the new ones are added to the old); the solve options may not change (`check_solve_options`)."""
    old = load_manifest(bench_dir)
    if old is None:
        return manifest
    check_solve_options(bench_dir, manifest.solve_options, old)
    if changed := [n for n, v in manifest.variants.items() if n in old.variants and old.variants[n] != v]:
        raise BenchMismatch(
            f"{bench_dir / MANIFEST} defines variant {', '.join(map(repr, changed))} otherwise "
            f"({'; '.join(f'{old.variants[n]!r} → {manifest.variants[n]!r}' for n in changed)}); "
            "give a changed variant a new name, or use another --out"
        )

    def union(before: list, after: list) -> list:
        return before + [item for item in after if item not in before]

    return old.model_copy(
        update={
            "split": "+".join(union(old.split.split("+"), [manifest.split])),
            "problem_ids": union(old.problem_ids, manifest.problem_ids),
            "problem_files": {**old.problem_files, **manifest.problem_files},
            "methods": union(old.methods, manifest.methods),
            "seeds": union(old.seeds, manifest.seeds),
            "variants": {**old.variants, **manifest.variants},
            "pool": manifest.pool,
            "pool_batch": manifest.pool_batch,
        }
    )


def write_manifest(bench_dir: Path, manifest: BenchManifest) -> None:
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")


def run_bench(
    bench_dir: Path,
    problems: Sequence[Problem],
    *,
    split: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    solve_options: dict[str, Any],
    workers: int = 1,
    ray_address: str | None = None,
    problem_files: dict[str, str] | None = None,
    on_update: Callable[[RunKey, str, Summary | PoolSummary | None], None] | None = None,
    verbose: bool = False,
    variants: Sequence[Variant] = (),
    pool: int = 0,
    pool_batch: int | None = None,
    concurrent: int = 1,
) -> BenchResult:
    """Run every missing problem × method × seed, and first each problem's best-of-k pool of `pool`
    attempts (0: none; `pool_batch` attempts per sampler call, None: ttsd.pool's default);
    `on_update(key, state, summary)` reports progress with state one of "skipped", "running",
    "done", "failed" (a pool's key is `pool_key`, its summary a PoolSummary, also sent while it
    runs in this process, after each batch). Raises BenchMismatch (and runs
    nothing) when BENCH_DIR was started with other solve options, TooManyWorkers when `workers`
    exceeds the GPUs of a GPU machine. `verbose`: each run's log lines also go to this process's
    output (they always go to the run's run.log). `variants`: the named variants among `methods`
    (ttsd.variants; a label of `methods` that names none is a method as it is). `concurrent`: runs
    at once on one shared engine (see the module docstring); with `workers` or `ray_address` it must be 1."""
    if concurrent > 1 and (workers > 1 or ray_address):
        raise ValueError("concurrent runs share one engine in this process: not with workers or Ray")
    named = {v.name: v for v in variants if not v.plain}
    manifest = BenchManifest(
        split=split,
        problem_ids=[p.id for p in problems],
        problem_files=problem_files or {},
        methods=list(methods),
        seeds=list(seeds),
        solve_options=solve_options,
        variants=named,
        pool=pool,
        pool_batch=pool_batch,
    )
    write_manifest(bench_dir, merged_manifest(bench_dir, manifest))
    by_id = {p.id: p for p in problems}
    notify = on_update or (lambda *_: None)
    skipped, tasks = [], []
    pools = load_pools(bench_dir)
    for problem in problems if pool > 0 else ():
        key, drawn = pool_key(problem.id), pools.get(problem.id)
        if drawn is not None and drawn.samples >= pool:
            skipped.append(key)
            notify(key, "skipped", drawn)
            continue
        tasks.append(
            RunTask(
                key=key, problem=problem, solve_options=solve_options, run_dir=str(pool_dir_for(bench_dir, problem.id).resolve()),
                resume=drawn is not None, verbose=verbose, pool_target=pool, pool_batch=pool_batch,
            )
        )
    done = load_summaries(bench_dir)
    for key, state in plan_runs(bench_dir, problems, methods, seeds):
        if state == "done":
            skipped.append(key)
            notify(key, "skipped", done.get(key))
            continue
        tasks.append(
            RunTask(
                key=key,
                problem=by_id[key.problem_id],
                solve_options=solve_options,
                run_dir=str(run_dir_for(bench_dir, key).resolve()),
                resume=state == "partial",
                verbose=verbose,
                variant=named.get(key.method),
            )
        )
    if concurrent > 1:
        pools_first = [task for task in tasks if task.pool_target is not None]
        outcomes = _run_one_by_one(pools_first, notify)
        runs = [task for task in tasks if task.pool_target is None]
        outcomes += _run_concurrently(runs, concurrent, notify)
    elif ray_address:
        outcomes = _run_on_ray(tasks, ray_address, notify)
    elif workers > 1:
        from ttsd.engine.hardware import gpu_count

        devices = worker_devices(workers, gpu_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        outcomes = _run_in_processes(tasks, devices, notify)
    else:
        outcomes = _run_one_by_one(tasks, notify)
    return BenchResult(skipped=skipped, outcomes=outcomes)


def _run_one_by_one(tasks: list[RunTask], notify) -> list[RunOutcome]:
    outcomes = []
    for task in tasks:
        notify(task.key, "running", None)
        outcome = execute(task, on_pool_batch=lambda summary, key=task.key: notify(key, "running", summary))
        outcomes.append(outcome)
        notify(task.key, "failed" if outcome.error else "done", outcome.summary or outcome.pool)
        stop_point("between-runs")
    return outcomes


class ConcurrencyDoesNotFit(ValueError):
    """--concurrent R whose expected peak memory exceeds the device's."""


def device_memory_bytes(device: str) -> int:
    """What the device holds: a GPU's total memory, or the memory a CPU machine has available now."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def concurrent_memory(run_options: Sequence[dict[str, Any]], problems: Sequence[Problem], concurrent: int) -> Any:
    """The expected peak (`ttsd.sdpo.memory.estimate_concurrent_peak`) of `concurrent` runs of this
    bench on one engine, and the device: `run_options` holds the SolveConfig fields of each method
    or variant (`Variant.run_options`); the estimate takes their largest batch_size and max_tokens,
    the bench's longest student prompt, and an adapter per run when any of them learns (sdpo). The
    feedback in a teacher context is taken as long as the prompt."""
    from transformers import AutoConfig, AutoTokenizer

    from ttsd.config import SolveConfig
    from ttsd.engine.chat import chat_prompt_ids
    from ttsd.engine.models import resolve_model
    from ttsd.methods import resolve_hardware
    from ttsd.prompts import student_messages
    from ttsd.sdpo.memory import LearningShape, ModelShape, estimate_concurrent_peak

    configs = [resolve_hardware(SolveConfig.model_validate({**options, "seed": 0})) for options in run_options]
    config = configs[0]
    path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = max(len(chat_prompt_ids(tokenizer, student_messages(p, c.templates))) for p in problems for c in configs)
    batch = max(c.batch_size for c in configs)
    max_tokens = max(c.max_tokens for c in configs)
    step = LearningShape(
        attempts=batch, prompt_tokens=prompt, feedback_tokens=prompt, response_tokens=max_tokens,
        top_k=max(c.top_k for c in configs), lora=config.lora_settings(), gradient_checkpointing=config.gradient_checkpointing,
        dtype_bytes=4 if config.dtype == "float32" else 2, device=config.device,
    )
    learners = concurrent if any(c.learns for c in configs) else 0
    shape = ModelShape.from_config(AutoConfig.from_pretrained(path))
    return estimate_concurrent_peak(shape, step, learners, concurrent * batch, prompt + max_tokens), config.device


def check_concurrent_memory(run_options: Sequence[dict[str, Any]], problems: Sequence[Problem], concurrent: int) -> None:
    """Raise ConcurrencyDoesNotFit, with the estimate's parts and the largest R that fits, when
    `concurrent` runs would not fit the device (`concurrent_memory`)."""
    estimate, device = concurrent_memory(run_options, problems, concurrent)
    available = device_memory_bytes(device)
    if estimate.total <= available:
        return
    # Linear in R but for the max: the largest R that fits, from R = 1's parts.
    single, _ = concurrent_memory(run_options, problems, 1)
    one = single.parts

    def total(r: int) -> int:
        return one["weights"] + r * one["adapter_states"] + max(one["learning_step"], r * one["kv_cache"])

    low, high = 1, concurrent  # total(r) grows with r: the largest r that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if total(middle) <= available else (low, middle - 1)
    fits = low
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    parts = estimate.parts
    advice = f"use --concurrent {fits} or fewer" if total(fits) <= available else "even one run does not fit"
    raise ConcurrencyDoesNotFit(
        f"--concurrent {concurrent}: the expected peak is {gib(estimate.total)} (the base model {gib(parts['weights'])}, "
        f"adapters with optimizer and EMA states {gib(parts['adapter_states'])}, and the larger of one learning step "
        f"{gib(parts['learning_step'])} and the batch's KV cache {gib(parts['kv_cache'])}), more than the {device}'s "
        f"{gib(available)}; {advice}, or lower --batch-size / --max-tokens"
    )


# What runs sharing one engine must agree on (the rest is each run's own: method, seed, budget,
# sampling, learning, feedback, prompts). Runs of variants that differ here get engines of their own.
ENGINE_FIELDS = (
    "model", "backend", "sandbox", "device", "dtype", "lora_rank", "lora_alpha", "lora_target_modules",
    "gradient_checkpointing", "judge_workers", "gpu_memory_utilization", "top_k",
)


def engine_groups(configs: Sequence[Any]) -> list[list[int]]:
    """Indices of `configs` (SolveConfigs) grouped by their ENGINE_FIELDS, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        key = tuple(repr(getattr(config, name)) for name in ENGINE_FIELDS)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _run_concurrently(tasks: list[RunTask], concurrent: int, notify) -> list[RunOutcome]:
    """Every task on a `SharedEngine`, up to `concurrent` at a time (`ttsd.methods.scheduler`); one
    engine after another when variants differ in ENGINE_FIELDS."""
    if not tasks:
        return []
    from ttsd.engine.models import resolve_model
    from ttsd.methods import resolve_hardware
    from ttsd.methods.scheduler import RunJob, Scheduler, SharedEngine

    jobs = [
        RunJob(task.key, task.problem, solve_config(task.solve_options, task.key.method, task.key.seed, task.variant),
               Path(task.run_dir), task.resume)
        for task in tasks
    ]
    outcomes: list[RunOutcome] = []
    for group in engine_groups([job.config for job in jobs]):
        members = [jobs[i] for i in group]
        try:
            shared = resolve_hardware(members[0].config)
            engine = SharedEngine(shared, resolve_model(shared.model), learns=any(job.config.learns for job in members))
        except Exception as error:  # no engine, no run: each is reported failed (and rerun next time)
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            for job in members:
                notify(job.key, "failed", None)
                outcomes.append(RunOutcome(key=job.key, error=f"the shared engine could not start: {detail}"))
            continue
        try:
            results = Scheduler(engine, concurrent, on_update=notify, run_logs=True).run(members)
        finally:
            engine.close()
        outcomes += [RunOutcome(key=result.key, summary=result.summary, error=result.message) for result in results]
    return outcomes


def _run_in_processes(tasks: list[RunTask], devices: list[str | None], notify) -> list[RunOutcome]:
    from concurrent.futures import as_completed

    outcomes = []
    with process_pool(len(devices), devices) as pool:
        futures = {}
        for task in tasks:
            futures[pool.submit(_execute_json, task.model_dump_json())] = task
            notify(task.key, "running", None)
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = RunOutcome.model_validate_json(future.result())
            except Exception as error:  # a worker that died (OOM, segfault) fails only its run
                outcome = RunOutcome(key=task.key, error=f"worker died: {error!r}")
            outcomes.append(outcome)
            notify(task.key, "failed" if outcome.error else "done", outcome.summary or outcome.pool)
    return outcomes


def _run_on_ray(tasks: list[RunTask], address: str, notify) -> list[RunOutcome]:
    """One Ray task per run. `address` is "auto", "local" (start a local instance) or ray://host:port."""
    import ray

    started_here = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False)
        else:
            ray.init(address=address, include_dashboard=False)
        started_here = True
    try:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(num_gpus=1 if has_gpus else 0, num_cpus=0 if has_gpus else 1)(_execute_json)
        pending = {}
        for task in tasks:
            pending[remote.remote(task.model_dump_json())] = task
            notify(task.key, "running", None)
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    outcome = RunOutcome.model_validate_json(ray.get(ref))
                except Exception as error:  # a lost node or a killed worker fails only its run
                    outcome = RunOutcome(key=task.key, error=f"ray task failed: {error!r}")
                outcomes.append(outcome)
                notify(task.key, "failed" if outcome.error else "done", outcome.summary or outcome.pool)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------------------------
# Live table
# --------------------------------------------------------------------------------------------


class BenchBoard:
    """The state of every run, rendered as a rich table: one row per problem, one column per method,
    cells like "2/5 ✓1 ▶1" (finished/seeds, discovered, running) with discovery times; with a
    pool, a first column with its progress bar, attempts drawn and passes."""

    def __init__(self, problem_ids: Sequence[str], methods: Sequence[str], seeds: Sequence[int], pool: int = 0):
        self.problem_ids = list(problem_ids)
        self.methods = list(methods)
        self.seeds = list(seeds)
        self.pool = pool
        self.state: dict[RunKey, str] = {}
        self.summary: dict[RunKey, Summary] = {}
        self.pools: dict[str, PoolSummary] = {}
        self.started = time.monotonic()

    def update(self, key: RunKey, state: str, summary: Summary | PoolSummary | None) -> None:
        self.state[key] = state
        if isinstance(summary, PoolSummary):
            self.pools[key.problem_id] = summary
        elif summary is not None:
            self.summary[key] = summary

    def pool_cell(self, problem_id: str, width: int = 10) -> str:
        """e.g. "███░░░░░░░ 64/256 ✓2": the pool's attempts drawn of its target, and its passes."""
        drawn = self.pools.get(problem_id)
        samples, passes = (drawn.samples, drawn.passes) if drawn else (0, 0)
        filled = min(width, width * samples // self.pool) if self.pool else 0
        text = f"{'█' * filled}{'░' * (width - filled)} {samples}/{self.pool} ✓{passes}"
        state = self.state.get(pool_key(problem_id))
        if state == "running":
            text += " ▶"
        elif state == "failed":
            text += " [red]failed[/red]"
        return text

    def cell(self, problem_id: str, method: str) -> str:
        keys = [RunKey(problem_id=problem_id, method=method, seed=s) for s in self.seeds]
        finished = [k for k in keys if self.state.get(k) in ("done", "skipped")]
        running = sum(self.state.get(k) == "running" for k in keys)
        failed = sum(self.state.get(k) == "failed" for k in keys)
        times = [str(self.summary[k].discovery_k) if self.summary[k].discovered else "✗" for k in finished if k in self.summary]
        text = f"{len(finished)}/{len(keys)}"
        if times:
            text += " [" + " ".join(times) + "]"
        if running:
            text += f" ▶{running}"
        if failed:
            text += f" ![red]{failed} failed[/red]"
        return text

    def running_rows(self) -> list[tuple[str, str, str, str]]:
        """(problem, method, seed, progress) of every run now running: attempts used of the budget,
        ✓k once discovered."""
        rows = []
        for key, state in self.state.items():
            if state != "running" or key.method == POOL:  # a pool has its own column
                continue
            summary = self.summary.get(key)
            progress = "starting" if summary is None else f"{summary.attempts_used}/{summary.budget}"
            if summary is not None and summary.discovered:
                progress += f" ✓{summary.discovery_k}"
            rows.append((key.problem_id, key.method, str(key.seed), progress))
        return rows

    def render(self):
        from rich.console import Group
        from rich.table import Table

        table = self.render_cells()
        running = self.running_rows()
        if not running:
            return table
        live = Table(title=f"running now ({len(running)})")
        for column in ("problem", "method", "seed", "attempts"):
            live.add_column(column)
        for row in running:
            live.add_row(*row)
        return Group(table, live)

    def render_cells(self):
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        table = Table(title=f"bench ({elapsed:.0f} s) — cells: finished/seeds [discovery attempt per seed, ✗ = budget spent]")
        table.add_column("problem")
        if self.pool:
            table.add_column("best-of-k pool (drawn/target ✓passes)")
        for method in self.methods:
            table.add_column(method)
        for problem_id in self.problem_ids:
            pool = [self.pool_cell(problem_id)] if self.pool else []
            table.add_row(problem_id, *pool, *(self.cell(problem_id, m) for m in self.methods))
        return table
