"""best-of-k from a pool: N i.i.d. attempts of the base model on one problem, every one judged.

    POOL_DIR/attempts.jsonl   one AttemptRecord per attempt (k = 1..N, step = its batch), with its cost
    POOL_DIR/pool.json        PoolSummary (ttsd.runs), rewritten after every batch

(`ttsd bench` keeps a problem's pool in BENCH_DIR/pool/<problem_id>/.) Why: a best-of-k run stops
at its first pass, so the attempts judged after a discovery are never drawn and pass@k read off
such runs is biased upward. A pool never stops: its c passes of N estimate pass@k without bias,
1 − C(N−c, k)/C(N, k), for every k ≤ N at once (ttsd.metrics).

Same attempts as every method's first ones: the pool is drawn by the best-of-k method itself
(`ttsd.methods.best_of_k.BestOfK`: its sampler, the student prompt, and temperature, top_p,
max_tokens, model, dtype and backend from the same SolveConfig), on the base weights.

Seeds: a problem's pool has the base seed `pool_seed(problem_id)`, and the batch that starts at
attempt a (0-based) samples with seed base + a. vLLM then gives attempt a the seed base + a however
the pool is batched (child j of a request draws with seed + j); hf seeds the batch, so its pool
repeats for the same batch size. Base seeds lie in [2^30, 2^30 + 2^29), above every run's step
seed (`ttsd.methods.run_loop.step_seed` < 2^30 for run seeds below 1000): no pool attempt repeats a run's.

Resume: a batch's attempts are written (and fsync'd) before pool.json counts them. A restarted pool
cuts attempts.jsonl back to pool.json's `samples` (a batch killed mid-write is dropped, never
counted twice) and goes on with the same seeds, so it ends with the attempts an uninterrupted pool
draws: a kill loses at most the batch in flight. A larger target later grows the pool (more
i.i.d. attempts); a smaller one never cuts it.

Batch: attempts per sampler call, by default as many as the engine decodes at once
(`Sampler.concurrent_sequences` of prompt + max_tokens: vLLM's KV cache, hf's max_batch_size),
at most what is left to draw. A resumed pool keeps the batch it recorded unless another is asked for.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from ttsd.config import SolveConfig
from ttsd.problems import Problem
from ttsd.runs import AttemptRecord, PoolSummary, append_jsonl, read_jsonl, write_json_atomic

POOL_SUMMARY = "pool.json"
POOL_ATTEMPTS = "attempts.jsonl"
POOL_PER_BUDGET = 4  # the default pool: 4 × the runs' budget attempts per problem
SEED_BASE = 2**30


def default_pool_size(budget: int) -> int:
    """Attempts per problem when `--pool` is not given: enough that pass@k at k = budget rests on
    N = 4k i.i.d. attempts (its estimator uses every one of them)."""
    return POOL_PER_BUDGET * budget


def pool_seed(problem_id: str) -> int:
    """The base seed of a problem's pool: from its id only, in [2^30, 2^30 + 2^29)."""
    digest = hashlib.sha256(f"pool:{problem_id}".encode()).digest()
    return SEED_BASE + int.from_bytes(digest[:4], "little") % 2**29


def read_pool(pool_dir: Path) -> PoolSummary | None:
    path = Path(pool_dir) / POOL_SUMMARY
    return PoolSummary.model_validate_json(path.read_text()) if path.is_file() else None


def pool_attempts(pool_dir: Path) -> list[AttemptRecord]:
    """The pool's attempts that pool.json counts (a batch cut by a kill is not among them)."""
    summary = read_pool(pool_dir)
    return read_jsonl(Path(pool_dir) / POOL_ATTEMPTS, AttemptRecord)[: summary.samples if summary else 0]


def _cut_to_counted(pool_dir: Path) -> list[AttemptRecord]:
    """Rewrite attempts.jsonl to the attempts pool.json counts; return them."""
    kept = pool_attempts(pool_dir)
    path = pool_dir / POOL_ATTEMPTS
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(a.model_dump_json() + "\n" for a in kept), encoding="utf-8")
    os.replace(tmp, path)
    return kept


def run_pool(
    problem: Problem,
    config: SolveConfig,
    pool_dir: Path,
    target: int,
    batch: int | None = None,
    on_batch: Callable[[PoolSummary], None] | None = None,
) -> PoolSummary:
    """Draw and judge `problem`'s pool up to `target` attempts in POOL_DIR (resuming what is there)
    with the sampler and settings of best-of-k under `config`; `on_batch` gets the summary after
    every batch. Returns the final summary (`finished` when samples ≥ target)."""
    from ttsd.engine.models import resolve_model
    from ttsd.methods import resolve_hardware
    from ttsd.methods.run_loop import attempt_records
    from ttsd.methods.best_of_k import BestOfK
    from ttsd.methods.scheduler import SharedEngine, fulfil
    from ttsd.runs import StepRecord

    pool_dir = Path(pool_dir)
    pool_dir.mkdir(parents=True, exist_ok=True)
    previous = read_pool(pool_dir)
    attempts = _cut_to_counted(pool_dir)
    batch = batch or (previous.batch if previous else None)
    seed = pool_seed(problem.id)

    def summary() -> PoolSummary:
        return PoolSummary(
            problem_id=problem.id, samples=len(attempts), passes=sum(a.verdict == "accepted" for a in attempts),
            target=target, finished=len(attempts) >= target,
            sampled_tokens=sum(a.num_tokens for a in attempts),
            wall_s=sum(a.cost.wall_s for a in attempts if a.cost is not None), seed=seed, batch=batch,
        )

    if len(attempts) >= target:
        write_json_atomic(pool_dir / POOL_SUMMARY, summary().model_dump(mode="json"))
        return summary()
    config = resolve_hardware(config.model_copy(update={"method": "best-of-k"}))
    engine = SharedEngine(config, resolve_model(config.model), learns=False)
    method = BestOfK(problem, config, run=None, model_path=engine.model_path, engine=engine)
    try:
        method.setup()
        batch = batch or engine.sampler.concurrent_sequences(len(method.prompt_ids) + config.max_tokens)
        while len(attempts) < target:
            started = time.monotonic()
            first = len(attempts)
            count = min(batch, target - first)
            step = attempts[-1].step + 1 if attempts else 0  # the batch's number
            drawn, _, _ = fulfil(engine, method.sample_and_judge(method.prompt_ids, step, count, seed=seed + first))
            record = StepRecord(step=step, attempts=first + count, time_step_s=time.monotonic() - started)
            records = attempt_records(drawn, step, first + 1, record)
            append_jsonl(pool_dir / POOL_ATTEMPTS, records)
            attempts.extend(records)
            current = summary()
            write_json_atomic(pool_dir / POOL_SUMMARY, current.model_dump(mode="json"))
            if on_batch is not None:
                on_batch(current)
    finally:
        method.close()
        engine.close()
    return summary()
