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
    """Run `config.method` on `problem` into `run_dir` (continuing it when `resume`)."""
    from ttsd.engine.models import resolve_model
    from ttsd.methods.run_loop import run_method

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
    if not resume:
        run = RunDir.create(run_dir, config, problem, model_path=str(model_path))
    if config.method == "sdpo":
        from ttsd.methods.sdpo import Sdpo as cls
    elif config.method == "best-of-k":
        from ttsd.methods.best_of_k import BestOfK as cls
    else:
        from ttsd.methods.multi_turn import MultiTurn as cls
    from ttsd.reporting import make_reporter, reporting

    reporter = make_reporter(config.report_to, run_dir)  # before the model loads: a missing package fails fast
    try:
        method = cls(problem, config, run, model_path)
        method.setup()
        return run_method(method, resume=resume, progress=reporting(reporter, progress))
    finally:
        if reporter is not None:
            reporter.close()
