"""ttsd.logs: what is written to descriptors 1 and 2 (by Python, C code or a child process) lands in
the log file, timestamped; the terminal console and ttsd's own messages still reach the terminal.
(The real `ttsd solve` / `ttsd bench` with vLLM and transformers: tests/test_solve_cli.py, test_bench.py.)"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from ttsd.logs import capture_output, quiet_terminal

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "


def test_everything_written_to_the_descriptors_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / "run.log"
    with capture_output(log):
        print("python print")
        print("python stderr", file=sys.stderr)
        os.write(2, b"raw descriptor write\n")  # what C code does
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"], check=True)
        # pytest records warnings in-process, so a child shows Python's own printing of one
        subprocess.run([sys.executable, "-c", "import warnings; warnings.warn('a deprecation for the log', FutureWarning)"], check=True)
        sys.stderr.write("progress 10%\rprogress 100%\n")
    terminal = capfd.readouterr()
    text = log.read_text()
    for expected in ("python print", "python stderr", "raw descriptor write", "child out", "child err",
                     "FutureWarning: a deprecation for the log", "progress 10%", "progress 100%"):
        assert re.search(STAMP + ".*" + re.escape(expected), text), expected
        assert expected not in terminal.out + terminal.err
    print("after the block")  # the descriptors are back
    assert "after the block" in capfd.readouterr().out and "after the block" not in log.read_text()


def test_an_exception_is_logged_and_the_descriptors_restored(tmp_path, capfd):
    log = tmp_path / "run.log"
    with pytest.raises(ZeroDivisionError):
        with capture_output(log):
            1 / 0
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()
    os.write(2, b"visible again\n")
    assert "visible again" in capfd.readouterr().err


def test_a_nested_capture_tees_to_the_outer_one(tmp_path, capfd):
    with capture_output(tmp_path / "outer.log"):
        print("outer line")
        with capture_output(tmp_path / "inner.log", tee=True):
            print("inner line")
        with capture_output(tmp_path / "quiet.log"):
            print("quiet line")
    outer, inner = (tmp_path / "outer.log").read_text(), (tmp_path / "inner.log").read_text()
    assert "outer line" in outer and "inner line" in outer and "quiet line" not in outer
    assert "inner line" in inner and "outer line" not in inner
    assert "quiet line" in (tmp_path / "quiet.log").read_text()
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_terminal_shows_the_console_and_ttsd_messages(tmp_path, capfd, verbose):
    log = tmp_path / "run.log"
    with quiet_terminal(log, verbose=verbose) as console:
        console.print("the live table")
        print("engine chatter")
        logging.getLogger("ttsd.sandbox.local").warning("running WITHOUT bubblewrap")
        logging.getLogger("ttsd.engine.models").debug("too fine to keep")
    terminal = capfd.readouterr().err
    text = log.read_text()
    assert "the live table" in terminal and "the live table" not in text
    assert re.search(STAMP + "WARNING ttsd.sandbox.local: running WITHOUT bubblewrap", text)
    assert "running WITHOUT bubblewrap" in terminal
    assert "too fine to keep" not in text + terminal
    assert ("engine chatter" in terminal) == verbose and "engine chatter" in text
    assert logging.getLogger("ttsd").handlers == []  # left as found
