"""The three methods behind one interface: `solve(problem, config, run_dir, resume=False, progress=None)`.

`sdpo` (ttsd.methods.sdpo), `best-of-k` (ttsd.methods.best_of_k), `multi-turn` (ttsd.methods.multi_turn).
All write the same run directory (ttsd.runs) and return its `Summary`.
"""

from __future__ import annotations

from pathlib import Path

from ttsd.config import SolveConfig
from ttsd.problems import Problem
from ttsd.runs import RunDir, Summary


def resolve_hardware(config: SolveConfig) -> SolveConfig:
    """`config` with device and dtype 'auto' replaced by what this machine picks, so the saved
    config says what ran and a resumed run (which reads it back) keeps the same numerics."""
    from ttsd.engine.hardware import dtype_name, pick_device, pick_dtype

    device = pick_device(config.device)
    return config.model_copy(update={"device": device, "dtype": dtype_name(pick_dtype(config.dtype, device))})


def solve(problem: Problem, config: SolveConfig, run_dir: Path, resume: bool = False, progress=None) -> Summary:
    """Run `config.method` on `problem` into `run_dir` (continuing it when `resume`): one run on an
    engine of its own, through the same scheduler as `ttsd bench --concurrent` (R = 1)."""
    from ttsd.engine.models import resolve_model
    from ttsd.methods.scheduler import RunJob, SharedEngine, run_one

    model_path = resolve_model(config.model)
    if resume:
        run = RunDir.open(run_dir)
        if run.is_finished():
            return run.summary()
        # 'auto' means what the run started with (`ttsd bench` resumes with its own options), so the
        # rest of the run has the same numerics; an explicit device or dtype still wins.
        saved = run.config_data()["config"]
        config = config.model_copy(update={
            k: saved[k] for k in ("device", "dtype") if getattr(config, k) == "auto" and saved.get(k, "auto") != "auto"
        })
    config = resolve_hardware(config)
    from ttsd.reporting import require_reporter

    require_reporter(config.report_to)  # before the model loads: a missing package fails fast
    engine = SharedEngine(config, model_path, learns=config.learns)
    try:
        return run_one(RunJob(None, problem, config, Path(run_dir), resume=resume, progress=progress), engine)
    finally:
        engine.close()
