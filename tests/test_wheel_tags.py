"""scripts/wheel_tags.py: which wheels this Python can install, checked before device-check runs pip."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("wheel_tags", REPO / "scripts" / "wheel_tags.py")
wheel_tags = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheel_tags)

PY312 = dict(python=(3, 12), machine="x86_64", glibc=(2, 35))
CORE = "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


@pytest.mark.parametrize("name", [
    "pydantic-2.14.4-py3-none-any.whl",
    "typing_extensions-4.16.0-py3-none-any.whl",
    "six-1.16.0-py2.py3-none-any.whl",
    CORE,
    "pydantic_core-2.50.5-cp312-cp312-manylinux_2_28_x86_64.whl",
    "cryptography-44.0.0-cp39-abi3-manylinux_2_34_x86_64.whl",  # the stable ABI from 3.9 on
    "thing-1.0-1-cp312-cp312-linux_x86_64.whl",  # with a build tag
])
def test_wheels_this_python_installs(name):
    assert wheel_tags.why_not(name, **PY312) is None


@pytest.mark.parametrize("name,reason", [
    ("pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "not CPython 3.12"),
    ("pydantic_core-2.50.5-cp313-cp313-manylinux_2_17_x86_64.whl", "not CPython 3.12"),
    ("cryptography-44.0.0-cp313-abi3-manylinux_2_34_x86_64.whl", "not CPython 3.12"),  # abi3 from a newer Python
    ("old-1.0-py2-none-any.whl", "not CPython 3.12"),
    ("pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_aarch64.whl", "not this machine"),
    ("pydantic_core-2.50.5-cp312-cp312-manylinux_2_39_x86_64.whl", "glibc 2.35"),
    ("pydantic_core-2.50.5-cp312-cp312-musllinux_1_2_x86_64.whl", "not this machine"),
    ("pydantic_core-2.50.5-cp312-cp312-win_amd64.whl", "not this machine"),
    ("pydantic-2.14.4.tar.gz", "not a .whl"),
    ("pydantic-py3-none-any.whl", "not a wheel name"),
])
def test_wheels_it_does_not(name, reason):
    assert reason in wheel_tags.why_not(name, **PY312)


def test_a_machine_without_glibc_takes_no_manylinux_wheel():
    assert "without glibc" in wheel_tags.why_not(CORE, python=(3, 12), machine="x86_64", glibc=None)
    assert wheel_tags.why_not("pydantic-2.14.4-py3-none-any.whl", python=(3, 12), machine="x86_64", glibc=None) is None


def test_the_command_names_each_bad_wheel_and_how_to_refill(tmp_path):
    """Run by the interpreter here, on a folder with a wheel for another CPython and two versions
    of one package: exit 2, each named, and the exact command for this Python."""
    major, minor = sys.version_info[:2]
    other = f"cp{major}{minor + 1}"
    (tmp_path / f"pydantic_core-2.50.5-{other}-{other}-manylinux_2_17_x86_64.whl").write_bytes(b"")
    (tmp_path / "pydantic-2.14.4-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "pydantic-2.14.3-py3-none-any.whl").write_bytes(b"")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "wheel_tags.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{other}-{other}-manylinux_2_17_x86_64.whl: built for {other}" in done.stderr
    assert "pydantic: 2 wheels" in done.stderr
    assert f"rm -rf {tmp_path} && bash scripts/wheelhouse --python-version {major}.{minor}" in done.stderr
    for path in tmp_path.iterdir():
        path.unlink()
    (tmp_path / "pydantic-2.14.4-py3-none-any.whl").write_bytes(b"")
    ok = subprocess.run([sys.executable, str(REPO / "scripts" / "wheel_tags.py"), str(tmp_path)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr == ""
