"""The Docker sandbox image, built from the repository's `sandbox/` folder without any registry.

    mmdebstrap --variant=extract --include=python3 bookworm rootfs.tar   (Debian's mirrors only)
    + sandbox/runner.py at /opt/ttsd/runner.py
    + ttsd/sandbox/supervisor.py at /opt/ttsd/supervisor.py (the runner loads it by path)
    → docker import (USER, WORKDIR, CMD from sandbox/image.json)
    → tagged ttsd-sandbox:<hash of the files in sandbox/ and of supervisor.py>

The tag changes whenever a file in `sandbox/` or the supervisor changes, so a stale image is never
used and `build(if_missing=True)` is instant when the current one exists. A build leaves the images
of other `sandbox/` files alone (checkouts at other versions may share the engine);
`remove_other_images` (`ttsd sandbox cleanup --images`) removes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from ttsd.sandbox.base import SandboxUnavailable

REPOSITORY = "ttsd-sandbox"
RUNNER_PATH = "/opt/ttsd/runner.py"
SUPERVISOR_PATH = "/opt/ttsd/supervisor.py"
SUPERVISOR_SOURCE = Path(__file__).resolve().with_name("supervisor.py")
RECIPE_VERSION = "3"  # bump when `build` changes what goes into the image


class ImageSpec(BaseModel):
    """sandbox/image.json: what goes into the image."""

    suite: str = "bookworm"
    variant: str = "extract"
    packages: list[str] = ["python3"]
    user: str = "65534:65534"
    workdir: str = "/work"
    cmd: list[str] = ["python3", "-I", RUNNER_PATH]


def sandbox_dir() -> Path:
    """The `sandbox/` folder of the checkout ttsd runs from."""
    here = Path(__file__).resolve().parent.parent.parent / "sandbox"
    if not (here / "runner.py").is_file():
        raise SandboxUnavailable(
            f"the sandbox image sources are missing ({here}/runner.py): run ttsd from its checkout"
        )
    return here


def image_tag(directory: Path | None = None) -> str:
    """`ttsd-sandbox:<12 hex digits>`, a hash of every file's name and content in `sandbox/`, and of
    the supervisor the image carries beside the runner."""
    directory = directory or sandbox_dir()
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\0".encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(SUPERVISOR_PATH.encode() + b"\0" + SUPERVISOR_SOURCE.read_bytes() + b"\0")
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def load_spec(directory: Path | None = None) -> ImageSpec:
    directory = directory or sandbox_dir()
    return ImageSpec.model_validate_json((directory / "image.json").read_text())


def image_exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build(client, if_missing: bool = False, log=print) -> tuple[str, bool]:
    """Build the image; returns (tag, built). With `if_missing`, does nothing when it exists."""
    directory = sandbox_dir()
    tag = image_tag(directory)
    if if_missing and image_exists(client, tag):
        return tag, False
    spec = load_spec(directory)
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise SandboxUnavailable("mmdebstrap is not installed: apt-get install mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="ttsd-image-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        start = time.monotonic()
        log(f"mmdebstrap {spec.suite} ({spec.variant}, {', '.join(spec.packages)})…")
        proc = subprocess.run(
            [mmdebstrap, "--quiet", f"--variant={spec.variant}", f"--include={','.join(spec.packages)}",
             "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
             spec.suite, str(rootfs)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SandboxUnavailable(f"mmdebstrap failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        with tarfile.open(rootfs, "a") as tar:
            _add_dir(tar, "opt/ttsd")
            # Docker copies an image directory's mode onto the tmpfs mounted over it (and ignores
            # the tmpfs `mode=` option then): both must be writable for the sandbox uid.
            for name in ("work", "tmp"):
                _add_dir(tar, name, mode=0o1777)
            for source, destination in ((directory / "runner.py", RUNNER_PATH), (SUPERVISOR_SOURCE, SUPERVISOR_PATH)):
                info = tar.gettarinfo(str(source), arcname=destination.lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                with open(source, "rb") as f:
                    tar.addfile(info, f)
        log(f"rootfs ready in {time.monotonic() - start:.1f}s; docker import as {tag}…")
        changes = [
            f"USER {spec.user}",
            f"WORKDIR {spec.workdir}",
            f"CMD {json.dumps(spec.cmd)}",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8",
        ]
        repository, version = tag.split(":")
        with open(rootfs, "rb") as f:
            client.api.import_image(src=f, repository=repository, tag=version, changes=changes)
    if not image_exists(client, tag):
        raise SandboxUnavailable(f"docker import did not produce {tag}")
    # Images of other sandbox/ files stay: another checkout sharing this engine may use one
    # (`remove_other_images` removes them on request).
    return tag, True


def other_images(client, current: str | None = None) -> list[str]:
    """The ttsd-sandbox tags on this engine other than `current` (default: this checkout's)."""
    current = current or image_tag()
    ours = f"{REPOSITORY}:"  # an image listed here may carry other repositories' tags too
    return sorted({t for image in client.images.list(name=REPOSITORY) for t in image.tags
                   if t.startswith(ours) and t != current})


def remove_other_images(client, current: str | None = None) -> tuple[list[str], list[str]]:
    """Remove every ttsd-sandbox tag but `current`; returns (removed, kept: still used by a container)."""
    import docker.errors

    removed, kept = [], []
    for tag in other_images(client, current):
        try:
            client.images.remove(tag)
            removed.append(tag)
        except docker.errors.NotFound:
            continue  # another process removed it meanwhile
        except docker.errors.APIError:
            kept.append(tag)  # 409: a container (perhaps of another checkout) still uses it
    return removed, kept


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    names = set(tar.getnames())
    if name in names or f"./{name}" in names:
        return  # mmdebstrap made it (its /tmp is 1777 already)
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)
