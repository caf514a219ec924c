"""Where a command's output goes: the terminal keeps the live table and ttsd's own messages; the
engines' logs go to a log file (RUN_DIR/run.log, BENCH_DIR/bench.log), every line timestamped.

    with quiet_terminal(run_dir / "run.log", verbose=False) as console:
        with Live(console=console, redirect_stdout=False, redirect_stderr=False): ...

How: file descriptors 1 and 2 point at a pipe (dup2) while inside, so whatever is written to them
reaches a thread that appends it to the log file: Python's prints and warnings (FutureWarning...),
logging handlers bound to sys.stdout / sys.stderr (vLLM configures one at import that writes INFO
lines to stdout; transformers' writes to stderr), progress bars, C/C++ code (torch's `[W...]`
lines) and child processes, which inherit the descriptors (vLLM's engine core on a GPU, spawned
bench workers). Nothing is filtered at the source (VLLM_LOGGING_LEVEL stays INFO), so the log file
loses nothing. The terminal console writes to a duplicate of the original descriptor, taken before.

ttsd's own messages (logger "ttsd", INFO and up: the sandbox falling back, the stale-weights alarm,
a model being converted) go to the log file and to the terminal. With `verbose`, every log line is
shown on the terminal too (dimmed, above the live table).

A test runner that replaces sys.stdout / sys.stderr with buffers not backed by a descriptor (click's
CliRunner) keeps them as the terminal: Python-level writes are sent to the pipe instead while inside.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

TTSD_LOGGER = "ttsd"
RUN_LOG = "run.log"
BENCH_LOG = "bench.log"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")  # \r too: progress bars redraw a line with it
_DRAIN_TIMEOUT_S = 5.0  # a child still holding the pipe keeps writing to the log after this, unwaited


class _LogPump(threading.Thread):
    """Copies the pipe into the log file, one timestamped line at a time, and hands each line to `echo`."""

    def __init__(self, read_fd: int, log_path: Path, echo: Callable[[str], None] | None) -> None:
        super().__init__(name="ttsd-log", daemon=True)
        self.read_fd, self.log_path, self.echo = read_fd, log_path, echo

    def run(self) -> None:
        with open(self.read_fd, "rb", buffering=0) as pipe, self.log_path.open("a", encoding="utf-8") as log:
            pending = b""
            while chunk := pipe.read(65536):
                *lines, pending = _LINE_BREAK.split(pending + chunk)
                for line in lines:
                    self.emit(log, line)
            if pending:
                self.emit(log, pending)

    def emit(self, log: TextIO, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip()
        if not text.strip():
            return
        log.write(f"{datetime.now().isoformat(sep=' ', timespec='milliseconds')} {text}\n")
        log.flush()  # `tail -f run.log` follows a run; a crash loses nothing
        if self.echo is not None:
            try:
                self.echo(text)
            except Exception:  # the terminal went away: the log file still has the line
                pass


def _flush_everything() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:  # C stdio buffers (block-buffered on a pipe), so their bytes land on the right side of the switch
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass


def _on_descriptor(stream: Any, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except Exception:
        return False


@contextmanager
def capture_output(log_path: Path, echo: Callable[[str], None] | None = None, tee: bool = False) -> Iterator[None]:
    """Send everything written to descriptors 1 and 2 to `log_path` (appended, timestamped) while inside.

    echo: also called with every line (e.g. to show it on a console). tee: also write every line,
    untimestamped, where descriptor 2 pointed before (a bench run passing its log on to the bench's).
    An exception leaving the block is written to the log file before it propagates."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _flush_everything()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    if tee:
        outer = saved[2]

        def echo(text: str, _inner: Callable[[str], None] | None = echo) -> None:
            os.write(outer, (text + "\n").encode("utf-8", errors="replace"))
            if _inner is not None:
                _inner(text)

    read_fd, write_fd = os.pipe()
    pump = _LogPump(read_fd, log_path, echo)
    pump.start()
    replaced = {}
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if not _on_descriptor(stream, fd):  # a buffer, not a descriptor: redirect its writes too
            replaced[name] = stream
            setattr(sys, name, open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False))
    try:
        for fd in (1, 2):
            os.dup2(write_fd, fd)
        os.close(write_fd)
        yield
    except KeyboardInterrupt:
        print("interrupted (KeyboardInterrupt)", file=sys.stderr)
        raise
    except Exception:
        traceback.print_exc(file=sys.stderr)
        raise
    finally:
        _flush_everything()
        for name, stream in replaced.items():
            getattr(sys, name).close()
            setattr(sys, name, stream)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
        pump.join(_DRAIN_TIMEOUT_S)
        for copy in saved.values():
            os.close(copy)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (inside `capture_output`: the log file)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _ConsoleHandler(logging.Handler):
    """ttsd's messages on the terminal console: warnings in yellow, information plain."""

    def __init__(self, console: Any) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        try:
            message = escape(record.getMessage())
            if record.levelno >= logging.ERROR:
                self.console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
            elif record.levelno >= logging.WARNING:
                self.console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
            else:
                self.console.print(message, soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


def terminal_stream(fd: int = 2) -> TextIO:
    """A writer to where descriptor `fd` (1 or 2) points now, unaffected by `capture_output` later."""
    stream = sys.stdout if fd == 1 else sys.stderr
    if not _on_descriptor(stream, fd):
        return stream  # not a descriptor (a test runner's buffer): redirecting descriptors leaves it alone
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return open(os.dup(fd), "w", buffering=1, encoding=encoding, errors="replace")


@contextmanager
def ttsd_messages(console: Any | None) -> Iterator[None]:
    """Logger "ttsd" (INFO and up) to sys.stderr (the log file, inside `capture_output`) and, when
    `console` is given, to the console; as it was before on exit."""
    logger = logging.getLogger(TTSD_LOGGER)
    before = (logger.level, logger.propagate, list(logger.handlers))
    to_log = _CurrentStderrHandler()
    to_log.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers = [to_log] + ([_ConsoleHandler(console)] if console is not None else [])
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(before[0])
        logger.propagate = before[1]
        logger.handlers = before[2]


@contextmanager
def quiet_terminal(log_path: Path, verbose: bool = False, fd: int = 2) -> Iterator[Any]:
    """A rich Console on the terminal (descriptor `fd` as it is now), with everything else going to
    `log_path`; ttsd's messages reach both; `verbose` shows every log line on the console too."""
    from rich.console import Console
    from rich.text import Text

    terminal = terminal_stream(fd)
    console = Console(file=terminal)
    echo = (lambda text: console.print(Text(text, style="dim"), soft_wrap=True)) if verbose else None
    try:
        with capture_output(log_path, echo=echo), ttsd_messages(None if verbose else console):
            yield console
    finally:
        if terminal not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            terminal.close()
