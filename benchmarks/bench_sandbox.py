"""Sandbox speed: executions per second and overhead per execution, per backend.

Every backend executes the same batch of 64 small programs (each reads a number on stdin and
prints something computed from it). The reference is the same 64 programs run bare on the host
(`python3 main.py` via subprocess, no sandbox), and a bare `python3 -c pass`.

    overhead per execution = median sequential latency in the sandbox - median bare latency
                             (medians: the machine is shared, and load spikes hit the mean)
    executions per second  = 64 / wall time of the batch through a pool of --workers threads

The machine is shared: the title shows its load average, and latencies grow with it (at a load
of 10 on 2 cores every row roughly doubles), so compare rows of one run, not runs.

Targets (2-core machine): local overhead <= 30 ms, Docker warm pool <= 100 ms, >= 20 exec/s.

    .venv/bin/python benchmarks/bench_sandbox.py [--workers 4] [--skip-docker-cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.table import Table

from ttsd.sandbox import Job, make_sandbox

PROGRAMS = [
    "n = int(input())\nprint(sum(range(n)))\n",
    "n = int(input())\nprint(' '.join(str(i * i) for i in range(n % 50)))\n",
    "import sys\nn = int(sys.stdin.readline())\nprint(n * (n + 1) // 2)\n",
    "n = int(input())\nfrom math import factorial\nprint(len(str(factorial(n % 300))))\n",
    "n = int(input())\ndp = [1] * (n % 100 + 2)\nfor i in range(2, len(dp)):\n    dp[i] = dp[i - 1] + dp[i - 2]\nprint(dp[-1])\n",
    "n = int(input())\nprint(sorted(str(n)), max(str(n)))\n",
    "class Solution:\n    def f(self, n):\n        return [i for i in range(n % 30) if i % 3]\nprint(Solution().f(int(input())))\n",
    "n = int(input())\nprimes = [p for p in range(2, 200 + n % 100) if all(p % d for d in range(2, int(p**0.5) + 1))]\nprint(len(primes))\n",
]


def batch() -> list[tuple[str, str, str]]:
    """64 (program, stdin) pairs; the expected outputs come from running them bare."""
    jobs = []
    for i in range(64):
        jobs.append((PROGRAMS[i % len(PROGRAMS)], f"{100 + 37 * i}\n"))
    return jobs


def run_bare(program: str, stdin: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "main.py")
        with open(path, "w") as f:
            f.write(program)
        return subprocess.run(["python3", path], input=stdin, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin"}).stdout


def timed_sequential(fn, items) -> tuple[float, float, list]:
    """(median latency, mean latency, outputs) running the items one after another."""
    latencies, out = [], []
    for item in items:
        start = time.perf_counter()
        out.append(fn(*item))
        latencies.append(time.perf_counter() - start)
    return statistics.median(latencies), statistics.mean(latencies), out


def timed_pool(fn, items, workers: int) -> tuple[float, list]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        out = list(pool.map(lambda item: fn(*item), items))
    return len(items) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="threads judging concurrently (default 4)")
    parser.add_argument("--skip-docker-cold", action="store_true", help="skip one-container-per-job Docker")
    parser.add_argument("--skip-docker", action="store_true", help="skip both Docker rows")
    args = parser.parse_args()
    console = Console(width=150)
    items = batch()

    bare_pass, _, _ = timed_sequential(lambda: subprocess.run(["python3", "-c", "pass"], env={"PATH": "/usr/bin:/bin"}),
                                    [()] * 64)
    bare_median, bare_mean, expected = timed_sequential(run_bare, items)
    bare_rate, _ = timed_pool(run_bare, items, args.workers)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = Table(title=f"Sandbox speed: 64 programs, {os.cpu_count()} CPUs, pool of {args.workers} threads, "
                        f"load average before: {load}")
    for column in ("backend", "ms / exec median (mean)", "overhead ms / exec", "exec / s (pool)", "outputs ok",
                   "target", "met"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    table.add_row("bare python3 -c pass", f"{bare_pass * 1e3:.1f}", "-", "-", "-", "-", "-")
    table.add_row("bare python3 main.py", f"{bare_median * 1e3:.1f} ({bare_mean * 1e3:.1f})", "0 (reference)",
                  f"{bare_rate:.1f}", "64/64", "-", "-")

    backends = [("local (bubblewrap)", "local", {}, 30.0)]
    if not args.skip_docker:
        if not args.skip_docker_cold:
            backends.append(("docker, container per job", "docker", {"pool_size": 0}, None))
        backends.append((f"docker, warm pool of {args.workers}", "docker", {"pool_size": args.workers}, 100.0))

    for label, name, options, target_ms in backends:
        sandbox = make_sandbox(name, **options)
        try:
            if hasattr(sandbox, "warm_up"):
                sandbox.warm_up()

            def execute(program: str, stdin: str, sandbox=sandbox):
                return sandbox.run(Job(files={"main.py": program}, argv=["python3", "main.py"], stdin=stdin))

            execute(*items[0])  # first-use costs (probes, a first container) are not per execution
            median, mean, seq_out = timed_sequential(execute, items)
            rate, pool_out = timed_pool(execute, items, args.workers)
        finally:
            sandbox.close()
        ok = min(sum(r.stdout == e for r, e in zip(seq_out, expected)),
                 sum(r.stdout == e for r, e in zip(pool_out, expected)))
        for r, e in zip(seq_out + pool_out, expected + expected):
            if r.stdout != e:
                console.print(f"[yellow]{label}: wrong output[/] {r.model_dump(exclude={'stdout'})}")
        overhead_ms = (median - bare_median) * 1e3
        if target_ms is None:
            target, met = "-", "-"
        else:
            target = f"<= {target_ms:.0f} ms, >= 20/s"
            met = "[green]yes[/]" if overhead_ms <= target_ms and rate >= 20 else "[red]no[/]"
        table.add_row(label, f"{median * 1e3:.1f} ({mean * 1e3:.1f})", f"{overhead_ms:.1f}", f"{rate:.1f}",
                      f"{ok}/64", target, met)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
