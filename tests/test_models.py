"""Models: local folders, the built-in alias (install, checksum, one-time conversion), clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from ttsd.engine import models
from ttsd.engine.models import BUILTIN_MODELS, DEFAULT_MODEL, ModelNotFound, ensure_gguf, resolve_model


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir.resolve()
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in (tmp_path / "empty", tmp_path / "missing", "./nowhere"):
        with pytest.raises(ModelNotFound, match="ttsd models prepare"):
            resolve_model(name)
    with pytest.raises(ModelNotFound, match="not available"):
        resolve_model("not-an-alias-nor-a-hub-id")


def test_offline_hub_id_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("someone/no-such-model")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message and "local Hugging Face model folder" in message
    assert "someone/no-such-model" in message


def test_checksum_mismatch_is_refused():
    spec = BUILTIN_MODELS[DEFAULT_MODEL].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ModelNotFound, match="sha256"):
        ensure_gguf(spec)
    assert ensure_gguf(BUILTIN_MODELS[DEFAULT_MODEL]).name.endswith(".gguf")


def test_list_shows_the_default_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSD_HOME", str(tmp_path))
    (tmp_path / "models" / "my-model").mkdir(parents=True)
    rows = {row.name: row for row in models.list_models()}
    assert rows[DEFAULT_MODEL].kind == "alias" and not rows[DEFAULT_MODEL].prepared
    assert rows["my-model"].kind == "folder" and not rows["my-model"].prepared


@pytest.mark.slow
def test_default_model_is_prepared_once_as_a_plain_hf_folder():
    path = resolve_model(DEFAULT_MODEL)  # the real cache ($TTSD_HOME or ~/.cache/ttsd): converted once
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_model(DEFAULT_MODEL) == path and weights.stat().st_mtime_ns == stamp  # idempotent
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    tokenizer_files = {p.name for p in path.iterdir()}
    assert "tokenizer.json" in tokenizer_files
    assert "chat_template.jinja" in tokenizer_files or "chat_template" in (path / "tokenizer_config.json").read_text()


@pytest.mark.slow
def test_interrupted_conversion_leaves_nothing_half_done(tmp_path):
    """Kill a conversion mid-way: no model folder appears; the next prepare completes and cleans up."""
    env = {**os.environ, "TTSD_HOME": str(tmp_path)}
    code = "from ttsd.engine.models import resolve_model; resolve_model('smollm2-135m-instruct')"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    models_root = tmp_path / "models"
    deadline = time.monotonic() + 300
    while not any(p.is_dir() and p.name.startswith(".") for p in models_root.glob(".*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the conversion ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (models_root / DEFAULT_MODEL).exists()
    assert any(p.is_dir() for p in models_root.glob(f".{DEFAULT_MODEL}.*"))  # the staging leftover

    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (models_root / DEFAULT_MODEL / "ttsd-model.json").is_file()
    assert not any(p.is_dir() for p in models_root.glob(f".{DEFAULT_MODEL}.*"))


def _prepare_cli(*args: str):
    from typer.testing import CliRunner

    from ttsd.cli import app

    return CliRunner().invoke(app, ["models", "prepare", *args], terminal_width=200)


def test_prepare_gguf_refuses_bad_input_before_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSD_HOME", str(tmp_path / "home"))
    real = ensure_gguf(BUILTIN_MODELS[DEFAULT_MODEL])
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    cases = [
        ((str(tmp_path / "missing.gguf"), "x"), "no such GGUF file"),
        ((str(not_gguf), "x"), "not a GGUF file"),
        ((str(real), "../escape"), "--name '../escape'"),
        ((str(real), DEFAULT_MODEL), "not a built-in alias"),
    ]
    for (path, name), message in cases:
        result = _prepare_cli("--gguf", path, "--name", name)
        assert result.exit_code == 2 and message in result.output, (path, name, result.output)
    result = _prepare_cli("--gguf", str(real), "--name", "x", "--sha256", "0" * 64)
    assert result.exit_code == 2 and "expected " + "0" * 64 in result.output
    assert _prepare_cli("--gguf", str(real)).exit_code == 2  # no --name
    assert _prepare_cli(DEFAULT_MODEL, "--name", "x").exit_code == 2  # --name without --gguf
    assert _prepare_cli().exit_code == 2
    # a name already prepared from another file is not silently replaced
    taken = tmp_path / "home" / "models" / "taken"
    taken.mkdir(parents=True)
    (taken / "ttsd-model.json").write_text(json.dumps({"alias": "taken", "sha256": "f" * 64}))
    result = _prepare_cli("--gguf", str(real), "--name", "taken")
    assert result.exit_code == 2 and "already prepared" in result.output
    assert not any((tmp_path / "home" / "models").glob("x*"))  # nothing was converted


@pytest.mark.slow
def test_prepare_gguf_makes_a_named_model_folder_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSD_HOME", str(tmp_path))
    spec = BUILTIN_MODELS[DEFAULT_MODEL]
    gguf = ensure_gguf(spec)
    result = _prepare_cli("--gguf", str(gguf), "--name", "my-smol", "--sha256", spec.sha256.upper())
    assert result.exit_code == 0, result.output
    path = tmp_path / "models" / "my-smol"
    assert result.output.strip().endswith(str(path))
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (path / "tokenizer.json").is_file()
    assert resolve_model("my-smol") == path
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert _prepare_cli("--gguf", str(gguf), "--name", "my-smol").exit_code == 0  # idempotent
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    rows = {row.name: row for row in models.list_models()}
    assert rows["my-smol"].prepared and str(gguf.resolve()) in rows["my-smol"].description
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(path).num_parameters() > 100_000_000
